"""BorderAlign (BorderDet, Sec. 3.2 "Border Alignment Module"): for every location, the
strongest feature along each of the four borders of its box.

``input`` is ``(N, 4C, H, W)``: channel group k (channels ``[kC, (k+1)C)``) is pooled along
border k of each location's box. ``boxes`` is ``(N, H*W, 4)``, XYXY in feature-map coordinates
(pixels of this level), one box per location in row-major order. The output is
``(N, 4C, H, W)``: group k, at location p, is the max over ``pool_size + 1`` bilinear samples
equally spaced along border k of box p:

    k = 0: top edge,    from (x1, y1) in +x      k = 2: bottom edge, from (x2, y2) in -x
    k = 1: left edge,   from (x1, y1) in +y      k = 3: right edge,  from (x2, y2) in -y

(the official group order, not l-t-r-b). Sampling follows RoIAlign's convention: a point more
than one pixel outside the map reads 0, within one pixel it is clamped onto the map. The
gradient goes to the winning sample (the first one on ties); boxes get no gradient.

``border_align_reference`` is the pure-PyTorch version: the fallback when the compiled op is
missing and the oracle of the tests. ``border_align`` uses the compiled C++/CUDA op
(``csrc/``), built with ``torch.utils.cpp_extension`` on first use.
"""

import glob
import hashlib
import os
import warnings

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

__all__ = ["border_align", "border_align_reference", "load_extension"]

_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_ext = None
_ext_has_cuda = False
_tried = False
_warned_no_cuda = False


def _sample(plane, x, y):
    """Bilinear samples of ``plane`` (N, C, H, W) at points ``x, y`` (N, P) -> (N, C, P)."""
    n, c, h, w = plane.shape
    outside = (y < -1) | (y > h) | (x < -1) | (x > w)
    x, y = x.clamp(min=0), y.clamp(min=0)
    x0, y0 = x.floor().long(), y.floor().long()
    at_x_end, at_y_end = x0 >= w - 1, y0 >= h - 1
    x0, y0 = x0.clamp(max=w - 1), y0.clamp(max=h - 1)
    x = torch.where(at_x_end, x0.to(x.dtype), x)
    y = torch.where(at_y_end, y0.to(y.dtype), y)
    x1 = torch.where(at_x_end, x0, x0 + 1)
    y1 = torch.where(at_y_end, y0, y0 + 1)
    lx, ly = x - x0, y - y0
    hx, hy = 1 - lx, 1 - ly
    flat = plane.flatten(2)

    def at(yy, xx):
        return flat.gather(2, (yy * w + xx)[:, None].expand(n, c, -1))

    val = ((hy * hx)[:, None] * at(y0, x0) + (hy * lx)[:, None] * at(y0, x1)
           + (ly * hx)[:, None] * at(y1, x0) + (ly * lx)[:, None] * at(y1, x1))
    return val.masked_fill(outside[:, None], 0)


def border_align_reference(input, boxes, pool_size=10):
    """Pure-PyTorch BorderAlign, differentiable w.r.t. ``input``. See the module docstring."""
    n, c4, h, w = input.shape
    c = c4 // 4
    boxes = boxes.detach().to(input.dtype)
    x1, y1, x2, y2 = boxes.unbind(dim=2)  # (N, HW)
    step_x = ((x2 - x1) / pool_size)[..., None]
    step_y = ((y2 - y1) / pool_size)[..., None]
    i = torch.arange(pool_size + 1, dtype=input.dtype, device=input.device)
    starts = {0: (x1, y1), 1: (x1, y1), 2: (x2, y2), 3: (x2, y2)}
    out = []
    for k in range(4):  # one border at a time keeps the sampled tensor 4x smaller
        sx, sy = (t[..., None] for t in starts[k])
        if k == 0:
            xs, ys = sx + step_x * i, sy.expand(-1, -1, pool_size + 1)
        elif k == 1:
            xs, ys = sx.expand(-1, -1, pool_size + 1), sy + step_y * i
        elif k == 2:
            xs, ys = sx - step_x * i, sy.expand(-1, -1, pool_size + 1)
        else:
            xs, ys = sx.expand(-1, -1, pool_size + 1), sy - step_y * i
        samples = _sample(input[:, k * c:(k + 1) * c], xs.flatten(1), ys.flatten(1))
        out.append(samples.view(n, c, h * w, pool_size + 1).max(dim=3).values)
    return torch.cat(out, dim=1).view(n, c4, h, w)


