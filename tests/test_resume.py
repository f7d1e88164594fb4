"""Exact resume (#21): a run stopped or killed anywhere ends bit-identical to an uninterrupted one.

The runs are real fairseq-train processes: a tiny LSTM, epochs of five updates of 120
sentences, three epochs, a checkpoint every three updates. With `--mixer-xent-epochs 1` the
mixer criterion trains XENT in epoch 1 and mixed stages (s = 6, then 2) in epochs 2 and 3.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import BIN, COMMON, MIXER, TINY_LSTM
from conftest import run_tool
from fairseq.file_io import PathManager

import fairseq_mixer  # noqa: F401  (allow-lists what fairseq checkpoints hold)
from fairseq_mixer.resume import atomic_copy, install_atomic_checkpoint_copies
from fairseq_mixer.tasks.mixer import MixerConfig, MixerTask

# One line per criterion, its flags: each trains with --task mixer from epoch 1.
CRITERIA = {
    "label_smoothed_cross_entropy": [
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    ],
    "mixer": [*MIXER, "--mixer-xent-epochs", "1"],
    "dad": ["--criterion", "dad", "--dad-schedule", "linear", "--dad-linear-slope", "0.05"],
    "e2e": ["--criterion", "e2e", "--mixer-xent-epochs", "1", "--mixer-epochs-per-stage", "1",
            "--mixer-unroll-steps", "10", "--mixer-delta", "4", "--mixer-schedule", "per_sentence"],
}  # fmt: skip
UPDATES_PER_EPOCH, EPOCHS = 5, 3
SCHEDULE = ["--batch-size", "120", "--save-interval-updates", "3", "--max-epoch", str(EPOCHS)]
LAST = UPDATES_PER_EPOCH * EPOCHS
# fairseq-train whose copy to a file named checkpoint_last* stops halfway through the copy
# numbered $KILL_AT_COPY, killed as a preempted job would be.
KILL_DURING_COPY = """
import os, shutil, signal
from fairseq_cli.train import cli_main

copy, copies = shutil.copyfile, [0]

def copy_then_die(src, dst, *args, **kwargs):
    if os.path.basename(dst).startswith("checkpoint_last"):
        copies[0] += 1
        if copies[0] == int(os.environ["KILL_AT_COPY"]):
            with open(src, "rb") as source, open(dst, "wb") as out:
                data = source.read()
                out.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return copy(src, dst, *args, **kwargs)

shutil.copyfile = copy_then_die
cli_main()
"""


def train_args(data: Path, save_dir: Path, criterion: str, *flags: str) -> list[str]:
    return [str(data), *COMMON, *TINY_LSTM, "--save-dir", str(save_dir),
            *CRITERIA[criterion], *SCHEDULE, *flags]  # fmt: skip


def fairseq_train(*args: str):
    return run_tool([str(BIN / "fairseq-train"), *args])


def training_state(path: Path) -> dict:
    """What decides how training continues: parameters, criterion, optimizer, counters."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {
        "model": state["model"],
        "criterion": state.get("criterion", {}),
        "optimizer": state["last_optimizer_state"],
        "num_updates": state["optimizer_history"][-1]["num_updates"],
        "train_iterator": state["extra_state"]["train_iterator"],
    }


def differences(a, b, where: str = "") -> list[str]:
    """Where two nested checkpoint structures differ (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{where}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}"]
        if torch.equal(a, b):
            return []
        return [f"{where}: up to {(a.double() - b.double()).abs().max().item():.3g} apart"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}/{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}/{i}")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def checkpoint_at(save_dir: Path, updates: int) -> Path:
    """The checkpoint an uninterrupted run saved after `updates` updates."""
    epoch, within = divmod(updates, UPDATES_PER_EPOCH)
    if within == 0:
        return save_dir / f"checkpoint{epoch}.pt"
    return save_dir / f"checkpoint_{epoch + 1}_{updates}.pt"


def assert_like_uninterrupted(save_dir: Path, reference: Path, when: str) -> int:
    """checkpoint_last.pt of `save_dir` equals the uninterrupted run's at the same update."""
    state = training_state(save_dir / "checkpoint_last.pt")
    diff = differences(state, training_state(checkpoint_at(reference, state["num_updates"])))
    assert not diff, f"{when}, at update {state['num_updates']}: {len(diff)} differ, {diff[:4]}"
    return state["num_updates"]


