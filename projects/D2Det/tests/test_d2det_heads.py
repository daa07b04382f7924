"""Dense local regression (targets, decoding, overlap targets, box averaging, loss) and
discriminative RoI pooling (adaptive weighted pooling, the pooler at initialisation), against
values worked out by hand or assembled from plain torch ops."""

import math

import pytest
import torch
import torch.nn.functional as F
from d2det import (
    AdaptiveWeightedPooling,
    DiscriminativeRoIPooler,
    average_cell_boxes,
    decode_dense,
    dense_targets,
)
from d2det.dense_regression import d2det_iou_loss, dense_regression_losses, jitter_boxes
from detectron2.structures import Boxes
from torchvision.ops import roi_align


def test_targets_then_decode_give_back_the_gt_at_every_cell():
    rois = torch.tensor([[10.0, 20.0, 80.0, 62.0], [0.0, 0.0, 7.0, 7.0]], dtype=torch.float64)
    gt = torch.tensor([[14.0, 18.0, 70.0, 66.0], [-3.0, 1.0, 9.5, 6.0]], dtype=torch.float64)
    ltrb, _ = dense_targets(rois, gt, size=7)
    assert ltrb.shape == (2, 4, 7, 7)
    # Cell (row 2, column 5) of RoI 0: point x = 10 + 70 * 5.5 / 7 = 65, y = 20 + 42 * 2.5 / 7 = 35;
    # (left, right, top, bottom) = (65 - 14, 70 - 65, 35 - 18, 66 - 35) / (70, 70, 42, 42).
    expect = torch.tensor([51 / 70, 5 / 70, 17 / 42, 31 / 42], dtype=torch.float64)
    torch.testing.assert_close(ltrb[0, :, 2, 5], expect)
    cells = decode_dense(rois, ltrb)
    assert cells.shape == (2, 7, 7, 4)
    torch.testing.assert_close(cells, gt[:, None, None, :].expand(2, 7, 7, 4), atol=1e-12, rtol=0)


def test_overlap_target_at_the_cell_pitch_boundary():
    # RoI 0..70 wide: points at x, y = 5, 15, ..., 65; pitch = 70 / 6. A cell is positive when its
    # point is at least one pitch inside the GT on every side.
    roi = torch.tensor([[0.0, 0.0, 70.0, 70.0]], dtype=torch.float64)
    pitch, eps = 70 / 6, 1e-7
    gt = torch.tensor([[15 - pitch - eps, 15 - pitch - eps, 55 + pitch + eps, 55 + pitch + eps]],
                      dtype=torch.float64)
    _, overlap = dense_targets(roi, gt)
    expect = torch.zeros(7, 7, dtype=torch.float64)
    expect[1:6, 1:6] = 1  # points 15..55 lie one pitch (+ eps) inside; 5 and 65 do not
    torch.testing.assert_close(overlap[0], expect)
    # Move the GT's left and right sides in by 2 eps: x = 15 and x = 55 are now a hair less
    # than one pitch inside.
    _, overlap = dense_targets(roi, gt + torch.tensor([[2 * eps, 0, -2 * eps, 0]], dtype=torch.float64))
    expect[:, 1] = 0
    expect[:, 5] = 0
    torch.testing.assert_close(overlap[0], expect)


def test_average_of_the_confident_cells_and_the_fallback():
    cells = torch.zeros(2, 2, 2, 4)
    cells[0, 0, 0] = torch.tensor([0.0, 0, 10, 10])
    cells[0, 0, 1] = torch.tensor([2.0, 2, 14, 12])
    cells[0, 1, 0] = torch.tensor([100.0, 100, 200, 200])  # not confident: ignored
    cells[1] = torch.arange(16.0).view(2, 2, 4)
    logits = torch.tensor([[[0.3, 2.0], [-1.0, 0.0]], [[-1.0, -2.0], [-0.5, -3.0]]])
    boxes = average_cell_boxes(cells, logits)
    torch.testing.assert_close(boxes[0], torch.tensor([1.0, 1, 12, 11]))
    torch.testing.assert_close(boxes[1], torch.arange(16.0).view(4, 4).mean(0))  # no cell > 0


def test_iou_loss_by_hand():
    gt = torch.tensor([[0.0, 0, 10, 10]] * 4)
    pred = torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 10], [0, 0, 10, 0.5], [20, 20, 30, 30]])
    # IoU 0.5 -> -log 0.5; 1 -> 0; 0.05 (<= 0.1) -> -log 0.15; 0 -> -log(0.1 + 1e-6).
    expect = torch.tensor([math.log(2), 0.0, -math.log(0.15), -math.log(0.1 + 1e-6)])
    torch.testing.assert_close(d2det_iou_loss(pred, gt), expect)


