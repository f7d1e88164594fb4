"""Prepare IWSLT'14 German-English (TED talks) for fairseq, by one of two recipes.

``--recipe release`` follows the MIXER release (spec section 8): Moses tokenisation,
lowercase, training pairs of 1..50 tokens a side with length ratio <= 1.5, valid = every
23rd training pair (taken out of train), test = dev2010 + tst2010 + tst2011 + tst2012 +
TEDX dev2012, word-level vocabulary with words seen fewer than 3 times mapped to <unk>.

``--recipe fairseq`` follows fairseq's examples/translation/prepare-iwslt14.sh with
sentencepiece in place of subword-nmt: the same steps with a 1..175 filter, test =
dev2010 + TEDX dev2012 + tst2010 + tst2011 + tst2012 (that script's order), and a joint
10k-piece vocabulary.

Both historic scripts keep the text of the training files' <title> and <description>
lines (only the tags are removed) and drop the other metadata lines; ``--titles drop``
drops those two as well. The Moses perl tokenizer escaped "&", "<", quotes, ... into
entities by default; sacremoses does that only with ``--escape``.
"""

from __future__ import annotations

import argparse
import logging
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from data_prep.common import (
    DataPrepError,
    ParallelSplit,
    add_output_arguments,
    add_sentencepiece_type_argument,
    build_subwords_and_bin,
    describe_inputs,
    download,
    drop_empty_pairs,
    make_split,
    moses_tokenize,
    require_file,
    run_main,
    run_step,
    vocabulary_options,
    write_split,
)

LOG = logging.getLogger("data_prep.iwslt14")

URL = "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz"
ARCHIVE_NAME = "de-en.tgz"
PAIR = "de-en"
LANGUAGES = ("de", "en")
SPLITS = ("train", "valid", "test")
VALID_EVERY = 23
MAX_LENGTH_RATIO = 1.5

TITLE_TAGS = re.compile(r"</?(?:title|description)>")
SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
SEG_CLOSE = re.compile(r"\s*</seg>\s*")


@dataclass(frozen=True)
class Recipe:
    max_tokens: int
    test_sets: tuple[str, ...]
    threshold: int
    sentencepiece: int


RECIPES = {
    "release": Recipe(
        max_tokens=50,
        test_sets=(
            "IWSLT14.TED.dev2010", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
            "IWSLT14.TED.tst2012", "IWSLT14.TEDX.dev2012",
        ),
        threshold=3,
        sentencepiece=0,
    ),
    "fairseq": Recipe(
        max_tokens=175,
        test_sets=(
            "IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
            "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012",
        ),
        threshold=0,
        sentencepiece=10000,
    ),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.prepare_iwslt14",
        description="Tokenise, clean, split and binarise IWSLT'14 De-En (TED).",
    )
    add_output_arguments(parser, threshold_help="default 3 for release, 0 for fairseq")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="release",
        help="release: the MIXER release's data (default); fairseq: prepare-iwslt14.sh",
    )
    parser.add_argument("--source-lang", choices=LANGUAGES, default="de")
    parser.add_argument("--target-lang", choices=LANGUAGES, default="en")
    parser.add_argument(
        "--archive", type=Path, help=f"local {ARCHIVE_NAME} (offline); without it, download"
    )
    parser.add_argument(
        "--url",
        default=URL,
        help="where to download de-en.tgz (default: the WIT3 archive; fairseq mirrors it at "
        "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz)",
    )
    parser.add_argument(
        "--sentencepiece",
        type=int,
        default=None,
        metavar="N",
        help="joint sentencepiece pieces (default: 10000 for fairseq, 0 = word-level for release)",
    )
    add_sentencepiece_type_argument(parser)
    parser.add_argument(
        "--titles",
        choices=("keep", "drop"),
        default="keep",
        help="keep the text of <title>/<description> lines as training pairs, as the "
        "historic scripts did (default), or drop them with the other metadata",
    )
    parser.add_argument(
        "--escape", action="store_true", help="escape special characters as the Moses perl script"
    )
    return parser


# ---------------------------------------------------------------------------- archive


