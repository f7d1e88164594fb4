"""The reward interface shared by every sentence-level reward."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .ngrams import clipped_counts, clipped_matches, token_equality
from .sequences import Sequences, StartSpec, TokenBatch, to_padded, token_matrices

# Whether rewards run their compiled kernels (:mod:`.compiled`) on the host CPU: for CPU
# tensors, and for tensors of another device (CUDA), copied to the host and the scores back:
# for a batch of sentences the tensor code's dozens of small kernels cost more than the two
# copies. Tests turn it off to run the tensor code, which is also what runs where numba is
# missing.
COMPILED_ON_CPU = True

logger = logging.getLogger(__name__)


@functools.cache
def compiled_kernels_import() -> bool:
    """Whether the compiled rewards import (numba); warns once where they do not."""
    try:
        importlib.import_module(".compiled", __package__)
    except ImportError as error:
        logger.warning("rewards run their tensor code: the compiled ones need numba (%s)", error)
        return False
    return True


class Reward(ABC):
    """A batched sentence-level reward: ``reward(hyps, refs, start=None)`` -> float [B] in [0, 1].

    ``hyps`` and ``refs`` are padded 2-D tensors or lists of id lists; each sequence ends at its
    first ``eos`` or ``pad``. The result lies on the device of the first tensor input.
    Unless ``unk_matches`` is set, a reference ``unk`` matches nothing, so a model cannot earn
    reward by producing <unk> where the reference has one.
    """

    name: ClassVar[str]

    def __init__(self, *, pad: int = 1, eos: int = 2, unk: int = 3, unk_matches: bool = False):
        self.pad = int(pad)
        self.eos = int(eos)
        self.unk = int(unk)
        self.unk_matches = bool(unk_matches)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Keyword options accepted by the constructor (pad, eos and unk included)."""
        params = inspect.signature(cls.__init__).parameters
        return tuple(name for name in params if name != "self")

    @classmethod
    def with_options(cls, label: str, **options: Any) -> Reward:
        """The reward built with `options`; TypeError naming any option the constructor does
        not take (`label` names the reward in the message)."""
        valid = cls.option_names()
        unknown = [key for key in options if key not in valid]
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for {label}; "
                f"valid options: {', '.join(valid)}"
            )
        return cls(**options)

    def __call__(self, hyps: TokenBatch, refs: TokenBatch, start: StartSpec = None) -> Tensor:
        hyp_tokens, ref_tokens = token_matrices(hyps, refs, self.pad)
        if COMPILED_ON_CPU and compiled_kernels_import():
            scores = self.compiled_score(hyp_tokens.cpu(), ref_tokens.cpu(), start)
            if scores is not None:
                return scores.to(device=hyp_tokens.device, dtype=torch.float)
        hyp = to_padded(hyp_tokens, self.pad, self.eos)
        ref = to_padded(ref_tokens, self.pad, self.eos)
        if hyp.lengths.numel() == 0:
            return torch.zeros(0, dtype=torch.float, device=hyp.tokens.device)
        with torch.no_grad():
            scores = self.score(hyp, ref, start)
        return scores.to(torch.float)

    @abstractmethod
    def score(self, hyp: Sequences, ref: Sequences, start: StartSpec) -> Tensor:
        """Scores a non-empty padded batch; returns [B] (any float dtype)."""

    def compiled_score(self, hyp: Tensor, ref: Tensor, start: StartSpec) -> Tensor | None:
        """[B] (any float dtype): the scores of CPU token matrices [B, L] (each sequence ends
        at its first ``eos`` or ``pad``) from one compiled call; None for a reward without a
        compiled kernel, which :meth:`score` then scores."""
        return None

    def run_compiled(self, kernel: Callable, hyp: Tensor, ref: Tensor, *options: Any) -> Tensor:
        """[B] float64: ``kernel(hyp, ref, pad, eos, unk, block_unk, *options, out)``, a batch
        kernel of :mod:`.compiled`, on CPU token matrices."""
        out = np.empty(hyp.size(0))
        block_unk = not self.unk_matches
        hyp_ids, ref_ids = hyp.contiguous().numpy(), ref.contiguous().numpy()
        kernel(hyp_ids, ref_ids, self.pad, self.eos, self.unk, block_unk, *options, out)
        return torch.from_numpy(out)

    def ref_blocked(self, ref: Sequences) -> Tensor | None:
        """[B, Lr] bool: reference positions that match nothing (<unk>), or None."""
        return None if self.unk_matches else ref.tokens == self.unk

    def hyp_ref_equality(self, hyp: Sequences, ref: Sequences) -> Tensor:
        """[B, Lh, Lr] token equality with the reference <unk> rule applied."""
        return token_equality(hyp, ref, self.ref_blocked(ref))

    def clipped(
        self,
        hyp: Sequences,
        ref: Sequences,
        max_order: int,
        cut: Tensor | None = None,
        min_order: int = 1,
    ) -> Tensor:
        """[B, max_order - min_order + 1] long: clipped n-gram matches for n = min_order ..
        max_order, with the reference <unk> rule applied.

        The sort-based :func:`clipped_counts` unless its keys would not fit (or pad equals eos),
        and then the pairwise :func:`clipped_matches`.
        """
        blocked = self.ref_blocked(ref)
        if self.pad != self.eos:
            counts = clipped_counts(
                hyp, ref, max_order, self.pad, self.eos, blocked, cut, min_order=min_order
            )
            if counts is not None:
                return counts
        hyp_ref = token_equality(hyp, ref, blocked)
        counts = clipped_matches(hyp_ref, token_equality(hyp, hyp), max_order, cut)
        return counts[:, min_order - 1 :]

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.option_names())
        return f"{type(self).__name__}({options})"
