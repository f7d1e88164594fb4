"""What MIXER costs next to label-smoothed cross-entropy (XENT), measured in one run.

On the same batches, models and machine, alternating the methods so that machine noise hits
both alike, it measures:

1. the wall time of one update (forward, backward, SGD step) of the `mixer` criterion in a
   mixed stage with s = 1 (or --stage-s) against `label_smoothed_cross_entropy`, for a
   paper-like LSTM and a small transformer, and where the time of a MIXER update goes; both
   models are first trained briefly with XENT, so that their samples end with EOS as a real
   model's do;
2. the speed of the batched rewards against a Python loop over `sacrebleu.sentence_bleu`, on
   batches of a real MIXER batch's size, and a reward call's share of a MIXER update;
3. the peak memory of MIXER updates against XENT updates, each in a fresh child process;
4. greedy decoding (beam 1) against beam 10 with fairseq's SequenceGenerator.

Usage: .venv/bin/python scripts/bench.py [--quick] [--json PATH] [--data BIN_DIR]
                                         [--device cpu|cuda] [--threads N]
                                         [--rollout auto|one_pass|two_pass]
                                         [--transformer-step lean|fairseq]
                                         [--lstm-step lean|fairseq]
                                         [--cuda-loop launch_bound|synchronising|graph]
                                         [--stage-s S] [--prefill on|off]
                                         [--teacher-forced packed|padded]
                                         [--reward-counts compiled|tensor]
The last line printed is `mixer/xent update time ratio: <number>` for the LSTM.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import itertools
import json
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from argparse import Namespace
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import fairseq
import numpy as np
import sacrebleu
import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.tasks.translation import TranslationTask

import fairseq_mixer
import fairseq_mixer.criterions.mixer as mixer_criterion_module
from fairseq_mixer.rewards import base as reward_base
from fairseq_mixer.rewards import get_reward
from fairseq_mixer.rollout import decoder_features, greedy_generator, sampling
from fairseq_mixer.rollout.sampling import ROLLOUTS, samples_in_training_pass
from fairseq_mixer.schedule import teacher_forced_lengths

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(Path(fairseq_mixer.__file__).parent)
SEED = 1
MIB = 2**20
M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial threshold
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
# T = s + 3, Delta = 3, no XENT-only epochs: epoch 1 is the mixed stage with s (by default 1,
# the most expensive stage: every token after the first reference word is sampled).
MIXER_FLAGS = [
    "--criterion", "mixer", "--mixer-delta", "3", "--mixer-xent-epochs", "0",
    "--reward", "mixer_bleu",
]  # fmt: skip


def mixer_flags(rollout: str, stage_s: int) -> list[str]:
    """The MIXER criterion's flags for a bench in the mixed stage with `stage_s`."""
    return [*MIXER_FLAGS, "--mixer-unroll-steps", str(stage_s + 3), "--mixer-rollout", rollout]


XENT_FLAGS = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
METHODS = ("mixer", "xent")
FORK_SERVER_MODULES = ("torch", "numpy", "sacrebleu", "fairseq.options", "fairseq_mixer")
REWARDS = ("mixer_bleu", "sentence_bleu", "rouge2")

# A tiny learning rate: the step is timed, but every update sees practically the same model.
LEARNING_RATE = 1e-4
# The brief XENT training before any measurement (Adam; the transformer, without warm-up,
# needs a smaller step).
PRETRAIN_LEARNING_RATE = {"lstm": 3e-3, "transformer": 5e-4}
CLIP_NORM = 10.0
DECODE_MAX_LEN_A = 1.2
DECODE_MAX_LEN_B = 10
BEAM = 10
KEEP_PROBABILITY = 0.7
MAX_LENGTH_CHANGE = 3

