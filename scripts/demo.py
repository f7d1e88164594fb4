"""`make demo`: XENT against MIXER on the embedded synthetic language pair, end to end.

Generates and binarises the data (data_prep.synthetic), pretrains an LSTM with label-smoothed
cross-entropy, fine-tunes it with MIXER, decodes the test set greedily and with beam 5 with
fairseq-generate, and prints a BLEU table (also written to <workdir>/results.md and .json).
Every step runs fairseq's own command-line tools; finished steps are reused on a rerun.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = str(REPO / "fairseq_mixer")
BIN = Path(sys.executable).parent

MODEL = [
    "--arch", "lstm", "--encoder-embed-dim", "96", "--encoder-hidden-size", "128",
    "--decoder-embed-dim", "96", "--decoder-hidden-size", "128",
    "--decoder-out-embed-dim", "96", "--dropout", "0.1",
]  # fmt: skip
TRAINING = [
    "--task", "mixer", "--user-dir", PLUGIN, "--cpu", "--optimizer", "adam",
    "--max-tokens", "3000", "--log-format", "simple", "--log-interval", "50",
    "--no-epoch-checkpoints", "--seed", "1",
]  # fmt: skip
XENT = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
PRETRAIN_LR = ["--lr", "0.003"]
FINETUNE_LR = ["--lr", "0.0005"]
MIXER = [
    "--criterion", "mixer", "--reward", "sentence_bleu", "--mixer-baseline-bias-scale", "100",
    "--mixer-schedule", "per_sentence", "--mixer-xent-epochs", "0",
    "--mixer-epochs-per-stage", "1", "--mixer-unroll-steps", "25", "--mixer-delta", "4",
]  # fmt: skip


def run(args: list[str], capture: bool = False) -> str:
    print("+", " ".join(args), flush=True)
    proc = subprocess.run(args, text=True, capture_output=capture, cwd=REPO)
    if proc.returncode != 0:
        if capture:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"demo: step failed: {' '.join(args[:2])} (exit {proc.returncode})")
    return proc.stdout + proc.stderr if capture else ""


def train(data: Path, save_dir: Path, epochs: int, flags: list[str]) -> Path:
    checkpoint = save_dir / "checkpoint_last.pt"
    if checkpoint.exists():
        print(f"demo: reusing {checkpoint}")
        return checkpoint
    run([str(BIN / "fairseq-train"), str(data), *TRAINING, *MODEL, *flags,
         "--max-epoch", str(epochs), "--save-dir", str(save_dir)])  # fmt: skip
    return checkpoint


def test_bleu(data: Path, checkpoint: Path, beam: int) -> tuple[float, float]:
    """(sacreBLEU on the test set, decoding seconds) for one checkpoint and beam size."""
    out = run(
        [str(BIN / "fairseq-generate"), str(data), "--user-dir", PLUGIN, "--task", "mixer",
         "--path", str(checkpoint), "--gen-subset", "test", "--beam", str(beam),
         "--batch-size", "128", "--required-batch-size-multiple", "1", "--cpu",
         "--scoring", "sacrebleu"],
        capture=True,
    )  # fmt: skip
    bleu = re.search(r"BLEU = ([\d.]+)", out)
    speed = re.search(r"in ([\d.]+)s \(", out)
    if bleu is None or speed is None:
        raise SystemExit(f"demo: no BLEU in fairseq-generate's output:\n{out[-2000:]}")
    return float(bleu.group(1)), float(speed.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "demo")
    parser.add_argument("--train-pairs", type=int, default=12000)
    parser.add_argument("--xent-epochs", type=int, default=6)
    parser.add_argument("--mixer-epochs", type=int, default=3)
    args = parser.parse_args()
    started = time.time()
    workdir = args.workdir.resolve()
    data = workdir / "data" / "bin"
    run([sys.executable, "-m", "data_prep.synthetic", "--dest", str(workdir / "data"),
         "--train", str(args.train_pairs), "--valid", "400", "--test", "500"])  # fmt: skip
    xent = train(data, workdir / "xent", args.xent_epochs, [*XENT, *PRETRAIN_LR])
    start = ["--finetune-from-model", str(xent), *FINETUNE_LR]
    more_xent = train(data, workdir / "xent_more", args.mixer_epochs, [*XENT, *start])
    mixer = train(data, workdir / "mixer", args.mixer_epochs, [*MIXER, *start])
    methods = {"XENT": xent, "XENT, more epochs": more_xent, "MIXER": mixer}
    rows = []
    for name, checkpoint in methods.items():
        for beam in (1, 5):
            bleu, seconds = test_bleu(data, checkpoint, beam)
            rows.append({"method": name, "beam": beam, "bleu": bleu, "decode_seconds": seconds})
    table = ["| method | greedy BLEU | beam 5 BLEU |", "|---|---|---|"]
    for name in methods:
        greedy, beam5 = (r["bleu"] for r in rows if r["method"] == name)
        table.append(f"| {name} | {greedy:.2f} | {beam5:.2f} |")
    minutes = (time.time() - started) / 60
    text = "\n".join(table)
    footer = (
        f"sacreBLEU of fairseq-generate (--scoring sacrebleu) on the synthetic test set (500 "
        f"pairs). XENT: {args.xent_epochs} epochs of label-smoothed cross-entropy; then "
        f"{args.mixer_epochs} more epochs from it, of XENT ('more epochs', the same budget) or "
        f"of MIXER. This run took {minutes:.1f} minutes."
    )
    (workdir / "results.md").write_text(text + "\n\n" + footer + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "minutes": minutes}, indent=1))
    print("\n" + text + "\n\n" + footer + f"\nresults: {workdir / 'results.md'}")


if __name__ == "__main__":
    main()
