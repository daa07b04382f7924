"""Center weighting (Sec. 3.2 of the paper): a learnable, category-specific Gaussian prior
over where inside a box its best locations lie.

For a location at ``(x, y)`` on a level of stride ``s`` and a GT box of class ``c`` with centre
``(cx, cy)``, with ``d = ((x - cx) / s, (y - cy) / s)``:

    G(d) = prod over x and y of exp(-(d - mu_c)^2 / (2 sigma_c^2))

``mu`` (K, 2) starts at 0 and ``sigma`` (K, 2) at 1, per class; both are trained by the
positive and the normalisation losses (official ``normal_distribution`` and ``self.mu``,
``self.sigma``).
"""

import torch
from torch import nn

__all__ = ["CenterPrior"]


class CenterPrior(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(num_classes, 2))
        self.sigma = nn.Parameter(torch.ones(num_classes, 2))

    def forward(self, locations, strides, gt_boxes, gt_classes):
        """The prior of P (location, GT) pairs.

        Args:
            locations: ``(P, 2)`` x, y in pixels.
            strides: ``(P,)`` the stride of each location's level.
            gt_boxes: ``(P, 4)`` XYXY, the pair's GT box.
            gt_classes: ``(P,)`` its class.

        Returns:
            ``(P,)`` G in (0, 1]; 1 where ``d = mu``.
        """
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        d = (locations - centers) / strides[:, None]
        mu, sigma = self.mu[gt_classes], self.sigma[gt_classes]
        return torch.exp(-((d - mu) ** 2) / (2 * sigma**2)).prod(dim=1)