@pytest.fixture(scope="module")
def uninterrupted(synthetic_bin, tmp_path_factory):
    """The save folder of each criterion's uninterrupted run (trained once, when first asked)."""
    save_dirs = {}

    def save_dir(criterion: str) -> Path:
        if criterion not in save_dirs:
            path = tmp_path_factory.mktemp(f"whole_{criterion}")
            fairseq_train(*train_args(synthetic_bin, path, criterion))
            save_dirs[criterion] = path
        return save_dirs[criterion]

    return save_dir


def loaded_from(proc) -> str:
    found = re.search(r"Loaded checkpoint \S+ \((epoch \d+ @ \d+ updates)\)", proc.stdout)
    return found.group(1) if found else "a fresh start"


def kill_after_update(args: list[str], update: int) -> None:
    """Start fairseq-train and SIGKILL it as soon as it has logged `update`, wherever it is then
    (validating, saving, or in the next update)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"  # bit-identical runs are promised with one thread
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    logged = f'"num_updates": "{update}"'
    try:
        for line in proc.stdout:
            if " | train_inner | " in line and logged in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended ({proc.returncode}) unkilled"


@pytest.mark.parametrize("criterion", CRITERIA)
def test_killed_while_saving_then_at_random_ends_like_an_uninterrupted_run(
    synthetic_bin, uninterrupted, tmp_path, criterion
):
    """A kill halfway through writing checkpoint_last.pt at update 6 leaves the end-of-epoch-1
    one whole; the restart resumes from there (the issue's case: MIXER takes over from XENT),
    is SIGKILLed after a random update of epoch 2 or 3 and restarted with the same command."""
    reference = uninterrupted(criterion)
    args = train_args(synthetic_bin, tmp_path, criterion)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_COPY, *args],
        env={**os.environ, "KILL_AT_COPY": "3"},  # checkpoint_last copies at updates 3, 5, 6
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert (tmp_path / "checkpoint_2_6.pt").exists()
    end_of_epoch_1 = assert_like_uninterrupted(tmp_path, reference, "killed while saving")
    assert end_of_epoch_1 == UPDATES_PER_EPOCH

    command = [str(BIN / "fairseq-train"), *args]
    update = random.randrange(end_of_epoch_1 + 1, LAST)
    kill_after_update(command, update)
    killed_at = assert_like_uninterrupted(tmp_path, reference, f"killed after update {update}")
    epoch = killed_at // UPDATES_PER_EPOCH + 1
    restarted = run_tool(command)
    assert loaded_from(restarted) == f"epoch {epoch} @ {killed_at} updates"
    assert assert_like_uninterrupted(tmp_path, reference, f"resumed from {killed_at}") == LAST


def test_batches_do_not_depend_on_the_epoch_a_run_resumes_at(synthetic_bin):
    """Epoch 2's batches, from an iterator kept since epoch 1 and from one built at epoch 2."""
    cfg = MixerConfig(
        data=str(synthetic_bin), source_lang="src", target_lang="tgt", dataset_impl="mmap",
        required_seq_len_multiple=1, train_subset="train",
    )  # fmt: skip

    def epoch_2_batches(built_at: int) -> list[list[int]]:
        task = MixerTask.setup_task(cfg)
        task.load_dataset("train")
        iterator = task.get_batch_iterator(task.dataset("train"), max_sentences=100, seed=3,
                                           epoch=built_at)  # fmt: skip
        if built_at == 1:
            list(iterator.next_epoch_itr(shuffle=True))
        assert iterator.next_epoch_idx == 2
        return [batch["id"].tolist() for batch in iterator.next_epoch_itr(shuffle=True)]

    assert epoch_2_batches(2) == epoch_2_batches(1)


def test_a_checkpoint_copy_killed_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    source, target = tmp_path / "checkpoint_2_9.pt", tmp_path / "checkpoint_last.pt"
    source.write_bytes(b"new" * 1000)
    target.write_bytes(b"old")

    def copy_half_then_die(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:1500])
        raise KeyboardInterrupt

    install_atomic_checkpoint_copies()
    install_atomic_checkpoint_copies()
    monkeypatch.setattr(shutil, "copyfile", copy_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        PathManager.copy(str(source), str(target), overwrite=True)
    assert target.read_bytes() == b"old"
    monkeypatch.undo()
    assert PathManager.copy(str(source), str(target), overwrite=True)
    assert target.read_bytes() == source.read_bytes()
    assert not atomic_copy(str(source), str(target), overwrite=False)
