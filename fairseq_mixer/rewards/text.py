"""The text a text reward scores: token ids -> dictionary symbols -> post-processed -> detokenised.

The steps are those of fairseq's validation BLEU (``TranslationTask._inference_with_bleu``):
``Dictionary.string(ids, post_process, unk_string=...)`` then the detokeniser's ``decode``.
An unknown token becomes ``UNKNOWNTOKENINHYP`` in a hypothesis and ``UNKNOWNTOKENINREF`` in a
reference, so that it never matches (fairseq's choice; with ``unk_matches`` both sides get
the same placeholder). ``scripts/evaluate.py`` and the task's validation use the same
:class:`TextForm`, so the reward, the validation score and the reported score read one text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Values of fairseq's ``--post-process`` (``fairseq.data.data_utils.post_process``).
POST_PROCESS_CHOICES = (
    "none",
    "sentencepiece",
    "subword_nmt",
    "@@ ",
    "@@",
    "wordpiece",
    "letter",
    "silence",
    "_EOW",
)
#: Detokenisers: none and space (fairseq's ``space``) leave the text as it is.
DETOK_CHOICES = ("none", "space", "moses")

HYP_UNK = "UNKNOWNTOKENINHYP"
REF_UNK = "UNKNOWNTOKENINREF"
SHARED_UNK = "UNKNOWNTOKEN"
_LINE_BREAK = "\n"  # never inside a dictionary symbol: it separates sentences of a batch


@dataclass(frozen=True)
class TextForm:
    """How token ids become the text that is scored."""

    post_process: str = "none"
    detok: str = "none"
    detok_lang: str = "en"

    def __post_init__(self):
        if self.post_process not in POST_PROCESS_CHOICES:
            raise ValueError(
                f"unknown post-processing {self.post_process!r}; expected one of "
                f"{', '.join(map(repr, POST_PROCESS_CHOICES))} (fairseq's --post-process)"
            )
        if self.detok not in DETOK_CHOICES:
            raise ValueError(
                f"unknown detokeniser {self.detok!r}; expected one of {', '.join(DETOK_CHOICES)}"
            )

    def describe(self) -> str:
        detok = f"moses-{self.detok_lang}" if self.detok == "moses" else "none"
        return f"post-process:{self.post_process}|detok:{detok}"

    def finish(self, line: str) -> str:
        """A line of dictionary symbols (fairseq-generate's H- text) as the scored text."""
        return self.detokeniser()(post_process(line, self.post_process))

    def finish_all(self, lines: Sequence[str]) -> list[str]:
        detokenise = self.detokeniser()
        return [detokenise(post_process(line, self.post_process)) for line in lines]

    def detokeniser(self) -> Callable[[str], str]:
        if self.detok == "moses":
            return moses_detokeniser(self.detok_lang)
        return _identity


def _identity(text: str) -> str:
    return text


@functools.cache
def moses_detokeniser(lang: str) -> Callable[[str], str]:
    """fairseq's ``--tokenizer moses`` decode: sacremoses' detokeniser on whitespace tokens."""
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang=lang)
    return lambda text: detokenizer.detokenize(text.split())


def post_process(line: str, symbol: str) -> str:
    """fairseq's ``data_utils.post_process``."""
    return fairseq_post_process()(line, symbol)


@functools.cache
def fairseq_post_process() -> Callable[[str, str], str]:
    """fairseq's function, imported late: the rewards package loads without fairseq."""
    from fairseq.data.data_utils import post_process as fairseq_function

    return fairseq_function


