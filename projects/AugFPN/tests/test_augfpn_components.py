"""The three components against manual computations: ratio-invariant pooling sizes, Adaptive
Spatial Fusion, AugFPN vs detectron2's FPN, and Soft RoI Selection."""

import os

import pytest
import torch
import torch.nn.functional as F
from augfpn import ResidualFeatureAugmentation, SoftRoISelection, ratio_invariant_pool_size
from detectron2.modeling import build_backbone
from detectron2.structures import Boxes
from torchvision.ops import roi_align

from harness.projects import load_config

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "toy",
                   "augfpn_R-18-FPN_toy.yaml")


@pytest.mark.parametrize("h,w,ratio,size", [
    (25, 38, 0.1, (2, 3)), (25, 38, 0.3, (7, 11)), (50, 76, 0.2, (10, 15)),
    (7, 9, 0.1, (1, 1)),   # int(0.7) = 0 -> 1
    (7, 9, 0.3, (2, 2)), (1, 1, 0.3, (1, 1)), (4, 30, 0.2, (1, 6))])
def test_ratio_invariant_pool_size(h, w, ratio, size):
    assert ratio_invariant_pool_size(h, w, ratio) == size


def test_adaptive_spatial_fusion_equals_a_manual_weighted_sum():
    torch.manual_seed(0)
    rfa = ResidualFeatureAugmentation(6, 4, (0.1, 0.2, 0.3)).double()
    c5 = torch.randn(2, 6, 13, 21, dtype=torch.float64)
    maps = []
    for conv, size in zip(rfa.reduce, [(1, 2), (2, 4), (3, 6)]):
        pooled = F.adaptive_avg_pool2d(c5, size)
        maps.append(F.interpolate(conv(pooled), size=(13, 21), mode="bilinear", align_corners=True))
    for got, expect in zip(rfa.context_maps(c5), maps):
        torch.testing.assert_close(got, expect)
    first, _, last = rfa.fusion
    logits = last(F.relu(first(torch.cat(maps, dim=1))))
    w = 1 / (1 + torch.exp(-logits))
    assert ((w > 0) & (w < 1)).all() and w.shape == (2, 3, 13, 21)
    expect = w[:, 0:1] * maps[0] + w[:, 1:2] * maps[1] + w[:, 2:3] * maps[2]
    torch.testing.assert_close(rfa(c5), expect)
    # The weights are not a softmax: they need not sum to 1 over the ratios.
    assert (w.sum(1) - 1).abs().max() > 0.05
    # A C5 smaller than 1 / 0.1 still pools to 1 x 1 and comes back at its own size.
    assert rfa(torch.randn(1, 6, 3, 5, dtype=torch.float64)).shape == (1, 4, 3, 5)


def backbones(*opts):
    torch.manual_seed(0)
    cfg = load_config(TOY, ["MODEL.DEVICE", "cpu", *opts])
    aug = build_backbone(cfg)
    cfg.defrost()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    fpn = build_backbone(cfg)
    return aug, fpn


def test_without_rfa_the_pyramid_is_detectron2s_fpn():
    aug, fpn = backbones("MODEL.AUGFPN.RESIDUAL_FEATURE_AUGMENTATION", "False")
    fpn.load_state_dict(aug.state_dict())
    aug.eval(), fpn.eval()
    x = torch.randn(2, 3, 96, 128)
    a, f = aug(x), fpn(x)
    assert list(a) == list(f) == ["p2", "p3", "p4", "p5", "p6"]
    for k in f:
        torch.testing.assert_close(a[k], f[k])


def test_rfa_is_added_to_the_top_lateral_before_the_top_down_pass_and_laterals_are_raw():
    aug, _ = backbones()
    aug.train()
    x = torch.randn(2, 3, 96, 128)
    out = aug(x)
    c = aug.bottom_up(x)
    lat = {f"lateral{k}": getattr(aug, f"fpn_lateral{k}")(c[f"res{k}"]) for k in (2, 3, 4, 5)}
    m5 = lat["lateral5"] + aug.rfa(c["res5"])
    torch.testing.assert_close(out["p5"], aug.fpn_output5(m5))
    m4 = lat["lateral4"] + F.interpolate(m5, scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(out["p4"], aug.fpn_output4(m4))
    for k, v in lat.items():  # raw: before RFA and the top-down sums
        torch.testing.assert_close(out[k], v)
    aug.eval()
    assert not any(k.startswith("lateral") for k in aug(x))


def test_soft_roi_selection_equals_a_manual_weighted_sum_of_roialign():
    torch.manual_seed(0)
    srs = SoftRoISelection(5, 7, [1 / 4, 1 / 8, 1 / 16], sampling_ratio=2)
    feats = [torch.randn(2, 5, 32 // 2 ** i, 40 // 2 ** i) for i in range(3)]
    boxes = [Boxes(torch.tensor([[3.0, 5.0, 60.0, 90.0]])),
             Boxes(torch.tensor([[10.0, 10.0, 30.0, 24.0], [0.0, 0.0, 120.0, 100.0]]))]
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 90.0], [1, 10.0, 10.0, 30.0, 24.0], [1, 0.0, 0.0, 120.0, 100.0]])
    pooled = [roi_align(f, rois, 7, 1 / 4 / 2 ** i, 2, aligned=True) for i, f in enumerate(feats)]
    first, _, last = srs.attention
    w = torch.sigmoid(last(F.relu(first(torch.cat(pooled, dim=1)))))
    expect = sum(w[:, i:i + 1] * pooled[i] for i in range(3))
    torch.testing.assert_close(srs(feats, boxes), expect)
    assert ((w > 0) & (w < 1)).all()
    with pytest.raises(ValueError, match="expects 3 levels"):
        srs(feats[:2], boxes)
