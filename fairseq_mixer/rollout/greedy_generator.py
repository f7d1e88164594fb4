"""Greedy decoding with the output of fairseq's SequenceGenerator at beam 1, faster.

At beam 1 SequenceGenerator still runs beam search: it reorders the decoder's incremental
state and the encoder output at every step, keeps two candidates per sentence and does its
bookkeeping for each sentence that ends. GreedyGenerator takes the best token per step and
leaves the state in place; it drops finished sentences from the batch only once a share of
the rows has finished, so that each reorder serves several of them.

What makes the hypotheses the same (tokens, scores, attention): the same EnsembleModel calls
for the encoder and the decoder (temperature included), the same masking of the
log-probabilities (NaN, pad, unk penalty, EOS before min_len, EOS forced at max_len), the
best token taken by a top-2 over the cumulative scores as in SequenceGenerator (torch.topk
does not break exact ties, common in fp16, towards the first index as argmax does), and
positional scores recovered from the cumulative ones.
"""

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from fairseq.models import FairseqIncrementalDecoder
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Hypothesis = dict[str, Tensor]

# keyword arguments of SequenceGenerator that GreedyGenerator takes as they are; it also
# takes lm_model, lm_weight and tokens_to_suppress where they ask for nothing
PASSED_THROUGH = ("eos", "symbols_to_strip_from_output", "max_len")

# On CUDA, decoding looks at which sentences ended only every STEPS_BETWEEN_SYNCS steps
# (launch-bound: no wait for the device within a step; the ended rows keep stepping, fed EOS,
# until the next look).
STEPS_BETWEEN_SYNCS = 8


@dataclass
class _Rows:
    """The sentences still in the batch, one row each."""

    tokens: Tensor  # [rows, max_len + 2]: BOS, then the tokens chosen (EOS once finished)
    cumulative: Tensor  # [rows, max_len + 1]: the score after each step
    sentence_ids: Tensor  # [rows]: the sentence's index in the sample
    finished: Tensor  # [rows]: ended, waiting to leave the batch
    end_step: Tensor  # [rows]: the step of the row's EOS (-1 before)
    recorded: Tensor  # [rows]: its hypothesis made
    attn: Tensor | None = None  # [rows, src_len, max_len + 1]

    @classmethod
    def start(cls, src_tokens: Tensor, max_len: int, bos: int) -> "_Rows":
        bsz, device = src_tokens.size(0), src_tokens.device
        tokens = src_tokens.new_full((bsz, max_len + 2), bos)
        return cls(
            tokens=tokens,
            cumulative=torch.zeros(bsz, max_len + 1, device=device),
            sentence_ids=torch.arange(bsz, device=device),
            finished=torch.zeros(bsz, dtype=torch.bool, device=device),
            end_step=torch.full((bsz,), -1, dtype=torch.long, device=device),
            recorded=torch.zeros(bsz, dtype=torch.bool, device=device),
        )

    def record_attention(self, step: int, attn: Tensor, max_len: int) -> None:
        if self.attn is None:
            self.attn = self.cumulative.new_zeros(attn.size(0), attn.size(1), max_len + 1)
        self.attn[:, :, step] = attn

    def select(self, keep: Tensor) -> "_Rows":
        return _Rows(
            tokens=self.tokens[keep],
            cumulative=self.cumulative[keep],
            sentence_ids=self.sentence_ids[keep],
            finished=self.finished[keep],
            end_step=self.end_step[keep],
            recorded=self.recorded[keep],
            attn=self.attn[keep] if self.attn is not None else None,
        )


