"""Drawing the model's own continuations of reference prefixes, batched.

Two ways (spec section 3, `--mixer-rollout`):
- two passes: draw under no_grad in eval mode (`sample_after_prefix`), then score the
  hypotheses with one teacher-forced pass; best where that pass is parallel (transformer,
  fconv);
- one pass: draw inside the training forward pass itself, with grad and in train mode
  (`sample_and_score_after_prefix`), as the release did; best for recurrent decoders,
  whose teacher-forced pass steps through time anyway, so a second pass would double it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from fairseq.models.lstm import LSTMDecoder

from fairseq_mixer.rollout.decoder_features import has_feature_api, log_probs_of_features
from fairseq_mixer.rollout.lstm_step import LeanLSTMState, supports_lean_lstm_step
from fairseq_mixer.rollout.transformer_step import LeanTransformerState, supports_lean_step

ROLLOUTS = ("auto", "one_pass", "two_pass")

# Whether the no-grad loop steps fairseq's TransformerDecoder with the lean step of
# transformer_step, and both loops step fairseq's LSTMDecoder with that of lstm_step (same
# numbers, less overhead); tests turn them off to compare.
LEAN_TRANSFORMER_STEP = True
LEAN_LSTM_STEP = True

# Whether the no-grad loop of a lean state (the transformer's; the LSTM's under
# `--mixer-rollout two_pass`) on CUDA runs with fixed shapes, its steps replayed from one CUDA
# graph (`_decode_with_fixed_shapes`). Off until a training run on a GPU has used it: in the
# bench on an H200 it sampled the same sentences, faster (docs/performance.md). The bench's
# `--cuda-loop graph` turns it on.
CUDA_GRAPH_ON_CUDA = False

# In a launch-bound loop, the steps between two looks at how many rows still decode (each
# look waits for the device).
STEPS_BETWEEN_SYNCS = 8


def inverse_cdf_draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One multinomial draw per row of `probs` [B, V] (rows need not sum to one), made with
    the uniform numbers `uniforms` [B] in [0, 1).

    A cumulative sum and a binary search per row: on CPU this is far cheaper than
    torch.multinomial over a large vocabulary (fairseq-notes, "Speed seen here").
    """
    cdf = probs.cumsum(-1)
    u = uniforms.to(cdf.dtype).unsqueeze(1)
    draws = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    return draws.clamp_(max=probs.size(-1) - 1)


def batch_generator(seed: int, num_updates: int, sample: dict, device) -> torch.Generator:
    """A generator seeded by (seed, update, first sentence id) for the draws of one batch.

    The draws then do not depend on which worker makes them or on what was drawn before: a
    distributed run reproduces a single process, and a resumed run an uninterrupted one.
    """
    first_id = int(sample["id"][0]) if "id" in sample else 0
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + num_updates * 8_191 + first_id) % (2**63))
    return generator


