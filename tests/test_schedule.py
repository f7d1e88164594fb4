"""Algorithm 1 and the placement of s: pure functions, no fairseq."""

import pytest
import torch

from fairseq_mixer.schedule import (
    check_schedule_options,
    loss_masks,
    mixer_stage,
    teacher_forced_lengths,
)


def stages(units, **options):
    defaults = dict(xent_units=25, units_per_stage=5, delta=3, unroll_steps=25, xent_weight=0.5)
    defaults.update(options)
    return [mixer_stage(unit, **defaults) for unit in units]


def test_release_defaults_run_s_from_25_down_to_1():
    epochs = range(1, 101)
    s_values = [stage.s for stage in stages(epochs)]
    assert s_values[:25] == [25] * 25
    expected = [25] + list(range(22, 0, -3))
    assert sorted(set(s_values), reverse=True) == expected
    for k, s in enumerate(expected[1:], start=1):
        first_epoch = 25 + 5 * (k - 1) + 1
        assert s_values[first_epoch - 1 : first_epoch + 4] == [s] * 5
    assert s_values[-1] == 1


def test_xent_weight_is_one_in_the_first_stage_and_w_after():
    first, mixed = stages([25, 26], xent_weight=0.3)
    assert (first.index, first.xent_weight, first.uses_reinforce) == (0, 1.0, False)
    assert (mixed.index, mixed.s, mixed.xent_weight, mixed.uses_reinforce) == (1, 22, 0.3, True)


def test_last_stage_keeps_the_smallest_s_at_least_one():
    assert [
        st.s for st in stages(range(1, 8), xent_units=0, units_per_stage=1, delta=3, unroll_steps=8)
    ] == [5, 2, 2, 2, 2, 2, 2]
    assert stages([1], xent_units=0, unroll_steps=1, units_per_stage=1)[0].index == 0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(delta=0), "--mixer-delta"),
        (dict(unroll_steps=0), "--mixer-unroll-steps"),
        (dict(xent_weight=1.5), "--mixer-xent-weight"),
        (dict(xent_weight=-0.1), "--mixer-xent-weight"),
        (dict(units_per_stage=0), "--mixer-epochs-per-stage"),
        (dict(xent_units=-1), "--mixer-xent-epochs"),
    ],
)
def test_impossible_options_are_named(options, message):
    values = dict(xent_units=1, units_per_stage=1, delta=1, unroll_steps=5, xent_weight=0.5)
    values.update(options)
    with pytest.raises(ValueError, match=message):
        check_schedule_options(**values)


def test_absolute_placement_counts_from_every_sentence_start():
    ref_lengths = torch.tensor([3, 6, 10])  # tokens including EOS
    assert teacher_forced_lengths(ref_lengths, 4, 25, "absolute", 0).tolist() == [3, 4, 4]
    assert teacher_forced_lengths(ref_lengths, 4, 25, "absolute", 1).tolist() == [3, 3, 3]


def test_per_sentence_placement_samples_the_last_words_of_every_reference():
    ref_lengths = torch.tensor([3, 6, 10])
    # stage with T - s = 3: the last 3 words (and EOS) are sampled
    assert teacher_forced_lengths(ref_lengths, 22, 25, "per_sentence", 0).tolist() == [0, 2, 6]


def test_loss_masks_normalized_and_release():
    prefix = torch.tensor([2, 4])
    ref_lengths = torch.tensor([5, 4])  # the second sentence is entirely teacher-forced
    hyp_lengths = torch.tensor([6, 4])
    xent, rl = loss_masks(prefix, ref_lengths, hyp_lengths, 6, overlap=0)
    assert xent.int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert rl.int().tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    xent, rl = loss_masks(prefix, ref_lengths, hyp_lengths, 6, overlap=1)
    assert xent.int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert rl.int().tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
