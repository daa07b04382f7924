"""The conv head's parts against direct computations, and the enlarged RoI pooled from the
original RoI's level."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from double_head import (
    Bottleneck,
    DoubleHeadConvHead,
    GroupNonLocal2d,
    UpChannelBlock,
    enlarge_boxes,
    pool_at_levels_of,
)
from torchvision.ops import roi_align


def test_enlarge_boxes_scales_about_the_centre():
    out = enlarge_boxes(Boxes(torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 8.0, 2.0]])), 1.3)
    # centre (20, 40), 20 x 40 -> 26 x 52; centre (4, 1), 8 x 2 -> 10.4 x 2.6
    torch.testing.assert_close(out.tensor, torch.tensor([[7.0, 14.0, 33.0, 66.0], [-1.2, -0.3, 9.2, 2.3]]))


def test_enlarged_roi_is_pooled_from_the_level_of_the_original_roi():
    pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 2, "ROIAlignV2")
    torch.manual_seed(0)
    features = [torch.randn(1, 3, 256 // s, 256 // s) for s in (4, 8, 16, 32)]
    # sqrt(area) 200: level floor(4 + log2(200 / 224)) = 3 (P3); enlarged 260 -> 4 (P4).
    # sqrt(area) 60 -> floor(2.10) = 2 (P2), enlarged 78 -> floor(2.48), still P2.
    original = Boxes(torch.tensor([[20.0, 30.0, 220.0, 230.0], [50.0, 60.0, 110.0, 120.0]]))
    enlarged = enlarge_boxes(original, 1.3)
    out = pool_at_levels_of(pooler, features, [original], [enlarged])
    rois = torch.cat([torch.zeros(2, 1), enlarged.tensor], dim=1)
    torch.testing.assert_close(out[0], roi_align(features[1], rois[:1], 7, 1 / 8, 2, aligned=True)[0])
    torch.testing.assert_close(out[1], roi_align(features[0], rois[1:], 7, 1 / 4, 2, aligned=True)[0])
    # detectron2's pooler would assign the enlarged first box to P4
    assert not torch.allclose(pooler(features, [enlarged])[0], out[0])
    torch.testing.assert_close(pooler(features, [enlarged])[1], out[1])


def _conv(x, conv):
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.padding)


def _bn(x, bn):
    return (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


def _randomise(module):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)
    return module.eval()


def test_group_non_local_against_a_direct_loop():
    block = _randomise(GroupNonLocal2d(6, inter_channels=4, groups=2).double())
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64)
    theta, phi, g = _conv(x, block.theta), _conv(x, block.phi), _conv(x, block.g)
    y = torch.zeros(2, 4, 3, 2, dtype=torch.float64)
    positions = [(i, j) for i in range(3) for j in range(2)]
    for n in range(2):
        for group in range(2):
            c = slice(2 * group, 2 * group + 2)
            for p in positions:
                for q in positions:
                    # (theta_p . phi_q) / N, within the group's channels
                    f = (theta[n, c, p[0], p[1]] * phi[n, c, q[0], q[1]]).sum() / len(positions)
                    y[n, c, p[0], p[1]] += f * g[n, c, q[0], q[1]]
    expected = torch.relu(x + _bn(_conv(y, block.W), block.norm))
    torch.testing.assert_close(block(x), expected)


def test_group_non_local_starts_as_relu():
    block = GroupNonLocal2d(8, inter_channels=4, groups=4).train()
    x = torch.randn(3, 8, 7, 7)
    torch.testing.assert_close(block(x), torch.relu(x))
    assert block.W.weight.abs().sum() == 0 and block.W.bias.abs().sum() == 0


def test_up_channel_block_and_bottleneck_against_their_chains():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    up = _randomise(UpChannelBlock(4, 8).double())
    a = torch.relu(_bn(_conv(x, up.conv1[0]), up.conv1[1]))
    shortcut = _bn(_conv(x, up.shortcut[0]), up.shortcut[1])
    expected = torch.relu(_bn(_conv(a, up.conv2[0]), up.conv2[1]) + shortcut)
    torch.testing.assert_close(up(x), expected)
    y = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    b = _randomise(Bottleneck(8).double())
    h = torch.relu(_bn(_conv(y, b.conv1[0]), b.conv1[1]))
    h = torch.relu(_bn(_conv(h, b.conv2[0]), b.conv2[1]))
    torch.testing.assert_close(b(y), torch.relu(_bn(_conv(h, b.conv3[0]), b.conv3[1]) + y))
    assert b.conv1[0].out_channels == 2 and b.conv2[0].kernel_size == (3, 3)


def test_conv_head_gradcheck():
    head = _randomise(DoubleHeadConvHead(ShapeSpec(channels=3), channels=8, num_blocks=1,
                                         non_local_groups=2, non_local_inter_channels=4).double())
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (x,))


def _official_conv_head_size(c_in=256, c=1024, inter=512, stacks=2, non_local=True):
    """Parameters of the official conv head (FPNUpChannels + stacks x NONLocalBlock2D_Group
    with FPNFFConv), by hand: convs without bias but the non-local's, BN = 2 per channel."""
    up = c_in * c_in * 9 + 2 * c_in + c_in * c + 2 * c + c_in * c + 2 * c
    nl = 3 * (c * inter + inter) + inter * c + c + 2 * c
    ff = c * (c // 4) + 2 * (c // 4) + (c // 4) ** 2 * 9 + 2 * (c // 4) + (c // 4) * c + 2 * c
    return up + stacks * ((nl if non_local else 0) + ff)


@pytest.mark.parametrize("blocks,non_local", [(2, True), (4, False)])
def test_conv_head_size_equals_the_official(blocks, non_local):
    head = DoubleHeadConvHead(ShapeSpec(channels=256), 1024, blocks, non_local, 4, 512)
    official = _official_conv_head_size(stacks=blocks, non_local=non_local)
    assert sum(p.numel() for p in head.parameters()) == official
    assert head(torch.randn(2, 256, 7, 7)).shape == (2, 1024)


@pytest.mark.parametrize("training", [True, False])
def test_conv_head_on_no_rois(training):
    head = DoubleHeadConvHead(ShapeSpec(channels=8), channels=16, non_local_groups=2,
                              non_local_inter_channels=8).train(training)
    out = head(torch.zeros(0, 8, 7, 7))
    assert out.shape == (0, 16)
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all() for m in bns)
