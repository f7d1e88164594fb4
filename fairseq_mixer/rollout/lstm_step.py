"""A lean step of fairseq's LSTMDecoder, for MIXER's decoding loops (with or without grad).

Stepped one token at a time through `extract_features(..., incremental_state)`, fairseq's
LSTM decoder pays, at every token, for what its teacher-forced pass pays once: a zeroed
attention-score buffer written through a slice, the hidden and cell states stacked into and
unstacked out of the incremental-state dicts, transposes and a concatenation of one output;
with grad each of those is also a node of the graph that the backward walks. The LSTM
rollout steps every token of every sample this way, forward and backward. `LeanLSTMState`
keeps the recurrent state as plain tensors and runs only the decoder's own modules, in
fairseq's order, so its features are fairseq's, its dropout draws included.
"""

from __future__ import annotations

import torch
from fairseq.models.lstm import AttentionLayer, LSTMDecoder


def supports_lean_lstm_step(decoder, encoder_out) -> bool:
    """Whether `LeanLSTMState` replicates `decoder`'s incremental step exactly: fairseq's own
    LSTMDecoder and attention (exact classes, so that no override changes what they compute),
    an encoder output, no adaptive softmax."""
    if type(decoder) is not LSTMDecoder or decoder.adaptive_softmax is not None:
        return False
    if decoder.attention is not None and type(decoder.attention) is not AttentionLayer:
        return False
    return isinstance(encoder_out, tuple) and len(encoder_out) == 4


class LeanLSTMState:
    """Recurrent state of a fairseq LSTMDecoder over a batch, stepped one token at a time.

    `step(tokens, t)` feeds the newest token of every row and gives the features fairseq's
    `extract_features(..., incremental_state)` gives for it ([B, C]; `t` is unused, kept for
    the interface of the lean transformer state); `keep(rows)` drops rows, as fairseq's
    incremental-state reordering does. With `fixed_shapes`, `fixed_step` does what `step`
    does and writes the new state into the tensors of the old, as a CUDA graph's replay needs.
    """

    def __init__(self, decoder, encoder_out: tuple, fixed_shapes: bool = False):
        self.decoder = decoder
        self.fixed_shapes = fixed_shapes
        encoder_outs, hiddens, cells, padding_mask = encoder_out
        self.encoder_outs, self.padding_mask = encoder_outs, padding_mask
        layers = range(decoder.num_layers)
        self.hiddens = [hiddens[i] for i in layers]
        self.cells = [cells[i] for i in layers]
        if decoder.encoder_hidden_proj is not None:
            self.hiddens = [decoder.encoder_hidden_proj(h) for h in self.hiddens]
            self.cells = [decoder.encoder_cell_proj(c) for c in self.cells]
        self.input_feed = encoder_outs.new_zeros(hiddens.size(1), decoder.hidden_size)
        if fixed_shapes:  # tensors of its own, written in place
            self.hiddens = [h.clone() for h in self.hiddens]
            self.cells = [c.clone() for c in self.cells]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Features [B, C] after feeding `tokens` [B]."""
        decoder = self.decoder
        x = decoder.dropout_in_module(decoder.embed_tokens(tokens))
        layer_input = torch.cat((x, self.input_feed), dim=1)
        for i, rnn in enumerate(decoder.layers):
            hidden, cell = rnn(layer_input, (self.hiddens[i], self.cells[i]))
            layer_input = decoder.dropout_out_module(hidden)
            if decoder.residuals:
                layer_input = layer_input + self.hiddens[i]
            self.hiddens[i], self.cells[i] = hidden, cell
        out = hidden
        if decoder.attention is not None:
            out, _ = decoder.attention(hidden, self.encoder_outs, self.padding_mask)
        out = decoder.dropout_out_module(out)
        self.input_feed = out
        if hasattr(decoder, "additional_fc"):
            out = decoder.dropout_out_module(decoder.additional_fc(out))
        return out

    def fixed_step(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`step`, the new hidden and cell states and input feed copied into the tensors that
        held the old: a CUDA graph captured from it reads and writes the same memory at every
        replay. Needs `fixed_shapes`; never `keep`."""
        if not self.fixed_shapes:
            raise ValueError("fixed_step needs a state built with fixed_shapes=True")
        hiddens, cells, input_feed = list(self.hiddens), list(self.cells), self.input_feed
        features = self.step(tokens, t)
        for old, new in zip(hiddens + cells, self.hiddens + self.cells, strict=True):
            old.copy_(new)
        input_feed.copy_(self.input_feed)
        self.hiddens, self.cells, self.input_feed = hiddens, cells, input_feed
        return features

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (indices into the current batch)."""
        self.hiddens = [h.index_select(0, rows) for h in self.hiddens]
        self.cells = [c.index_select(0, rows) for c in self.cells]
        self.input_feed = self.input_feed.index_select(0, rows)
        self.encoder_outs = self.encoder_outs.index_select(1, rows)
        if self.padding_mask is not None:
            self.padding_mask = self.padding_mask.index_select(1, rows)
