"""scripts/bench.py end to end in its quick mode: it runs, writes every figure and ends with
the ratio line. Timings are not asserted (the bench prints them; it is not a timed test)."""

import json
import platform
import re
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import REPO

TARGETS = {
    "update_lstm", "update_transformer", "memory_lstm", "memory_transformer", "decoding",
    *(f"reward_{kind}_{name}" for kind in ("speedup", "share")
      for name in ("mixer_bleu", "sentence_bleu", "rouge2")),
    # issue 17: DAD's and E2E's update times (CPU) and peak memory
    "update_dad_lstm", "update_dad_transformer", "update_e2e_lstm",
    "memory_dad_lstm", "memory_dad_transformer", "memory_e2e_lstm",
}  # fmt: skip


def test_quick_bench_reports_every_target(tmp_path):
    results = tmp_path / "bench.json"
    # one thread: on cores other work shares, a second one waits more than it computes
    command = [
        sys.executable,
        "scripts/bench.py",
        "--quick",
        "--threads",
        "1",
        "--json",
        str(results),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
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
    passed = sum(t["passed"] for t in figures["targets"].values())
    assert f"targets: {passed} of {len(TARGETS)} pass" in done.stdout
    for measured in ("update", "memory"):
        lstm = figures[measured]["lstm"]
        assert set(lstm["ratios"]) == {"mixer", "dad", "e2e"}
        assert lstm["ratios"]["mixer"] == lstm["ratio"]
    assert "update, lstm: DAD / XENT" in done.stdout and "peak memory, transformer: E2E" in (
        done.stdout
    )
    assert figures["environment"]["rewards"] == "compiled"  # numba is a dependency
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
    from benchmarks import memory, setup

    context = memory.start_memory_workers()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=plugin_folder, args=(sender,))
    process.start()
    print(setup.USER_DIR, receiver.recv())
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
    from benchmarks.graph_loop import graph_loop_agreement
    from benchmarks.setup import build_bench, make_job
    from benchmarks.sizes import QUICK

    from fairseq_mixer.rollout import sampling

    # restored after the test: building a bench and the check both set it
    monkeypatch.setattr(sampling, "CUDA_GRAPH_ON_CUDA", sampling.CUDA_GRAPH_ON_CUDA)
    two_pass = build_bench(make_job(synthetic_bin, arch, QUICK, "cpu", 1, rollout="two_pass"))
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
    agreement = graph_loop_agreement(two_pass)
    sentences = sum(batch["nsentences"] for batch in two_pass.batches)
    assert agreement == {"same": sentences, "sentences": sentences}
    assert len(loops) == len(two_pass.batches)


def test_the_bench_takes_only_options_of_the_plugin(monkeypatch):
    """The switches that timed replaced code (the figures of the code before) are gone."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench

    args = bench.parse_args(["--rollout", "two_pass", "--stage-s", "2", "--cuda-loop", "graph"])
    assert (args.rollout, args.stage_s, args.cuda_loop) == ("two_pass", 2, "graph")
    for removed in (
        ["--teacher-forced", "padded"], ["--prefill", "off"], ["--lstm-step", "fairseq"],
        ["--transformer-step", "fairseq"], ["--reward-counts", "tensor"],
        ["--cuda-loop", "synchronising"],
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            bench.parse_args(removed)


def test_a_method_added_to_the_list_is_timed_beside_mixer(synthetic_bin, monkeypatch):
    """One more `Method` in `methods()` is all the update-cost measurement needs."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from benchmarks import methods, setup, update_cost
    from benchmarks.sizes import QUICK

    plain = methods.Method("plain", "cross-entropy", ("--criterion", "cross_entropy"))
    monkeypatch.setattr(
        setup, "methods", lambda *args: (*methods.methods(*args)[:1], plain, methods.methods()[-1])
    )
    settings = replace(QUICK, batches=1, warmup_pairs=0, timed_pairs=3)
    bench = setup.build_bench(setup.make_job(synthetic_bin, "lstm", settings, "cpu", 1))
    figures = update_cost.time_updates(bench, settings)
    assert set(figures["ratios"]) == {"mixer", "plain"}
    assert len(figures["plain_ms_each"]) == len(figures["mixer_ms_each"]) == 3
    assert figures["ratios"]["plain"] == figures["plain_ms"] / figures["xent_ms"]
