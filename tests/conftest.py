import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# One thread for torch here and in every tool the tests start: the suite runs on two workers
# (make test), the models are tiny, and a second thread on a shared core only waits. Set
# before torch is imported, so that the tests' own processes take it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_tool(args: list[str], cwd: Path | None = None, check: bool = True, timeout: int = 600):
    """Run a command-line tool of the venv (fairseq-train, ...) and return the finished process."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def synthetic_bin(tmp_path_factory) -> Path:
    """A small binarised synthetic language pair (data_prep.synthetic)."""
    dest = tmp_path_factory.mktemp("synthetic")
    run_tool(
        [
            sys.executable,
            "-m",
            "data_prep.synthetic",
            "--dest",
            str(dest),
            "--train",
            "600",
            "--valid",
            "48",
            "--test",
            "48",
            "--seed",
            "3",
        ],
        cwd=REPO,
    )
    return dest / "bin"


@pytest.fixture(scope="session")
def trained(synthetic_bin):
    """arch -> (cfg, task, model) after a few dozen cross-entropy updates (in eval mode), each
    trained once for the session."""
    from harness import train_briefly

    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = train_briefly(synthetic_bin, arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def xent_checkpoint(synthetic_bin, tmp_path_factory) -> Path:
    """A tiny LSTM trained 3 epochs with label-smoothed XENT through fairseq-train."""
    from cli_runs import fairseq_train, log_records

    save_dir = tmp_path_factory.mktemp("xent")
    proc = fairseq_train(
        synthetic_bin, save_dir, "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-epoch", "3",
    )  # fmt: skip
    assert [r["epoch"] for r in log_records(proc, "train")] == [1, 2, 3]
    return save_dir / "checkpoint_last.pt"
