"""The straightforward implementation of the paper's Algorithm 1, one positive at a time (the
official ``AP_loss`` loop): the oracle the vectorised ``ap_loss_and_grad`` must equal."""

import torch


def ap_loss_loop(logits, labels, delta=1.0, interpolate=True):
    """Returns (1 - AP, update) exactly as Algorithm 1 with the official code's choices:
    positives visited from the lowest to the highest score, interpolated precision, negatives
    below min(positive) - delta skipped, everything divided by the number of positives."""
    grad = torch.zeros_like(logits)
    pos = labels == 1
    if not pos.any():
        return logits.new_zeros(()), grad
    fg = logits[pos]
    neg = (labels == 0) & (logits >= fg.min() - delta)
    bg = logits[neg]
    bg_grad = torch.zeros_like(bg)
    prec = torch.zeros_like(fg)
    max_prec = 0.0
    for i in torch.argsort(fg).tolist():
        h_pos = torch.clamp((fg - fg[i]) / (2 * delta) + 0.5, 0, 1)  # H(x_ij), j positive
        h_neg = torch.clamp((bg - fg[i]) / (2 * delta) + 0.5, 0, 1)  # H(x_ij), j negative
        rank_pos = h_pos.sum() + 0.5  # 1 + sum over j != i (H(0) = 0.5 for j = i)
        rank = rank_pos + h_neg.sum()
        current = rank_pos / rank
        terms = h_neg / rank  # L_ij
        if not interpolate or max_prec <= current:
            max_prec = current if interpolate else max_prec
            prec[i] = current
        else:
            terms = terms * (1 - max_prec) / (1 - current)
            prec[i] = max_prec
        bg_grad += terms
    grad[neg] = bg_grad
    grad[pos] = -(1 - prec)
    num_pos = int(pos.sum())
    return 1 - prec.sum() / num_pos, grad / num_pos