class GreedyGenerator(nn.Module):
    """Beam-1 search with SequenceGenerator's interface and hypotheses, without the beam.

    generate(models, sample, **kwargs) returns, per sentence, a list of one dict with keys
    tokens (final EOS included), score, attention, alignment and positional_scores. Prefix
    tokens and constraints are handed to a SequenceGenerator with the same settings, built
    the first time they are asked for.
    """

    beam_size = 1

    def __init__(
        self,
        models,
        tgt_dict,
        max_len_a: float = 0,
        max_len_b: int = 200,
        max_len: int = 0,
        min_len: int = 1,
        normalize_scores: bool = True,
        len_penalty: float = 1.0,
        unk_penalty: float = 0.0,
        temperature: float = 1.0,
        eos: int | None = None,
        symbols_to_strip_from_output: set[int] | None = None,
        shrink_share: float = 0.25,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError("--temperature must be greater than 0")
        self.model = models if isinstance(models, EnsembleModel) else EnsembleModel(models)
        self.tgt_dict = tgt_dict
        self.pad = tgt_dict.pad()
        self.unk = tgt_dict.unk()
        self.eos = tgt_dict.eos() if eos is None else eos
        self.symbols_to_strip_from_output = set(symbols_to_strip_from_output or ()) | {self.eos}
        self.vocab_size = len(tgt_dict)
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        self.max_len = max_len or self.model.max_decoder_positions()
        self.min_len = min_len
        self.normalize_scores = normalize_scores
        self.len_penalty = len_penalty
        self.unk_penalty = unk_penalty
        self.temperature = temperature
        self.shrink_share = shrink_share
        self._settings = dict(
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            max_len=max_len,
            min_len=min_len,
            normalize_scores=normalize_scores,
            len_penalty=len_penalty,
            unk_penalty=unk_penalty,
            temperature=temperature,
            eos=eos,
            symbols_to_strip_from_output=symbols_to_strip_from_output,
        )
        self._stock: SequenceGenerator | None = None
        self.model.eval()

    def stock_generator(self) -> SequenceGenerator:
        """fairseq's SequenceGenerator at beam 1 with this generator's settings."""
        if self._stock is None:
            self._stock = SequenceGenerator(
                self.model, self.tgt_dict, beam_size=1, **self._settings
            )
        return self._stock

    def forward(self, sample, prefix_tokens: Tensor | None = None, bos_token: int | None = None):
        return self.generate(None, sample, prefix_tokens=prefix_tokens, bos_token=bos_token)

    @torch.no_grad()
    def generate(self, models, sample, **kwargs) -> list[list[Hypothesis]]:
        """Hypotheses of `sample`; like SequenceGenerator, decodes with the models it was
        built with, whatever `models` says."""
        greedy_kwargs = {"prefix_tokens", "constraints", "bos_token"}
        if (
            kwargs.get("prefix_tokens") is not None
            or kwargs.get("constraints") is not None
            or not greedy_kwargs.issuperset(kwargs)
            or "src_tokens" not in sample["net_input"]
        ):
            return self.stock_generator().generate(models, sample, **kwargs)
        return self._generate(sample, kwargs.get("bos_token"))

    def max_length(self, src_len: int) -> int:
        """Most tokens before EOS, from the padded source width `src_len` of the batch."""
        return min(int(self.max_len_a * src_len + self.max_len_b), self.max_len - 1)

    def _generate(self, sample, bos_token: int | None) -> list[list[Hypothesis]]:
        net_input = sample["net_input"]
        src_tokens = net_input["src_tokens"]
        max_len = self.max_length(src_tokens.size(1))
        if self.min_len > max_len:
            raise ValueError(f"--min-len {self.min_len} exceeds the maximum length {max_len}")
        encoder_outs = self.model.forward_encoder(net_input)
        incremental_states: list[dict[str, Any]] = [{}]
        rows = _Rows.start(src_tokens, max_len, self.eos if bos_token is None else bos_token)
        hypotheses: list[list[Hypothesis]] = [[] for _ in range(src_tokens.size(0))]
        every = STEPS_BETWEEN_SYNCS if uses_launch_bound_loop(src_tokens.device) else 1
        for step in range(max_len + 1):
            lprobs, attn = self.model.forward_decoder(
                rows.tokens[:, : step + 1], encoder_outs, incremental_states, self.temperature
            )
            self._mask(lprobs, step, max_len)
            self._choose(rows, step, max_len, lprobs, attn)
            if (step + 1) % every != 0 and step < max_len:
                continue
            ended = (rows.finished & ~rows.recorded).nonzero().squeeze(1)
            if ended.numel() == 0:
                continue
            self._finalize(rows, ended, hypotheses)
            waiting = int(rows.finished.sum())  # rows finished but still in the batch
            if waiting == rows.tokens.size(0):
                break
            if waiting >= self.shrink_share * rows.tokens.size(0):
                keep = (~rows.finished).nonzero().squeeze(1)
                self.model.reorder_incremental_state(incremental_states, keep)
                encoder_outs = self.model.reorder_encoder_out(encoder_outs, keep)
                rows = rows.select(keep)
        return hypotheses

    def _mask(self, lprobs: Tensor, step: int, max_len: int) -> None:
        """Rule out, in place, what SequenceGenerator rules out at this step."""
        lprobs.masked_fill_(lprobs.isnan(), -math.inf)
        lprobs[:, self.pad] = -math.inf
        if self.unk_penalty:
            lprobs[:, self.unk] -= self.unk_penalty
        if step >= max_len:
            eos_lprobs = lprobs[:, self.eos].clone()
            lprobs.fill_(-math.inf)
            lprobs[:, self.eos] = eos_lprobs
        if step < self.min_len:
            lprobs[:, self.eos] = -math.inf

    def _choose(
        self, rows: _Rows, step: int, max_len: int, lprobs: Tensor, attn: Tensor | None
    ) -> None:
        """Take each row's best token at `step`; mark the rows that end here."""
        if step > 0:
            lprobs += rows.cumulative[:, step - 1 : step]
        best_scores, best = (t[:, 0] for t in lprobs.topk(min(2, lprobs.size(1) - 1)))
        rows.cumulative[:, step] = best_scores
        rows.tokens[:, step + 1] = best.masked_fill(rows.finished, self.eos)
        if attn is not None:
            rows.record_attention(step, attn, max_len)
        ending = ~rows.finished
        if step < max_len:
            ending &= best.eq(self.eos)
        rows.finished |= ending
        rows.end_step.masked_fill_(ending, step)

    def _finalize(self, rows: _Rows, ended: Tensor, hypotheses: list[list[Hypothesis]]) -> None:
        """Record the hypotheses of the rows `ended`, each up to its EOS."""
        rows.recorded[ended] = True
        end_steps = rows.end_step[ended]
        for step in end_steps.unique().tolist():
            self._finalize_at(rows, ended[end_steps.eq(step)], step, hypotheses)

    def _finalize_at(
        self, rows: _Rows, ended: Tensor, step: int, hypotheses: list[list[Hypothesis]]
    ) -> None:
        """Record the hypotheses of the rows `ended`, whose EOS came at `step`."""
        tokens = rows.tokens[ended, 1 : step + 2]
        tokens[:, step] = self.eos
        running = rows.cumulative[ended, : step + 1]
        positional = torch.cat([running[:, :1], running[:, 1:] - running[:, :-1]], dim=1)
        scores = running[:, step]
        if self.normalize_scores:
            scores = scores / (step + 1) ** self.len_penalty
        attn = rows.attn[ended, :, : step + 1] if rows.attn is not None else None
        for i, sentence in enumerate(rows.sentence_ids[ended].tolist()):
            hypotheses[sentence].append(
                {
                    "tokens": tokens[i],
                    "score": scores[i],
                    "attention": attn[i] if attn is not None else torch.empty(0),
                    "alignment": torch.empty(0),
                    "positional_scores": positional[i],
                }
            )


def uses_launch_bound_loop(device: torch.device) -> bool:
    """Whether greedy decoding on `device` looks at the ended sentences only every few steps:
    on CUDA, where each look waits for the device."""
    return device.type == "cuda"


def greedy_fallback_reason(
    models,
    args,
    seq_gen_cls=None,
    extra_gen_cls_kwargs: dict | None = None,
    prefix_allowed_tokens_fn=None,
) -> str | None:
    """Why GreedyGenerator cannot stand in for the generator fairseq would build, or None."""
    if getattr(args, "beam", 5) != 1:
        return "beam size is not 1"
    options = {
        "--score-reference": getattr(args, "score_reference", False),
        "--sampling": getattr(args, "sampling", False),
        "--diverse-beam-groups": getattr(args, "diverse_beam_groups", -1) > 0,
        "--diversity-rate": getattr(args, "diversity_rate", -1) > -1,
        "--match-source-len": getattr(args, "match_source_len", False),
        "--constraints": bool(getattr(args, "constraints", None)),
        "--prefix-size": getattr(args, "prefix_size", 0) > 0,
        "--no-repeat-ngram-size": getattr(args, "no_repeat_ngram_size", 0) > 0,
        "--print-alignment": bool(getattr(args, "print_alignment", None)),
        "--retain-dropout": getattr(args, "retain_dropout", False),
        "prefix_allowed_tokens_fn": prefix_allowed_tokens_fn is not None
        or getattr(args, "prefix_allowed_tokens_fn", None) is not None,
        "a custom generator class": seq_gen_cls is not None,
    }
    for option, asked in options.items():
        if asked:
            return f"{option} asks for it"
    return _extra_option_reason(extra_gen_cls_kwargs or {}) or _model_reason(models)


def _extra_option_reason(extra_gen_cls_kwargs: dict) -> str | None:
    for key, value in extra_gen_cls_kwargs.items():
        if key == "lm_model":
            if value is not None:
                return "--lm-path asks for language model fusion"
        elif key == "tokens_to_suppress":
            if value:
                return "tokens to suppress"
        elif key != "lm_weight" and key not in PASSED_THROUGH:
            return f"generator option {key!r}"
    return None


def _model_reason(models) -> str | None:
    if len(models) != 1:
        return "an ensemble of models"
    model = models[0]
    if not hasattr(model, "encoder") or not isinstance(
        getattr(model, "decoder", None), FairseqIncrementalDecoder
    ):
        return "the model has no encoder or no incremental decoder"
    if any(getattr(m, "apply_during_inference", False) for m in model.modules()):
        return "dropout is applied at inference"
    return None


def build_greedy_generator(
    models,
    tgt_dict,
    args,
    seq_gen_cls=None,
    extra_gen_cls_kwargs: dict | None = None,
    prefix_allowed_tokens_fn=None,
) -> GreedyGenerator | None:
    """A GreedyGenerator where it gives what fairseq's build_generator would, else None."""
    reason = greedy_fallback_reason(
        models, args, seq_gen_cls, extra_gen_cls_kwargs, prefix_allowed_tokens_fn
    )
    if reason is not None:
        if getattr(args, "beam", 5) == 1:
            logger.info("beam 1 decodes with fairseq's SequenceGenerator: %s", reason)
        return None
    logger.info("beam 1 decodes greedily (--mixer-stock-generator: SequenceGenerator)")
    passed = {k: v for k, v in (extra_gen_cls_kwargs or {}).items() if k in PASSED_THROUGH}
    return GreedyGenerator(
        models,
        tgt_dict,
        max_len_a=getattr(args, "max_len_a", 0),
        max_len_b=getattr(args, "max_len_b", 200),
        min_len=getattr(args, "min_len", 1),
        normalize_scores=not getattr(args, "unnormalized", False),
        len_penalty=getattr(args, "lenpen", 1),
        unk_penalty=getattr(args, "unkpen", 0),
        temperature=getattr(args, "temperature", 1.0),
        **passed,
    )