UPDATE_RATIO_LIMIT = {"cpu": 1.5, "cuda": 2.0}
REWARD_SHARE_LIMIT = 0.05
REWARD_SPEEDUP_LIMIT = 20.0
MEMORY_RATIO_LIMIT = 1.3
DECODE_SPEEDUP_LIMIT = 5.0


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench run."""

    mode: str
    pretrain_updates: int
    batch_size: int
    batches: int
    warmup_pairs: int
    timed_pairs: int
    phase_updates: int
    memory_updates: int
    reward_rounds: int
    reward_batch_size: int
    reward_batches: int
    decode_batch_size: int
    decode_batches: int
    synthetic_sizes: tuple[int, int, int]


QUICK = Settings(
    mode="quick",
    pretrain_updates=80,
    batch_size=32,
    batches=4,
    warmup_pairs=2,
    timed_pairs=8,
    phase_updates=3,
    memory_updates=3,
    reward_rounds=5,
    reward_batch_size=256,
    reward_batches=2,
    decode_batch_size=128,
    decode_batches=2,
    synthetic_sizes=(2000, 32, 256),
)
FULL = Settings(
    mode="full",
    pretrain_updates=400,
    batch_size=32,
    batches=16,
    warmup_pairs=5,
    timed_pairs=40,
    phase_updates=10,
    memory_updates=10,
    reward_rounds=20,
    reward_batch_size=256,
    reward_batches=8,
    decode_batch_size=128,
    decode_batches=4,
    synthetic_sizes=(4000, 200, 512),
)


@dataclass(frozen=True)
class Job:
    """What a process needs to build a bench: parsed configs, sizes, device, threads."""

    arch: str
    configs: dict[str, Any]  # method -> the omegaconf config fairseq-train would build
    settings: Settings
    device: str
    threads: int
    model_state: Path | None = None  # the briefly trained weights, once they exist
    lean_transformer_step: bool = True  # --transformer-step lean (the plugin's default)
    lean_lstm_step: bool = True  # --lstm-step lean (the plugin's default)
    launch_bound_on_cuda: bool = True  # --cuda-loop launch_bound (the plugin's default)
    cuda_graphs: bool = False  # --cuda-loop graph (not the plugin's default yet)
    prefill: bool = True  # --prefill on (the plugin's default)
    packed_teacher_forced: bool = True  # --teacher-forced packed (the plugin's default)
    compiled_rewards: bool = True  # --reward-counts compiled (the plugin's default)


@dataclass
class Bench:
    """The fairseq objects every method shares: task, model, both criteria, batches."""

    task: Any
    model: torch.nn.Module
    criteria: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    batches: list[dict]
    device: str


# ---------------------------------------------------------------- set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="results file")
    parser.add_argument(
        "--data", type=Path, help="binarised data folder (default: fresh synthetic data)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument(
        "--rollout", choices=ROLLOUTS, default="auto",
        help="MIXER's --mixer-rollout (auto: one_pass for the LSTM, two_pass for the transformer)",
    )  # fmt: skip
    parser.add_argument(
        "--transformer-step", choices=("lean", "fairseq"), default="lean",
        help="the transformer's no-grad sampling loop: the plugin's lean step (default) or "
        "fairseq's incremental decoding (the figures of the code before the lean step)",
    )  # fmt: skip
    parser.add_argument(
        "--lstm-step", choices=("lean", "fairseq"), default="lean",
        help="the LSTM's decoding loops: the plugin's lean step (default) or fairseq's "
        "incremental decoding (the figures of the code before the lean LSTM step)",
    )  # fmt: skip
    parser.add_argument(
        "--cuda-loop", choices=("launch_bound", "synchronising", "graph"),
        default="launch_bound",
        help="MIXER's decoding loop on CUDA: launch-bound (default: no wait for the device "
        "within a step), the synchronising loop of the CPU (the figures of the loop before "
        "the launch-bound one; both project the one-pass rollout once, after the loop), or "
        "graph: launch-bound, and the no-grad loop of a two-pass rollout (the transformer's; "
        "the LSTM's with --rollout two_pass) replays a CUDA graph of its step (fixed shapes; "
        "not yet measured on a GPU, so not the plugin's default)",
    )  # fmt: skip
    parser.add_argument(
        "--stage-s", type=int, default=1,
        help="the mixed stage measured: its first s reference tokens are teacher-forced "
        "(default 1, the most expensive stage)",
    )  # fmt: skip
    parser.add_argument(
        "--prefill", choices=("on", "off"), default="on",
        help="the transformer's sampling loop feeds the steps before any row draws at once "
        "(on, the default) or one by one (off: the code before)",
    )  # fmt: skip
    parser.add_argument(
        "--teacher-forced", choices=("packed", "padded"), default="packed",
        help="the transformer's teacher-forced pass over the samples: on their tokens only "
        "(packed, the default) or fairseq's decoder over the padded batch (the code before)",
    )  # fmt: skip
    parser.add_argument(
        "--reward-counts", choices=("compiled", "tensor"), default="compiled",
        help="the rewards: compiled (default: one numba call per batch on the host CPU, a "
        "CUDA batch copied there and its scores back; at commit 4385be8 only their n-gram "
        "counts were compiled, and CUDA batches ran the tensor code) or the tensor code on "
        "the batch's device",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.stage_s < 1:
        parser.error("--stage-s must be >= 1 (s = 0 would be pure REINFORCE, no mixed stage)")
    return args


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
    output, _ = process.communicate()
    if process.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-10:])
        raise RuntimeError(f"data_prep.synthetic failed ({process.returncode}):\n{tail}")
    return dest / "bin"


def parse_config(data: Path, flags: list[str], device: str):
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
) -> Job:
    flags = {"mixer": mixer_flags(rollout, stage_s), "xent": XENT_FLAGS}
    configs = {method: parse_config(data, ARCHS[arch] + flags[method], device) for method in flags}
    return Job(arch, configs, settings, device, threads)


def build_bench(job: Job) -> Bench:
    """Task, model (seeded), MIXER and XENT criteria, SGD and the training batches."""
    mixer_cfg, xent_cfg, device = job.configs["mixer"], job.configs["xent"], job.device
    sampling.LEAN_TRANSFORMER_STEP = job.lean_transformer_step
    sampling.LEAN_LSTM_STEP = job.lean_lstm_step
    sampling.LAUNCH_BOUND_ON_CUDA = job.launch_bound_on_cuda
    greedy_generator.LAUNCH_BOUND_ON_CUDA = job.launch_bound_on_cuda
    sampling.CUDA_GRAPH_ON_CUDA = job.cuda_graphs
    sampling.PREFILL = job.prefill
    decoder_features.PACKED_TRANSFORMER_PASS = job.packed_teacher_forced
    reward_base.COMPILED_ON_CPU = job.compiled_rewards
    utils.set_torch_seed(SEED)
    task = tasks.setup_task(mixer_cfg.task)
    model = task.build_model(mixer_cfg.model).to(device)
    if job.model_state is not None:
        model.load_state_dict(torch.load(job.model_state, map_location=device))
    mixer = task.build_criterion(mixer_cfg.criterion).to(device)
    xent = task.build_criterion(xent_cfg.criterion).to(device)
    task.begin_epoch(1, model)
    if not task.stage.uses_reinforce:
        raise RuntimeError(f"expected a mixed MIXER stage, got {task.stage}")
    mixer.set_mixer_stage(task.stage, 0)
    parameters = [*model.parameters(), *mixer.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE)
    settings = job.settings
    batches = load_batches(task, "train", settings.batch_size, settings.batches, device)
    model.train()
    return Bench(task, model, {"mixer": mixer, "xent": xent}, optimizer, batches, device)


def load_batches(task, split: str, batch_size: int, count: int, device: str) -> list[dict]:
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


def decoding_split(data: Path) -> str:
    return "test" if any(data.glob("test.*.idx")) else "valid"


def pretrain(bench: Bench, updates: int, learning_rate: float) -> dict:
    """Brief XENT training with Adam, so that samples and decodes end with EOS near the
    reference length, as a real model's do (an untrained model runs to the length limit)."""
    model, xent, task = bench.model, bench.criteria["xent"], bench.task
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batch_size = bench.batches[0]["nsentences"]
    losses: list[float] = []
    epoch = 1
    model.train()
    while len(losses) < updates:
        iterator = task.get_batch_iterator(
            dataset=task.dataset("train"), max_sentences=batch_size, seed=SEED, epoch=epoch,
            disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=True)  # fmt: skip
        for batch in itertools.islice(iterator, updates - len(losses)):
            batch = utils.move_to_cuda(batch) if bench.device == "cuda" else batch
            optimizer.zero_grad(set_to_none=True)
            loss, sample_size, _ = xent(model, batch)
            (loss / sample_size).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            losses.append(loss.item() / sample_size / math.log(2))
        epoch += 1
    return {"updates": updates, "first_loss": losses[0], "last_loss": losses[-1]}


