"""Pyramid convolution, integrated BN and the deformable kernels, against computations
assembled by hand."""

import pytest
import torch
from sepc import PConv, SEPCConv, integrated_bn
from torch.nn import functional as F


def bilinear_matrix(n_in, n_out):
    """Interpolation weights with align_corners=True: output i samples input i (n_in-1)/(n_out-1)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        lo = min(int(src), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1 - (src - lo)
        m[i, hi] += src - lo
    return m


def upsample(x, h, w):
    return torch.einsum("hi,ncij,wj->nchw", bilinear_matrix(x.shape[2], h), x, bilinear_matrix(x.shape[3], w))


def test_pconv_is_the_sum_of_three_convolutions_across_levels():
    torch.manual_seed(0)
    pconv = PConv(2).double()
    xs = [torch.randn(1, 2, 8, 6, dtype=torch.float64), torch.randn(1, 2, 4, 3, dtype=torch.float64),
          torch.randn(1, 2, 2, 2, dtype=torch.float64)]
    w0, w1, w2 = (m.weight for m in (pconv.up, pconv.same, pconv.down))
    b0, b1, b2 = (m.bias for m in (pconv.up, pconv.same, pconv.down))
    with torch.no_grad():
        for b in (b0, b1, b2):
            b.normal_()

    def conv(x, w, b, stride=1):
        return F.conv2d(x, w, b, stride=stride, padding=1)

    expected = [
        # bottom level: itself and the level above (no finer level)
        conv(xs[0], w1, b1) + upsample(conv(xs[1], w0, b0), 8, 6),
        conv(xs[1], w1, b1) + conv(xs[0], w2, b2, stride=2) + upsample(conv(xs[2], w0, b0), 4, 3),
        # top level: itself and the level below (no coarser level)
        conv(xs[2], w1, b1) + conv(xs[1], w2, b2, stride=2),
    ]
    out = pconv(xs)
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, torch.relu(e))
    assert [o.shape[-2:] for o in out] == [x.shape[-2:] for x in xs]


def test_integrated_bn_normalises_with_statistics_over_all_levels():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    xs = [torch.randn(2, 3, 4, 4, dtype=torch.float64) * 3 + 1,
          torch.randn(2, 3, 2, 2, dtype=torch.float64) - 2]
    out = integrated_bn(xs, bn)
    # Manual: per channel, mean and (biased) variance over batch and every pixel of both levels.
    flat = torch.cat([x.permute(1, 0, 2, 3).reshape(3, -1) for x in xs], dim=1)
    mean, var = flat.mean(dim=1), flat.var(dim=1, unbiased=False)
    for o, x in zip(out, xs):
        e = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
        torch.testing.assert_close(o, e * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])
    # Not the same as normalising each level on its own.
    per_level = torch.nn.functional.batch_norm(xs[1], None, None, training=True)
    assert not torch.allclose(out[1], per_level, atol=1e-3)


def test_deformable_kernel_with_zero_offsets_equals_the_plain_convolution():
    torch.manual_seed(0)
    for stride in (1, 2):
        conv = SEPCConv(4, 5, stride=stride, deform=True).double()
        with torch.no_grad():
            conv.bias.normal_()
        x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
        assert (conv.conv_offset.weight == 0).all() and (conv.conv_offset.bias == 0).all()
        plain = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=1)
        torch.testing.assert_close(conv(1, x), plain, rtol=0, atol=1e-12)


def test_deformable_only_above_p3():
    torch.manual_seed(0)
    conv = SEPCConv(3, 3, deform=True).double()
    with torch.no_grad():
        conv.conv_offset.bias.fill_(0.3)  # every sample shifted by 0.3 px
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    plain = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(0, x), plain, rtol=0, atol=0)  # P3: plain
    assert (conv(1, x) - plain).abs().max() > 1e-3  # P4 and above: offsets used
    # Gradients reach the offset conv through the deformable sampling.
    conv(2, x).sum().backward()
    assert conv.conv_offset.weight.grad.abs().sum() > 0


def test_padding_option_sets_the_final_map_sizes():
    for padding, shrink in ((1, 0), (0, 2)):
        conv = SEPCConv(2, 2, padding=padding)
        assert conv(0, torch.randn(1, 2, 10, 7)).shape[-2:] == (10 - shrink, 7 - shrink)


@pytest.mark.parametrize("deform", [False, True])
def test_pconv_gradcheck(deform):
    torch.manual_seed(0)
    pconv = PConv(2, deform=deform).double()
    xs = [torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True),
          torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda a, b: tuple(pconv([a, b])), tuple(xs))
