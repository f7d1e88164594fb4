"""3. The peak memory of each method's updates, each method in a fresh child process.

On the CPU the figure is the growth of the child's peak resident set over its updates, with
glibc's mmap threshold pinned; on CUDA, torch's peak allocation.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from fairseq_mixer.rewards import get_reward

from .methods import REFERENCE
from .rewards import REWARDS, compiled_rewards
from .setup import USER_DIR, Job, build_bench, prepare_process, progress
from .training import update

MIB = 2**20
M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial threshold
FORK_SERVER_MODULES = ("torch", "numpy", "sacrebleu", "fairseq.options", "fairseq_mixer")
Measured = tuple[float, int, bool]  # peak growth, compiled rewards' load (bytes), pinned


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if it can't."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes(resettable: bool) -> int:
    """The process's peak resident set: since the last reset where it can be reset."""
    if resettable:
        status = Path("/proc/self/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_method(device: str, mmap_threshold_pinned: bool) -> str:
    """How the figures were taken, in words, for the report."""
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
    if not compiled_rewards():
        return 0
    before = resident_bytes()
    get_reward(REWARDS[0])([[4, 5]], [[4, 5]])
    return resident_bytes() - before if device == "cpu" else 0


def peak_memory_of_updates(job: Job, method: str) -> Measured:
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


def memory_child(connection: Any, job: Job, method: str, plugin: str) -> None:
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
) -> Measured:
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
    """Peak memory growth per architecture and method, each in its own child process.

    `ratio` is MIXER's over XENT's (the target); `ratios` every method's over XENT's.
    """
    device = next(iter(jobs.values())).device
    figures: dict[str, Any] = {}
    pinned = []
    for arch, job in jobs.items():
        progress(f"peak memory, {arch}: one child process per method")
        names = [method.name for method in job.methods]
        measured = {name: memory_in_child(context, job, name) for name in names}
        pinned += [child_pinned for *_, child_pinned in measured.values()]
        peaks = {name: peak for name, (peak, _, _) in measured.items()}
        reference = peaks[REFERENCE]

        def ratio(peak: float, reference: float = reference) -> float:
            return peak / reference if reference > 0 else float("inf")

        figures[arch] = {
            **{f"{name}_mib": peak / MIB for name, peak in peaks.items()},
            "ratio": ratio(peaks["mixer"]),
            "ratios": {name: ratio(peak) for name, peak in peaks.items() if name != REFERENCE},
            "compiled_rewards_load_mib": measured["mixer"][1] / MIB,
        }
    figures["mmap_threshold_pinned"] = all(pinned)
    figures["method"] = memory_method(device, all(pinned))
    return figures
