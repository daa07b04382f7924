"""RetinaNet learning from noisy anchors: the targets of a hand-made image, the losses against
a direct computation, the sums kept by the re-weighting, images without objects, and the
per-process semantics over 2 processes."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from fvcore.nn import smooth_l1_loss
from noisy_anchor import matched_iou, reweighting, soft_focal_loss, soft_labels

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances, split_losses_and_grads

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "noisy_anchor_R-18-FPN_toy.yaml")


def toy_model(*opts):
    torch.manual_seed(0)
    return build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts]))


def test_matched_iou_equals_pairwise_iou_on_the_pairs():
    from detectron2.structures import pairwise_iou

    torch.manual_seed(0)
    a = torch.rand(20, 2) * 50
    b = torch.rand(20, 2) * 50
    gt = torch.cat([a, a + torch.rand(20, 2) * 30], 1)
    pred = torch.cat([b, b + torch.rand(20, 2) * 30], 1)
    full = pairwise_iou(Boxes(gt), Boxes(pred))
    assert torch.equal(matched_iou(gt, pred), full.diagonal())


def _predictions(model, image):
    """The model's per-level (N, HWA, K) logits and (N, HWA, 4) deltas, and its anchors."""
    images = model.preprocess_image([{"image": image}])
    features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
    logits, deltas = model._transpose_dense_predictions(model.head(features), [model.num_classes, 4])
    return model.anchor_generator(features), logits, deltas


def test_targets_of_an_image_by_hand():
    model = toy_model("MODEL.NOISY_ANCHOR.TOPN", "5").train()
    gt = make_instances(96, 128, [[8, 8, 40, 50], [20, 16, 60, 60]], [1, 4])
    anchors, logits, deltas = _predictions(model, torch.rand(3, 96, 128) * 255)
    with torch.no_grad():
        labels, boxes, soft, weights = model.label_anchors_noisy(anchors, [gt], logits, deltas)
    all_anchors = Boxes.cat(anchors)
    from detectron2.structures import pairwise_iou

    iou = pairwise_iou(gt.gt_boxes, all_anchors)
    topn = iou.argsort(dim=1)[:, -5:].reshape(-1)
    best = iou.argmax(dim=0)
    assert (labels[0] != 6).nonzero().flatten().tolist() == sorted(set(topn.tolist()))
    assert labels[0][topn].tolist() == gt.gt_classes[best[topn]].tolist()
    # the positives' soft labels and weights from their detached predictions, over the 10
    # entries of the two top-5 lists
    pred = model.box2box_transform.apply_deltas(torch.cat(deltas, 1)[0].detach(), all_anchors.tensor)
    loc = matched_iou(gt.gt_boxes.tensor[best[topn]], pred[topn])
    cls = torch.cat(logits, 1)[0].detach().sigmoid()[topn, gt.gt_classes[best[topn]]]
    torch.testing.assert_close(soft[0][topn], soft_labels(loc, cls, 0.75))
    torch.testing.assert_close(weights[0][topn], reweighting(loc, cls, 0.75))
    negatives = labels[0] == 6
    assert (soft[0][negatives] == 0).all() and (weights[0][negatives] == 1).all()
    assert soft[0][topn].max().item() == pytest.approx(1.0) and soft[0][topn].min() >= loc.mean() - 1e-6


def test_losses_against_a_direct_computation_and_the_kept_sums():
    model = toy_model("MODEL.NOISY_ANCHOR.TOPN", "5").train()
    gt = make_instances(96, 128, [[8, 8, 40, 50]], [2])
    anchors, logits, deltas = _predictions(model, torch.rand(3, 96, 128) * 255)
    with torch.no_grad():
        targets = model.label_anchors_noisy(anchors, [gt], logits, deltas)
    labels, boxes, soft, weights = targets
    with EventStorage():
        losses = model.noisy_losses(anchors, logits, deltas, *targets)
        ones = [torch.ones_like(weights[0])]
        plain = model.noisy_losses(anchors, logits, deltas, labels, boxes, soft, ones)
    # EMA normaliser after one step: 0.9 x 100 + 0.1 x 5 positives (then 0.9 x that + 0.5)
    pos = labels[0] != 6
    t = torch.zeros(len(pos), 6)
    t[pos, labels[0][pos]] = soft[0][pos]
    cls = soft_focal_loss(torch.cat(logits, 1)[0], t, 0.5, 2.0)
    gt_deltas = model.box2box_transform.get_deltas(Boxes.cat(anchors).tensor, boxes[0])
    box = smooth_l1_loss(torch.cat(deltas, 1)[0][pos], gt_deltas[pos], beta=0.1, reduction="none")
    # re-weighting keeps each sum: the losses equal the un-reweighted ones
    torch.testing.assert_close(losses["loss_cls"], cls.sum() / 90.5)
    torch.testing.assert_close(losses["loss_box_reg"], box.sum() / 90.5)
    torch.testing.assert_close(plain["loss_cls"], cls.sum() / (0.9 * 90.5 + 0.5))
    # ... but not the gradients: they follow the coefficients
    def grad(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, deltas, retain_graph=True)])

    g1, g2 = grad(losses["loss_box_reg"] * 90.5), grad(plain["loss_box_reg"] * (0.9 * 90.5 + 0.5))
    assert g1.abs().sum() > 0 and not torch.allclose(g1, g2)


def test_images_without_objects_train_and_infer():
    model = toy_model().train()
    images = [{"image": torch.rand(3, 96, 128) * 255, "instances": make_instances(96, 128, [], [])}] * 2
    with EventStorage():
        losses = model(images)
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    check_eval_output(toy_model("MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"), num_classes=6)


def _image(seed, boxes, classes):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(3, 96, 128, generator=g) * 255,
            "instances": make_instances(96, 128, boxes, classes)}


@pytest.mark.slow
def test_two_processes_each_train_on_their_own_images(tmp_path):
    """As the official, the EMA normaliser and the re-weighting's rescaling are per process:
    2 processes on 1 image each give the mean of what 1 process gives on each image alone
    (losses and DDP-averaged gradients); soft labels are per image anyway."""
    opts = ["MODEL.RETINANET.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN"]
    batch = [_image(0, [[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]), _image(1, [[30, 5, 60, 30]], [0])]
    torch.manual_seed(0)
    state = build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts])).state_dict()
    two = split_losses_and_grads(TOY, opts, batch, str(tmp_path), 2, state=state)
    alone = [split_losses_and_grads(TOY, opts, [b], str(tmp_path), 1, state=state) for b in batch]
    for k in two["losses"]:
        torch.testing.assert_close(two["losses"][k], (alone[0]["losses"][k] + alone[1]["losses"][k]) / 2)
    for k, g in two["grads"].items():
        torch.testing.assert_close(g, (alone[0]["grads"][k] + alone[1]["grads"][k]) / 2, rtol=1e-4, atol=1e-6)
