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
    reference length is copied whole. The decoder runs incrementally over one batch with the
    encoder output computed once by the caller; positions after a sampled EOS are padding.
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
    if not bool(sampled.any()):
        return tokens[:, 1:]

    active = sampled.clone()
    incremental_state: dict = {}
    for step in range(width):
        logits_of = decoder_step(
            model.decoder, tokens[:, : step + 1], encoder_out, incremental_state
        )
        rows = (active & (prefix_lengths <= step)).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        probs = model.get_normalized_probs((logits_of(rows), None), log_probs=False)
        probs = probs[:, -1, :].float()
        probs[:, pad] = 0.0
        draws = inverse_cdf_draw(probs, generator)
        tokens[rows, step + 1] = draws
        done = draws.eq(eos) | (lengths[rows] <= step + 1)
        active[rows[done]] = False
        if not bool(active.any()):
            break
    hyps = tokens[:, 1:]
    return hyps[:, : int(hyps.ne(pad).sum(1).max())]
