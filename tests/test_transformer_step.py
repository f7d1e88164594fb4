"""The lean incremental step of fairseq's TransformerDecoder against fairseq's own."""

import pytest
import torch
from harness import (
    ARCHS,
    TRANSFORMER_CONFIGS,
    TWO_LAYERS,
    batch_with_padded_sources,
    build,
    first_batch,
    fixed_shape_loop,
    graph_and_launch_bound_samples,
    varied_prefixes,
)

from fairseq_mixer.rollout import sampling
from fairseq_mixer.rollout.sampling import sample_after_prefix
from fairseq_mixer.rollout.transformer_step import LeanTransformerState, supports_lean_step


def eval_model(synthetic_bin, flags):
    _, task, model, _ = build(synthetic_bin, TWO_LAYERS + flags + ["--criterion", "mixer"])
    model.eval()
    return task, model


def padded_encoder_out(model, sample):
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert encoder_out["encoder_padding_mask"][0].any()  # sentences of different lengths
    return encoder_out


def sampling_prefixes(target: torch.Tensor, pad: int, floor: int):
    """`varied_prefixes` (spread 9), every prefix raised to at least `floor` reference tokens
    (sentences not longer are copied whole): with floor >= 2 the loop prefills its first
    `floor` steps."""
    prefix, max_lengths = varied_prefixes(target, pad, spread=9)
    if floor:
        spread = max_lengths - prefix
        prefix = prefix.clamp(min=floor).clamp(max=target.ne(pad).sum(1))
        max_lengths = prefix + spread
    return prefix, max_lengths


def padded_batch_sampler(synthetic_bin, config: str, greedy: bool, floor: int, monkeypatch):
    """(draw, prefills, pad): `draw()` samples continuations of a batch of many source
    lengths (prefixes of `sampling_prefixes`), seeded alike at every call; `prefills` lists
    the lengths `LeanTransformerState.prefill` is given."""
    task, model = eval_model(synthetic_bin, TRANSFORMER_CONFIGS[config])
    sample = batch_with_padded_sources(task)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    prefix, max_lengths = sampling_prefixes(target, pad, floor)
    encoder_out = padded_encoder_out(model, sample)

    def draw() -> torch.Tensor:
        generator = None if greedy else torch.Generator().manual_seed(5)
        args = (target, prefix, max_lengths, generator, pad, eos)
        return sample_after_prefix(model, encoder_out, *args, greedy=greedy)

    return draw, recorded_prefills(monkeypatch), pad


def recorded_prefills(monkeypatch) -> list:
    """The numbers of steps `LeanTransformerState.prefill` is given, from now on."""
    lengths: list = []
    original = LeanTransformerState.prefill

    def prefill(state, tokens):
        lengths.append(tokens.size(1))
        return original(state, tokens)

    monkeypatch.setattr(LeanTransformerState, "prefill", prefill)
    return lengths


@pytest.mark.parametrize("config", sorted(TRANSFORMER_CONFIGS))
@torch.no_grad()
def test_lean_step_gives_fairseqs_incremental_features(synthetic_bin, config):
    """Every step, before and after dropping rows, gives fairseq's features and logits."""
    task, model = eval_model(synthetic_bin, TRANSFORMER_CONFIGS[config])
    decoder = model.decoder
    sample = batch_with_padded_sources(task)
    encoder_out = padded_encoder_out(model, sample)
    assert supports_lean_step(decoder, encoder_out)
    batch, steps = sample["target"].size(0), 9
    generator = torch.Generator().manual_seed(0)
    first_real = task.tgt_dict.nspecial
    tokens = torch.randint(first_real, len(task.tgt_dict), (batch, steps), generator=generator)
    tokens[:, 0] = task.tgt_dict.eos()
    state = LeanTransformerState(decoder, encoder_out, batch, steps)
    incremental: dict = {}
    for t in range(steps):
        if t == 4:  # compaction: keep some rows, in order
            rows = torch.tensor([0, 2, 3, 7, 11, batch - 1])
            state.keep(rows)
            decoder.reorder_incremental_state_scripting(incremental, rows)
            encoder_out = model.encoder.reorder_encoder_out(encoder_out, rows)
            tokens = tokens[rows]
        expected, _ = decoder.extract_features(
            tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=incremental
        )
        features = state.step(tokens[:, t], t)
        assert features.shape == expected[:, -1].shape
        assert torch.allclose(features, expected[:, -1], atol=1e-5), config
        logits = decoder.output_layer(features)
        assert torch.allclose(logits, decoder.output_layer(expected[:, -1]), atol=1e-5)


