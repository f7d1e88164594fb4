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
(sacrebleu's 13a, char and none tokenisers act within whitespace words; the others once
per distinct sentence), a reference's units once per distinct reference (looked up by its token
ids). A hypothesis word is looked up by its pieces where the post-processing lets the pieces
show the words (sentencepiece, subword_nmt, none; no detokeniser): no text is built for it.
Both look-ups are a batch at a time in compiled code (:mod:`.sequence_table`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .base import Reward
from .bleu import _SMOOTH_DEFAULTS, SMOOTH_METHODS
from .rouge import MEASURES
from .sequence_table import SequenceTable
from .sequences import Sequences, StartSpec, TokenBatch, token_matrices
from .text import TextDecoder, TextForm

#: sacrebleu tokenisers that act within whitespace words, so that a sentence's tokens are
#: the tokens of its words (13a pads the line and its rules look one character around).
WORD_LOCAL_TOKENIZERS = ("13a", "char", "none")
#: Entries (words, sentences, interned strings) kept before the caches start again.
CACHE_LIMIT = 1_000_000


def as_int64(tokens: Tensor) -> np.ndarray:
    """A token tensor as a contiguous int64 array on the CPU (what the compiled code reads)."""
    return np.ascontiguousarray(tokens.cpu().numpy(), dtype=np.int64)


def sacrebleu_tokenizers() -> tuple[str, ...]:
    from sacrebleu.metrics.bleu import _TOKENIZERS

    return tuple(_TOKENIZERS)


class Ragged(NamedTuple):
    """Sentences of integer units end to end: sentence i is ``ids[starts[i]:starts[i + 1]]``."""

    ids: np.ndarray
    starts: np.ndarray

    def rows(self) -> list[np.ndarray]:
        """Each sentence's units (views)."""
        ids, starts = self.ids, self.starts.tolist()
        return [ids[start:end] for start, end in zip(starts[:-1], starts[1:], strict=True)]

    @staticmethod
    def join(rows: Sequence[np.ndarray]) -> Ragged:
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=starts[1:])
        ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return Ragged(ids.astype(np.int64, copy=False), starts)


#: The units of one piece of text (a word, or a line), one tuple of integers per channel.
Channels = tuple[tuple[int, ...], ...]


class Cache(dict):
    """``key -> compute(key)``, computed on the first look-up."""

    def __init__(self, compute: Callable[[Any], Any]):
        super().__init__()
        self.compute = compute

    def __missing__(self, key):
        value = self[key] = self.compute(key)
        return value


def ragged_channels(entries: Sequence[Channels], counts: np.ndarray, channels: int) -> list[Ragged]:
    """Concatenated units of consecutive entries, ``counts[i]`` entries for sentence i."""
    entry_ends = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=entry_ends[1:])
    out = []
    for channel in range(channels):
        parts = list(map(itemgetter(channel), entries))
        unit_ends = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=unit_ends[1:])
        ids = np.fromiter(chain.from_iterable(parts), np.int64, int(unit_ends[-1]))
        out.append(Ragged(ids, unit_ends[entry_ends]))
    return out


class UnitArena:
    """The units of many words end to end, one growing array per channel: entry i of channel
    c is ``units[c][starts[c][i]:][:lengths[c][i]]``. Sentences gather their words' units in
    one compiled call."""

    def __init__(self, channels: int):
        self.channels = channels
        self.clear()

    def clear(self) -> None:
        self.size = 0
        self.used = [0] * self.channels
        self.units = [np.empty(4096, dtype=np.int64) for _ in range(self.channels)]
        self.starts = [np.empty(1024, dtype=np.int64) for _ in range(self.channels)]
        self.lengths = [np.empty(1024, dtype=np.int64) for _ in range(self.channels)]

    def __len__(self) -> int:
        return self.size

    def add(self, entry: Channels) -> int:
        """Stores one word's units; returns its entry id."""
        index = self.size
        self._reserve(1, [len(units) for units in entry])
        for channel, units in enumerate(entry):
            used, count = self.used[channel], len(units)
            self.units[channel][used : used + count] = units
            self.starts[channel][index], self.lengths[channel][index] = used, count
            self.used[channel] = used + count
        self.size = index + 1
        return index

    def extend(self, channels: list[Ragged]) -> np.ndarray:
        """Stores each sentence of a ragged batch as one entry; returns their entry ids."""
        count, index = len(channels[0].starts) - 1, self.size
        self._reserve(count, [len(ids) for ids, _ in channels])
        for channel, (ids, starts) in enumerate(channels):
            used = self.used[channel]
            self.units[channel][used : used + len(ids)] = ids
            self.starts[channel][index : index + count] = used + starts[:-1]
            self.lengths[channel][index : index + count] = np.diff(starts)
            self.used[channel] = used + len(ids)
        self.size = index + count
        return np.arange(index, index + count, dtype=np.int64)

    def _reserve(self, entries: int, units: list[int]) -> None:
        """Room for ``entries`` more entries and ``units[c]`` more units in channel c."""
        needed = self.size + entries
        if needed > len(self.starts[0]):
            self.starts = [np.resize(array, 2 * needed) for array in self.starts]
            self.lengths = [np.resize(array, 2 * needed) for array in self.lengths]
        for channel, count in enumerate(units):
            if self.used[channel] + count > len(self.units[channel]):
                self.units[channel] = np.resize(
                    self.units[channel], 2 * (self.used[channel] + count)
                )

    def gather(self, entries: np.ndarray, counts: np.ndarray) -> list[Ragged]:
        """The units of sentences made of ``counts[b]`` consecutive ``entries`` each."""
        from .ragged import gather_entries

        out = []
        for channel in range(self.channels):
            starts, lengths = self.starts[channel], self.lengths[channel]
            ids = np.empty(int(lengths[entries].sum()), dtype=np.int64)
            sentence_starts = np.empty(len(counts) + 1, dtype=np.int64)
            gather_entries(
                entries, counts, starts, lengths, self.units[channel], ids, sentence_starts
            )
            out.append(Ragged(ids, sentence_starts))
        return out


