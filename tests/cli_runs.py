"""Running fairseq's own command-line tools on the plugin, and reading their JSON logs."""

import json
import sys
from pathlib import Path

from conftest import REPO, run_tool

PLUGIN = str(REPO / "fairseq_mixer")
BIN = Path(sys.executable).parent
TINY_LSTM = [
    "--arch", "lstm", "--encoder-embed-dim", "32", "--encoder-hidden-size", "32",
    "--decoder-embed-dim", "32", "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32",
    "--dropout", "0",
]  # fmt: skip
TINY_TRANSFORMER = [
    "--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
    "--decoder-attention-heads", "4", "--dropout", "0",
]  # fmt: skip
COMMON = [
    "--user-dir", PLUGIN, "--task", "mixer", "--cpu", "--no-progress-bar", "--log-format", "json",
    "--log-interval", "1", "--optimizer", "adam", "--lr", "0.003", "--seed", "7",
    "--batch-size", "32", "--num-workers", "0",
]  # fmt: skip
MIXER = [
    "--criterion", "mixer", "--mixer-xent-epochs", "0", "--mixer-epochs-per-stage", "1",
    "--mixer-unroll-steps", "10", "--mixer-delta", "4", "--mixer-schedule", "per_sentence",
]  # fmt: skip


def fairseq_train(
    data: Path, save_dir: Path, *flags: str, check: bool = True, model: list[str] = TINY_LSTM
):
    args = [str(BIN / "fairseq-train"), str(data), *COMMON, *model,
            "--save-dir", str(save_dir), *flags]  # fmt: skip
    return run_tool(args, check=check)


def log_records(proc, kind: str) -> list[dict]:
    """The JSON records a finished fairseq run logged under `kind` (train_inner, train, valid),
    with the `train_`/`valid_` prefix of the epoch summaries removed from their keys."""
    records = []
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split(" | ")
        if len(parts) >= 4 and parts[2].strip() == kind and parts[3].startswith("{"):
            record = json.loads(parts[3])
            records.append({k.removeprefix(f"{kind}_"): v for k, v in record.items()})
    return records
