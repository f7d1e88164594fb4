"""numba caches a kernel (``cache=True``) against its own file only: a kernel that calls one of
another file keeps its compiled code when only that other file changes (numba 0.68), so that a
branch switch or an edit of :mod:`.compiled` would leave the kernels of :mod:`.ragged` stale,
silently. Such kernels flush their caches when the files they call into change."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def flush_when_changed(kernels: Sequence, sources: Sequence[str]) -> None:
    """Flushes the numba caches of ``kernels`` when ``sources`` (the files they call into)
    differ from those their caches were made with (a fingerprint beside the cache). Call it
    where the kernels are defined, before their first call."""
    caches = [getattr(kernel, "_cache", None) for kernel in kernels]
    caches = [cache for cache in caches if hasattr(cache, "cache_path")]  # None: caching off
    if not caches:
        return
    fingerprint = hashlib.sha256(b"".join(Path(s).read_bytes() for s in sources)).hexdigest()
    module = Path(kernels[0].py_func.__code__.co_filename).stem
    stamp = Path(caches[0].cache_path) / f"{module}.sources.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == fingerprint:
            return
        for cache in caches:
            cache.flush()
        stamp.write_text(fingerprint)
    except OSError:  # a cache folder that cannot be written: numba compiles without it
        pass
