"""What every measurement shares: data, parsed configs, the seeded model, criteria, batches.

A `Job` is what a process needs to build a `Bench` (it travels to the memory children); a
`Bench` is the built task, model, one criterion per method, SGD and the training batches.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_mixer
from fairseq_mixer.rollout import sampling

from .methods import Method, methods
from .sizes import Settings

REPO = Path(__file__).resolve().parents[2]
USER_DIR = str(Path(fairseq_mixer.__file__).parent)
SEED = 1
STARTED = time.perf_counter()

LSTM_FLAGS = [
    "--arch", "lstm", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "256", "--encoder-hidden-size", "256",
    "--decoder-embed-dim", "256", "--decoder-hidden-size", "256",
    "--decoder-out-embed-dim", "256",
]  # fmt: skip
TRANSFORMER_FLAGS = [
    "--arch", "transformer", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
    "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]  # fmt: skip
ARCHS = {"lstm": LSTM_FLAGS, "transformer": TRANSFORMER_FLAGS}
ARCH_LABELS = {
    "lstm": "LSTM 1+1 layers, 256 units, embed 256, unidirectional encoder, attention",
    "transformer": "transformer 3+3 layers, 256 dim, ffn 1024, 4 heads",
}
# A tiny learning rate: the step is timed, but every update sees practically the same model.
LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class Job:
    """What a process needs to build a bench: methods, their parsed configs, sizes, device."""

    arch: str
    methods: tuple[Method, ...]
    configs: dict[str, Any]  # method name -> the omegaconf config fairseq-train would build
    settings: Settings
    device: str
    threads: int
    model_state: Path | None = None  # the briefly trained weights, once they exist
    cuda_graphs: bool = False  # --cuda-loop graph (not the plugin's default yet)


@dataclass
class Bench:
    """The fairseq objects every method shares: task, model, criteria, batches."""

    task: Any
    model: torch.nn.Module
    methods: dict[str, Method]
    criteria: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    batches: list[dict]
    device: str


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout holds only the report."""
    elapsed = time.perf_counter() - STARTED
    print(f"bench [{elapsed:5.1f} s]: {message}", file=sys.stderr, flush=True)


def quiet_fairseq() -> None:
    """fairseq's INFO lines and hydra's and torch's deprecation warnings would bury the table."""
    for name in ("fairseq", "fairseq_mixer", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
    warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
    warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true")


def prepare_process(threads: int) -> None:
    """Threads, seeds and quiet logs, alike in the main process and in every child."""
    quiet_fairseq()
    torch.set_num_threads(threads)
    random.seed(SEED)
    np.random.seed(SEED)
    utils.set_torch_seed(SEED)


def start_synthetic_data(dest: Path, sizes: tuple[int, int, int]) -> subprocess.Popen:
    """Starts `data_prep.synthetic`; it runs while the memory workers import fairseq."""
    train, valid, test = sizes
    command = [
        sys.executable, "-m", "data_prep.synthetic", "--dest", str(dest), "--workers", "1",
        "--train", str(train), "--valid", str(valid), "--test", str(test), "--seed", str(SEED),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_synthetic_data(process: subprocess.Popen, dest: Path) -> Path:
    """The binarised folder `start_synthetic_data` made, once it has finished."""
    output, _ = process.communicate()
    if process.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-10:])
        raise RuntimeError(f"data_prep.synthetic failed ({process.returncode}):\n{tail}")
    return dest / "bin"


def parse_config(data: Path, flags: list[str], device: str) -> Any:
    """The omegaconf config fairseq-train would build from these flags (about 0.7 s)."""
    cpu = ["--cpu"] if device == "cpu" else []
    argv = [
        str(data), "--user-dir", USER_DIR, "--task", "mixer", "--dropout", "0",
        "--seed", str(SEED), *cpu, *flags,
    ]  # fmt: skip
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    return convert_namespace_to_omegaconf(args)


def make_job(
    data: Path,
    arch: str,
    settings: Settings,
    device: str,
    threads: int,
    rollout: str = "auto",
    stage_s: int = 1,
    cuda_graphs: bool = False,
) -> Job:
    """The job of one architecture: every method's config parsed once, here."""
    measured = methods(rollout, stage_s)
    configs = {
        method.name: parse_config(data, [*ARCHS[arch], *method.flags], device)
        for method in measured
    }
    return Job(arch, measured, configs, settings, device, threads, cuda_graphs=cuda_graphs)


def build_bench(job: Job) -> Bench:
    """Task (from the first method's config), seeded model, every method's criterion, SGD and
    the training batches, in MIXER's mixed stage."""
    sampling.CUDA_GRAPH_ON_CUDA = job.cuda_graphs
    first = job.configs[job.methods[0].name]
    utils.set_torch_seed(SEED)
    task = tasks.setup_task(first.task)
    model = task.build_model(first.model).to(job.device)
    if job.model_state is not None:
        model.load_state_dict(torch.load(job.model_state, map_location=job.device))
    criteria = {
        method.name: task.build_criterion(job.configs[method.name].criterion).to(job.device)
        for method in job.methods
    }
    task.begin_epoch(1, model)
    if not task.stage.uses_reinforce:
        raise RuntimeError(f"expected a mixed MIXER stage, got {task.stage}")
    for method in job.methods:
        if method.before_update is not None:
            method.before_update(criteria[method.name], task, 0)
    parameters = [*model.parameters(), *(p for c in criteria.values() for p in c.parameters())]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE)
    settings = job.settings
    batches = load_batches(task, "train", settings.batch_size, settings.batches, job.device)
    model.train()
    by_name = {method.name: method for method in job.methods}
    return Bench(task, model, by_name, criteria, optimizer, batches, job.device)


def load_batches(task: Any, split: str, batch_size: int, count: int, device: str) -> list[dict]:
    """The first `count` batches of exactly `batch_size` sentences of a seeded shuffled epoch."""
    task.load_dataset(split)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_sentences=batch_size, seed=SEED,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=True)  # fmt: skip
    batches = [batch for batch in iterator if batch["nsentences"] == batch_size][:count]
    if not batches:
        raise RuntimeError(f"split {split!r} has no batch of {batch_size} sentences")
    return [utils.move_to_cuda(batch) if device == "cuda" else batch for batch in batches]