@pytest.mark.parametrize("config", sorted(TRANSFORMER_CONFIGS))
@pytest.mark.parametrize("greedy", [False, True])
@pytest.mark.parametrize("floor", [0, 3])
def test_sampling_draws_the_same_with_the_lean_step(
    synthetic_bin, config, greedy, floor, monkeypatch
):
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.9)  # compacts several times
    draw, prefills, pad = padded_batch_sampler(synthetic_bin, config, greedy, floor, monkeypatch)
    states = []
    monkeypatch.setattr(
        sampling,
        "LeanTransformerState",
        lambda *args: states.append(LeanTransformerState(*args)) or states[-1],
    )
    monkeypatch.setattr(sampling, "LEAN_TRANSFORMER_STEP", False)
    fairseqs = draw()
    assert not states
    monkeypatch.setattr(sampling, "LEAN_TRANSFORMER_STEP", True)
    lean = draw()
    assert len(states) == 1
    assert prefills == ([floor] if floor else [])
    assert torch.equal(lean, fairseqs)
    assert lean.ne(pad).sum(1).unique().numel() > 3


@pytest.mark.parametrize(
    "arch,flags",
    [
        ("lstm", []),
        ("mixer_paper", []),
        ("fconv", []),
        ("transformer", ["--cross-self-attention"]),
        ("transformer", ["--adaptive-softmax-cutoff", "20"]),
        ("transformer", ["--quant-noise-pq", "0.1"]),
    ],
)
def test_other_decoders_take_fairseqs_path(synthetic_bin, arch, flags):
    # cross-entropy: the mixer task refuses an adaptive softmax for MIXER training
    flags = ARCHS[arch] + flags + ["--criterion", "cross_entropy"]
    _, task, model, _ = build(synthetic_bin, flags)
    model.eval()
    sample = first_batch(task)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert not supports_lean_step(model.decoder, encoder_out)


def test_training_mode_takes_fairseqs_path(synthetic_bin):
    task, model = eval_model(synthetic_bin, [])
    sample = first_batch(task)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert supports_lean_step(model.decoder, encoder_out)
    model.train()
    tokens = sample["target"]
    rows = torch.arange(tokens.size(0))
    lengths = tokens.ne(task.tgt_dict.pad()).sum(1)
    batch = sampling._DecodingBatch(model, encoder_out, tokens, rows, lengths, lengths)
    assert batch.lean is None
    with pytest.raises(ValueError, match="eval mode"):
        LeanTransformerState(model.decoder, encoder_out, tokens.size(0), 4)


