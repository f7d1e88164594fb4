"""The compiled sequence table against a Python dict of tuples."""

import numpy as np
import pytest

from fairseq_mixer.rewards.sequence_table import SequenceTable


def spans_of(lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random spans (row, start, end) inside rows of the given lengths, some empty."""
    rows = rng.integers(0, len(lengths), size=200)
    starts = rng.integers(0, lengths[rows] + 1)
    ends = np.minimum(starts + rng.integers(0, 6, size=200), lengths[rows])
    return np.stack([rows, starts, ends], axis=1).astype(np.int64)


@pytest.mark.parametrize("skip", [-1, 0])
def test_values_follow_the_sequences_across_batches_and_growth(skip):
    rng = np.random.default_rng(skip + 5)
    table, expected = SequenceTable(skip), {}
    computed = []

    def compute(spans):
        values = []
        for row, start, end in spans.tolist():
            key = tuple(t for t in tokens[row, start:end].tolist() if t != skip)
            assert key not in expected, "a sequence was computed twice"
            expected[key] = len(expected) * 7 + 3
            values.append(expected[key])
        computed.append(len(values))
        return values

    for _ in range(40):  # the table grows from 256 entries and rehashes on the way
        tokens = rng.integers(0, 6, size=(30, 12)).astype(np.int64)  # few symbols: repeats
        lengths = np.full(30, 12)
        spans = spans_of(lengths, rng)
        got = table.values_of(tokens, spans, compute)
        keys = [
            tuple(t for t in tokens[r, s:e].tolist() if t != skip) for r, s, e in spans.tolist()
        ]
        assert got.tolist() == [expected[key] for key in keys]
    assert len(table) == len(expected) > 600  # past 256 entries and 1024 slots
    assert sum(computed) == len(expected)
    assert table.values_of(tokens, spans[:0], compute).shape == (0,)


def test_a_hash_is_never_taken_for_the_sequence():
    table = SequenceTable()
    tokens = np.array([[1, 2, 3], [3, 2, 1]], dtype=np.int64)
    spans = np.array([[0, 0, 3], [1, 0, 3]], dtype=np.int64)
    table.values_of(tokens, spans[:1], lambda new: [10])
    table.hashes[0] ^= np.uint64(1)  # the stored hash no longer that of the items
    assert table.find(tokens, spans[:1]).tolist() == [-1]  # a hash mismatch is a miss
    fresh = SequenceTable()
    fresh.values_of(tokens, spans[:1], lambda new: [10])
    assert fresh.find(tokens, spans[1:]).tolist() == [-1]  # same items, other order


def test_a_failed_computation_leaves_no_entry_without_value():
    table = SequenceTable()
    tokens = np.array([[1, 2]], dtype=np.int64)
    spans = np.array([[0, 0, 2]], dtype=np.int64)

    def fail(new):
        raise RuntimeError("no value")

    with pytest.raises(RuntimeError):
        table.values_of(tokens, spans, fail)
    assert len(table) == 0
    assert table.values_of(tokens, spans, lambda new: [4]).tolist() == [4]
