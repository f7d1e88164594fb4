"""fairseq's command-line tools for the tests, each run in a process forked from one that has
already imported fairseq.

Starting `fairseq-train` costs about 5 s of CPU before it reads its first flag, importing
torch, fairseq's registries (scikit-learn among them) and the plugin; the suite starts such a
tool dozens of times. Here a server process imports all of it once and, for every command,
forks a child that runs the very function the console script runs (`fairseq_cli.train.
cli_main`, ...) with the command's arguments, environment, working folder and its own
stdout/stderr files, and exits with its status. The child is a real separate process; only
the imports are shared.

Protocol: one JSON request per line on stdin ({"tool", "args", "env", "cwd", "stdout",
"stderr"}), answered by a line {"pid"} when the child starts and {"returncode"} when it ends.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

TOOLS = {
    "fairseq-train": ("fairseq_cli.train", "cli_main"),
    "fairseq-generate": ("fairseq_cli.generate", "cli_main"),
    "fairseq-preprocess": ("fairseq_cli.preprocess", "cli_main"),
    "fairseq-mixer-train": ("fairseq_mixer.train_cli", "cli_main"),
}


def run_child(request: dict) -> None:
    """In the forked child: become the command, run it, exit with its status."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        module, function = TOOLS[request["tool"]]
        sys.argv = [request["tool"], *request["args"]]
        main = getattr(importlib.import_module(module), function)
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print must not mix with the replies

    # fairseq_cli.train first, as the console script does: its import sets the log format
    for module in ("fairseq_cli.train", *(m for m, _ in TOOLS.values()), "fairseq_mixer"):
        importlib.import_module(module)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        print(json.dumps({"pid": pid}), file=replies, flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"returncode": code}), file=replies, flush=True)


if __name__ == "__main__":
    serve()