def merge_rows(others: list[Ragged], chosen: list[Ragged], is_chosen: np.ndarray) -> list[Ragged]:
    """The channels of all sentences, in order, from those of the sentences not ``is_chosen``
    and those of the chosen ones."""
    merged = []
    for other, picked in zip(others, chosen, strict=True):
        other_rows, chosen_rows = iter(other.rows()), iter(picked.rows())
        rows = [next(chosen_rows if flag else other_rows) for flag in is_chosen.tolist()]
        merged.append(Ragged.join(rows))
    return merged


def sacrebleu_signature(metric: Any) -> str:
    """A sacrebleu metric's signature (it knows the number of references once it has scored)."""
    metric.sentence_score("a", ["a"])
    return str(metric.get_signature())


class TextReward(Reward):
    """A sentence-level reward of the decoded text of ids; ``symbols`` are the target
    dictionary's strings, ``text`` how they become the scored text. ``start`` is ignored:
    the whole sentence is scored.

    A subclass gives :meth:`text_units`, the units of a whitespace word (of a whole line when
    ``per_word`` is false), one tuple per channel; a sentence's units are its words' in order.
    """

    name: ClassVar[str]
    channels: ClassVar[int] = 1

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
        self.per_word = True
        self.vocab: dict[str, int] = {}
        self.text_cache = Cache(self.text_units)
        # the units of words, looked up by their pieces (one table per side: their <unk>
        # strings differ), and of whole references, looked up by their token ids
        self.arena = UnitArena(self.channels)
        skip = -1 if bos is None else bos
        self.word_tables = {side: SequenceTable(skip) for side in ("hyp", "ref")}
        self.reference_arena = UnitArena(self.channels)
        self.reference_table = SequenceTable(skip)

    def __call__(self, hyps: TokenBatch, refs: TokenBatch, start: StartSpec = None) -> Tensor:
        hyp_tokens, ref_tokens = token_matrices(hyps, refs, self.pad)
        if hyp_tokens.size(0) == 0:
            return torch.zeros(0, dtype=torch.float, device=hyp_tokens.device)
        self.limit_caches()
        hyp_units = self.sentence_units(as_int64(hyp_tokens), "hyp")
        scores = self.score_units(hyp_units, self.references(as_int64(ref_tokens)))
        return torch.from_numpy(scores).to(device=hyp_tokens.device, dtype=torch.float)

    def intern(self, units: Sequence[str]) -> tuple[int, ...]:
        """Integer ids of strings, shared by hypotheses and references."""
        vocab = self.vocab
        return tuple([vocab.setdefault(unit, len(vocab)) for unit in units])

    @abstractmethod
    def text_units(self, text: str) -> Channels:
        """The units of a whitespace word (a line when not ``per_word``), per channel."""

    def words_units(self, text: str) -> Channels:
        """The units of text read off a word's pieces: none, one or (irregular pieces aside,
        never) several whitespace words."""
        words = text.split()
        if len(words) == 1:
            return self.text_cache[words[0]]
        entries = [self.text_cache[word] for word in words]
        return tuple(
            tuple(chain.from_iterable(entry[channel] for entry in entries))
            for channel in range(self.channels)
        )

    def units(self, lines: Sequence[str]) -> list[Ragged]:
        """The units of each line, one :class:`Ragged` per channel."""
        if self.per_word:
            words = [line.split() for line in lines]
        else:
            words = [[line] for line in lines]
        counts = np.fromiter(map(len, words), np.int64, len(words))
        entries = list(map(self.text_cache.__getitem__, chain.from_iterable(words)))
        return ragged_channels(entries, counts, self.channels)

    def sentence_units(self, tokens: np.ndarray, side: str) -> list[Ragged]:
        """The units of the rows of [B, L] (int64, contiguous); ``side`` is "hyp" or "ref"
        (the <unk> string).

        Where the pieces show the words, each word is looked up by its pieces (no text is
        built); otherwise, and for rows with irregular pieces, the rows are decoded as text.
        """
        if self.decoder.piece_words is None or not self.per_word:
            return self.units(self.decoder.lines(tokens, side))
        spans, counts, fallback = self.decoder.word_spans(tokens)
        if fallback.any():
            as_text = self.units(self.decoder.lines(tokens[fallback], side))
            if fallback.all():
                return as_text
            others = self.sentence_units(np.ascontiguousarray(tokens[~fallback]), side)
            return merge_rows(others, as_text, fallback)
        new_words = partial(self.new_words, tokens, side=side)
        entries = self.word_tables[side].values_of(tokens, spans, new_words)
        return self.arena.gather(entries, counts)

    def new_words(self, tokens: np.ndarray, spans: np.ndarray, side: str) -> list[int]:
        """Arena entries for the words of ``spans`` (row, start, end) of ``tokens``."""
        entries = []
        for row, start, end in spans.tolist():
            pieces = [t for t in tokens[row, start:end].tolist() if t != self.bos]
            text = self.decoder.pieces_text(pieces, side)
            entries.append(self.arena.add(self.words_units(text)))
        return entries

    def references(self, tokens: np.ndarray) -> list[Ragged]:
        """The units of each reference row [B, L] (int64, contiguous), from the cache or
        decoded (and cached) now."""
        rows = len(tokens)
        spans = np.zeros((rows, 3), dtype=np.int64)
        spans[:, 0] = np.arange(rows)
        spans[:, 2] = self.decoder.lengths(tokens)
        new_references = partial(self.new_references, tokens)
        entries = self.reference_table.values_of(tokens, spans, new_references)
        return self.reference_arena.gather(entries, np.ones(rows, dtype=np.int64))

    def new_references(self, tokens: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Arena entries for the references of the rows of ``spans``."""
        rows = np.ascontiguousarray(tokens[spans[:, 0]])
        return self.reference_arena.extend(self.sentence_units(rows, "ref"))

    def forget_references(self) -> None:
        """Empties the reference cache (a benchmark's cold start)."""
        self.reference_table.clear()
        self.reference_arena.clear()

    def limit_caches(self) -> None:
        """Start the caches again when they hold too much (ids change: all go together)."""
        caches = (
            self.vocab, self.text_cache, *self.word_tables.values(), self.arena,
            self.reference_table, self.reference_arena,
        )  # fmt: skip
        if max(map(len, caches)) > CACHE_LIMIT:
            for cache in caches:
                cache.clear()

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

    def metric_tokens(self, text: str) -> list[str]:
        """sacrebleu's ``_preprocess_segment``, split: lowercased if asked, then tokenised.

        13a changes only text with ASCII punctuation or symbols: a word of letters and digits
        is its own token.
        """
        if self.lowercase:
            text = text.lower()
        if self.tokenize == "13a" and text.isalnum():
            return [text]
        return self.metric.tokenizer(text.rstrip()).split()

    def text_units(self, text: str) -> Channels:
        return (self.intern(self.metric_tokens(text)),)

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
    channels = 2

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

    def text_units(self, text: str) -> Channels:
        """Characters as code points, and (for chrF++) the words with punctuation split off."""
        if self.lowercase:
            text = text.lower()
        words = self.intern(chrf_words(text)) if self.word_order else ()
        return (tuple(map(ord, text)), words)

    def score_units(self, hyp: list[Ragged], ref: list[Ragged]) -> np.ndarray:
        from .ragged import ragged_chrf

        out = np.empty(len(hyp[0].starts) - 1)
        ragged_chrf(
            *hyp[0], *ref[0], *hyp[1], *ref[1], self.char_order, self.word_order, self.beta, out
        )
        return out

    def signature(self) -> str:
        return f"{sacrebleu_signature(self.metric)}|{self.text.describe()}"


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

    def text_units(self, text: str) -> Channels:
        return (self.intern((text,)),)

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
    return TEXT_REWARDS[name].with_options(f"text reward {name!r}", **options)
