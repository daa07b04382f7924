"""RetinaNet with SEPC: the neck, the variants' switches, the unpadded (official) final convs
and their anchors, images without objects, inference, and a smoke run of train_net.py."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy")
COCO = os.path.join(PROJECT, "configs")


def toy_model(variant="pconv", *opts):
    torch.manual_seed(0)
    cfg = load_config(os.path.join(TOY, f"{variant}_R-18-FPN_toy.yaml"), ["MODEL.DEVICE", "cpu", *opts])
    return build_model(cfg)


def deformable(conv):
    return conv.conv_offset is not None


@pytest.mark.parametrize("variant,ibn,pconv_deform,lcconv_deform", [
    ("pconv", False, False, False), ("ibn-pconv", True, False, False),
    ("sepc-lite", True, False, True), ("sepc", True, True, True)])
def test_variant_switches(variant, ibn, pconv_deform, lcconv_deform):
    for model in (toy_model(variant), build_model(load_config(
            os.path.join(COCO, f"{variant}_R-50-FPN_1x_coco.yaml"), ["MODEL.DEVICE", "cpu"]))):
        head = model.head
        assert len(head.pconvs) == 4
        assert all((p.bn is not None) == ibn for p in head.pconvs) and (head.cbn is not None) == ibn
        assert all(deformable(c) == pconv_deform for p in head.pconvs for c in (p.up, p.same, p.down))
        assert deformable(head.cconv) == deformable(head.lconv) == lcconv_deform
        assert head.cconv.padding == 1


def test_official_neck_p6_from_c5_without_relu_before_p7():
    cfg = load_config(os.path.join(COCO, "pconv_R-50-FPN_1x_coco.yaml"), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    model.eval()
    x = torch.randn(1, 3, 128, 128)
    c = model.backbone.bottom_up(x)
    out = model.backbone(x)
    top = model.backbone.top_block
    torch.testing.assert_close(out["p6"], top.p6(c["res5"]))
    torch.testing.assert_close(out["p7"], top.p7(out["p6"]))
    assert (out["p6"] < 0).any()  # so a ReLU would have mattered
    assert model.head.cls_score.out_channels == 9 * 80


def test_sizes_of_the_coco_models():
    sizes = {}
    for variant in ("retinanet", "pconv", "sepc"):
        cfg = load_config(os.path.join(COCO, f"{variant}_R-50-FPN_1x_coco.yaml"), ["MODEL.DEVICE", "cpu"])
        model = build_model(cfg)
        sizes[variant] = sum(p.numel() for p in model.parameters())
    # PConv: 4 x 3 kernels of 256 x 256 x 3 x 3 (+ bias) and cconv / lconv replace the
    # RetinaNet head's 8 tower convs: 14 - 8 = 6 more 3x3 convs.
    assert sizes["pconv"] - sizes["retinanet"] == 6 * (256 * 256 * 9 + 256)
    # SEPC adds an offset conv (256 -> 18, 3x3) to each of the 14 kernels, and 6 iBN layers.
    assert sizes["sepc"] - sizes["pconv"] == 14 * (256 * 18 * 9 + 18) + 6 * 2 * 256


def test_unpadded_final_convs_shrink_the_maps_and_lay_anchors_on_them():
    model = toy_model("pconv", "MODEL.SEPC.LCCONV_PADDING", "0").train()
    feats = model.backbone(torch.randn(1, 3, 384, 384))
    feats = [feats[f] for f in model.head_in_features]
    logits, deltas = model.head(feats)
    assert [tuple(x.shape[-2:]) for x in logits] == [(46, 46), (22, 22), (10, 10), (4, 4), (1, 1)]
    gt = make_instances(384, 384, [[30, 40, 200, 220]], [2])
    with EventStorage():
        losses = model([{"image": torch.rand(3, 384, 384) * 255, "instances": gt}])
    assert all(torch.isfinite(v) for v in losses.values())
    # Anchors come from the output maps: cell (0, 0) of P3 is centred at (4, 4), although it is
    # computed from the pyramid's cell (1, 1) (the official code's one-cell shift).
    anchors = model.anchor_generator(logits)
    assert len(anchors[0]) == 46 * 46 * 9
    torch.testing.assert_close(anchors[0].get_centers()[0], torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 3 x 3"):
        model.head([f[..., :2, :2] for f in feats])


def test_images_without_objects():
    model = toy_model("sepc").train()
    empty = make_instances(96, 128, [], [])
    batch = [{"image": torch.rand(3, 96, 128) * 255, "instances": empty} for _ in range(4)]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_cls"].item() > 0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model("sepc", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"), num_classes=6)
