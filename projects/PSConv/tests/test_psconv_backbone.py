"""PS-ResNet in detectron2: which convs become PSConv, output shapes, the parameter count
against the official layout counted by hand, frozen stages, the checkpoint conversion, and the
toy detector on images without objects."""

import os
import sys

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.utils.events import EventStorage
from psconv import PSConv2d

from harness.projects import load_config
from harness.testing import check_eval_output, make_instances

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PROJECT, "tools"))
from convert_psconv_imagenet import convert  # noqa: E402

COCO = os.path.join(PROJECT, "configs", "psconv-faster_rcnn_R-50-FPN_1x_coco.yaml")
TOY = os.path.join(PROJECT, "configs", "toy", "psconv-faster_rcnn_R-18-FPN_toy.yaml")


def backbone(config, *opts):
    torch.manual_seed(0)
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", *opts])
    return build_backbone(cfg, ShapeSpec(channels=3)), cfg


def test_every_bottleneck_3x3_is_a_psconv_and_shapes_are_resnets():
    fpn, _ = backbone(COCO)
    resnet = fpn.bottom_up
    blocks = [b for s in resnet.stages for b in s.children()]
    assert len(blocks) == 16 and all(isinstance(b, BottleneckBlock) for b in blocks)
    assert all(isinstance(b.conv2, PSConv2d) for b in blocks)
    assert not any(isinstance(m, PSConv2d) for b in blocks for m in (b.conv1, b.conv3))
    # the stride of each stage's first block is in its PSConv (torchvision style)
    assert [b.conv2.conv.stride[0] for b in blocks[::1]][:4] == [1, 1, 1, 2]
    out = resnet(torch.rand(1, 3, 96, 130))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 256, 24, 33), "res3": (1, 512, 12, 17), "res4": (1, 1024, 6, 9), "res5": (1, 2048, 3, 5)}


def test_parameter_count_against_the_official_layout():
    """PSConv stores gwconv (1/4 of a dense 3x3), gwconv_shift (1/4) and the dense conv: 1.5 x
    each bottleneck's 3x3 weights; everything else is ResNet-50's."""
    ps, _ = backbone(COCO)
    plain, _ = backbone(COCO, "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone")

    def count(m):
        return sum(p.numel() for p in m.parameters())

    extra = sum(n * 9 * planes * planes // 2 for n, planes in ((3, 64), (4, 128), (6, 256), (3, 512)))
    assert extra == 5_658_624
    assert count(ps) - count(plain) == extra
    # only stem + res2 frozen; res2's PSConvs too
    frozen = [n for n, p in ps.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("bottom_up.stem", "bottom_up.res2")) for n in frozen)
    assert "bottom_up.res2.0.conv2.gwconv.weight" in frozen


def test_resnext_uses_grouped_psconv_with_the_chosen_mask():
    opts = ["MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "4"]
    official, _ = backbone(COCO, *opts)
    intended, _ = backbone(COCO, *opts, "MODEL.PSCONV.MASK", "intended")
    a, b = official.bottom_up.res2[0].conv2, intended.bottom_up.res2[0].conv2
    assert a.groups == 32 and a.gwconv.groups == 128 and a.conv.weight.shape == (128, 4, 3, 3)
    assert a.mask.sum() == 32 and b.mask.sum() == 256


def test_toy_basic_blocks_get_both_convs_replaced_and_train_without_objects():
    model = build_model(load_config(TOY, ["MODEL.DEVICE", "cpu"])).train()
    blocks = [b for s in model.backbone.bottom_up.stages for b in s.children()]
    assert all(isinstance(b, BasicBlock) for b in blocks)
    assert all(isinstance(b.conv1, PSConv2d) and isinstance(b.conv2, PSConv2d) for b in blocks)
    empty = make_instances(96, 128, [], [])
    with EventStorage():
        losses = model([{"image": torch.rand(3, 96, 128) * 255, "instances": empty}] * 2)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    check_eval_output(model, num_classes=6)


def _official_name(name):
    """This repo's backbone key -> the official (torchvision-style) key, written from the
    official ResNet's module names."""
    name = name[len("backbone.bottom_up."):]
    if name.startswith("stem.conv1.norm."):
        return "bn1." + name[len("stem.conv1.norm."):]
    if name == "stem.conv1.weight":
        return "conv1.weight"
    stage, block, rest = name.split(".", 2)
    layer = f"layer{int(stage[3:]) - 1}.{block}."
    for k in (1, 2, 3):
        if rest.startswith(f"conv{k}.norm."):
            return layer + f"bn{k}." + rest[len(f"conv{k}.norm."):]
    if rest.startswith("shortcut.norm."):
        return layer + "downsample.1." + rest[len("shortcut.norm."):]
    if rest.startswith("shortcut."):
        return layer + "downsample.0." + rest[len("shortcut."):]
    return layer + rest


def test_official_checkpoint_converts_to_every_backbone_key():
    model = build_model(load_config(COCO, ["MODEL.DEVICE", "cpu"]))
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    torch.manual_seed(3)
    official = {_official_name(k): torch.randn_like(v.float()) for k, v in ours.items()}
    official["fc.weight"] = torch.zeros(1000, 2048)
    official["layer1.0.bn1.num_batches_tracked"] = torch.tensor(5)
    converted = convert({"module." + k: v for k, v in official.items()})
    assert set(converted) == set(ours)
    for k, v in converted.items():
        assert torch.equal(torch.as_tensor(v), official[_official_name(k)])
    with pytest.raises(KeyError, match="unexpected key"):
        convert({"head.weight": torch.zeros(1)})
