"""The feature intertwiner (paper Sec. 3, Fig. 2): the make-up layer, the critic, the two sets
of RoIs per level, their class centroids and the buffer of the reliable ones.

Official: lib/sub_module.py (``Dev``: ``upsample``, ``feat_extract``, ``_find_big_box2``,
``_assign_feat2cls``) and lib/model.py (``meta_loss``: the buffer, ``_merge_feat_vec``) of
hli2020/feature_intertwiner.
"""

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn


def xavier_init(module):
    """The official ``_initialize_weights``: Xavier-uniform convolutions, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _conv_norm_relu(in_channels, out_channels, kernel_size, norm, stride=1, padding=0):
    return Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                  norm=get_norm(norm, out_channels), activation=F.relu)


class MakeUpLayer(nn.Sequential):
    """conv 3x3 + norm + ReLU, same size in and out (upsample factor 1). One module serves every
    level; the box head pools all RoIs from its output, and the less reliable set is pooled
    from it too, so it learns to make up what small RoIs lose."""

    def __init__(self, channels, norm="BN"):
        super().__init__(_conv_norm_relu(channels, channels, 3, norm, padding=1))
        xavier_init(self)


class Critic(nn.Sequential):
    """Maps a ``pool x pool`` RoI feature to one vector: conv 3x3 stride 2 -> channels[0],
    conv (pool/2) x (pool/2) -> channels[1] (1 x 1 map), conv 1x1; each + BatchNorm + ReLU;
    then a sigmoid for the L2 meta-loss (``last_op``) and nothing for OT.

    Its BatchNorm layers stay in eval mode in training too, as in the official code (whose
    ``MaskRCNN.forward`` always calls ``self.eval()``): with the initial statistics (mean 0,
    variance 1) each is a learned per-channel affine layer. Train-mode BatchNorm, called once
    per set, would standardise each set by its own statistics and so remove exactly the
    per-channel scale and shift between the two sets that the meta-loss measures. Eval mode
    also takes a set of one RoI and issues no collective on several processes."""

    def __init__(self, in_channels, pool_size=14, channels=(512, 1024), sigmoid=False):
        if pool_size % 2:
            raise ValueError(f"MODEL.INTERNET.POOLER_RESOLUTION must be even, got {pool_size}")
        c1, c2 = channels
        layers = [
            _conv_norm_relu(in_channels, c1, 3, "BN", stride=2, padding=1),
            _conv_norm_relu(c1, c2, pool_size // 2, "BN"),
            _conv_norm_relu(c2, c2, 1, "BN"),
            nn.Flatten(1),
        ]
        super().__init__(*layers, *([nn.Sigmoid()] if sigmoid else []))
        xavier_init(self)
        self.out_channels = c2

    def train(self, mode=True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def intertwiner_sets(roi_levels, level):
    """The two sets of level ``level`` (official ``_find_big_box2``): the less reliable set, the
    RoIs assigned to ``level``, and the reliable set, those assigned to a higher level (larger
    objects, whose features lost less in RoI pooling). Boolean masks over the RoIs."""
    return roi_levels == level, roi_levels > level


def class_sums(features, labels, num_classes):
    """Per-class sum (num_classes, D) and count (num_classes,) of ``features`` (N, D); labels
    outside [0, num_classes) (detectron2's background, ``num_classes``) are left out."""
    keep = (labels >= 0) & (labels < num_classes)
    features, labels = features[keep], labels[keep]
    sums = features.new_zeros(num_classes, features.shape[1]).index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums, counts


class ClassBuffer(nn.Module):
    """The per-class mean of every reliable feature seen so far (official ``buffer`` with
    ``BUFFER_SIZE 1``, "use all history"): a count-weighted running mean, detached. It is a
    module buffer, so checkpoints (and ``--resume``) keep the history; it has no parameters
    and never receives gradients."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        # float64: a float32 count stops being exact past 2^24 features
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, sums, counts):
        """Adds a step's reliable features, given as per-class ``sums`` and ``counts``."""
        total = self.count + counts.to(self.count.dtype)
        seen = total > 0
        merged = self.mean.double() * self.count[:, None] + sums.detach().double()
        self.mean[seen] = (merged[seen] / total[seen, None]).to(self.mean.dtype)
        self.count.copy_(total)
