"""scripts/bench.py end to end in its quick mode: it runs, writes every figure and ends with
the ratio line. Timings are not asserted (the bench prints them; it is not a timed test)."""

import json
import platform
import re
import subprocess
import sys

import pytest
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
    if platform.libc_ver()[0] == "glibc":  # the memory children pin its mmap threshold
        assert figures["memory"]["mmap_threshold_pinned"]
        assert "glibc's mmap threshold pinned at 128 KiB" in done.stdout


MEMORY_CHILD_PROBE = """
import sys
from pathlib import Path

def plugin_folder(connection):
    import fairseq_mixer

    connection.send(str(Path(fairseq_mixer.__file__).parent))

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    import bench

    context = bench.start_memory_workers()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=plugin_folder, args=(sender,))
    process.start()
    print(bench.USER_DIR, receiver.recv())
    process.join()
"""


def test_memory_children_import_the_plugin_the_bench_imported(tmp_path):
    """Not a `fairseq_mixer` folder in the current directory: the fork server they come from
    is a `python -c` process, which would put that folder first on its path."""
    (tmp_path / "fairseq_mixer").mkdir()
    (tmp_path / "fairseq_mixer" / "__init__.py").write_text("")
    probe = tmp_path / "probe" / "memory_child_plugin.py"
    probe.parent.mkdir()
    probe.write_text(MEMORY_CHILD_PROBE)
    command = [sys.executable, str(probe), str(REPO / "scripts")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bench_plugin, child_plugin = done.stdout.split()[-2:]
    assert bench_plugin == str(REPO / "fairseq_mixer")
    assert child_plugin == bench_plugin


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_graph_loop_agreement_counts_the_sentences_both_loops_sample_alike(
    synthetic_bin, arch, monkeypatch
):
    """`--cuda-loop graph` on CUDA also checks the graph loop of a two-pass rollout against
    the launch-bound one; here the fixed-shape loop runs step by step on the CPU in its
    place."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench

    from fairseq_mixer.rewards import base as reward_base
    from fairseq_mixer.rollout import decoder_features, sampling

    for module, flag in (
        (sampling, "LEAN_TRANSFORMER_STEP"), (sampling, "LEAN_LSTM_STEP"),
        (sampling, "LAUNCH_BOUND_ON_CUDA"), (sampling, "CUDA_GRAPH_ON_CUDA"), (sampling, "PREFILL"),
        (reward_base, "COMPILED_ON_CPU"), (decoder_features, "PACKED_TRANSFORMER_PASS"),
    ):  # fmt: skip
        monkeypatch.setattr(module, flag, getattr(module, flag))  # restored after the test
    two_pass = bench.build_bench(
        bench.make_job(synthetic_bin, arch, bench.QUICK, "cpu", 1, rollout="two_pass")
    )
    monkeypatch.setattr(
        sampling, "uses_fixed_shape_loop", lambda device: sampling.CUDA_GRAPH_ON_CUDA
    )
    loops = []
    original = sampling._decode_with_fixed_shapes
    monkeypatch.setattr(
        sampling,
        "_decode_with_fixed_shapes",
        lambda *args: loops.append(args) or original(*args),
    )
    agreement = bench.graph_loop_agreement(two_pass)
    sentences = sum(batch["nsentences"] for batch in two_pass.batches)
    assert agreement == {"same": sentences, "sentences": sentences}
    assert len(loops) == len(two_pass.batches)
