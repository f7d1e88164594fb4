"""Teacher forcing where some decoder inputs come from the model itself: DAD and E2E.

`from_model` [B, L] marks the decoder inputs (over the reference's positions; position 0,
the BOS, never) that are the model's own instead of the reference: the prediction it made
at the position before. What it feeds there is a `feedback`: DAD's `PredictedTokens` (a
token drawn from its softmax, or the argmax; no gradient through the choice) or E2E's
`SoftTopK` (the probability-weighted sum of the embeddings of the k most likely words, with
the gradient through the weights). Two forms, `--dad-passes` / `--e2e-passes`:

- sequential: the decoder steps through the positions with grad, each prediction made from
  the inputs actually fed before it. Exact; the natural form of a recurrent decoder, whose
  teacher-forced pass steps through time anyway;
- two_pass (Mihaylova and Martins, 2019): a first teacher-forced pass on the reference gives
  a prediction at every position, the inputs are mixed, a second pass gives the loss. For
  decoders whose teacher-forced pass is parallel (transformer, fconv). DAD's first pass runs
  in eval mode without grad; E2E's keeps the model's mode and its grad, so that E2E's
  gradient reaches it through the weights.

Where the two forms differ: after the first model-fed input of a sentence, the sequential
form predicts from the mixed history, the two-pass form from the reference's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq.models.lstm import LSTMDecoder
from fairseq.models.transformer import TransformerDecoderBase
from torch import nn

from fairseq_mixer.rollout.decoder_features import (
    has_feature_api,
    log_probs_of_features,
    teacher_forced_features,
    teacher_forced_log_probs,
)
from fairseq_mixer.rollout.lstm_step import LeanLSTMState, supports_lean_lstm_step
from fairseq_mixer.rollout.positions import at_positions, rows_of_positions
from fairseq_mixer.rollout.sampling import draw_tokens

PASSES = ("auto", "sequential", "two_pass")


def bernoulli_from_model(target: torch.Tensor, pad: int, eps: float, uniforms: torch.Tensor):
    """DAD's mask [B, L]: each input after the BOS is the model's where its uniform number
    (`uniforms` [B, L] in [0, 1)) is >= eps, i.e. the reference with probability eps."""
    mask = uniforms >= eps
    mask[:, 0] = False
    return mask & target.ne(pad)


def prefix_from_model(target: torch.Tensor, pad: int, prefix: torch.Tensor) -> torch.Tensor:
    """The incremental schedule's mask [B, L]: the first prefix[b] + 1 inputs (the BOS and
    prefix[b] reference tokens) are the reference, those after are the model's."""
    positions = torch.arange(target.size(1), device=target.device).unsqueeze(0)
    return (positions > prefix.unsqueeze(1)) & target.ne(pad)


def uses_sequential_pass(decoder, passes: str, flag: str) -> bool:
    """Whether `passes` (auto: sequential for LSTM decoders) steps `decoder` with grad; refuses
    a sequential form for a decoder that cannot step."""
    if passes not in PASSES:
        raise ValueError(f"{flag} must be one of {PASSES} (got {passes!r})")
    sequential = passes == "sequential" or (passes == "auto" and isinstance(decoder, LSTMDecoder))
    if sequential and not has_feature_api(decoder):
        raise ValueError(
            f"{flag} sequential steps the decoder through extract_features(), which "
            f"{type(decoder).__name__} does not implement: use two_pass"
        )
    return sequential


@dataclass
class FedPass:
    """The outcome of a pass with model-fed inputs: features [N, d] and log-probabilities
    [N, V] at the positions the loss reads, the tokens fed [B, L] (E2E: the argmax where a
    soft input went in) and, for E2E, the top-k probability mass of each soft input [M]."""

    features: torch.Tensor
    lprobs: torch.Tensor
    fed_tokens: torch.Tensor
    top_k_mass: torch.Tensor | None = None


class PredictedTokens:
    """DAD's feedback: the model's predicted token, drawn from its softmax with the uniform
    numbers `uniforms` [B, L] (indexed by the input position it feeds), or its argmax where
    `uniforms` is None. No gradient through the choice."""

    soft = False

    def __init__(self, uniforms: torch.Tensor | None, pad: int):
        self.uniforms, self.pad = uniforms, pad

    @torch.no_grad()
    def tokens(self, lprobs: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor):
        """Tokens [R] from the log-probabilities [R, V] predicting the inputs (rows, steps)."""
        chosen = None if self.uniforms is None else self.uniforms[rows, steps]
        return draw_tokens(lprobs.exp(), chosen, self.pad)

    def __call__(self, model, features, rows, steps):
        with torch.no_grad():
            lprobs = log_probs_of_features(model, features.detach())
        return self.tokens(lprobs, rows, steps), None, None


