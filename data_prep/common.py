"""Helpers shared by the data preparation scripts.

Every script builds the same layout under ``--dest DIR``:

- ``DIR/text/``: the word-level (tokenised, not subword) text of every split,
  ``{split}.{lang}``; the references that evaluation scores against.
- ``DIR/subword/``: only with sentencepiece, ``spm.model`` and the encoded text.
- ``DIR/bin/``: the fairseq-preprocess output, ``dict.{lang}.txt`` and
  ``{split}.{src}-{tgt}.{lang}.{bin,idx}``; the data folder to train on.
- ``DIR/downloads/``: files fetched from the network (kept, so a rerun does not fetch again).

Each folder is built as a hidden sibling and renamed into place when complete, with a
``.prepared`` file recording the settings that produced it; a rerun with the same
settings reuses it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sacremoses import MosesTokenizer

LOG = logging.getLogger("data_prep")

STEP_MARKER = ".prepared"
DOWNLOAD_TIMEOUT_S = 60.0


class DataPrepError(Exception):
    """A problem with the inputs or a step; reported as one message, without a traceback."""


@dataclass
class ParallelSplit:
    """One split of a parallel corpus: line i of ``source`` translates line i of ``target``."""

    name: str
    source: list[str]
    target: list[str]

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True)
class VocabularyOptions:
    """The fairseq-preprocess options that shape the dictionaries."""

    threshold_source: int
    threshold_target: int
    joined_dictionary: bool
    workers: int

    def as_settings(self) -> dict[str, object]:
        return {
            "thresholdsrc": self.threshold_source,
            "thresholdtgt": self.threshold_target,
            "joined_dictionary": self.joined_dictionary,
        }


# ---------------------------------------------------------------------------- command line


def add_output_arguments(parser: argparse.ArgumentParser, threshold_help: str) -> None:
    """Add --dest, --workers and the vocabulary options every script shares."""
    parser.add_argument("--dest", type=Path, required=True, help="output folder (see layout)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes for tokenisation and fairseq-preprocess"
    )
    parser.add_argument(
        "--thresholdsrc",
        type=int,
        default=None,
        help=f"map source words seen fewer than this many times to <unk> ({threshold_help})",
    )
    parser.add_argument(
        "--thresholdtgt",
        type=int,
        default=None,
        help=f"same for the target side ({threshold_help}); ignored with --joined-dictionary",
    )
    parser.add_argument(
        "--joined-dictionary",
        action="store_true",
        help="one dictionary shared by source and target",
    )


def vocabulary_options(args: argparse.Namespace, default_threshold: int) -> VocabularyOptions:
    """Resolve the vocabulary options, filling unset thresholds with the script's default."""
    if args.workers < 1:
        raise DataPrepError(f"--workers must be at least 1, got {args.workers}")
    return VocabularyOptions(
        threshold_source=_or_default(args.thresholdsrc, default_threshold),
        threshold_target=_or_default(args.thresholdtgt, default_threshold),
        joined_dictionary=args.joined_dictionary,
        workers=args.workers,
    )


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value


def run_main(
    parser: argparse.ArgumentParser,
    prepare: Callable[[argparse.Namespace], None],
    argv: Sequence[str] | None,
) -> int:
    """Parse arguments and run ``prepare``; a DataPrepError becomes a message and exit code 1."""
    args = parser.parse_args(argv)
    configure_logging()
    dest: Path = args.dest
    dest_existed = dest.exists()
    try:
        prepare(args)
    except DataPrepError as error:
        _remove_if_empty(dest, dest_existed)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%H:%M:%S",
    )


def _remove_if_empty(folder: Path, existed_before: bool) -> None:
    if not existed_before and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# ---------------------------------------------------------------------------- steps


def run_step(
    dest: Path, name: str, settings: dict[str, object], build: Callable[[Path], None]
) -> Path:
    """Build ``dest/name`` with ``build(folder)`` unless an earlier run already did so.

    ``build`` writes into a hidden sibling folder that is renamed to ``dest/name`` only when
    it returns, so a failed or interrupted step leaves nothing half-written. ``settings``
    must describe everything the result depends on (including earlier steps' settings).
    """
    final = dest / name
    fingerprint = json.dumps(settings, sort_keys=True, indent=1)
    if _step_fingerprint(final) == fingerprint:
        LOG.info("step %s: reusing %s (done by an earlier run with the same settings)", name, final)
        return final
    LOG.info("step %s: building %s", name, final)
    partial = dest / f".{name}.partial"
    _remove_tree(partial)
    partial.mkdir(parents=True)
    try:
        build(partial)
        (partial / STEP_MARKER).write_text(fingerprint + "\n", encoding="utf-8")
        _replace_folder(partial, final)
    except BaseException:
        _remove_tree(partial)
        raise
    LOG.info("step %s: done", name)
    return final


def _step_fingerprint(folder: Path) -> str | None:
    marker = folder / STEP_MARKER
    if not marker.is_file():
        return None
    return marker.read_text(encoding="utf-8").rstrip("\n")


