"""Batched sentence-level rewards for MIXER (torch only; no fairseq import).

Usage: ``reward = get_reward("mixer_bleu", pad=1, eos=2, unk=3)`` then
``reward(hyps, refs, start=None)`` -> float tensor [B] with values in [0, 1].

Given the target dictionary's ``symbols`` (and a :class:`TextForm`), a reward scores the
decoded text instead of the ids (:mod:`.text_rewards`): ``get_reward("chrf", symbols=...)``.
"""

from __future__ import annotations

from typing import Any

from .base import Reward
from .bleu import MixerBleu, SentenceBleu
from .rouge import Rouge2, RougeL
from .text import TextForm
from .text_rewards import TEXT_REWARDS, TextReward, get_text_reward

_REGISTRY: dict[str, type[Reward]] = {
    cls.name: cls for cls in (MixerBleu, SentenceBleu, Rouge2, RougeL)
}

#: Rewards of token ids, in a stable order; each one also scores text, given ``symbols``.
REWARD_NAMES: tuple[str, ...] = tuple(_REGISTRY)
#: Rewards that only exist on text (they need ``symbols``).
TEXT_ONLY_REWARDS: tuple[str, ...] = tuple(name for name in TEXT_REWARDS if name not in _REGISTRY)
#: Every name :func:`get_reward` accepts (for command-line choices).
ALL_REWARD_NAMES: tuple[str, ...] = (*REWARD_NAMES, *TEXT_ONLY_REWARDS)


def get_reward(name: str, **options: Any) -> Reward:
    """Builds the reward called ``name``; ``options`` are pad, eos, unk and reward options.

    With ``symbols`` (the target dictionary's strings) the reward scores text
    (:func:`.get_text_reward`); a text-only reward (chrf) needs them.
    """
    if name not in ALL_REWARD_NAMES:
        raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(ALL_REWARD_NAMES)}")
    if "symbols" in options or "text" in options:
        return get_text_reward(name, **options)
    if name in TEXT_ONLY_REWARDS:
        raise ValueError(
            f"reward {name!r} scores text: give the target dictionary's symbols (symbols=...)"
        )
    return _REGISTRY[name].with_options(f"reward {name!r}", **options)


__all__ = [
    "ALL_REWARD_NAMES",
    "REWARD_NAMES",
    "TEXT_ONLY_REWARDS",
    "MixerBleu",
    "Reward",
    "Rouge2",
    "RougeL",
    "SentenceBleu",
    "TextForm",
    "TextReward",
    "get_reward",
    "get_text_reward",
]
