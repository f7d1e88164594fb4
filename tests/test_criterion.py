"""The mixer criterion on real fairseq models (lstm, transformer, fconv), in-process."""

import math

import pytest
import torch
from harness import ARCHS, build, first_batch, grads_of, set_stage

from fairseq_mixer.rollout import decoder_features, sampling

MIXED = ["--criterion", "mixer", "--mixer-xent-epochs", "1", "--mixer-epochs-per-stage", "1",
         "--mixer-unroll-steps", "6", "--mixer-delta", "3"]  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_mixed_step_trains_every_architecture(synthetic_bin, arch):
    _, task, model, criterion = build(synthetic_bin, ARCHS[arch] + MIXED)
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    assert task.stage.s == 3 and task.stage.uses_reinforce
    model.train()
    loss, sample_size, log = criterion(model, sample)
    assert torch.isfinite(loss)
    assert log["rl_tokens"] > 0 and log["xent_tokens"] > 0
    assert 0.0 <= float(log["reward"]) <= float(log["sampled_sentences"])
    assert sample_size == int(log["xent_tokens"] + log["rl_tokens"])
    loss.backward()
    model_grads = grads_of(model)
    assert model_grads and all(torch.isfinite(g).all() for g in model_grads.values())
    assert set(grads_of(criterion)) == {"baseline.weight", "baseline.bias"}


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_mixed_step_stays_finite_in_bfloat16(synthetic_bin, arch):
    """Half precision as fairseq's --bf16 would run it: model and criterion in bfloat16 (on
    CPU here; fairseq 0.12 ties --bf16 to TPUs, see docs/performance.md)."""
    _, task, model, criterion = build(synthetic_bin, ARCHS[arch] + MIXED)
    model, criterion = model.to(torch.bfloat16), criterion.to(torch.bfloat16)
    set_stage(task, criterion, epoch=2)
    model.train()
    loss, _, log = criterion(model, first_batch(task))
    assert torch.isfinite(loss)  # fairseq takes the log-softmax in float32, as under --fp16
    assert log["rl_tokens"] > 0 and torch.isfinite(log["baseline_sq_err"])
    loss.backward()
    grads = {**grads_of(model), **grads_of(criterion)}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


def test_validation_reports_teacher_forced_nll(synthetic_bin):
    _, task, model, criterion = build(synthetic_bin, ARCHS["lstm"] + MIXED)
    sample = first_batch(task, "valid")
    set_stage(task, criterion, epoch=3)
    model.eval()
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    target = sample["target"]
    expected = torch.nn.functional.nll_loss(
        lprobs.view(-1, lprobs.size(-1)),
        target.view(-1),
        ignore_index=task.tgt_dict.pad(),
        reduction="sum",
    )
    assert sample_size == sample["ntokens"]
    assert torch.allclose(loss, expected) and torch.allclose(log["nll_loss"], expected)
    assert "rl_tokens" not in log


def test_stage_zero_is_plain_cross_entropy(synthetic_bin):
    _, task, model, criterion = build(synthetic_bin, ARCHS["lstm"] + MIXED)
    sample = first_batch(task)
    set_stage(task, criterion, epoch=1)
    model.train()
    loss, _, log = criterion(model, sample)
    assert "rl_tokens" not in log and log["mixer_s"] == 6 * sample["nsentences"]
    assert torch.allclose(loss, log["nll_loss"])


def test_baseline_sends_no_gradient_into_the_model(synthetic_bin):
    _, task, model, criterion = build(
        synthetic_bin, ARCHS["lstm"] + MIXED + ["--mixer-xent-weight", "0.0"]
    )
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    criterion.baseline.weight.data.normal_()
    model.train()
    criterion.cfg.mixer_baseline_weight = 1.0
    reinforce_only = criterion(model, sample)[0]
    reinforce_only.backward()
    with_baseline = grads_of(model)
    model.zero_grad()
    criterion.zero_grad()
    criterion.cfg.mixer_baseline_weight = 0.0
    criterion(model, sample)[0].backward()
    without_baseline = grads_of(model)
    assert with_baseline.keys() == without_baseline.keys()
    for name, grad in with_baseline.items():
        assert torch.allclose(grad, without_baseline[name], atol=1e-7), name
    assert all(g.abs().sum() == 0 for g in grads_of(criterion).values())


