"""Rewards on the text users evaluate: sacreBLEU, chrF(++) and ROUGE of the decoded sentences.

A subword model's samples are token ids; the user reports detokenised sacreBLEU of their text.
Here ids become that text (:mod:`.text`), the text becomes the metric's units, and the compiled
n-gram counting of :mod:`.compiled` scores the batch (:mod:`.ragged`):

- BLEU: sacrebleu's tokeniser splits the text into tokens, which are interned as integers;
- chrF: characters are unicode code points; chrF++'s words (punctuation split off as sacrebleu
  does) are interned;
- ROUGE: whitespace words, interned (rouge-score with a whitespace tokeniser, as the
  validation ROUGE of this plugin).

Where it costs Python time, work is done once: a word's tokens once per distinct word
(sacrebleu's 13a, intl, char and none tokenisers act within whitespace words; the others once
per distinct sentence), a reference's units once per distinct reference (keyed by its token
ids). The hypotheses of a batch are decoded with one join.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .base import Reward
from .bleu import _SMOOTH_DEFAULTS, SMOOTH_METHODS
from .rouge import MEASURES
from .sequences import Sequences, StartSpec, TokenBatch, token_matrices
from .text import TextDecoder, TextForm

#: sacrebleu tokenisers that act within whitespace words, so that a sentence's tokens are
#: the tokens of its words (13a pads the line and its rules look one character around).
WORD_LOCAL_TOKENIZERS = ("13a", "char", "none")
#: Entries (words, sentences, interned strings) kept before the caches start again.
CACHE_LIMIT = 1_000_000


def sacrebleu_tokenizers() -> tuple[str, ...]:
    from sacrebleu.metrics.bleu import _TOKENIZERS

    return tuple(_TOKENIZERS)


class Ragged(NamedTuple):
    """Sentences of integer units end to end: sentence i is ``ids[starts[i]:starts[i + 1]]``."""

    ids: np.ndarray
    starts: np.ndarray

    def split(self) -> list[np.ndarray]:
        return np.split(self.ids, self.starts[1:-1])

    @staticmethod
    def join(rows: Sequence[np.ndarray]) -> Ragged:
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=starts[1:])
        ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return Ragged(ids.astype(np.int64, copy=False), starts)


class Interned(dict):
    """A piece of text -> the tuple of interned ids of its units (``split`` gives the units);
    ``vocab`` (unit -> id) is shared by hypotheses and references."""

    def __init__(self, split: Callable[[str], Sequence[str]], vocab: dict[str, int]):
        super().__init__()
        self.split = split
        self.vocab = vocab

    def __missing__(self, text: str) -> tuple[int, ...]:
        vocab = self.vocab
        ids = tuple([vocab.setdefault(unit, len(vocab)) for unit in self.split(text)])
        self[text] = ids
        return ids


def interned_units(lines: Sequence[str], interned: Interned, per_word: bool) -> Ragged:
    """The interned units of each line: of each whitespace word when ``per_word``, else of
    the whole line."""
    pieces = [line.split() for line in lines] if per_word else [[line] for line in lines]
    ids_of_pieces = list(map(interned.__getitem__, chain.from_iterable(pieces)))
    unit_ends = np.zeros(len(ids_of_pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, ids_of_pieces), np.int64, len(ids_of_pieces)), out=unit_ends[1:])
    piece_ends = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)), out=piece_ends[1:])
    ids = np.fromiter(chain.from_iterable(ids_of_pieces), np.int64, int(unit_ends[-1]))
    return Ragged(ids, unit_ends[piece_ends])


def code_points(lines: Sequence[str]) -> Ragged:
    """The characters of each line without its whitespace, as unicode code points."""
    squeezed = ["".join(line.split()) for line in lines]
    starts = np.zeros(len(squeezed) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, squeezed), np.int64, len(squeezed)), out=starts[1:])
    ids = np.frombuffer("".join(squeezed).encode("utf-32-le"), dtype=np.uint32)
    return Ragged(ids.astype(np.int64), starts)


def sacrebleu_signature(metric: Any) -> str:
    """A sacrebleu metric's signature (it knows the number of references once it has scored)."""
    metric.sentence_score("a", ["a"])
    return str(metric.get_signature())


