"""Prepare Gigaword headline generation (Rush et al. 2015 format) for fairseq.

The input folder holds ``{train,valid,test}.{article,title}``: one example a line,
already tokenised and lowercased (the article's first sentence and its headline). The
languages are named ``article`` and ``title``. Length filters and ``--subsample`` apply
to train and valid only, so that the test set stays the published one; pairs with an
empty side are dropped everywhere (and counted).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from data_prep.common import (
    DataPrepError,
    ParallelSplit,
    add_output_arguments,
    build_subwords_and_bin,
    describe_inputs,
    drop_empty_pairs,
    make_split,
    normalise_spaces,
    read_lines,
    require_file,
    run_main,
    run_step,
    vocabulary_options,
    write_split,
)

LOG = logging.getLogger("data_prep.gigaword")

LANGS = ("article", "title")
SPLITS = ("train", "valid", "test")
FILTERED_SPLITS = ("train", "valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.prepare_gigaword",
        description="Filter and binarise Gigaword headline generation (article -> title).",
    )
    add_output_arguments(parser, threshold_help="default 0: keep every word")
    parser.add_argument(
        "--input-dir",
        type=Path,
        required=True,
        help="folder with {train,valid,test}.{article,title}",
    )
    parser.add_argument("--max-article-len", type=int, default=0, help="in tokens; 0: no limit")
    parser.add_argument("--max-title-len", type=int, default=0, help="in tokens; 0: no limit")
    parser.add_argument("--min-len", type=int, default=1, help="minimum tokens on each side")
    parser.add_argument(
        "--subsample", type=int, default=0, metavar="N", help="keep N random training pairs"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of --subsample (1)")
    return parser


def read_input_split(input_dir: Path, split: str) -> ParallelSplit:
    source_path = require_file(input_dir / f"{split}.article")
    target_path = require_file(input_dir / f"{split}.title")
    parallel = make_split(
        split,
        [normalise_spaces(line) for line in read_lines(source_path)],
        [normalise_spaces(line) for line in read_lines(target_path)],
        str(source_path),
        str(target_path),
    )
    LOG.info("%s: read %d pairs from %s", split, len(parallel), input_dir)
    return drop_empty_pairs(parallel)


def filter_lengths(parallel: ParallelSplit, args: argparse.Namespace) -> ParallelSplit:
    """Keep pairs within --min-len and the --max-*-len limits."""

    def fits(article: str, title: str) -> bool:
        article_len, title_len = len(article.split()), len(title.split())
        if min(article_len, title_len) < args.min_len:
            return False
        if args.max_article_len and article_len > args.max_article_len:
            return False
        return not (args.max_title_len and title_len > args.max_title_len)

    kept = [(a, t) for a, t in zip(parallel.source, parallel.target, strict=True) if fits(a, t)]
    LOG.info("%s: length filters kept %d of %d pairs", parallel.name, len(kept), len(parallel))
    return ParallelSplit(parallel.name, [a for a, _ in kept], [t for _, t in kept])


def subsample(parallel: ParallelSplit, size: int, seed: int) -> ParallelSplit:
    """A seeded random subset of ``size`` pairs, kept in their original order."""
    if size >= len(parallel):
        return parallel
    chosen = sorted(random.Random(seed).sample(range(len(parallel)), size))
    LOG.info("%s: subsampled %d of %d pairs (seed %d)", parallel.name, size, len(parallel), seed)
    return ParallelSplit(
        parallel.name, [parallel.source[i] for i in chosen], [parallel.target[i] for i in chosen]
    )


def clean_split(parallel: ParallelSplit, args: argparse.Namespace) -> ParallelSplit:
    if parallel.name in FILTERED_SPLITS:
        parallel = filter_lengths(parallel, args)
    if parallel.name == "train" and args.subsample:
        parallel = subsample(parallel, args.subsample, args.seed)
    return parallel


def prepare(args: argparse.Namespace) -> None:
    check_arguments(args)
    vocabulary = vocabulary_options(args, default_threshold=0)
    inputs = [args.input_dir / f"{split}.{lang}" for split in SPLITS for lang in LANGS]
    text_settings = {
        "dataset": "gigaword",
        "inputs": describe_inputs(require_file(path) for path in inputs),
        "max_article_len": args.max_article_len,
        "max_title_len": args.max_title_len,
        "min_len": args.min_len,
        "subsample": args.subsample,
        "seed": args.seed,
    }

    def build_text(folder: Path) -> None:
        for split in SPLITS:
            write_split(folder, clean_split(read_input_split(args.input_dir, split), args), *LANGS)

    text_dir = run_step(args.dest, "text", text_settings, build_text)
    bin_dir = build_subwords_and_bin(args.dest, text_dir, text_settings, LANGS, SPLITS, vocabulary)
    LOG.info("gigaword ready in %s", bin_dir)


def check_arguments(args: argparse.Namespace) -> None:
    for name in ("max_article_len", "max_title_len", "min_len", "subsample"):
        if getattr(args, name) < 0:
            raise DataPrepError(f"--{name.replace('_', '-')} must not be negative")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), prepare, argv)


if __name__ == "__main__":
    raise SystemExit(main())
