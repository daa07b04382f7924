"""The intertwiner's pieces against hand computations: the two sets per level, class sums, the
buffer's running mean, the make-up layer and critic, the L2 loss, Sinkhorn's plan and the OT
divergence."""

import math

import pytest
import torch
import torch.nn.functional as F
from internet import ClassBuffer, Critic, MakeUpLayer, OTMetaLoss, class_sums, intertwiner_sets, l2_meta_loss
from internet.divergence import cosine_cost, sinkhorn, sinkhorn_divergence, transport_cost


def test_sets_of_each_level():
    levels = torch.tensor([2, 5, 3, 2, 4, 3, 5])
    expected = {  # level: (less reliable = assigned to it, reliable = assigned above it)
        2: ([0, 3], [1, 2, 4, 5, 6]),
        3: ([2, 5], [1, 4, 6]),
        4: ([4], [1, 6]),
        5: ([1, 6], []),
    }
    for level, (less, reliable) in expected.items():
        is_less, is_reliable = intertwiner_sets(levels, level)
        assert is_less.nonzero().flatten().tolist() == less
        assert is_reliable.nonzero().flatten().tolist() == reliable


def test_class_sums_leave_out_background():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    labels = torch.tensor([1, 3, 1, 0])  # 3 classes: label 3 is background
    sums, counts = class_sums(features, labels, 3)
    torch.testing.assert_close(sums, torch.tensor([[7.0, 8.0], [6.0, 8.0], [0.0, 0.0]]))
    torch.testing.assert_close(counts, torch.tensor([1.0, 2.0, 0.0]))


def test_buffer_is_the_count_weighted_mean_of_all_history_and_gets_no_gradient():
    torch.manual_seed(0)
    buffer = ClassBuffer(num_classes=3, dim=4)
    history = {0: [], 1: [], 2: []}
    for step in range(4):
        n = 5 + step
        features = torch.rand(n, 4, requires_grad=True)
        labels = torch.randint(0, 2 if step < 2 else 3, (n,))  # class 2 appears from step 2 on
        for f, c in zip(features.detach(), labels.tolist()):
            history[c].append(f)
        buffer.update(*class_sums(features, labels, 3))
        for c in range(3):
            if history[c]:
                torch.testing.assert_close(buffer.mean[c], torch.stack(history[c]).mean(0))
            else:
                assert buffer.mean[c].abs().sum() == 0
            assert buffer.count[c] == len(history[c])
        assert not buffer.mean.requires_grad
    assert list(buffer.parameters()) == [] and set(buffer.state_dict()) == {"mean", "count"}
    # A loss through the buffer reaches only the other side.
    x = torch.rand(3, 4, requires_grad=True)
    l2_meta_loss(x, buffer.mean).backward()
    assert x.grad is not None and buffer.mean.grad is None


