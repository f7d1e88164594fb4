"""The decoder feature that feeds the output projection, from one teacher-forced pass."""

from __future__ import annotations

import torch
from fairseq.models import FairseqDecoder, FairseqIncrementalDecoder
from torch import nn

from fairseq_mixer.rollout.packed_transformer_pass import (
    packed_transformer_features,
    supports_packed_pass,
)
from fairseq_mixer.rollout.positions import at_positions

# Whether a teacher-forced pass over samples runs fairseq's transformer decoder on their
# tokens only (`packed_transformer_features`); tests turn it off to compare with the padded
# pass.
PACKED_TRANSFORMER_PASS = True

_ABSTRACT_EXTRACT_FEATURES = (
    FairseqDecoder.extract_features,
    FairseqIncrementalDecoder.extract_features,
)


def has_feature_api(decoder: nn.Module) -> bool:
    """Whether `decoder` implements extract_features() and output_layer() (lstm, transformer)."""
    return type(decoder).extract_features not in _ABSTRACT_EXTRACT_FEATURES


def output_projection(decoder: nn.Module) -> nn.Linear:
    """The last Linear layer of `decoder` whose outputs cover the target vocabulary."""
    vocab = len(decoder.dictionary)
    layers = [m for m in decoder.modules() if isinstance(m, nn.Linear) and m.out_features == vocab]
    if not layers:
        raise ValueError(
            f"{type(decoder).__name__} has neither extract_features() nor a Linear output "
            "projection over the vocabulary: the MIXER baseline cannot read its features"
        )
    return layers[-1]


def decoder_features_and_output(decoder: nn.Module, prev_output_tokens, encoder_out):
    """(features [B, L, d], decoder output tuple) of a teacher-forced decoder pass.

    Decoders that implement extract_features()/output_layer() (transformer, lstm) are called
    through them; others (fconv) run whole while a hook reads the projection's input.
    """
    if has_feature_api(decoder):
        features, extra = decoder.extract_features(prev_output_tokens, encoder_out=encoder_out)
        return features, (decoder.output_layer(features), extra)
    captured: list[torch.Tensor] = []
    handle = output_projection(decoder).register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0])
    )
    try:
        decoder_out = decoder(prev_output_tokens, encoder_out=encoder_out)
    finally:
        handle.remove()
    return captured[-1], decoder_out


def teacher_forced_log_probs(model, prev_output_tokens, encoder_out, where: torch.Tensor):
    """(features [N, d], log-probabilities [N, V]) of a teacher-forced pass over
    `prev_output_tokens` [B, L] at the flat positions `where`, the tokens a loss reads.

    The transformer computes only those positions where `packed_transformer_features` can;
    other decoders with extract_features() run whole and project those positions only; the
    rest run whole, and the positions are read off their outputs.
    """
    decoder = model.decoder
    if not has_feature_api(decoder):
        features, decoder_out = decoder_features_and_output(
            decoder, prev_output_tokens, encoder_out
        )
        lprobs = model.get_normalized_probs(decoder_out, log_probs=True)
        return at_positions(features, where), at_positions(lprobs, where)
    features = teacher_forced_features(decoder, prev_output_tokens, encoder_out, where)
    return features, log_probs_of_features(model, features)


def teacher_forced_features(decoder, prev_output_tokens, encoder_out, where: torch.Tensor):
    """Features [N, d] of a teacher-forced pass over `prev_output_tokens` [B, L] at the flat
    positions `where`, for a decoder with extract_features(): the transformer's computed at
    those positions only (`packed_transformer_features`), the others' read off a whole pass."""
    if PACKED_TRANSFORMER_PASS and supports_packed_pass(decoder, encoder_out):
        return packed_transformer_features(decoder, prev_output_tokens, encoder_out, where)
    features, _ = decoder.extract_features(prev_output_tokens, encoder_out=encoder_out)
    return at_positions(features, where)


def log_probs_of_features(model, features: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, V] of decoder features [N, d], one position each."""
    logits = model.decoder.output_layer(features.unsqueeze(1))
    return model.get_normalized_probs((logits, None), log_probs=True).squeeze(1)


def check_incremental_decoder(model: nn.Module) -> None:
    """MIXER samples with incremental decoding: refuse models whose decoder cannot."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, FairseqIncrementalDecoder):
        raise ValueError(
            f"--criterion mixer needs an encoder-decoder model whose decoder supports "
            f"incremental decoding (a FairseqIncrementalDecoder); {type(model).__name__} has "
            f"decoder {type(decoder).__name__}"
        )


def check_full_softmax(model: nn.Module, who: str = "--criterion mixer") -> None:
    """MIXER, DAD and E2E differentiate the log-probabilities of whole softmaxes: refuse an
    adaptive softmax, whose log-probabilities fairseq computes for inference only (in place,
    so a backward through them fails)."""
    if getattr(model.decoder, "adaptive_softmax", None) is not None:
        raise ValueError(
            f"{who} needs a decoder with a full softmax over the vocabulary; this "
            "one has an adaptive softmax (--adaptive-softmax-cutoff), whose log-probabilities "
            "fairseq computes for inference only"
        )


@torch.no_grad()
def decoder_feature_dim(model: nn.Module) -> int:
    """Size of the decoder feature, read off a one-token pass in eval mode."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        eos = model.decoder.dictionary.eos()
        src = torch.full((1, 2), eos, dtype=torch.long, device=device)
        encoder_out = model.encoder(src, src_lengths=torch.tensor([2], device=device))
        prev = torch.full((1, 1), eos, dtype=torch.long, device=device)
        features, _ = decoder_features_and_output(model.decoder, prev, encoder_out)
    finally:
        model.train(was_training)
    return features.size(-1)
