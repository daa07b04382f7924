"""BorderDet: border targets and score fusion on constructed cases, images without objects,
split invariance of the border normalisers, eval outputs, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from borderdet import apply_border_deltas, border_targets
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import assert_split_invariant, check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "borderdet_R-18-FPN_toy.yaml")
COCO = os.path.join(PROJECT, "configs", "borderdet_R-50-FPN_1x_coco.yaml")
BOX_LOSSES = {"loss_fcos_loc", "loss_fcos_ctr", "loss_border_reg"}


FCOS_KINDS = ["official", "detectron2"]


def toy_model(num_classes=6, *opts):
    torch.manual_seed(0)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", "MODEL.BORDERDET.NUM_CLASSES", str(num_classes), *opts])
    return build_model(cfg)



def logit(p):
    return math.log(p / (1 - p))


# ---- border targets ----------------------------------------------------------------------------

def test_border_targets_by_hand():
    coarse = torch.tensor([[0.0, 0, 10, 20],     # IoU 144/232 = 0.62 with GT 0: positive
                           [0.0, 0, 10, 10],     # IoU 81/203 = 0.40 with GT 0: background
                           [50.0, 50, 60, 60]])  # IoU 1 with GT 1, 0 with GT 0
    gt = torch.tensor([[1.0, 2, 12, 18], [50.0, 50, 60, 60]])
    labels, deltas = border_targets(coarse, gt, torch.tensor([3, 5]), num_classes=6)
    assert labels.tolist() == [3, 6, 5]
    # (gt - coarse) / (0.5 * [w, h, w, h]) with w = 10, h = 20.
    torch.testing.assert_close(deltas[0], torch.tensor([0.2, 0.2, 0.4, -0.2]))
    torch.testing.assert_close(deltas[2], torch.zeros(4))
    torch.testing.assert_close(apply_border_deltas(coarse[[0]], deltas[[0]]), gt[[0]])


def test_border_target_goes_to_the_gt_with_the_highest_iou():
    coarse = torch.tensor([[0.0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 12], [0.0, 0, 10, 11]])  # IoU 0.83 and 0.91
    labels, _ = border_targets(coarse, gt, torch.tensor([1, 2]), num_classes=3)
    assert labels.tolist() == [2]


def test_border_targets_without_gt_are_background():
    no_gt = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    labels, deltas = border_targets(torch.rand(5, 4) * 10, *no_gt, num_classes=4)
    assert labels.tolist() == [4] * 5 and (deltas == 0).all()


# ---- score fusion ------------------------------------------------------------------------------

def test_score_fusion_by_hand():
    model = toy_model(num_classes=2)
    # Location 0: cls 0.81, ctr 0.64 -> s = 0.72 > 0.05; border cls 0.5 -> sqrt(0.72 * 0.5) = 0.6.
    # Location 1: s = sqrt(0.04 * 0.04) = 0.04 < 0.05 is dropped, however high its border score;
    # so is class 1 at location 0: sqrt(0.001 * 0.64) = 0.025.
    logits = torch.tensor([[logit(0.81), logit(0.001)], [logit(0.04), logit(0.001)]])
    ctr = torch.tensor([[logit(0.64)], [logit(0.04)]])
    border_logits = torch.tensor([[0.0, logit(0.01)], [logit(0.99), logit(0.99)]])
    coarse = torch.tensor([[10.0, 10, 30, 50], [0, 0, 20, 20]])
    border_deltas = torch.tensor([[0.1, -0.1, 0.2, 0.0], [0.0, 0, 0, 0]])
    out = model.inference_single_image_border([logits], [ctr], [border_logits], [border_deltas],
                                              [coarse], (100, 100))
    assert out.pred_classes.tolist() == [0]
    assert out.scores.tolist() == pytest.approx([0.6])
    # Box = coarse + deltas * 0.5 * [w, h, w, h] with w = 20, h = 40.
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[11.0, 8, 32, 50]]))


def test_nms_sees_the_unclipped_boxes():
    """Official: NMS on the boxes as predicted, clipping only afterwards. Two boxes leaving a
    100 x 100 image at the right have IoU 1/3 as predicted (both kept at NMS 0.6) but would be
    identical once clipped."""
    model = toy_model(num_classes=1)
    logits, ctr = torch.full((2, 1), logit(0.9)), torch.full((2, 1), logit(0.9))
    coarse = torch.tensor([[90.0, 10, 150, 50], [90, 10, 110, 50]])
    out = model.inference_single_image_border([logits], [ctr], [torch.zeros(2, 1)],
                                              [torch.zeros(2, 4)], [coarse], (100, 100))
    assert len(out) == 2


# ---- where the borders are read ------------------------------------------------------------------

@pytest.mark.parametrize("fcos", FCOS_KINDS)
def test_borders_through_cell_locations_are_read_at_those_cells(fcos):
    """The coarse box of the location in cell (row 4, col 4) of a 10 x 10 map at stride 8 has
    its edges through the locations of columns 3 and 6 and rows 2 and 7. On a map whose top and
    bottom groups hold the row index and whose left and right groups hold the column index,
    BorderAlign must read exactly 2, 3, 7, 6 (not 2.5, 3.5, 7.5, 6.5: half a cell off)."""
    from borderdet import border_align_reference

    model = toy_model(2, "MODEL.BORDERDET.FCOS", fcos)
    h = w = 10
    anchors = model.anchor_generator([torch.zeros(1, 1, h, w)])[:1]  # stride 8
    assert model.anchor_generator.strides[0] == 8
    # Deltas (l, t, r, b) in strides, as the head predicts them (detectron2 decodes relu(x) * 8).
    reg = torch.zeros(1, 4, h, w)
    reg[0, :, 4, 4] = torch.tensor([1.0, 2.0, 2.0, 3.0])
    (coarse,) = model._coarse_boxes(anchors, [reg])
    boxes = model._align_boxes(coarse, 8, (h, w), model.anchor_generator.offset)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    plane = torch.stack([rows, cols, rows, cols])[None]  # groups: top, left, bottom, right
    read = border_align_reference(plane, boxes, pool_size=10)[0, :, 4, 4]
    assert read.tolist() == [2.0, 3.0, 7.0, 6.0]


# ---- the official FCOS half -------------------------------------------------------------------

def test_official_fcos_adds_p6_from_c5_and_one_scale_per_level():
    official, d2 = (toy_model(2, "MODEL.BORDERDET.FCOS", kind) for kind in FCOS_KINDS)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # Toy R-18: P6 = 3x3 conv of C5 (512 channels) instead of P5 (64), + 5 scalars.
    assert count(official) - count(d2) == (512 - 64) * 64 * 9 + 5
    assert official.backbone.top_block.p6.in_channels == 512 and len(official.head.scales) == 5
    assert d2.head.scales is None
    assert official.anchor_generator.offset == 0.0 and d2.anchor_generator.offset == 0.5


def test_coco_model_sizes():
    """The README's counts: the COCO model with the official FCOS half, and with detectron2's."""
    counts = {}
    for kind in FCOS_KINDS:
        cfg = load_config(COCO, ["MODEL.DEVICE", "cpu", "MODEL.BORDERDET.FCOS", kind])
        counts[kind] = sum(p.numel() for p in build_model(cfg).parameters())
    assert counts == {"official": 37_380_078, "detectron2": 33_251_305}


def test_an_unknown_fcos_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.BORDERDET.FCOS must be one of"):
        toy_model(2, "MODEL.BORDERDET.FCOS", "cvpods")


def test_official_fcos_losses_by_hand():
    """One GT [-8, -8, 24, 8] (class 0 of 2), three stride-8 locations at x = 0, 8, 16 (y = 0),
    the first two positive. Centerness targets sqrt(8/24) and 1. Location 0 predicts the GT
    exactly (GIoU loss 0), location 1 the box [0, -8, 16, 8] (IoU 1/2 inside the GT: GIoU loss
    1/2). All logits 0 (p = 1/2). Official: the GIoU loss weighted by the centerness target
    and divided by its sum; classification and centerness divided by the 2 positives."""
    model = toy_model(2, "MODEL.BORDERDET.FCOS", "official")
    anchors = [Boxes(torch.tensor([[-4.0, -4, 4, 4], [4, -4, 12, 4], [12, -4, 20, 4]]))]
    gt = torch.tensor([[-8.0, -8, 24, 8]] * 3)
    labels = [torch.tensor([0, 0, 2])]
    deltas = [torch.tensor([[[1.0, 1, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1]]])]
    zeros = [torch.zeros(1, 3, 2)], [torch.zeros(1, 3, 1)]
    with EventStorage():
        losses = model.losses(anchors, zeros[0], labels, deltas, [Boxes(gt)], zeros[1])
    ln2 = math.log(2)
    # Focal loss at p = 1/2: positives 0.25 * 0.25 * ln2, negatives 0.75 * 0.25 * ln2;
    # 2 positive and 4 negative (anchor, class) entries.
    assert losses["loss_fcos_cls"].item() == pytest.approx((2 * 0.0625 + 4 * 0.1875) * ln2 / 2)
    c0 = math.sqrt(8 / 24)
    assert losses["loss_fcos_loc"].item() == pytest.approx((c0 * 0 + 1 * 0.5) / (c0 + 1))
    assert losses["loss_fcos_ctr"].item() == pytest.approx(ln2)  # BCE(logit 0) = ln2 for any target


# ---- training ----------------------------------------------------------------------------------

def test_loss_on_two_odd_sized_images_is_finite():
    model = toy_model().train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255,
         "instances": make_instances(97, 131, [[10, 10, 40, 50], [60, 20, 90, 45]], [0, 3])},
        {"image": torch.rand(3, 115, 89) * 255,
         "instances": make_instances(115, 89, [[5, 60, 80, 110]], [5])},
    ]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_border_cls",
                           "loss_border_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_images_without_objects_give_cls_losses_and_zero_box_losses_in_the_graph():
    model = toy_model().train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255, "instances": make_instances(97, 131, [], [])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": make_instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    for k, v in losses.items():
        assert torch.isfinite(v), k
        assert (v.item() == 0.0) if k in BOX_LOSSES else (v.item() > 0.0), k
    sum(losses.values()).backward()
    assert (model.head.border_bbox_pred.weight.grad == 0).all()


@pytest.mark.slow
def test_border_loss_normalisers_do_not_depend_on_the_split(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = []
    for boxes, classes in [([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), ([[30, 5, 90, 60]], [2]),
                           ([[30, 5, 60, 30]], [0]), ([[5, 40, 90, 90], [20, 10, 50, 35]], [5, 2])]:
        batch.append({"image": torch.rand(3, 96, 128, generator=g) * 255,
                      "instances": make_instances(96, 128, boxes, classes)})
    opts = ["MODEL.BORDERDET.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
            "MODEL.BORDERDET.BORDER_IOU_THRESH", "0.3"]
    model = toy_model(6, *opts[2:])
    # Coarse boxes of 4 x 4 strides (untrained ones are near zero size), so that the images
    # have border positives.
    torch.nn.init.constant_(model.head.bbox_pred.bias, 2.0)
    losses = assert_split_invariant(TOY, opts, batch, str(tmp_path), state=model.state_dict(),
                                    keys=["loss_border_cls", "loss_border_reg"])
    assert losses["loss_border_reg"] > 0


# ---- inference ---------------------------------------------------------------------------------

def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model(6, "MODEL.BORDERDET.SCORE_THRESH_TEST", "0.0"), num_classes=6)


def test_instance_norm_matches_torch_and_takes_1x1_maps():
    from borderdet.border_branch import InstanceNorm

    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(InstanceNorm()(x), torch.nn.InstanceNorm2d(5)(x))
    assert (InstanceNorm()(torch.randn(2, 5, 1, 1)) == 0).all()
