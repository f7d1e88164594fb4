"""Score checkpoints with fairseq-generate: sacreBLEU or ROUGE for every (checkpoint, beam size).

For each checkpoint and beam, runs the real ``fairseq-generate`` on one subset, reads its
hypotheses (``H-`` lines, put back in sentence-id order) and its decoding speed, decodes
sentencepiece when a model is given, and scores against ``--reference-text`` (one line per
sentence, the tokenised text of ``data_prep``'s ``text/`` folder) or, without it, against the
``T-`` lines (the binarised references, rare words shown as ``<<unk>>``).

- BLEU: sacreBLEU's corpus score with its default ``13a`` tokenisation (``--tokenize``) applied
  to the tokenised text; the signature is printed and stored; with it chrF (chrF++ with
  ``--chrf-word-order 2``) and its signature.
- ``--post-process`` (fairseq's: sentencepiece, subword_nmt, ...) and ``--detok`` (moses)
  turn the H- and T- lines into text exactly as the text rewards (``--reward-post-process``,
  ``--reward-detok``) and the validation BLEU of a run with them do, so that the reported score
  is the measure the run optimised: detokenised sacreBLEU for a subword model.
- ROUGE: ROUGE-1/2/L F-measure x 100, the mean over sentences, from rouge-score on whitespace
  tokens (the text is already tokenised; rouge-score's own tokeniser would drop punctuation).

Rows go to ``--out-json`` (JSON Lines, one row per checkpoint, subset and beam; a rerun
replaces the row with the same name, checkpoint, subset, beam and metric) and the table of
every row of that file to ``--out-md``. With ``--save-hypotheses DIR`` the scored hypotheses
(one a line, in sentence-id order) go to ``DIR/SUBSET.beamN.NAME.txt``, named in the row's
``hypotheses``: what a paired significance test resamples.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "fairseq_mixer"
FAIRSEQ_GENERATE = Path(sys.executable).parent / "fairseq-generate"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
METRIC_COLUMNS = {
    "bleu": "BLEU",
    "chrf": "chrF",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
}
ROW_KEY = ("name", "checkpoint", "gen_subset", "beam", "metric")
TAIL_LINES = 30
SPEED_LINE = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s \(([\d.]+) sentences/s"
)


class EvaluationError(Exception):
    """A problem with the inputs or with fairseq-generate; reported as one message."""


@dataclass
class Generation:
    """What one fairseq-generate run produced, in sentence-id order."""

    hypotheses: list[str]
    references: list[str]
    sentences: int
    tokens: int
    seconds: float
    sentences_per_s: float


# ---------------------------------------------------------------------- fairseq-generate


def generate_command(
    data: Path, checkpoint: Path, beam: int, subset: str, batch_size: int, cpu: bool
) -> list[str]:
    """The fairseq-generate command line; batch multiples of 1, since fairseq drops a last batch
    that is not a multiple of --required-batch-size-multiple (8 by default; fairseq #5036)."""
    command = [
        str(FAIRSEQ_GENERATE), str(data), "--user-dir", str(PLUGIN), "--task", "mixer",
        "--path", str(checkpoint), "--beam", str(beam), "--gen-subset", subset,
        "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
    ]  # fmt: skip
    return [*command, "--cpu"] if cpu else command


def run_generate(command: list[str]) -> str:
    """fairseq-generate's stdout and stderr together (the speed line is logged on stderr)."""
    env = {
        **os.environ,
        "PATH": f"{FAIRSEQ_GENERATE.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
        raise EvaluationError(
            f"fairseq-generate failed (exit {proc.returncode}): {' '.join(command)}\n"
            f"its last lines:\n{tail}"
        )
    return output


def lines_by_id(output: str, prefix: str) -> dict[int, str]:
    """The text of fairseq-generate's ``{prefix}-{id}`` lines, by id (the text is the last field:
    H lines hold 'H-id, score, text', T lines 'T-id, text')."""
    texts = {}
    marker = f"{prefix}-"
    for line in output.splitlines():
        if not line.startswith(marker):
            continue
        fields = line.split("\t")
        head = fields[0][len(marker) :]
        if not head.isdigit():
            continue
        texts[int(head)] = fields[-1] if len(fields) > 1 else ""
    return texts


def in_id_order(texts: dict[int, str], what: str) -> list[str]:
    missing = sorted(set(range(len(texts))) - set(texts))
    if missing:
        raise EvaluationError(f"fairseq-generate's {what} lines miss sentence ids {missing[:10]}")
    return [texts[i] for i in range(len(texts))]


def parse_generate_output(output: str) -> Generation:
    """Hypotheses and references in sentence-id order, and the decoding speed."""
    speed = SPEED_LINE.search(output)
    if speed is None:
        tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
        raise EvaluationError(
            f"no 'Translated N sentences' line in fairseq-generate's output:\n{tail}"
        )
    hypotheses = in_id_order(lines_by_id(output, "H"), "H-")
    references = in_id_order(lines_by_id(output, "T"), "T-")
    sentences = int(speed.group(1).replace(",", ""))
    if len(hypotheses) != sentences:
        raise EvaluationError(
            f"fairseq-generate translated {sentences} sentences "
            f"but printed {len(hypotheses)} H- lines"
        )
    return Generation(
        hypotheses=hypotheses,
        references=references,
        sentences=sentences,
        tokens=int(speed.group(2).replace(",", "")),
        seconds=float(speed.group(3)),
        sentences_per_s=float(speed.group(4)),
    )


# ---------------------------------------------------------------------- text and scores


def read_reference_text(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def sentencepiece_decoder(model: Path | None):
    """A function from a line of sentencepiece pieces to text (the identity without a model)."""
    if model is None:
        return lambda line: line
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    return lambda line: processor.decode_pieces(line.split())


def text_form(post_process: str | None, detok: str, detok_lang: str):
    """The rewards' :class:`TextForm` (this checkout's), or None: the lines stay as they are."""
    if post_process is None and detok in ("none", "space"):
        return None
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from fairseq_mixer.rewards.text import TextForm

    try:
        return TextForm(post_process or "none", detok=detok, detok_lang=detok_lang)
    except ValueError as error:
        raise EvaluationError(f"--post-process {post_process!r}: {error}") from None


def unknowns_as(lines: list[str], unk: str, placeholder: str) -> list[str]:
    """fairseq-generate's unknown symbol (``<unk>`` in H- lines, ``<<unk>>`` in T- lines) as
    the placeholder the validation BLEU and the text rewards put there: it never matches, and
    sacreBLEU's tokeniser does not split it."""
    return [" ".join(placeholder if s == unk else s for s in line.split(" ")) for line in lines]


def bleu_scores(
    hypotheses: list[str], references: list[str], tokenize: str, chrf_word_order: int = 0
) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU(tokenize=tokenize)
    score = metric.corpus_score(hypotheses, [references])
    chrf = CHRF(word_order=chrf_word_order)
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": score.score,
        "bleu_details": str(score),
        "signature": str(metric.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
    }


class WhitespaceTokenizer:
    """Keeps already-tokenised text as it is (rouge-score's default drops non-alphanumerics)."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


def rouge_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure x 100, averaged over sentences."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=WhitespaceTokenizer())
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(target=reference, prediction=hypothesis)
        for rouge_type in ROUGE_TYPES:
            sums[rouge_type] += scores[rouge_type].fmeasure
    count = max(len(hypotheses), 1)
    return {rouge_type: 100.0 * total / count for rouge_type, total in sums.items()}


def score(
    metric: str,
    hypotheses: list[str],
    references: list[str],
    tokenize: str,
    chrf_word_order: int = 0,
) -> dict:
    if len(hypotheses) != len(references):
        raise EvaluationError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: "
            "is the reference text the one of this --gen-subset?"
        )
    if metric == "bleu":
        return bleu_scores(hypotheses, references, tokenize, chrf_word_order)
    return rouge_scores(hypotheses, references)


# ---------------------------------------------------------------------- rows and tables


def load_rows(path: Path) -> list[dict]:
    """The rows of an evaluate.py JSON Lines file (a JSON list is read as well)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Old rows followed by the new ones; a new row replaces an old one with the same key."""
    new_keys = {tuple(row.get(k) for k in ROW_KEY) for row in new}
    kept = [row for row in old if tuple(row.get(k) for k in ROW_KEY) not in new_keys]
    return kept + new


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)


def short_path(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:])


def markdown_table(rows: Sequence[dict]) -> str:
    metrics = [m for m in METRIC_COLUMNS if any(m in row for row in rows)]
    subsets = list(dict.fromkeys(row["gen_subset"] for row in rows))
    names = list(dict.fromkeys(row["name"] for row in rows))
    order = sorted(
        rows,
        key=lambda r: (subsets.index(r["gen_subset"]), names.index(r["name"]), r["beam"]),
    )
    header = ["method", "subset", "beam", *(METRIC_COLUMNS[m] for m in metrics), "sentences/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in order:
        values = [f"{row[m]:.2f}" if m in row else "-" for m in metrics]
        cells = [row["name"], row["gen_subset"], str(row["beam"]), *values]
        lines.append("| " + " | ".join([*cells, f"{row['sentences_per_s']:.1f}"]) + " |")
    return "\n".join(lines) + "\n\n" + table_notes(rows)


def table_notes(rows: Sequence[dict]) -> str:
    notes = []
    signatures = sorted({row["signature"] for row in rows if "signature" in row})
    for signature in signatures:
        notes.append(f"BLEU: sacreBLEU corpus score, signature `{signature}`.")
    for signature in sorted({row["chrf_signature"] for row in rows if "chrf_signature" in row}):
        notes.append(f"chrF: sacreBLEU's corpus chrF, signature `{signature}`.")
    for text in sorted({row["text"] for row in rows if row.get("text")}):
        notes.append(f"Scored text: {text}.")
    if any("rouge2" in row for row in rows):
        notes.append(
            "ROUGE: rouge-score F-measure x 100, mean over sentences, whitespace tokens, "
            "no stemming."
        )
    checkpoints = dict.fromkeys((row["name"], short_path(row["checkpoint"])) for row in rows)
    notes.append("Checkpoints: " + ", ".join(f"{n} `{c}`" for n, c in checkpoints) + ".")
    references = sorted({f"{row['gen_subset']}: `{row['references']}`" for row in rows})
    notes.append("References: " + ", ".join(references) + ".")
    notes.append("sentences/s: fairseq-generate's decoding speed (model loading excluded).")
    return "\n".join(notes) + "\n"


# ---------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="binarised data folder")
    parser.add_argument(
        "--checkpoint", type=Path, nargs="+", action="extend", required=True, help="checkpoint(s)"
    )
    parser.add_argument(
        "--name", nargs="+", action="extend", help="one per checkpoint (default: its folder)"
    )
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--gen-subset", default="test")
    parser.add_argument("--metric", choices=["bleu", "rouge"], default="bleu")
    parser.add_argument(
        "--reference-text", type=Path, help="one reference a line (default: the T- lines)"
    )
    parser.add_argument(
        "--sentencepiece-model", type=Path, help="decode hypotheses (and T- lines) with it"
    )
    parser.add_argument(
        "--tokenize", default="13a", help="sacreBLEU tokenisation of the scored text (13a)"
    )
    parser.add_argument(
        "--post-process",
        help="fairseq's post-processing of the H-/T- symbols (sentencepiece, subword_nmt, ...), "
        "as --reward-post-process",
    )
    parser.add_argument(
        "--detok",
        choices=["none", "space", "moses"],
        default="none",
        help="detokeniser after it, as --reward-detok",
    )
    parser.add_argument("--detok-lang", default="en", help="language of --detok moses")
    parser.add_argument(
        "--chrf-word-order", type=int, default=0, help="word n-grams of chrF (2: chrF++)"
    )
    parser.add_argument("--out-json", type=Path, help="JSON Lines file the rows are merged into")
    parser.add_argument("--out-md", type=Path, help="markdown table of every row of --out-json")
    parser.add_argument(
        "--save-hypotheses", type=Path, metavar="DIR", help="write the scored hypotheses there"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cpu", action="store_true", help="pass --cpu to fairseq-generate")
    return parser


def check_inputs(args: argparse.Namespace) -> list[str]:
    """The method names, one per checkpoint, after checking that every input exists."""
    if not args.data.is_dir() or not list(args.data.glob("dict.*.txt")):
        raise EvaluationError(f"--data {args.data}: no binarised data folder (no dict.*.txt)")
    for checkpoint in args.checkpoint:
        if not checkpoint.is_file():
            raise EvaluationError(f"--checkpoint {checkpoint}: no such file")
    if args.post_process is not None and args.sentencepiece_model is not None:
        raise EvaluationError(
            "--post-process and --sentencepiece-model both decode the pieces: give one"
        )
    for flag, path in (
        ("--reference-text", args.reference_text),
        ("--sentencepiece-model", args.sentencepiece_model),
    ):
        if path is not None and not path.is_file():
            raise EvaluationError(f"{flag} {path}: no such file")
    names = args.name or [checkpoint.parent.name for checkpoint in args.checkpoint]
    if len(names) != len(args.checkpoint):
        raise EvaluationError(
            f"{len(names)} --name for {len(args.checkpoint)} --checkpoint: give one per checkpoint"
        )
    return names


def evaluate_one(args: argparse.Namespace, name: str, checkpoint: Path, beam: int) -> dict:
    command = generate_command(
        args.data, checkpoint, beam, args.gen_subset, args.batch_size, args.cpu
    )
    generation = parse_generate_output(run_generate(command))
    decode = sentencepiece_decoder(args.sentencepiece_model)
    hypotheses = [decode(line) for line in generation.hypotheses]
    if args.reference_text is None:
        references = [decode(line) for line in generation.references]
    else:
        references = read_reference_text(args.reference_text)
    form = text_form(args.post_process, args.detok, args.detok_lang)
    if form is not None:
        hypotheses = form.finish_all(unknowns_as(hypotheses, "<unk>", "UNKNOWNTOKENINHYP"))
        if args.reference_text is None:
            references = form.finish_all(unknowns_as(references, "<<unk>>", "UNKNOWNTOKENINREF"))
    saved = {}
    if args.save_hypotheses is not None:
        saved["hypotheses"] = str(
            save_hypotheses(args.save_hypotheses, name, args, beam, hypotheses)
        )
    return {
        "name": name,
        "checkpoint": str(checkpoint.resolve()),
        "data": str(args.data.resolve()),
        "gen_subset": args.gen_subset,
        "beam": beam,
        "metric": args.metric,
        "references": str(args.reference_text or "T- lines of fairseq-generate"),
        "text": form.describe() if form is not None else None,
        **score(args.metric, hypotheses, references, args.tokenize, args.chrf_word_order),
        "sentences": generation.sentences,
        "tokens": generation.tokens,
        "decode_seconds": generation.seconds,
        "sentences_per_s": generation.sentences_per_s,
        **saved,
    }


def save_hypotheses(
    folder: Path, name: str, args: argparse.Namespace, beam: int, hypotheses: list[str]
) -> Path:
    """The hypotheses, one a line, in ``folder/SUBSET.beamN.NAME.txt`` (NAME made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = folder.resolve() / f"{args.gen_subset}.beam{beam}.{safe}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in hypotheses), encoding="utf-8")
    return path


def describe(row: dict) -> str:
    if row["metric"] == "bleu":
        scores = f"BLEU {row['bleu']:.2f} ({row['signature']})"
        if "chrf" in row:
            scores += f", chrF {row['chrf']:.2f} ({row['chrf_signature']})"
    else:
        scores = ", ".join(f"{METRIC_COLUMNS[t]} {row[t]:.2f}" for t in ROUGE_TYPES)
    return (
        f"{row['name']} beam {row['beam']} on {row['gen_subset']}: {scores}; "
        f"{row['sentences']} sentences, {row['sentences_per_s']:.1f} sentences/s"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        names = check_inputs(args)
        rows = []
        for name, checkpoint in zip(names, args.checkpoint, strict=True):
            for beam in args.beams:
                rows.append(evaluate_one(args, name, checkpoint, beam))
                print(describe(rows[-1]), flush=True)
    except EvaluationError as error:
        raise SystemExit(f"evaluate.py: {error}") from None
    all_rows = rows
    if args.out_json is not None:
        all_rows = merge_rows(load_rows(args.out_json), rows)
        write_rows(args.out_json, all_rows)
    table = markdown_table(all_rows)
    if args.out_md is not None:
        args.out_md.parent.mkdir(parents=True, exist_ok=True)
        args.out_md.write_text(table, encoding="utf-8")
    print("\n" + table)


if __name__ == "__main__":
    main()