def test_release_scaling_has_unit_sample_size_and_overlapping_step(synthetic_bin):
    _, task, model, criterion = build(
        synthetic_bin, ARCHS["lstm"] + MIXED + ["--mixer-loss-scaling", "release"]
    )
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    model.train()
    loss, sample_size, log = criterion(model, sample)
    assert sample_size == 1 and torch.isfinite(loss)
    long_refs = sample["target"].ne(task.tgt_dict.pad()).sum(1) > 3
    # s = 3: XENT on steps 1..3 of every long reference, sampling from step 3 on.
    assert int(log["xent_tokens"]) >= 3 * int(long_refs.sum())


def test_warm_start_without_criterion_state_and_foreign_state(synthetic_bin):
    _, _, _, criterion = build(synthetic_bin, ARCHS["lstm"] + MIXED)
    before = {k: v.clone() for k, v in criterion.state_dict().items()}
    criterion.load_state_dict(None)
    assert all(torch.equal(before[k], v) for k, v in criterion.state_dict().items())
    with pytest.raises(ValueError, match="another criterion"):
        criterion.load_state_dict({"proj.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="shape"):
        criterion.load_state_dict(
            {"baseline.weight": torch.zeros(3, 16), "baseline.bias": torch.zeros(3)}
        )


def test_sampling_is_seeded_per_batch(synthetic_bin):
    _, task, model, criterion = build(synthetic_bin, ARCHS["lstm"] + MIXED)
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2, num_updates=5)
    model.train()
    first = criterion(model, sample)[2]
    torch.rand(100)
    second = criterion(model, sample)[2]
    # the log-probabilities of the sampled tokens tell the samples apart
    assert float(first["reinforce_loss"]) == float(second["reinforce_loss"])
    set_stage(task, criterion, epoch=2, num_updates=6)
    third = criterion(model, sample)[2]
    assert not math.isclose(float(third["reinforce_loss"]), float(first["reinforce_loss"]))


def test_models_without_incremental_decoding_are_refused():
    from fairseq.models import FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel

    from fairseq_mixer.rollout.decoder_features import check_incremental_decoder

    class PlainDecoder(FairseqDecoder):
        pass

    model = FairseqEncoderDecoderModel(FairseqEncoder(None), PlainDecoder(None))
    with pytest.raises(ValueError, match="incremental decoding.*PlainDecoder"):
        check_incremental_decoder(model)


def test_adaptive_softmax_is_refused(synthetic_bin):
    flags = ARCHS["transformer"] + MIXED + ["--adaptive-softmax-cutoff", "20,40"]
    with pytest.raises(ValueError, match="full softmax.*--adaptive-softmax-cutoff"):
        build(synthetic_bin, flags)


def mixed_update(synthetic_bin, flags: list[str]) -> tuple:
    """(loss, sample size, logging output, gradients) of one training MIXER step with `flags`,
    at stage s = 3 of the first batch."""
    _, task, model, criterion = build(synthetic_bin, flags + MIXED)
    set_stage(task, criterion, epoch=2, num_updates=4)
    model.train()
    loss, sample_size, log = criterion(model, first_batch(task))
    loss.backward()
    return loss, sample_size, log, {**grads_of(model), **grads_of(criterion)}


def assert_same_updates(update: tuple, expected: tuple, grad_atol: float) -> None:
    """The same samples (sizes, hypothesis tokens, reward), loss and gradients."""
    loss, size, log, grads = update
    expected_loss, expected_size, expected_log, expected_grads = expected
    assert size == expected_size
    for key in ("reward", "hyp_tokens"):
        assert float(log[key]) == float(expected_log[key]), key
    assert torch.allclose(loss, expected_loss, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], rtol=1e-4, atol=grad_atol), name


@pytest.mark.parametrize(
    ("arch", "flags"),
    [("lstm", []), ("mixer_paper", []), ("lstm", ["--share-decoder-input-output-embed"])],
)
def test_one_pass_and_two_pass_rollouts_give_the_same_loss_and_gradient(synthetic_bin, arch, flags):
    """Without dropout the two rollouts are the same estimator on the same samples (tied
    input and output embeddings included)."""
    one_pass, two_pass = (
        mixed_update(synthetic_bin, ARCHS[arch] + flags + ["--mixer-rollout", rollout])
        for rollout in ("one_pass", "two_pass")
    )
    assert_same_updates(one_pass, two_pass, grad_atol=1e-6)


