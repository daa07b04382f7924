"""Paired proposal feature extractor (PPFE): one feature for a proposal pair."""

import torch
from torch import nn

FUSIONS = ("concat", "attention")


def visible_mask(full_boxes, vis_boxes, resolution):
    """The 0/1 mask of the visible box on the full box's RoI grid: (R, 1, S, S), 1 where the
    centre of a grid cell of the full box lies inside the visible box."""
    r = full_boxes.shape[0]
    steps = (torch.arange(resolution, device=full_boxes.device, dtype=full_boxes.dtype) + 0.5) / resolution
    x = full_boxes[:, 0:1] + steps[None] * (full_boxes[:, 2:3] - full_boxes[:, 0:1])  # (R, S)
    y = full_boxes[:, 1:2] + steps[None] * (full_boxes[:, 3:4] - full_boxes[:, 1:2])
    in_x = (x >= vis_boxes[:, 0:1]) & (x <= vis_boxes[:, 2:3])
    in_y = (y >= vis_boxes[:, 1:2]) & (y <= vis_boxes[:, 3:4])
    return (in_y[:, :, None] & in_x[:, None, :]).to(full_boxes.dtype).view(r, 1, resolution, resolution)


class PPFE(nn.Module):
    """Fuses the RoI features of a full proposal and its visible proposal (both pooled to the
    same S x S grid) into one 2C-channel feature:

    - ``concat``: [full feature, visible feature];
    - ``attention``: [full feature x visible mask, visible feature], the mask being
      :func:`visible_mask` (the full-box feature outside the visible part is zeroed).
    """

    def __init__(self, fusion):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"MODEL.PBM.FUSION must be one of {FUSIONS}, not {fusion!r}")
        self.fusion = fusion

    def forward(self, full_features, vis_features, full_boxes, vis_boxes):
        if self.fusion == "attention":
            mask = visible_mask(full_boxes, vis_boxes, full_features.shape[-1])
            full_features = full_features * mask
        return torch.cat([full_features, vis_features], dim=1)
