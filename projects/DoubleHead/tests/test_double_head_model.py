"""Double-Head R-CNN in detectron2: the four weighted losses and the test-time fusion on
hand-worked numbers, the Double-Head / -Ext switches, images without objects, the COCO model's
size, and BatchNorm in the conv head over 2 processes."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances, split_losses_and_grads

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy")
COCO = os.path.join(PROJECT, "configs")
EXT = os.path.join(TOY, "double-head-ext_R-18-FPN_toy.yaml")


def toy_model(config=EXT, *opts):
    torch.manual_seed(0)
    return build_model(load_config(config, ["MODEL.DEVICE", "cpu", *opts]))


def labelled_proposals():
    """Two RoIs of a 96 x 128 image, 6 classes: one of class 2 whose GT is the RoI shifted by
    (+4, 0) (deltas (10 * 4 / 40, 0, 0, 0) = (1, 0, 0, 0) with weights 10, 10, 5, 5), one
    background."""
    p = Instances((96, 128))
    p.proposal_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0]]))
    p.gt_classes = torch.tensor([2, 6])
    p.gt_boxes = Boxes(torch.tensor([[14.0, 10.0, 54.0, 60.0], [0.0, 0.0, 1.0, 1.0]]))
    return [p]


def test_the_four_losses_are_weighted_as_the_official():
    heads = toy_model().roi_heads
    conv_scores = torch.tensor([[0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    fc_scores = torch.zeros(2, 7)
    conv_deltas, fc_deltas = torch.zeros(2, 24), torch.zeros(2, 24)
    conv_deltas[0, 8:12] = torch.tensor([1.5, 0.2, 0.0, -0.1])   # class 2; target (1, 0, 0, 0)
    fc_deltas[0, 8:12] = torch.tensor([0.0, 0.0, 0.0, 0.0])
    with EventStorage():
        losses = heads.losses((conv_scores, conv_deltas), (fc_scores, fc_deltas), labelled_proposals())
    # CE by hand: -log softmax of the target class, mean over the 2 RoIs
    conv_ce = (-(2 - torch.tensor([2.0] + [0.0] * 6).exp().sum().log())
               - (3 - torch.tensor([1.0, 3.0] + [0.0] * 5).exp().sum().log())) / 2
    fc_ce = torch.tensor(7.0).log()
    # L1 (toy: SMOOTH_L1_BETA 0) over the foreground RoI's class deltas, / the 2 sampled RoIs
    conv_reg = (0.5 + 0.2 + 0.0 + 0.1) / 2
    fc_reg = 1.0 / 2
    torch.testing.assert_close(losses["loss_cls_conv"], 0.5 * conv_ce)
    torch.testing.assert_close(losses["loss_box_reg_conv"], torch.tensor(2.0 * conv_reg))
    torch.testing.assert_close(losses["loss_cls_fc"], 1.4 * fc_ce)
    torch.testing.assert_close(losses["loss_box_reg_fc"], torch.tensor(0.6 * fc_reg))


def _log_probs(*rows):
    return torch.tensor(rows).log()


def test_fused_probabilities_and_inference_on_hand_worked_numbers():
    """Classes 0, 1 and background (the last column). conv probs (0.5, 0.3, 0.2), fc (0.2, 0.2,
    0.6): fused 1 - (1 - p_conv)(1 - p_fc) = (0.6, 0.44, 0.68) (background included, no
    renormalisation); boxes from the conv head."""
    opts = ["MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.35"]
    heads = toy_model(EXT, *opts).roi_heads.eval()
    p = Instances((96, 128))
    p.proposal_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 60.0]]))
    conv_deltas = torch.zeros(1, 8)
    conv_deltas[0, 0] = 1.0      # class 0 box shifted by 0.1 x 40 = +4 px in x
    fc_deltas = torch.full((1, 8), 0.5)
    conv = (_log_probs([0.5, 0.3, 0.2]), conv_deltas)
    fc = (_log_probs([0.2, 0.2, 0.6]), fc_deltas)
    torch.testing.assert_close(heads.fused_probs(conv, fc, [p])[0], torch.tensor([[0.6, 0.44, 0.68]]))
    (out,) = heads.inference(conv, fc, [p])
    torch.testing.assert_close(out.scores, torch.tensor([0.6, 0.44]))
    assert out.pred_classes.tolist() == [0, 1]
    expected = torch.tensor([[14.0, 10.0, 54.0, 60.0], [10.0, 10.0, 50.0, 60.0]])
    torch.testing.assert_close(out.pred_boxes.tensor, expected)
    # Double-Head: fc scores (0.2, 0.2), both below 0.35: nothing left
    heads.test_scores = "fc"
    assert len(heads.inference(conv, fc, [p])[0]) == 0
    heads.test_scores, heads.test_boxes = "conv", "fc"
    (out,) = heads.inference(conv, fc, [p])
    torch.testing.assert_close(out.scores, torch.tensor([0.5]))
    assert out.pred_boxes.tensor[0, 0] != 10.0   # the fc head's deltas moved it


def test_double_head_and_ext_switches():
    ext = load_config(EXT).MODEL.DOUBLE_HEAD
    weights = (ext.CONV_CLS_WEIGHT, ext.CONV_REG_WEIGHT, ext.FC_CLS_WEIGHT, ext.FC_REG_WEIGHT)
    assert weights == (0.5, 2.0, 1.4, 0.6)
    assert (ext.TEST_SCORES, ext.TEST_BOXES) == ("fused", "conv")
    plain = toy_model(os.path.join(TOY, "double-head_R-18-FPN_toy.yaml")).roi_heads
    assert plain.loss_weights == (0.0, 2.5, 2.0, 0.0)
    assert (plain.test_scores, plain.test_boxes) == ("fc", "conv")

    def blocks(*opts):
        return [type(m).__name__ for m in toy_model(EXT, *opts).roi_heads.conv_head.blocks]

    assert blocks() == ["GroupNonLocal2d", "Bottleneck"] * 2
    # mmdetection's simplified conv head
    mmdet = ["MODEL.DOUBLE_HEAD.NUM_BLOCKS", "4", "MODEL.DOUBLE_HEAD.NON_LOCAL", "False"]
    assert blocks(*mmdet) == ["Bottleneck"] * 4
    with pytest.raises(ValueError, match="TEST_SCORES must be one of"):
        toy_model(EXT, "MODEL.DOUBLE_HEAD.TEST_SCORES", "mean")


def test_images_without_objects_train_and_infer():
    model = toy_model().train()
    empty = make_instances(96, 128, [], [])
    with EventStorage():
        losses = model([{"image": torch.rand(3, 96, 128) * 255, "instances": empty}] * 2)
    assert losses["loss_box_reg_conv"].item() == 0.0 and losses["loss_box_reg_fc"].item() == 0.0
    assert losses["loss_cls_conv"].item() > 0 and losses["loss_cls_fc"].item() > 0
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    bns = [m for m in model.roi_heads.conv_head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(torch.isfinite(m.running_var).all() for m in bns)
    check_eval_output(model, num_classes=6)


def test_size_of_the_coco_model():
    def size(config):
        cfg = load_config(os.path.join(COCO, config), ["MODEL.DEVICE", "cpu"])
        return sum(p.numel() for p in build_model(cfg).parameters())

    faster = size("double-head-baseline_R-50-FPN_1x_coco.yaml")
    ext = size("double-head-ext_R-50-FPN_1x_coco.yaml")
    # conv head (official: up-channel block + 2 x [non-local + bottleneck], by hand in
    # test_double_head_components) + its predictor (81 scores, 80 x 4 deltas)
    conv_head = 1118720 + 2 * (2101760 + 1117184)
    assert ext - faster == conv_head + (1024 * 81 + 81) + (1024 * 320 + 320)


def _batch():
    return [{"image": torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(i)) * 255,
             "instances": make_instances(96, 128, boxes, classes)}
            for i, (boxes, classes) in enumerate([([[8, 8, 40, 50], [60, 20, 110, 70]], [1, 4]),
                                                  ([[30, 5, 60, 30], [5, 40, 90, 90]], [0, 5])])]


@pytest.mark.slow
@pytest.mark.parametrize("norm,synchronised", [("naiveSyncBN", True), ("BN", False)])
def test_conv_head_batchnorm_over_two_processes(tmp_path, norm, synchronised):
    """One process on 2 images vs 2 processes on 1 image each (GN elsewhere, every proposal
    sampled, the same number of RoIs per image, so the conv head's BN is the only batch
    statistic). naiveSyncBN: the same losses, and gradients equal up to float32 round-off
    (below 3 % of each tensor's largest entry, measured 0.5 % at most; BN's backward scales it
    by up to 1 / sqrt(eps) ~ 316 behind the zero-initialised non-local output); plain BN (the
    official, per GPU): the conv head's losses and gradients depend on the split (measured 2x
    the largest entry). The non-local blocks' output-conv biases feed a BN: their exact
    gradient is 0 and their float32 one pure round-off (~1e-5, as large as the split's
    difference), so they are left out."""
    opts = ["MODEL.ROI_HEADS.NUM_CLASSES", "6", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000000",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.DOUBLE_HEAD.NORM", norm]
    torch.manual_seed(0)
    state = build_model(load_config(EXT, ["MODEL.DEVICE", "cpu", *opts])).state_dict()
    one, two = (split_losses_and_grads(EXT, opts, _batch(), str(tmp_path), n, state=state) for n in (1, 2))
    conv = ["loss_cls_conv", "loss_box_reg_conv"]
    for k in one["losses"]:
        same = torch.allclose(two["losses"][k], one["losses"][k], rtol=1e-5, atol=1e-7)
        assert same == (synchronised or k not in conv), k
    off = {k: ((two["grads"][k] - g).abs().max() / (g.abs().max() + 1e-3)).item()
           for k, g in one["grads"].items() if k.startswith("roi_heads.conv_") and not k.endswith(".W.bias")}
    assert (max(off.values()) < 0.03) == synchronised, max(off.values())