def test_dense_losses_by_hand():
    # One 2x2-grid RoI equal to its GT: pitch = 10 / 1 = 10, no point (2.5 or 7.5) lies 10 inside,
    # so every overlap target is 0 and the IoU loss is 0 whatever the prediction.
    roi = torch.tensor([[0.0, 0, 10, 10]])
    ltrb = torch.full((1, 4, 2, 2), 0.25)
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 2.0]]])
    losses = dense_regression_losses(roi, roi, ltrb, logits, reg_weight=2.0, overlap_weight=1.0)
    bce = sum(math.log1p(math.exp(v)) for v in (0.0, 1.0, -1.0, 2.0)) / 4
    assert losses["loss_dense_reg"].item() == 0.0
    assert losses["loss_overlap"].item() == pytest.approx(bce)
    # A 3x3 grid over a 0..30 box: pitch 15, points 5, 15, 25: only the centre cell (15, 15) is
    # positive. Every cell predicts distances 0.25 (7.5 px), so the centre predicts [7.5, 22.5]^2
    # (IoU 15^2 / 30^2 = 0.25): per cell (the mmdet 2.1 port), the loss is 2 * (-log 0.25) / 9
    # cells.
    roi = torch.tensor([[0.0, 0, 30, 30]])
    ltrb, logits = torch.full((1, 4, 3, 3), 0.25), torch.zeros(1, 3, 3)
    losses = dense_regression_losses(roi, roi, ltrb, logits, weighting="per_cell")
    assert losses["loss_dense_reg"].item() == pytest.approx(2 * math.log(4) / 9)
    # Released (mmdet 1.1): mean(L) * mean(m), every cell's loss counts. The edge cells'
    # 15 x 15 boxes cover 12.5 x 15 of the GT (IoU 187.5 / 937.5 = 0.2), the corners'
    # 12.5 x 12.5 (IoU 156.25 / 968.75); mean(m) = 1 / 9.
    mean_l = (math.log(4) + 4 * -math.log(0.2) + 4 * -math.log(156.25 / 968.75)) / 9
    losses = dense_regression_losses(roi, roi, ltrb, logits)
    assert losses["loss_dense_reg"].item() == pytest.approx(2 * mean_l / 9)
    with pytest.raises(ValueError, match="REG_LOSS_WEIGHTING"):
        dense_regression_losses(roi, roi, ltrb, logits, weighting="mean")
    # No RoI at all: zero losses, not NaN.
    losses = dense_regression_losses(roi[:0], roi[:0], torch.zeros(0, 4, 7, 7), torch.zeros(0, 7, 7))
    assert all(v.item() == 0.0 for v in losses.values())


def test_jitter_stays_within_its_amplitude_and_the_image():
    torch.manual_seed(0)
    boxes = torch.tensor([[40.0, 40.0, 60.0, 80.0]]).repeat(500, 1)
    j = jitter_boxes(boxes, 0.15, (200, 300))
    ctr, wh = (j[:, :2] + j[:, 2:]) / 2, j[:, 2:] - j[:, :2]
    size = torch.tensor([20.0, 40.0])
    assert ((ctr - torch.tensor([50.0, 60.0])).abs() <= 0.15 * size + 1e-4).all()
    assert ((wh / size - 1).abs() <= 0.15 + 1e-5).all()
    assert (wh / size - 1).abs().max() > 0.1  # it does jitter
    edge = jitter_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]]).repeat(50, 1), 0.15, (40, 45))
    assert (edge >= 0).all() and (edge[:, [0, 2]] <= 45).all() and (edge[:, [1, 3]] <= 40).all()


def test_adaptive_weighted_pooling_equals_a_manual_weighted_mean():
    torch.manual_seed(0)
    awp = AdaptiveWeightedPooling(3, gate=12.0)
    torch.nn.init.normal_(awp.conv.weight, std=0.3)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    awp = awp.double()
    out = awp(x)
    # w = exp(12 sigmoid(IN(conv(x)))), IN computed by hand.
    c = F.conv2d(x, awp.conv.weight, padding=1)
    mean, var = c.mean(dim=(2, 3), keepdim=True), c.var(dim=(2, 3), unbiased=False, keepdim=True)
    n = (c - mean) / torch.sqrt(var + awp.norm.eps)
    n = n * awp.norm.weight.view(1, -1, 1, 1) + awp.norm.bias.view(1, -1, 1, 1)
    w = torch.exp(12 * torch.sigmoid(n))
    expect = torch.zeros(2, 3, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):  # the 3x3 window of output (i, j), stride 2, padding 1
            rows = slice(max(2 * i - 1, 0), 2 * i + 2)
            cols = slice(max(2 * j - 1, 0), 2 * j + 2)
            expect[:, :, i, j] = (x * w)[:, :, rows, cols].sum((2, 3)) / w[:, :, rows, cols].sum((2, 3))
    torch.testing.assert_close(out, expect)
    # Zero-initialised conv: constant weights, a plain 3x3 average (of the window's pixels).
    fresh = AdaptiveWeightedPooling(3).double()
    ones = torch.ones_like(x)
    plain = F.avg_pool2d(x, 3, 2, 1) / F.avg_pool2d(ones, 3, 2, 1)
    torch.testing.assert_close(fresh(x), plain)