def _replace_folder(new: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        _remove_tree(old)
        final.rename(old)
        new.rename(final)
        _remove_tree(old)
    else:
        new.rename(final)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def describe_inputs(paths: Iterable[Path]) -> list[list[object]]:
    """Names and sizes of input files, so that a changed input invalidates a finished step."""
    return [[str(path.resolve()), path.stat().st_size] for path in paths]


# ---------------------------------------------------------------------------- files


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataPrepError(f"missing input file: {path}")
    return path


def read_lines(path: Path) -> list[str]:
    """Read a UTF-8 text file, gzip-compressed when its name ends in .gz.

    Only "\\n" ends a line, so stray carriage returns or Unicode line separators inside a
    sentence cannot shift one side of a parallel corpus against the other.
    """
    require_file(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
                return [line.rstrip("\r\n") for line in handle]
        with path.open(encoding="utf-8", newline="\n") as handle:
            return [line.rstrip("\r\n") for line in handle]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise DataPrepError(f"cannot read {path} (truncated or corrupt file?): {error}") from error


def write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write one line per item and return how many were written."""
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count


def normalise_spaces(line: str) -> str:
    """Collapse every run of whitespace (any Unicode kind) to one space and trim the ends."""
    return " ".join(line.split())


def download(url: str, target: Path, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch ``url`` to ``target`` unless it is already there; a failure raises DataPrepError."""
    if target.is_file():
        LOG.info("reusing %s (downloaded by an earlier run)", target)
        return target
    created_folder = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    LOG.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        _remove_if_empty(target.parent, not created_folder)
        raise DataPrepError(f"download failed: {url}: {error}") from error
    partial.rename(target)
    LOG.info("downloaded %s (%d bytes)", target, target.stat().st_size)
    return target


# ---------------------------------------------------------------------------- parallel text


def make_split(
    name: str, source: list[str], target: list[str], source_file: str, target_file: str
) -> ParallelSplit:
    """Pair two sides, refusing sides whose line counts differ."""
    if len(source) != len(target):
        raise DataPrepError(
            f"mismatched line counts in split '{name}': {source_file} has {len(source)} lines, "
            f"{target_file} has {len(target)}"
        )
    return ParallelSplit(name, source, target)


def drop_empty_pairs(split: ParallelSplit) -> ParallelSplit:
    """Drop pairs where either side is empty, reporting how many went."""
    kept = [(s, t) for s, t in zip(split.source, split.target, strict=True) if s and t]
    dropped = len(split) - len(kept)
    if dropped:
        LOG.info("%s: dropped %d pairs with an empty side", split.name, dropped)
    return ParallelSplit(split.name, [s for s, _ in kept], [t for _, t in kept])


def write_split(folder: Path, split: ParallelSplit, source_lang: str, target_lang: str) -> None:
    """Write ``{name}.{source_lang}`` and ``{name}.{target_lang}``; an empty split is an error."""
    langs = (source_lang, target_lang)
    if not split.source:
        raise DataPrepError(f"split '{split.name}' is empty after cleaning")
    for lang, lines in zip(langs, (split.source, split.target), strict=True):
        write_lines(folder / f"{split.name}.{lang}", lines)
    LOG.info("%s: wrote %d pairs (%s.{%s,%s})", split.name, len(split), split.name, *langs)


# ---------------------------------------------------------------------------- tokenisation

# sacremoses and sentencepiece are imported where used: they take about a second to load,
# which --help and the early error checks need not wait for.
_TOKENIZERS: dict[str, MosesTokenizer] = {}
LINES_PER_CHUNK = 2000


def _moses_tokenize_chunk(job: tuple[str, bool, bool, list[str]]) -> list[str]:
    from sacremoses import MosesTokenizer

    lang, lowercase, escape, lines = job
    tokenizer = _TOKENIZERS.setdefault(lang, MosesTokenizer(lang=lang))
    tokenised = (tokenizer.tokenize(line, escape=escape, return_str=True) for line in lines)
    return [normalise_spaces(line.lower() if lowercase else line) for line in tokenised]


def moses_tokenize(
    lines: list[str], lang: str, lowercase: bool, workers: int, escape: bool = False
) -> list[str]:
    """Tokenise with sacremoses' MosesTokenizer for ``lang``.

    With several workers the lines go out in chunks of at least LINES_PER_CHUNK lines, up to
    four chunks a worker, so that short inputs skip the process pool.
    """
    LOG.info("tokenising %d %s lines%s", len(lines), lang, " (lowercased)" if lowercase else "")
    chunk_count = max(1, min(workers * 4, len(lines) // LINES_PER_CHUNK))
    size = -(-len(lines) // chunk_count) if lines else 1
    jobs = [(lang, lowercase, escape, lines[i : i + size]) for i in range(0, len(lines), size)]
    if workers == 1 or len(jobs) == 1:
        chunks = [_moses_tokenize_chunk(job) for job in jobs]
    else:
        with Pool(workers) as pool:
            chunks = pool.map(_moses_tokenize_chunk, jobs)
    return [line for chunk in chunks for line in chunk]


# ---------------------------------------------------------------------------- sentencepiece


def add_sentencepiece_type_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spm-model-type",
        choices=("bpe", "unigram"),
        default="bpe",
        help="sentencepiece algorithm (default bpe, the closest to subword-nmt)",
    )


def train_sentencepiece(
    lines: list[str], model_prefix: Path, vocab_size: int, model_type: str, workers: int
) -> Path:
    """Train a sentencepiece model on ``lines``; returns the .model path."""
    import sentencepiece

    LOG.info(
        "training a %s sentencepiece model of %d pieces on %d lines",
        model_type,
        vocab_size,
        len(lines),
    )
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            num_threads=workers,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise DataPrepError(
            f"sentencepiece training failed ({vocab_size} pieces): {error}"
        ) from error
    return model_prefix.with_suffix(".model")


def encode_sentencepiece(model_path: Path, lines: list[str]) -> list[str]:
    """Encode lines as space-separated sentencepiece pieces."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    return [" ".join(pieces) for pieces in processor.encode(lines, out_type=str)]


def pieces_per_word(words: Sequence[str], pieces: Sequence[str]) -> float:
    """Subword pieces per whitespace-separated word over the same lines: how finely a
    subword model cuts the text (1.0: every word is one piece)."""
    n_words = sum(len(line.split()) for line in words)
    return sum(len(line.split()) for line in pieces) / n_words if n_words else 0.0


def build_subword_folder(
    text_dir: Path,
    out_dir: Path,
    splits: Sequence[str],
    langs: tuple[str, str],
    vocab_size: int,
    model_type: str,
    workers: int,
) -> None:
    """Train one sentencepiece model on both sides of train and encode every split with it."""
    train_lines = [line for lang in langs for line in read_lines(text_dir / f"train.{lang}")]
    model_path = train_sentencepiece(train_lines, out_dir / "spm", vocab_size, model_type, workers)
    for split in splits:
        for lang in langs:
            words = read_lines(text_dir / f"{split}.{lang}")
            encoded = encode_sentencepiece(model_path, words)
            write_lines(out_dir / f"{split}.{lang}", encoded)
            ratio = pieces_per_word(words, encoded)
            LOG.info("%s.%s: encoded with sentencepiece, %.2f pieces a word", split, lang, ratio)


# ---------------------------------------------------------------------------- binarising


def binarise(
    text_dir: Path,
    bin_dir: Path,
    langs: tuple[str, str],
    splits: Sequence[str],
    options: VocabularyOptions,
) -> None:
    """Run fairseq-preprocess on ``text_dir/{split}.{lang}`` into ``bin_dir``.

    ``splits`` must hold "train" and "valid"; the others (test, test1, ...) go to --testpref
    in order, so fairseq names them test, test1, ...
    """
    source_lang, target_lang = langs
    text_dir, bin_dir = text_dir.resolve(), bin_dir.resolve()
    test_prefixes = [str(text_dir / split) for split in splits if split.startswith("test")]
    command = [
        sys.executable, "-m", "fairseq_cli.preprocess",
        "--source-lang", source_lang,
        "--target-lang", target_lang,
        "--trainpref", str(text_dir / "train"),
        "--validpref", str(text_dir / "valid"),
        "--destdir", str(bin_dir),
        "--workers", str(options.workers),
        "--thresholdsrc", str(options.threshold_source),
        "--thresholdtgt", str(options.threshold_target),
    ]  # fmt: skip
    if test_prefixes:
        command += ["--testpref", ",".join(test_prefixes)]
    if options.joined_dictionary:
        command.append("--joined-dictionary")
    LOG.info("running fairseq-preprocess (%s)", ", ".join(splits))
    # Run from the (empty) output folder: "-m" puts the working folder first on sys.path,
    # where a local file named fairseq_cli.py would otherwise shadow fairseq's package.
    result = subprocess.run(command, cwd=bin_dir, capture_output=True, text=True, check=False)
    _relay_preprocess_summary(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DataPrepError(f"fairseq-preprocess failed (exit {result.returncode}):\n{tail}")


def _relay_preprocess_summary(output: str) -> None:
    for line in output.splitlines():
        if "sents," in line or "Dictionary:" in line:
            LOG.info("fairseq-preprocess: %s", line[line.find("[") :])


def build_subwords_and_bin(
    dest: Path,
    text_dir: Path,
    text_settings: dict[str, object],
    langs: tuple[str, str],
    splits: Sequence[str],
    vocabulary: VocabularyOptions,
    pieces: int = 0,
    spm_model_type: str = "bpe",
) -> Path:
    """The last steps of every script: the optional ``subword`` step, then ``bin``."""
    binarised_from, upstream = text_dir, text_settings
    if pieces:
        upstream = {"text": text_settings, "pieces": pieces, "type": spm_model_type}
        binarised_from = run_step(
            dest,
            "subword",
            upstream,
            lambda folder: build_subword_folder(
                text_dir, folder, splits, langs, pieces, spm_model_type, vocabulary.workers
            ),
        )
    return run_step(
        dest,
        "bin",
        {"upstream": upstream, "vocabulary": vocabulary.as_settings()},
        lambda folder: binarise(binarised_from, folder, langs, splits, vocabulary),
    )
