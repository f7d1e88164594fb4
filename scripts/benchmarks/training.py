"""One training update of any method, and the brief XENT training before any measurement."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from fairseq import utils

from .setup import SEED, Bench, Job, build_bench, progress
from .timing import untimed

CLIP_NORM = 10.0
# The brief XENT training before any measurement (Adam; the transformer, without warm-up,
# needs a smaller step).
PRETRAIN_LEARNING_RATE = {"lstm": 3e-3, "transformer": 5e-4}


def update(
    bench: Bench, method: str, batch: dict, number: int,
    phase: Callable[[str], contextlib.AbstractContextManager] = untimed,
) -> dict:  # fmt: skip
    """One training update: criterion forward, backward, clipping, SGD step.

    `number` seeds MIXER's sampling; `phase(name)` may time the forward, backward and step.
    """
    criterion = bench.criteria[method]
    before_update = bench.methods[method].before_update
    if before_update is not None:
        before_update(criterion, bench.task, number)
    bench.optimizer.zero_grad(set_to_none=True)
    with phase("forward"):
        loss, _, log = criterion(bench.model, batch)
    with phase("backward"):
        loss.backward()
    with phase("step"):
        torch.nn.utils.clip_grad_norm_(bench.model.parameters(), CLIP_NORM)
        bench.optimizer.step()
    return log


def rotated_order(names: list[str], number: int) -> list[str]:
    """The methods starting with a different one each time: none always runs on a warmer
    cache (for two: mixer, xent then xent, mixer)."""
    shift = number % len(names)
    return names[shift:] + names[:shift]


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
