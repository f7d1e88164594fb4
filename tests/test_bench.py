"""scripts/bench.py end to end in its quick mode: it runs, writes every figure and ends with
the ratio line. Timings are not asserted (the bench prints them; it is not a timed test)."""

import json
import re
import subprocess
import sys

from conftest import REPO

TARGETS = {
    "update_lstm", "update_transformer", "memory_lstm", "memory_transformer", "decoding",
    *(f"reward_{kind}_{name}" for kind in ("speedup", "share")
      for name in ("mixer_bleu", "sentence_bleu", "rouge2")),
}  # fmt: skip


def test_quick_bench_reports_every_target(tmp_path):
    results = tmp_path / "bench.json"
    command = [sys.executable, "scripts/bench.py", "--quick", "--json", str(results)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    ratio = re.fullmatch(r"mixer/xent update time ratio: (\d+\.\d+)", last)
    assert ratio, last

    figures = json.loads(results.read_text())
    assert set(figures["targets"]) == TARGETS
    assert all(target["measured"] > 0 for target in figures["targets"].values())
    assert float(ratio.group(1)) == round(figures["update"]["lstm"]["ratio"], 3)
    for arch in ("lstm", "transformer"):
        xent = figures["phases"][arch]["xent_ms_per_update"]
        assert set(xent) == {"forward", "backward", "step"}
        assert f"{arch} XENT update: forward / backward / step" in done.stdout
    assert f"targets: {sum(t['passed'] for t in figures['targets'].values())} of 11 pass" in (
        done.stdout
    )
