"""QFL, DFL and the integral (distribution -> distance) against values worked out by hand."""

import math

import pytest
import torch
from gfl import distance_to_distribution, distribution_focal_loss, integral, quality_focal_loss
from gfl.integral import boxes_to_ltrb, ltrb_to_boxes

LN2 = math.log(2)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---- Quality Focal Loss ------------------------------------------------------------------------

def test_qfl_negatives_only_is_focal_negative_term():
    # Every entry has target 0: loss = -log(1 - s) * s^2.
    logits = torch.tensor([[0.0, math.log(3)], [-2.0, 1.0]])
    labels = torch.tensor([2, 2])  # K = 2: background
    loss = quality_focal_loss(logits, labels, torch.zeros(2))
    s = [[0.5, 0.75], [sigmoid(-2.0), sigmoid(1.0)]]
    expected = [[-math.log(1 - v) * v**2 for v in row] for row in s]
    torch.testing.assert_close(loss, torch.tensor(expected))
    assert loss[0, 0].item() == pytest.approx(LN2 / 4)
    assert loss[0, 1].item() == pytest.approx(math.log(4) * 0.5625)


def test_qfl_positive_entry_uses_the_iou_target():
    # Location 0 is class 1 with IoU 0.8; its class-0 entry and location 1 are negatives.
    logits = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([1, 2])
    loss = quality_focal_loss(logits, labels, torch.tensor([0.8, 0.3]))  # 0.3 is ignored
    # Logit 0: BCE = ln 2 for any target; factor |0.8 - 0.5|^2 = 0.09.
    assert loss[0, 1].item() == pytest.approx(LN2 * 0.09)
    assert loss[0, 0].item() == pytest.approx(LN2 * 0.25)
    s = sigmoid(2.0)
    assert loss[1, 1].item() == pytest.approx(-math.log(1 - s) * s**2)


def test_qfl_is_minimal_with_zero_gradient_when_score_equals_quality():
    y = 0.3
    logit = torch.tensor([[math.log(y / (1 - y))]], dtype=torch.float64, requires_grad=True)
    loss = quality_focal_loss(logit, torch.tensor([0]), torch.tensor([y], dtype=torch.float64))
    assert loss.item() == pytest.approx(0.0, abs=1e-15)
    loss.sum().backward()
    assert logit.grad.item() == pytest.approx(0.0, abs=1e-12)


def test_qfl_with_beta_zero_is_binary_cross_entropy():
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 3, 2, 1, 3])
    quality = torch.rand(5)
    target = torch.zeros(5, 3)
    for i, c in enumerate(labels.tolist()):
        if c < 3:
            target[i, c] = quality[i]
    torch.testing.assert_close(
        quality_focal_loss(logits, labels, quality, beta=0.0),
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none"),
    )


def test_qfl_gradcheck():
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 3, 4, 1, 2])
    quality = torch.rand(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: quality_focal_loss(x, labels, quality), (logits,))


# ---- Distribution Focal Loss -------------------------------------------------------------------

def test_dfl_exact_bin_is_cross_entropy_of_that_bin():
    logits = torch.zeros(1, 5)
    assert distribution_focal_loss(logits, torch.tensor([3.0])).item() == pytest.approx(math.log(5))
    p = [0.1, 0.2, 0.3, 0.4]
    logits = torch.tensor([p]).log()
    assert distribution_focal_loss(logits, torch.tensor([2.0])).item() == pytest.approx(-math.log(0.3))


def test_dfl_between_bins_weights_the_two_neighbours():
    p = [0.1, 0.2, 0.3, 0.4]
    logits = torch.tensor([p]).log()
    loss = distribution_focal_loss(logits, torch.tensor([2.25]))
    assert loss.item() == pytest.approx(-0.75 * math.log(0.3) - 0.25 * math.log(0.4))


def test_dfl_at_the_clamp_puts_its_weight_on_the_last_bin():
    # The head clamps targets to n - 0.1 (n = 16): 0.1 on bin 15, 0.9 on bin 16.
    logits = torch.arange(17.0)[None] * 0.1
    log_p = logits.log_softmax(dim=1)[0]
    loss = distribution_focal_loss(logits, torch.tensor([16 - 0.1]))
    assert loss.item() == pytest.approx(-(0.1 * log_p[15] + 0.9 * log_p[16]).item(), rel=1e-5)


def test_dfl_gradient_is_softmax_minus_the_two_bin_target():
    # d DFL / d logits = softmax - p, where p is the two-bin distribution with expectation y:
    # DFL is minimal exactly when the predicted distribution is that of distance_to_distribution.
    logits = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.0, 2.5, 7.3, 7.99], dtype=torch.float64)
    distribution_focal_loss(logits, target).sum().backward()
    expected = logits.detach().softmax(dim=1) - distance_to_distribution(target, 8)
    torch.testing.assert_close(logits.grad, expected)


def test_dfl_gradcheck():
    logits = torch.randn(5, 17, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.0, 0.5, 3.7, 12.0, 15.99], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: distribution_focal_loss(x, target), (logits,))


# ---- Integral and its inverse ------------------------------------------------------------------

def test_integral_of_known_distributions():
    n = 16
    one_hot = torch.full((n + 1,), -1e4)
    one_hot[5] = 0.0
    assert integral(one_hot).item() == pytest.approx(5.0)
    assert integral(torch.zeros(n + 1)).item() == pytest.approx(n / 2)  # uniform
    p = torch.zeros(n + 1)
    p[2], p[10] = 0.25, 0.75
    assert integral(p.clamp(min=1e-30).log()).item() == pytest.approx(8.0, abs=1e-5)
    # Batched over leading dims: (N, 4, n+1) -> (N, 4).
    assert integral(torch.zeros(3, 4, n + 1)).shape == (3, 4)


@pytest.mark.parametrize("y", [0.0, 3.0, 2.3, 15.99, 16.0])
def test_distance_to_distribution_is_the_inverse_of_the_integral(y):
    n = 16
    p = distance_to_distribution(torch.tensor(y), n)
    assert p.sum().item() == pytest.approx(1.0)
    support = p.nonzero().flatten()  # the integers around y (one when y is an integer)
    assert math.floor(y) <= support.min() and support.max() <= math.ceil(y)
    assert (p * torch.arange(n + 1.0)).sum().item() == pytest.approx(y, abs=1e-5)
    assert integral(p.clamp(min=1e-30).log()).item() == pytest.approx(y, abs=1e-4)


def test_ltrb_box_conversions():
    points = torch.tensor([[10.0, 20.0]])
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    boxes = ltrb_to_boxes(points, ltrb)
    torch.testing.assert_close(boxes, torch.tensor([[9.0, 18.0, 13.0, 24.0]]))
    torch.testing.assert_close(boxes_to_ltrb(points, boxes), ltrb)