@pytest.mark.parametrize(
    "flags", [[], ["--label-smoothing", "0.1", "--mixer-loss-scaling", "release"]]
)
def test_packed_and_padded_teacher_forced_passes_give_the_same_loss_and_gradient(
    synthetic_bin, flags, monkeypatch
):
    """The transformer's teacher-forced pass over the samples' tokens only, against fairseq's
    decoder over the padded batch: the same MIXER loss and gradients (dropout 0)."""
    updates = []
    for packed in (True, False):
        monkeypatch.setattr(decoder_features, "PACKED_TRANSFORMER_PASS", packed)
        updates.append(mixed_update(synthetic_bin, ARCHS["transformer"] + flags))
    assert updates[0][2]["rl_tokens"] > 0
    assert_same_updates(*updates, grad_atol=1e-5)


def argmax_draws(monkeypatch) -> None:
    """Make every draw the most probable token, so that samples are greedy continuations."""
    monkeypatch.setattr(sampling, "inverse_cdf_draw", lambda probs, uniforms: probs.argmax(-1))


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_self_critical_baseline_is_the_reward_of_the_greedy_continuation(
    synthetic_bin, arch, monkeypatch
):
    """With draws forced to the argmax, every sample is the greedy continuation of its
    prefix: the self-critical baseline then equals the reward and REINFORCE vanishes."""
    _, task, model, criterion = build(
        synthetic_bin, ARCHS[arch] + MIXED + ["--mixer-baseline", "self_critical"]
    )
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    model.train()
    argmax_draws(monkeypatch)
    loss, _, log = criterion(model, sample)
    assert log["rl_tokens"] > 0 and float(log["reward"]) > 0
    assert float(log["reinforce_loss"]) == 0 and float(log["baseline_sq_err"]) == 0
    loss.backward()
    assert not grads_of(criterion)  # the learned baseline is not used


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_several_samples_per_source_with_a_leave_one_out_baseline(synthetic_bin, arch, monkeypatch):
    flags = ARCHS[arch] + MIXED + ["--mixer-baseline", "leave_one_out", "--mixer-samples", "3"]
    _, task, model, criterion = build(synthetic_bin, flags)
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    model.train()
    loss, sample_size, log = criterion(model, sample)
    assert log["nsentences"] == sample["target"].size(0)
    assert int(log["sampled_sentences"]) > sample["target"].size(0)
    assert torch.isfinite(loss) and float(log["baseline_sq_err"]) > 0
    loss.backward()
    assert grads_of(model) and not grads_of(criterion)

    # Identical samples (argmax draws, no dropout): each equals the mean of the others, so
    # REINFORCE vanishes, and three copies of a batch give the loss of one copy whose
    # REINFORCE vanishes too (a greedy sample minus its self-critical baseline).
    argmax_draws(monkeypatch)
    loss, sample_size, log = criterion(model, sample)
    assert float(log["reward"]) > 0  # the mean of the others equals the reward up to rounding
    assert abs(float(log["reinforce_loss"])) < 1e-4 and float(log["baseline_sq_err"]) < 1e-10
    criterion.cfg.mixer_samples, criterion.cfg.mixer_baseline = 1, "self_critical"  # also 0
    single_loss, single_size, single_log = criterion(model, sample)
    assert sample_size == 3 * single_size
    assert torch.allclose(loss / sample_size, single_loss / single_size, atol=1e-6)
    assert torch.allclose(log["reward"], 3 * single_log["reward"], atol=1e-5)


def test_leave_one_out_needs_several_samples(synthetic_bin):
    with pytest.raises(ValueError, match="needs --mixer-samples 2 or more"):
        build(synthetic_bin, ARCHS["lstm"] + MIXED + ["--mixer-baseline", "leave_one_out"])
    with pytest.raises(ValueError, match="--mixer-samples must be >= 1"):
        build(synthetic_bin, ARCHS["lstm"] + MIXED + ["--mixer-samples", "0"])
