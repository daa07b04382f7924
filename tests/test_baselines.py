"""The baseline detectors build from their toy configs and handle images without objects.
(Training and evaluating through the entry point: tests/test_every_config.py.)"""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from common.engine import add_common_config

BASELINES = ["retinanet", "fcos", "faster_rcnn"]
BOX_LOSSES = {"loss_box_reg", "loss_fcos_loc", "loss_fcos_ctr", "loss_rpn_loc"}


def _cfg(name):
    cfg = get_cfg()
    add_common_config(cfg)
    cfg.merge_from_file(f"common/configs/{name}_R-18-FPN_toy.yaml")
    cfg.MODEL.DEVICE = "cpu"
    # What setup() does from toy_shapes' metadata.
    cfg.MODEL.RETINANET.NUM_CLASSES = cfg.MODEL.FCOS.NUM_CLASSES = 6
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    return cfg


def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


@pytest.mark.parametrize("name", BASELINES)
def test_empty_image_gives_classification_loss_and_zero_box_loss(name):
    torch.manual_seed(0)
    model = build_model(_cfg(name)).train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255, "instances": _instances(97, 131, [], [])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": _instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    for k, v in losses.items():
        assert torch.isfinite(v), k
        if k in BOX_LOSSES:
            assert v.item() == 0.0, k
        else:
            assert v.item() > 0.0, k
    # The zero box losses are still part of the graph, so DDP sees every parameter used.
    sum(losses.values()).backward()


@pytest.mark.parametrize("name", BASELINES)
def test_train_step_with_objects_has_finite_losses(name):
    torch.manual_seed(0)
    model = build_model(_cfg(name)).train()
    batch = [
        {"image": torch.rand(3, 97, 131) * 255,
         "instances": _instances(97, 131, [[10, 10, 40, 50], [60, 20, 90, 45]], [0, 3])},
        {"image": torch.rand(3, 115, 89) * 255, "instances": _instances(115, 89, [], [])},
    ]
    with EventStorage():
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(losses[k].item() > 0 for k in losses if k in BOX_LOSSES)


@pytest.mark.parametrize("name", BASELINES)
def test_eval_mode_returns_instances_inside_the_image(name):
    torch.manual_seed(0)
    cfg = _cfg(name)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg).eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 97, 131) * 255, "height": 194, "width": 262}])
    inst = out["instances"]
    assert inst.image_size == (194, 262) and len(inst) > 0
    b = inst.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 262).all() and (b[:, 3] <= 194).all()
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 6)).all()