@pytest.mark.parametrize("config", sorted(TRANSFORMER_CONFIGS))
@torch.no_grad()
def test_fixed_shape_step_gives_the_features_of_the_incremental_one(synthetic_bin, config):
    """With fixed shapes (the step index a tensor, the whole cache attended to behind a length
    mask) every step gives the features of the step that attends to the filled part only."""
    task, model = eval_model(synthetic_bin, TRANSFORMER_CONFIGS[config])
    sample = batch_with_padded_sources(task)
    encoder_out = padded_encoder_out(model, sample)
    batch, steps = sample["target"].size(0), 9
    generator = torch.Generator().manual_seed(0)
    first_real = task.tgt_dict.nspecial
    tokens = torch.randint(first_real, len(task.tgt_dict), (batch, steps), generator=generator)
    incremental = LeanTransformerState(model.decoder, encoder_out, batch, steps)
    fixed = LeanTransformerState(model.decoder, encoder_out, batch, steps, fixed_shapes=True)
    for t in range(steps):
        expected = incremental.step(tokens[:, t], t)
        features = fixed.fixed_step(tokens[:, t], torch.tensor([t]))
        assert torch.allclose(features, expected, atol=1e-5), (config, t)
    with pytest.raises(ValueError, match="fixed_shapes=True"):
        incremental.fixed_step(tokens[:, 0], torch.tensor([0]))


@pytest.mark.parametrize("config", sorted(TRANSFORMER_CONFIGS))
@torch.no_grad()
def test_prefill_leaves_the_caches_of_as_many_steps(synthetic_bin, config):
    """After the first K tokens fed at once, every later step gives fairseq's incremental
    features, as after K steps."""
    task, model = eval_model(synthetic_bin, TRANSFORMER_CONFIGS[config])
    decoder = model.decoder
    sample = batch_with_padded_sources(task)
    encoder_out = padded_encoder_out(model, sample)
    batch, steps, prefilled = sample["target"].size(0), 9, 4
    generator = torch.Generator().manual_seed(0)
    first_real = task.tgt_dict.nspecial
    tokens = torch.randint(first_real, len(task.tgt_dict), (batch, steps), generator=generator)
    tokens[:, 0] = task.tgt_dict.eos()
    state = LeanTransformerState(decoder, encoder_out, batch, steps)
    state.prefill(tokens[:, :prefilled])
    incremental: dict = {}
    for t in range(steps):
        expected, _ = decoder.extract_features(
            tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=incremental
        )
        if t >= prefilled:
            features = state.step(tokens[:, t], t)
            assert torch.allclose(features, expected[:, -1], atol=1e-5), (config, t)
    with pytest.raises(ValueError, match="fed already"):
        state.prefill(tokens[:, :2])


@pytest.mark.parametrize("config", sorted(TRANSFORMER_CONFIGS))
@pytest.mark.parametrize("greedy", [False, True])
@pytest.mark.parametrize("floor", [0, 3])
def test_fixed_shape_loop_draws_as_the_compacting_one(
    synthetic_bin, config, greedy, floor, monkeypatch
):
    """The loop a CUDA graph replays (run step by step on the CPU here): the whole batch at
    every step, a look at it every few steps, the same samples as the CPU's loop, after the
    same prefill."""
    monkeypatch.setattr(sampling, "STEPS_BETWEEN_SYNCS", 3)
    draw, prefills, pad = padded_batch_sampler(synthetic_bin, config, greedy, floor, monkeypatch)
    captured = fixed_shape_loop(monkeypatch, True)
    fixed = draw()
    assert len(captured) == 1
    fixed_shape_loop(monkeypatch, False)
    assert torch.equal(fixed, draw())
    assert prefills == ([floor, floor] if floor else [])
    assert fixed.ne(pad).sum(1).unique().numel() > 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")
def test_cuda_graph_loop_draws_as_the_launch_bound_one(synthetic_bin):
    task, model = eval_model(synthetic_bin, [])
    model.cuda()
    sample = batch_with_padded_sources(task)
    sample = {
        key: ({k: v.cuda() for k, v in value.items()} if key == "net_input" else value)
        for key, value in sample.items()
    }
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    prefix, max_lengths = (x.cuda() for x in varied_prefixes(sample["target"], pad, spread=9))
    target = sample["target"].cuda()
    encoder_out = padded_encoder_out(model, sample)
    graphed, launch_bound = graph_and_launch_bound_samples(
        model, encoder_out, (target, prefix, max_lengths), pad, eos
    )
    assert torch.equal(graphed, launch_bound)
