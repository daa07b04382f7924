"""RetinaNet with SEPC: the neck, the variants' switches, the unpadded (official) final convs
and their anchors, images without objects, inference, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from sepc import GTBestAnchorMatcher

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


# ---- the RetinaNet mechanics: mmdetection 1.1's (COCO) or detectron2's (toy) -------------------

MMDET = ["MODEL.SEPC.LOSS_NORMALIZER", "batch", "MODEL.SEPC.LOW_QUALITY_MATCHES", "gt",
         "MODEL.SEPC.TEST_CANDIDATES", "anchors"]


def test_coco_configs_use_mmdetections_mechanics_and_toy_configs_detectron2s():
    for name in ("retinanet", "pconv", "sepc"):
        cfg = load_config(os.path.join(COCO, f"{name}_R-50-FPN_1x_coco.yaml"))
        assert (cfg.MODEL.SEPC.LOSS_NORMALIZER, cfg.MODEL.SEPC.LOW_QUALITY_MATCHES,
                cfg.MODEL.SEPC.TEST_CANDIDATES) == ("batch", "gt", "anchors")
    cfg = load_config(os.path.join(TOY, "sepc_R-18-FPN_toy.yaml"))
    assert (cfg.MODEL.SEPC.LOSS_NORMALIZER, cfg.MODEL.SEPC.LOW_QUALITY_MATCHES,
            cfg.MODEL.SEPC.TEST_CANDIDATES) == ("ema", "anchor", "pairs")
    baseline = build_model(load_config(os.path.join(COCO, "retinanet_R-50-FPN_1x_coco.yaml"),
                                       ["MODEL.DEVICE", "cpu"]))
    assert type(baseline.head).__name__ == "RetinaNetHead"
    assert isinstance(baseline.anchor_matcher, GTBestAnchorMatcher)


def test_low_quality_matches_go_to_the_gt_whose_best_anchor_it_is():
    """IoU of 3 GTs (rows) with 3 anchors. GT 0's best IoU, 0.3, is reached by anchors 0 and 1;
    GT 2's best, also 0.3, by anchor 1; GT 1 takes anchor 2 by threshold (0.6 >= 0.5).
    mmdetection: anchor 0 -> GT 0; anchor 1 -> GT 2 (the later GT overwrites), although its
    own best GT is GT 1 (0.35), which detectron2's Matcher would keep."""
    iou = torch.tensor([[0.3, 0.3, 0.1], [0.2, 0.35, 0.6], [0.1, 0.3, 0.0]])
    matches, labels = GTBestAnchorMatcher([0.4, 0.5], [0, -1, 1])(iou)
    assert matches.tolist() == [0, 2, 1] and labels.tolist() == [1, 1, 1]
    # A GT whose best IoU is 0 (a degenerate box) makes no anchor positive.
    matches, labels = GTBestAnchorMatcher([0.4, 0.5], [0, -1, 1])(torch.tensor([[0.0, 0.0], [0.45, 0.1]]))
    assert labels.tolist() == [1, 0] and matches.tolist()[0] == 1


def test_batch_loss_normaliser_counts_each_image_at_least_once():
    """2 images x 2 anchors, 1 class, logits 0 (p = 1/2). Image 0: anchor 0 positive, with a
    box-delta error of 0.5 on one coordinate; image 1: no positive. mmdetection's normaliser:
    max(1, 1) + max(0, 1) = 2. Focal: 0.25 x 0.25 x ln2 for the positive, 0.75 x 0.25 x ln2
    for each of the 3 negatives. SmoothL1 (the toy config's beta 0.1) of 0.5: 0.5 - 0.05."""
    model = toy_model("pconv", *MMDET, "MODEL.RETINANET.NUM_CLASSES", "1")
    anchors = [Boxes(torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8]]))]
    gt_boxes = [anchors[0].tensor.clone(), anchors[0].tensor.clone()]
    deltas = [torch.zeros(2, 2, 4)]
    deltas[0][0, 0, 0] = 0.5
    with EventStorage():
        losses = model.losses(anchors, [torch.zeros(2, 2, 1)], [torch.tensor([0, 1]), torch.tensor([1, 1])],
                              deltas, gt_boxes)
    ln2 = math.log(2)
    assert losses["loss_cls"].item() == pytest.approx((0.0625 + 3 * 0.1875) * ln2 / 2)
    assert model.smooth_l1_beta == 0.1
    assert losses["loss_box_reg"].item() == pytest.approx((0.5 - 0.05) / 2)


def test_test_candidates_are_the_top_anchors_with_all_their_classes_clipped():
    """Top-2 anchors by best class score: 0 (0.9) and 2 (0.85), not 1 (0.7); all their
    classes above 0.05 are candidates (anchor 0's class 1 at 0.8, anchor 2's at 0.06), where
    the top-2 (anchor, class) pairs would have been only (0, 0) and (2, 0). Anchor 2 leaves the
    100 x 100 image and is clipped before NMS."""
    model = toy_model("pconv", *MMDET, "MODEL.RETINANET.NUM_CLASSES", "2",
                      "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "2")
    anchors = [Boxes(torch.tensor([[0.0, 0, 20, 20], [30, 0, 50, 20], [80, 50, 120, 70]]))]
    scores = [torch.tensor([[0.9, 0.8], [0.7, 0.1], [0.85, 0.06]])]
    out = model.inference_single_image(anchors, scores, [torch.zeros(3, 4)], (100, 100))
    assert out.scores.tolist() == pytest.approx([0.9, 0.85, 0.8, 0.06])
    assert out.pred_classes.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(out.pred_boxes.tensor[1], torch.tensor([80.0, 50, 100, 70]))


def test_an_unknown_mechanic_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.SEPC.TEST_CANDIDATES must be one of"):
        toy_model("pconv", "MODEL.SEPC.TEST_CANDIDATES", "top1000")


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
