"""The lean step of fairseq's LSTMDecoder against fairseq's own incremental decoding."""

import pytest
import torch
from fairseq.models.lstm import LSTMDecoder
from harness import (
    ARCHS,
    assert_rollouts_agree,
    build,
    first_batch,
    fixed_shape_loop,
    graph_and_launch_bound_samples,
    varied_prefixes,
)

from fairseq_mixer.rollout import sampling
from fairseq_mixer.rollout.lstm_step import LeanLSTMState, supports_lean_lstm_step
from fairseq_mixer.rollout.sampling import sample_after_prefix

CONFIGS = {
    "lstm": ARCHS["lstm"],
    "mixer_paper": ARCHS["mixer_paper"],
    "two_layers_bidirectional_projected_out": ARCHS["lstm"] + [
        "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-bidirectional",
        "--decoder-out-embed-dim", "12",
    ],
    "no_attention_shared_embeddings": ARCHS["lstm"] + [
        "--decoder-attention", "False", "--share-decoder-input-output-embed",
    ],
    "residuals": ARCHS["lstm"] + ["--encoder-layers", "2", "--decoder-layers", "2"],  # see built
}  # fmt: skip


def built(synthetic_bin, config: str, dropout: float):
    flags = CONFIGS[config] + ["--criterion", "mixer", "--dropout", str(dropout)]
    _, task, model, _ = build(synthetic_bin, flags)
    if config == "residuals":
        model.decoder = LSTMDecoder(
            task.target_dictionary, embed_dim=16, hidden_size=16, out_embed_dim=16,
            num_layers=2, dropout_in=dropout, dropout_out=dropout, encoder_output_units=16,
            residuals=True,
        )  # fmt: skip
    return task, model


