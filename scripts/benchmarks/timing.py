"""Wall time on a device: the queue drained on both sides of what is timed."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch


def synchronize(device: str) -> None:
    """Waits for the device's queue (CUDA); nothing to wait for on the CPU."""
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
    """A phase nobody watches."""
    return contextlib.nullcontext()


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
        """`function`, its calls counted in phase `name`."""

        def watched(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return watched
