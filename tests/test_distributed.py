"""Two processes over gloo against one process that sees the same two half-batches."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import COMMON, MIXER, TINY_LSTM, TINY_TRANSFORMER, fairseq_train, log_records
from conftest import REPO

import fairseq_mixer  # noqa: F401  (allow-lists what fairseq checkpoints hold)

WRAPPER = str(Path(__file__).parent / "train_saving_every_rank.py")
# SGD: Adam would turn the gradients that are zero but for rounding (the attention's key
# biases, which the softmax cancels) into steps of a full learning rate in either direction.
ONE_UPDATE = ["--max-update", "1", "--disable-validation", "--batch-size", "16",
              "--required-batch-size-multiple", "1",
              "--optimizer", "sgd", "--lr", "0.1"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# DAD draws half its inputs from its softmax; E2E feeds soft inputs after s = 6
DAD = ["--criterion", "dad", "--dad-schedule", "linear", "--dad-k", "0.5"]
E2E = ["--criterion", "e2e", "--mixer-xent-epochs", "0", "--mixer-unroll-steps", "10",
       "--mixer-delta", "4", "--mixer-schedule", "per_sentence"]  # fmt: skip


def checkpoint_tensors(path: Path) -> dict:
    state = torch.load(path, map_location="cpu")
    return {
        **state["model"],
        **{f"criterion.{k}": v for k, v in (state["criterion"] or {}).items()},
    }


@pytest.mark.parametrize(
    "model, criterion",
    [(TINY_LSTM, MIXER), (TINY_TRANSFORMER, MIXER), (TINY_LSTM, DAD), (TINY_TRANSFORMER, E2E)],
    ids=["lstm-mixer", "transformer-mixer", "lstm-dad", "transformer-e2e"],
)
def test_two_gloo_ranks_match_one_process(synthetic_bin, tmp_path, model, criterion):
    """The transformer's MIXER update runs the packed teacher-forced pass (its default); DAD
    on the LSTM steps the decoder with grad, E2E on the transformer takes two passes."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = []
    for rank in range(2):
        (tmp_path / f"rank{rank}").mkdir()  # fairseq creates the save dir on rank 0 only
        args = [sys.executable, WRAPPER, str(synthetic_bin), *COMMON, *model, *criterion,
                *ONE_UPDATE,
                "--save-dir", str(tmp_path / f"rank{rank}"), "--distributed-world-size", "2",
                "--distributed-rank", str(rank), "--distributed-backend", "gloo",
                "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
                "--ddp-backend", "legacy_ddp", "--device-id", "0"]  # fmt: skip
        ranks.append(
            subprocess.Popen(
                args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )  # fmt: skip
        )
    outputs = [proc.communicate(timeout=600)[0] for proc in ranks]
    for proc, output in reversed(list(zip(ranks, outputs, strict=True))):
        assert proc.returncode == 0, output[-4000:]
    assert "distributed init (rank 1)" in outputs[1]

    single_run = fairseq_train(synthetic_bin, tmp_path / "single", *criterion, *ONE_UPDATE,
                               "--update-freq", "2", model=model)  # fmt: skip
    if criterion is not MIXER:  # the update did feed the model's own inputs
        assert float(log_records(single_run, "train_inner")[0]["model_input_share"]) > 0.1

    rank0 = checkpoint_tensors(tmp_path / "rank0" / "checkpoint_last.pt")
    rank1 = checkpoint_tensors(tmp_path / "rank1" / "checkpoint_last.pt")
    single = checkpoint_tensors(tmp_path / "single" / "checkpoint_last.pt")
    initial = torch.load(tmp_path / "single" / "checkpoint_last.pt", map_location="cpu")
    assert initial["optimizer_history"][-1]["num_updates"] == 1
    assert rank0.keys() == rank1.keys() == single.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.allclose(rank0[name], single[name], atol=1e-6, rtol=1e-5), name
    if criterion is MIXER:
        assert rank0["criterion.baseline.weight"].abs().sum() > 0