class SoftTopK:
    """E2E's feedback: the sum of the embeddings of the k most likely words (never padding),
    weighted by their probabilities renormalised over those k. The gradient reaches the
    features through the weights, not through the choice of the k words."""

    soft = True

    def __init__(self, k: int, pad: int):
        self.k, self.pad = k, pad

    def __call__(self, model, features, rows, steps):
        """(argmax tokens [R], embeddings [R, C], top-k mass [R]) of features [R, d]."""
        decoder = model.decoder
        with torch.no_grad():
            logits = decoder.output_layer(features.detach().unsqueeze(1)).squeeze(1).float()
            logits[:, self.pad] = float("-inf")
            top = logits.topk(self.k, dim=-1)
            mass = (top.values - logits.logsumexp(-1, keepdim=True)).exp().sum(-1)
        weights = top_k_logits(decoder, features, top.indices).softmax(-1)
        embedding = decoder.embed_tokens
        rows_of_k = F.embedding(top.indices, embedding.weight, embedding.padding_idx)
        embedded = (weights.unsqueeze(-1).to(rows_of_k.dtype) * rows_of_k).sum(1)
        return top.indices[:, 0], embedded, mass


def top_k_logits(decoder, features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The logits [R, k] of the words `indices` [R, k] for features [R, d], with grad.

    fairseq's LSTM and transformer decoders project with one weight matrix (their own or the
    shared embedding), so only its k rows per feature are multiplied; other decoders are
    projected whole and read at the k words."""
    weight, bias = _output_weight_and_bias(decoder)
    if weight is None:
        logits = decoder.output_layer(features.unsqueeze(1)).squeeze(1)
        return logits.gather(-1, indices)
    logits = torch.einsum("rd,rkd->rk", features, weight[indices])
    return logits if bias is None else logits + bias[indices]


def _output_weight_and_bias(decoder):
    if getattr(decoder, "adaptive_softmax", None) is not None:
        return None, None
    if type(decoder).output_layer is LSTMDecoder.output_layer:
        if decoder.share_input_output_embed:
            return decoder.embed_tokens.weight, None
        return decoder.fc_out.weight, decoder.fc_out.bias
    if type(decoder).output_layer is TransformerDecoderBase.output_layer:
        projection = decoder.output_projection
        if type(projection) is nn.Linear:
            return projection.weight, projection.bias
    return None, None


class _EmbeddingOverride:
    """Replaces the output of the decoder's token embedding at chosen places, for the next call
    only: E2E's soft inputs enter the decoder where its embedding of the tokens would."""

    def __init__(self, embedding: nn.Module):
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handle = embedding.register_forward_hook(self._replace)

    def set(self, mask: torch.Tensor, values: torch.Tensor) -> None:
        """At the next call, rows of `mask` (the embedding's output shape less its last
        dimension, any view of it) take `values` (the output's shape, any view)."""
        self._check_consumed()
        self.pending = (mask, values)

    def _replace(self, _module, _inputs, output):
        if self.pending is None:
            return output
        mask, values = self.pending
        self.pending = None
        mask = mask.reshape(output.shape[:-1]).unsqueeze(-1)
        return torch.where(mask, values.reshape(output.shape).to(output.dtype), output)

    def close(self) -> None:
        self.handle.remove()
        self._check_consumed()

    def _check_consumed(self) -> None:
        if self.pending is not None:
            raise RuntimeError(
                "the decoder never called its embed_tokens on the input tokens: E2E cannot "
                "feed it soft embeddings"
            )


