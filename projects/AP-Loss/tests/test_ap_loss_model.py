"""RetinaNet with the AP-loss: anchors, assignment (without the official IoU-0 bug), head, the
losses of a hand-built case, images without objects, the two ranking scopes over processes,
inference, the COCO model's size, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from ap_loss import PositiveLowQualityMatcher
from ap_loss_oracle import ap_loss_loop
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import (
    assert_split_invariant,
    check_eval_output,
    make_instances,
    split_losses_and_grads,
)

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "ap_loss_R-18-FPN_toy.yaml")
COCO_R50 = os.path.join(PROJECT, "configs", "ap_loss_R-50-FPN_512_100e_coco.yaml")


def toy_model(num_classes=6, *opts):
    torch.manual_seed(0)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", str(num_classes), *opts])
    return build_model(cfg)


def coco_model():
    return build_model(load_config(COCO_R50, ["MODEL.DEVICE", "cpu"]))


# ---- detector ----------------------------------------------------------------------------------

def test_six_anchors_per_location_of_4_and_5_7_strides_centred_on_the_cell():
    model = coco_model()
    (p3, p7) = [model.anchor_generator([torch.zeros(1, 1, 2, 2)] * 5)[i] for i in (0, 4)]
    assert len(p3) == 4 * 6
    first = p3.tensor[:6]
    torch.testing.assert_close(Boxes(first).get_centers(), torch.full((6, 2), 4.0))  # (0 + 0.5) * 8
    w, h = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    torch.testing.assert_close((w * h).sqrt(), torch.tensor([32.0] * 3 + [32 * math.sqrt(2)] * 3))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 2))
    w7 = p7.tensor[1, 2] - p7.tensor[1, 0]
    assert w7.item() == pytest.approx(512.0)  # ratio 1, scale 1 on stride 128


def test_head_has_no_norm_and_the_official_initialisation():
    model = coco_model()
    head = model.head
    assert {type(m).__name__ for m in head.cls_subnet} == {"Conv2d", "ReLU"}
    assert head.cls_score.out_channels == 6 * 80 and head.bbox_pred.out_channels == 6 * 4
    torch.testing.assert_close(head.cls_score.bias, torch.full((480,), -math.log(99)))
    assert head.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert head.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_coco_r50_model_size():
    # Official model (lib/model/model.py, ResNet-50): the same layers, plus the frozen BN
    # affine values (buffers in detectron2's FrozenBN, 53,120) and a conv1 bias (64).
    model = coco_model()
    trainable = sum(p.numel() for p in model.parameters())
    frozen_bn = sum(b.numel() for n, b in model.backbone.named_buffers() if n.endswith((".weight", ".bias")))
    assert (trainable, frozen_bn) == (37_334_712, 53_120)
    assert round((trainable + frozen_bn + 64) / 1e6, 2) == 37.39


def test_assignment_thresholds_best_anchor_ties_and_no_match_at_iou_zero():
    matcher = PositiveLowQualityMatcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    # GT 0: best IoU 0.3, shared by anchors 1 and 2 (both become positive); anchor 0 has 0.45
    # (ignored) with GT 1... GT 2 overlaps nothing: best IoU 0 must not make the untouched
    # anchors 4 and 5 positive (the official code and detectron2's Matcher would).
    iou = torch.tensor([
        [0.0, 0.3, 0.3, 0.1, 0.0, 0.0],
        [0.45, 0.0, 0.0, 0.6, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ])
    matches, labels = matcher(iou)
    assert labels.tolist() == [-1, 1, 1, 1, 0, 0]
    assert matches[1:4].tolist() == [0, 0, 1]


def test_losses_of_a_hand_built_case():
    # 3 anchors, 2 classes, one image: anchor 0 matches the GT (class 1, IoU 1), anchor 1 is a
    # negative, anchor 2 is ignored (IoU 4/9 with the GT).
    model = toy_model(num_classes=2)
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [0, 0, 15, 15]]))]
    gt = make_instances(64, 64, [[0, 0, 10, 10]], [1])
    gt_labels, gt_boxes = model.label_anchors(anchors, [gt])
    assert gt_labels[0].tolist() == [1, 2, -1]
    logits = torch.tensor([[[0.5, -1.0], [2.0, 0.3], [9.0, 9.0]]], requires_grad=True)
    deltas = torch.tensor([[[0.5, -2.0, 0.0, 0.3], [9.0, 9, 9, 9], [9.0, 9, 9, 9]]])
    deltas.requires_grad_()
    with EventStorage():
        losses = model.losses(anchors, [logits], gt_labels, [deltas], gt_boxes)
    # AP-loss over the 4 non-ignored entries: the positive (anchor 0, class 1) at -1.0.
    entries = torch.tensor([0.5, -1.0, 2.0, 0.3])
    ref_loss, ref_grad = ap_loss_loop(entries, torch.tensor([0, 1, 0, 0]))
    assert losses["loss_cls"].item() == pytest.approx(ref_loss.item())
    # Box: exact anchor, targets 0; SmoothL1 (beta 1) of (0.5, -2, 0, 0.3) / (4 x 1 positive).
    assert losses["loss_box_reg"].item() == pytest.approx((0.125 + 1.5 + 0 + 0.045) / 4)
    sum(losses.values()).backward()
    torch.testing.assert_close(logits.grad[0, :2].flatten(), ref_grad)
    assert (logits.grad[0, 2] == 0).all()  # ignored anchor
    torch.testing.assert_close(deltas.grad[0, 0], torch.tensor([0.5, -1.0, 0.0, 0.3]) / 4)


def test_focal_switch_gives_detectron2_retinanet_losses():
    model = toy_model(2, "MODEL.AP_LOSS.CLS_LOSS", "focal").train()
    gt = make_instances(96, 128, [[10, 10, 50, 60]], [1])
    batch = [{"image": torch.rand(3, 96, 128) * 255, "instances": gt}]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"} and losses["loss_cls"].item() > 0
    assert losses["loss_cls"].grad_fn.name() != "_APLossBackward"


def test_images_without_objects_give_zero_losses_without_nan():
    model = toy_model().train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255, "instances": make_instances(97, 131, [], [])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": make_instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()
    assert (model.head.cls_score.weight.grad == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- ranking scope over processes --------------------------------------------------------------

def _batch():
    g = torch.Generator().manual_seed(0)
    batch = []
    for boxes, classes in [([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), ([[30, 5, 60, 30]], [0]),
                           ([[5, 40, 90, 90], [20, 10, 50, 35]], [5, 2]), ([[70, 50, 120, 90]], [3])]:
        batch.append({"image": torch.rand(3, 96, 128, generator=g) * 255,
                      "instances": make_instances(96, 128, boxes, classes)})
    return batch


# GN: BatchNorm statistics depend on the split by construction.
GN = ["MODEL.RETINANET.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN"]


@pytest.mark.slow
def test_global_scope_ranks_the_whole_batch_over_processes(tmp_path):
    # One process with 4 images == two processes with 2 each: the same AP and update.
    assert_split_invariant(TOY, GN + ["MODEL.AP_LOSS.SCOPE", "global"], _batch(), str(tmp_path))


@pytest.mark.slow
def test_batch_scope_ranks_each_process_alone(tmp_path):
    # Two processes: the loss is the mean of the two halves' losses, each ranked alone, and the
    # gradient the mean of theirs (DDP's average); not the whole batch's.
    opts = GN + ["MODEL.AP_LOSS.SCOPE", "batch"]
    batch = _batch()
    torch.manual_seed(0)
    state = build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts])).state_dict()
    two = split_losses_and_grads(TOY, opts, batch, str(tmp_path), 2, state=state)
    halves = [split_losses_and_grads(TOY, opts, batch[r::2], str(tmp_path), 1, state=state)
              for r in (0, 1)]
    whole = split_losses_and_grads(TOY, opts, batch, str(tmp_path), 1, state=state)
    for k in ("loss_cls", "loss_box_reg"):
        mean = (halves[0]["losses"][k] + halves[1]["losses"][k]) / 2
        torch.testing.assert_close(two["losses"][k], mean, rtol=1e-5, atol=1e-7)
    # ... which is not what one process ranking all 4 images computes.
    g2, g1 = two["grads"]["head.cls_score.weight"], whole["grads"]["head.cls_score.weight"]
    assert (g2 - g1).norm() > 0.05 * g1.norm()
    for k, g in two["grads"].items():
        mean = (halves[0]["grads"][k] + halves[1]["grads"][k]) / 2
        torch.testing.assert_close(g, mean, rtol=1e-4, atol=1e-6)


# ---- inference and smoke -----------------------------------------------------------------------

def test_boxes_are_clipped_before_nms():
    """Official: boxes clipped to the image, then NMS 0.5. Two boxes leaving a 100 x 100 image
    at the right (IoU 1/3 as predicted) are the same box once clipped: one is suppressed."""
    model = toy_model(num_classes=1).eval()
    anchors = [Boxes(torch.tensor([[90.0, 10, 150, 50], [90, 10, 110, 50]]))]
    scores = [torch.tensor([[0.9], [0.8]])]  # probabilities, as RetinaNet.inference passes them
    out = model.inference_single_image(anchors, scores, [torch.zeros(2, 4)], (100, 100))
    assert len(out) == 1 and out.scores.item() == pytest.approx(0.9)
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[90.0, 10, 100, 50]]))


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model(6, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"), num_classes=6)