# ---------------------------------------------------------------- timing helpers


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, function: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of `function()`, with the device's queue drained on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def untimed(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def update(
    bench: Bench, method: str, batch: dict, number: int,
    phase: Callable[[str], contextlib.AbstractContextManager] = untimed,
) -> dict:  # fmt: skip
    """One training update: criterion forward, backward, clipping, SGD step.

    `number` seeds MIXER's sampling; `phase(name)` may time the forward, backward and step.
    """
    criterion = bench.criteria[method]
    if method == "mixer":
        criterion.set_mixer_stage(bench.task.stage, number)
    bench.optimizer.zero_grad(set_to_none=True)
    with phase("forward"):
        loss, _, log = criterion(bench.model, batch)
    with phase("backward"):
        loss.backward()
    with phase("step"):
        torch.nn.utils.clip_grad_norm_(bench.model.parameters(), CLIP_NORM)
        bench.optimizer.step()
    return log


def alternating_order(pair: int) -> tuple[str, str]:
    """mixer, xent then xent, mixer: neither method always runs on a warmer cache."""
    return METHODS if pair % 2 == 0 else METHODS[::-1]


# ---------------------------------------------------------------- 1. update cost


def time_updates(bench: Bench, settings: Settings) -> dict:
    """Median update time of each method, alternating the methods update by update."""
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    sampled_tokens, target_tokens = [], []
    for pair in range(settings.warmup_pairs + settings.timed_pairs):
        batch = bench.batches[pair % len(bench.batches)]
        for method in alternating_order(pair):
            elapsed, log = timed(
                bench.device, functools.partial(update, bench, method, batch, pair)
            )
            if pair < settings.warmup_pairs:
                continue
            seconds[method].append(elapsed)
            if method == "mixer":
                sampled_tokens.append(float(log["rl_tokens"]))
                target_tokens.append(float(log["ntokens"]))
    medians = {method: statistics.median(values) for method, values in seconds.items()}
    return {
        "mixer_ms": 1000 * medians["mixer"],
        "xent_ms": 1000 * medians["xent"],
        "ratio": medians["mixer"] / medians["xent"],
        "mixer_ms_each": [round(1000 * value, 2) for value in seconds["mixer"]],
        "xent_ms_each": [round(1000 * value, 2) for value in seconds["xent"]],
        "sampled_tokens_per_update": statistics.mean(sampled_tokens),
        "reference_tokens_per_update": statistics.mean(target_tokens),
    }


