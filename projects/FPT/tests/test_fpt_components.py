"""FPT's three transformers against direct loops over positions of their formulas (float64,
tiny maps, odd sizes), the locality constraint, the memory-bounded attention against the plain
one, gradcheck, and the neck's levels, switches, shapes and size."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from fpt import FPT, GroundingTransformer, RenderingTransformer, SelfTransformer, chunked_softmax_attention
from torch import nn
from torch.nn import functional as F


@pytest.fixture(autouse=True)
def _float64():
    """Every test here in float64 (modules and tensors), and only these: the default is
    restored after each test, so the rest of the suite is unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _randomise(module, seed=0):
    """Random weights everywhere (the GT's zero-initialised output norm too), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def _maps(*shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def _conv1x1(conv, x):
    """A 1x1 conv at every position, by hand: (C_in, H, W) -> (C_out, H, W)."""
    return torch.einsum("oc,chw->ohw", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


def _bn(norm, x):
    return ((x - norm.running_mean[:, None, None]) / (norm.running_var[:, None, None] + norm.eps).sqrt()
            * norm.weight[:, None, None] + norm.bias[:, None, None])


# ---------------------------------------------------------------------------- attention
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_attention_equals_the_whole_map_values_and_gradients(chunk):
    q, k, v, bias = _maps((2, 7, 3), (2, 5, 3), (2, 5, 4), (2, 5))
    for t in (q, k, v):
        t.requires_grad_()
    direct = torch.softmax(q @ k.transpose(1, 2) * 0.7 + bias[:, None], dim=-1) @ v
    chunked = chunked_softmax_attention(q, k, v, 0.7, key_bias=bias, chunk=chunk)
    torch.testing.assert_close(chunked, direct)
    g = torch.randn_like(direct)
    expected = torch.autograd.grad((direct * g).sum(), (q, k, v))
    got = torch.autograd.grad((chunked * g).sum(), (q, k, v))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_chunked_attention_gradcheck_through_recomputed_chunks():
    q, k, v = _maps((1, 5, 2), (1, 3, 2), (1, 3, 2), seed=3)
    assert torch.autograd.gradcheck(
        lambda q, k, v: chunked_softmax_attention(q, k, v, 0.5, chunk=2),
        (q.requires_grad_(), k.requires_grad_(), v.requires_grad_()))


def test_chunked_attention_dropout_is_recomputed_identically_in_backward():
    """With dropout and checkpointed chunks, the backward pass recomputes each chunk: its
    gradient is that of the forward's own dropout masks only if the recomputation draws the
    same ones. Check it against finite differences of the same seeded forward."""
    q, k, v = _maps((1, 6, 2), (1, 4, 2), (1, 4, 3), seed=4)

    def f(x):
        torch.manual_seed(0)
        return chunked_softmax_attention(x, k, v, 1.0, dropout=0.5, chunk=2).sum()

    x = q.clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(x), x)
    eps = 1e-6
    for idx in [(0, 0, 0), (0, 3, 1), (0, 5, 0)]:
        plus, minus = q.clone(), q.clone()
        plus[idx] += eps
        minus[idx] -= eps
        assert abs((f(plus) - f(minus)) / (2 * eps) - grad[idx]) < 1e-6, idx
    torch.manual_seed(0)
    assert not torch.equal(chunked_softmax_attention(q, k, v, 1.0, dropout=0.5, chunk=2),
                           chunked_softmax_attention(q, k, v, 1.0, chunk=2))


# ---------------------------------------------------------------------------- Self-Transformer
@torch.no_grad()
def st_by_loops(st, x):
    """Paper Eq. 1-2 / official SelfTrans + MixtureOfSoftMax, position by position, one image."""
    c, h, w = x.shape
    m = st.mixtures
    d = c // m
    pooled = st.pool(x[None])[0]
    q = _conv1x1(st.query_key, x).reshape(c, -1)
    k = _conv1x1(st.query_key, pooled).reshape(c, -1)
    v = _conv1x1(st.value, pooled).reshape(c, -1)
    logits = st.mixture_weight @ q.mean(1)
    pi = [math.exp(a) / sum(math.exp(b) for b in logits.tolist()) for a in logits.tolist()]
    out = torch.zeros(c, h * w)
    for i in range(h * w):
        for n in range(m):
            scores = [float(q[n * d:(n + 1) * d, i] @ k[n * d:(n + 1) * d, j]) / math.sqrt(c)
                      for j in range(k.shape[1])]
            z = sum(math.exp(s) for s in scores)
            for j, s in enumerate(scores):
                out[:, i] += pi[n] * math.exp(s) / z * v[:, j]
    y = torch.einsum("oc,cn->on", st.out.weight[:, :, 0, 0], out).reshape(c, h, w)
    return x + _bn(st.norm, y)


@pytest.mark.parametrize("size", [(3, 5), (4, 4), (1, 2)])
def test_self_transformer_is_a_mixture_of_softmaxes(size):
    st = _randomise(SelfTransformer(4, mixtures=2, chunk=5))
    (x,) = _maps((2, 4, *size))
    out = st(x)
    for b in range(2):
        torch.testing.assert_close(out[b], st_by_loops(st, x[b]))


def test_self_transformer_keys_come_from_the_pooled_map_and_share_the_query_conv():
    st = SelfTransformer(8, mixtures=4)
    assert st.pool.kernel_size == 3 and st.pool.stride == 2 and st.pool.padding == 1
    assert not st.pool.count_include_pad
    names = {n for n, _ in st.named_parameters()}
    assert names == {"query_key.weight", "query_key.bias", "value.weight", "value.bias", "mixture_weight",
                     "out.weight", "norm.weight", "norm.bias"}
    with pytest.raises(ValueError, match="do not split"):
        SelfTransformer(6, mixtures=4)


def test_self_transformer_dropout_only_in_training():
    st = _randomise(SelfTransformer(4, mixtures=2, dropout=0.5))
    (x,) = _maps((1, 4, 3, 3))
    torch.testing.assert_close(st(x), st(x))
    st.train()
    for m in st.modules():  # keep BN's running statistics out of the comparison
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(0)
    a = st(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, st(x))


def test_self_transformer_gradcheck():
    st = _randomise(SelfTransformer(4, mixtures=2, chunk=4))
    (x,) = _maps((1, 4, 3, 3))
    assert torch.autograd.gradcheck(st, (x.requires_grad_(),))


# ---------------------------------------------------------------------------- Grounding Transformer
@torch.no_grad()
def gt_by_loops(gt, fine, coarse, window=0, scale=2):
    """Paper Eq. 3-4 (similarity "euclidean") or the released code ("dot"), one image,
    position by position; ``window``: only coarse positions within window // 2 (Chebyshev) of
    (i // scale, j // scale)."""
    q, k, v = _conv1x1(gt.query, fine), _conv1x1(gt.key, coarse), _conv1x1(gt.value, coarse)
    (_, H, W), (_, h, w) = fine.shape, coarse.shape
    y = torch.zeros(v.shape[0], H, W)
    for i in range(H):
        for j in range(W):
            r = window // 2
            keys = [(a, b) for a in range(h) for b in range(w)
                    if not window or (abs(a - i // scale) <= r and abs(b - j // scale) <= r)]
            if gt.similarity == "dot":
                weights = [float(q[:, i, j] @ k[:, a, b]) / len(keys) for a, b in keys]
            else:
                scores = [-float(((q[:, i, j] - k[:, a, b]) ** 2).sum()) for a, b in keys]
                top = max(scores)
                z = sum(math.exp(s - top) for s in scores)
                weights = [math.exp(s - top) / z for s in scores]
            for wgt, (a, b) in zip(weights, keys):
                y[:, i, j] += wgt * v[:, a, b]
    z = torch.einsum("oc,chw->ohw", gt.out.weight[:, :, 0, 0], y) + gt.out.bias[:, None, None]
    return _bn(gt.norm, z)


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
@pytest.mark.parametrize("window,scale,fine,coarse", [(0, 2, (5, 3), (3, 2)), (3, 2, (5, 3), (3, 2)),
                                                       (3, 4, (7, 8), (2, 2)), (5, 2, (6, 7), (3, 4))])
def test_grounding_transformer_against_its_formula(similarity, window, scale, fine, coarse):
    gt = _randomise(GroundingTransformer(4, 3, similarity, window, scale, chunk=4))
    xf, xc = _maps((2, 4, *fine), (2, 4, *coarse))
    xf, xc = xf * 0.3, xc * 0.3  # keep the euclidean softmax away from one-hot
    out = gt(xf, xc)
    assert out.shape == (2, 4, *fine)
    for b in range(2):
        torch.testing.assert_close(out[b], gt_by_loops(gt, xf[b], xc[b], window, scale))


def test_locality_window_of_a_corner_and_a_centre_position():
    """A 3 x 3 window on a 4 x 4 coarse map under a 8 x 8 fine one: fine (0, 0) sees the 4
    coarse positions (0..1, 0..1); fine (5, 2) -> coarse (2, 1) sees rows 1..3, cols 0..2."""
    from fpt.grounding_transformer import window_of_coarse_positions

    coarse = torch.arange(16.0).reshape(1, 1, 4, 4) + 1  # value = 1 + 4 row + col
    keys, inside = window_of_coarse_positions(coarse, 3, (8, 8), 2)
    assert sorted(keys[0, 0, :, 0, 0][inside[0, 0, :, 0, 0]].tolist()) == [1, 2, 5, 6]
    assert sorted(keys[0, 0, :, 5, 2][inside[0, 0, :, 5, 2]].tolist()) == [5, 6, 7, 9, 10, 11, 13, 14, 15]
    with pytest.raises(ValueError, match="not a coarser level"):
        window_of_coarse_positions(coarse, 3, (12, 8), 2)


def test_grounding_transformer_starts_at_zero_and_has_no_residual():
    gt = GroundingTransformer(8, similarity="euclidean", norm="BN")
    xf, xc = _maps((2, 8, 4, 6), (2, 8, 2, 3))
    assert gt(xf, xc).abs().max() == 0
    assert gt.query.out_channels == 4  # official inter_channels: half
    with pytest.raises(ValueError, match="similarity"):
        GroundingTransformer(8, similarity="cosine")
    with pytest.raises(ValueError, match="odd"):
        GroundingTransformer(8, window=4)


@pytest.mark.parametrize("similarity,window", [("euclidean", 0), ("euclidean", 3), ("dot", 0)])
def test_grounding_transformer_gradcheck(similarity, window):
    gt = _randomise(GroundingTransformer(4, 2, similarity, window, chunk=5))
    xf, xc = _maps((1, 4, 4, 3), (1, 4, 2, 2))
    assert torch.autograd.gradcheck(gt, (xf.mul(0.3).requires_grad_(), xc.mul(0.3).requires_grad_()))


# ---------------------------------------------------------------------------- Rendering Transformer
@pytest.mark.parametrize("scale,fine,coarse", [(2, (6, 5), (3, 3)), (4, (9, 8), (3, 2))])
def test_rendering_transformer_on_identity_weights(scale, fine, coarse):
    """With identity convs (centre taps) and no norms, RT(coarse, fine) = relu(fine sampled
    every ``scale`` positions + coarse * relu(mean of fine)), channel by channel."""
    rt = RenderingTransformer(3, scale, norm="")
    with torch.no_grad():
        for conv in (rt.gate, rt.query, rt.value):
            conv.weight.zero_()
            k = conv.kernel_size[0] // 2
            conv.weight[range(3), range(3), k, k] = 1.0
    xf, xc = _maps((2, 3, *fine), (2, 3, *coarse))
    expected = F.relu(xf[:, :, ::scale, ::scale] + xc * F.relu(xf.mean(dim=(2, 3), keepdim=True)))
    torch.testing.assert_close(rt(xc, xf), expected)


def test_rendering_transformer_gradcheck_and_clear_errors():
    rt = _randomise(RenderingTransformer(3, 2))
    xf, xc = _maps((2, 3, 4, 4), (2, 3, 2, 2))
    assert torch.autograd.gradcheck(rt, (xc.requires_grad_(), xf.requires_grad_()))
    with pytest.raises(ValueError, match="does not match"):
        rt(torch.zeros(2, 3, 3, 3), torch.zeros(2, 3, 4, 4))
    rt.train()
    with pytest.raises(ValueError, match="2\\+ images per process"):
        rt(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4))


# ---------------------------------------------------------------------------- the neck
class _Pyramid(Backbone):
    """C2-C5 stand-in: strided average pools of the input to 2, 3, 4, 5 channels."""

    def __init__(self):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(3, c, 1) for c in (2, 3, 4, 5))

    def forward(self, x):
        out = {}
        for i, p in enumerate(self.proj):
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False) if i else F.avg_pool2d(F.avg_pool2d(
                x, 3, 2, 1, count_include_pad=False), 3, 2, 1, count_include_pad=False)
            out[f"res{i + 2}"] = p(x)
        return out

    def output_shape(self):
        return {f"res{i + 2}": ShapeSpec(channels=c, stride=2 ** (i + 2)) for i, c in enumerate((2, 3, 4, 5))}


def _neck(**kw):
    torch.manual_seed(0)
    return FPT(_Pyramid(), ["res2", "res3", "res4", "res5"], 8, top_block=LastLevelMaxPool(), **kw)


def test_every_level_concatenates_its_transformers_in_the_official_order():
    """FPT_a.py: P5 = [ST, RT(5<-4), RT(5<-3), RT(5<-2), P5] ... P2 = [ST, GT(2<-3), GT(2<-4),
    GT(2<-5), P2]: 5 maps of 8 channels per level; the switches drop their maps."""
    neck = _neck()
    assert [c.in_channels for c in neck.fusion_convs] == [40] * 4
    assert sorted(neck.grounding_transformers) == ["p2_p3", "p2_p4", "p2_p5", "p3_p4", "p3_p5", "p4_p5"]
    assert sorted(neck.rendering_transformers) == ["p3_p2", "p4_p2", "p4_p3", "p5_p2", "p5_p3", "p5_p4"]
    assert neck.rendering_transformers["p5_p2"].value.stride == (8, 8)
    assert neck.grounding_transformers["p2_p5"].scale == 8
    calls = []
    for name, m in list(neck.grounding_transformers.items()) + list(neck.rendering_transformers.items()):
        m.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name))
    neck.eval()(torch.rand(1, 3, 64, 64))
    assert calls == ["p2_p3", "p2_p4", "p2_p5", "p3_p2", "p3_p4", "p3_p5", "p4_p3", "p4_p2", "p4_p5",
                     "p5_p4", "p5_p3", "p5_p2"]
    assert [c.in_channels for c in _neck(self_transformer=False).fusion_convs] == [32] * 4
    assert [c.in_channels for c in _neck(grounding_transformer=False).fusion_convs] == [16, 24, 32, 40]
    assert [c.in_channels for c in _neck(rendering_transformer=False).fusion_convs] == [40, 32, 24, 16]
    plain = _neck(self_transformer=False, grounding_transformer=False, rendering_transformer=False)
    assert [c.in_channels for c in plain.fusion_convs] == [8] * 4


