"""The AP-loss and its update on rankings worked out by hand, and the vectorised version
against the loop oracle (Algorithm 1, one positive at a time) on random inputs."""

import pytest
import torch
from ap_loss import ap_loss, ap_loss_and_grad
from ap_loss_oracle import ap_loss_loop


def run(pos, neg, delta=1.0, interpolate=True, ignored=()):
    logits = torch.tensor(list(pos) + list(neg) + list(ignored), dtype=torch.float64)
    labels = torch.tensor([1] * len(pos) + [0] * len(neg) + [-1] * len(ignored))
    loss, grad = ap_loss_and_grad(logits, labels, delta, interpolate)
    return loss.item(), grad.tolist()


def test_perfect_ranking_gives_zero_loss_and_zero_update():
    # Every negative at least delta below every positive: H = 0 everywhere, precision 1.
    loss, grad = run(pos=[5.0, 3.0], neg=[2.0, 0.0, -1.0])
    assert loss == 0.0 and grad == [0.0] * 5


def test_one_inversion():
    # Positives 0 and 3, a negative at 2 (delta 1). Positive 0: rank+ = 1 + H(3) = 2,
    # rank- = H(2) = 1, precision 2/3. Positive 3: rank+ = 1, rank- = H(-1) = 0, precision 1.
    # AP = (2/3 + 1) / 2. Update / 2 positives: -(1 - 2/3), -(1 - 1) on the positives;
    # L = H(2) / rank(0) = 1/3 on the negative.
    loss, grad = run(pos=[0.0, 3.0], neg=[2.0])
    assert loss == pytest.approx(1 - 5 / 6)
    assert grad == pytest.approx([-1 / 6, 0.0, 1 / 6])
    assert sum(grad) == pytest.approx(0.0, abs=1e-12)  # the update moves no mass


def test_ties_count_half():
    # A negative tied with the positive: H(0) = 0.5, precision 1 / 1.5.
    loss, grad = run(pos=[1.0], neg=[1.0])
    assert loss == pytest.approx(1 / 3)
    assert grad == pytest.approx([-1 / 3, 1 / 3])
    # Two tied positives: each has rank+ = 0.5 + 0.5 + H(0) = 1.5 and precision 1.
    loss, grad = run(pos=[2.0, 2.0], neg=[-5.0])
    assert loss == 0.0 and grad == [0.0, 0.0, 0.0]


def test_a_negative_inside_the_delta_band_and_below_it():
    # Negative 0.5 above the positive: H = 0.75, precision 1 / 1.75. A negative exactly delta
    # below (H = 0) and one further below (skipped) get no update; ignored entries neither.
    loss, grad = run(pos=[0.0], neg=[0.5, -1.0, -3.0], ignored=[10.0])
    assert loss == pytest.approx(1 - 4 / 7)
    assert grad == pytest.approx([-3 / 7, 3 / 7, 0.0, 0.0, 0.0])
    # A wider band reaches the negative at -1: H(-1) with delta 2 = 0.25.
    loss, _ = run(pos=[0.0], neg=[-1.0], delta=2.0)
    assert loss == pytest.approx(1 - 1 / 1.25)


def test_interpolated_and_plain_ap():
    # Positives 0 and 2, a negative at 2.5. Positive 0: rank+ = 1 + H(2) = 2, rank- = 1,
    # precision 2/3. Positive 2: rank+ = 1, rank- = H(0.5) = 0.75, precision 4/7 < 2/3.
    plain_loss, plain_grad = run(pos=[0.0, 2.0], neg=[2.5], interpolate=False)
    assert plain_loss == pytest.approx(1 - (2 / 3 + 4 / 7) / 2)
    assert plain_grad == pytest.approx([-1 / 6, -3 / 14, (1 / 3 + 3 / 7) / 2])
    # Interpolated: positive 2's precision is raised to 2/3, and its term on the negative,
    # 0.75 / 1.75 = 3/7, is scaled by (1 - 2/3) / (1 - 4/7) to 1/3.
    loss, grad = run(pos=[0.0, 2.0], neg=[2.5])
    assert loss == pytest.approx(1 / 3)
    assert grad == pytest.approx([-1 / 6, -1 / 6, 1 / 3])


def test_no_positive_gives_zero_loss_and_update():
    loss, grad = run(pos=[], neg=[0.3, -2.0], ignored=[1.0])
    assert loss == 0.0 and grad == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("size,pos_frac,chunk", [(7, 0.4, 2), (300, 0.1, 17), (4000, 0.02, 1000),
                                                 (4000, 0.3, 4096)])
def test_vectorised_equals_the_loop_oracle(size, pos_frac, chunk, interpolate):
    g = torch.Generator().manual_seed(size)
    logits = torch.randn(size, generator=g, dtype=torch.float64) * 2
    logits[: size // 10] = logits[size // 10: 2 * (size // 10)]  # some exact ties
    labels = (torch.rand(size, generator=g) < pos_frac).long()
    labels[torch.rand(size, generator=g) < 0.1] = -1
    labels[0] = 1
    loss, grad = ap_loss_and_grad(logits, labels, 1.0, interpolate, chunk_size=chunk)
    ref_loss, ref_grad = ap_loss_loop(logits, labels, 1.0, interpolate)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)


def test_vectorised_equals_the_loop_oracle_in_float32_at_detector_scale():
    # 40k anchors x 20 classes around the initial score, 150 positives: float32 inputs,
    # float64 sums inside, against the oracle's float32 loop.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(800_000, generator=g) * 0.5 - 4.6
    labels = torch.zeros(800_000, dtype=torch.long)
    labels[torch.randperm(800_000, generator=g)[:150]] = 1
    loss, grad = ap_loss_and_grad(logits, labels, chunk_size=100_000)
    ref_loss, ref_grad = ap_loss_loop(logits.double(), labels)
    torch.testing.assert_close(loss, ref_loss.float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=1e-9)


def test_autograd_function_returns_the_update_as_gradient():
    logits = torch.tensor([[0.0, 2.5], [2.0, -4.0]], requires_grad=True)
    labels = torch.tensor([[1, 0], [1, -1]])
    loss = ap_loss(logits, labels)
    (3 * loss).backward()
    assert loss.item() == pytest.approx(1 / 3)
    torch.testing.assert_close(logits.grad, 3 * torch.tensor([[-1 / 6, 1 / 3], [-1 / 6, 0.0]]))
