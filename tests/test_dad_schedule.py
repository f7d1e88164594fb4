"""DAD's eps decays (Bengio et al. 2015) and the masks of the model-fed inputs."""

import math

import pytest
import torch

from fairseq_mixer.dad_schedule import check_decay_options, reference_probability
from fairseq_mixer.rollout.fed_back import bernoulli_from_model, prefix_from_model


@pytest.mark.parametrize(
    "decay, k, expected",
    [
        ("linear", 1.0, lambda i: max(0.1, 1.0 - 0.01 * i)),
        ("exponential", 0.9, lambda i: max(0.1, 0.9**i)),
        ("inverse_sigmoid", 10.0, lambda i: max(0.1, 10.0 / (10.0 + math.exp(i / 10.0)))),
    ],
)
def test_decays_follow_bengio_et_al_with_a_floor(decay, k, expected):
    for updates in (0, 1, 7, 50, 120, 5_000):
        got = reference_probability(updates, decay, k, slope=0.01, min_eps=0.1)
        assert got == pytest.approx(expected(updates), rel=1e-12), (decay, updates)


def test_decays_start_near_one_and_fall():
    for decay in ("linear", "exponential", "inverse_sigmoid"):
        values = [reference_probability(i, decay, None, 1e-4, 0.0) for i in range(0, 20_001, 500)]
        assert values[0] > 0.99
        assert all(a >= b for a, b in zip(values, values[1:], strict=False))
        assert values[-1] < 0.5
    assert reference_probability(10**9, "inverse_sigmoid", 1.0, 1e-4, 0.0) < 1e-300


@pytest.mark.parametrize(
    "options, flag",
    [
        (("linear", 1.5, 1e-4, 0.0), "--dad-k"),
        (("linear", 1.0, 0.0, 0.0), "--dad-linear-slope"),
        (("exponential", 1.0, 1e-4, 0.0), "--dad-k"),
        (("inverse_sigmoid", 0.5, 1e-4, 0.0), "--dad-k"),
        (("inverse_sigmoid", None, 1e-4, 1.5), "--dad-min-eps"),
        (("mixer", 2.0, 1e-4, 0.0), "--dad-k"),
        (("cosine", None, 1e-4, 0.0), "--dad-schedule"),
    ],
)
def test_impossible_decay_options_name_the_flag(options, flag):
    with pytest.raises(ValueError, match=flag):
        check_decay_options(*options)


def test_bernoulli_mask_never_replaces_the_bos_or_padding():
    target = torch.tensor([[5, 6, 7, 2], [5, 2, 1, 1]])
    uniforms = torch.tensor([[0.9, 0.1, 0.6, 0.95], [0.99, 0.7, 0.8, 0.9]])
    mask = bernoulli_from_model(target, pad=1, eps=0.5, uniforms=uniforms)
    assert mask.tolist() == [[False, False, True, True], [False, True, False, False]]
    assert not bernoulli_from_model(target, 1, 1.0, uniforms).any()


def test_prefix_mask_feeds_the_reference_for_the_first_s_inputs():
    target = torch.tensor([[5, 6, 7, 8, 2], [5, 6, 2, 1, 1]])
    mask = prefix_from_model(target, pad=1, prefix=torch.tensor([2, 2]))
    assert mask.tolist() == [[False, False, False, True, True], [False, False, False, False, False]]
