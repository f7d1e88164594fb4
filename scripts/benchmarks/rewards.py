"""2. The batched rewards against a Python loop over `sacrebleu.sentence_bleu`.

On batches of a real MIXER batch's size, and a reward call's share of a MIXER update.
"""

from __future__ import annotations

import functools
import random
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sacrebleu
import torch

from fairseq_mixer.rewards import base as reward_base
from fairseq_mixer.rewards import get_reward
from fairseq_mixer.schedule import teacher_forced_lengths

from .setup import SEED, Bench, load_batches
from .sizes import Settings
from .timing import timed

REWARDS = ("mixer_bleu", "sentence_bleu", "rouge2")
KEEP_PROBABILITY = 0.7
MAX_LENGTH_CHANGE = 3


def compiled_rewards() -> bool:
    """Whether the rewards run their compiled kernels here, as the plugin does wherever numba
    imports (else their tensor code)."""
    return reward_base.COMPILED_ON_CPU and reward_base.compiled_kernels_import()


def sampled_like(target: torch.Tensor, dictionary: Any, rng: random.Random) -> torch.Tensor:
    """Hypotheses that look like a partly trained model's samples of these references.

    Each reference word is kept with probability 0.7, else replaced by a random word, and the
    length changes by -3..+3 words; every hypothesis ends with EOS and is right-padded.
    """
    pad, eos = dictionary.pad(), dictionary.eos()
    words = range(dictionary.nspecial, len(dictionary))
    rows = []
    for reference in target.tolist():
        reference = reference[: reference.index(eos)] if eos in reference else reference
        hyp = [w if rng.random() < KEEP_PROBABILITY else rng.choice(words) for w in reference]
        change = rng.randint(-MAX_LENGTH_CHANGE, MAX_LENGTH_CHANGE)
        hyp = hyp[: max(1, len(hyp) + change)] + [rng.choice(words) for _ in range(change)]
        rows.append(hyp + [eos])
    width = max(len(row) for row in rows)
    padded = [row + [pad] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=target.dtype, device=target.device)


def joined_ids(tokens: list[int], pad: int, eos: int) -> str:
    """The ids before the first EOS or pad, joined by spaces (sacrebleu's input)."""
    words = []
    for token in tokens:
        if token in (pad, eos):
            break
        words.append(str(token))
    return " ".join(words)


def sacrebleu_loop(hyps: torch.Tensor, refs: torch.Tensor, pad: int, eos: int) -> list[float]:
    """sacrebleu's sentence BLEU, one Python call per sentence, as a loop-based reward would."""
    return [
        sacrebleu.sentence_bleu(
            joined_ids(hyp, pad, eos), [joined_ids(ref, pad, eos)], tokenize="none"
        ).score
        / 100
        for hyp, ref in zip(hyps.tolist(), refs.tolist(), strict=True)
    ]


def reward_jobs(bench: Bench, hyps: torch.Tensor, refs: torch.Tensor) -> dict[str, Callable]:
    """Each reward, called as the criterion calls it, and the sacrebleu loop, on one batch."""
    dictionary = bench.task.target_dictionary
    pad, eos, unk = dictionary.pad(), dictionary.eos(), dictionary.unk()
    stage, unroll = bench.task.stage, bench.task.cfg.mixer_unroll_steps
    start = teacher_forced_lengths(refs.ne(pad).sum(1), stage.s, unroll, "absolute", 0)
    jobs: dict[str, Callable] = {
        name: functools.partial(
            get_reward(name, pad=pad, eos=eos, unk=unk), hyps, refs, start=start
        )
        for name in REWARDS
    }
    jobs["sacrebleu_loop"] = functools.partial(sacrebleu_loop, hyps, refs, pad, eos)
    return jobs


def time_calls(bench: Bench, pairs: list[tuple], rounds: int) -> dict[str, list[float]]:
    """Seconds of every call, rotating the order of the scorers round by round, after one
    untimed call of each (on the CPU a reward's first call in a process loads its compiled
    kernel, and compiles it where the cache beside the module is missing or stale)."""
    calls: dict[str, list[float]] = defaultdict(list)
    jobs = [reward_jobs(bench, hyps, refs) for hyps, refs in pairs]
    for job in jobs[0].values():
        job()
    for round_number in range(rounds):
        for batch_jobs in jobs:
            names = list(batch_jobs)
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                calls[name].append(timed(bench.device, batch_jobs[name])[0])
    return calls


def reward_speeds(bench: Bench, batches: list[dict], rounds: int) -> tuple[dict, dict]:
    """(sentences per second, seconds of every call) of each scorer on sampled-like
    hypotheses of these batches' references."""
    dictionary = bench.task.target_dictionary
    rng = random.Random(SEED)
    pairs = [(sampled_like(b["target"], dictionary, rng), b["target"]) for b in batches]
    calls = time_calls(bench, pairs, rounds)
    sentences = rounds * sum(len(refs) for _, refs in pairs)
    return {name: sentences / sum(seconds) for name, seconds in calls.items()}, calls


def time_rewards(bench: Bench, settings: Settings, mixer_update_ms: float) -> dict:
    """Sentences per second of each reward and of the sacrebleu loop, on the same hypotheses.

    The target is measured on batches of a real MIXER batch's size (fairseq batches by
    --max-tokens; 4,000 tokens hold about 250 Multi30k sentences, and the criterion scores
    a whole batch in one call); the update's own small batches are reported too, with the
    reward's share of an update.
    """
    large = load_batches(
        bench.task, "train", settings.reward_batch_size, settings.reward_batches, bench.device
    )
    speeds, _ = reward_speeds(bench, large, settings.reward_rounds)
    small_speeds, small_calls = reward_speeds(bench, bench.batches, settings.reward_rounds)
    loop, small_loop = speeds["sacrebleu_loop"], small_speeds["sacrebleu_loop"]
    figures: dict[str, Any] = {
        "sacrebleu_loop": {"sentences_per_s": loop, "small_batch_sentences_per_s": small_loop},
        "batch_size": settings.reward_batch_size,
        "batches": len(large),
        "small_batch_size": settings.batch_size,
    }
    for name in REWARDS:
        call_ms = 1000 * statistics.median(small_calls[name])
        figures[name] = {
            "sentences_per_s": speeds[name],
            "speedup_vs_sacrebleu_loop": speeds[name] / loop,
            "small_batch_sentences_per_s": small_speeds[name],
            "small_batch_speedup_vs_sacrebleu_loop": small_speeds[name] / small_loop,
            "call_ms_on_update_batch": call_ms,
            "share_of_mixer_update": call_ms / mixer_update_ms,
        }
    return figures
