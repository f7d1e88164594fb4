"""MIXER's schedule (Algorithm 1) and where the sampled part of each sentence begins.

Pure functions of the epoch (or update) number and the reference lengths: the task pushes
their result into the criterion, and a resumed run recomputes the same stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PLACEMENTS = ("absolute", "per_sentence")


@dataclass(frozen=True)
class MixerStage:
    """One stage of Algorithm 1: `s` teacher-forced steps, and the weight of the XENT loss."""

    index: int
    s: int
    xent_weight: float

    @property
    def uses_reinforce(self) -> bool:
        return self.index > 0 and self.xent_weight < 1.0


def check_schedule_options(
    xent_units: int, units_per_stage: int, delta: int, unroll_steps: int, xent_weight: float
) -> None:
    """Raise ValueError naming the first impossible option."""
    if xent_units < 0:
        raise ValueError(f"--mixer-xent-epochs must be >= 0 (got {xent_units})")
    if units_per_stage < 1:
        raise ValueError(f"--mixer-epochs-per-stage must be >= 1 (got {units_per_stage})")
    if delta < 1:
        raise ValueError(f"--mixer-delta must be >= 1 (got {delta})")
    if unroll_steps < 1:
        raise ValueError(f"--mixer-unroll-steps (T) must be >= 1 (got {unroll_steps})")
    if not 0.0 <= xent_weight <= 1.0:
        raise ValueError(f"--mixer-xent-weight must lie in [0, 1] (got {xent_weight})")


def mixer_stage(
    unit: int,
    xent_units: int,
    units_per_stage: int,
    delta: int,
    unroll_steps: int,
    xent_weight: float,
) -> MixerStage:
    """The stage in force during epoch (or update) `unit`, counted from 1.

    Units 1..xent_units train with XENT alone (s = T); after them every `units_per_stage`
    units s drops by `delta`, down to the last value of T, T - delta, ... that is >= 1,
    where training stays.
    """
    if unit <= xent_units:
        return MixerStage(index=0, s=unroll_steps, xent_weight=1.0)
    last_index = (unroll_steps - 1) // delta
    index = 1 + (unit - xent_units - 1) // units_per_stage
    if last_index == 0:
        return MixerStage(index=0, s=unroll_steps, xent_weight=1.0)
    index = min(index, last_index)
    return MixerStage(index=index, s=unroll_steps - index * delta, xent_weight=xent_weight)


def teacher_forced_lengths(
    ref_lengths: torch.Tensor, s: int, unroll_steps: int, placement: str, overlap: int
) -> torch.Tensor:
    """Number of reference tokens fed before sampling starts, per sentence.

    `ref_lengths` count the reference tokens including its final EOS. A sentence whose
    result equals its reference length is entirely teacher-forced (no sampled part).

    - absolute (the release): s counts from the start of every sentence; with `overlap` 1
      the sample starts at step s itself (step s is under both losses).
    - per_sentence (the paper's wording): the last T - s words of each reference are
      sampled, so every sentence gets a sampled part from the first mixed stage on.
    """
    if placement == "absolute":
        prefix = torch.full_like(ref_lengths, max(s - overlap, 0))
    elif placement == "per_sentence":
        words = ref_lengths - 1
        prefix = (words - (unroll_steps - s)).clamp(min=0)
    else:
        raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
    return torch.minimum(prefix, ref_lengths)


def loss_masks(
    prefix_lengths: torch.Tensor,
    ref_lengths: torch.Tensor,
    hyp_lengths: torch.Tensor,
    width: int,
    overlap: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [B, width] masks of the XENT and the REINFORCE positions (0-indexed).

    XENT covers the first prefix + overlap reference tokens; REINFORCE covers the sampled
    tokens (from position prefix up to and including the sampled EOS) of the sentences that
    have a sampled part.
    """
    positions = torch.arange(width, device=prefix_lengths.device).unsqueeze(0)
    xent_end = torch.minimum(prefix_lengths + overlap, ref_lengths).unsqueeze(1)
    sampled = (prefix_lengths < ref_lengths).unsqueeze(1)
    reinforce = (
        (positions >= prefix_lengths.unsqueeze(1))
        & (positions < hyp_lengths.unsqueeze(1))
        & sampled
    )
    return positions < xent_end, reinforce
