"""The ops: deformable RoI pooling against torchvision's RoIAlign and by gradcheck, and
soft-NMS on cases worked out by hand."""

import math

import pytest
import torch
from d2det.layers import batched_soft_nms, deform_roi_pool, soft_nms
from torchvision.ops import roi_align


def rois_and_features(dtype=torch.float32):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 16, dtype=dtype)
    rois = torch.tensor([
        [0, 4.0, 6.0, 40.0, 30.0],
        [1, -6.0, -3.0, 20.0, 14.0],    # partly outside the map
        [0, 50.0, 30.0, 70.0, 52.0],    # reaches past the bottom-right border
        [1, 10.3, 11.7, 11.1, 12.2],    # smaller than a pixel
    ], dtype=dtype)
    return x, rois


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_offsets_equal_roi_align_with_the_same_sampling(dtype):
    x, rois = rois_and_features(dtype)
    for out, s in ((7, 2), (14, 2), (3, 1), ((4, 6), 3)):
        ref = roi_align(x, rois, out, spatial_scale=0.25, sampling_ratio=s, aligned=True)
        zero = torch.zeros(len(rois), 2, *((out, out) if isinstance(out, int) else out), dtype=dtype)
        for offset in (None, zero):
            got = deform_roi_pool(x, rois, offset, out, spatial_scale=0.25, sampling_ratio=s)
            torch.testing.assert_close(got, ref, atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)


def test_an_offset_shifts_the_bin_by_offset_x_trans_std_x_roi_size():
    x, rois = rois_and_features(torch.float64)
    rois = rois[:1]  # 36 x 24 px in the image
    offset = torch.zeros(1, 2, 7, 7, dtype=torch.float64)
    offset[:, 0] = 0.5   # 0.5 * 0.1 * 36 = 1.8 px to the right
    offset[:, 1] = -1.0  # -1.0 * 0.1 * 24 = 2.4 px up
    got = deform_roi_pool(x, rois, offset, 7, spatial_scale=0.25, sampling_ratio=2, trans_std=0.1)
    shifted = rois + torch.tensor([0, 1.8, -2.4, 1.8, -2.4], dtype=torch.float64)
    ref = roi_align(x, shifted, 7, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    # Per-bin offsets move only their own bin.
    offset = torch.zeros(1, 2, 7, 7, dtype=torch.float64)
    offset[0, 0, 3, 4] = 0.7
    got = deform_roi_pool(x, rois, offset, 7, spatial_scale=0.25)
    plain = roi_align(x, rois, 7, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    moved = (got - plain).abs().sum(dim=1)[0] > 1e-12
    assert moved.nonzero().tolist() == [[3, 4]]


def test_gradcheck_input_and_offsets():
    x, rois = rois_and_features(torch.float64)
    x = x[:, :2, :6, :8].contiguous().requires_grad_()
    rois = rois[:2] * 0.5
    torch.manual_seed(1)
    # Random offsets keep the samples away from integer positions, where bilinear
    # interpolation has kinks.
    offset = (torch.rand(2, 2, 3, 3, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f, o: deform_roi_pool(f, rois, o, 3, spatial_scale=0.5, sampling_ratio=2, trans_std=0.3),
        (x, offset))


def test_no_rois_and_bad_offsets():
    x, rois = rois_and_features()
    assert deform_roi_pool(x, rois[:0], None, 7).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_roi_pool(x, rois, torch.zeros(4, 2, 3, 3), 7)


# Soft-NMS. Boxes of width 10 on one row: IoU(a, b) with an overlap of o px is o / (20 - o).
BOXES = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [5, 0, 15, 10], [30, 0, 40, 10]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])
IOU_AB, IOU_AC, IOU_BC = 8 / 12, 5 / 15, 7 / 13


def test_linear_soft_nms_by_hand():
    keep, scores = soft_nms(BOXES, SCORES, "linear", iou_threshold=0.5, min_score=1e-3)
    # a (0.9) is kept first. b overlaps it by 2/3 > 0.5: 0.8 (1 - 2/3) = 0.2667; c by 1/3 <= 0.5:
    # unchanged. Then c (0.7) and d (0.6); b overlaps c by 7/13 > 0.5: 0.2667 (1 - 7/13).
    b = 0.8 * (1 - IOU_AB) * (1 - IOU_BC)
    assert keep.tolist() == [0, 2, 3, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.6, b]))


def test_gaussian_soft_nms_by_hand():
    keep, scores = soft_nms(BOXES, SCORES, "gaussian", sigma=0.5, min_score=1e-3)
    b = 0.8 * math.exp(-IOU_AB ** 2 / 0.5)   # 0.3296
    c = 0.7 * math.exp(-IOU_AC ** 2 / 0.5)   # 0.5628
    b = b * math.exp(-IOU_BC ** 2 / 0.5)     # after c is kept
    assert keep.tolist() == [0, 3, 2, 1]     # d (0.6) now beats c
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6, c, b]))


def test_soft_nms_drops_boxes_below_min_score_and_keeps_other_classes_apart():
    dup = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    # An exact duplicate decays to 0 (linear): removed.
    keep, scores = soft_nms(dup, torch.tensor([0.9, 0.8, 0.0005]), "linear")
    assert keep.tolist() == [0] and scores.tolist() == pytest.approx([0.9])
    # In different classes the duplicates do not touch each other.
    keep, scores = batched_soft_nms(dup, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]),
                                    method="linear", iou_threshold=0.5)
    assert keep.tolist() == [0, 1] and scores.tolist() == pytest.approx([0.9, 0.8])
    keep, scores = batched_soft_nms(dup[:0], torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(ValueError, match="linear"):
        soft_nms(dup, torch.ones(3), "hard")
