"""BorderAlign: values worked out on planes where bilinear sampling is exact, the compiled
C++ op against the pure-PyTorch reference (forward and backward, random and edge inputs),
gradcheck in float64, and the CUDA source compiling wherever nvcc is present."""

import glob
import importlib
import os
import shutil
import subprocess
import sysconfig
import warnings

import pytest
import torch
from borderdet.layers import border_align, border_align_reference, load_extension

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(PROJECT, "borderdet", "layers", "csrc")
OPS = [pytest.param(border_align_reference, id="reference"), pytest.param(border_align, id="compiled")]


@pytest.fixture(scope="module", autouse=True)
def compiled():
    ext = load_extension()
    assert ext is not None, "the C++ op must build on this machine (a compiler is installed)"
    return ext


def linear_plane(h, w, c4=4):
    """f(x, y) = x + 10 y in every channel: bilinear sampling reproduces it exactly inside."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    return (x + 10 * y).expand(1, c4, h, w).clone()


@pytest.mark.parametrize("op", OPS)
def test_max_along_each_border_of_a_linear_plane(op):
    # Box (1.5, 1, 4, 3.5) at every location of a 5x6 map: f increases with x and y, so the
    # max is at the far end of top (4, 1) and left (1.5, 3.5) and at the start of bottom and
    # right, both (4, 3.5).
    feat = linear_plane(5, 6)
    boxes = torch.tensor([1.5, 1.0, 4.0, 3.5], dtype=torch.float64).expand(1, 30, 4)
    out = op(feat, boxes, 4)
    expected = torch.tensor([4 + 10 * 1.0, 1.5 + 10 * 3.5, 4 + 10 * 3.5, 4 + 10 * 3.5],
                            dtype=torch.float64)
    torch.testing.assert_close(out[0, :, 2, 3], expected)
    assert (out == out[:, :, :1, :1]).all()  # same box everywhere


@pytest.mark.parametrize("op", OPS)
def test_samples_outside_the_map_follow_roialign(op):
    # 1x3 map with values 1, 2, 3. A point within one pixel outside is clamped onto the map;
    # further out it reads 0.
    feat = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 1, 3).expand(1, 4, 1, 3).clone()
    boxes = torch.zeros(1, 3, 4, dtype=torch.float64)
    boxes[0, 0] = torch.tensor([-0.5, -0.5, -0.5, -0.5])  # clamped to (0, 0): 1
    boxes[0, 1] = torch.tensor([2.5, 0.0, 2.5, 0.0])  # clamped to x = 2: 3
    boxes[0, 2] = torch.tensor([5.0, 0.0, 5.0, 0.0])  # more than a pixel outside: 0
    out = op(feat, boxes, 1)
    expected = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64).expand(4, 3)
    torch.testing.assert_close(out[0, :, 0], expected)


@pytest.mark.parametrize("op", OPS)
def test_gradient_goes_to_the_first_winning_sample(op):
    # A constant plane: all 3 samples tie, the first (the border's start) wins. The top border
    # starts at (x1, y1) = (1.25, 2): bilinear weights 0.75 / 0.25 on pixels (2, 1) and (2, 2).
    feat = torch.ones(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([1.25, 2.0, 3.25, 3.0], dtype=torch.float64).expand(1, 16, 4).clone()
    grad_out = torch.zeros(1, 4, 4, 4, dtype=torch.float64)
    grad_out[0, 0, 0, 0] = 1.0  # top border, location (0, 0)
    (grad,) = torch.autograd.grad(op(feat, boxes, 2), feat, grad_out)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[2, 1], expected[2, 2] = 0.75, 0.25
    torch.testing.assert_close(grad[0, 0], expected)
    assert grad[0, 1:].abs().sum() == 0


def _random_case(n, c, h, w, dtype, seed, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, 4 * c, h, w, generator=g, dtype=dtype)
    xy = (torch.rand(n, h * w, 2, generator=g, dtype=dtype) * 1.4 - 0.2) * torch.tensor([w, h], dtype=dtype)
    wh = torch.rand(n, h * w, 2, generator=g, dtype=dtype) * spread * torch.tensor([w, h], dtype=dtype)
    return feat, torch.cat([xy, xy + wh], dim=2)


CASES = {
    "random": (2, 3, 7, 9, 1.0),
    "one-by-one map": (1, 2, 1, 1, 1.0),
    "zero-size boxes": (1, 2, 5, 4, 0.0),
    "boxes far outside": (1, 1, 4, 4, 6.0),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_matches_reference_forward_and_backward(case, dtype):
    _assert_compiled_matches_reference(*_case(case, dtype))


def _case(name, dtype):
    n, c, h, w, spread = CASES[name]
    feat, boxes = _random_case(n, c, h, w, dtype, seed=len(name), spread=spread)
    if name == "boxes far outside":
        boxes = boxes + torch.tensor([-20.0, 7.0, -20.0, 7.0], dtype=dtype)
    return feat, boxes


def _assert_compiled_matches_reference(feat, boxes):
    """Forward and backward of ``border_align`` equal the reference's; returns the output."""
    feat_ref = feat.clone().requires_grad_()
    feat_ext = feat.clone().requires_grad_()
    ref = border_align_reference(feat_ref, boxes, 10)
    ext = border_align(feat_ext, boxes, 10)
    torch.testing.assert_close(ext, ref)
    grad_out = torch.randn_like(ref)
    ref.backward(grad_out)
    ext.backward(grad_out)
    torch.testing.assert_close(feat_ext.grad, feat_ref.grad)
    return ext.detach()


