"""D2Det as a detector: the two-pass inference on a hand-built case, images without objects,
the losses, the size of the COCO model, and a smoke run of train_net.py."""

import math
import os

import pytest
import torch
from d2det import dense_targets
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(PROJECT, "configs", "toy", "d2det_R-18-FPN_toy.yaml")
COCO = os.path.join(PROJECT, "configs")


def toy_model(*opts):
    torch.manual_seed(0)
    return build_model(load_config(TOY, ["MODEL.DEVICE", "cpu", *opts]))


class FixedOutputs(torch.nn.Module):
    """Stands in for a learned layer: returns preset outputs whatever its input."""

    def __init__(self, *outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):
        return self.outputs if len(self.outputs) > 1 else self.outputs[0]


def test_two_pass_inference_on_a_hand_built_case():
    heads = toy_model().roi_heads.eval()
    features = {f"p{i}": torch.randn(1, 64, 128 // 2 ** i, 128 // 2 ** i) for i in range(2, 6)}
    p0, p1, p2 = [10.0, 10, 50, 50], [30.0, 10, 70, 50], [60.0, 60, 90, 90]
    proposals = Instances((128, 128))
    proposals.proposal_boxes = Boxes(torch.tensor([p0, p1, p2]))
    # Pass 1 scores the unregressed proposals: P0 and P1 class 0 (0.9, 0.8), P2 class 1 (0.7).
    # IoU(P0, P1) = 800 / 2400 = 1/3 < 0.5, so class-wise NMS keeps all three.
    probs = torch.full((3, 7), 1e-9)
    probs[0, 0], probs[1, 0], probs[2, 1] = 0.9, 0.8, 0.7
    probs[:, 6] = 1 - probs[:, :6].sum(1)
    heads.box_predictor.forward = lambda x: probs.log()
    # Pass 2, dense regression of the kept boxes (in score order): P0's and P1's confident cells
    # both find B; P0's other cells predict nothing (distances 0) and must be ignored. No cell of
    # P2 is confident: the average of all its cells, which all find C.
    b, c = torch.tensor([20.0, 10, 60, 50]), torch.tensor([62.0, 58, 92, 88])
    rois = torch.tensor([p0, p1, p2])
    ltrb, _ = dense_targets(rois, torch.stack([b, b, c]))
    logits = torch.full((3, 7, 7), -1.0)
    logits[0, :, :4], logits[1] = 1.0, 1.0
    ltrb[0, :, :, 4:] = 0.0
    heads.reg_head = FixedOutputs(ltrb, logits)
    with torch.no_grad():
        (out,) = heads._forward_box(features, [proposals])
    # Linear soft-NMS: P1's box now equals P0's (IoU 1 > 0.5), its score 0.8 (1 - 1) = 0 < 1e-3:
    # removed. C is another class: untouched.
    torch.testing.assert_close(out.pred_boxes.tensor, torch.stack([b, c]))
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.7]))
    assert out.pred_classes.tolist() == [0, 1]


def test_training_losses_and_an_image_without_objects():
    model = toy_model().train()
    gt = make_instances(128, 160, [[10, 20, 60, 90], [70, 30, 150, 120]], [1, 3])
    empty = make_instances(128, 160, [], [])
    image = torch.rand(3, 128, 160) * 255
    with EventStorage():
        losses = model([{"image": image, "instances": gt}, {"image": image, "instances": empty}])
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_dense_reg", "loss_overlap"}
        # At initialisation the classifier is near-uniform over 6 + 1 classes: 2 x log 7.
        assert losses["loss_cls"].item() == pytest.approx(2 * math.log(7), rel=0.02)
        # The overlap logits start near 0: BCE ~ log 2.
        assert losses["loss_overlap"].item() == pytest.approx(math.log(2), rel=0.02)
        assert losses["loss_dense_reg"].item() > 0
        only_empty = model([{"image": image, "instances": empty}] * 2)
    assert only_empty["loss_dense_reg"].item() == 0.0 and only_empty["loss_overlap"].item() == 0.0
    total = sum(only_empty.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_mode_returns_instances_inside_the_image():
    check_eval_output(toy_model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"), num_classes=6)


def test_size_of_the_coco_model():
    def size(config, *opts):
        cfg = load_config(os.path.join(COCO, config), ["MODEL.DEVICE", "cpu", *opts])
        return sum(p.numel() for p in build_model(cfg).parameters())

    d2det, faster = size("d2det_R-50-FPN_2x_coco.yaml"), size("faster_rcnn_R-50-FPN_2x_coco.yaml")
    # D2Det over Faster R-CNN, layer by layer from the official config and code: offset FCs
    # and AWP for each of the 4 levels (one DeformRoIPoolingPack per level).
    offset_fcs = (2304 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 98 + 98)
    awp = 256 * 256 * 9 + 2 * 256                     # conv (no bias) + InstanceNorm affine
    convs = 256 * 576 * 9 + 7 * 576 * 576 * 9 + 8 * 2 * 576   # no bias; GN affine
    outputs = (576 * 4 * 9 + 4) + (576 * 9 + 1)       # ltrb and overlap convs
    no_box_deltas = 1024 * 320 + 320                  # Faster R-CNN's class-wise deltas
    assert d2det - faster == 4 * (offset_fcs + awp) + convs + outputs - no_box_deltas
    assert d2det == 80_038_893  # README: 80.04 M (Faster R-CNN: 41.70 M)
    shared = size("d2det_R-50-FPN_2x_coco.yaml", "MODEL.D2DET.SHARED_POOLER", "True")
    assert d2det - shared == 3 * (offset_fcs + awp)  # 12.30 M
