"""Sampling continuations: the draw, the prefix, EOS and padding."""

import pytest
import torch
from harness import ARCHS, assert_rollouts_agree, build, first_batch, varied_prefixes

from fairseq_mixer.rollout import sampling
from fairseq_mixer.rollout.decoder_features import decoder_features_and_output
from fairseq_mixer.rollout.positions import at_positions, token_positions
from fairseq_mixer.rollout.sampling import (
    inverse_cdf_draw,
    sample_after_prefix,
    sample_and_score_after_prefix,
    samples_in_training_pass,
    shift_right,
)


def test_inverse_cdf_draw_follows_the_distribution_and_skips_zeros():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3]]).repeat(20000, 1) * 3.0  # unnormalised rows
    uniforms = torch.rand(len(probs), generator=torch.Generator().manual_seed(0))
    draws = inverse_cdf_draw(probs, uniforms)
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


def seeded_sampler(synthetic_bin, arch: str):
    """(draw, pad): `draw()` samples continuations of varied prefixes of a batch in eval
    mode, seeded alike at every call."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "mixer"])
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    prefix, max_lengths = varied_prefixes(target, pad, spread=7)
    model.eval()
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])

    def draw() -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        args = (target, prefix, max_lengths, generator, pad, eos)
        return sample_after_prefix(model, encoder_out, *args)

    return draw, pad


@pytest.mark.parametrize("arch", ["lstm", "transformer", "fconv", "mixer_paper"])
def test_dropping_finished_rows_changes_no_draw(synthetic_bin, arch, monkeypatch):
    """Sentences leave the decoding batch as they finish; the draws stay those of the full one."""
    draw, pad = seeded_sampler(synthetic_bin, arch)
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.75)
    shrinking = draw()
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.0)
    assert torch.equal(shrinking, draw())
    assert shrinking.ne(pad).sum(1).unique().numel() > 3


@pytest.mark.parametrize("arch", ["lstm", "mixer_paper"])
def test_one_pass_rollout_draws_and_scores_as_two_passes(synthetic_bin, arch, monkeypatch):
    """Drawn inside the training pass (dropout 0): the same samples as under no_grad, and the
    features and log-probabilities a teacher-forced pass over them gives, with the graph."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "mixer"])
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.9)  # compacts several times
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    prefix, max_lengths = varied_prefixes(target, pad, spread=7)
    args = (target, prefix, max_lengths)
    net_input = sample["net_input"]
    model.train()
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    hyps, features, lprobs = sample_and_score_after_prefix(
        model, encoder_out, *args, torch.Generator().manual_seed(3), pad, eos
    )
    assert features.requires_grad and lprobs.requires_grad
    model.eval()
    assert torch.equal(
        hyps,
        sample_after_prefix(model, encoder_out, *args, torch.Generator().manual_seed(3), pad, eos),
    )
    expected_features, decoder_out = decoder_features_and_output(
        model.decoder, shift_right(hyps, eos, pad), encoder_out
    )
    expected_lprobs = model.get_normalized_probs(decoder_out, log_probs=True)
    where = token_positions(hyps, pad)
    assert torch.allclose(features, at_positions(expected_features, where), atol=1e-5)
    assert torch.allclose(lprobs, at_positions(expected_lprobs, where), atol=1e-5)


def test_one_pass_rollout_needs_a_recurrent_decoder(synthetic_bin):
    with pytest.raises(ValueError, match="one_pass needs a recurrent.*TransformerDecoder"):
        build(
            synthetic_bin,
            ARCHS["transformer"] + ["--criterion", "mixer", "--mixer-rollout", "one_pass"],
        )
    _, _, model, _ = build(synthetic_bin, ARCHS["fconv"] + ["--criterion", "mixer"])
    assert not samples_in_training_pass(model.decoder, "auto")


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_greedy_continuation_takes_the_most_probable_token(synthetic_bin, arch):
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "mixer"])
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    ref_lengths = target.ne(pad).sum(1)
    prefix = torch.minimum(torch.full_like(ref_lengths, 2), ref_lengths - 1)
    net_input = sample["net_input"]
    model.eval()
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        hyps = sample_after_prefix(
            model, encoder_out, target, prefix, ref_lengths + 3, None, pad, eos, greedy=True
        )
        decoder_out = model.decoder(shift_right(hyps, eos, pad), encoder_out=encoder_out)
        lprobs = model.get_normalized_probs(decoder_out, log_probs=True)
    lprobs[:, :, pad] = -float("inf")
    positions = torch.arange(hyps.size(1))
    continued = (positions >= prefix.unsqueeze(1)) & hyps.ne(pad)
    assert continued.sum() > len(prefix)
    assert torch.equal(hyps[continued], lprobs.argmax(-1)[continued])
    assert torch.equal(
        hyps[:, :2][prefix.unsqueeze(1).gt(positions[:2])],
        target[:, :2][prefix.unsqueeze(1).gt(positions[:2])],
    )


def _launch_bound(monkeypatch, on: bool) -> None:
    monkeypatch.setattr(sampling, "uses_launch_bound_loop", lambda device: on)


@pytest.mark.parametrize("arch", ["lstm", "transformer", "fconv"])
def test_launch_bound_loop_draws_as_the_synchronising_one(synthetic_bin, arch, monkeypatch):
    """The loop run on CUDA (every row draws, a mask keeps the draws, a look at the batch
    every few steps) gives the samples of the CPU loop for the same seed."""
    draw, pad = seeded_sampler(synthetic_bin, arch)
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.9)
    monkeypatch.setattr(sampling, "STEPS_BETWEEN_SYNCS", 3)
    _launch_bound(monkeypatch, True)
    launch_bound = draw()
    _launch_bound(monkeypatch, False)
    assert torch.equal(launch_bound, draw())
    assert launch_bound.ne(pad).sum(1).unique().numel() > 3


@pytest.mark.parametrize("arch", ["lstm", "mixer_paper"])
def test_launch_bound_one_pass_rollout_projects_once_with_the_same_gradients(
    synthetic_bin, arch, monkeypatch
):
    """In the launch-bound one-pass rollout the log-probabilities come from one projection
    of the stacked features after the loop: same samples, values and gradients."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "mixer"])
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.9)
    monkeypatch.setattr(sampling, "STEPS_BETWEEN_SYNCS", 3)
    model.train()
    _, grads = assert_rollouts_agree(
        model, task, lambda on: _launch_bound(monkeypatch, on), grad_atol=1e-5
    )
    assert len(grads) > 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")
def test_cuda_graph_captures_share_one_stream_and_one_cublas_workspace():
    """One capture per update: on a new stream each, cuBLAS kept a 32 MiB workspace per
    stream and the memory in use grew every update."""
    device = torch.device("cuda")
    weight, inputs = torch.randn(64, 64, device=device), torch.randn(8, 64, device=device)
    outputs = torch.empty(8, 64, device=device)

    def step() -> None:
        outputs.copy_(inputs @ weight)

    sampling._run_then_capture(step, device)()
    torch.cuda.synchronize(device)
    after_first = torch.cuda.memory_allocated(device)
    for _ in range(5):
        sampling._run_then_capture(step, device)()
    torch.cuda.synchronize(device)
    assert sampling._capture_stream(device) is sampling._capture_stream(device)
    assert torch.cuda.memory_allocated(device) - after_first < 2**20
    assert torch.equal(outputs, inputs @ weight)
