"""A cached numba kernel that calls into another file is compiled again when that file
changes (numba alone would keep the old code: fairseq_mixer/rewards/kernel_cache.py)."""

import os
import subprocess
import sys
import time

from conftest import REPO

CALLEE = """import numba

@numba.njit(cache=True, inline="always")
def step(x):
    return x + {increment}
"""
CALLER = """import numba

from fairseq_mixer.rewards.kernel_cache import flush_when_changed

from . import callee

@numba.njit(cache=True)
def kernel(x):
    return callee.step(x)

flush_when_changed([kernel], [callee.__file__])
"""


def test_a_kernel_follows_an_edit_of_the_file_it_calls_into(tmp_path):
    package = tmp_path / "kernels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "caller.py").write_text(CALLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    env.pop("NUMBA_CACHE_DIR", None)
    results = []
    for increment in (1, 100):
        callee = package / "callee.py"
        callee.write_text(CALLEE.format(increment=increment))
        stamp = time.time() + len(results)  # a new modification time for numba
        os.utime(callee, (stamp, stamp))
        command = "from kernels.caller import kernel; print(kernel(1))"
        out = subprocess.run(
            [sys.executable, "-c", command], env=env, capture_output=True, text=True, check=True
        )
        results.append(int(out.stdout))
    assert results == [2, 101]
    assert list((package / "__pycache__").glob("caller.kernel-*.nbi"))  # cached all along
