"""Faster R-CNN with AugFPN: consistent supervision's losses (training only, scaled by alpha,
with the main head's targets), nothing auxiliary at inference, the switches, images without
objects, the COCO model's size, and a smoke run of train_net.py."""

import os

import pytest
import torch
from detectron2.layers import cross_entropy
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import roi_align

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy")
COCO = os.path.join(PROJECT, "configs")


def toy_model(config="augfpn_R-18-FPN_toy.yaml", *opts):
    torch.manual_seed(0)
    return build_model(load_config(os.path.join(TOY, config), ["MODEL.DEVICE", "cpu", *opts]))


def labelled_proposals():
    p = Instances((96, 128))
    p.proposal_boxes = Boxes(torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0],
                                           [0.0, 0.0, 30.0, 30.0]]))
    p.gt_classes = torch.tensor([2, 5, 6])  # 6 = background
    p.gt_boxes = Boxes(torch.tensor([[12.0, 10.0, 52.0, 58.0], [64.0, 22.0, 118.0, 86.0],
                                     [0.0, 0.0, 30.0, 30.0]]))
    return [p]


def test_consistent_supervision_losses_by_hand():
    model = toy_model().train()
    heads = model.roi_heads
    torch.manual_seed(1)
    features = {f"lateral{k}": torch.randn(1, 64, 96 // 2 ** k, 128 // 2 ** k) for k in (2, 3, 4, 5)}
    proposals = labelled_proposals()
    losses = heads._consistent_supervision_losses(features, proposals)
    assert sorted(losses) == sorted(f"loss_{t}_lateral{k}" for t in ("cls", "box_reg") for k in (2, 3, 4, 5))
    rois = torch.cat([torch.zeros(3, 1), proposals[0].proposal_boxes.tensor], dim=1)
    for k in (2, 3, 4, 5):
        # Every RoI from this raw lateral, the shared auxiliary head, the main head's targets
        # (gt_classes / gt_boxes of the sampled proposals), x alpha = 0.25.
        x = heads.cs_box_head(roi_align(features[f"lateral{k}"], rois, 7, 1 / 2 ** k, 2, aligned=True))
        scores, deltas = heads.cs_predictor(x)
        ce = cross_entropy(scores, proposals[0].gt_classes)
        torch.testing.assert_close(losses[f"loss_cls_lateral{k}"], 0.25 * ce)
        with EventStorage():
            reg = heads.cs_predictor.losses((scores, deltas), proposals)["loss_box_reg"]
        torch.testing.assert_close(losses[f"loss_box_reg_lateral{k}"], 0.25 * reg)
        assert reg > 0
    double = toy_model("augfpn_R-18-FPN_toy.yaml", "MODEL.AUGFPN.CS_WEIGHT", "0.5").train()
    ratio = double.roi_heads._consistent_supervision_losses(features, proposals)
    for k, v in losses.items():
        torch.testing.assert_close(ratio[k], 2 * v)


def test_auxiliary_modules_run_in_training_only():
    model = toy_model()
    calls = []
    heads = model.roi_heads
    for m in (heads.cs_box_head, heads.cs_predictor, *heads.cs_poolers.values()):
        m.register_forward_hook(lambda *_: calls.append(1))
    image = torch.rand(3, 96, 128) * 255
    gt = make_instances(96, 128, [[10, 12, 50, 60], [60, 20, 120, 90]], [2, 5])
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": gt}])
    assert {"loss_cls_lateral2", "loss_box_reg_lateral5"} <= set(losses) and len(calls) == 4 * 3
    calls.clear()
    model.eval()
    with torch.no_grad():
        model([{"image": image}])
    assert not calls


@pytest.mark.parametrize("config,cs,rfa,srs", [
    ("augfpn-cs_R-18-FPN_toy.yaml", True, False, False),
    ("augfpn-cs-rfa_R-18-FPN_toy.yaml", True, True, False),
    ("augfpn_R-18-FPN_toy.yaml", True, True, True)])
def test_ablation_switches(config, cs, rfa, srs):
    model = toy_model(config)
    assert (model.roi_heads.cs_predictor is not None) == cs
    assert (model.backbone.rfa is not None) == rfa
    assert (type(model.roi_heads.box_pooler).__name__ == "SoftRoISelection") == srs


def test_images_without_objects():
    model = toy_model().train()
    empty = make_instances(96, 128, [], [])
    with EventStorage():
        losses = model([{"image": torch.rand(3, 96, 128) * 255, "instances": empty}] * 2)
    assert losses["loss_box_reg_lateral3"].item() == 0.0 and losses["loss_cls_lateral3"].item() > 0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model("augfpn_R-18-FPN_toy.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"),
                      num_classes=6)


def test_size_of_the_coco_model():
    def size(config):
        cfg = load_config(os.path.join(COCO, config), ["MODEL.DEVICE", "cpu"])
        return sum(p.numel() for p in build_model(cfg).parameters())

    aug, faster = size("augfpn_R-50-FPN_1x_coco.yaml"), size("faster_rcnn_R-50-FPN_1x_coco.yaml")
    rfa = 3 * (2048 * 256 + 256) + (768 * 256 + 256) + (256 * 3 * 9 + 3)
    srs = (1024 * 256 + 256) + (256 * 4 * 9 + 4)
    cs = (256 * 49 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 81 + 81) + (1024 * 320 + 320)
    assert aug - faster == rfa + srs + cs


def test_auxiliary_head_keeps_pytorchs_default_init():
    """Official: the auxiliary head is never initialised, so its Linear layers keep PyTorch's
    kaiming-uniform (a = sqrt(5)): U(-1 / sqrt(fan_in), 1 / sqrt(fan_in)), std 1 / sqrt(3 fan_in);
    detectron2's N(0, 0.001) box-delta init is 18x narrower."""
    heads = toy_model("augfpn_R-18-FPN_toy.yaml", "MODEL.AUGFPN.CS_HEAD_INIT", "pytorch").roi_heads
    layers = [m for m in (*heads.cs_box_head.modules(), *heads.cs_predictor.modules())
              if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 4  # 2 FCs, class scores, box deltas
    for m in layers:
        bound = 1 / m.in_features ** 0.5
        assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound
        assert abs(m.weight.std().item() * (3 * m.in_features) ** 0.5 - 1) < 0.1
    main = heads.box_predictor.bbox_pred.weight
    assert main.std() < 0.002  # the main head keeps detectron2's N(0, 0.001)
    d2 = toy_model("augfpn_R-18-FPN_toy.yaml").roi_heads  # the toy rows: detectron2's init
    assert d2.cs_predictor.bbox_pred.weight.std() < 0.002
    with pytest.raises(ValueError, match="CS_HEAD_INIT"):
        toy_model("augfpn_R-18-FPN_toy.yaml", "MODEL.AUGFPN.CS_HEAD_INIT", "xavier")
