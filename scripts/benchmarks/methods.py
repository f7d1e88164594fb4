"""The training methods the bench sets side by side: each a name and its criterion's flags.

XENT is the reference: every other method's update time and peak memory are reported as a
ratio to it. Adding a method (DAD, E2E) is adding one `Method` to `methods()`: the update
times, the memory children and the report then take it in, beside MIXER.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REFERENCE = "xent"
XENT_FLAGS = ("--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1")
# T = s + 3, Delta = 3, no XENT-only epochs: epoch 1 is the mixed stage with s (by default 1,
# the most expensive stage: every token after the first reference word is sampled).
MIXER_FLAGS = (
    "--criterion", "mixer", "--mixer-delta", "3", "--mixer-xent-epochs", "0",
    "--reward", "mixer_bleu",
)  # fmt: skip


# DAD at eps = 0 (set before every update), its most expensive update: every input after the
# BOS is the model's own draw. E2E follows the task's stage (MIXER's): soft inputs after s.
DAD_FLAGS = ("--criterion", "dad", "--label-smoothing", "0.1")
E2E_FLAGS = ("--criterion", "e2e", "--label-smoothing", "0.1")


@dataclass(frozen=True)
class Method:
    """A criterion as fairseq-train is given it, and what it needs before each update."""

    name: str
    label: str
    flags: tuple[str, ...]
    # called as before_update(criterion, task, number) ahead of every update (module-level,
    # so that a memory child can unpickle it)
    before_update: Callable[[Any, Any, int], None] | None = None


def set_mixer_stage(criterion: Any, task: Any, number: int) -> None:
    """MIXER samples with a generator seeded by the update number, in the task's stage."""
    criterion.set_mixer_stage(task.stage, number)


def set_dad_eps_zero(criterion: Any, task: Any, number: int) -> None:
    """DAD with every input drawn from the model (eps = 0), seeded by the update number."""
    criterion.set_mixer_stage(task.stage, number)
    criterion.set_reference_probability(0.0)


def mixer_flags(rollout: str, stage_s: int) -> tuple[str, ...]:
    """The MIXER criterion's flags for a bench in the mixed stage with `stage_s`."""
    return (*MIXER_FLAGS, "--mixer-unroll-steps", str(stage_s + 3), "--mixer-rollout", rollout)


def methods(rollout: str = "auto", stage_s: int = 1) -> tuple[Method, ...]:
    """The methods measured, MIXER first (the task is built from its flags), XENT last."""
    return (
        Method("mixer", "MIXER", mixer_flags(rollout, stage_s), set_mixer_stage),
        Method("dad", "DAD", DAD_FLAGS, set_dad_eps_zero),
        Method("e2e", "E2E", E2E_FLAGS, set_mixer_stage),
        Method(REFERENCE, "XENT", XENT_FLAGS),
    )
