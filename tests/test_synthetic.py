"""The synthetic language pair: determinism, shape, reordering and the binarised output."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from data_prep import synthetic
from data_prep.synthetic import Clause, NounPhrase, Sentence, generate_pairs, render

SIZES = {"train": 300, "valid": 40, "test": 30}


def run_synthetic(dest: Path, seed: int = 3) -> int:
    sizes = [f"--{name}={count}" for name, count in SIZES.items()]
    return synthetic.main(["--dest", str(dest), *sizes, "--seed", str(seed)])


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "preprocess.log"
    }


@pytest.fixture(scope="module")
def synthetic_dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("synthetic") / "data"
    assert run_synthetic(dest) == 0
    return dest


def test_same_seed_gives_same_pairs() -> None:
    assert generate_pairs(500, seed=11) == generate_pairs(500, seed=11)
    assert generate_pairs(500, seed=11) != generate_pairs(500, seed=12)
    assert generate_pairs(200, seed=11) == generate_pairs(500, seed=11)[:200]


def test_pairs_are_non_empty_distinct_and_of_varied_length() -> None:
    pairs = generate_pairs(3000, seed=5)
    assert all(source.strip() and target.strip() for source, target in pairs)
    assert len({source for source, _ in pairs}) == len(pairs)
    source_lengths = Counter(len(source.split()) for source, _ in pairs)
    assert min(source_lengths) == synthetic.MIN_WORDS
    assert max(source_lengths) == synthetic.MAX_WORDS
    assert len(source_lengths) == synthetic.MAX_WORDS - synthetic.MIN_WORDS + 1
    different_length = sum(len(s.split()) != len(t.split()) for s, t in pairs)
    assert different_length > 0.3 * len(pairs)


def test_vocabulary_is_small_and_complete() -> None:
    pairs = generate_pairs(3000, seed=5)
    assert {word for source, _ in pairs for word in source.split()} == synthetic.source_vocabulary()
    assert {word for _, target in pairs for word in target.split()} == synthetic.target_vocabulary()
    assert 60 <= len(synthetic.source_vocabulary()) <= 100


def test_rendering_reorders_and_changes_length() -> None:
    subject = NounPhrase("a", ["old", "lazy"], "dog", plural=False)
    obj = NounPhrase("the", ["red"], "ball", plural=True)
    place = NounPhrase("this", [], "garden", plural=False)
    clause = Clause(subject, "chase", obj=obj, preposition="in", place=place, adverb="today")
    second = Clause(NounPhrase("those", [], "cat", plural=True), "sleep")
    source, target = render(Sentence([clause, second], ["but"]))
    assert source == (
        "a old lazy dog chases the red balls in this garden today but those cats sleep".split()
    )
    assert target == (
        "god dlo yzal eht llab lp der siht nedrag ni yadot sesahc tub esoht tac lp peels".split()
    )


def test_most_targets_are_not_a_word_by_word_translation() -> None:
    plural_nouns = {noun + "s" for noun in synthetic.NOUNS}

    def monotone(source: str) -> list[str]:
        words = []
        for word in source.split():
            if word in plural_nouns:
                words += [word[:-1][::-1], synthetic.PLURAL_MARKER]
            elif word != synthetic.UNTRANSLATED:
                words.append(word[::-1])
        return words

    pairs = generate_pairs(1000, seed=2)
    reordered = sum(monotone(source) != target.split() for source, target in pairs)
    assert reordered > 0.9 * len(pairs)


def test_splits_are_disjoint_and_test_does_not_depend_on_train_size() -> None:
    small = {split.name: split for split in synthetic.generate_splits(100, 20, 20, seed=4)}
    large = {split.name: split for split in synthetic.generate_splits(400, 20, 20, seed=4)}
    assert small["test"].source == large["test"].source
    assert not set(small["train"].source) & set(small["test"].source + small["valid"].source)


def test_cli_output_is_loadable_by_fairseq(synthetic_dest: Path) -> None:
    from fairseq.data import Dictionary, data_utils

    bin_dir = synthetic_dest / "bin"
    for lang in ("src", "tgt"):
        dictionary = Dictionary.load(str(bin_dir / f"dict.{lang}.txt"))
        for split, count in SIZES.items():
            dataset = data_utils.load_indexed_dataset(
                str(bin_dir / f"{split}.src-tgt.{lang}"), dictionary
            )
            assert dataset is not None and len(dataset) == count
            first_line = (synthetic_dest / "text" / f"{split}.{lang}").read_text().split("\n")[0]
            assert dictionary.string(dataset[0]) == first_line


def test_same_seed_gives_byte_identical_files(synthetic_dest: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert run_synthetic(again) == 0
    assert file_bytes(again) == file_bytes(synthetic_dest)


def test_second_run_reuses_finished_steps(
    synthetic_dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = file_bytes(synthetic_dest)
    with caplog.at_level(logging.INFO, logger="data_prep"):
        assert run_synthetic(synthetic_dest) == 0
    assert "step text: reusing" in caplog.text
    assert "step bin: reusing" in caplog.text
    assert file_bytes(synthetic_dest) == before
