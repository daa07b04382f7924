"""The AP-loss and its error-driven update (Sec. 3 and Algorithm 1 of the paper; official
``lib/model/aploss.py``), vectorised.

Scores x (logits; no sigmoid) of all anchors x classes are ranked jointly. With the step
``H(x) = clamp(x / (2 delta) + 0.5, 0, 1)`` and ``x_ij = s_j - s_i``, a positive i has

    rank+(i) = 1 + sum over positives j != i of H(x_ij)   (= 0.5 + sum over all positives j)
    rank-(i) = sum over negatives j of H(x_ij)
    precision(i) = rank+(i) / (rank+(i) + rank-(i))

The loss is 1 - AP, AP the mean precision over the positives; with interpolation (the default),
each positive's precision is the running maximum over the positives of lower or equal score.
The primary terms ``L_ij = H(x_ij) / rank(i)`` give the update on the scores, divided by the
number of positives P:

    negative j: g_j = sum_i c_i L_ij / P      positive i: g_i = -(1 - precision(i)) / P

``c_i`` = 1, or ``(1 - interpolated precision) / (1 - precision)`` where interpolation raised
positive i's precision, so that its terms add up to 1 - interpolated precision.

Ranking every positive against every negative is a P x N problem (the official code loops over
the positives in Python). Here H is piecewise linear, so after sorting the P positives, two
binary searches per negative (where its step is 1, linear, 0 against the sorted positives),
difference arrays and prefix sums give every rank and every update in O((P + N) log P) time and
O(P + N) memory, with no P x N intermediate and no sort of the N negatives. Sums are in float64
so that prefix sums over millions of entries keep their precision.
"""

import torch
import torch.distributed as dist

__all__ = ["ap_loss", "ap_loss_and_grad"]


def _prefix(x):
    """``[0, x0, x0 + x1, ...]``."""
    return torch.nn.functional.pad(x.cumsum(0), (1, 0))


@torch.no_grad()
def ap_loss_and_grad(logits, labels, delta=1.0, interpolate=True, chunk_size=1 << 22):
    """1 - AP of ``logits`` and the paper's update on them.

    Args:
        logits: ``(M,)`` scores of every (anchor, class) entry.
        labels: ``(M,)`` 1 positive, 0 negative, -1 ignored.
        delta: half-width of the step H.
        interpolate: interpolated AP (running max of precision), as the official code.
        chunk_size: negatives handled at a time; bounds the float64 temporaries.

    Returns:
        ``loss`` (0-dim, ``logits``' dtype: 1 - AP; 0 without positives) and ``grad`` ``(M,)``
        (zero without positives, for ignored entries, and for negatives that no positive's
        step reaches).
    """
    grad = torch.zeros_like(logits)
    pos = labels == 1
    num_pos = int(pos.sum())
    if num_pos == 0:
        return logits.new_zeros(()), grad
    s, order = logits[pos].double().sort()  # positives, ascending
    # Negatives below min(positive) - delta have H = 0 against every positive: skipped.
    negatives = ((labels == 0) & (logits >= s[0] - delta)).nonzero().squeeze(1).split(chunk_size)
    two_delta = 2 * delta

    def steps(v):
        """Positives i (sorted) in [0, lo) lie at or below v - delta: H(v - s_i) = 1; those in
        [lo, hi) on the ramp, H = (v - s_i) / (2 delta) + 0.5; the rest have H = 0."""
        return torch.searchsorted(s, v - delta, right=True), torch.searchsorted(s, v + delta)

    # rank+(i) = 0.5 + sum over positives j of H(s_j - s_i) (j = i gives H(0) = 0.5).
    lo, hi = steps(s)
    ps = _prefix(s)
    rank_pos = 0.5 + (num_pos - hi) + (ps[hi] - ps[lo] - (hi - lo) * s) / two_delta + 0.5 * (hi - lo)

    # rank-(i) = sum over negatives v of H(v - s_i): each negative adds 1 over i in [0, lo) and
    # (v / (2 delta) + 0.5) - s_i / (2 delta) over [lo, hi). Difference arrays over i.
    full, ramp, count = (torch.zeros(num_pos + 1, dtype=torch.float64, device=s.device) for _ in range(3))
    searched = []  # each chunk's (lo, hi), kept for the update (int32: half the memory)
    for idx in negatives:
        v = logits[idx].double()
        lo, hi = steps(v)
        searched.append((lo.int(), hi.int()))
        full.index_add_(0, lo, torch.ones_like(v))
        c = v / two_delta + 0.5
        ramp.index_add_(0, lo, c).index_add_(0, hi, -c)
        count.index_add_(0, lo, torch.ones_like(v)).index_add_(0, hi, -torch.ones_like(v))
    full = full.flip(0).cumsum(0).flip(0)[1:]  # negatives with lo > i
    rank_neg = full + ramp.cumsum(0)[:-1] - s / two_delta * count.cumsum(0)[:-1]

    rank = rank_pos + rank_neg
    precision = rank_pos / rank
    if interpolate:
        interpolated = precision.cummax(0).values
        scale = torch.where(interpolated > precision, (1 - interpolated) / (1 - precision), 1.0)
    else:
        interpolated, scale = precision, torch.ones_like(precision)

    # Negative v: sum over positives i of scale_i H(v - s_i) / rank(i), by prefix sums over i.
    w = scale / rank
    pw, pws = _prefix(w), _prefix(w * s)
    for idx, (lo, hi) in zip(negatives, searched):
        v = logits[idx].double()
        g = pw[lo] + (pw[hi] - pw[lo]) * (v / two_delta + 0.5) - (pws[hi] - pws[lo]) / two_delta
        grad[idx] = (g / num_pos).to(grad.dtype)
    g_pos = torch.empty_like(s)
    g_pos[order] = -(1 - interpolated)
    grad[pos] = (g_pos / num_pos).to(grad.dtype)
    return (1 - interpolated.mean()).to(logits.dtype), grad


