"""The top-N matcher, soft labels, re-weighting and the soft focal loss on hand-worked numbers,
the official's unguarded edge cases included."""

import math
from fractions import Fraction

import pytest
import torch
from noisy_anchor import TopNMatcher, reweighting, soft_focal_loss, soft_labels
from noisy_anchor.retinanet import _reweight


def test_top_n_matcher_on_hand_made_ious():
    # 2 GTs x 5 anchors. GT 0's top 2: anchors 1 (0.6), 2 (0.7); GT 1's: anchors 2 (0.65), 4 (0.8).
    iou = torch.tensor([[0.1, 0.6, 0.7, 0.0, 0.2],
                        [0.0, 0.3, 0.65, 0.05, 0.8]])
    matches, labels, topn = TopNMatcher(2)(iou)
    assert topn.tolist() == [1, 2, 2, 4]          # GT by GT, ascending IoU, duplicates kept
    assert labels.tolist() == [0, 1, 1, 0, 1]     # no ignored anchor, anchor 0 is negative
    # every anchor's highest-IoU GT: anchor 2 is in both top-2 lists and goes to GT 0 (0.7)
    assert matches.tolist() == [0, 0, 0, 1, 1]


def test_top_n_matcher_with_fewer_anchors_than_n_and_without_gt():
    iou = torch.tensor([[0.2, 0.5, 0.0]])
    matches, labels, topn = TopNMatcher(30)(iou)
    assert sorted(topn.tolist()) == [0, 1, 2] and labels.tolist() == [1, 1, 1]
    # anchor 2 does not overlap the GT at all and is still a positive of it (as the official)
    matches, labels, topn = TopNMatcher(30)(torch.zeros(0, 4))
    assert topn is None and labels.tolist() == [0, 0, 0, 0] and matches.tolist() == [0, 0, 0, 0]


def test_soft_labels_on_hand_worked_numbers():
    # loc / mean = (5/7, 1, 9/7), cls / mean = (1/2, 1, 3/2); s = 0.75 loc' + 0.25 cls'
    # = (0.6607, 1, 1.3393), rescaled from [min, max] to [mean(loc), 1] = [0.7, 1]
    loc = torch.tensor([0.5, 0.7, 0.9], dtype=torch.float64)
    cls = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    torch.testing.assert_close(soft_labels(loc, cls), torch.tensor([0.7, 0.85, 1.0], dtype=torch.float64))
    # an uneven case against exact fractions
    loc2 = [Fraction(1, 2), Fraction(3, 5), Fraction(9, 10)]
    cls2 = [Fraction(1, 10), Fraction(1, 2), Fraction(1, 5)]
    ml, mc = sum(loc2) / 3, sum(cls2) / 3
    s = [Fraction(3, 4) * a / ml + Fraction(1, 4) * b / mc for a, b in zip(loc2, cls2)]
    expected = [ml + (x - min(s)) * (1 - ml) / (max(s) - min(s)) for x in s]
    out = soft_labels(torch.tensor([float(x) for x in loc2], dtype=torch.float64),
                      torch.tensor([float(x) for x in cls2], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([float(x) for x in expected], dtype=torch.float64))


def test_reweighting_on_hand_worked_numbers():
    loc = [Fraction(1, 2), Fraction(7, 10), Fraction(9, 10)]
    cls = [Fraction(1, 5), Fraction(2, 5), Fraction(3, 5)]
    f_loc, f_cls = [1 / (1 - x) for x in loc], [1 / (1 - x) for x in cls]   # (2, 10/3, 10), (5/4, 5/3, 5/2)
    expected = [Fraction(3, 4) * a / (sum(f_loc) / 3) + Fraction(1, 4) * b / (sum(f_cls) / 3)
                for a, b in zip(f_loc, f_cls)]
    out = reweighting(torch.tensor([float(x) for x in loc], dtype=torch.float64),
                      torch.tensor([float(x) for x in cls], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([float(x) for x in expected], dtype=torch.float64))
    assert out.mean().item() == pytest.approx(1.0)   # each part has mean 1, so the mix too


def test_edge_cases_the_official_leaves_unguarded():
    # one positive (max s = min s): the official divides 0 by 0; here its soft label is 1
    assert soft_labels(torch.tensor([0.6]), torch.tensor([0.3])).tolist() == [1.0]
    assert reweighting(torch.tensor([0.6]), torch.tensor([0.3])).tolist() == [1.0]
    # no predicted box overlaps its GT: loc / mean(loc) = 0 / 0 in the official
    out = soft_labels(torch.zeros(3), torch.tensor([0.2, 0.4, 0.6]))
    assert torch.isfinite(out).all() and out.tolist() == pytest.approx([0.0, 0.5, 1.0])
    # IoU or confidence of exactly 1: 1 / (1 - x) is infinite in the official
    w = reweighting(torch.tensor([1.0, 0.5, 0.5]), torch.tensor([0.5, 1.0, 0.5]))
    assert torch.isfinite(w).all() and w[0] > w[2] and w[1] > w[2]
    # below 1, f is the official's exactly
    x = torch.tensor([0.5, 1 - 2.0 ** -23, 0.99])
    torch.testing.assert_close(reweighting(x, x), 1 / (1 - x) / (1 / (1 - x)).mean(), rtol=0, atol=0)


def test_soft_focal_loss_against_its_formula():
    logits = torch.tensor([-2.0, 0.0, 1.5, 3.0], dtype=torch.float64)
    targets = torch.tensor([0.0, 0.3, 0.85, 1.0], dtype=torch.float64)
    p = torch.sigmoid(logits)
    official = -targets * (1 - p) ** 2 * torch.log(p) * 0.5 - (1 - targets) * p ** 2 * torch.log(1 - p) * 0.5
    torch.testing.assert_close(soft_focal_loss(logits, targets, 0.5, 2.0), official)
    # by hand: logit 0, t = 0.3: -(0.3 x 0.5^2 x log 0.5 x 0.5) - (0.7 x 0.5^2 x log 0.5 x 0.5)
    assert soft_focal_loss(logits, targets, 0.5, 2.0)[1].item() == pytest.approx(-0.25 * math.log(0.5) * 0.5)
    # saturated logits: the official's log(sigmoid) gives inf / NaN, this stays finite
    far = torch.tensor([-120.0, 40.0])
    assert torch.isfinite(soft_focal_loss(far, torch.tensor([1.0, 0.0]))).all()


def test_reweighting_keeps_the_loss_sum():
    torch.manual_seed(0)
    loss = torch.rand(6, 3, requires_grad=True)
    coeffs = torch.tensor([[1.0], [1.0], [2.5], [0.4], [1.0], [3.0]])
    out = _reweight(loss, coeffs)
    torch.testing.assert_close(out.sum(), loss.sum())
    out.sum().backward()
    # the gradient is the coefficients x a constant scale (no gradient through the scale)
    scale = (loss.sum() / (loss * coeffs).sum()).item()
    torch.testing.assert_close(loss.grad, (coeffs * scale).expand(6, 3))
    empty = _reweight(torch.zeros(0, 4), torch.zeros(0, 1))
    assert empty.shape == (0, 4)
