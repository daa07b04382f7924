"""The AutoAssign detector: neck and head, the COCO model's size, the three losses of one image
worked by hand, images without objects, the DDP graph, split invariance over processes,
inference, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import assert_split_invariant, check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "autoassign_R-18-FPN_toy.yaml")
COCO_R50 = os.path.join(PROJECT, "configs", "autoassign_R-50-FPN_1x_coco.yaml")


def toy_model(num_classes=6, *opts):
    torch.manual_seed(0)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", "MODEL.AUTOASSIGN.NUM_CLASSES", str(num_classes), *opts])
    return build_model(cfg)


def logit(p):
    return math.log(p / (1 - p))


def boxes_at(points, size=8.0):
    """The detector's per-location boxes: size x size, centred on each point."""
    return Boxes(torch.tensor([[x - size / 2, y - size / 2, x + size / 2, y + size / 2] for x, y in points]))


# ---- architecture ------------------------------------------------------------------------------

def test_p6_from_c5_and_relu_before_p7():
    model = toy_model().eval()
    x = torch.randn(1, 3, 128, 160)
    c = model.backbone.bottom_up(x)
    out = model.backbone(x)
    top = model.backbone.top_block
    assert top.in_feature == "res5" and top.p6.in_channels == c["res5"].shape[1] == 512
    torch.testing.assert_close(out["p6"], top.p6(c["res5"]))
    torch.testing.assert_close(out["p7"], top.p7(torch.relu(out["p6"])))
    assert (out["p6"] < 0).any()  # so the ReLU before P7 mattered
    assert [model.backbone.output_shape()[f].stride for f in model.head_in_features] == [8, 16, 32, 64, 128]


