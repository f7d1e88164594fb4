"""DAD's teacher-forcing probability eps: the decays of Bengio et al. (2015), in updates.

At every target step the decoder is fed the reference token with probability eps, its own
prediction otherwise. eps is a pure function of the update number, so the task recomputes
it after a resume. The fourth schedule, `mixer`, has no eps: the first s inputs are the
reference and the rest the model's, s taken from MIXER's stages (schedule.py).
"""

from __future__ import annotations

import math

DECAYS = ("inverse_sigmoid", "linear", "exponential", "mixer")

#: k where --dad-k is not given: eps starts near 1 and reaches about 0.5 after ~7,000
#: updates (inverse sigmoid), 1 - 1e-4 * updates (linear) or 0.9997 ** updates (exponential).
DEFAULT_K = {"inverse_sigmoid": 1000.0, "linear": 1.0, "exponential": 0.9997, "mixer": None}


def check_decay_options(decay: str, k: float | None, slope: float, min_eps: float) -> None:
    """Raise ValueError naming the first impossible option."""
    if decay not in DECAYS:
        raise ValueError(f"--dad-schedule must be one of {DECAYS} (got {decay!r})")
    if decay == "mixer":
        if k is not None:
            raise ValueError("--dad-k has no meaning with --dad-schedule mixer (s sets the mix)")
        return
    k = DEFAULT_K[decay] if k is None else k
    if decay == "inverse_sigmoid" and k < 1.0:
        raise ValueError(f"--dad-schedule inverse_sigmoid needs --dad-k >= 1 (got {k})")
    if decay == "exponential" and not 0.0 < k < 1.0:
        raise ValueError(f"--dad-schedule exponential needs 0 < --dad-k < 1 (got {k})")
    if decay == "linear":
        if not 0.0 < k <= 1.0:
            raise ValueError(f"--dad-schedule linear needs 0 < --dad-k <= 1 (got {k})")
        if slope <= 0.0:
            raise ValueError(f"--dad-linear-slope must be > 0 (got {slope})")
    if not 0.0 <= min_eps <= 1.0:
        raise ValueError(f"--dad-min-eps must lie in [0, 1] (got {min_eps})")


def reference_probability(
    updates: int, decay: str, k: float | None, slope: float, min_eps: float
) -> float:
    """eps after `updates` updates (0 before the first): the probability of feeding the
    reference token; never below `min_eps`. Undefined (1.0) for the `mixer` schedule."""
    if decay == "mixer":
        return 1.0
    k = DEFAULT_K[decay] if k is None else k
    if decay == "linear":
        eps = k - slope * updates
    elif decay == "exponential":
        eps = k**updates
    else:
        eps = k / (k + math.exp(min(updates / k, 700.0)))
    return max(min_eps, eps)