def stepped_features(model, encoder_out, tokens, keep_at, rows, lean: bool, seed: int):
    """Features [B', T, C] of feeding `tokens` [B, T] one by one, keeping only `rows` from step
    `keep_at` on, through the lean state or fairseq's incremental state."""
    decoder = model.decoder
    torch.manual_seed(seed)
    state = LeanLSTMState(decoder, encoder_out) if lean else None
    incremental: dict = {}
    outputs = []
    for t in range(tokens.size(1)):
        if t == keep_at:
            tokens = tokens.index_select(0, rows)
            outputs = [out.index_select(0, rows) for out in outputs]
            if lean:
                state.keep(rows)
            else:
                decoder.reorder_incremental_state_scripting(incremental, rows)
                encoder_out = model.encoder.reorder_encoder_out(encoder_out, rows)
        if lean:
            outputs.append(state.step(tokens[:, t], t))
        else:
            features, _ = decoder.extract_features(
                tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=incremental
            )
            outputs.append(features[:, -1])
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("mode", ["eval", "train_with_dropout"])
def test_every_step_gives_fairseqs_features(synthetic_bin, config, mode):
    """Same features at every step, before and after dropping rows; in training mode with
    dropout the same draws too, since the same modules run in the same order."""
    task, model = built(synthetic_bin, config, dropout=0.3)
    model.train(mode != "eval")
    sample = first_batch(task)
    net_input = sample["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert supports_lean_lstm_step(model.decoder, encoder_out)
    tokens = net_input["prev_output_tokens"]
    rows = torch.arange(0, tokens.size(0), 2)
    args = (model, encoder_out, tokens, 3, rows)
    lean = stepped_features(*args, lean=True, seed=7)
    expected = stepped_features(*args, lean=False, seed=7)
    assert lean.shape == expected.shape == (len(rows), tokens.size(1), lean.size(-1))
    assert torch.allclose(lean, expected, atol=1e-6)


@pytest.mark.parametrize("config", ["lstm", "mixer_paper", "residuals"])
def test_one_pass_rollout_on_the_lean_state_gives_fairseqs_samples_and_gradients(
    synthetic_bin, config, monkeypatch
):
    """The training rollout, dropout on: the same samples, features, log-probabilities and
    gradients through the lean state as through fairseq's incremental decoding."""
    task, model = built(synthetic_bin, config, dropout=0.2)
    monkeypatch.setattr(sampling, "COMPACT_WHEN_LIVE_SHARE", 0.9)
    model.train()
    hyps, grads = assert_rollouts_agree(
        model,
        task,
        lambda lean: monkeypatch.setattr(sampling, "LEAN_LSTM_STEP", lean),
        grad_atol=1e-6,
    )
    assert hyps.ne(task.tgt_dict.pad()).sum(1).unique().numel() > 3
    assert len(grads) > 5


def test_other_decoders_keep_fairseqs_path(synthetic_bin):
    """A subclass (it may override what a step computes), adaptive softmax, a transformer."""

    class OwnStep(LSTMDecoder):
        pass

    task, model = built(synthetic_bin, "lstm", dropout=0.0)
    sample = first_batch(task)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert supports_lean_lstm_step(model.decoder, encoder_out)
    assert not supports_lean_lstm_step(model.decoder, None)
    own = OwnStep(task.target_dictionary, embed_dim=16, hidden_size=16, out_embed_dim=16)
    assert not supports_lean_lstm_step(own, encoder_out)
    adaptive = LSTMDecoder(
        task.target_dictionary, embed_dim=16, hidden_size=16, out_embed_dim=16,
        adaptive_softmax_cutoff=[10],
    )  # fmt: skip
    assert not supports_lean_lstm_step(adaptive, encoder_out)
    _, _, transformer, _ = build(synthetic_bin, ARCHS["transformer"] + ["--criterion", "mixer"])
    assert not supports_lean_lstm_step(transformer.decoder, encoder_out)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("greedy", [False, True])
def test_fixed_shape_loop_draws_as_the_compacting_one(synthetic_bin, config, greedy, monkeypatch):
    """The two-pass rollout's no-grad loop that a CUDA graph replays (run step by step on the
    CPU here): no host read in a step, the state written into the same tensors at every step,
    the encoder output left as it was, and the same samples as the CPU's loop."""
    task, model = built(synthetic_bin, config, dropout=0.0)
    model.eval()
    monkeypatch.setattr(sampling, "STEPS_BETWEEN_SYNCS", 3)
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    target = sample["target"]
    prefix, max_lengths = varied_prefixes(target, pad, spread=7)
    net_input = sample["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])

    def draw() -> torch.Tensor:
        generator = None if greedy else torch.Generator().manual_seed(5)
        args = (target, prefix, max_lengths, generator, pad, eos)
        return sample_after_prefix(model, encoder_out, *args, greedy=greedy)

    fixed_step = LeanLSTMState.fixed_step

    def in_place(state, tokens, t):
        def memory() -> list:
            return [x.data_ptr() for x in state.hiddens + state.cells + [state.input_feed]]

        before = memory()
        features = fixed_step(state, tokens, t)
        assert memory() == before
        return features

    monkeypatch.setattr(LeanLSTMState, "fixed_step", in_place)
    captured = fixed_shape_loop(monkeypatch, True)
    fixed = draw()
    assert len(captured) == 1
    fixed_shape_loop(monkeypatch, False)
    assert torch.equal(fixed, draw())
    assert fixed.ne(pad).sum(1).unique().numel() > 3


def test_fixed_step_needs_fixed_shapes(synthetic_bin):
    task, model = built(synthetic_bin, "lstm", dropout=0.0)
    model.eval()
    net_input = first_batch(task)["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        state = LeanLSTMState(model.decoder, encoder_out)
        with pytest.raises(ValueError, match="fixed_shapes=True"):
            state.fixed_step(net_input["prev_output_tokens"][:, 0], torch.tensor([0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")
def test_cuda_graph_loop_draws_as_the_launch_bound_one(synthetic_bin):
    task, model = built(synthetic_bin, "lstm", dropout=0.0)
    model.cuda().eval()
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    prefix, max_lengths = varied_prefixes(sample["target"], pad, spread=7)
    net_input = {key: value.cuda() for key, value in sample["net_input"].items()}
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    references = tuple(x.cuda() for x in (sample["target"], prefix, max_lengths))
    graphed, launch_bound = graph_and_launch_bound_samples(model, encoder_out, references, pad, eos)
    assert torch.equal(graphed, launch_bound)