def test_boxes_on_the_map_border():
    feat, _ = _random_case(1, 2, 6, 5, torch.float64, seed=3)
    boxes = torch.tensor([0.0, 0.0, 4.0, 5.0], dtype=torch.float64).expand(1, 30, 4).clone()  # the whole map
    torch.testing.assert_close(border_align(feat, boxes, 10), border_align_reference(feat, boxes, 10))


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op):
    feat, boxes = _random_case(1, 2, 4, 5, torch.float64, seed=7)
    feat.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: op(f, boxes, 3), (feat,))


def test_bad_shapes_give_a_clear_error():
    with pytest.raises(RuntimeError, match=r"boxes must be \(N, H\*W, 4\)"):
        border_align(torch.zeros(1, 4, 3, 3), torch.zeros(1, 8, 4), 10)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_kernel_compiles(tmp_path):
    """FORCE_CUDA-style: compile the CUDA source for an explicit arch, no GPU needed."""
    import nvidia
    from torch.utils.cpp_extension import include_paths

    cuda_headers = glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "include"))
    includes = include_paths("cuda") + [sysconfig.get_paths()["include"]] + cuda_headers
    cmd = ["nvcc", "-c", os.path.join(CSRC, "BorderAlign", "BorderAlign_cuda.cu"),
           "-o", str(tmp_path / "border_align_cuda.o"), "-std=c++20", "-arch=sm_80",
           "-DWITH_CUDA", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
           *[f"-I{p}" for p in includes]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "border_align_cuda.o").stat().st_size > 0


def test_failed_build_falls_back_to_the_reference_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension
    module = importlib.import_module("borderdet.layers.border_align")

    def broken_build(**kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken_build)
    monkeypatch.setattr(module, "_ext", None)
    monkeypatch.setattr(module, "_tried", False)
    feat, boxes = _random_case(1, 2, 4, 5, torch.float64, seed=11)
    with pytest.warns(UserWarning, match="could not be built.*reference"):
        out = module.border_align(feat, boxes, 10)
    torch.testing.assert_close(out, border_align_reference(feat, boxes, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        module.border_align(feat, boxes, 10)


def test_cuda_inputs_without_the_cuda_kernel_take_the_reference(monkeypatch):
    """A GPU machine without nvcc builds the C++ op only: CUDA tensors must not reach it."""
    module = importlib.import_module("borderdet.layers.border_align")
    monkeypatch.setattr(module, "_ext_has_cuda", False)
    monkeypatch.setattr(module, "_warned_no_cuda", False)
    assert module._compiled_for(torch.device("cpu"))
    with pytest.warns(UserWarning, match="without its CUDA kernel"):
        assert not module._compiled_for(torch.device("cuda"))
    monkeypatch.setattr(module, "_ext_has_cuda", True)
    assert module._compiled_for(torch.device("cuda"))


# --- on a GPU (make gpu-check): the CUDA kernel against the reference ---------------------
def _cuda_kernel():
    module = importlib.import_module("borderdet.layers.border_align")
    if module.load_extension() is None or not module._ext_has_cuda:
        pytest.fail("the CUDA kernel did not build on this GPU machine (is nvcc / CUDA_HOME set?)")


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernel_matches_reference_forward_and_backward(case, dtype):
    _cuda_kernel()
    feat, boxes = _case(case, dtype)
    out = _assert_compiled_matches_reference(feat.cuda(), boxes.cuda())
    torch.testing.assert_close(out.cpu(), border_align(feat, boxes, 10))  # and the C++ op


@pytest.mark.gpu
def test_cuda_kernel_gradcheck():
    _cuda_kernel()
    feat, boxes = _random_case(1, 2, 4, 5, torch.float64, seed=7)
    feat, boxes = feat.cuda().requires_grad_(), boxes.cuda()
    assert torch.autograd.gradcheck(lambda f: border_align(f, boxes, 3), (feat,))