def test_locations_lie_at_multiples_of_the_stride():
    model = toy_model()
    anchors = model.anchor_generator([torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)])
    torch.testing.assert_close(anchors[0].get_centers(), torch.tensor(
        [[0.0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]))
    torch.testing.assert_close(anchors[1].get_centers(), torch.tensor([[0.0, 0], [16, 0]]))


def test_head_initialisation_and_outputs():
    model = toy_model(num_classes=6)
    head = model.head
    torch.testing.assert_close(head.cls_score.bias, torch.full((6,), -math.log(0.98 / 0.02)))
    torch.testing.assert_close(head.bbox_pred.bias, torch.full((4,), 4.0))
    assert head.obj_score.in_channels == 64 and head.obj_score.out_channels == 1
    assert [type(m).__name__ for m in head.bbox_subnet][:3] == ["Conv2d", "GroupNorm", "ReLU"]
    assert len(head.bbox_subnet) == len(head.cls_subnet) == 12
    torch.manual_seed(1)
    feats = [torch.randn(2, 64, 9, 7), torch.randn(2, 64, 5, 4), torch.randn(2, 64, 3, 2),
             torch.randn(2, 64, 2, 1), torch.randn(2, 64, 1, 1)]
    logits, reg, obj = head(feats)
    assert logits[0].shape == (2, 6, 9, 7) and obj[4].shape == (2, 1, 1, 1)
    # relu(scale * conv) * stride: about 4 strides at init, never negative.
    for r, stride in zip(reg, [8, 16, 32, 64, 128]):
        assert (r >= 0).all() and r.mean().item() == pytest.approx(4 * stride, rel=0.05)
    with torch.no_grad():
        head.scales[1].scale.fill_(-1.0)
    assert (head(feats)[1][1] == 0).all()  # relu after the scale


def test_coco_r50_model_has_the_official_parameter_count():
    # mmdetection's autoassign_r50-caffe_fpn_1x_coco: 36.43 M parameters (P6 from C5).
    # detectron2's FrozenBN keeps the ResNet's BN affine weights as buffers: counted here.
    model = build_model(load_config(COCO_R50, ["MODEL.DEVICE", "cpu"]))
    trainable = sum(p.numel() for p in model.parameters())
    frozen_bn = sum(b.numel() for n, b in model.backbone.named_buffers() if n.endswith((".weight", ".bias")))
    assert round((trainable + frozen_bn) / 1e6, 2) == 36.43
    assert model.center_prior.mu.shape == model.center_prior.sigma.shape == (80, 2)


# ---- losses ------------------------------------------------------------------------------------

def test_losses_of_one_image_worked_by_hand():
    # One stride-8 level with 4 locations, 2 classes, one GT of class 1: [4, 4, 20, 12], centre
    # (12, 8). L0 (8, 8), L1 (16, 8) and L3 (12, 8) lie inside it; L2 (40, 40) does not.
    # Class 1's prior is moved to mu = (0.5, 0): G = e^-0.5, 1, e^-0.125 for L0, L1, L3.
    model = toy_model(num_classes=2)
    with torch.no_grad():
        model.center_prior.mu[1] = torch.tensor([0.5, 0.0])
    anchors = boxes_at([(8, 8), (16, 8), (40, 40), (12, 8)])
    # Predicted boxes: L0 [4, 4, 20, 14] (IoU 0.8 = GIoU), L1 [12, 4, 20, 12] (IoU 0.5),
    # L2 [36, 36, 44, 44], L3 [4, 4, 20, 16] (IoU 2/3).
    reg = torch.tensor([[[4.0, 4, 12, 6], [4, 4, 4, 4], [4, 4, 4, 4], [8, 4, 8, 8]]])
    cls1, cls0, obj = [0.6, 0.3, 0.2, 0.5], 0.1, [0.5, 0.8, 0.9, 0.4]
    logits = torch.tensor([[[logit(cls0), logit(c)] for c in cls1]])
    obj_logits = torch.tensor([[[logit(o)] for o in obj]])
    gt = make_instances(64, 64, [[4, 4, 20, 12]], [1])
    losses = model.losses(anchors, torch.full((4,), 8.0), logits, reg, obj_logits, [gt])

    inside = [0, 1, 3]
    prior = {0: math.exp(-0.5), 1: 1.0, 3: math.exp(-0.125)}
    giou = {0: 0.8, 1: 0.5, 3: 2 / 3}
    p = {j: cls1[j] * obj[j] * math.exp(-5 * (1 - giou[j])) for j in inside}
    w = {j: math.exp(3 * p[j]) * prior[j] for j in inside}
    bag = sum(w[j] * p[j] for j in inside) / sum(w.values())
    assert losses["loss_pos"].item() == pytest.approx(0.25 * -math.log(bag), rel=1e-5)

    # 1 / (1 - IoU) = 5, 2, 3 -> min-max over the GT's locations: 1, 0, 1/3 on class 1.
    pos_prob = {0: 1.0, 1: 0.0, 3: 1 / 3}
    neg = 0.0
    for j in range(4):
        for k, c in enumerate([cls0, cls1[j]]):
            q = c * obj[j] * (1 - (pos_prob.get(j, 0.0) if k == 1 else 0.0))
            neg += q**2 * -math.log(1 - q)
    prior_sum = sum(prior.values())
    assert losses["loss_neg"].item() == pytest.approx(0.75 * neg / prior_sum, rel=1e-5)
    assert losses["loss_center"].item() == pytest.approx(0.75 * 1 / prior_sum, rel=1e-6)


def test_a_location_inside_two_gts_of_one_class_takes_the_larger_positive_probability():
    # GT A [4, 4, 20, 12] and GT B [12, 4, 28, 12], both class 0; locations L0 (8, 8) in A,
    # L1 (16, 8) in both, L2 (24, 8) and L3 (20, 8) in B. Predicted boxes and their max IoU
    # over both GTs -> 1 / (1 - IoU): L0 [4, 4, 12, 12] 0.5 -> 2; L1 [4, 4, 24, 12] 0.8 -> 5;
    # L2 [12, 4, 28, 13] 8/9 -> 9; L3 [12, 4, 20, 12] 0.5 -> 2.
    # Min-max over A's {L0, L1}: 0, 1. Over B's {L1, L2, L3}: 3/7, 1, 0. L1 takes max(1, 3/7):
    # its negative loss is 0; B's value (the official last write) or the sum would not be.
    model = toy_model(num_classes=1)
    anchors = boxes_at([(8, 8), (16, 8), (24, 8), (20, 8)])
    reg = torch.tensor([[[4.0, 4, 4, 4], [12, 4, 8, 4], [12, 4, 4, 5], [8, 4, 0, 4]]])
    logits = torch.full((1, 4, 1), logit(0.5))
    obj = torch.full((1, 4, 1), logit(0.5))
    gt = make_instances(64, 64, [[4, 4, 20, 12], [12, 4, 28, 12]], [0, 0])
    losses = model.losses(anchors, torch.full((4,), 8.0), logits, reg, obj, [gt])
    # Pairs' offsets from their GT's centre: -0.5, 0.5 (A); -0.5, 0.5, 0 (B) strides.
    prior_sum = 4 * math.exp(-0.125) + 1
    q = 0.25  # L0 and L3 (probability 0); L1 and L2 have probability 1, q = 0
    expected = 0.75 * 2 * q**2 * -math.log(1 - q) / prior_sum
    assert losses["loss_neg"].item() == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_the_center_prior_and_the_confidence():
    model = toy_model().train()
    batch = [{"image": torch.rand(3, 97, 131) * 255,
              "instances": make_instances(97, 131, [[10, 10, 60, 70], [60, 20, 120, 85]], [0, 3])}]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_pos", "loss_neg", "loss_center"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    (losses["loss_pos"] + losses["loss_center"]).backward()
    for name in ("mu", "sigma"):
        grad = getattr(model.center_prior, name).grad
        assert grad[[0, 3]].abs().min() > 0  # the two GT classes
        assert (grad[[1, 2, 4, 5]] == 0).all()  # no GT of these classes
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0
    assert model.head.obj_score.weight.grad.abs().sum() > 0


def test_images_without_objects_zero_positive_loss_positive_negative_loss():
    model = toy_model().train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255, "instances": make_instances(97, 131, [], [])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": make_instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_pos"].item() == 0.0 and losses["loss_center"].item() == 0.0
    assert losses["loss_neg"].item() > 0
    sum(losses.values()).backward()
    # Every parameter is in the graph (zero gradients where only positives reach), so DDP
    # does not wait for gradients that never come.
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert (model.center_prior.mu.grad == 0).all() and (model.head.bbox_pred.weight.grad == 0).all()


