"""The loss pieces against hand computations on a tiny softmax policy."""

import pytest
import torch

from fairseq_mixer.baseline import StepBaseline, leave_one_out_baseline, sentence_baseline
from fairseq_mixer.losses import baseline_loss, mixer_loss, reinforce_loss, token_nll, xent_loss


def tiny_policy(seed=0, batch=3, steps=4, features=5, vocab=7):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, features, generator=generator, dtype=torch.float64)
    inputs = torch.randn(batch, steps, features, generator=generator, dtype=torch.float64)
    samples = torch.randint(vocab, (batch, steps), generator=generator)
    return weight.requires_grad_(), inputs, samples


def test_reinforce_gradient_equals_hand_computation():
    weight, inputs, samples = tiny_policy()
    rewards = torch.tensor([0.7, 0.1, 0.4], dtype=torch.float64)
    baselines = torch.rand(3, 4, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.float64)
    lprobs = torch.log_softmax(inputs @ weight.T, dim=-1)
    token_logprobs = lprobs.gather(-1, samples.unsqueeze(-1)).squeeze(-1)
    reinforce_loss(token_logprobs, rewards, baselines, mask).backward()

    # d log softmax(Wx)_w / dW = (onehot(w) - p) x^T, so the loss gradient is
    # -sum_{b,t} mask (R_b - b_bt) (onehot(w_bt) - p_bt) x_bt^T.
    probs = torch.softmax(inputs @ weight.detach().T, dim=-1)
    onehot = torch.nn.functional.one_hot(samples, 7).double()
    advantage = (rewards.unsqueeze(1) - baselines) * mask
    expected = -torch.einsum("bt,btv,btf->vf", advantage, onehot - probs, inputs)
    assert torch.allclose(weight.grad, expected, atol=1e-12)


def test_reward_and_baseline_are_constants_of_the_reinforce_loss():
    weight, inputs, samples = tiny_policy()
    rewards = torch.rand(3, dtype=torch.float64, requires_grad=True)
    baselines = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    lprobs = torch.log_softmax(inputs @ weight.T, dim=-1).gather(-1, samples.unsqueeze(-1))
    reinforce_loss(lprobs.squeeze(-1), rewards, baselines, torch.ones(3, 4)).backward()
    assert rewards.grad is None and baselines.grad is None


def test_baseline_loss_trains_the_baseline_only():
    features = torch.randn(2, 3, 4, requires_grad=True)
    baseline = StepBaseline(feature_dim=4, num_heads=2)
    assert torch.all(baseline.weight == 0) and torch.allclose(baseline.bias, torch.tensor(0.01))
    values = baseline(features)
    rewards = torch.tensor([0.5, 0.2])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss = baseline_loss(values, rewards, mask)
    expected = 0.5 * (((0.01 - rewards.unsqueeze(1)) ** 2) * mask).sum()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert features.grad is None
    # steps past the last head share it: steps 1 and 2 both use head 1
    assert torch.isclose(baseline.bias.grad[1], torch.tensor(2 * (0.01 - 0.5) + (0.01 - 0.2)))
    assert torch.isclose(baseline.bias.grad[0], torch.tensor(0.01 - 0.2))


def test_xent_sum_and_release_per_step_mean():
    lprobs = torch.log_softmax(torch.randn(2, 3, 5), dim=-1)
    targets = torch.tensor([[1, 2, 3], [4, 0, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token_losses, nll = token_nll(lprobs, targets)
    manual = -lprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(nll, manual) and torch.equal(token_losses, manual)
    assert torch.allclose(xent_loss(token_losses, mask, per_step_mean=False), (manual * mask).sum())
    per_step = (manual[0, 0] + manual[1, 0]) / 2 + manual[0, 1] + manual[0, 2]
    assert torch.allclose(xent_loss(token_losses, mask, per_step_mean=True), per_step)


def test_label_smoothing_matches_fairseq():
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    lprobs = torch.log_softmax(torch.randn(4, 6), dim=-1)
    targets = torch.tensor([1, 2, 3, 5])
    smoothed, nll = token_nll(lprobs, targets, label_smoothing=0.1)
    expected, expected_nll = label_smoothed_nll_loss(lprobs, targets, 0.1, reduce=True)
    assert torch.allclose(smoothed.sum(), expected) and torch.allclose(nll.sum(), expected_nll)


def test_mixer_loss_weights():
    xent, reinforce, baseline = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert mixer_loss(xent, reinforce, baseline, 1.0, 0.01) == 2.0
    assert torch.isclose(mixer_loss(xent, reinforce, baseline, 0.5, 0.01), torch.tensor(2.525))


def test_baseline_bias_scale_keeps_the_start_value_and_moves_the_bias_faster():
    features = torch.randn(2, 3, 4)
    rewards = torch.tensor([0.8, 0.6])
    mask = torch.ones(2, 3)
    moved = []
    for scale in (1.0, 100.0):
        baseline = StepBaseline(feature_dim=4, num_heads=3, bias_scale=scale)
        assert torch.allclose(baseline(features), torch.full((2, 3), 0.01))
        optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-3)
        baseline_loss(baseline(features), rewards, mask).backward()
        optimizer.step()
        moved.append((baseline.bias * scale - 0.01).abs().mean().item())
    assert abs(moved[0] - 1e-3) < 1e-5 and abs(moved[1] - 0.1) < 1e-3


def test_leave_one_out_baseline_is_the_mean_of_the_other_samples():
    rewards = torch.tensor([0.2, 0.5, 0.8, 0.1, 0.1, 0.4])  # two sources, three samples each
    expected = torch.tensor([0.65, 0.5, 0.35, 0.25, 0.25, 0.1])
    assert torch.allclose(leave_one_out_baseline(rewards, 3), expected)
    assert torch.allclose(leave_one_out_baseline(rewards, 2), rewards.view(3, 2).flip(1).view(-1))
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_baseline(rewards, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out_baseline(rewards, 4)


def test_sentence_baseline_is_the_same_at_every_position():
    baselines = sentence_baseline(torch.tensor([0.3, 0.7]), width=4)
    assert baselines.shape == (2, 4) and baselines[1].eq(0.7).all() and baselines[0].eq(0.3).all()
