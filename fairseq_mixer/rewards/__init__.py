"""Batched sentence-level rewards for MIXER (torch only; no fairseq import).

Usage: ``reward = get_reward("mixer_bleu", pad=1, eos=2, unk=3)`` then
``reward(hyps, refs, start=None)`` -> float tensor [B] with values in [0, 1].
"""

from __future__ import annotations

from typing import Any

from .base import Reward
from .bleu import MixerBleu, SentenceBleu
from .rouge import Rouge2, RougeL

_REGISTRY: dict[str, type[Reward]] = {
    cls.name: cls for cls in (MixerBleu, SentenceBleu, Rouge2, RougeL)
}

#: Names accepted by :func:`get_reward`, in a stable order (for command-line choices).
REWARD_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_reward(name: str, **options: Any) -> Reward:
    """Builds the reward called ``name``; ``options`` are pad, eos, unk and reward options."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(REWARD_NAMES)}")
    cls = _REGISTRY[name]
    valid = cls.option_names()
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for reward {name!r}; "
            f"valid options: {', '.join(valid)}"
        )
    return cls(**options)


__all__ = ["REWARD_NAMES", "MixerBleu", "Reward", "Rouge2", "RougeL", "SentenceBleu", "get_reward"]
