"""On a CUDA machine (``make gpu-check``): the ops the projects call through detectron2 run on
CUDA with ``make install``'s detectron2 (no compiled ``_C``) and agree with their CPU results."""

import pytest
import torch
from detectron2.layers import ROIAlign, batched_nms
from torchvision.ops import deform_conv2d

pytestmark = pytest.mark.gpu


def _boxes(n, size, generator):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_batched_nms_on_cuda_keeps_what_it_keeps_on_cpu():
    g = torch.Generator().manual_seed(0)
    boxes, scores = _boxes(500, 100, g), torch.rand(500, generator=g)
    classes = torch.randint(0, 5, (500,), generator=g)
    cpu = batched_nms(boxes, scores, classes, 0.5)
    cuda = batched_nms(boxes.cuda(), scores.cuda(), classes.cuda(), 0.5)
    assert cuda.is_cuda and torch.equal(cuda.cpu(), cpu)


def test_roi_align_on_cuda_matches_cpu_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 32, 32, generator=g, dtype=torch.float64)
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=g).double(),
                      _boxes(20, 30, g).double()], dim=1)
    op = ROIAlign((7, 7), 0.5, 2, aligned=True)
    out = {}
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_()
        y = op(xd, rois.to(device))
        (y * torch.arange(y.numel(), device=device).view_as(y)).sum().backward()
        out[device] = (y.detach().cpu(), xd.grad.cpu())
    assert torch.allclose(out["cuda"][0], out["cpu"][0], atol=1e-10)
    assert torch.allclose(out["cuda"][1], out["cpu"][1], atol=1e-10)


def test_deform_conv2d_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 18, 12, 12, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    cpu = deform_conv2d(x, offset, weight, padding=1)
    cuda = deform_conv2d(x.cuda(), offset.cuda(), weight.cuda(), padding=1)
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-10)
