"""Drawing the model's own continuations of reference prefixes, batched and without grad."""

from __future__ import annotations

import torch

from fairseq_mixer.decoder_features import has_feature_api


def inverse_cdf_draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One multinomial draw per row of `probs` [B, V] (rows need not sum to one).

    A cumulative sum and a binary search per row: on CPU this is far cheaper than
    torch.multinomial over a large vocabulary (fairseq-notes, "Speed seen here").
    """
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.size(0), 1), generator=generator, device=probs.device, dtype=cdf.dtype)
    draws = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    return draws.clamp_(max=probs.size(-1) - 1)


def shift_right(tokens: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """Decoder input for teacher forcing on `tokens`: EOS (fairseq's BOS) then tokens[:-1]."""
    prev = torch.cat([tokens.new_full((tokens.size(0), 1), eos), tokens[:, :-1]], dim=1)
    return prev.masked_fill(tokens.eq(pad), pad)


def decoder_step(decoder, tokens: torch.Tensor, encoder_out, incremental_state: dict):
    """Advance the decoder by one token; return a function giving the logits of chosen rows.

    Rows still in their reference prefix, or finished, need no output projection: where the
    decoder exposes extract_features()/output_layer() only the rows that draw are projected.
    """
    if has_feature_api(decoder):
        features, _ = decoder.extract_features(
            tokens, encoder_out=encoder_out, incremental_state=incremental_state
        )
        return lambda rows: decoder.output_layer(features[rows, -1:, :])
    logits, _ = decoder(tokens, encoder_out=encoder_out, incremental_state=incremental_state)
    return lambda rows: logits[rows, -1:, :]


# Rows that no longer need decoder steps are dropped from the decoding batch once at most
# this share of it still needs them: reordering the incremental state costs an index_select
# per cached tensor, so it pays only when a good part of the batch has finished.
COMPACT_WHEN_LIVE_SHARE = 0.75


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
) -> torch.Tensor:
    """Hypotheses [B, L]: reference[:k] then samples from the model until EOS or max length.

    `reference` [B, Lr] holds right-padded targets ending with EOS; `prefix_lengths` k [B]
    the number of reference tokens fed before sampling; a sentence whose k equals its
    reference length is copied whole. The decoder runs incrementally with the encoder output
    computed once by the caller, on the sentences that still sample: copied and finished
    ones leave the decoding batch. Positions after a sampled EOS are padding.
    """
    ref_lengths = reference.ne(pad).sum(1)
    sampled = prefix_lengths < ref_lengths
    lengths = torch.where(sampled, torch.maximum(max_lengths, prefix_lengths + 1), ref_lengths)
    width = int(lengths.max())
    batch = reference.size(0)

    tokens = reference.new_full((batch, width + 1), pad)
    tokens[:, 0] = eos
    ref = reference[:, :width]
    positions = torch.arange(ref.size(1), device=ref.device)
    copy = positions.unsqueeze(0) < prefix_lengths.unsqueeze(1)
    tokens[:, 1 : ref.size(1) + 1] = ref.masked_fill(~copy, pad)
    live = sampled.nonzero().squeeze(1)
    if live.numel() == 0:
        return tokens[:, 1:]

    batch_state = _DecodingBatch(model, encoder_out, tokens, live, prefix_lengths, lengths)
    for step in range(width):
        work = batch_state.tokens
        logits_of = decoder_step(
            model.decoder, work[:, : step + 1], batch_state.encoder_out, batch_state.incremental
        )
        rows = (batch_state.active & (batch_state.prefix <= step)).nonzero().squeeze(1)
        if rows.numel() > 0:
            probs = model.get_normalized_probs((logits_of(rows), None), log_probs=False)
            probs = probs[:, -1, :].float()
            probs[:, pad] = 0.0
            draws = inverse_cdf_draw(probs, generator)
            work[rows, step + 1] = draws
            done = draws.eq(eos) | (batch_state.lengths[rows] <= step + 1)
            batch_state.active[rows[done]] = False
        still = int(batch_state.active.sum())
        if still == 0:
            break
        if still <= COMPACT_WHEN_LIVE_SHARE * work.size(0):
            batch_state.keep_active(tokens)
    batch_state.write_back(tokens)
    hyps = tokens[:, 1:]
    return hyps[:, : int(hyps.ne(pad).sum(1).max())]


class _DecodingBatch:
    """The rows of a sampling batch that still need decoder steps, with their decoder state.

    `rows` holds their indices in the full batch, in increasing order, so the random draws
    of a step go to the same sentences whatever was dropped before.
    """

    def __init__(self, model, encoder_out, tokens, rows, prefix_lengths, lengths):
        self.model = model
        self.rows = rows
        self.incremental: dict = {}
        self.encoder_out = encoder_out
        if rows.numel() < tokens.size(0):
            self.encoder_out = reordered_encoder_out(model.encoder, encoder_out, rows)
        self.tokens = tokens.index_select(0, rows)
        self.prefix = prefix_lengths.index_select(0, rows)
        self.lengths = lengths.index_select(0, rows)
        self.active = torch.ones_like(rows, dtype=torch.bool)

    def keep_active(self, tokens: torch.Tensor) -> None:
        """Drop the finished rows: write them back to `tokens` and reorder the state."""
        self.write_back(tokens)
        keep = self.active.nonzero().squeeze(1)
        self.model.decoder.reorder_incremental_state_scripting(self.incremental, keep)
        self.encoder_out = reordered_encoder_out(self.model.encoder, self.encoder_out, keep)
        self.rows = self.rows.index_select(0, keep)
        self.tokens = self.tokens.index_select(0, keep)
        self.prefix = self.prefix.index_select(0, keep)
        self.lengths = self.lengths.index_select(0, keep)
        self.active = self.active.index_select(0, keep)

    def write_back(self, tokens: torch.Tensor) -> None:
        tokens.index_copy_(0, self.rows, self.tokens)


def reordered_encoder_out(encoder, encoder_out, order: torch.Tensor):
    """The encoder output of the rows `order`, leaving `encoder_out` untouched.

    Some encoders (fconv) reorder a dict in place, and the caller still needs the whole batch.
    """
    own = dict(encoder_out) if isinstance(encoder_out, dict) else encoder_out
    return encoder.reorder_encoder_out(own, order)