def read_archive(path: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """The lines of the named files of de-en.tgz (matched by file name, in any folder)."""
    require_file(path)
    wanted = set(names)
    found: dict[str, list[str]] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    found[name] = decode_lines(archive.extractfile(member))
    except (tarfile.TarError, EOFError, OSError, zlib.error, UnicodeDecodeError) as error:
        raise DataPrepError(
            f"cannot read archive {path} (truncated or corrupt?): {error}"
        ) from error
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataPrepError(f"archive {path} lacks {', '.join(missing)}")
    return found


def decode_lines(handle: IO[bytes] | None) -> list[str]:
    text = handle.read().decode("utf-8") if handle is not None else ""
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def training_text(lines: list[str], keep_titles: bool) -> list[str]:
    """The sentences of a train.tags file: metadata lines (starting with "<") removed."""
    sentences = []
    for line in lines:
        stripped = line.strip()
        if keep_titles and stripped.startswith(("<title>", "<description>")):
            sentences.append(TITLE_TAGS.sub("", stripped))
        elif not stripped.startswith("<"):
            sentences.append(line)
    return sentences


def segment_text(lines: list[str]) -> list[str]:
    """The text of the ``<seg id="N">`` lines of an IWSLT .xml file."""
    segments = []
    for line in lines:
        if "<seg id" in line:
            text = SEG_CLOSE.sub("", SEG_OPEN.sub("", line))
            segments.append(text.replace("\u2019", "'"))
    return segments


def training_files(langs: tuple[str, str]) -> list[str]:
    return [f"train.tags.{PAIR}.{lang}" for lang in langs]


def test_files(test_set: str, langs: tuple[str, str]) -> list[str]:
    return [f"{test_set}.{PAIR}.{lang}.xml" for lang in langs]


def training_pairs(
    files: dict[str, list[str]], langs: tuple[str, str], keep_titles: bool
) -> ParallelSplit:
    names = training_files(langs)
    source, target = (training_text(files[name], keep_titles) for name in names)
    parallel = make_split("train", source, target, *names)
    LOG.info("train: %d pairs after removing metadata lines", len(parallel))
    return parallel


def test_pairs(
    files: dict[str, list[str]], langs: tuple[str, str], test_sets: Sequence[str]
) -> ParallelSplit:
    source: list[str] = []
    target: list[str] = []
    for test_set in test_sets:
        names = test_files(test_set, langs)
        part = make_split("test", *(segment_text(files[name]) for name in names), *names)
        LOG.info("test: %s has %d pairs", test_set, len(part))
        source += part.source
        target += part.target
    return ParallelSplit("test", source, target)


# ---------------------------------------------------------------------------- cleaning


def keep_pair(source: str, target: str, max_tokens: int) -> bool:
    """The rule of Moses' clean-corpus-n.perl: 1..max tokens a side, ratio at most 1.5."""
    source_len, target_len = len(source.split()), len(target.split())
    if not (1 <= source_len <= max_tokens and 1 <= target_len <= max_tokens):
        return False
    return max(source_len / target_len, target_len / source_len) <= MAX_LENGTH_RATIO


def clean_pairs(parallel: ParallelSplit, max_tokens: int) -> ParallelSplit:
    pairs = zip(parallel.source, parallel.target, strict=True)
    kept = [(s, t) for s, t in pairs if keep_pair(s, t, max_tokens)]
    LOG.info(
        "train: cleaning (1..%d tokens, ratio <= %.1f) kept %d of %d pairs",
        max_tokens, MAX_LENGTH_RATIO, len(kept), len(parallel),
    )  # fmt: skip
    return ParallelSplit(parallel.name, [s for s, _ in kept], [t for _, t in kept])


def split_off_valid(parallel: ParallelSplit) -> tuple[ParallelSplit, ParallelSplit]:
    """Every 23rd pair (the 23rd, 46th, ...) becomes validation data; the rest stays train."""
    train, valid = ParallelSplit("train", [], []), ParallelSplit("valid", [], [])
    pairs = zip(parallel.source, parallel.target, strict=True)
    for number, (source, target) in enumerate(pairs, start=1):
        chosen = valid if number % VALID_EVERY == 0 else train
        chosen.source.append(source)
        chosen.target.append(target)
    LOG.info(
        "split: %d train pairs, %d valid pairs (one in %d)", len(train), len(valid), VALID_EVERY
    )
    return train, valid


def tokenise(
    parallel: ParallelSplit, langs: tuple[str, str], args: argparse.Namespace
) -> ParallelSplit:
    source, target = (
        moses_tokenize(lines, lang, lowercase=True, workers=args.workers, escape=args.escape)
        for lines, lang in ((parallel.source, langs[0]), (parallel.target, langs[1]))
    )
    return ParallelSplit(parallel.name, source, target)


# ---------------------------------------------------------------------------- pipeline


def archive_path(args: argparse.Namespace) -> Path:
    if args.archive is not None:
        return require_file(args.archive)
    return download(args.url, args.dest / "downloads" / ARCHIVE_NAME)


def build_text(
    folder: Path, archive: Path, langs: tuple[str, str], recipe: Recipe, args: argparse.Namespace
) -> None:
    names = training_files(langs) + [
        name for test_set in recipe.test_sets for name in test_files(test_set, langs)
    ]
    files = read_archive(archive, names)
    LOG.info("read %d files from %s", len(files), archive)
    training = training_pairs(files, langs, keep_titles=args.titles == "keep")
    test = test_pairs(files, langs, recipe.test_sets)
    training = clean_pairs(tokenise(training, langs, args), recipe.max_tokens)
    train, valid = split_off_valid(training)
    test = drop_empty_pairs(tokenise(test, langs, args))
    for split in (train, valid, test):
        write_split(folder, split, *langs)


def prepare(args: argparse.Namespace) -> None:
    if args.source_lang == args.target_lang:
        raise DataPrepError("--source-lang and --target-lang must differ")
    langs = (args.source_lang, args.target_lang)
    recipe = RECIPES[args.recipe]
    pieces = recipe.sentencepiece if args.sentencepiece is None else args.sentencepiece
    vocabulary = vocabulary_options(args, default_threshold=recipe.threshold)
    archive = archive_path(args)
    text_settings = {
        "dataset": "iwslt14",
        "input": describe_inputs([archive]),
        "recipe": args.recipe,
        "langs": langs,
        "titles": args.titles,
        "escape": args.escape,
    }
    text_dir = run_step(
        args.dest,
        "text",
        text_settings,
        lambda folder: build_text(folder, archive, langs, recipe, args),
    )
    bin_dir = build_subwords_and_bin(
        args.dest, text_dir, text_settings, langs, SPLITS, vocabulary, pieces, args.spm_model_type
    )
    LOG.info("iwslt14 (%s recipe) ready in %s", args.recipe, bin_dir)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), prepare, argv)


if __name__ == "__main__":
    raise SystemExit(main())