def shift_right(tokens: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """Decoder input for teacher forcing on `tokens`: EOS (fairseq's BOS) then tokens[:-1]."""
    prev = torch.cat([tokens.new_full((tokens.size(0), 1), eos), tokens[:, :-1]], dim=1)
    return prev.masked_fill(tokens.eq(pad), pad)


def samples_in_training_pass(decoder, rollout: str) -> bool:
    """Whether `--mixer-rollout rollout` draws inside the training pass for this decoder."""
    if rollout not in ROLLOUTS:
        raise ValueError(f"--mixer-rollout must be one of {ROLLOUTS} (got {rollout!r})")
    recurrent = isinstance(decoder, LSTMDecoder)
    if rollout == "one_pass" and not recurrent:
        raise ValueError(
            "--mixer-rollout one_pass needs a recurrent (LSTM) decoder, got "
            f"{type(decoder).__name__}: use two_pass (or auto)"
        )
    return rollout == "one_pass" or (rollout == "auto" and recurrent)


def decoder_step(decoder, tokens: torch.Tensor, encoder_out, incremental_state: dict):
    """Advance the decoder by one token; return a function giving the logits of chosen rows.

    Rows still in their reference prefix, or finished, need no output projection: where the
    decoder exposes extract_features()/output_layer() only the rows that draw are projected.
    """
    if has_feature_api(decoder):
        features, _ = decoder.extract_features(
            tokens, encoder_out=encoder_out, incremental_state=incremental_state
        )
        return _row_logits(decoder, features[:, -1, :])
    logits, _ = decoder(tokens, encoder_out=encoder_out, incremental_state=incremental_state)
    return lambda rows: logits[rows, -1:, :]


def lean_decoder_step(decoder, state, tokens: torch.Tensor, step: int):
    """`decoder_step` through a lean decoding state: `tokens` [B] is the newest token."""
    return _row_logits(decoder, state.step(tokens, step))


def _row_logits(decoder, features: torch.Tensor):
    """A function giving the logits [R, 1, V] of rows of one step's `features` [B, d]."""
    return lambda rows: decoder.output_layer(features[rows].unsqueeze(1))


# Rows that no longer need decoder steps are dropped from the decoding batch once at most
# this share of it still needs them: reordering the incremental state costs an index_select
# per cached tensor, so it pays only when a good part of the batch has finished.
COMPACT_WHEN_LIVE_SHARE = 0.75


def _start_tokens(reference, prefix_lengths, max_lengths, pad: int, eos: int):
    """(tokens [B, width + 1]: EOS then the reference prefixes, lengths [B], sampled [B])."""
    ref_lengths = reference.ne(pad).sum(1)
    sampled = prefix_lengths < ref_lengths
    lengths = torch.where(sampled, torch.maximum(max_lengths, prefix_lengths + 1), ref_lengths)
    width = int(lengths.max())
    tokens = reference.new_full((reference.size(0), width + 1), pad)
    tokens[:, 0] = eos
    ref = reference[:, :width]
    positions = torch.arange(ref.size(1), device=ref.device)
    copy = positions.unsqueeze(0) < prefix_lengths.unsqueeze(1)
    tokens[:, 1 : ref.size(1) + 1] = ref.masked_fill(~copy, pad)
    return tokens, lengths, sampled


def _trimmed(hyps: torch.Tensor, pad: int) -> torch.Tensor:
    return hyps[:, : int(hyps.ne(pad).sum(1).max())]


@torch.no_grad()
def sample_after_prefix(
    model,
    encoder_out,
    reference: torch.Tensor,
    prefix_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
    generator: torch.Generator | None,
    pad: int,
    eos: int,
    greedy: bool = False,
) -> torch.Tensor:
    """Hypotheses [B, L]: reference[:k] then samples from the model until EOS or max length.

    `reference` [B, Lr] holds right-padded targets ending with EOS; `prefix_lengths` k [B]
    the number of reference tokens fed before sampling; a sentence whose k equals its
    reference length is copied whole. The decoder runs incrementally with the encoder output
    computed once by the caller, on the sentences that still sample: copied and finished
    ones leave the decoding batch. Positions after a sampled EOS are padding. With `greedy`
    every continuation takes the most probable token instead of a draw.
    """
    tokens, lengths, sampled = _start_tokens(reference, prefix_lengths, max_lengths, pad, eos)
    live = sampled.nonzero().squeeze(1)
    if live.numel() > 0:
        fixed = uses_fixed_shape_loop(tokens.device)
        batch = _DecodingBatch(model, encoder_out, tokens, live, prefix_lengths, lengths, fixed)
        _decode(batch, tokens, generator, pad, eos, outputs=None, greedy=greedy)
    return _trimmed(tokens[:, 1:], pad)


def sample_and_score_after_prefix(
    model,
    encoder_out,
    reference: torch.Tensor,
    prefix_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
    generator: torch.Generator | None,
    pad: int,
    eos: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hypotheses [B, L], decoder features [N, d], log-probabilities [N, V]).

    The hypotheses are those of `sample_after_prefix`, drawn in the model's current mode
    with grad: the features and log-probabilities of their N tokens, in the order of
    `token_positions(hypotheses, pad)`, are those a teacher-forced pass over the hypotheses
    would give there, and carry the graph. Needs a decoder with extract_features().
    """
    tokens, lengths, _ = _start_tokens(reference, prefix_lengths, max_lengths, pad, eos)
    every_row = torch.arange(tokens.size(0), device=tokens.device)
    batch = _DecodingBatch(model, encoder_out, tokens, every_row, prefix_lengths, lengths)
    outputs = _StepOutputs()
    _decode(batch, tokens, generator, pad, eos, outputs)
    hyps = _trimmed(tokens[:, 1:], pad)
    features, lprobs = outputs.stacked(model, hyps.ne(pad).sum(1), hyps.size(1))
    return hyps, features, lprobs


def uses_launch_bound_loop(device: torch.device) -> bool:
    """Whether `_decode` runs launch-bound on `device`: on CUDA, where a small model's step
    costs its kernel launches and every wait for the device leaves it idle."""
    return device.type == "cuda"


def uses_fixed_shape_loop(device: torch.device) -> bool:
    """Whether the no-grad loop of a lean state runs with fixed shapes on `device`
    (`_decode_with_fixed_shapes`): on CUDA, where its steps replay a CUDA graph."""
    return CUDA_GRAPH_ON_CUDA and device.type == "cuda"


def _decode(batch, tokens, generator, pad: int, eos: int, outputs, greedy: bool = False) -> None:
    """The decoding loop of both rollouts.

    Only the rows that draw are projected onto the vocabulary, without grad. With `outputs`
    (one pass, with grad) each step's features are kept, to be projected with grad once after
    the loop.

    The uniform numbers, one per sentence of the whole batch and step, are drawn before the
    first step, so the samples of a seed depend neither on which rows are still in the
    decoding batch nor on the loop's kind.
    A launch-bound loop (`uses_launch_bound_loop`) never waits for the device within a step:
    every row of the decoding batch is projected and draws, a mask keeps the draws of the rows
    that sample, and the rows still decoding are counted (and the batch compacted) only every
    STEPS_BETWEEN_SYNCS steps. On a CPU the synchronising loop costs less: there a step's time
    is its arithmetic, which the rows that do not draw would only add to.
    """
    steps = tokens.size(1) - 1
    uniforms = None
    if not greedy:
        uniforms = torch.rand(steps, tokens.size(0), generator=generator, device=tokens.device)
    first = _prefill(batch)
    if getattr(batch.lean, "fixed_shapes", False):
        _decode_with_fixed_shapes(batch, tokens, uniforms, pad, eos, first)
        return
    launch_bound = uses_launch_bound_loop(tokens.device)
    for step in range(first, steps):
        drawing = batch.active & (batch.prefix <= step)
        rows = None if launch_bound else drawing.nonzero().squeeze(1)
        probs = _next_token_probs(batch, step, rows, outputs)
        if probs is not None:
            chosen = None
            if uniforms is not None:
                chosen = uniforms[step][batch.rows if rows is None else batch.rows[rows]]
            draws = draw_tokens(probs, chosen, pad)
            if rows is None:
                draws = torch.where(drawing, draws, batch.tokens[:, step + 1])
                batch.tokens[:, step + 1] = draws
                batch.active &= ~(drawing & draws.eq(eos))
            else:
                batch.tokens[rows, step + 1] = draws
                batch.active[rows[draws.eq(eos)]] = False
        batch.active &= batch.lengths > step + 1
        if launch_bound and (step + 1) % STEPS_BETWEEN_SYNCS != 0:
            continue
        still = int(batch.active.sum())
        if still == 0:
            break
        if still <= COMPACT_WHEN_LIVE_SHARE * batch.tokens.size(0):
            batch.keep_active(tokens)
    batch.write_back(tokens)


def _prefill(batch) -> int:
    """Feeds the steps in which no row of the decoding batch draws yet (every row still in its
    reference prefix) at once, where the decoder's state can (the lean transformer state,
    whose `prefill` runs them as one parallel pass instead of a step each); returns how many
    steps it fed. In the mixed stages with a long prefix, most of the loop's steps."""
    if not hasattr(batch.lean, "prefill"):
        return 0
    first = int(batch.prefix.min())
    if first < 2:
        return 0
    batch.lean.prefill(batch.tokens[:, :first])
    return first