class _Stepper:
    """Steps a decoder one input at a time, with grad: the lean LSTM step where it replicates
    fairseq's, fairseq's incremental extract_features() otherwise."""

    def __init__(self, model, encoder_out):
        self.decoder, self.encoder_out = model.decoder, encoder_out
        self.lean = None
        if supports_lean_lstm_step(model.decoder, encoder_out):
            self.lean = LeanLSTMState(model.decoder, encoder_out)
        self.incremental: dict = {}

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Features [B, d] after feeding `tokens` [B, t + 1] (the newest is the input)."""
        if self.lean is not None:
            return self.lean.step(tokens[:, -1], t)
        features, _ = self.decoder.extract_features(
            tokens, encoder_out=self.encoder_out, incremental_state=self.incremental
        )
        return features[:, -1]


def _next_inputs(from_model: torch.Tensor, t: int) -> torch.Tensor:
    return from_model[:, t + 1].nonzero().squeeze(1)


def sequential_pass(
    model, encoder_out, prev_reference, from_model, feedback, where: torch.Tensor
) -> FedPass:
    """The decoder stepped through `prev_reference` [B, L] with grad, the inputs that
    `from_model` marks replaced by `feedback` of the step before; the result at `where`."""
    batch, width = prev_reference.shape
    fed = prev_reference.clone()
    override = _EmbeddingOverride(model.decoder.embed_tokens) if feedback.soft else None
    stepper = _Stepper(model, encoder_out)
    features, masses = [], []
    with _closing(override):
        for t in range(width):
            step_features = stepper.step(fed[:, : t + 1].clone(), t)
            features.append(step_features)
            rows = _next_inputs(from_model, t) if t + 1 < width else None
            if rows is None or rows.numel() == 0:
                continue
            steps = torch.full_like(rows, t + 1)
            tokens, embedded, mass = feedback(model, step_features[rows], rows, steps)
            fed[rows, t + 1] = tokens
            if embedded is not None:
                mask = torch.zeros(batch, dtype=torch.bool, device=rows.device)
                mask[rows] = True
                values = embedded.new_zeros(batch, embedded.size(-1)).index_copy(0, rows, embedded)
                override.set(mask, values)
                masses.append(mass)
    features = at_positions(torch.stack(features, 1), where)
    mass = torch.cat(masses) if masses else None
    return FedPass(features, log_probs_of_features(model, features), fed, mass)


def two_pass(
    model, encoder_out, prev_reference, from_model, feedback, where: torch.Tensor
) -> FedPass:
    """Predictions from a teacher-forced pass over `prev_reference` [B, L], fed where
    `from_model` says, then a second pass with grad; the result at `where`."""
    batch, width = prev_reference.shape
    predicting = torch.zeros_like(from_model)
    predicting[:, :-1] = from_model[:, 1:]
    before = predicting.reshape(-1).nonzero().squeeze(1)  # flat positions that predict
    rows, steps = before // width, before % width + 1
    # The first pass computes every token of `where` (a prefix of each row, as the packed
    # pass needs for its attention) and the predicting positions are read off it.
    among_where = rows_of_positions(where, batch, width).index_select(0, before)
    fed = prev_reference.clone()
    decoder = model.decoder
    if not feedback.soft:
        with torch.no_grad(), _eval_mode(decoder):
            _, lprobs = teacher_forced_log_probs(model, prev_reference, encoder_out, where)
        lprobs = lprobs.index_select(0, among_where).float()
        fed.view(-1)[before + 1] = feedback.tokens(lprobs, rows, steps)
        features, lprobs = teacher_forced_log_probs(model, fed, encoder_out, where)
        return FedPass(features, lprobs, fed)
    first = teacher_forced_features(decoder, prev_reference, encoder_out, where)
    first = first.index_select(0, among_where)
    tokens, embedded, mass = feedback(model, first, rows, steps)
    fed.view(-1)[before + 1] = tokens
    values = embedded.new_zeros(fed.numel(), embedded.size(-1)).index_copy(0, before + 1, embedded)
    override = _EmbeddingOverride(decoder.embed_tokens)
    with _closing(override):
        override.set(from_model, values)
        features, _ = decoder.extract_features(fed, encoder_out=encoder_out)
    features = at_positions(features, where)
    return FedPass(features, log_probs_of_features(model, features), fed, mass)


@contextmanager
def _closing(override: _EmbeddingOverride | None):
    """Removes the override's hook after the block; checks, if the block ended normally, that
    the decoder took every soft input set for it."""
    if override is None:
        yield
        return
    try:
        yield
    except BaseException:
        override.handle.remove()
        raise
    override.close()


@contextmanager
def _eval_mode(module: nn.Module):
    """`module` in eval mode (no dropout) for the block, then back in its mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