def test_discriminative_pooler_at_init_is_roialign_then_average_pooling():
    torch.manual_seed(0)
    pooler = DiscriminativeRoIPooler(8, 7, [1 / 4, 1 / 8], sampling_ratio=2, offset_fc_dim=32)
    feats = [torch.randn(2, 8, 32, 40), torch.randn(2, 8, 16, 20)]
    # 40 x 40 boxes go to the first level (canonical 224 at level 4: floor(4 + log2(40/224)) = 1,
    # clamped to the lowest level); 150 x 150 to the second (floor(4 + log2(150 / 224)) = 3).
    boxes = [Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]])),
             Boxes(torch.tensor([[0.0, 0.0, 150.0, 150.0], [20.0, 12.0, 60.0, 52.0]]))]
    out = pooler(feats, boxes)
    assert out.shape == (3, 8, 7, 7)
    rois = [torch.tensor([[0, 10.0, 10.0, 50.0, 50.0]]), torch.tensor([[1, 0.0, 0.0, 150.0, 150.0]]),
            torch.tensor([[1, 20.0, 12.0, 60.0, 52.0]])]
    levels = [0, 1, 0]
    for i, (r, lvl) in enumerate(zip(rois, levels)):
        fine = roi_align(feats[lvl], r, 14, spatial_scale=[1 / 4, 1 / 8][lvl], sampling_ratio=2, aligned=True)
        expect = pooler.awp[lvl](fine)  # zero offsets at init; the AWP is then a plain average
        torch.testing.assert_close(out[i:i + 1], expect)
    # The offset branch is live: its last FC starts at zero, but gradients reach it.
    out.sum().backward()
    assert all(fc[-1].weight.grad.abs().sum() > 0 for fc in pooler.offset_fc)
    assert pooler(feats, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))]).shape == (0, 8, 7, 7)


def test_each_level_has_its_own_offsets_and_weighted_pooling():
    """Official: one DeformRoIPoolingPack (offset FCs + AWP) per level. A level's RoIs use its
    own modules only; a level without RoIs still gets a (zero) gradient, as DDP needs."""
    torch.manual_seed(0)
    pooler = DiscriminativeRoIPooler(8, 7, [1 / 4, 1 / 8], sampling_ratio=2, offset_fc_dim=32)
    shared = DiscriminativeRoIPooler(8, 7, [1 / 4, 1 / 8], sampling_ratio=2, offset_fc_dim=32, shared=True)
    assert len(pooler.offset_fc) == len(pooler.awp) == 2 and len(shared.offset_fc) == len(shared.awp) == 1
    per_level = sum(p.numel() for p in pooler.parameters())
    assert per_level - sum(p.numel() for p in shared.parameters()) == sum(
        p.numel() for m in (pooler.offset_fc[1], pooler.awp[1]) for p in m.parameters())
    feats = [torch.randn(1, 8, 32, 40), torch.randn(1, 8, 16, 20)]
    small, large = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]])), Boxes(torch.tensor([[0.0, 0, 150, 150]]))
    with torch.no_grad():  # a level-1 change moves only the large RoI's feature
        for fc in pooler.offset_fc:
            fc[-1].bias.uniform_(-1, 1)
        before = pooler(feats, [Boxes.cat([small, large])])
        pooler.offset_fc[1][-1].bias.uniform_(-1, 1)
        pooler.awp[1].conv.weight.uniform_(-0.1, 0.1)
        after = pooler(feats, [Boxes.cat([small, large])])
    torch.testing.assert_close(after[0], before[0])
    assert (after[1] - before[1]).abs().max() > 1e-3
    pooler(feats, [small]).sum().backward()  # level 1 has no RoI
    grads = [p.grad for m in (pooler.offset_fc[1], pooler.awp[1]) for p in m.parameters()]
    assert all(g is not None and g.abs().sum() == 0 for g in grads)
    assert pooler.offset_fc[0][-1].weight.grad.abs().sum() > 0
