"""The meta-loss between the less reliable and the reliable class centroids (paper Sec. 3.3):
L2, or the optimal-transport (Sinkhorn) divergence.

Official: lib/model.py ``meta_loss`` (``F.mse_loss``; ``self.ot_loss``) and lib/OT_module.py
``OptTrans`` (one-dimensional "conv" form, cosine cost) of hli2020/feature_intertwiner.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .intertwiner import xavier_init

EPS = 1e-20  # OT_module.py


def l2_meta_loss(less_reliable, reliable):
    """Mean squared difference of matching class centroids (both (C, D), sigmoid outputs)."""
    return F.mse_loss(less_reliable, reliable)


def cosine_cost(x, y):
    """C_ij = 1 - cos(x_i, y_j) for x (N, D), y (M, D)."""
    return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()


def sinkhorn(cost, epsilon=1.0, iters=5):
    """Entropic transport plan between two uniform distributions over the rows and columns of
    ``cost`` (N, M): ``iters`` Sinkhorn iterations on K = exp(-cost / epsilon), starting from
    b = 1/M and ending on the column update (so the column marginals are exact and the row
    marginals converge with ``iters``). Returns P = diag(a) K diag(b)."""
    n, m = cost.shape
    kernel = torch.exp(-cost / epsilon)
    r = cost.new_full((n, 1), 1.0 / n)
    c = cost.new_full((m, 1), 1.0 / m)
    b = c
    for _ in range(iters):
        a = r / (kernel @ b + EPS)
        b = c / (kernel.t() @ a + EPS)
    return a * kernel * b.t()


def transport_cost(x, y, epsilon=1.0, iters=5):
    """W(x, y) = <P, C> with the plan P detached (``no_bp_P_L``): gradients reach x and y
    through the cost only."""
    cost = cosine_cost(x, y)
    plan = sinkhorn(cost.detach(), epsilon, iters)
    return (plan * cost).sum()


def sinkhorn_divergence(x, y, epsilon=1.0, iters=5):
    """2 W(x, y) - W(x, x) - W(y, y): 0 when the two sets are the same set (in any order);
    the self terms remove the entropic bias of W."""
    w = lambda a, b: transport_cost(a, b, epsilon, iters)  # noqa: E731
    return 2 * w(x, y) - w(x, x) - w(y, y)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


OT_CRITIC_MODES = ("adversarial", "fixed", "joint")


class OTMetaLoss(nn.Module):
    """OT meta-loss between the less reliable centroids x (C, D) and the buffer's reliable
    centroids y (C, D), each centroid one sample of its set: a generator G (Conv1d k3 + ReLU on
    each centroid as a length-1 sequence) maps x, a critic (Conv1d k3 -> ``critic_dim`` + ReLU)
    embeds G(x) and y, and the loss is the Sinkhorn divergence of the embeddings.

    ``critic_mode`` says how the critic learns. The generator, and through it the detector,
    always minimises the divergence. "adversarial" (ours, as in Sinkhorn/OT GANs): the critic
    maximises it, through a gradient reversal on its weights only (the gradient reaching its
    inputs is not reversed). "fixed": the critic keeps its initial weights. "joint" (the
    official optimiser setup): the critic minimises it too, which has a trivial solution, an
    embedding that maps everything to one direction (or to zero), where the divergence and the
    detector's gradient are both 0."""

    def __init__(self, dim, critic_dim=256, epsilon=1.0, iters=5, critic_mode="adversarial"):
        super().__init__()
        if critic_mode not in OT_CRITIC_MODES:
            raise ValueError(
                f"MODEL.INTERNET.OT_CRITIC must be one of {OT_CRITIC_MODES}, got {critic_mode!r}")
        self.generator = nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1), nn.ReLU())
        self.critic = nn.Sequential(nn.Conv1d(dim, critic_dim, 3, padding=1), nn.ReLU())
        self.epsilon, self.iters = epsilon, iters
        self.critic_mode = critic_mode
        xavier_init(self)
        if critic_mode == "fixed":
            self.critic.requires_grad_(False)

    def embed(self, x):
        conv = self.critic[0]
        weight, bias = conv.weight, conv.bias
        if self.critic_mode == "adversarial":
            weight, bias = _ReverseGradient.apply(weight), _ReverseGradient.apply(bias)
        return F.relu(F.conv1d(x.unsqueeze(-1), weight, bias, padding=1)).squeeze(-1)

    def forward(self, x, y):
        gx = self.generator(x.unsqueeze(-1)).squeeze(-1)
        return sinkhorn_divergence(self.embed(gx), self.embed(y), self.epsilon, self.iters)
