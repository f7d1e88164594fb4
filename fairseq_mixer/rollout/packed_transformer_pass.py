"""fairseq's teacher-forced TransformerDecoder pass, computed for the tokens a loss reads only.

MIXER's samples end at different lengths, so a padded [B, L] batch of them is far from
full, while fairseq's decoder runs every layer's projections, norms and feed-forward block
on every position, padding included, forward and backward. `packed_transformer_features`
runs those position-wise parts on the kept tokens only ([N, C], N the number of tokens) and
scatters queries, keys and values into the padded layout just for the attention products.
It gives fairseq's `extract_features` at the kept positions (up to float rounding), in
training mode too: the same dropout modules at the same places, and layerdrop through the
decoder's own layer list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fairseq_mixer.rollout.positions import at_positions, padded_from_rows, rows_of_positions
from fairseq_mixer.rollout.transformer_step import plain_transformer_decoder


def supports_packed_pass(decoder, encoder_out) -> bool:
    """Whether `packed_transformer_features` computes what `decoder` computes: fairseq's own
    transformer decoder in the plain configurations of the lean step."""
    return plain_transformer_decoder(decoder, encoder_out)


def packed_transformer_features(
    decoder, prev_output_tokens: torch.Tensor, encoder_out: dict, where: torch.Tensor
) -> torch.Tensor:
    """Features [N, C] of the positions `where` (flat indices into [B, L], every row's a
    prefix) of a teacher-forced pass over `prev_output_tokens` [B, L]."""
    batch, width = prev_output_tokens.shape
    x = decoder.embed_scale * decoder.embed_tokens(at_positions(prev_output_tokens, where))
    if decoder.project_in_dim is not None:
        x = decoder.project_in_dim(x)
    if decoder.embed_positions is not None:
        x = x + at_positions(decoder.embed_positions(prev_output_tokens), where)
    if decoder.layernorm_embedding is not None:
        x = decoder.layernorm_embedding(x)
    x = decoder.dropout_module(x)

    # The padding biases are added even where nothing is padded (adding zeros), so that no
    # branch waits for the device.
    layout = _Layout(where, batch, width)
    padding = prev_output_tokens.eq(decoder.padding_idx)
    self_bias = _key_bias(padding, decoder.layers[0].self_attn.num_heads, x.dtype)
    self_bias = self_bias + x.new_full((width, width), float("-inf")).triu(1)
    states = encoder_out["encoder_out"][0]  # [S, B, C]
    masks = encoder_out.get("encoder_padding_mask", [])
    source_bias = None
    if len(masks) > 0:
        source_bias = _key_bias(masks[0], decoder.layers[0].encoder_attn.num_heads, x.dtype)
    for layer in decoder.layers:
        x = _layer(layer, x, layout, self_bias, states, source_bias)
    if decoder.layer_norm is not None:
        x = decoder.layer_norm(x)
    if decoder.project_out_dim is not None:
        x = decoder.project_out_dim(x)
    return x


class _Layout:
    """Moves per-token tensors [N, ...] between the packed and the padded [B, L] layouts."""

    def __init__(self, where: torch.Tensor, batch: int, width: int):
        self.where, self.batch, self.width = where, batch, width
        self.rows = rows_of_positions(where, batch, width)

    def padded(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """[N, H * d] -> [B * H, L, d], zeros at the positions not kept."""
        full = padded_from_rows(x, self.rows, self.batch, self.width)
        full = full.view(self.batch, self.width, heads, -1)
        return full.transpose(1, 2).reshape(self.batch * heads, self.width, -1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """[B * H, L, d] -> [N, H * d]."""
        heads = x.size(0) // self.batch
        x = x.view(self.batch, heads, self.width, -1).transpose(1, 2)
        return at_positions(x.reshape(self.batch, self.width, -1), self.where)


def _key_bias(padding: torch.Tensor, heads: int, dtype) -> torch.Tensor:
    """Additive bias [B * H, 1, S] of -inf on the padded keys of `padding` [B, S]."""
    bias = torch.zeros(padding.shape, dtype=dtype, device=padding.device)
    bias = bias.masked_fill(padding.to(torch.bool), float("-inf"))
    return bias.repeat_interleave(heads, dim=0).unsqueeze(1)


def _attention(attn, q, keys, values, bias) -> torch.Tensor:
    """fairseq's attention of [BH, L, d] queries over [BH, S, d] keys and values: float32
    softmax, then the attention's own dropout on the weights."""
    weights = torch.bmm(q, keys.transpose(1, 2))
    if bias is not None:
        weights = weights + bias
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).type_as(weights)
    return torch.bmm(attn.dropout_module(weights), values)


def _layer(layer, x, layout: _Layout, self_bias, states, source_bias) -> torch.Tensor:
    """One TransformerDecoderLayer on the packed tokens `x` [N, C]."""
    attn, cross = layer.self_attn, layer.encoder_attn

    def self_attention(x: torch.Tensor) -> torch.Tensor:
        q, k, v = attn.q_proj(x) * attn.scaling, attn.k_proj(x), attn.v_proj(x)
        q, k, v = (layout.padded(t, attn.num_heads) for t in (q, k, v))
        return attn.out_proj(layout.packed(_attention(attn, q, k, v, self_bias)))

    def encoder_attention(x: torch.Tensor) -> torch.Tensor:
        q = layout.padded(cross.q_proj(x) * cross.scaling, cross.num_heads)
        keys, values = _source_keys_values(cross, states)
        return cross.out_proj(layout.packed(_attention(cross, q, keys, values, source_bias)))

    def feed_forward(x: torch.Tensor) -> torch.Tensor:
        return layer.fc2(layer.activation_dropout_module(layer.activation_fn(layer.fc1(x))))

    x = _residual_block(layer, x, layer.self_attn_layer_norm, self_attention)
    x = _residual_block(layer, x, layer.encoder_attn_layer_norm, encoder_attention)
    return _residual_block(layer, x, layer.final_layer_norm, feed_forward)


def _residual_block(layer, x: torch.Tensor, norm, block) -> torch.Tensor:
    """x + dropout(block(x)), normalised before the block or after the sum as the layer is."""
    if layer.normalize_before:
        return x + layer.dropout_module(block(norm(x)))
    return norm(x + layer.dropout_module(block(x)))


def _source_keys_values(cross, states: torch.Tensor):
    """Keys and values [B * H, S, d] of the encoder states [S, B, C], with grad.

    Each through its own projection, as fairseq computes them: a product with the weights
    concatenated would keep that concatenation until the backward."""
    source, batch = states.shape[:2]

    def heads_first(x: torch.Tensor) -> torch.Tensor:
        return x.view(source, batch * cross.num_heads, -1).transpose(0, 1).contiguous()

    return heads_first(cross.k_proj(states)), heads_first(cross.v_proj(states))