def draw_tokens(probs: torch.Tensor, uniforms: torch.Tensor | None, pad: int) -> torch.Tensor:
    """The tokens [R] drawn from `probs` [R, V] with `uniforms` [R], never padding; the most
    probable ones where `uniforms` is None (greedy)."""
    probs = probs.float()
    probs.select(-1, pad).fill_(0.0)
    if uniforms is None:
        return probs.argmax(-1)
    return inverse_cdf_draw(probs, uniforms)


def _decode_with_fixed_shapes(batch, tokens, uniforms, pad: int, eos: int, first: int) -> None:
    """`_decode` for a lean state with fixed shapes (`uses_fixed_shape_loop`).

    Every step runs the whole decoding batch, never compacted, and keeps the draws of the rows
    that sample with a mask, as the launch-bound loop does; the step index and the uniform
    numbers are read from tensors, the transformer's key/value caches are attended to at full
    length and the LSTM's state is written in place, so that all steps have the same shapes
    and memory, and one CUDA graph, captured at the second step, replays every later one
    (`_run_then_capture`): one launch per step. The batch is looked at every
    STEPS_BETWEEN_SYNCS steps, to stop once no row decodes. The loop starts at step `first`
    (the steps before were prefilled).
    """
    model, state, work = batch.model, batch.lean, batch.tokens
    t = torch.full((1,), first, dtype=torch.long, device=work.device)
    row_uniforms = None if uniforms is None else uniforms[:, batch.rows]

    def step() -> None:
        features = state.fixed_step(work.index_select(1, t).squeeze(1), t)
        logits = model.decoder.output_layer(features.unsqueeze(1))
        probs = model.get_normalized_probs((logits, None), log_probs=False)[:, -1, :]
        chosen = None if row_uniforms is None else row_uniforms.index_select(0, t).squeeze(0)
        draws = draw_tokens(probs, chosen, pad)
        after = t + 1
        drawing = batch.active & batch.prefix.le(t)
        draws = torch.where(drawing, draws, work.index_select(1, after).squeeze(1))
        work.index_copy_(1, after, draws.unsqueeze(1))
        batch.active &= ~(drawing & draws.eq(eos)) & batch.lengths.gt(after)
        t.add_(1)

    repeat = _run_then_capture(step, work.device)
    for done in range(first + 1, work.size(1) - 1):
        if done % STEPS_BETWEEN_SYNCS == 0 and not bool(batch.active.any()):
            break
        repeat()
    batch.write_back(tokens)


