"""The poly-scale convolution (paper Sec. 3, Fig. 2) in the official parametrisation
(``PSConv2d`` and ``PSGConv2d`` in mmdet/models/utils/psconv.py of d-li14/PSConv), so that its
checkpoints load, and an equivalent of the same FLOPs as a dense 3x3 conv.

The input and output channels of each (cardinal) group are split into ``parts`` blocks. The
kernel that maps input block i to output block o has dilation

    d  if o = i,       2d  if o = i + parts / 2 (mod parts),       1  otherwise,

so one layer sees three scales. The official layer is three convs summed: ``gwconv`` (grouped,
dilation d: the diagonal blocks), ``gwconv_shift`` (grouped, dilation 2d, on the input with its
two halves swapped: the blocks half a cycle away) and ``conv`` (dense, dilation 1) whose blocks
that the other two cover are masked: kept at zero, no gradient.
"""

import torch
from torch import nn
from torch.nn import functional as F

MASK_MODES = ("official", "intended")


def ps_mask(out_channels, in_channels, groups=1, parts=4, mode="official"):
    """(out_channels, in_channels / groups, 1, 1) bool: True where the dense conv's weight is
    masked. ``mode "intended"``: the diagonal and half-shifted blocks of every group.
    ``"official"``: as the official code builds it, which for ``groups > 1`` indexes the output
    block of part i in group j as ``i + j * groups`` instead of ``i + j * parts``: only the
    groups whose index is a multiple of ``groups / parts`` get their blocks masked (those
    indices that fall inside the tensor), the others keep all their blocks trainable. With
    ``groups == 1`` both modes are the same."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    if parts % 2 or out_channels % (groups * parts) or in_channels % (groups * parts):
        raise ValueError(f"channels ({in_channels} -> {out_channels}) must split into {groups} groups x "
                         f"{parts} parts, parts even")
    mask = torch.zeros(out_channels, in_channels // groups, 1, 1, dtype=torch.bool)
    o, c = out_channels // (groups * parts), in_channels // (groups * parts)
    stride = groups if mode == "official" else parts
    for i in range(parts):
        for j in range(groups):
            for out_block in (i + j * stride, (i + parts // 2) % parts + j * stride):
                mask[out_block * o:(out_block + 1) * o, i * c:(i + 1) * c] = True
    return mask


def swap_halves(x, groups=1):
    """Swaps the two halves of the channels of each of ``groups`` groups."""
    n, ch, h, w = x.shape
    x = x.view(n, groups, 2, ch // (2 * groups), h, w)
    return x.flip(2).reshape(n, ch, h, w)


class PSConv2d(nn.Module):
    """Poly-scale convolution, ``groups`` > 1 being the official ``PSGConv2d``; parameters
    ``gwconv``, ``gwconv_shift``, ``conv`` as the official, and an optional ``norm`` after the
    sum (detectron2's ``Conv2d`` convention).

    The mask is a registered (non-persistent) buffer, rebuilt from the architecture: it moves
    with ``.to()`` and is not a checkpoint key, so the official checkpoints load unchanged.
    The masked weights start at zero and get no gradient (the official gradient hook), so they
    stay zero under any optimiser or weight decay; loading a state dict zeroes them again
    unless ``zero_masked_on_load`` is False (see the README: whether the official ImageNet
    checkpoints hold zeros there could not be checked).

    ``impl "fast"`` computes the dense conv's unmasked blocks as one grouped conv over
    rearranged channels, so the three convs together cost one dense 3x3 conv; it needs a
    complete mask (``groups == 1`` or ``mask "intended"``)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1,
                 groups=1, parts=4, bias=False, norm=None, mask="official", impl="three_conv",
                 zero_masked_on_load=True):
        super().__init__()
        self.gwconv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation, dilation,
                                groups=groups * parts, bias=bias)
        self.gwconv_shift = nn.Conv2d(in_channels, out_channels, kernel_size, stride, 2 * dilation,
                                      2 * dilation, groups=groups * parts, bias=bias)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                              bias=bias)
        self.norm = norm
        self.groups, self.parts = groups, parts
        mask = ps_mask(out_channels, in_channels, groups, parts, mask)
        self.register_buffer("mask", mask, persistent=False)
        self.zero_masked_on_load = zero_masked_on_load
        self.register_load_state_dict_post_hook(self._after_load)
        if impl not in ("three_conv", "fast"):
            raise ValueError(f"impl must be 'three_conv' or 'fast', got {impl!r}")
        complete = ps_mask(out_channels, in_channels, groups, parts, "intended")
        if impl == "fast" and not torch.equal(self.mask, complete):
            raise ValueError("the fast PSConv needs every group's blocks masked: use mask 'intended' "
                             "(the official PSGConv mask leaves most groups unmasked)")
        self.impl = impl
        self._init_fast_indices(in_channels, out_channels, complete)
        self.zero_masked_()

    @torch.no_grad()
    def zero_masked_(self):
        self.conv.weight.masked_fill_(self.mask, 0)

    @staticmethod
    def _after_load(module, incompatible_keys):
        # runs once the three convs have loaded their weights
        if module.zero_masked_on_load:
            module.zero_masked_()

    def dense_weight(self):
        """The dense conv's weight, its masked entries as stored but without gradient."""
        w = self.conv.weight
        return torch.where(self.mask, w.detach(), w)

    def forward(self, x):
        if self.impl == "fast":
            y = self.gwconv(x) + self._rest(x) + self.gwconv_shift(swap_halves(x, self.groups))
        else:
            dense = F.conv2d(x, self.dense_weight(), self.conv.bias, self.conv.stride, self.conv.padding,
                             self.conv.dilation, self.groups)
            y = self.gwconv(x) + dense + self.gwconv_shift(swap_halves(x, self.groups))
        return self.norm(y) if self.norm is not None else y

    # ------------------------------------------------------------------ the fast form
    def _init_fast_indices(self, in_channels, out_channels, complete):
        """Within a group, outputs o and o + parts/2 take dilation 1 from the same input
        blocks (all but o and o + parts/2): one conv group per such pair. ``rest_in``: the
        input channels in that order; ``rest_rows`` / ``rest_cols``: where each entry of its
        weight lies in the dense weight; ``rest_inverse``: the output channels back in order."""
        g, p = self.groups, self.parts
        o, c = out_channels // (g * p), in_channels // (g * p)
        rows, ins, cols = [], [], []
        for j in range(g):
            for k in range(p // 2):
                out_blocks = (k, k + p // 2)
                in_blocks = [i for i in range(p) if i not in out_blocks]
                r = [j * p * o + b * o + t for b in out_blocks for t in range(o)]
                cc = [b * c + t for b in in_blocks for t in range(c)]
                rows += r
                ins += [j * p * c + x for x in cc]
                cols += [cc] * len(r)
        rows = torch.tensor(rows)
        self.register_buffer("rest_in", torch.tensor(ins), persistent=False)
        self.register_buffer("rest_rows", rows, persistent=False)
        self.register_buffer("rest_cols", torch.tensor(cols), persistent=False)
        self.register_buffer("rest_inverse", torch.argsort(rows), persistent=False)
        self.rest_groups = g * p // 2
        # every entry the fast form leaves out is masked
        covered = torch.zeros_like(complete)
        covered[self.rest_rows[:, None], self.rest_cols] = True
        assert torch.equal(covered, ~complete)

    def _rest(self, x):
        w = self.conv.weight[self.rest_rows[:, None], self.rest_cols]
        y = F.conv2d(x.index_select(1, self.rest_in), w, None, self.conv.stride, self.conv.padding,
                     self.conv.dilation, self.rest_groups)
        y = y.index_select(1, self.rest_inverse)
        return y if self.conv.bias is None else y + self.conv.bias[:, None, None]