def test_the_concatenation_holds_each_transformer_output():
    """The fusion conv of P3 sees exactly [ST(L3), RT(L3 <- L2), GT(L3 <- L4), GT(L3 <- L5), L3]."""
    neck = _randomise(_neck(transformer_norm="BN"))
    x = torch.rand(2, 3, 64, 64)
    seen = {}
    neck.fusion_convs[1].register_forward_hook(lambda m, inp, out: seen.setdefault("in", inp[0]))
    neck(x)
    lat = [conv(neck.bottom_up(x)[f]) for conv, f in zip(neck.lateral_convs, neck.in_features)]
    parts = [neck.self_transformers[1](lat[1]), neck.rendering_transformers["p3_p2"](lat[1], lat[0]),
             neck.grounding_transformers["p3_p4"](lat[1], lat[2]),
             neck.grounding_transformers["p3_p5"](lat[1], lat[3]), lat[1]]
    torch.testing.assert_close(seen["in"], torch.cat(parts, 1))


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (33, 17)])
def test_output_levels_at_odd_sizes(size):
    neck = _neck().eval()
    out = neck(torch.rand(1, 3, *size))
    h, w = size
    for s in range(2, 7):
        h_s, w_s = h, w
        for _ in range(s):
            h_s, w_s = -(-h_s // 2), -(-w_s // 2)
        assert out[f"p{s}"].shape == (1, 8, h_s, w_s), s
    assert neck.size_divisibility == 32
    assert {k: v.stride for k, v in neck.output_shape().items()} == {f"p{s}": 2 ** s for s in range(2, 7)}


def test_neck_gradcheck_on_a_tiny_pyramid():
    neck = _randomise(_neck(chunk=3))
    x = torch.rand(1, 3, 16, 16)
    # fast mode: the Jacobian along random directions (a full one is 768 neck evaluations)
    assert torch.autograd.gradcheck(lambda t: sum(o.sum() for o in neck(t).values()), (x.requires_grad_(),),
                                    fast_mode=True)


def test_official_init_of_the_neck_convs():
    """FPT_a.initialize(): kaiming-uniform (a = 1) on every conv of the neck, bias 0; the GT's
    output norm stays at 0; the backbone is not re-initialised."""
    neck = _neck()
    torch.manual_seed(0)
    bottom = _Pyramid()  # what _neck() built, before the neck's init
    torch.testing.assert_close(neck.bottom_up.proj[0].weight, bottom.proj[0].weight)
    st = neck.self_transformers[0].query_key
    bound = math.sqrt(6 / ((1 + 1) * st.in_channels))  # kaiming-uniform, a = 1, fan_in
    assert st.weight.abs().max() <= bound and st.weight.abs().max() > 0.8 * bound
    assert st.bias.abs().max() == 0
    for gt in neck.grounding_transformers.values():
        assert gt.norm.weight.abs().max() == 0 and gt.norm.bias.abs().max() == 0
