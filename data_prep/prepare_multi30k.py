"""Prepare Multi30k task 1 (German-English image descriptions) for fairseq.

Reads the canonical raw ``.gz`` files of the multi30k/dataset repository, downloaded into
``--dest``/downloads or taken from ``--raw-dir``. Moses tokenisation (sacremoses,
no escaping), optional lowercasing, then either a word-level vocabulary (fairseq-preprocess
thresholds) or a joint sentencepiece model (``--sentencepiece N``).

Splits: train, valid (val), test (test_2016_flickr), test1 (test_2017_flickr). ``text/``
keeps the tokenised, non-subword text of every split as the evaluation reference.

With ``--tokenizer none`` the text is left as it is (spaces normalised): with
``--sentencepiece N`` the model is trained on the raw sentences, ``text/`` holds the raw
references, and detokenised sacreBLEU scores the sentencepiece-decoded output directly.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

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
    normalise_spaces,
    read_lines,
    require_file,
    run_main,
    run_step,
    vocabulary_options,
    write_split,
)

LOG = logging.getLogger("data_prep.multi30k")

URL_BASE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
SPLIT_FILES = {
    "train": "train",
    "valid": "val",
    "test": "test_2016_flickr",
    "test1": "test_2017_flickr",
}
LANGUAGES = ("de", "en")
WORD_LEVEL_THRESHOLD = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.prepare_multi30k",
        description="Tokenise and binarise Multi30k task 1 (splits train, valid, test, test1).",
    )
    add_output_arguments(
        parser, threshold_help=f"default {WORD_LEVEL_THRESHOLD}, or 0 with --sentencepiece"
    )
    parser.add_argument("--source-lang", choices=LANGUAGES, default="de")
    parser.add_argument("--target-lang", choices=LANGUAGES, default="en")
    parser.add_argument(
        "--raw-dir",
        type=Path,
        help="folder holding the raw {train,val,test_2016_flickr,test_2017_flickr}.{de,en}.gz "
        "(offline); without it the files are downloaded",
    )
    parser.add_argument("--url-base", default=URL_BASE, help="where to download the .gz files")
    parser.add_argument("--lowercase", action="store_true", help="lowercase after tokenising")
    parser.add_argument(
        "--tokenizer",
        choices=("moses", "none"),
        default="moses",
        help="moses (sacremoses, no escaping) or none: the raw text, for a sentencepiece model "
        "of untokenised sentences and detokenised sacreBLEU",
    )
    parser.add_argument(
        "--sentencepiece",
        type=int,
        default=0,
        metavar="N",
        help="train a joint sentencepiece model of N pieces (default 0: word-level)",
    )
    add_sentencepiece_type_argument(parser)
    parser.add_argument(
        "--limit-train", type=int, default=0, metavar="N", help="keep the first N training pairs"
    )
    return parser


def raw_files(args: argparse.Namespace) -> dict[tuple[str, str], Path]:
    """The raw .gz file of each (split, language), downloading what is missing."""
    langs = (args.source_lang, args.target_lang)
    if args.raw_dir is not None:
        return {
            (split, lang): require_file(args.raw_dir / f"{stem}.{lang}.gz")
            for split, stem in SPLIT_FILES.items()
            for lang in langs
        }
    downloads = args.dest / "downloads"
    return {
        (split, lang): download(
            args.url_base + f"{stem}.{lang}.gz", downloads / f"{stem}.{lang}.gz"
        )
        for split, stem in SPLIT_FILES.items()
        for lang in langs
    }


def read_raw_split(
    split: str, files: dict[tuple[str, str], Path], langs: tuple[str, str], limit: int
) -> ParallelSplit:
    source_path, target_path = files[split, langs[0]], files[split, langs[1]]
    parallel = make_split(
        split, read_lines(source_path), read_lines(target_path), str(source_path), str(target_path)
    )
    LOG.info("%s: read %d pairs from %s and %s", split, len(parallel), source_path, target_path)
    if limit and split == "train" and len(parallel) > limit:
        parallel = ParallelSplit(split, parallel.source[:limit], parallel.target[:limit])
        LOG.info("train: kept the first %d pairs (--limit-train)", limit)
    return parallel


def tokenise_split(
    parallel: ParallelSplit,
    langs: tuple[str, str],
    lowercase: bool,
    workers: int,
    tokenizer: str = "moses",
) -> ParallelSplit:
    if tokenizer == "none":
        source, target = (
            [normalise_spaces(line.lower() if lowercase else line) for line in lines]
            for lines in (parallel.source, parallel.target)
        )
    else:
        source = moses_tokenize(parallel.source, langs[0], lowercase, workers)
        target = moses_tokenize(parallel.target, langs[1], lowercase, workers)
    return drop_empty_pairs(ParallelSplit(parallel.name, source, target))


def prepare(args: argparse.Namespace) -> None:
    langs = (args.source_lang, args.target_lang)
    check_arguments(args)
    vocabulary = vocabulary_options(
        args, default_threshold=0 if args.sentencepiece else WORD_LEVEL_THRESHOLD
    )
    files = raw_files(args)
    text_settings = {
        "dataset": "multi30k",
        "inputs": describe_inputs(files.values()),
        "langs": langs,
        "lowercase": args.lowercase,
        "limit_train": args.limit_train,
    }
    if args.tokenizer != "moses":  # absent by default: earlier runs' folders stay valid
        text_settings["tokenizer"] = args.tokenizer

    def build_text(folder: Path) -> None:
        for split in SPLIT_FILES:
            raw = read_raw_split(split, files, langs, args.limit_train)
            tokenised = tokenise_split(raw, langs, args.lowercase, args.workers, args.tokenizer)
            write_split(folder, tokenised, *langs)

    text_dir = run_step(args.dest, "text", text_settings, build_text)
    bin_dir = build_subwords_and_bin(
        args.dest,
        text_dir,
        text_settings,
        langs,
        list(SPLIT_FILES),
        vocabulary,
        args.sentencepiece,
        args.spm_model_type,
    )
    LOG.info("multi30k ready in %s (references in %s)", bin_dir, text_dir)


def check_arguments(args: argparse.Namespace) -> None:
    if args.source_lang == args.target_lang:
        raise DataPrepError("--source-lang and --target-lang must differ")
    if args.limit_train < 0 or args.sentencepiece < 0:
        raise DataPrepError("--limit-train and --sentencepiece must not be negative")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), prepare, argv)


if __name__ == "__main__":
    raise SystemExit(main())