class PhaseClock:
    """Wall time per named phase, summed over the updates it watches."""

    def __init__(self, device: str):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, name: str, function: Callable) -> Callable:
        def watched(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return watched


MIXER_PHASES = {
    "encoder": "encoder forward",
    "rollout": "one-pass rollout (sample_and_score_after_prefix, with grad)",
    "sampling": "two-pass: sampling loop (sample_after_prefix, no_grad)",
    "teacher_forced": "two-pass: teacher-forced pass + log-softmax (teacher_forced_log_probs)",
    "reward": "reward (mixer_bleu)",
    "rest_of_forward": "losses, baseline, logging",
    "backward": "backward",
    "step": "clipping + SGD step",
}


def watch_mixer_internals(bench: Bench, clock: PhaseClock) -> contextlib.ExitStack:
    """Patches the criterion's helpers with timed wrappers (undone when the stack closes)."""
    stack = contextlib.ExitStack()
    criterion = bench.criteria["mixer"]
    encoder = bench.model.encoder
    targets = [
        (encoder, "forward", "encoder"),
        (mixer_criterion_module, "sample_and_score_after_prefix", "rollout"),
        (mixer_criterion_module, "sample_in_eval_mode", "sampling"),
        (mixer_criterion_module, "teacher_forced_log_probs", "teacher_forced"),
        (criterion, "reward", "reward"),
    ]
    for owner, attribute, phase in targets:
        original = getattr(owner, attribute)
        stack.enter_context(mock.patch.object(owner, attribute, clock.wrap(phase, original)))
    return stack


XENT_PHASES = ("forward", "backward", "step")


def phase_breakdown(bench: Bench, settings: Settings) -> dict:
    """Share of each phase in the summed time of a few watched MIXER updates, and the
    forward, backward and step of as many XENT updates on the same batches, alternated."""
    clock, xent_clock = PhaseClock(bench.device), PhaseClock(bench.device)
    first_number = settings.warmup_pairs + settings.timed_pairs
    for number in range(settings.phase_updates):
        batch = bench.batches[number % len(bench.batches)]
        with watch_mixer_internals(bench, clock):
            update(bench, "mixer", batch, first_number + number, clock.phase)
        update(bench, "xent", batch, first_number + number, xent_clock.phase)
    seconds = defaultdict(float, clock.seconds)
    inner = ("encoder", "rollout", "sampling", "teacher_forced", "reward")
    seconds["rest_of_forward"] = seconds.pop("forward") - sum(seconds[name] for name in inner)
    total = sum(seconds.values())
    phases = {
        name: {
            "ms_per_update": 1000 * seconds[name] / settings.phase_updates,
            "share": seconds[name] / total,
        }
        for name in MIXER_PHASES
    }
    xent = {name: 1000 * xent_clock.seconds[name] / settings.phase_updates for name in XENT_PHASES}
    return {**phases, "xent_ms_per_update": xent}


def decoder_steps(bench: Bench) -> dict:
    """Decoder steps over the bench's batches: a MIXER update decodes until the longest
    sample of its batch ends, an XENT update until the longest reference does."""
    widths: list[int] = []

    def recording(function: Callable) -> Callable:
        def recorded(*args, **kwargs):
            result = function(*args, **kwargs)
            widths.append((result[0] if isinstance(result, tuple) else result).size(1))
            return result

        return recorded

    criterion = bench.criteria["mixer"]
    with contextlib.ExitStack() as stack, torch.no_grad():
        for name in ("sample_and_score_after_prefix", "sample_in_eval_mode"):
            original = getattr(mixer_criterion_module, name)
            stack.enter_context(
                mock.patch.object(mixer_criterion_module, name, recording(original))
            )
        for number, batch in enumerate(bench.batches):
            criterion.set_mixer_stage(bench.task.stage, number)
            criterion(bench.model, batch)
    references = sum(batch["target"].size(1) for batch in bench.batches)
    return {"mixer": sum(widths), "xent": references, "batches": len(bench.batches)}


def graph_loop_agreement(bench: Bench) -> dict:
    """How many sentences of the bench's batches the CUDA-graph loop of a two-pass rollout
    (`--cuda-loop graph`) samples as the launch-bound loop does: in a MIXER forward of each
    batch, both loops sample with the criterion's own arguments, the generator in the same
    state."""
    original = mixer_criterion_module.sample_in_eval_mode
    same = 0

    def both_loops(model, encoder_out, arguments, greedy=False):
        nonlocal same
        generator, pad = arguments[3], arguments[4]
        start = None if generator is None else generator.get_state()
        samples = []
        for graph in (True, False):
            sampling.CUDA_GRAPH_ON_CUDA = graph
            if start is not None:
                generator.set_state(start)
            samples.append(original(model, encoder_out, arguments, greedy=greedy))
        sampling.CUDA_GRAPH_ON_CUDA = True
        width = max(drawn.size(1) for drawn in samples)
        graphed, launch_bound = (mixer_criterion_module.fit_width(x, width, pad) for x in samples)
        same += int(graphed.eq(launch_bound).all(1).sum())
        return samples[0]

    criterion = bench.criteria["mixer"]
    patch = mock.patch.object(mixer_criterion_module, "sample_in_eval_mode", both_loops)
    with patch, torch.no_grad():
        for number, batch in enumerate(bench.batches):
            criterion.set_mixer_stage(bench.task.stage, number)
            criterion(bench.model, batch)
    return {"same": same, "sentences": sum(batch["nsentences"] for batch in bench.batches)}


def profile_operators(bench: Bench, number: int, top: int = 12) -> list[dict]:
    """torch.profiler's busiest operators, by self time, in one MIXER update.

    The profiler's own cost inflates the many small operators of the sampling loop.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    batch = bench.batches[number % len(bench.batches)]
    with torch.profiler.profile(activities=activities) as profiler:
        update(bench, "mixer", batch, number)
    averages = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in averages)
    return [
        {"operator": event.key, "calls": event.count,
         "self_cpu_ms": event.self_cpu_time_total / 1000,
         "share": event.self_cpu_time_total / total}
        for event in averages[:top]
    ]  # fmt: skip


# ---------------------------------------------------------------- 2. reward cost


def sampled_like(target: torch.Tensor, dictionary, rng: random.Random) -> torch.Tensor:
    """Hypotheses that look like a partly trained model's samples of these references.

    Each reference word is kept with probability 0.7, else replaced by a random word, and the
    length changes by -3..+3 words; every hypothesis ends with EOS and is right-padded.
    """
    pad, eos = dictionary.pad(), dictionary.eos()
    words = range(dictionary.nspecial, len(dictionary))
    rows = []
    for reference in target.tolist():
        reference = reference[: reference.index(eos)] if eos in reference else reference
        hyp = [w if rng.random() < KEEP_PROBABILITY else rng.choice(words) for w in reference]
        change = rng.randint(-MAX_LENGTH_CHANGE, MAX_LENGTH_CHANGE)
        hyp = hyp[: max(1, len(hyp) + change)] + [rng.choice(words) for _ in range(change)]
        rows.append(hyp + [eos])
    width = max(len(row) for row in rows)
    padded = [row + [pad] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=target.dtype, device=target.device)


def joined_ids(tokens: list[int], pad: int, eos: int) -> str:
    """The ids before the first EOS or pad, joined by spaces (sacrebleu's input)."""
    words = []
    for token in tokens:
        if token in (pad, eos):
            break
        words.append(str(token))
    return " ".join(words)


def sacrebleu_loop(hyps: torch.Tensor, refs: torch.Tensor, pad: int, eos: int) -> list[float]:
    """sacrebleu's sentence BLEU, one Python call per sentence, as a loop-based reward would."""
    return [
        sacrebleu.sentence_bleu(
            joined_ids(hyp, pad, eos), [joined_ids(ref, pad, eos)], tokenize="none"
        ).score
        / 100
        for hyp, ref in zip(hyps.tolist(), refs.tolist(), strict=True)
    ]


def reward_jobs(bench: Bench, hyps: torch.Tensor, refs: torch.Tensor) -> dict[str, Callable]:
    """Each reward, called as the criterion calls it, and the sacrebleu loop, on one batch."""
    dictionary = bench.task.target_dictionary
    pad, eos, unk = dictionary.pad(), dictionary.eos(), dictionary.unk()
    stage, unroll = bench.task.stage, bench.task.cfg.mixer_unroll_steps
    start = teacher_forced_lengths(refs.ne(pad).sum(1), stage.s, unroll, "absolute", 0)
    jobs: dict[str, Callable] = {
        name: functools.partial(
            get_reward(name, pad=pad, eos=eos, unk=unk), hyps, refs, start=start
        )
        for name in REWARDS
    }
    jobs["sacrebleu_loop"] = functools.partial(sacrebleu_loop, hyps, refs, pad, eos)
    return jobs


def time_calls(bench: Bench, pairs: list[tuple], rounds: int) -> dict[str, list[float]]:
    """Seconds of every call, rotating the order of the scorers round by round, after one
    untimed call of each (on the CPU a reward's first call in a process loads its compiled
    kernel, and compiles it where the cache beside the module is missing or stale)."""
    calls: dict[str, list[float]] = defaultdict(list)
    jobs = [reward_jobs(bench, hyps, refs) for hyps, refs in pairs]
    for job in jobs[0].values():
        job()
    for round_number in range(rounds):
        for batch_jobs in jobs:
            names = list(batch_jobs)
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                calls[name].append(timed(bench.device, batch_jobs[name])[0])
    return calls


def reward_speeds(bench: Bench, batches: list[dict], rounds: int) -> tuple[dict, dict]:
    """(sentences per second, seconds of every call) of each scorer on sampled-like
    hypotheses of these batches' references."""
    dictionary = bench.task.target_dictionary
    rng = random.Random(SEED)
    pairs = [(sampled_like(b["target"], dictionary, rng), b["target"]) for b in batches]
    calls = time_calls(bench, pairs, rounds)
    sentences = rounds * sum(len(refs) for _, refs in pairs)
    return {name: sentences / sum(seconds) for name, seconds in calls.items()}, calls


def time_rewards(bench: Bench, settings: Settings, mixer_update_ms: float) -> dict:
    """Sentences per second of each reward and of the sacrebleu loop, on the same hypotheses.

    The target is measured on batches of a real MIXER batch's size (fairseq batches by
    --max-tokens; 4,000 tokens hold about 250 Multi30k sentences, and the criterion scores
    a whole batch in one call); the update's own small batches are reported too, with the
    reward's share of an update.
    """
    large = load_batches(
        bench.task, "train", settings.reward_batch_size, settings.reward_batches, bench.device
    )
    speeds, _ = reward_speeds(bench, large, settings.reward_rounds)
    small_speeds, small_calls = reward_speeds(bench, bench.batches, settings.reward_rounds)
    loop, small_loop = speeds["sacrebleu_loop"], small_speeds["sacrebleu_loop"]
    figures: dict[str, Any] = {
        "sacrebleu_loop": {"sentences_per_s": loop, "small_batch_sentences_per_s": small_loop},
        "batch_size": settings.reward_batch_size,
        "batches": len(large),
        "small_batch_size": settings.batch_size,
    }
    for name in REWARDS:
        call_ms = 1000 * statistics.median(small_calls[name])
        figures[name] = {
            "sentences_per_s": speeds[name],
            "speedup_vs_sacrebleu_loop": speeds[name] / loop,
            "small_batch_sentences_per_s": small_speeds[name],
            "small_batch_speedup_vs_sacrebleu_loop": small_speeds[name] / small_loop,
            "call_ms_on_update_batch": call_ms,
            "share_of_mixer_update": call_ms / mixer_update_ms,
        }
    return figures


# ---------------------------------------------------------------- 3. peak memory


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if it can't."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes(resettable: bool) -> int:
    if resettable:
        status = Path("/proc/self/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_method(device: str, mmap_threshold_pinned: bool) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated over the updates, minus the memory allocated before"
    pinned = ", glibc's mmap threshold pinned at 128 KiB" if mmap_threshold_pinned else ""
    if Path("/proc/self/clear_refs").exists():
        return (
            "growth of the process's peak RSS (VmHWM, reset via /proc/self/clear_refs) over "
            "its RSS after building the model, loading the batches and the compiled rewards, "
            f"one child per method{pinned}"
        )
    return f"growth of ru_maxrss over the updates, one child process per method{pinned}"


def pin_mmap_threshold() -> bool:
    """Pins glibc's mmap threshold at its initial 128 KiB; False where the C library has no
    `mallopt` (not glibc).

    glibc raises the threshold whenever a block above it is freed; later blocks of that size
    then come from the heap and stay resident after they are freed, so the peak RSS moved
    from run to run with the order of earlier frees (docs/performance.md). Pinned, every
    tensor over 128 KiB is mapped on its own and returned when freed, and the peak follows
    the memory in use.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def resident_bytes() -> int:
    """The process's resident set now (VmRSS; 0 where /proc is missing)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def load_compiled_rewards(device: str) -> int:
    """Loads the compiled rewards with one tiny call of MIXER's; returns the growth of the
    resident set it caused on the CPU (0 on CUDA, where the memory measured is the device's).
    A process loads them once (numba's compiler comes with them), like the model it builds:
    not a cost of any update."""
    if not reward_base.COMPILED_ON_CPU:
        return 0
    before = resident_bytes()
    get_reward(REWARDS[0])([[4, 5]], [[4, 5]])
    return resident_bytes() - before if device == "cpu" else 0


def peak_memory_of_updates(job: Job, method: str) -> tuple[float, int, bool]:
    """(peak memory growth (bytes) of `memory_updates` updates, growth of the resident set
    when the compiled rewards were loaded before them, whether glibc's mmap threshold was
    pinned); runs in a fresh child."""
    pinned = job.device == "cpu" and pin_mmap_threshold()
    prepare_process(job.threads)
    bench = build_bench(job)
    kernel_load = load_compiled_rewards(job.device)
    if job.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        resettable = reset_peak_rss()
        before = peak_rss_bytes(resettable)
    for number in range(job.settings.memory_updates):
        update(bench, method, bench.batches[number % len(bench.batches)], number)
    if job.device == "cuda":
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - before), kernel_load, pinned
    return float(peak_rss_bytes(resettable) - before), kernel_load, pinned


def start_memory_workers() -> multiprocessing.context.BaseContext:
    """A fork server that imports torch and fairseq once, started now.

    Every memory child is forked from it: a fresh heap that no earlier measurement touched,
    without paying fairseq's import (about 10 s here) for each child. The modules are named
    because Python 3.11's fork server does not preload "__main__" itself.

    The server is a new `python -c` process, which puts the current folder first on its
    sys.path and does not take this process's: run from a checkout's root with PYTHONPATH
    naming another copy of the plugin, it imported the checkout's. PYTHONSAFEPATH keeps the
    folder off, so it finds the plugin where this process found it.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORK_SERVER_MODULES))
    with mock.patch.dict(os.environ, {"PYTHONSAFEPATH": "1"}):
        multiprocessing.forkserver.ensure_running()
    return context


def memory_child(connection, job: Job, method: str, plugin: str) -> None:
    """Child entry point: sends the peak growth, or the error it met, to the parent.

    `plugin` is the folder the parent imported fairseq_mixer from; the child refuses to
    measure another."""
    try:
        if USER_DIR != plugin:
            raise RuntimeError(
                f"the memory child imported fairseq_mixer from {USER_DIR}, the bench from {plugin}"
            )
        connection.send(peak_memory_of_updates(job, method))
    except Exception:  # the parent raises it, with this traceback
        trace = traceback.format_exc()
        connection.send(RuntimeError(f"memory child {job.arch}/{method}:\n{trace}"))
    finally:
        connection.close()


def memory_in_child(
    context: multiprocessing.context.BaseContext, job: Job, method: str
) -> tuple[float, int, bool]:
    """(peak memory growth, compiled rewards' load) in bytes of one method's updates, and
    whether the mmap threshold was pinned, measured in a fresh child (see
    `peak_memory_of_updates`).

    One child at a time, with the threads of the timed runs: two side by side would share
    the cores and stall each other's thread pools.
    """
    receiver, sender = context.Pipe(duplex=False)
    name = f"{job.arch}-{method}"
    arguments = (sender, job, method, USER_DIR)
    process = context.Process(target=memory_child, args=arguments, name=name)
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = RuntimeError(f"memory child {name} died")
    process.join()
    if isinstance(result, Exception):
        raise result
    return result


def measure_memory(context: multiprocessing.context.BaseContext, jobs: dict[str, Job]) -> dict:
    """Peak memory growth per architecture and method, each in its own child process."""
    device = next(iter(jobs.values())).device
    figures: dict[str, Any] = {}
    pinned = []
    for arch, job in jobs.items():
        progress(f"peak memory, {arch}: one child process per method")
        measured = {method: memory_in_child(context, job, method) for method in METHODS}
        (mixer, kernel_load, _), (xent, _, _) = measured["mixer"], measured["xent"]
        pinned += [child_pinned for *_, child_pinned in measured.values()]
        figures[arch] = {
            "mixer_mib": mixer / MIB,
            "xent_mib": xent / MIB,
            "ratio": mixer / xent if xent > 0 else float("inf"),
            "compiled_rewards_load_mib": kernel_load / MIB,
        }
    figures["mmap_threshold_pinned"] = all(pinned)
    figures["method"] = memory_method(device, all(pinned))
    return figures


# ---------------------------------------------------------------- 4. decoding


def decode(bench: Bench, generator, batch: dict) -> tuple[float, int]:
    """(seconds, tokens of the best hypotheses) of decoding one batch."""
    elapsed, hypotheses = timed(
        bench.device, lambda: bench.task.inference_step(generator, [bench.model], batch)
    )
    return elapsed, sum(len(best[0]["tokens"]) for best in hypotheses)


def time_decoding(bench: Bench, data: Path, settings: Settings) -> dict:
    """Sentences per second of greedy and beam-10 search, alternating batch by batch.

    Greedy is what `--task mixer` builds for beam 1 (the plugin's greedy decoder); fairseq's
    own SequenceGenerator at beam 1 is timed beside it for reference.
    """
    split = decoding_split(data)
    batches = load_batches(
        bench.task, split, settings.decode_batch_size, settings.decode_batches, bench.device
    )
    beams = {"greedy": 1, f"beam{BEAM}": BEAM, "greedy_sequence_generator": 1}
    lengths = {"max_len_a": DECODE_MAX_LEN_A, "max_len_b": DECODE_MAX_LEN_B}
    generators = {
        name: bench.task.build_generator([bench.model], Namespace(beam=beam, **lengths))
        for name, beam in beams.items()
    }
    generators["greedy_sequence_generator"] = TranslationTask.build_generator(
        bench.task, [bench.model], Namespace(beam=1, **lengths)
    )
    seconds = dict.fromkeys(beams, 0.0)
    tokens = dict.fromkeys(beams, 0)
    bench.model.eval()
    for generator in generators.values():  # warm-up: first-call costs are not decoding speed
        decode(bench, generator, batches[0])
    for number, batch in enumerate(batches):
        order = list(beams) if number % 2 == 0 else list(beams)[::-1]
        for name in order:
            elapsed, hypothesis_tokens = decode(bench, generators[name], batch)
            seconds[name] += elapsed
            tokens[name] += hypothesis_tokens
    bench.model.train()
    sentences = sum(batch["nsentences"] for batch in batches)
    figures: dict[str, Any] = {"split": split, "sentences": sentences}
    for name in beams:
        figures[name] = {
            "sentences_per_s": sentences / seconds[name],
            "mean_hypothesis_tokens": tokens[name] / sentences,
        }
    figures["greedy_speedup"] = seconds[f"beam{BEAM}"] / seconds["greedy"]
    figures["sequence_generator_greedy_speedup"] = (
        seconds[f"beam{BEAM}"] / seconds["greedy_sequence_generator"]
    )
    return figures


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Target:
    """A figure and the bound it should meet (at most `limit`, or at least it)."""

    name: str
    measured: float
    limit: float
    at_most: bool

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def bound(self, unit: str = "x", scale: float = 1.0) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit * scale:g}{unit}"

    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


def targets_of(results: dict, device: str) -> dict[str, Target]:
    """Every target of issue 4, keyed by a short id."""
    found = {}
    for arch in ARCHS:
        found[f"update_{arch}"] = Target(
            f"MIXER/XENT update time, {arch}",
            results["update"][arch]["ratio"],
            UPDATE_RATIO_LIMIT[device],
            at_most=True,
        )
        found[f"memory_{arch}"] = Target(
            f"MIXER/XENT peak memory, {arch}",
            results["memory"][arch]["ratio"],
            MEMORY_RATIO_LIMIT,
            at_most=True,
        )
    for name in REWARDS:
        reward = results["reward"][name]
        found[f"reward_speedup_{name}"] = Target(
            f"{name} speed / sacrebleu loop",
            reward["speedup_vs_sacrebleu_loop"],
            REWARD_SPEEDUP_LIMIT,
            at_most=False,
        )
        found[f"reward_share_{name}"] = Target(
            f"{name} share of a MIXER update",
            reward["share_of_mixer_update"],
            REWARD_SHARE_LIMIT,
            at_most=True,
        )
    found["decoding"] = Target(
        f"greedy / beam {BEAM} decoding speed",
        results["decoding"]["greedy_speedup"],
        DECODE_SPEEDUP_LIMIT,
        at_most=False,
    )
    return found


Row = tuple[str, str, str, str]


def update_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    rows = []
    for arch in ARCHS:
        figures, target = results["update"][arch], targets[f"update_{arch}"]
        measured = (
            f"{figures['mixer_ms']:.1f} / {figures['xent_ms']:.1f} ms = {target.measured:.2f}x"
        )
        rows.append((f"update, {arch}: MIXER / XENT", measured, target.bound(), target.verdict()))
    for arch in ARCHS:
        training = results["pretraining"][arch]
        loss = f"{training['first_loss']:.2f} -> {training['last_loss']:.2f} bits/token"
        label = f"  {arch}: XENT loss over {training['updates']} training updates"
        rows.append((label, loss, "", ""))
    for arch, graph in (results["graph_loop"] or {}).items():
        rows.append((
            f"  {arch}: sentences the CUDA-graph loop samples as the launch-bound loop",
            f"{graph['same']} of {graph['sentences']}", "", "",
        ))  # fmt: skip
    for arch in ARCHS:
        update_figures = results["update"][arch]
        sampled = update_figures["sampled_tokens_per_update"]
        reference = update_figures["reference_tokens_per_update"]
        rows.append((
            f"  {arch}: sampled / reference tokens per MIXER update",
            f"{sampled:.0f} / {reference:.0f}", "", "",
        ))  # fmt: skip
    steps = results["decoder_steps"]
    rows.append((
        f"  LSTM: decoder steps over the {steps['batches']} batches: MIXER / XENT",
        f"{steps['mixer']} / {steps['xent']} = {steps['mixer'] / steps['xent']:.2f}x", "", "",
    ))  # fmt: skip
    for arch in ARCHS:
        for name, label in MIXER_PHASES.items():
            phase = results["phases"][arch][name]
            if phase["ms_per_update"] == 0:
                continue  # a phase of the other rollout
            measured = f"{phase['ms_per_update']:.1f} ms ({100 * phase['share']:.0f}%)"
            rows.append((f"  {arch} MIXER update: {label}", measured, "", ""))
        xent = results["phases"][arch]["xent_ms_per_update"]
        measured = " / ".join(f"{xent[name]:.1f}" for name in XENT_PHASES) + " ms"
        rows.append((f"  {arch} XENT update: {' / '.join(XENT_PHASES)}", measured, "", ""))
    return rows


def reward_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    rewards = results["reward"]
    loop = rewards["sacrebleu_loop"]
    batch, small = rewards["batch_size"], rewards["small_batch_size"]
    rows = [(
        f"reward: sacrebleu.sentence_bleu loop, batches of {batch} / {small}",
        f"{loop['sentences_per_s']:,.0f} / {loop['small_batch_sentences_per_s']:,.0f} sent/s",
        "", "",
    )]  # fmt: skip
    mixer_ms = results["update"]["lstm"]["mixer_ms"]
    for name in REWARDS:
        reward = rewards[name]
        speed, share = targets[f"reward_speedup_{name}"], targets[f"reward_share_{name}"]
        rows.append((
            f"reward: {name} speed, batches of {batch}",
            f"{reward['sentences_per_s']:,.0f} sent/s = {speed.measured:.1f}x loop",
            speed.bound(), speed.verdict(),
        ))  # fmt: skip
        rows.append((
            f"  {name} speed, batches of {small}",
            f"{reward['small_batch_sentences_per_s']:,.0f} sent/s "
            f"= {reward['small_batch_speedup_vs_sacrebleu_loop']:.1f}x loop",
            "", "",
        ))  # fmt: skip
        rows.append((
            f"  {name} share of an LSTM MIXER update",
            f"{reward['call_ms_on_update_batch']:.2f} / {mixer_ms:.1f} ms "
            f"= {100 * share.measured:.2f}%",
            share.bound("%", 100), share.verdict(),
        ))  # fmt: skip
    return rows


def memory_and_decoding_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    rows = []
    for arch in ARCHS:
        memory, target = results["memory"][arch], targets[f"memory_{arch}"]
        measured = (
            f"{memory['mixer_mib']:.1f} / {memory['xent_mib']:.1f} MiB = {target.measured:.2f}x"
        )
        rows.append(
            (f"peak memory, {arch}: MIXER / XENT", measured, target.bound(), target.verdict())
        )
        if memory["compiled_rewards_load_mib"]:
            rows.append((
                "  compiled rewards, loaded once per process before the updates",
                f"{memory['compiled_rewards_load_mib']:.1f} MiB", "", "",
            ))  # fmt: skip
    decoding, target = results["decoding"], targets["decoding"]
    greedy, beam = decoding["greedy"], decoding[f"beam{BEAM}"]
    measured = (
        f"{greedy['sentences_per_s']:.0f} / {beam['sentences_per_s']:.0f} sent/s "
        f"= {target.measured:.1f}x"
    )
    rows.append(
        (f"decoding, LSTM: greedy / beam {BEAM}", measured, target.bound(), target.verdict())
    )
    lengths = f"{greedy['mean_hypothesis_tokens']:.1f} / {beam['mean_hypothesis_tokens']:.1f}"
    rows.append(("  mean hypothesis tokens: greedy / beam", lengths, "", ""))
    stock = decoding["greedy_sequence_generator"]
    rows.append((
        "  greedy with fairseq's SequenceGenerator / beam 10",
        f"{stock['sentences_per_s']:.0f} sent/s = "
        f"{decoding['sequence_generator_greedy_speedup']:.1f}x",
        "", "",
    ))  # fmt: skip
    return rows


def format_table(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "result")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def environment(args: argparse.Namespace, settings: Settings, data: str) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": settings.mode,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": fairseq.__version__,
        "fairseq_mixer": USER_DIR,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": data,
        "settings": asdict(settings),
        "models": ARCH_LABELS,
        "mixer_flags": " ".join(mixer_flags(args.rollout, args.stage_s)),
        "prefill": args.prefill,
        "teacher_forced": args.teacher_forced,
        "transformer_step": args.transformer_step,
        "lstm_step": args.lstm_step,
        "cuda_loop": args.cuda_loop,
        "reward_counts": args.reward_counts,
        "xent_flags": " ".join(XENT_FLAGS),
        "optimizer": f"SGD lr {LEARNING_RATE}, gradient norm clipped at {CLIP_NORM}",
        "pretraining": f"XENT with Adam, lr {PRETRAIN_LEARNING_RATE}",
        "decoding": f"max_len_a {DECODE_MAX_LEN_A}, max_len_b {DECODE_MAX_LEN_B}",
    }


# ---------------------------------------------------------------- main


def trained_benches(jobs: dict[str, Job], scratch: Path) -> tuple[dict, dict, dict]:
    """(benches, jobs whose children load the trained weights, training figures)."""
    benches, trained_jobs, training = {}, {}, {}
    for arch, job in jobs.items():
        progress(f"brief XENT training, {arch}: {job.settings.pretrain_updates} updates")
        bench = build_bench(job)
        updates = job.settings.pretrain_updates
        training[arch] = pretrain(bench, updates, PRETRAIN_LEARNING_RATE[arch])
        state = scratch / f"{arch}.pt"
        torch.save(bench.model.state_dict(), state)
        benches[arch], trained_jobs[arch] = bench, replace(job, model_state=state)
    return benches, trained_jobs, training


def measure(
    args: argparse.Namespace, settings: Settings, data: Path, scratch: Path, memory_context
) -> dict:
    """All four measurements, on briefly trained models; memory before the timings, so that
    its children never overlap one."""
    jobs = {
        arch: replace(
            make_job(data, arch, settings, args.device, args.threads, args.rollout, args.stage_s),
            prefill=args.prefill == "on",
            packed_teacher_forced=args.teacher_forced == "packed",
            lean_transformer_step=args.transformer_step == "lean",
            lean_lstm_step=args.lstm_step == "lean",
            launch_bound_on_cuda=args.cuda_loop != "synchronising",
            cuda_graphs=args.cuda_loop == "graph",
            compiled_rewards=args.reward_counts == "compiled",
        )
        for arch in ARCHS
    }
    benches, jobs, training = trained_benches(jobs, scratch)
    memory = measure_memory(memory_context, jobs)
    prepare_process(args.threads)
    updates = {}
    for arch, bench in benches.items():
        progress(f"update times, {arch}")
        updates[arch] = time_updates(bench, settings)
    lstm = benches["lstm"]
    progress("phases of a MIXER update, rewards, decoding")
    graph_loop = None
    if args.device == "cuda" and args.cuda_loop == "graph":
        graph_loop = {
            arch: graph_loop_agreement(bench)
            for arch, bench in benches.items()
            if not samples_in_training_pass(bench.model.decoder, args.rollout)
        }
    return {
        "pretraining": training,
        "update": updates,
        "graph_loop": graph_loop,
        "phases": {arch: phase_breakdown(bench, settings) for arch, bench in benches.items()},
        "decoder_steps": decoder_steps(lstm),
        "profile": profile_operators(lstm, settings.warmup_pairs + settings.timed_pairs),
        "reward": time_rewards(lstm, settings, updates["lstm"]["mixer_ms"]),
        "memory": memory,
        "decoding": time_decoding(lstm, data, settings),
    }


def prepare_data(args: argparse.Namespace, settings: Settings, scratch: Path):
    """(data folder, label, memory-worker context); the fork server starts while data is made."""
    if args.data is not None:
        return args.data, str(args.data), start_memory_workers()
    progress("making synthetic data")
    maker = start_synthetic_data(scratch, settings.synthetic_sizes)
    memory_context = start_memory_workers()
    data = finish_synthetic_data(maker, scratch)
    train, valid, test = settings.synthetic_sizes
    label = f"synthetic (data_prep.synthetic --train {train} --valid {valid} --test {test})"
    return data, label, memory_context


def run(args: argparse.Namespace) -> tuple[dict, dict[str, Target]]:
    settings = QUICK if args.quick else FULL
    prepare_process(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mixer-bench-") as scratch:
        data, label, memory_context = prepare_data(args, settings, Path(scratch))
        results = measure(args, settings, data, Path(scratch), memory_context)
    results["environment"] = environment(args, settings, label)
    results["environment"]["load_average_1min"] = {
        "start": load_before[0],
        "end": os.getloadavg()[0],
    }
    targets = targets_of(results, args.device)
    results["targets"] = {key: {**asdict(t), "passed": t.passed} for key, t in targets.items()}
    return results, targets


def busy_machine(load: dict[str, float], threads: int) -> bool:
    """True when other work used the cores this run wanted (the end value includes this run)."""
    cores = os.cpu_count() or 1
    return load["start"] > cores - threads + 1.0 or load["end"] > cores + 1.0


def report(results: dict, targets: dict[str, Target], args: argparse.Namespace) -> None:
    """The table, the verdict count, the time taken and, last, the LSTM update-time ratio."""
    rows = update_rows(results, targets) + reward_rows(results, targets)
    rows += memory_and_decoding_rows(results, targets)
    print(format_table(rows))
    print(f"memory: {results['memory']['method']}")
    passed = sum(target.passed for target in targets.values())
    print(f"targets: {passed} of {len(targets)} pass")
    environment = results["environment"]
    print(
        f"{environment['mode']} mode on {args.device}, {args.threads} threads, rollout "
        f"{args.rollout}, transformer step {args.transformer_step}, lstm step {args.lstm_step}, "
        f"cuda loop {args.cuda_loop}, prefill {args.prefill}, teacher-forced pass "
        f"{args.teacher_forced}, reward counts {args.reward_counts}, load average "
        f"{environment['load_average_1min']['start']:.1f} -> "
        f"{environment['load_average_1min']['end']:.1f}: took {results['seconds']:.0f} s "
        f"(after imports); results in {args.json}"
    )
    if busy_machine(environment["load_average_1min"], args.threads):
        advice = "a quiet machine is steadier" + (", or --threads 1" if args.threads > 1 else "")
        print(
            f"warning: other work shared the cores during the run, so timings are noisy ({advice})"
        )
    print(f"mixer/xent update time ratio: {results['update']['lstm']['ratio']:.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results, targets = run(args)
    results["seconds"] = time.perf_counter() - started
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    report(results, targets, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
