"""tools/convert_torchvision_resnet.py: a torchvision ResNet converted to detectron2's names loads
into detectron2's ResNet with every weight used and gives the same features."""

import os

import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from harness.testing import run_script

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                    "convert_torchvision_resnet.py")


def test_converted_torchvision_resnet_gives_the_same_features(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    for m in tv.modules():  # non-trivial statistics, so that a misplaced norm shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    r = run_script(TOOL, str(tmp_path / "r18.pth"), str(tmp_path / "r18.pkl"))
    assert r.returncode == 0, r.stderr[-2000:]

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()  # FrozenBN, as the configs
    DetectionCheckpointer(backbone).load(str(tmp_path / "r18.pkl"))
    for name, value in backbone.state_dict().items():
        assert not torch.equal(value, torch.zeros_like(value)) or "bias" in name, f"{name} not loaded"

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        torch.testing.assert_close(backbone(x)["res5"], expected, rtol=1e-4, atol=1e-5)