def _run_then_capture(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """Runs `step` once and returns what repeats it: on CUDA the replay of a CUDA graph
    captured from it (the capture records the step's kernels without running them), elsewhere
    `step` itself. Run and capture are on a side stream, as torch's CUDA graphs want."""
    if device.type != "cuda":
        step()
        return step
    side = _capture_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        step()
        # torch.cuda.graph() would also empty the allocator's cache before every capture,
        # which the rest of the update would pay for in new allocations.
        torch.cuda.synchronize(device)
        graph.capture_begin()
        try:
            step()
        finally:
            graph.capture_end()
    torch.cuda.current_stream(device).wait_stream(side)
    return graph.replay


_CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream of `device` that every capture runs on. cuBLAS keeps a workspace
    (32 MiB by default on Hopper) for each stream it has run on: with a new stream per update (from
    torch's pool of 32), the bench's peak memory on an H200 was 3.5-4.8x XENT's after 10
    updates, and 1.27-1.43x with this one stream (docs/performance.md)."""
    if device not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
    return _CAPTURE_STREAMS[device]


def _next_token_probs(batch, step: int, rows, outputs):
    """Next-token probabilities [R, V] of the decoding batch's `rows` (None: all of them), or
    None when `rows` is empty. The decoder steps every row, and with `outputs` (one pass) the
    features of every row are recorded there; only the rows that draw are projected here.
    """
    model = batch.model
    work = batch.tokens[:, : step + 1]
    if outputs is None:
        if batch.lean is not None:
            logits_of = lean_decoder_step(model.decoder, batch.lean, work[:, -1], step)
        else:
            logits_of = decoder_step(model.decoder, work, batch.encoder_out, batch.incremental)
    else:
        # A recurrent decoder reads only the newest token; a copy, because the draws are
        # written into `batch.tokens` while the graph holds the embedding's indices.
        newest = work[:, -1:].clone()
        if batch.lean is not None:
            features = batch.lean.step(newest[:, 0], step)
        else:
            features, _ = model.decoder.extract_features(
                newest, encoder_out=batch.encoder_out, incremental_state=batch.incremental
            )
            features = features[:, -1, :]
        outputs.add(batch.rows, step, features)
        logits_of = _row_logits(model.decoder, features)
    if rows is not None and rows.numel() == 0:
        return None
    with torch.no_grad():
        logits = logits_of(slice(None) if rows is None else rows)
        return model.get_normalized_probs((logits, None), log_probs=False)[:, -1, :]


class _StepOutputs:
    """Per-step decoder features of the rows that ran, to be stacked after the loop.

    Rows that finished stay in the decoding batch until it is compacted; their outputs past
    the end are dropped when stacking, by one mask instead of an index per step. The
    log-probabilities with grad come from one projection of the stacked features: one large
    product and one node of the graph. Projected step by step instead, every step's node
    would accumulate a gradient of the whole output projection in the backward, which costs
    far more than projecting the features twice once the vocabulary is real
    (docs/performance.md); the steps project the rows that draw without grad.
    """

    def __init__(self):
        self.rows: list[torch.Tensor] = []
        self.steps: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []

    def add(self, rows, step: int, features) -> None:
        self.rows.append(rows)
        self.steps.append(torch.full_like(rows, step))
        self.features.append(features)

    def stacked(self, model, lengths: torch.Tensor, width: int):
        """(features [N, d], log-probabilities [N, V]) of the positions before `lengths` [B]
        of the rows, in the order of `token_positions` over a [B, width] batch."""
        rows, steps = torch.cat(self.rows), torch.cat(self.steps)
        ran = steps < lengths[rows]
        order = (rows * width + steps)[ran].argsort()
        features = torch.cat(self.features)[ran].index_select(0, order)
        return features, log_probs_of_features(model, features)


class _DecodingBatch:
    """The rows of a sampling batch that still need decoder steps, with their decoder state.

    `rows` holds their indices in the full batch, in increasing order, so the random draws
    of a step go to the same sentences whatever was dropped before. A decoder with a lean
    state (`_lean_state`) runs on it, and the state holds its own copy of what it needs of
    the encoder output; other decoders keep fairseq's incremental state.
    """

    def __init__(self, model, encoder_out, tokens, rows, prefix_lengths, lengths, fixed=False):
        self.model = model
        self.rows = rows
        self.incremental: dict = {}
        self.encoder_out = encoder_out
        if rows.numel() < tokens.size(0):
            self.encoder_out = reordered_encoder_out(model.encoder, encoder_out, rows)
        self.lean = _lean_state(
            model.decoder, self.encoder_out, rows.numel(), tokens.size(1) - 1, fixed
        )
        if self.lean is not None:
            self.encoder_out = None  # the lean state holds (and compacts) its own copy
        self.tokens = tokens.index_select(0, rows)
        self.prefix = prefix_lengths.index_select(0, rows)
        self.lengths = lengths.index_select(0, rows)
        self.active = torch.ones_like(rows, dtype=torch.bool)

    def keep_active(self, tokens: torch.Tensor) -> None:
        """Drop the finished rows: write them back to `tokens` and reorder the state."""
        self.write_back(tokens)
        keep = self.active.nonzero().squeeze(1)
        if self.lean is not None:
            self.lean.keep(keep)
        else:
            self.model.decoder.reorder_incremental_state_scripting(self.incremental, keep)
            self.encoder_out = reordered_encoder_out(self.model.encoder, self.encoder_out, keep)
        self.rows = self.rows.index_select(0, keep)
        self.tokens = self.tokens.index_select(0, keep)
        self.prefix = self.prefix.index_select(0, keep)
        self.lengths = self.lengths.index_select(0, keep)
        self.active = self.active.index_select(0, keep)

    def write_back(self, tokens: torch.Tensor) -> None:
        tokens.index_copy_(0, self.rows, self.tokens)


def _lean_state(decoder, encoder_out, batch_size: int, max_steps: int, fixed_shapes: bool):
    """The lean decoding state of `decoder`, or None where fairseq's incremental state serves:
    the LSTM's (with or without grad) or the transformer's (eval mode only); with
    `fixed_shapes` (no-grad loops only), for `_decode_with_fixed_shapes`."""
    if LEAN_LSTM_STEP and supports_lean_lstm_step(decoder, encoder_out):
        return LeanLSTMState(decoder, encoder_out, fixed_shapes)
    if LEAN_TRANSFORMER_STEP and not decoder.training and supports_lean_step(decoder, encoder_out):
        return LeanTransformerState(decoder, encoder_out, batch_size, max_steps, fixed_shapes)
    return None


def reordered_encoder_out(encoder, encoder_out, order: torch.Tensor):
    """The encoder output of the rows `order`, leaving `encoder_out` untouched.

    Some encoders (fconv) reorder a dict in place, and the caller still needs the whole batch.
    """
    own = dict(encoder_out) if isinstance(encoder_out, dict) else encoder_out
    return encoder.reorder_encoder_out(own, order)