class _APLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, delta, interpolate, world_size, chunk_size):
        loss, grad = _ranked_over_processes(logits, labels, delta, interpolate, world_size, chunk_size)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None, None


def _ranked_over_processes(logits, labels, delta, interpolate, world_size, chunk_size):
    """``ap_loss_and_grad`` over the union of every process's entries (world_size > 1): only
    positives and the negatives above the global min(positive) - delta are exchanged. Each
    process gets the loss and its own entries' update, times world_size because
    DistributedDataParallel averages gradients over processes."""
    if world_size == 1:
        return ap_loss_and_grad(logits, labels, delta, interpolate, chunk_size)
    pos = labels == 1
    low = logits[pos].min() if pos.any() else logits.new_tensor(float("inf"))
    low = low.detach().clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    keep = pos | ((labels == 0) & (logits >= low - delta))
    mine = torch.stack([logits[keep].float(), labels[keep].float()])
    sizes = [torch.zeros((), dtype=torch.long, device=logits.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor(mine.shape[1], device=logits.device))
    longest = int(max(sizes))
    padded = torch.nn.functional.pad(mine, (0, longest - mine.shape[1]))
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    every = torch.cat([g[:, : int(n)] for g, n in zip(gathered, sizes)], dim=1)
    loss, grad_all = ap_loss_and_grad(every[0], every[1].long(), delta, interpolate, chunk_size)
    start = sum(int(n) for n in sizes[: dist.get_rank()])
    grad = torch.zeros_like(logits)
    grad[keep] = grad_all[start : start + mine.shape[1]].to(grad.dtype) * world_size
    return loss.to(logits.dtype), grad


def ap_loss(logits, labels, delta=1.0, interpolate=True, scope="batch", chunk_size=1 << 22):
    """The AP-loss of ``logits`` (any shape) with ``labels`` (same shape: 1 / 0 / -1), with
    the paper's update as its gradient.

    Args:
        scope: "batch": rank the entries of this process (the paper's minibatch, and the
            official code's per-GPU ranking); "global": rank the entries of all processes
            together, as one process holding the whole batch would (the gradient is scaled for
            DistributedDataParallel's averaging).
        chunk_size: see ``ap_loss_and_grad``.
    """
    assert scope in ("batch", "global"), f"unknown AP-loss scope {scope!r}"
    world = 1
    if scope == "global" and dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    return _APLoss.apply(logits.reshape(-1), labels.reshape(-1), delta, interpolate, world, chunk_size)
