"""What MIXER costs next to label-smoothed cross-entropy (XENT), measured in one run.

On the same batches, models and machine, the methods alternated so that machine noise hits
them alike, it measures (one module of scripts/benchmarks/ each):

1. update_cost: the wall time of one update (forward, backward, SGD step) of the `mixer`
   criterion in a mixed stage with s = 1 (or --stage-s) against
   `label_smoothed_cross_entropy`, for a paper-like LSTM and a small transformer, and where
   the time of a MIXER update goes; both models are first trained briefly with XENT, so that
   their samples end with EOS as a real model's do;
2. rewards: the speed of the batched rewards against a Python loop over
   `sacrebleu.sentence_bleu`, on batches of a real MIXER batch's size, and a reward call's
   share of a MIXER update;
3. memory: the peak memory of MIXER updates against XENT updates, each in a fresh child;
4. decoding: greedy decoding (beam 1) against beam 10 with fairseq's SequenceGenerator;

then checks the targets of issue 4 (benchmarks/targets.py).

Usage: .venv/bin/python scripts/bench.py [--quick] [--json PATH] [--data BIN_DIR]
                                         [--device cpu|cuda] [--threads N]
                                         [--rollout auto|one_pass|two_pass] [--stage-s S]
                                         [--cuda-loop launch_bound|graph]
The last line printed is `mixer/xent update time ratio: <number>` for the LSTM.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from benchmarks import decoding, memory, rewards, update_cost
from benchmarks.graph_loop import graph_loop_agreement
from benchmarks.report import environment, print_report
from benchmarks.setup import (
    ARCHS,
    finish_synthetic_data,
    make_job,
    prepare_process,
    progress,
    start_synthetic_data,
)
from benchmarks.sizes import FULL, QUICK, Settings
from benchmarks.targets import Target, targets_of
from benchmarks.training import trained_benches

from fairseq_mixer.rollout.sampling import ROLLOUTS, samples_in_training_pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's options: sizes, device, and the plugin's options it measures."""
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
        "--stage-s", type=int, default=1,
        help="the mixed stage measured: its first s reference tokens are teacher-forced "
        "(default 1, the most expensive stage)",
    )  # fmt: skip
    parser.add_argument(
        "--cuda-loop", choices=("launch_bound", "graph"), default="launch_bound",
        help="MIXER's no-grad sampling loop on CUDA: launch-bound (the plugin's default), or "
        "graph: the loop of a two-pass rollout (the transformer's; the LSTM's with --rollout "
        "two_pass) replays a CUDA graph of its step, and the bench checks that it samples what "
        "the launch-bound loop does (not yet the plugin's default)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.stage_s < 1:
        parser.error("--stage-s must be >= 1 (s = 0 would be pure REINFORCE, no mixed stage)")
    return args


def measure(
    args: argparse.Namespace,
    settings: Settings,
    data: Path,
    scratch: Path,
    memory_context: multiprocessing.context.BaseContext,
) -> dict:
    """All four measurements, on briefly trained models; memory before the timings, so that
    its children never overlap one."""
    jobs = {
        arch: make_job(
            data,
            arch,
            settings,
            args.device,
            args.threads,
            args.rollout,
            args.stage_s,
            cuda_graphs=args.cuda_loop == "graph",
        )  # fmt: skip
        for arch in ARCHS
    }
    benches, jobs, training = trained_benches(jobs, scratch)
    peaks = memory.measure_memory(memory_context, jobs)
    prepare_process(args.threads)
    updates = {}
    for arch, bench in benches.items():
        progress(f"update times, {arch}")
        updates[arch] = update_cost.time_updates(bench, settings)
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
        "phases": {
            arch: update_cost.phase_breakdown(bench, settings) for arch, bench in benches.items()
        },
        "decoder_steps": update_cost.decoder_steps(lstm),
        "profile": update_cost.profile_operators(
            lstm, settings.warmup_pairs + settings.timed_pairs
        ),
        "reward": rewards.time_rewards(lstm, settings, updates["lstm"]["mixer_ms"]),
        "memory": peaks,
        "decoding": decoding.time_decoding(lstm, data, settings),
    }


def prepare_data(
    args: argparse.Namespace, settings: Settings, scratch: Path
) -> tuple[Path, str, multiprocessing.context.BaseContext]:
    """(data folder, label, memory-worker context); the fork server starts while data is made."""
    if args.data is not None:
        return args.data, str(args.data), memory.start_memory_workers()
    progress("making synthetic data")
    maker = start_synthetic_data(scratch, settings.synthetic_sizes)
    memory_context = memory.start_memory_workers()
    data = finish_synthetic_data(maker, scratch)
    train, valid, test = settings.synthetic_sizes
    label = f"synthetic (data_prep.synthetic --train {train} --valid {valid} --test {test})"
    return data, label, memory_context


def run(args: argparse.Namespace) -> tuple[dict, dict[str, Target]]:
    """Every figure, the environment they were taken in, and the targets checked."""
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results, targets = run(args)
    results["seconds"] = time.perf_counter() - started
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results, targets, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
