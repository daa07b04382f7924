"""FPT in a detectron2 Faster R-CNN: training and inference on images with and without objects,
the ablation configs, the batch-of-one BatchNorm error, and the size of the COCO neck."""

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


def toy_model(config="fpt_R-18_toy.yaml", *opts):
    torch.manual_seed(0)
    return build_model(load_config(os.path.join(TOY, config), ["MODEL.DEVICE", "cpu", *opts]))


def test_trains_and_infers_on_images_with_and_without_objects():
    model = toy_model()
    batch = [{"image": torch.rand(3, 100, 150) * 255, "instances": make_instances(100, 150, boxes, classes)}
             for boxes, classes in [([[10, 12, 60, 70]], [3]), ([], [])]]
    with EventStorage():
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    neck = model.backbone
    grads = {n: p.grad for n, p in neck.named_parameters() if not n.startswith("bottom_up.")}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # every transformer is on the gradient path (the GT's output norm has a gradient at 0)
    assert grads["grounding_transformers.p2_p5.norm.weight"].abs().sum() > 0
    assert grads["rendering_transformers.p5_p2.value.weight"].abs().sum() > 0
    assert grads["self_transformers.0.mixture_weight"].abs().sum() > 0
    check_eval_output(model, num_classes=model.roi_heads.num_classes)


@pytest.mark.parametrize("config,expected", [
    ("fpt_R-18_toy.yaml", (True, True, True)), ("fpt-st_R-18_toy.yaml", (True, False, False)),
    ("fpt-gt_R-18_toy.yaml", (False, True, False)), ("fpt-rt_R-18_toy.yaml", (False, False, True))])
def test_the_ablation_configs_build_the_transformers_they_name(config, expected):
    neck = toy_model(config).backbone
    built = tuple(m is not None for m in (neck.self_transformers, neck.grounding_transformers,
                                          neck.rendering_transformers))
    assert built == expected
    shapes = neck.output_shape()
    assert shapes["p2"].channels == 64 and sorted(shapes) == ["p2", "p3", "p4", "p5", "p6"]


def test_one_image_per_process_with_plain_batchnorm_is_a_clear_error():
    model = toy_model()
    batch = [{"image": torch.rand(3, 64, 64) * 255,
              "instances": make_instances(64, 64, [[5, 5, 30, 30]], [0])}]
    with EventStorage(), pytest.raises(ValueError, match="2\\+ images per process"):
        model(batch)
    model = toy_model("fpt_R-18_toy.yaml", "MODEL.FPT.NORM", "GN")
    with EventStorage():
        assert all(torch.isfinite(v) for v in model(batch).values())


def test_size_of_the_coco_neck():
    """The COCO FPT neck (256 channels, C2-C5 of R-50), counted by hand from the official
    modules: laterals 1x1 + GN, ST (q/k conv, v conv, 2 x 256 mixture weights, out conv, BN),
    GT (3 convs to 128, out conv, BN), RT (1x1, 3x3, strided 3x3, no bias, 3 BNs), fusion 3x3
    of 5 x 256 + GN. The official RenderTrans also holds two unused 1x1 convs (256 x 256 and
    512 x 256), 6 x 196,608 parameters not built here."""
    cfg = load_config(os.path.join(COCO, "fpt_R-50_120k_coco.yaml"), ["MODEL.DEVICE", "cpu"])
    neck = build_model(cfg).backbone
    n = sum(p.numel() for name, p in neck.named_parameters() if not name.startswith("bottom_up."))
    c = 256
    laterals = (256 + 512 + 1024 + 2048) * c + 4 * 2 * c
    st = 2 * (c * c + c) + 2 * c + c * c + 2 * c
    gt = 3 * (c * 128 + 128) + (128 * c + c) + 2 * c
    rt = c * c + 9 * c * c + 9 * c * c + 3 * 2 * c
    fusion = 9 * 5 * c * c + 2 * c
    assert n == laterals + 4 * st + 6 * gt + 6 * rt + 4 * fusion == 21849856