def test_make_up_layer_is_conv3x3_norm_relu_and_keeps_the_size():
    torch.manual_seed(0)
    layer = MakeUpLayer(8).eval()
    layer[0].norm.running_mean.uniform_(-1, 1)
    layer[0].norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 11, 13)
    conv, bn = layer[0], layer[0].norm
    manual = F.relu(F.batch_norm(F.conv2d(x, conv.weight, conv.bias, padding=1), bn.running_mean,
                                 bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    torch.testing.assert_close(layer(x), manual)
    assert layer(x).shape == x.shape


def test_critic_layers_by_hand():
    torch.manual_seed(0)
    critic = Critic(8, pool_size=14, channels=(6, 10), sigmoid=True).eval()
    x = torch.randn(3, 8, 14, 14)
    y = x
    for conv, stride in zip(list(critic)[:3], (2, 1, 1)):
        bn = conv.norm
        y = F.relu(F.batch_norm(F.conv2d(y, conv.weight, conv.bias, stride=stride, padding=conv.padding),
                                bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    assert [c.weight.shape[-1] for c in list(critic)[:3]] == [3, 7, 1] and y.shape == (3, 10, 1, 1)
    torch.testing.assert_close(critic(x), torch.sigmoid(y.flatten(1)))
    plain = Critic(8, pool_size=14, channels=(6, 10))
    plain.load_state_dict(critic.state_dict())
    torch.testing.assert_close(plain.eval()(x), y.flatten(1))


def test_l2_meta_loss_on_hand_made_centroids():
    x = torch.tensor([[0.2, 0.4], [0.9, 0.1]])
    y = torch.tensor([[0.4, 0.4], [0.5, 0.1]])
    # ((0.2 - 0.4)^2 + 0 + (0.9 - 0.5)^2 + 0) / 4 = (0.04 + 0.16) / 4
    torch.testing.assert_close(l2_meta_loss(x, y), torch.tensor(0.05))


def test_sinkhorn_gives_a_transport_plan():
    torch.manual_seed(0)
    for n, m in ((4, 4), (3, 6), (7, 2)):
        cost = torch.rand(n, m, dtype=torch.float64) * 2  # cosine costs lie in [0, 2]
        plan = sinkhorn(cost, epsilon=1.0, iters=5)
        assert (plan >= 0).all()
        torch.testing.assert_close(plan.sum(0), torch.full((m,), 1.0 / m, dtype=torch.float64))
        torch.testing.assert_close(plan.sum(1), torch.full((n,), 1.0 / n, dtype=torch.float64),
                                   rtol=0, atol=1e-3 / n)
        # More iterations: the row marginals too converge, and P = diag(a) K diag(b) keeps
        # K's cross ratios (P_ij P_kl / (P_il P_kj) = K_ij K_kl / (K_il K_kj)).
        plan = sinkhorn(cost, iters=200)
        torch.testing.assert_close(plan.sum(1), torch.full((n,), 1.0 / n, dtype=torch.float64))
        k = torch.exp(-cost)
        torch.testing.assert_close(plan[0, 0] * plan[1, 1] / (plan[0, 1] * plan[1, 0]),
                                   k[0, 0] * k[1, 1] / (k[0, 1] * k[1, 0]))


def test_one_point_each_costs_one_minus_cosine():
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(transport_cost(x, y), torch.tensor(1 - 1 / math.sqrt(2)))
    torch.testing.assert_close(cosine_cost(x, y), torch.tensor([[1 - 1 / math.sqrt(2)]]))


def test_the_plan_is_detached():
    torch.manual_seed(0)
    x = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 3, dtype=torch.float64)
    (gx,) = torch.autograd.grad(transport_cost(x, y), x)
    plan = sinkhorn(cosine_cost(x, y).detach())
    (manual,) = torch.autograd.grad((plan * cosine_cost(x, y)).sum(), x)
    torch.testing.assert_close(gx, manual)


def test_divergence_is_zero_for_the_same_set_and_grows_with_a_shift():
    torch.manual_seed(0)
    x = torch.rand(6, 2, dtype=torch.float64) + 0.5
    assert sinkhorn_divergence(x, x).abs() < 1e-12
    assert sinkhorn_divergence(x, x[torch.randperm(6)]).abs() < 1e-12  # a set: order is irrelevant
    # Rotate every point by the same angle: the divergence grows with it.
    values = []
    for angle in (0.0, 0.1, 0.2, 0.4, 0.8):
        c, s = math.cos(angle), math.sin(angle)
        rotated = x @ torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
        values.append(sinkhorn_divergence(x, rotated).item())
    assert values[0] < 1e-12 and all(b > a for a, b in zip(values, values[1:])), values


def test_ot_meta_loss_embeds_with_the_generator_and_the_critic():
    torch.manual_seed(0)
    ot = OTMetaLoss(dim=16, critic_dim=8)
    x, y = torch.rand(3, 16), torch.rand(3, 16)
    # Conv1d k3 (padding 1) on a length-1 sequence: the centre tap only.
    g = F.relu(x @ ot.generator[0].weight[:, :, 1].t() + ot.generator[0].bias)
    embed = lambda v: F.relu(v @ ot.critic[0].weight[:, :, 1].t() + ot.critic[0].bias)  # noqa: E731
    torch.testing.assert_close(ot(x, y), sinkhorn_divergence(embed(g), embed(y)))
    assert ot(x, y).item() != 0
    x.requires_grad_(True)
    ot(x, y).backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is not None for p in ot.parameters())


def test_critic_batchnorm_stays_an_affine_layer_in_training():
    """Official: the critic's BatchNorm runs in eval mode with its initial statistics. A
    per-channel scale and shift of one set must reach the meta-loss; train-mode BatchNorm
    called per set would standardise it away (mse ~1e-15)."""
    torch.manual_seed(0)
    critic = Critic(8, pool_size=14, channels=(6, 10), sigmoid=True).train()
    norms = [m for m in critic.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 3 and critic.training and not any(m.training for m in norms)
    for m in norms:  # a learned affine layer: weight / sqrt(1 + eps), bias
        m.weight.data.uniform_(0.5, 2)
        m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(16, 8, 14, 14)
    # A scale and a per-channel shift: after the first (linear) conv, a per-channel scale and
    # shift of its output, which BatchNorm over this set alone would remove.
    y = 3 * x + torch.linspace(-1, 1, 8)[:, None, None]
    cx, cy = critic(x).mean(0, keepdim=True), critic(y).mean(0, keepdim=True)
    assert l2_meta_loss(cx, cy).item() > 1e-4
    assert all(m.running_mean.eq(0).all() and m.running_var.eq(1).all() for m in norms)
    # The same numbers in eval mode (the layers never normalise by a batch).
    torch.testing.assert_close(critic.eval()(x).mean(0, keepdim=True), cx)
    assert critic(x[:1]).shape == (1, 10)  # one RoI is a valid set


def test_ot_critic_modes():
    torch.manual_seed(0)
    x, y = torch.rand(4, 16), torch.rand(5, 16)

    def grads(mode):
        torch.manual_seed(1)
        ot = OTMetaLoss(dim=16, critic_dim=8, critic_mode=mode)
        xg = x.clone().requires_grad_(True)
        loss = ot(xg, y)
        loss.backward()
        return ot, loss, xg.grad

    joint, loss, x_grad = grads("joint")
    adversarial, loss_a, x_grad_a = grads("adversarial")
    fixed, loss_f, x_grad_f = grads("fixed")
    torch.testing.assert_close(loss_a, loss)
    torch.testing.assert_close(loss_f, loss)
    # The detector's side (its input, the generator) minimises in every mode ...
    for g in (x_grad_a, x_grad_f):
        torch.testing.assert_close(g, x_grad)
    for p, q in zip(adversarial.generator.parameters(), joint.generator.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # ... the adversarial critic maximises (reversed gradient), the fixed one does not learn.
    for p, q in zip(adversarial.critic.parameters(), joint.critic.parameters()):
        assert q.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, -q.grad)
    assert all(not p.requires_grad and p.grad is None for p in fixed.critic.parameters())

    # One small SGD step of the critic alone: the adversarial one raises the divergence, the
    # official joint one lowers it.
    def after_step(ot):
        with torch.no_grad():
            for p in ot.critic.parameters():
                p -= 1e-2 * p.grad
            return ot(x, y)

    assert after_step(adversarial) > loss > after_step(joint)
    # The collapse the joint critic can reach: an embedding that maps everything to one
    # direction gives a zero divergence and no gradient to the detector.
    with torch.no_grad():
        joint.critic[0].weight.zero_()
        joint.critic[0].bias.fill_(1.0)
    xg = x.clone().requires_grad_(True)
    collapsed = joint(xg, y)
    collapsed.backward()
    assert abs(collapsed.item()) < 1e-6 and xg.grad.abs().max() == 0
    with pytest.raises(ValueError, match="OT_CRITIC"):
        OTMetaLoss(dim=16, critic_mode="max")