class TextReward(Reward):
    """A sentence-level reward of the decoded text of ids; ``symbols`` are the target
    dictionary's strings, ``text`` how they become the scored text. ``start`` is ignored:
    the whole sentence is scored."""

    name: ClassVar[str]

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        text: TextForm | None = None,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        bos: int | None = None,
        unk_matches: bool = False,
    ):
        super().__init__(pad=pad, eos=eos, unk=unk, unk_matches=unk_matches)
        self.text = text or TextForm()
        self.bos = bos
        self.decoder = TextDecoder(
            symbols, self.text, pad=pad, eos=eos, unk=unk, bos=bos, unk_matches=unk_matches
        )
        self.vocab: dict[str, int] = {}
        self.reference_units: dict[tuple[int, ...], tuple[np.ndarray, ...]] = {}

    def __call__(self, hyps: TokenBatch, refs: TokenBatch, start: StartSpec = None) -> Tensor:
        hyp_tokens, ref_tokens = token_matrices(hyps, refs, self.pad)
        if hyp_tokens.size(0) == 0:
            return torch.zeros(0, dtype=torch.float, device=hyp_tokens.device)
        self.limit_caches()
        hyp_units = self.units(self.decoder.lines(hyp_tokens.cpu().numpy(), "hyp"))
        scores = self.score_units(hyp_units, self.references(ref_tokens.cpu().numpy()))
        return torch.from_numpy(scores).to(device=hyp_tokens.device, dtype=torch.float)

    def references(self, tokens: np.ndarray) -> list[Ragged]:
        """The units of each reference row, from the cache or decoded (and cached) now."""
        lengths = self.decoder.lengths(tokens).tolist()
        keys = [tuple(row[:length]) for row, length in zip(tokens.tolist(), lengths, strict=True)]
        cache = self.reference_units
        missing = list({key: None for key in keys if key not in cache})
        if missing:
            width = max(map(len, missing)) + 1
            rows = np.full((len(missing), width), self.pad, dtype=np.int64)
            for i, key in enumerate(missing):
                rows[i, : len(key)] = key
            channels = self.units(self.decoder.lines(rows, "ref"))
            for key, *units in zip(
                missing, *(channel.split() for channel in channels), strict=True
            ):
                cache[key] = tuple(units)
        found = [cache[key] for key in keys]
        return [Ragged.join([units[c] for units in found]) for c in range(len(found[0]))]

    def limit_caches(self) -> None:
        """Start the caches again when they hold too much (ids change: all go together)."""
        if len(self.vocab) > CACHE_LIMIT or len(self.reference_units) > CACHE_LIMIT:
            self.vocab.clear()
            self.reference_units.clear()
            self.clear_unit_caches()

    def clear_unit_caches(self) -> None:
        """Drop the cached units of words or sentences (their ids are no longer valid)."""

    @abstractmethod
    def units(self, lines: Sequence[str]) -> list[Ragged]:
        """The integer units of each line, one :class:`Ragged` per channel."""

    @abstractmethod
    def score_units(self, hyp: list[Ragged], ref: list[Ragged]) -> np.ndarray:
        """[B] float64 scores in [0, 1]."""

    @abstractmethod
    def signature(self) -> str:
        """What this reward measures, as sacrebleu's signature plus the text form."""

    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        raise NotImplementedError("a text reward scores text: call it on token ids")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature()})"


class TextSentenceBleu(TextReward):
    """sacrebleu's ``BLEU(tokenize, smooth_method, smooth_value, effective_order=True)
    .sentence_score(hyp_text, [ref_text]).score / 100`` of the decoded text."""

    name = "sentence_bleu"

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        text: TextForm | None = None,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        bos: int | None = None,
        unk_matches: bool = False,
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        max_order: int = 4,
    ):
        super().__init__(
            symbols=symbols, text=text, pad=pad, eos=eos, unk=unk, bos=bos, unk_matches=unk_matches
        )
        if tokenize not in sacrebleu_tokenizers():
            raise ValueError(
                f"unknown sacrebleu tokeniser {tokenize!r}; expected one of "
                f"{', '.join(sacrebleu_tokenizers())}"
            )
        if smooth_method not in SMOOTH_METHODS:
            raise ValueError(
                f"unknown smooth_method {smooth_method!r}; expected one of {SMOOTH_METHODS}"
            )
        from sacrebleu.metrics import BLEU

        self.tokenize, self.lowercase = tokenize, lowercase
        self.smooth_method, self.smooth_value, self.max_order = (
            smooth_method,
            smooth_value,
            max_order,
        )
        self.metric = BLEU(
            tokenize=tokenize,
            lowercase=lowercase,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            max_ngram_order=max_order,
            effective_order=True,
        )
        self.per_word = tokenize in WORD_LOCAL_TOKENIZERS
        self.tokens = Interned(self.metric_tokens, self.vocab)

    def metric_tokens(self, text: str) -> list[str]:
        """sacrebleu's ``_preprocess_segment``, split: lowercased if asked, then tokenised."""
        if self.lowercase:
            text = text.lower()
        return self.metric.tokenizer(text.rstrip()).split()

    def clear_unit_caches(self) -> None:
        self.tokens.clear()

    def units(self, lines: Sequence[str]) -> list[Ragged]:
        return [interned_units(lines, self.tokens, self.per_word)]

    def score_units(self, hyp: list[Ragged], ref: list[Ragged]) -> np.ndarray:
        from .compiled import SMOOTH_CODES
        from .ragged import ragged_sentence_bleu

        value = self.smooth_value
        if value is None:
            value = _SMOOTH_DEFAULTS[self.smooth_method]
        out = np.empty(len(hyp[0].starts) - 1)
        smooth = SMOOTH_CODES[self.smooth_method]
        value = 0.0 if value is None else float(value)
        ragged_sentence_bleu(*hyp[0], *ref[0], self.max_order, smooth, value, out)
        return out

    def signature(self) -> str:
        return f"{sacrebleu_signature(self.metric)}|{self.text.describe()}"


