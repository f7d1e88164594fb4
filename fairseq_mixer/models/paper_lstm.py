"""A model in the spirit of the MIXER release (spec section 7), built from fairseq parts.

Encoder: no recurrence; the source is its word plus position embeddings, smoothed by a
5-wide average over neighbouring positions (the release pools the attention scores this
way). Decoder: fairseq's one-layer attentional LSTM decoder with input feeding, so the
attention context enters the gates. Differences from the release, for the record: the
smoothed embeddings serve both to score and to build the context, and the output layer is
fairseq's tanh(W [ctx ; h]) rather than [h ; sigmoid(W ctx)].
"""

import torch
import torch.nn.functional as F
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)
from fairseq.models.lstm import Embedding, LSTMDecoder
from torch import nn

POOL_WIDTH = 5


class PooledEmbeddingEncoder(FairseqEncoder):
    """Source word + position embeddings averaged over a 5-wide window (padding excluded)."""

    def __init__(self, dictionary, embed_dim: int, max_positions: int, dropout: float):
        super().__init__(dictionary)
        self.embed_tokens = Embedding(len(dictionary), embed_dim, dictionary.pad())
        self.embed_positions = nn.Embedding(max_positions, embed_dim)
        nn.init.normal_(self.embed_positions.weight, mean=0, std=0.05)
        self.dropout = nn.Dropout(dropout)
        self.max_source_positions = max_positions

    def forward(self, src_tokens, src_lengths=None, **unused):
        padding = src_tokens.eq(self.dictionary.pad())
        positions = (~padding).long().cumsum(1).clamp(max=self.max_source_positions) - 1
        keep = (~padding).unsqueeze(-1).type_as(self.embed_tokens.weight)
        x = (self.embed_tokens(src_tokens) + self.embed_positions(positions.clamp(min=0))) * keep
        x = self.dropout(x)
        window = dict(kernel_size=POOL_WIDTH, stride=1, padding=POOL_WIDTH // 2)
        summed = F.avg_pool1d(x.transpose(1, 2), count_include_pad=True, **window)
        counts = F.avg_pool1d(keep.transpose(1, 2), count_include_pad=True, **window)
        pooled = (summed / counts.clamp(min=1e-6)).transpose(1, 2) * keep
        mean = pooled.sum(1) / keep.sum(1).clamp(min=1)
        outputs = pooled.transpose(0, 1)  # S x B x C
        hidden = mean.unsqueeze(0)  # 1 x B x C: the decoder's initial state
        return outputs, hidden, torch.zeros_like(hidden), padding.t()

    def reorder_encoder_out(self, encoder_out, new_order):
        return tuple(part.index_select(1, new_order) for part in encoder_out)

    def max_positions(self):
        return self.max_source_positions


@register_model("mixer_paper")
class MixerPaperModel(FairseqEncoderDecoderModel):
    @staticmethod
    def add_args(parser):
        parser.add_argument("--embed-dim", type=int, metavar="N", help="embedding size")
        parser.add_argument("--hidden-size", type=int, metavar="N", help="LSTM units")
        parser.add_argument("--dropout", type=float, metavar="D", help="dropout probability")

    @classmethod
    def build_model(cls, args, task):
        mixer_paper(args)
        encoder = PooledEmbeddingEncoder(
            task.source_dictionary, args.embed_dim, args.max_source_positions, args.dropout
        )
        decoder = LSTMDecoder(
            task.target_dictionary,
            embed_dim=args.embed_dim,
            hidden_size=args.hidden_size,
            out_embed_dim=args.hidden_size,
            num_layers=1,
            dropout_in=args.dropout,
            dropout_out=args.dropout,
            attention=True,
            encoder_output_units=args.embed_dim,
            max_target_positions=args.max_target_positions,
        )
        return cls(encoder, decoder)


@register_model_architecture("mixer_paper", "mixer_paper")
def mixer_paper(args):
    args.embed_dim = getattr(args, "embed_dim", None) or 256
    args.hidden_size = getattr(args, "hidden_size", None) or 256
    args.dropout = getattr(args, "dropout", 0.0)
    args.max_source_positions = getattr(args, "max_source_positions", None) or 1024
    args.max_target_positions = getattr(args, "max_target_positions", None) or 1024
