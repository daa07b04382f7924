"""The poly-scale convolution against an explicit per-block dilated convolution, the fast form
against the official three convs, the mask (official and intended, kept at zero by optimisers
and on loading) and gradcheck."""

import pytest
import torch
from psconv import PSConv2d, ps_mask
from torch.nn import functional as F


def _randomise(layer):
    torch.manual_seed(1)
    with torch.no_grad():
        for conv in (layer.gwconv, layer.gwconv_shift, layer.conv):
            conv.weight.normal_()
    layer.zero_masked_()
    return layer


def reference(layer, x):
    """Output block o = sum over input blocks i (of o's group) of a 3x3 conv with the
    dilation the paper assigns to (o, i): d on the diagonal (gwconv's kernel), 2d half a
    cycle away (gwconv_shift's kernel, whose input blocks are the swapped halves), and 1
    elsewhere (the dense conv's kernel); plus, where the mask leaves them, the dense conv's
    kernels on the first two kinds of blocks too, at dilation 1."""
    g, p = layer.groups, layer.parts
    d = layer.gwconv.dilation[0]
    stride = layer.conv.stride
    cin, cout = x.shape[1], layer.conv.out_channels
    a, b = cin // (g * p), cout // (g * p)
    dense = layer.conv.weight
    out = []
    for j in range(g):
        for o in range(p):
            rows = slice((j * p + o) * b, (j * p + o + 1) * b)
            y = 0
            for i in range(p):
                xi = x[:, (j * p + i) * a:(j * p + i + 1) * a]
                cols = slice(i * a, (i + 1) * a)
                if i == o:
                    y = y + F.conv2d(xi, layer.gwconv.weight[rows], stride=stride, padding=d, dilation=d)
                if o == (i + p // 2) % p:
                    # gwconv_shift's group o sees the swapped input's block o = original block i
                    y = y + F.conv2d(xi, layer.gwconv_shift.weight[rows], stride=stride, padding=2 * d,
                                     dilation=2 * d)
                if not layer.mask[rows, cols].any():
                    y = y + F.conv2d(xi, dense[rows, cols], stride=stride, padding=1)
            out.append(y)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("groups,mask,stride", [(1, "official", 1), (1, "official", 2), (2, "intended", 1),
                                                (2, "official", 2)])
def test_layer_equals_the_per_block_dilated_convolution(groups, mask, stride):
    layer = _randomise(PSConv2d(8 * groups, 4 * groups, 3, stride, 1, 2, groups, 4, mask=mask).double())
    x = torch.randn(2, 8 * groups, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(layer, x))


def test_masks_official_and_intended():
    # ResNet (1 group): the diagonal and half-shifted blocks, both modes alike
    m = ps_mask(8, 8, 1, 4)
    assert torch.equal(m, ps_mask(8, 8, 1, 4, "intended"))
    blocks = m[::2, ::2, 0, 0].int().tolist()   # 2 x 2 channel blocks
    assert blocks == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    # ResNeXt 32 x 4d's first stage (128 channels, 32 groups): the official indexing masks the
    # blocks of groups 0, 8, 16 and 24 only (8 entries each), the intended every group's
    official, intended = ps_mask(128, 128, 32, 4, "official"), ps_mask(128, 128, 32, 4, "intended")
    assert official.sum() == 4 * 8 and intended.sum() == 32 * 8
    masked_groups = sorted({r // 4 for r in official.nonzero()[:, 0].tolist()})
    assert masked_groups == [0, 8, 16, 24] and (official <= intended).all()
    with pytest.raises(ValueError, match="split into"):
        ps_mask(6, 8, 1, 4)


@pytest.mark.parametrize("groups,stride,size", [(1, 1, (9, 11)), (1, 2, (9, 11)), (4, 2, (7, 8))])
def test_fast_form_equals_the_three_convs(groups, stride, size):
    layer = _randomise(PSConv2d(8 * groups, 8 * groups, 3, stride, 1, 2, groups, 4, mask="intended").double())
    fast = PSConv2d(8 * groups, 8 * groups, 3, stride, 1, 2, groups, 4, mask="intended", impl="fast").double()
    fast.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8 * groups, *size, dtype=torch.float64, requires_grad=True)
    y1, y2 = layer(x), fast(x)
    torch.testing.assert_close(y2, y1)
    g1 = torch.autograd.grad(y1.square().sum(), [x, layer.conv.weight])
    g2 = torch.autograd.grad(y2.square().sum(), [x, fast.conv.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a)
    with pytest.raises(ValueError, match="complete mask|every group"):
        PSConv2d(64, 64, 3, 1, 1, 2, 16, 4, mask="official", impl="fast")


def test_gradcheck_and_no_gradient_to_masked_weights():
    layer = _randomise(PSConv2d(4, 4, 3, 1, 1, 1, 1, 4).double())
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    layer(x).sum().backward()
    assert (layer.conv.weight.grad[layer.mask.expand_as(layer.conv.weight)] == 0).all()
    assert (layer.conv.weight.grad[~layer.mask.expand_as(layer.conv.weight)] != 0).any()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_weights_stay_zero_under_weight_decay(optimizer):
    layer = _randomise(PSConv2d(8, 8, 3, 1, 1, 2))
    params = list(layer.parameters())
    opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=0.1, weight_decay=0.5))
    before = layer.conv.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(2, 8, 6, 6)).square().mean().backward()
        opt.step()
    mask = layer.mask.expand_as(layer.conv.weight)
    assert (layer.conv.weight[mask] == 0).all()
    assert not torch.equal(layer.conv.weight[~mask], before[~mask])


def test_mask_is_a_buffer_that_moves_and_is_not_a_checkpoint_key(tmp_path):
    layer = PSConv2d(8, 8, 3, 1, 1, 2)
    assert "mask" in dict(layer.named_buffers()) and "mask" not in layer.state_dict()
    assert set(layer.state_dict()) == {"gwconv.weight", "gwconv_shift.weight", "conv.weight"}
    assert layer.double().mask.dtype == torch.bool   # .to() keeps it, a mask
    if torch.cuda.is_available():
        assert layer.cuda().mask.is_cuda


def test_loading_a_checkpoint_zeroes_the_masked_weights_unless_asked_not_to():
    layer = PSConv2d(8, 8, 3, 1, 1, 2)
    state = {k: torch.randn_like(v) for k, v in layer.state_dict().items()}   # masked entries non-zero
    mask = layer.mask.expand_as(layer.conv.weight)
    layer.load_state_dict(state)
    assert (layer.conv.weight[mask] == 0).all()
    torch.testing.assert_close(layer.conv.weight[~mask], state["conv.weight"][~mask])
    kept = PSConv2d(8, 8, 3, 1, 1, 2, zero_masked_on_load=False)
    kept.load_state_dict(state)
    torch.testing.assert_close(kept.conv.weight, state["conv.weight"])
    # the official forward with those values: all three convs as stored
    x = torch.randn(1, 8, 7, 7)
    x1, x2 = x.chunk(2, dim=1)
    official = (kept.gwconv(x) + F.conv2d(x, state["conv.weight"], padding=1)
                + kept.gwconv_shift(torch.cat((x2, x1), 1)))
    torch.testing.assert_close(kept(x), official)
