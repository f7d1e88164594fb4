"""A lean incremental step of fairseq's TransformerDecoder, for the no-grad sampling loop.

fairseq's incremental `extract_features` keeps each attention's keys and values in a
dict-of-dicts, concatenates the self-attention cache at every step, checks many options on
the way and reorders the dicts on every batch compaction: for the small batches MIXER draws
from, that bookkeeping is a good share of a step. `LeanTransformerState` computes the
same features (up to float rounding) for the configurations `supports_lean_step` accepts,
with preallocated self-attention caches, encoder keys and values projected once, and one
fused projection for the queries, keys and values of each layer. Eval mode only: dropout is
skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fairseq.models.transformer import TransformerDecoderBase
from fairseq.modules import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.multihead_attention import MultiheadAttention
from fairseq.modules.transformer_layer import TransformerDecoderLayer, TransformerDecoderLayerBase

_LAYERS = (TransformerDecoderLayerBase, TransformerDecoderLayer)
_POSITIONS = (LearnedPositionalEmbedding, SinusoidalPositionalEmbedding)


def supports_lean_step(decoder, encoder_out) -> bool:
    """Whether `LeanTransformerState` replicates `decoder`'s incremental step exactly.

    Only fairseq's own transformer decoder, layers and attention (exact classes, so no
    override changes what they compute), with encoder attention and none of the options the
    lean step leaves out: adaptive softmax, cross self-attention, quant-noise, the
    `scale_*` (NormFormer) options, xformers, extra key/value biases, zero attention,
    beam-folded encoder attention, dropout kept at inference.
    """
    if not plain_transformer_decoder(decoder, encoder_out):
        return False
    dropout_at_inference = any(
        isinstance(m, FairseqDropout) and m.p > 0 and m.apply_during_inference
        for m in decoder.modules()
    )
    return not dropout_at_inference


def plain_transformer_decoder(decoder, encoder_out) -> bool:
    """Whether `decoder` is fairseq's own transformer decoder (exact classes) in a
    configuration without the options `supports_lean_step` lists, dropout aside."""
    if not isinstance(decoder, TransformerDecoderBase) or not _has_encoder_states(encoder_out):
        return False
    for name in ("extract_features", "extract_features_scriptable"):
        if getattr(type(decoder), name) is not getattr(TransformerDecoderBase, name):
            return False
    if (
        decoder.adaptive_softmax is not None
        or decoder.quant_noise is not None
        or decoder.cross_self_attention
        or (decoder.embed_positions is not None and type(decoder.embed_positions) not in _POSITIONS)
        or len(decoder.layers) == 0
    ):
        return False
    return all(_plain_layer(layer) for layer in decoder.layers)


def _has_encoder_states(encoder_out) -> bool:
    return isinstance(encoder_out, dict) and len(encoder_out.get("encoder_out", [])) > 0


def _plain_layer(layer) -> bool:
    return (
        type(layer) in _LAYERS
        and not layer.cross_self_attention
        and layer.quant_noise == 0
        and not layer.onnx_trace
        and layer.attn_ln is None
        and layer.c_attn is None
        and layer.ffn_layernorm is None
        and layer.w_resid is None
        and layer.encoder_attn is not None
        and _plain_attention(layer.self_attn)
        and layer.self_attn.self_attention
        and _plain_attention(layer.encoder_attn)
        and layer.encoder_attn.encoder_decoder_attention
    )


def _plain_attention(attn) -> bool:
    return (
        type(attn) is MultiheadAttention
        and not attn.use_xformers
        and attn.bias_k is None
        and not attn.add_zero_attn
        and attn.beam_size == 1
        and not attn.onnx_trace
    )


def _cat_bias(*linears) -> torch.Tensor | None:
    biases = [m.bias for m in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat(
        [
            m.weight.new_zeros(m.out_features) if b is None else b
            for m, b in zip(linears, biases, strict=True)
        ]
    )


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """[B, Q, H, d] -> [B * H, Q, d]; for a step (Q = 1) a view of a contiguous `x`."""
    batch, length, heads, head_dim = x.shape
    if length == 1:
        return x.reshape(batch * heads, 1, head_dim)
    return x.transpose(1, 2).reshape(batch * heads, length, head_dim)


def _heads_last(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * H, Q, d] -> [B * Q, H * d]; for a step (Q = 1) a view."""
    rows, length, head_dim = x.shape
    if length == 1:
        return x.view(batch, -1)
    heads = rows // batch
    return x.view(batch, heads, length, head_dim).transpose(1, 2).reshape(-1, heads * head_dim)


