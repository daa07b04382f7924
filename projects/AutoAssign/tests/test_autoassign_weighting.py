"""Centre prior, confidence weighting and negative weighting of AutoAssign on values worked
out by hand, and their gradients (gradcheck, and the gradient through the weights)."""

import math

import pytest
import torch
from autoassign import CenterPrior, negative_loss, negative_weights, positive_loss, positive_weights

# ---- centre prior (Sec. 3.2) -------------------------------------------------------------------


def test_center_prior_is_one_at_mu_and_a_gaussian_of_the_offset_in_strides():
    prior = CenterPrior(num_classes=3)
    with torch.no_grad():
        prior.mu[1] = torch.tensor([0.5, -1.0])
        prior.sigma[1] = torch.tensor([2.0, 0.5])
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])  # centre (30, 30)
    # Class 1 on stride 8: the peak is at centre + mu * stride = (34, 22).
    locations = torch.tensor([[34.0, 22.0], [34.0 + 16, 22.0], [34.0, 22.0 + 4], [30.0, 30.0]])
    out = prior(locations, torch.full((4,), 8.0), box.expand(4, 4), torch.tensor([1, 1, 1, 1]))
    expected = [
        1.0,
        math.exp(-(2.0**2) / (2 * 2.0**2)),            # 2 strides right, sigma_x 2
        math.exp(-(0.5**2) / (2 * 0.5**2)),            # half a stride down, sigma_y 0.5
        math.exp(-(0.5**2) / 8) * math.exp(-(1.0**2) / 0.5),  # the box centre: (-0.5, 1) from mu
    ]
    torch.testing.assert_close(out, torch.tensor(expected))


def test_center_prior_is_per_class_and_symmetric_in_x_and_y_at_init():
    prior = CenterPrior(num_classes=2)
    with torch.no_grad():
        prior.mu[0] = torch.tensor([1.0, 0.0])
    box = torch.tensor([0.0, 0.0, 64.0, 64.0]).expand(4, 4)  # centre (32, 32)
    # Class 1 keeps mu = 0, sigma = 1: offsets of (16, 0) and (0, 16) px on stride 16, or
    # (-8, 0) on stride 8, all one stride, give exp(-1/2).
    locations = torch.tensor([[48.0, 32.0], [32.0, 48.0], [24.0, 32.0], [48.0, 32.0]])
    strides = torch.tensor([16.0, 16.0, 8.0, 16.0])
    out = prior(locations, strides, box, torch.tensor([1, 1, 1, 0]))
    torch.testing.assert_close(out[:3], torch.full((3,), math.exp(-0.5)))
    assert out[3].item() == pytest.approx(1.0)  # class 0's mu moved its peak there


# ---- positive side (Sec. 3.3) ------------------------------------------------------------------


def test_positive_weights_worked_by_hand_and_sum_to_one_per_gt():
    p = torch.tensor([0.2, 0.5, 0.1, 0.4, 0.9])
    prior = torch.tensor([1.0, 0.5, 0.25, 0.8, 0.3])
    gt = torch.tensor([0, 0, 1, 1, 1])
    w = positive_weights(p, prior, gt, num_gt=3)
    a, b = math.exp(0.6) * 1.0, math.exp(1.5) * 0.5
    assert w[:2].tolist() == pytest.approx([a / (a + b), b / (a + b)])
    sums = torch.zeros(3).index_add(0, gt, w)
    torch.testing.assert_close(sums, torch.tensor([1.0, 1.0, 0.0]))  # GT 2 has no pair


def test_positive_loss_is_bce_of_the_weighted_confidence():
    p = torch.tensor([0.2, 0.5, 0.7])
    prior = torch.tensor([1.0, 0.5, 0.6])
    gt = torch.tensor([0, 0, 1])
    loss = positive_loss(p, prior, gt, num_gt=3)
    a, b = math.exp(0.6) * 1.0, math.exp(1.5) * 0.5
    bag = (a * 0.2 + b * 0.5) / (a + b)
    # GT 1: one pair, weight 1; GT 2: no location inside it, loss 0.
    assert loss.tolist() == pytest.approx([-math.log(bag), -math.log(0.7), 0.0], rel=1e-6)


