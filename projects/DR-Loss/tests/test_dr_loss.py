"""The DR loss against a direct evaluation of its formula, its gradient, and its targets."""

import math

import pytest
import torch
from dr_loss import dr_loss, dr_targets

LAMBDA_NEG = 0.1 / math.log(3.5)


def reference(pos, neg, margin=0.5, lam_pos=1.0, lam_neg=LAMBDA_NEG, L=6.0, tau=4.0):
    """Eq. 9-12 entry by entry, in Python floats: softmax-weighted expectations of the
    positive and negative probabilities, then the smoothed hinge."""
    def expectation(ps, sign, lam):
        weights = [math.exp(sign * p / lam) for p in ps]
        return sum(w * p for w, p in zip(weights, ps)) / sum(weights) if ps else 0.0

    p_neg = expectation(neg, +1, lam_neg)
    p_pos = expectation(pos, -1, lam_pos) if pos else 1.0
    return tau / L * math.log(1 + math.exp(L * (p_neg - p_pos + margin)))


def _logit(p):
    return math.log(p / (1 - p))


CASES = {
    "mixed": ([0.9, 0.6, 0.3], [0.05, 0.2, 0.7, 0.01, 0.4]),
    "positives only": ([0.8, 0.55], []),
    "no positives": ([], [0.1, 0.3, 0.02]),
    "ties": ([0.4, 0.4, 0.4], [0.4, 0.4]),
}


@pytest.mark.parametrize("name", CASES)
def test_loss_equals_the_formula_entry_by_entry(name):
    pos, neg = CASES[name]
    logits = torch.tensor([_logit(p) for p in pos + neg], dtype=torch.float64)
    targets = torch.tensor([1] * len(pos) + [0] * len(neg))
    torch.testing.assert_close(dr_loss(logits, targets).item(), reference(pos, neg), rtol=1e-12, atol=0)


def test_ties_weigh_every_entry_alike_and_ignored_entries_do_not_count():
    # All 0.4: both expectations are 0.4, loss = 4 / 6 log(1 + e^(6 x 0.5))
    logits = torch.full((2, 3), _logit(0.4), dtype=torch.float64)
    targets = torch.tensor([[1, 0, 0], [-1, -1, -1]])
    assert dr_loss(logits, targets).item() == pytest.approx(4 / 6 * math.log(1 + math.e ** 3), rel=1e-12)
    logits[1] = 5.0  # ignored
    assert dr_loss(logits, targets).item() == pytest.approx(4 / 6 * math.log(1 + math.e ** 3), rel=1e-12)


def test_initial_value_the_authors_state():
    # prior 0.5: every p = 0.5, loss = 4 log(1 + e^3) / 6 = 2.0324 (idstcv/DR_loss#2)
    logits = torch.zeros(1000, 80)
    targets = torch.zeros(1000, 80, dtype=torch.int8)
    targets[:7, 3] = 1
    assert dr_loss(logits, targets).item() == pytest.approx(4 * math.log(1 + math.e ** 3) / 6, rel=1e-6)
    assert dr_loss(logits, targets).item() == pytest.approx(2.0324, abs=1e-4)


def test_gradcheck_through_the_softmax_weights():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 0, -1], [0, 0, 0, 0, 0], [-1, -1, -1, -1, -1]])
    assert torch.autograd.gradcheck(lambda x: dr_loss(x, targets), (logits,))
    # the weights are not detached: the gradient differs from the one with constant weights
    loss = dr_loss(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    p = logits.detach().sigmoid()
    neg = p[targets == 0]
    q = torch.softmax(neg / LAMBDA_NEG, 0)
    # d loss / d p_neg with q held constant: tau * sigmoid(L (P- - P+ + m)) * q
    pos = p[targets == 1]
    qp = torch.softmax(-pos, 0)
    h = torch.sigmoid(6 * ((q * neg).sum() - (qp * pos).sum() + 0.5))
    constant_q = 4 * h * q * (p * (1 - p))[targets == 0]
    assert not torch.allclose(grad[targets == 0], constant_q)


def test_half_precision_logits_are_ranked_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(50, 4).half()
    targets = (torch.rand(50, 4) < 0.1).to(torch.int8)
    out = dr_loss(logits, targets)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, dr_loss(logits.float(), targets))


def test_targets_of_anchor_labels():
    # 3 classes, background = 3, -1 ignored
    labels = torch.tensor([[2, 3, -1, 0]])
    assert dr_targets(labels, 3).tolist() == [[[0, 0, 1], [0, 0, 0], [-1, -1, -1], [1, 0, 0]]]
