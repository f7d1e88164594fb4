"""An exact map from integer sequences to integers, looked up a whole batch at a time.

The text rewards look up every word of a batch by its pieces, and every reference by its
token ids; a Python dict would cost a tuple and a hash in Python for each. Here the keys are
spans of a token matrix, hashed and compared item by item in compiled code (open addressing,
linear probing): a hit is always the same sequence, never merely the same hash.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

_EMPTY = -1
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True, inline="always")
def _span_hash(tokens, row, start, end, skip):  # pragma: no cover - compiled
    """FNV-1a over the span's tokens (``skip`` left out), then a final mix; and their count."""
    value = _FNV_OFFSET
    count = 0
    for i in range(start, end):
        token = tokens[row, i]
        if token == skip:
            continue
        value = (value ^ np.uint64(token)) * _FNV_PRIME
        count += 1
    value ^= value >> np.uint64(29)
    value *= np.uint64(0xBF58476D1CE4E5B9)
    value ^= value >> np.uint64(32)
    return value, count


@numba.njit(cache=True, nogil=True, inline="always")
def _same(tokens, row, start, end, skip, items, first):  # pragma: no cover - compiled
    """Whether the span's tokens (``skip`` left out) are ``items[first:]`` (lengths agree)."""
    k = first
    for i in range(start, end):
        token = tokens[row, i]
        if token == skip:
            continue
        if items[k] != token:
            return False
        k += 1
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _probe(
    tokens, row, start, end, skip, value, count, slots, hashes, starts, lengths, items
):  # pragma: no cover - compiled
    """(slot, entry) of the span whose hash is ``value``: its entry, or -1 and the empty slot
    where it would go."""
    mask = np.uint64(slots.shape[0] - 1)
    slot = value & mask
    while slots[slot] != _EMPTY:
        entry = slots[slot]
        if (
            hashes[entry] == value
            and lengths[entry] == count
            and _same(tokens, row, start, end, skip, items, starts[entry])
        ):
            return slot, entry
        slot = (slot + np.uint64(1)) & mask
    return slot, -1


@numba.njit(cache=True, nogil=True)
def find_spans(
    tokens, spans, skip, slots, hashes, starts, lengths, items, out
):  # pragma: no cover - compiled
    """out[k] = the entry of span k (``tokens[row, start:end]``, ``spans[k]`` = (row, start,
    end)), or -1 where the table does not hold it."""
    for k in range(spans.shape[0]):
        row, start, end = spans[k, 0], spans[k, 1], spans[k, 2]
        value, count = _span_hash(tokens, row, start, end, skip)
        out[k] = _probe(
            tokens, row, start, end, skip, value, count, slots, hashes, starts, lengths, items
        )[1]


@numba.njit(cache=True, nogil=True)
def add_spans(
    tokens, spans, skip, slots, hashes, starts, lengths, items, size, used, out, is_new
):  # pragma: no cover - compiled
    """out[k] = the entry of span k, added (``is_new[k]``) where the table lacks it; a span
    seen earlier in ``spans`` finds the entry added for it. The arrays have room for every
    span. Returns the new (size, used)."""
    for k in range(spans.shape[0]):
        row, start, end = spans[k, 0], spans[k, 1], spans[k, 2]
        value, count = _span_hash(tokens, row, start, end, skip)
        slot, entry = _probe(
            tokens, row, start, end, skip, value, count, slots, hashes, starts, lengths, items
        )
        is_new[k] = entry < 0
        if entry < 0:
            entry = size
            hashes[entry], starts[entry], lengths[entry] = value, used, count
            for i in range(start, end):
                if tokens[row, i] != skip:
                    items[used] = tokens[row, i]
                    used += 1
            slots[slot] = entry
            size += 1
        out[k] = entry
    return size, used


@numba.njit(cache=True, nogil=True)
def _rehash(slots, hashes, size):  # pragma: no cover - compiled
    mask = np.uint64(slots.shape[0] - 1)
    slots[:] = _EMPTY
    for entry in range(size):
        slot = hashes[entry] & mask
        while slots[slot] != _EMPTY:
            slot = (slot + np.uint64(1)) & mask
        slots[slot] = entry


class SequenceTable:
    """Integer sequences -> integer values; the sequences are spans of a token matrix, rows
    ``spans[k, 0]`` from column ``spans[k, 1]`` to ``spans[k, 2]``, with the value ``skip``
    (a beginning-of-sentence id, say) left out."""

    def __init__(self, skip: int = -1):
        self.skip = skip
        self.clear()

    def clear(self) -> None:
        self.size = self.used = 0
        self.slots = np.full(1024, _EMPTY, dtype=np.int64)
        self.hashes = np.empty(256, dtype=np.uint64)
        self.starts = np.empty(256, dtype=np.int64)
        self.lengths = np.empty(256, dtype=np.int64)
        self.values = np.empty(256, dtype=np.int64)
        self.items = np.empty(4096, dtype=np.int64)

    def __len__(self) -> int:
        return self.size

    def find(self, tokens: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """[N] the entry of each span, -1 where the table does not hold it."""
        out = np.empty(len(spans), dtype=np.int64)
        find_spans(
            tokens, spans, self.skip, self.slots, self.hashes, self.starts, self.lengths,
            self.items, out,
        )  # fmt: skip
        return out

    def values_of(
        self, tokens: np.ndarray, spans: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """[N] the value of each span. The spans the table lacks are added, with the values that
        ``compute`` gives for them: it gets the spans of the distinct new sequences, [M, 3]."""
        entries = self.find(tokens, spans)
        missing = np.flatnonzero(entries < 0)
        if len(missing):
            missing_spans = spans[missing]
            self._make_room(len(missing), int((missing_spans[:, 2] - missing_spans[:, 1]).sum()))
            added = np.empty(len(missing), dtype=np.int64)
            is_new = np.empty(len(missing), dtype=np.bool_)
            self.size, self.used = add_spans(
                tokens, missing_spans, self.skip, self.slots, self.hashes, self.starts,
                self.lengths, self.items, self.size, self.used, added, is_new,
            )  # fmt: skip
            try:
                self.values[added[is_new]] = compute(missing_spans[is_new])
            except BaseException:
                self.clear()  # the new entries have no values
                raise
            entries[missing] = added
        return self.values[entries]

    def _make_room(self, entries: int, items: int) -> None:
        size = self.size + entries
        if size > len(self.hashes):
            capacity = 2 * size
            self.hashes, self.starts, self.lengths, self.values = (
                np.resize(array, capacity)
                for array in (self.hashes, self.starts, self.lengths, self.values)
            )
        if self.used + items > len(self.items):
            self.items = np.resize(self.items, 2 * (self.used + items))
        if 2 * size > len(self.slots):  # at most half full
            self.slots = np.empty(1 << (4 * size - 1).bit_length(), dtype=np.int64)
            _rehash(self.slots, self.hashes, self.size)
