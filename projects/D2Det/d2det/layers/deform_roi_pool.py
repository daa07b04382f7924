"""Deformable RoI pooling (Dai et al., "Deformable Convolutional Networks", 2017), as D2Det's
discriminative RoI pooling uses it, in pure PyTorch.

Every output bin of a RoI averages ``sampling_ratio**2`` bilinear samples taken at the centres
of its sub-bins, exactly as ``torchvision.ops.roi_align(..., aligned=True)`` does, after the
whole bin has been shifted by ``(dx, dy) * trans_std * (RoI width, RoI height)``, where
``(dx, dy)`` is the bin's learned offset. With zero offsets it *is* ``roi_align``.

Samples are read with ``F.grid_sample``, so the output is differentiable with respect to both
the features and the offsets, on CPU and GPU, without a compiled kernel. It is fast enough for
training (the project README gives the measurement), so no C++/CUDA kernel is written.
"""

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair


def deform_roi_pool(input, rois, offset=None, output_size=7, spatial_scale=1.0, sampling_ratio=2,
                    trans_std=0.1):
    """
    Args:
        input (Tensor): (N, C, H, W) feature map.
        rois (Tensor): (R, 5) boxes ``(batch index, x1, y1, x2, y2)`` in image coordinates.
        offset (Tensor or None): (R, 2, out_h, out_w) normalised bin offsets ``(dx, dy)``;
            None means no offset (plain RoIAlign).
        output_size (int or tuple): (out_h, out_w).
        spatial_scale (float): feature-map size / image size (1 / stride).
        sampling_ratio (int): samples per bin along each axis (``sample_per_part``).
        trans_std (float): scale of the offsets, as a fraction of the RoI's size.

    Returns:
        Tensor: (R, C, out_h, out_w).
    """
    out_h, out_w = _pair(output_size)
    n, c, height, width = input.shape
    r = rois.shape[0]
    if r == 0:
        return input.new_zeros(0, c, out_h, out_w)
    s = int(sampling_ratio)
    if s < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")

    # RoIAlign (aligned=True) geometry: pixel i's centre is at i in feature coordinates.
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - 0.5).unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    frac_y = (torch.arange(out_h * s, device=input.device, dtype=input.dtype) + 0.5) / (out_h * s)
    frac_x = (torch.arange(out_w * s, device=input.device, dtype=input.dtype) + 0.5) / (out_w * s)
    ys = (y1[:, None] + roi_h[:, None] * frac_y).view(r, out_h, 1, s, 1)
    xs = (x1[:, None] + roi_w[:, None] * frac_x).view(r, 1, out_w, 1, s)
    if offset is not None:
        if offset.shape != (r, 2, out_h, out_w):
            raise ValueError(f"offset must have shape {(r, 2, out_h, out_w)}, got {tuple(offset.shape)}")
        xs = xs + (offset[:, 0] * trans_std * roi_w[:, None, None])[..., None, None]
        ys = ys + (offset[:, 1] * trans_std * roi_h[:, None, None])[..., None, None]
    ys, xs = torch.broadcast_tensors(ys, xs)  # (R, out_h, out_w, s, s)

    # RoIAlign's border rule: a sample more than one pixel outside the map reads 0; one within
    # reads the clamped position.
    inside = (ys >= -1) & (ys <= height) & (xs >= -1) & (xs <= width)
    gx = xs.clamp(0, width - 1) / max(width - 1, 1) * 2 - 1
    gy = ys.clamp(0, height - 1) / max(height - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).view(r, out_h * out_w, s * s, 2)

    inside = inside.view(r, out_h * out_w, s * s).to(input.dtype)
    batch = rois[:, 0].long()
    output = input.new_zeros(r, c, out_h * out_w)
    for b in range(n):
        (idx,) = torch.nonzero(batch == b, as_tuple=True)
        if idx.numel() == 0:
            continue
        g = grid[idx].reshape(1, idx.numel() * out_h * out_w, s * s, 2)
        v = F.grid_sample(input[b:b + 1], g, mode="bilinear", padding_mode="border", align_corners=True)
        v = (v.view(c, idx.numel(), out_h * out_w, s * s) * inside[idx]).mean(dim=-1)
        output = output.index_put((idx,), v.transpose(0, 1))
    return output.view(r, c, out_h, out_w)