class TextDecoder:
    """Token-id rows -> scored text, a batch at a time.

    ``symbols[i]`` is the dictionary's string of id i. Rows end at their first ``eos`` or
    ``pad``; ``bos`` is dropped, as ``Dictionary.string`` drops it. The symbols of the whole
    batch are joined in one call, with a line break between sentences.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        form: TextForm,
        *,
        pad: int,
        eos: int,
        unk: int,
        bos: int | None = None,
        unk_matches: bool = False,
    ):
        self.form = form
        self.pad, self.eos, self.bos = pad, eos, bos
        table = [*symbols, _LINE_BREAK]
        self.line_break = len(symbols)
        self.hyp_table = list(table)
        self.ref_table = list(table)
        if 0 <= unk < len(symbols):
            self.hyp_table[unk] = SHARED_UNK if unk_matches else HYP_UNK
            self.ref_table[unk] = SHARED_UNK if unk_matches else REF_UNK
        self.detokenise = form.detokeniser()
        identity = form.detok in ("none", "space")
        self.piece_words = piece_words(self.hyp_table[:-1], form.post_process) if identity else None

    def lengths(self, tokens: np.ndarray) -> np.ndarray:
        """[B]: the position of each row's first eos or pad (its length without one)."""
        outside = (tokens == self.eos) | (tokens == self.pad)
        return np.where(outside.any(axis=1), outside.argmax(axis=1), tokens.shape[1])

    def lines(self, tokens: np.ndarray, side: str) -> list[str]:
        """The scored text of each row of [B, L]; ``side`` is "hyp" or "ref" (the <unk> string).

        The rows' symbols go through one join, a line break in place of each row's end.
        """
        if tokens.shape[0] == 0:
            return []
        ends = np.full((tokens.shape[0], 1), self.pad, dtype=tokens.dtype)
        tokens = np.concatenate([tokens, ends], axis=1)
        ending = (tokens == self.eos) | (tokens == self.pad)
        endings_so_far = np.cumsum(ending, axis=1)
        first_outside = ending & (endings_so_far == 1)
        keep = endings_so_far == 0
        if self.bos is not None:
            keep &= tokens != self.bos
        flat = np.where(first_outside, self.line_break, tokens)[keep | first_outside]
        table = self.hyp_table if side == "hyp" else self.ref_table
        joined = " ".join(map(table.__getitem__, flat.tolist()))
        process, symbol, detokenise = (
            fairseq_post_process(),
            self.form.post_process,
            self.detokenise,
        )
        return [
            detokenise(process(line.strip(" "), symbol)) for line in joined.split(_LINE_BREAK)[:-1]
        ]

    def word_spans(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The words of rows [B, L] (int64, contiguous) read off their pieces (needs
        :attr:`piece_words`): (spans [N, 3] of (row, first column, end column), words per row
        [B], rows to decode as text [B] bool); see :func:`.ragged.piece_word_spans`."""
        from .ragged import piece_word_spans

        rule = self.piece_words
        spans = np.empty((tokens.size, 3), dtype=np.int64)
        counts = np.zeros(tokens.shape[0], dtype=np.int64)
        fallback = np.zeros(tokens.shape[0], dtype=np.bool_)
        bos = -1 if self.bos is None else self.bos
        found = piece_word_spans(
            tokens, self.pad, self.eos, bos, rule.before, rule.after, rule.irregular, spans,
            counts, fallback,
        )  # fmt: skip
        return spans[:found], counts, fallback

    def pieces_text(self, pieces: Sequence[int], side: str) -> str:
        """The scored text of pieces (ids); ``side`` is "hyp" or "ref" (the <unk> string)."""
        table = self.hyp_table if side == "hyp" else self.ref_table
        symbols = " ".join(map(table.__getitem__, pieces))
        return fairseq_post_process()(symbols, self.form.post_process)


class PieceWords(NamedTuple):
    """Where words start and end among dictionary pieces, for :func:`.ragged.piece_word_spans`."""

    before: np.ndarray  # [V] bool: a word starts at this piece
    after: np.ndarray  # [V] bool: a word ends after this piece
    irregular: np.ndarray  # [V] bool: the rule does not hold for this piece: decode as text


def piece_words(table: Sequence[str], symbol: str) -> PieceWords | None:
    """The word rule of fairseq's post-processing ``symbol`` on the pieces of ``table``, or None
    where words cannot be read off the pieces (the text is then decoded line by line).

    sentencepiece: a word starts at a piece beginning with ``▁``; subword_nmt (``@@ ``): a word
    ends after a piece that does not end with ``@@``; none: every piece is a word. A piece
    holding whitespace, or a ``▁`` after its first character, is irregular.
    """
    size = len(table)
    before, after, irregular = (np.zeros(size, dtype=np.bool_) for _ in range(3))
    for index, piece in enumerate(table):
        irregular[index] = any(char.isspace() for char in piece)
        if symbol == "sentencepiece":
            before[index] = piece.startswith("\u2581")
            irregular[index] |= "\u2581" in piece[1:]
        elif symbol in ("subword_nmt", "@@ "):
            after[index] = not piece.endswith("@@")
        elif symbol == "none":
            before[index] = after[index] = True
        else:
            return None
    return PieceWords(before, after, irregular)
