"""1. What an update of each method costs next to an XENT update, and where MIXER's time goes.

Every method of `methods.methods()` is timed on the same batches and model, the methods
rotated update by update so that machine noise hits all alike.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
from collections import defaultdict
from collections.abc import Callable
from unittest import mock

import torch

import fairseq_mixer.criterions.mixer as mixer_criterion_module

from .methods import REFERENCE
from .setup import Bench
from .sizes import Settings
from .timing import PhaseClock, timed
from .training import rotated_order, update

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
XENT_PHASES = ("forward", "backward", "step")


def time_updates(bench: Bench, settings: Settings) -> dict:
    """Median update time of each method, the methods rotated update by update.

    `ratio` is MIXER's time over XENT's (the target); `ratios` every method's over XENT's.
    """
    names = list(bench.methods)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    sampled_tokens, target_tokens = [], []
    for pair in range(settings.warmup_pairs + settings.timed_pairs):
        batch = bench.batches[pair % len(bench.batches)]
        for name in rotated_order(names, pair):
            elapsed, log = timed(bench.device, functools.partial(update, bench, name, batch, pair))
            if pair < settings.warmup_pairs:
                continue
            seconds[name].append(elapsed)
            if name == "mixer":
                sampled_tokens.append(float(log["rl_tokens"]))
                target_tokens.append(float(log["ntokens"]))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    figures: dict = {}
    for name in names:
        figures[f"{name}_ms"] = 1000 * medians[name]
        figures[f"{name}_ms_each"] = [round(1000 * value, 2) for value in seconds[name]]
    figures["ratio"] = medians["mixer"] / medians[REFERENCE]
    figures["ratios"] = {
        name: medians[name] / medians[REFERENCE] for name in names if name != REFERENCE
    }
    figures["sampled_tokens_per_update"] = statistics.mean(sampled_tokens)
    figures["reference_tokens_per_update"] = statistics.mean(target_tokens)
    return figures


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


def phase_breakdown(bench: Bench, settings: Settings) -> dict:
    """Share of each phase in the summed time of a few watched MIXER updates, and the
    forward, backward and step of as many XENT updates on the same batches, alternated."""
    clock, xent_clock = PhaseClock(bench.device), PhaseClock(bench.device)
    first_number = settings.warmup_pairs + settings.timed_pairs
    for number in range(settings.phase_updates):
        batch = bench.batches[number % len(bench.batches)]
        with watch_mixer_internals(bench, clock):
            update(bench, "mixer", batch, first_number + number, clock.phase)
        update(bench, REFERENCE, batch, first_number + number, xent_clock.phase)
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
