"""Sampling continuations: the draw, the prefix, EOS and padding."""

import pytest
import torch
from harness import ARCHS, build, first_batch

from fairseq_mixer import sampling
from fairseq_mixer.sampling import inverse_cdf_draw, sample_after_prefix, shift_right


def test_inverse_cdf_draw_follows_the_distribution_and_skips_zeros():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3]]).repeat(20000, 1) * 3.0  # unnormalised rows
    draws = inverse_cdf_draw(probs, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    assert frequencies[1] == 0
    assert torch.allclose(frequencies, torch.tensor([0.2, 0.0, 0.5, 0.3]), atol=0.015)


def test_shift_right_keeps_padding():
    tokens = torch.tensor([[5, 6, 2, 1], [7, 2, 1, 1]])
    assert shift_right(tokens, eos=2, pad=1).tolist() == [[2, 5, 6, 1], [2, 7, 1, 1]]


def test_samples_start_right_after_the_prefix_and_stop_at_eos(synthetic_bin):
    _, task, model, _ = build(synthetic_bin, ARCHS["lstm"] + ["--criterion", "mixer"])
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    ref_lengths = target.ne(pad).sum(1)
    prefix = torch.minimum(torch.full_like(ref_lengths, 3), ref_lengths)
    prefix[0] = ref_lengths[0]  # entirely teacher-forced: copied whole
    max_lengths = ref_lengths + 2
    model.eval()
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    hyps = sample_after_prefix(
        model, encoder_out, target, prefix, max_lengths, torch.Generator().manual_seed(1), pad, eos
    )
    for row in range(hyps.size(0)):
        k = int(prefix[row])
        if k == int(ref_lengths[row]):
            assert torch.equal(hyps[row, :k], target[row, :k]) and hyps[row, k:].eq(pad).all()
            continue
        assert torch.equal(hyps[row, :k], target[row, :k])
        tokens = hyps[row][hyps[row].ne(pad)]
        assert len(tokens) >= k + 1 and len(tokens) <= int(max_lengths[row])
        assert hyps[row, : len(tokens)].ne(pad).all() and hyps[row, len(tokens) :].eq(pad).all()
        eos_positions = (tokens == eos).nonzero().flatten().tolist()
        assert eos_positions in ([], [len(tokens) - 1])
        if not eos_positions:
            assert len(tokens) == int(max_lengths[row])
    again = sample_after_prefix(
        model, encoder_out, target, prefix, max_lengths, torch.Generator().manual_seed(1), pad, eos
    )
    assert torch.equal(hyps, again)


@pytest.mark.parametrize("arch", ["lstm", "transformer", "fconv", "mixer_paper"])
def test_dropping_finished_rows_changes_no_draw(synthetic_bin, arch, monkeypatch):
    """Sentences leave the decoding batch as they finish; the draws stay those of the full one."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "mixer"])
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    ref_lengths = target.ne(pad).sum(1)
    prefix = (torch.arange(len(ref_lengths)) % 4).clamp(max=ref_lengths)
    prefix[::5] = ref_lengths[::5]  # copied whole: never in the decoding batch
    max_lengths = prefix + 1 + torch.arange(len(ref_lengths)) % 7  # rows finish at many steps
    model.eval()
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])

    def draw(share: float) -> torch.Tensor:
        monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", share)
        generator = torch.Generator().manual_seed(3)
        args = (target, prefix, max_lengths, generator, pad, eos)
        return sample_after_prefix(model, encoder_out, *args)

    shrinking, full = draw(0.75), draw(0.0)
    assert torch.equal(shrinking, full)
    assert shrinking.ne(pad).sum(1).unique().numel() > 3