def _write(cache: torch.Tensor, new: torch.Tensor, t: int) -> None:
    """Stores `new` [B, Q, H, d] at steps t .. t + Q - 1 of `cache` [B * H, T, d]."""
    batch, length, heads, head_dim = new.shape
    if length == 1:
        cache[:, t].view(batch, heads, head_dim).copy_(new[:, 0])
    else:
        cache[:, t : t + length].view(batch, heads, length, head_dim).copy_(new.transpose(1, 2))


def _attend(q, keys, values, bias=None) -> torch.Tensor:
    """Attention of Q queries per (row, head) [BH, Q, d] over [BH, T, d] keys and values, with
    an additive bias broadcast to [BH, Q, T] (padding, causality, length); softmax in float32
    as fairseq's."""
    weights = torch.bmm(q, keys.transpose(1, 2))
    if bias is not None:
        weights = weights + bias
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).type_as(weights)
    return torch.bmm(weights, values)


class _Layer:
    """One decoder layer's fused weights, encoder keys/values and self-attention cache."""

    def __init__(
        self,
        layer,
        encoder_states,
        key_padding_bias,
        batch: int,
        max_steps: int,
        fixed_shapes: bool,
    ):
        attn, cross = layer.self_attn, layer.encoder_attn
        self.layer = layer
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        # One projection for the self-attention's queries, keys and values.
        self.qkv_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        self.qkv_bias = _cat_bias(attn.q_proj, attn.k_proj, attn.v_proj)
        self.scaling, self.cross_scaling = attn.scaling, cross.scaling
        self.out = attn.out_proj
        self.cross_q = cross.q_proj
        self.cross_out = cross.out_proj
        source = encoder_states.size(0)
        kv = F.linear(
            encoder_states,
            torch.cat([cross.k_proj.weight, cross.v_proj.weight]),
            _cat_bias(cross.k_proj, cross.v_proj),
        )  # [S, B, 2C]
        kv = kv.view(source, batch, 2, self.heads, self.head_dim).permute(2, 1, 3, 0, 4)
        self.cross_keys = kv[0].reshape(batch * self.heads, source, self.head_dim)
        self.cross_values = kv[1].reshape(batch * self.heads, source, self.head_dim)
        self.key_padding_bias = key_padding_bias  # [B * H, 1, S] or None
        shape = (batch * self.heads, max_steps, self.head_dim)
        # Fixed shapes attend to the whole cache: the steps not fed yet must hold numbers.
        allocate = encoder_states.new_zeros if fixed_shapes else encoder_states.new_empty
        self.keys = allocate(shape)
        self.values = allocate(shape)

    def step(self, x: torch.Tensor, t, length: int = 1, self_bias=None) -> torch.Tensor:
        """The layer's outputs [B * Q, C] for inputs `x` [B * Q, C], Q = `length` positions per
        row (row-major), fed at steps t .. t + Q - 1. Kept two-dimensional, so that a step
        (Q = 1) runs the products and norms of [B, C] as they are.

        `t` an int: the cache is attended to up to step t + Q - 1, causally through
        `self_bias` [1, Q, t + Q] where Q > 1. With fixed shapes, Q = 1 and `t` a one-element
        tensor: the whole cache is attended to, the steps after `t` masked by `self_bias`
        [1, 1, T].
        """
        layer = self.layer
        batch = x.size(0) // length
        heads, head_dim = self.heads, self.head_dim
        pre_norm = layer.normalize_before

        residual = x
        if pre_norm:
            x = layer.self_attn_layer_norm(x)
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias).view(batch, length, 3, heads, head_dim)
        q = _heads_first(qkv[:, :, 0] * self.scaling)
        if isinstance(t, int):
            _write(self.keys, qkv[:, :, 1], t)
            _write(self.values, qkv[:, :, 2], t)
            keys, values = self.keys[:, : t + length], self.values[:, : t + length]
        else:
            self.keys.index_copy_(1, t, _heads_first(qkv[:, :, 1]))
            self.values.index_copy_(1, t, _heads_first(qkv[:, :, 2]))
            keys, values = self.keys, self.values
        x = _heads_last(_attend(q, keys, values, self_bias), batch)
        x = residual + F.linear(x, self.out.weight, self.out.bias)
        if not pre_norm:
            x = layer.self_attn_layer_norm(x)

        residual = x
        if pre_norm:
            x = layer.encoder_attn_layer_norm(x)
        q = F.linear(x, self.cross_q.weight, self.cross_q.bias) * self.cross_scaling
        q = _heads_first(q.view(batch, length, heads, head_dim))
        x = _attend(q, self.cross_keys, self.cross_values, self.key_padding_bias)
        x = _heads_last(x, batch)
        x = residual + F.linear(x, self.cross_out.weight, self.cross_out.bias)
        if not pre_norm:
            x = layer.encoder_attn_layer_norm(x)

        residual = x
        if pre_norm:
            x = layer.final_layer_norm(x)
        x = layer.activation_fn(F.linear(x, layer.fc1.weight, layer.fc1.bias))
        x = residual + F.linear(x, layer.fc2.weight, layer.fc2.bias)
        if not pre_norm:
            x = layer.final_layer_norm(x)
        return x

    def keep(self, rows: torch.Tensor, filled: int) -> None:
        """Keep batch rows `rows`; only the `filled` cached steps are copied."""
        heads = self.heads
        flat = (rows.unsqueeze(1) * heads + torch.arange(heads, device=rows.device)).view(-1)
        self.cross_keys = self.cross_keys.index_select(0, flat)
        self.cross_values = self.cross_values.index_select(0, flat)
        if self.key_padding_bias is not None:
            self.key_padding_bias = self.key_padding_bias.index_select(0, flat)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((flat.numel(),) + old.shape[1:])
            new[:, :filled] = old[:, :filled].index_select(0, flat)
            setattr(self, name, new)


