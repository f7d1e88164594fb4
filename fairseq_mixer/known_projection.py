"""The output projection of the one-pass rollout, whose values the sampling steps already made.

Each step of the one-pass rollout projects its features onto the vocabulary without grad, to
draw; the losses need the same logits with grad. Projecting the stacked features again
repeats a product over every position and the whole vocabulary (a tenth of an LSTM MIXER
update on Multi30k, docs/performance.md). :class:`KnownLinear` instead returns the logits the
steps made and gives the linear map's gradients in the backward.
"""

from __future__ import annotations

import torch
from fairseq.models.lstm import LSTMDecoder
from torch import Tensor


def linear_output_layer(decoder) -> tuple[Tensor, Tensor | None] | None:
    """(weight, bias) of ``decoder.output_layer`` where it is one linear map: fairseq's own
    LSTMDecoder output layer without adaptive softmax (its projection or the tied
    embeddings); None otherwise."""
    if not isinstance(decoder, LSTMDecoder) or decoder.adaptive_softmax is not None:
        return None
    if type(decoder).output_layer is not LSTMDecoder.output_layer:
        return None
    if decoder.share_input_output_embed:
        return decoder.embed_tokens.weight, None
    return decoder.fc_out.weight, decoder.fc_out.bias


class KnownLinear(torch.autograd.Function):
    """``F.linear(features, weight, bias)`` whose value ``known`` was computed without grad:
    the forward returns ``known`` as it is, the backward is the linear map's."""

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, bias: Tensor | None, known: Tensor):
        ctx.save_for_backward(features, weight)
        ctx.has_bias = bias is not None
        return known

    @staticmethod
    def backward(ctx, grad: Tensor):
        features, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.size(-1))
        grad_features = grad.matmul(weight) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = rows.t().mm(features.reshape(-1, features.size(-1)))
        grad_bias = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_features, grad_weight, grad_bias, None
