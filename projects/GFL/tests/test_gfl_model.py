"""The GFL detector: backbone, head, losses (by hand), images without objects, inference, the
COCO model's size, split invariance over processes, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from harness.projects import load_config, trainer_class
from harness.testing import assert_split_invariant, check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "gfl_R-18-FPN_toy.yaml")
COCO_R50 = os.path.join(PROJECT, "configs", "gfl_R-50-FPN_1x_coco.yaml")


def toy_model(num_classes=6, *opts):
    torch.manual_seed(0)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", "MODEL.GFL.NUM_CLASSES", str(num_classes), *opts])
    return build_model(cfg)



def logit(p):
    return math.log(p / (1 - p))


# ---- architecture ------------------------------------------------------------------------------

@pytest.mark.parametrize("offset, first_centre", [(0.5, 4.0), (0.0, 0.0)])
def test_anchor_offset_places_the_locations(offset, first_centre):
    """MODEL.GFL.ANCHOR_OFFSET: 0.5 (official 1.x) puts P3's first location at the centre of
    its 8 px cell, 0.0 (mmdetection 2.x / 3.x) at its corner; the anchor is 8 x stride."""
    model = toy_model(6, "MODEL.GFL.ANCHOR_OFFSET", str(offset))
    (p3,) = model.anchor_generator([torch.zeros(1, 1, 4, 4)])[:1]
    torch.testing.assert_close(p3.tensor[0], torch.tensor([-32.0, -32, 32, 32]) + first_centre)


def test_optimizer_groups_norm_biases_with_the_norms_as_the_official_builder():
    """Official: bias_lr_mult 2 and bias_decay_mult 0 for conv biases only; a GroupNorm's
    weight and bias keep lr x1 and weight decay 1e-4 (mmdetection 1.x tests for a norm layer
    first). detectron2's own groups would give the GroupNorm bias 2x lr and no decay."""
    cfg = load_config(COCO_R50, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    groups = {id(g["params"][0]): (g["lr"], g["weight_decay"])
              for g in trainer_class(COCO_R50).build_optimizer(cfg, model).param_groups}
    conv, gn = model.head.cls_subnet[0], model.head.cls_subnet[1]
    assert isinstance(gn, torch.nn.GroupNorm) and conv.bias is None  # no conv bias before GN
    assert groups[id(conv.weight)] == (0.01, 1e-4)
    assert groups[id(gn.weight)] == (0.01, 1e-4) and groups[id(gn.bias)] == (0.01, 1e-4)
    assert groups[id(model.head.cls_score.bias)] == (0.02, 0.0)
    assert groups[id(model.head.scales[0].scale)] == (0.01, 1e-4)


def test_p6_from_p5_and_no_relu_before_p7():
    model = toy_model()
    features = model.backbone(torch.randn(1, 3, 128, 160))
    top = model.backbone.top_block
    torch.testing.assert_close(features["p6"], top.p6(features["p5"]))
    torch.testing.assert_close(features["p7"], top.p7(features["p6"]))
    assert (features["p6"] < 0).any()  # so a ReLU before P7 would have changed it
    assert [model.backbone.output_shape()[f].stride for f in model.head_in_features] == [8, 16, 32, 64, 128]


def test_head_initialisation_and_outputs():
    model = toy_model(num_classes=6)
    head = model.head
    torch.testing.assert_close(head.cls_score.bias, torch.full((6,), -math.log(99)))
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    assert head.reg_pred.out_channels == 4 * 17
    assert all(m.bias is None for m in head.cls_subnet if isinstance(m, torch.nn.Conv2d))  # GN follows
    logits, reg = head([torch.randn(2, 64, 9, 7), torch.randn(2, 64, 5, 4)] * 2 + [torch.randn(2, 64, 1, 1)])
    assert logits[0].shape == (2, 6, 9, 7) and reg[4].shape == (2, 68, 1, 1)


def test_coco_r50_model_has_the_official_parameter_count():
    # mmdetection's gfl_r50_fpn_1x_coco: 32.44 M parameters. detectron2's FrozenBN keeps the
    # ResNet's BN affine weights as buffers, so they are counted here with the parameters.
    model = build_model(load_config(COCO_R50, ["MODEL.DEVICE", "cpu"]))
    trainable = sum(p.numel() for p in model.parameters())
    frozen_bn = sum(b.numel() for n, b in model.backbone.named_buffers() if n.endswith((".weight", ".bias")))
    assert round((trainable + frozen_bn) / 1e6, 2) == 32.44
    assert frozen_bn == 53120


# ---- losses ------------------------------------------------------------------------------------

def test_losses_of_two_positives_worked_by_hand():
    # Stride-8 level, 2 classes, one image with two positives:
    # A: location (12, 12) = (1.5, 1.5) strides; GT of class 0 reaching beyond reg_max = 16
    #    strides on the right/bottom (DFL clamp); cls logits 0 -> score 0.5; a smooth
    #    distribution on every side.
    # B: location (20, 12); GT of class 0 exactly 1 stride from it on every side, predicted
    #    exactly (one-hot bin 1): IoU 1, GIoU and DFL 0; scores 0.8 / 0.1.
    model = toy_model(num_classes=2)
    anchors = [Boxes(torch.tensor([[4.0, 4.0, 20.0, 20.0], [12.0, 4.0, 28.0, 20.0]]))]
    reg = torch.full((1, 2, 4, 17), -1e4)
    reg[0, 0] = torch.arange(17.0) * 0.1
    reg[0, 1, :, 1] = 0.0
    logits = torch.tensor([[[0.0, 0.0], [logit(0.8), logit(0.1)]]])
    gt_boxes = torch.tensor([[[4.0, 4, 300, 300], [12, 4, 28, 20]]])
    losses = model.losses(anchors, logits, reg, torch.tensor([[0, 0]]), gt_boxes)

    p = [math.exp(0.1 * j) for j in range(17)]
    p = [v / sum(p) for v in p]
    e = sum(j * v for j, v in enumerate(p))  # A's predicted distance, every side
    pred = [1.5 - e, 1.5 - e, 1.5 + e, 1.5 + e]
    gt = [0.5, 0.5, 37.5, 37.5]
    inter = (min(pred[2], gt[2]) - max(pred[0], gt[0])) ** 2
    union = (2 * e) ** 2 + 37.0**2 - inter
    iou = inter / union
    hull = (max(pred[2], gt[2]) - min(pred[0], gt[0])) ** 2
    giou = iou - (hull - union) / hull
    # QFL over 2 positives: A's GT-class entry (target IoU) and other-class entry (target 0),
    # B's (target 1 and 0).
    qfl = (math.log(2) * (iou - 0.5) ** 2 + math.log(2) * 0.25
           + -math.log(0.8) * 0.2**2 + -math.log(0.9) * 0.1**2) / 2
    # Box losses: score-weighted mean over positives, weights 0.5 (A) and 0.8 (B).
    # A's targets (strides): l = t = 1 (an exact bin), r = b = 36 -> clamped to 15.9 (official).
    dfl_a = (2 * -math.log(p[1]) + 2 * -(0.1 * math.log(p[15]) + 0.9 * math.log(p[16]))) / 4
    assert losses["loss_qfl"].item() == pytest.approx(qfl, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(2.0 * 0.5 * (1 - giou) / 1.3, rel=1e-5)
    assert losses["loss_dfl"].item() == pytest.approx(0.25 * 0.5 * dfl_a / 1.3, rel=1e-5)


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
    assert set(losses) == {"loss_qfl", "loss_giou", "loss_dfl"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_images_without_objects_give_cls_loss_and_zero_box_losses_in_the_graph():
    model = toy_model().train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255, "instances": make_instances(97, 131, [], [])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": make_instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_qfl"].item() > 0
    assert losses["loss_giou"].item() == 0.0 and losses["loss_dfl"].item() == 0.0
    assert losses["loss_giou"].requires_grad and losses["loss_dfl"].requires_grad
    (losses["loss_giou"] + losses["loss_dfl"]).backward()
    assert model.head.reg_pred.weight.grad is not None
    assert (model.head.reg_pred.weight.grad == 0).all()


@pytest.mark.slow
def test_loss_does_not_depend_on_how_the_batch_is_split(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = []
    for boxes, classes in [([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), ([], []),
                           ([[30, 5, 60, 30]], [0]), ([[5, 40, 90, 90], [20, 10, 50, 35]], [5, 2])]:
        batch.append({"image": torch.rand(3, 96, 128, generator=g) * 255,
                      "instances": make_instances(96, 128, boxes, classes)})
    # GN: BatchNorm statistics depend on the split by construction.
    opts = ["MODEL.GFL.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN"]
    assert_split_invariant(TOY, opts, batch, str(tmp_path))


# ---- inference ---------------------------------------------------------------------------------

def test_inference_decodes_thresholds_and_runs_class_wise_nms():
    model = toy_model(num_classes=2)
    anchors = [Boxes(torch.tensor([[0.0, 0, 16, 16], [2, 0, 18, 16]]))]  # centres (8, 8), (10, 8)
    logits = [torch.tensor([[logit(0.9), logit(0.02)], [logit(0.8), logit(0.7)]])]
    reg = torch.full((2, 4, 17), -1e4)
    reg[:, :, 1] = 0.0  # every side exactly 1 stride = 8 px
    # Class 0: the second box (IoU 0.78 with the first) is suppressed; class 1 keeps it;
    # 0.02 < 0.05 is dropped. The second box is clipped to the image width 17.
    out = model.inference_single_image(anchors, logits, [reg], (16, 17))
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[0.0, 0, 16, 16], [2, 0, 17, 16]]))
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.7]))
    assert out.pred_classes.tolist() == [0, 1]
    model.test_topk_candidates = 1  # only the location with the highest max score survives
    out = model.inference_single_image(anchors, logits, [reg], (16, 17))
    assert out.pred_classes.tolist() == [0] and out.scores.tolist() == pytest.approx([0.9])


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model(6, "MODEL.GFL.SCORE_THRESH_TEST", "0.0"), num_classes=6)