class LeanTransformerState:
    """Incremental decoding state of a fairseq TransformerDecoder, for up to `max_steps` tokens.

    `step(tokens, t)` feeds the newest token of every row (the (t+1)-th fed so far) and gives
    the features fairseq's `extract_features(..., incremental_state)` gives for it; the
    caller projects the rows it needs with `decoder.output_layer`. `keep(rows)` drops rows,
    as fairseq's incremental-state reordering does. Rows need not be padded: every row feeds
    a real token at every step, as the sampling loop's unfinished rows do (fairseq would mask
    padding tokens fed after a row finished; the lean step attends to them, so the outputs of
    finished rows differ, and nobody reads them). With decoder layerdrop, fairseq draws from
    the global RNG at every step even in eval mode; the lean state does not.
    """

    def __init__(
        self,
        decoder,
        encoder_out: dict,
        batch_size: int,
        max_steps: int,
        fixed_shapes: bool = False,
    ):
        if decoder.training:
            raise ValueError("the lean transformer step skips dropout: call it in eval mode")
        self.decoder = decoder
        self.fixed_shapes = fixed_shapes
        self.filled = 0
        states = encoder_out["encoder_out"][0]  # [S, B, C]
        masks = encoder_out.get("encoder_padding_mask", [])
        bias = None
        if len(masks) > 0 and masks[0].any():
            heads = decoder.layers[0].encoder_attn.num_heads
            mask = masks[0].to(torch.bool)
            bias = states.new_zeros(mask.shape).masked_fill_(mask, float("-inf"))
            bias = bias.repeat_interleave(heads, dim=0).unsqueeze(1)  # [B * H, 1, S]
        self.layers = [
            _Layer(layer, states, bias, batch_size, max_steps, fixed_shapes)
            for layer in decoder.layers
        ]
        self.positions = None
        if decoder.embed_positions is not None:
            # A row of max_steps real tokens: fairseq's positions padding_idx + 1, + 2, ...,
            # those it gives each incremental step.
            steps = min(max_steps, decoder.embed_positions.max_positions)
            probe = torch.full((1, steps), decoder.padding_idx + 1, device=states.device)
            self.positions = decoder.embed_positions(probe)[0]  # [max_steps, C]
        self.cache_steps = None  # the steps of the caches, for fixed_step's length mask
        if fixed_shapes:
            self.cache_steps = torch.arange(max_steps, device=states.device)

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Features [B, C] after feeding `tokens` [B] as the (t+1)-th tokens of the rows."""
        positions = None if self.positions is None else self.positions[t : t + 1]
        features = self._features(tokens, t, 1, positions, None)
        self.filled = t + 1
        return features

    def prefill(self, tokens: torch.Tensor) -> None:
        """Feeds the first K tokens of every row, `tokens` [B, K], at once: the caches then
        hold what K calls of `step` would have left (up to float rounding), and the next call
        is `step(..., K)`. For the steps in which no row draws yet."""
        if self.filled:
            raise ValueError("prefill starts a state: it has been fed already")
        length = tokens.size(1)
        positions = None if self.positions is None else self.positions[:length]
        dtype, device = self.layers[0].keys.dtype, tokens.device
        causal = torch.full((length, length), float("-inf"), dtype=dtype, device=device)
        self._features(tokens.reshape(-1), 0, length, positions, causal.triu(1).unsqueeze(0))
        self.filled = length

    def fixed_step(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`step` with the same shapes at every step, so that a CUDA graph can replay it: `t`
        is a one-element long tensor on the device, and every layer attends to its whole
        key/value cache, the steps after `t` masked. Needs `fixed_shapes`; never `keep`."""
        if not self.fixed_shapes:
            raise ValueError("fixed_step needs a state built with fixed_shapes=True")
        positions = None if self.positions is None else self.positions.index_select(0, t)
        later = self.cache_steps.gt(t)
        length_bias = torch.zeros_like(later, dtype=self.layers[0].keys.dtype)
        length_bias = length_bias.masked_fill(later, float("-inf")).view(1, 1, -1)
        return self._features(tokens, t, 1, positions, length_bias)

    def _features(self, tokens, t, length, positions, self_bias) -> torch.Tensor:
        """Features [B * Q, C] of `tokens` [B * Q] (row-major), Q = `length` per row, fed at
        steps t .. t + Q - 1."""
        decoder = self.decoder
        x = decoder.embed_scale * decoder.embed_tokens(tokens)
        if decoder.project_in_dim is not None:
            x = decoder.project_in_dim(x)
        if positions is not None and length == 1:
            x = x + positions
        elif positions is not None:
            x = (x.view(-1, length, x.size(-1)) + positions).view(-1, x.size(-1))
        if decoder.layernorm_embedding is not None:
            x = decoder.layernorm_embedding(x)
        for layer in self.layers:
            x = layer.step(x, t, length, self_bias)
        if decoder.layer_norm is not None:
            x = decoder.layer_norm(x)
        if decoder.project_out_dim is not None:
            x = decoder.project_out_dim(x)
        return x

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (indices into the current batch) in every cache."""
        for layer in self.layers:
            layer.keep(rows, self.filled)
