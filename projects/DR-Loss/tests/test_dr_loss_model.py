"""RetinaNet with the DR loss: the two losses on hand-made anchors, the ranking scopes, the
initial loss of a fresh model, images without objects, and the split over 2 processes."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from test_dr_loss import reference

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances, split_losses_and_grads

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "dr_loss_R-18-FPN_toy.yaml")


def toy_model(*opts):
    torch.manual_seed(0)
    return build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts]))


def test_losses_on_hand_made_anchors():
    """2 classes (background = 2), 3 anchors: one positive of class 0, one background, one
    ignored. The DR loss ranks the positive entry against the 3 negative entries (the
    positive anchor's class 1, both classes of the background anchor); the box loss is
    SmoothL1 (beta 0.11) of the positive's deltas against its target, / (4 x 1)."""
    model = toy_model("MODEL.RETINANET.NUM_CLASSES", "2").train()
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 50.0, 50.0],
                                   [5.0, 5.0, 25.0, 25.0]]))]
    p = torch.tensor([[0.7, 0.2], [0.1, 0.3], [0.9, 0.9]])
    logits = [(p / (1 - p)).log()[None]]
    deltas = [torch.tensor([[[0.5, -0.3, 0.05, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]])]
    # GT of the positive: the anchor shifted by +2 px in x: target deltas (10 x 2 / 20, 0, 0, 0)
    gt_boxes = [torch.tensor([[2.0, 0.0, 22.0, 20.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])]
    gt_labels = [torch.tensor([0, 2, -1])]
    with EventStorage():
        losses = model.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    assert losses["loss_cls"].item() == pytest.approx(reference([0.7], [0.2, 0.1, 0.3]), rel=1e-5)
    smooth_l1 = [abs(d) - 0.055 if abs(d) >= 0.11 else 0.5 * d * d / 0.11
                 for d in (0.5 - 1.0, -0.3, 0.05, 0.0)]
    assert losses["loss_box_reg"].item() == pytest.approx(sum(smooth_l1) / 4, rel=1e-5)


def test_batch_scope_ranks_all_images_together_image_scope_averages_them():
    torch.manual_seed(1)
    logits = [torch.randn(2, 5, 3)]
    gt_labels = [torch.tensor([0, 3, 3, 1, 3]), torch.tensor([3, 3, 2, 3, -1])]
    anchors = [Boxes(torch.rand(5, 2).repeat(1, 2) * 10 + torch.tensor([0.0, 0.0, 8.0, 8.0]))]
    deltas, gt_boxes = [torch.zeros(2, 5, 4)], [anchors[0].tensor] * 2
    p = logits[0].sigmoid()

    def ref(images):
        pos = [p[i, a, c].item() for i in images for a in range(5) for c in range(3) if gt_labels[i][a] == c]
        neg = [p[i, a, c].item() for i in images for a in range(5) for c in range(3)
               if gt_labels[i][a] >= 0 and gt_labels[i][a] != c]
        return reference(pos, neg)

    with EventStorage():
        args = (anchors, logits, gt_labels, deltas, gt_boxes)
        batch = toy_model("MODEL.RETINANET.NUM_CLASSES", "3").losses(*args)
        image = toy_model("MODEL.RETINANET.NUM_CLASSES", "3", "MODEL.DR_LOSS.SCOPE", "image").losses(*args)
    assert batch["loss_cls"].item() == pytest.approx(ref([0, 1]), rel=1e-5)
    assert image["loss_cls"].item() == pytest.approx((ref([0]) + ref([1])) / 2, rel=1e-5)
    assert abs(ref([0, 1]) - (ref([0]) + ref([1])) / 2) > 1e-3
    with pytest.raises(ValueError, match="SCOPE must be one of"):
        toy_model("MODEL.DR_LOSS.SCOPE", "gpu")


def _image(seed, boxes, classes):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(3, 96, 128, generator=g) * 255,
            "instances": make_instances(96, 128, boxes, classes)}


def test_a_fresh_model_starts_at_the_stated_loss_and_images_without_objects_train():
    model = toy_model().train()
    batch = [_image(0, [[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), _image(1, [], [])]
    with EventStorage():
        losses = model(batch)
    # prior 0.5: the classifier's bias is 0; its N(0, 0.01) weights spread p by a few 1e-2
    # around 0.5, and the softmax over the negatives (lambda 0.08) weighs the highest ones:
    # a little above the authors' 4 log(1 + e^3) / 6 = 2.032 for p = 0.5 exactly.
    stated = 4 * math.log(1 + math.e ** 3) / 6
    assert model.head.cls_score.bias.abs().max() == 0
    assert stated < losses["loss_cls"].item() < stated + 0.05
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
    with EventStorage():
        assert model(batch)["loss_cls"].item() == pytest.approx(stated, rel=1e-6)
    with EventStorage():
        empty = model([_image(1, [], []), _image(2, [], [])])
    assert empty["loss_box_reg"].item() == 0.0
    assert torch.isfinite(empty["loss_cls"]) and empty["loss_cls"].item() > 0
    sum(empty.values()).backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    check_eval_output(toy_model("MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"), num_classes=6)


@pytest.mark.slow
@pytest.mark.parametrize("scope,invariant", [("image", True), ("batch", False)])
def test_classification_loss_over_two_processes(tmp_path, scope, invariant):
    """One process on 2 images vs 2 processes on 1 image each (GN everywhere): per-image
    ranking gives the same loss and gradients; the official per-batch ranking does not (each
    process ranks its own images)."""
    opts = ["MODEL.RETINANET.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
            "MODEL.DR_LOSS.SCOPE", scope]
    batch = [_image(0, [[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), _image(1, [[30, 5, 60, 30]], [0])]
    torch.manual_seed(0)
    state = build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts])).state_dict()
    one, two = (split_losses_and_grads(TOY, opts, batch, str(tmp_path), n, keys=["loss_cls"], state=state)
                for n in (1, 2))
    same_loss = torch.allclose(two["losses"]["loss_cls"], one["losses"]["loss_cls"], rtol=1e-5)
    same_grads = all(torch.allclose(g, one["grads"][k], rtol=1e-3, atol=1e-6)
                     for k, g in two["grads"].items())
    assert same_loss == invariant and same_grads == invariant