def load_extension(verbose=False):
    """The compiled op (``torch.utils.cpp_extension.load``; cached after the first build), or
    None with a one-time warning when it cannot be built. ``BORDERDET_NO_EXT=1`` skips it.
    The CUDA kernel is built with it where a GPU and the CUDA toolkit (nvcc) are present."""
    global _ext, _ext_has_cuda, _tried
    if _tried:
        return _ext
    _tried = True
    if os.environ.get("BORDERDET_NO_EXT") == "1":
        return None
    from torch.utils.cpp_extension import CUDA_HOME, load

    sources = [os.path.join(_CSRC, "vision.cpp")] + glob.glob(os.path.join(_CSRC, "*", "*_cpu.cpp"))
    flags = ["-O3"]
    with_cuda = torch.cuda.is_available() and CUDA_HOME is not None
    if with_cuda:
        sources += glob.glob(os.path.join(_CSRC, "*", "*_cuda.cu"))
        flags.append("-DWITH_CUDA")
    # The name carries a hash of every csrc file: cpp_extension re-checks only the listed
    # sources, so an edited header would otherwise reuse a stale build. It carries the folder
    # too: two copies of the package (a checkout and a researcher's copy) keep a build each
    # instead of rebuilding whenever the other one was loaded last.
    digest = hashlib.sha1(os.path.abspath(_CSRC).encode())
    for path in sorted(glob.glob(os.path.join(_CSRC, "**", "*.*"), recursive=True)) + flags:
        digest.update(open(path, "rb").read() if os.path.isfile(path) else path.encode())
    try:
        _ext = load(name=f"borderdet_ext_{digest.hexdigest()[:10]}",
                    sources=sources, extra_cflags=flags, extra_cuda_cflags=flags[1:],
                    verbose=verbose)
        _ext_has_cuda = with_cuda
    except Exception as e:  # noqa: BLE001 - any build failure means: use the reference
        warnings.warn(f"BorderAlign: the compiled op could not be built ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); using the slower pure-PyTorch "
                      "reference", stacklevel=2)
    return _ext


class _BorderAlign(Function):
    @staticmethod
    def forward(ctx, input, boxes, pool_size):
        output, argmax = _ext.border_align_forward(input, boxes, pool_size)
        ctx.save_for_backward(boxes, argmax)
        ctx.pool_size = pool_size
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        boxes, argmax = ctx.saved_tensors
        grad = _ext.border_align_backward(grad_output.contiguous(), boxes, argmax, ctx.pool_size)
        return grad, None, None


def _compiled_for(device):
    """Whether the compiled op runs on ``device``: a GPU without the CUDA toolkit builds the
    C++ op alone, and CUDA tensors then take the reference (with one warning)."""
    global _warned_no_cuda
    if load_extension() is None:
        return False
    if device.type == "cuda" and not _ext_has_cuda:
        if not _warned_no_cuda:
            _warned_no_cuda = True
            warnings.warn("BorderAlign: the compiled op was built without its CUDA kernel (no nvcc / "
                          "CUDA_HOME); CUDA inputs use the slower pure-PyTorch reference", stacklevel=3)
        return False
    return True


def border_align(input, boxes, pool_size=10):
    """BorderAlign with the compiled op where it is built for the input's device, else the
    reference (same values)."""
    if not _compiled_for(input.device):
        return border_align_reference(input, boxes, pool_size)
    return _BorderAlign.apply(input.contiguous(), boxes.detach().to(input.dtype).contiguous(), pool_size)