def test_positive_loss_gradient_flows_through_the_confidence_weights():
    p = torch.tensor([0.2, 0.5], dtype=torch.float64, requires_grad=True)
    prior = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([0, 0])
    positive_loss(p, prior, gt, 1).sum().backward()
    # d/dp_j of -log(sum_i e^{3 p_i} G_i p_i / sum_i e^{3 p_i} G_i), by hand:
    e = [math.exp(0.6) * 1.0, math.exp(1.5) * 0.5]
    num, den = e[0] * 0.2 + e[1] * 0.5, e[0] + e[1]
    expected = [-(e[j] * (1 + 3 * pj) / num - 3 * e[j] / den) for j, pj in enumerate([0.2, 0.5])]
    assert p.grad.tolist() == pytest.approx(expected)
    # With detached weights the gradient would be -w_j / bag, a different value.
    detached = [-(e[j] / den) / (num / den) for j in range(2)]
    assert p.grad[0].item() != pytest.approx(detached[0], rel=1e-3)
    # The prior gets a gradient too (through the weights): d/dG_j = -e^{3p_j} (p_j/num - 1/den).
    expected_prior = [-math.exp(3 * pj) * (pj / num - 1 / den) for pj in [0.2, 0.5]]
    assert prior.grad.tolist() == pytest.approx(expected_prior)


def test_positive_loss_gradcheck():
    torch.manual_seed(0)
    p = torch.rand(6, dtype=torch.float64).mul(0.9).add(0.05).requires_grad_()
    prior = torch.rand(6, dtype=torch.float64).add(0.1).requires_grad_()
    gt = torch.tensor([0, 1, 1, 0, 2, 2])
    assert torch.autograd.gradcheck(lambda p, g: positive_loss(p, g, gt, 4), (p, prior))


# ---- negative side (Sec. 3.3) ------------------------------------------------------------------


def test_negative_weights_on_a_hand_built_iou_map():
    # 2 GTs x 5 locations. Each location's IoU is its maximum over BOTH GTs.
    ious = torch.tensor([
        [0.5, 0.0, 0.75, 0.2, 0.0],
        [0.0, 0.8, 0.25, 0.6, 0.0],
    ])
    # Pairs (location inside GT): GT 0 has locations 0, 1, 2; GT 1 has 2, 3, 4.
    loc = torch.tensor([0, 1, 2, 2, 3, 4])
    gt = torch.tensor([0, 0, 0, 1, 1, 1])
    v = negative_weights(ious, loc, gt)
    # max IoU per location: 0.5, 0.8, 0.75, 0.6, 0 -> 1 / (1 - IoU): 2, 5, 4, 2.5, 1.
    # GT 0 over {2, 5, 4}: (v - 2) / 3; GT 1 over {4, 2.5, 1}: (v - 1) / 3. Location 1 counts
    # with 0.8, its IoU with GT 1, although it lies only in GT 0.
    expected = [0.0, 1.0, 2 / 3, 1.0, 0.5, 0.0]
    torch.testing.assert_close(v, torch.tensor(expected), atol=1e-6, rtol=0)
    assert not v.requires_grad


def test_negative_weights_of_a_gt_with_one_location_or_equal_ious_are_one():
    ious = torch.tensor([[0.3, 0.3, 0.0], [0.0, 0.0, 0.9]])
    v = negative_weights(ious, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(v, torch.ones(3))
    # An IoU of exactly 1 (1 / 0 clamped to 1e12) stays finite.
    v = negative_weights(torch.tensor([[1.0, 0.5]]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert torch.isfinite(v).all() and v[0] == 1 and v[1] < 1e-12


def test_negative_loss_is_focal_bce_of_the_scaled_score():
    scores = torch.tensor([0.5, 0.5, 0.2, 0.0])
    pos_prob = torch.tensor([0.0, 0.6, 1.0, 0.0])
    out = negative_loss(scores, pos_prob)
    q = [0.5, 0.2, 0.0, 0.0]
    torch.testing.assert_close(out, torch.tensor([x**2 * -math.log(1 - x) for x in q]))
    scores = torch.rand(5, dtype=torch.float64).mul(0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: negative_loss(s, pos_prob.double().repeat(2)[:5]), (scores,))