def test_a_gt_containing_no_location_adds_nothing_and_stays_finite():
    # A 6 x 6 box between the stride-8 locations (and every coarser one): no candidate.
    model = toy_model().train()
    gt = make_instances(64, 64, [[17, 17, 23, 23]], [2])
    batch = [{"image": torch.rand(3, 64, 64) * 255, "instances": gt}]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_pos"].item() == 0.0 and losses["loss_center"].item() == 0.0
    assert torch.isfinite(losses["loss_neg"]) and losses["loss_neg"].item() > 0
    sum(losses.values()).backward()


@pytest.mark.slow
def test_loss_does_not_depend_on_how_the_batch_is_split(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = []
    # Split over two processes: [0, 2] and [1, 3]. The second process has no object at all,
    # which must not deadlock DDP (its box branch and prior still join the gradient reduction).
    for boxes, classes in [([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), ([], []),
                           ([[30, 5, 60, 30], [5, 40, 90, 90]], [0, 1]), ([], [])]:
        batch.append({"image": torch.rand(3, 96, 128, generator=g) * 255,
                      "instances": make_instances(96, 128, boxes, classes)})
    # GN: BatchNorm statistics depend on the split by construction.
    opts = ["MODEL.AUTOASSIGN.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN"]
    assert_split_invariant(TOY, opts, batch, str(tmp_path))


# ---- inference ---------------------------------------------------------------------------------

def test_inference_scores_are_cls_times_objectness_thresholded_and_nms_per_class():
    model = toy_model(num_classes=2)
    anchors = [boxes_at([(8, 8), (10, 8)], size=8)]
    reg = [torch.full((2, 4), 8.0)]  # boxes [0, 0, 16, 16] and [2, 0, 18, 16]: IoU 0.78
    # scores: location 0 (0.9, 0.02), location 1 (0.8, 0.7), as products cls * obj.
    scores = [torch.tensor([[0.9, 0.02], [0.8, 0.7]])]
    out = model.inference_single_image(anchors, scores, reg, (16, 17))
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[0.0, 0, 16, 16], [2, 0, 18, 16]]))
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.7]))
    assert out.pred_classes.tolist() == [0, 1]
    model.test_topk_candidates = 1  # the best (location, class) pair per level only
    out = model.inference_single_image(anchors, scores, reg, (16, 17))
    assert out.pred_classes.tolist() == [0] and out.scores.tolist() == pytest.approx([0.9])


def test_eval_mode_scores_are_the_product_of_the_two_sigmoids():
    model = toy_model(2, "MODEL.AUTOASSIGN.SCORE_THRESH_TEST", "0.0").eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(logit(0.6))
        model.head.obj_score.bias.fill_(logit(0.5))
        model.head.cls_score.weight.zero_()
        model.head.obj_score.weight.zero_()
        (out,) = model([{"image": torch.rand(3, 64, 64) * 255}])
    torch.testing.assert_close(out["instances"].scores, torch.full((len(out["instances"]),), 0.3))


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model(6, "MODEL.AUTOASSIGN.SCORE_THRESH_TEST", "0.0"), num_classes=6)