_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def chrf_words(word: str) -> tuple[str, ...]:
    """sacrebleu's ``CHRF._remove_punctuation`` of one whitespace word."""
    if len(word) == 1:
        return (word,)
    if word[-1] in _PUNCTUATION:
        return (word[:-1], word[-1])
    if word[0] in _PUNCTUATION:
        return (word[0], word[1:])
    return (word,)


class TextChrf(TextReward):
    """sacrebleu's ``CHRF(char_order, word_order, beta).sentence_score(hyp, [ref]).score / 100``
    (chrF++ with ``word_order=2``)."""

    name = "chrf"

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        text: TextForm | None = None,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        bos: int | None = None,
        unk_matches: bool = False,
        char_order: int = 6,
        word_order: int = 0,
        beta: int = 2,
        lowercase: bool = False,
    ):
        super().__init__(
            symbols=symbols, text=text, pad=pad, eos=eos, unk=unk, bos=bos, unk_matches=unk_matches
        )
        for option, value, low in (("char_order", char_order, 1), ("word_order", word_order, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{option} must be an int >= {low}, got {value!r}")
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta!r}")
        from sacrebleu.metrics import CHRF

        self.char_order, self.word_order, self.beta, self.lowercase = (
            char_order,
            word_order,
            beta,
            lowercase,
        )
        self.metric = CHRF(
            char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase
        )
        self.words = Interned(chrf_words, self.vocab)

    def clear_unit_caches(self) -> None:
        self.words.clear()

    def units(self, lines: Sequence[str]) -> list[Ragged]:
        if self.lowercase:
            lines = [line.lower() for line in lines]
        if self.word_order == 0:
            words = Ragged(np.zeros(0, dtype=np.int64), np.zeros(len(lines) + 1, dtype=np.int64))
        else:
            words = interned_units(lines, self.words, per_word=True)
        return [code_points(lines), words]

    def score_units(self, hyp: list[Ragged], ref: list[Ragged]) -> np.ndarray:
        from .ragged import ragged_chrf

        out = np.empty(len(hyp[0].starts) - 1)
        ragged_chrf(
            *hyp[0], *ref[0], *hyp[1], *ref[1], self.char_order, self.word_order, self.beta, out
        )
        return out

    def signature(self) -> str:
        return f"{sacrebleu_signature(self.metric)}|{self.text.describe()}"


def _whitespace_words(word: str) -> tuple[str]:
    return (word,)


class _TextRouge(TextReward):
    """ROUGE of the decoded text's whitespace words (rouge-score with a whitespace tokeniser)."""

    kernel_name: ClassVar[str]

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        text: TextForm | None = None,
        pad: int = 1,
        eos: int = 2,
        unk: int = 3,
        bos: int | None = None,
        unk_matches: bool = False,
        measure: str = "fmeasure",
    ):
        super().__init__(
            symbols=symbols, text=text, pad=pad, eos=eos, unk=unk, bos=bos, unk_matches=unk_matches
        )
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
        self.measure = measure
        self.words = Interned(_whitespace_words, self.vocab)

    def clear_unit_caches(self) -> None:
        self.words.clear()

    def units(self, lines: Sequence[str]) -> list[Ragged]:
        return [interned_units(lines, self.words, per_word=True)]

    def score_units(self, hyp: list[Ragged], ref: list[Ragged]) -> np.ndarray:
        from . import ragged
        from .compiled import MEASURE_CODES

        out = np.empty(len(hyp[0].starts) - 1)
        kernel = getattr(ragged, self.kernel_name)
        kernel(*hyp[0], *ref[0], MEASURE_CODES[self.measure], out)
        return out

    def signature(self) -> str:
        return f"{self.name}:{self.measure}|tok:whitespace|{self.text.describe()}"


class TextRouge2(_TextRouge):
    name = "rouge2"
    kernel_name = "ragged_rouge2"


class TextRougeL(_TextRouge):
    name = "rougeL"
    kernel_name = "ragged_rouge_l"


TEXT_REWARDS: dict[str, type[TextReward]] = {
    cls.name: cls for cls in (TextSentenceBleu, TextChrf, TextRouge2, TextRougeL)
}


def get_text_reward(name: str, **options: Any) -> TextReward:
    """Builds the text reward called ``name``; ``options`` include ``symbols`` and ``text``."""
    if name not in TEXT_REWARDS:
        raise ValueError(
            f"reward {name!r} scores token ids only; the rewards of text are "
            f"{', '.join(TEXT_REWARDS)}"
        )
    cls = TEXT_REWARDS[name]
    valid = cls.option_names()
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for text reward {name!r}; "
            f"valid options: {', '.join(valid)}"
        )
    return cls(**options)
