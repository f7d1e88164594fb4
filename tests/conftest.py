import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# One thread for torch here and in every tool the tests start: the suite runs on two workers
# (make test), the models are tiny, and a second thread on a shared core only waits. Set
# before torch is imported, so that the tests' own processes take it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_tool(args: list[str], cwd: Path | None = None, check: bool = True, timeout: int = 600):
    """Run a command-line tool of the venv (fairseq-train, ...) and return the finished process.

    fairseq's own tools run forked from a process that has imported fairseq already
    (`fairseq_zygote`); anything else as a plain subprocess."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    tool = Path(str(args[0]))
    if tool.parent == Path(sys.executable).parent and tool.name in ZYGOTE_TOOLS:
        proc = _zygote().run(tool.name, [str(a) for a in args[1:]], env, cwd, timeout)
    else:
        proc = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


ZYGOTE_TOOLS = ("fairseq-train", "fairseq-generate", "fairseq-preprocess", "fairseq-mixer-train")
_ZYGOTES: list = []


class _Zygote:
    """The client of one `fairseq_zygote` server (one per test process, started on first use)."""

    def __init__(self):
        self.server = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "fairseq_zygote.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=REPO,
        )  # fmt: skip

    def run(self, tool: str, args: list[str], env: dict, cwd, timeout: float):
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"tool": tool, "args": args, "env": env, "cwd": str(cwd or os.getcwd()),
                       "stdout": str(out), "stderr": str(err)}  # fmt: skip
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            pid = json.loads(self._reply(60))["pid"]
            try:
                code = json.loads(self._reply(timeout))["returncode"]
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._reply(60)
                raise subprocess.TimeoutExpired([tool, *args], timeout) from None
            return subprocess.CompletedProcess(
                [tool, *args],
                code,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def _reply(self, timeout: float) -> str:
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("fairseq_zygote", timeout)
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError("the fairseq zygote server died")
        return line


def _zygote() -> _Zygote:
    if not _ZYGOTES:
        _ZYGOTES.append(_Zygote())
    return _ZYGOTES[0]


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
