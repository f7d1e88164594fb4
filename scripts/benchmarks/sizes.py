"""How much each measurement does: the quick sizes (under 2 minutes) and the full ones."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench run."""

    mode: str
    pretrain_updates: int
    batch_size: int
    batches: int
    warmup_pairs: int
    timed_pairs: int
    phase_updates: int
    memory_updates: int
    reward_rounds: int
    reward_batch_size: int
    reward_batches: int
    decode_batch_size: int
    decode_batches: int
    synthetic_sizes: tuple[int, int, int]


QUICK = Settings(
    mode="quick",
    pretrain_updates=80,
    batch_size=32,
    batches=4,
    warmup_pairs=2,
    timed_pairs=8,
    phase_updates=3,
    memory_updates=3,
    reward_rounds=5,
    reward_batch_size=256,
    reward_batches=2,
    decode_batch_size=128,
    decode_batches=2,
    synthetic_sizes=(2000, 32, 256),
)
FULL = Settings(
    mode="full",
    pretrain_updates=400,
    batch_size=32,
    batches=16,
    warmup_pairs=5,
    timed_pairs=40,
    phase_updates=10,
    memory_updates=10,
    reward_rounds=20,
    reward_batch_size=256,
    reward_batches=8,
    decode_batch_size=128,
    decode_batches=4,
    synthetic_sizes=(4000, 200, 512),
)
