"""End to end through fairseq's command-line tools: XENT, MIXER from it, resume, generate."""

import re
import subprocess
import sys

import pytest
import torch
from cli_runs import BIN, COMMON, MIXER, PLUGIN, TINY_LSTM, fairseq_train, log_records
from conftest import run_tool

import fairseq_mixer  # noqa: F401  (allow-lists what fairseq checkpoints hold)


def model_and_baseline(path):
    state = torch.load(path, map_location="cpu")
    return state["model"], state["criterion"]


def test_mixer_fine_tunes_from_a_cross_entropy_checkpoint(synthetic_bin, xent_checkpoint, tmp_path):
    proc = fairseq_train(
        synthetic_bin, tmp_path, *MIXER, "--finetune-from-model", str(xent_checkpoint),
        "--max-epoch", "2",
    )  # fmt: skip
    assert "no MIXER criterion state in the checkpoint" in proc.stdout + proc.stderr
    epochs = log_records(proc, "train")
    assert [(r["epoch"], float(r["mixer_s"])) for r in epochs] == [(1, 6.0), (2, 2.0)]
    inner = log_records(proc, "train_inner")
    assert all("reward" in record for record in inner)
    for record in epochs + inner:
        for key in ("loss", "nll_loss", "reinforce_loss", "reward", "baseline", "baseline_mse"):
            if record.get(key) is not None:  # nll_loss is null where a batch was all sampled
                assert torch.isfinite(torch.tensor(float(record[key]))), (key, record)
        assert 0.0 <= float(record["reward"]) <= 1.0
        assert 0.0 < float(record["sampled_share"]) <= 1.0
    valid = log_records(proc, "valid")
    assert len(valid) == 2 and all("reward" not in r for r in valid)
    model, baseline = model_and_baseline(tmp_path / "checkpoint_last.pt")
    assert set(baseline) == {"baseline.weight", "baseline.bias"}
    assert baseline["baseline.weight"].abs().sum() > 0


def test_restore_file_from_cross_entropy_needs_reset_optimizer(
    synthetic_bin, xent_checkpoint, tmp_path
):
    proc = fairseq_train(
        synthetic_bin, tmp_path, *MIXER, "--restore-file", str(xent_checkpoint),
        "--reset-dataloader", "--max-epoch", "1", check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "--reset-optimizer" in proc.stdout + proc.stderr
    proc = fairseq_train(
        synthetic_bin, tmp_path, *MIXER, "--restore-file", str(xent_checkpoint),
        "--reset-dataloader", "--reset-optimizer", "--reset-meters", "--max-epoch", "1",
    )  # fmt: skip
    assert [float(r["mixer_s"]) for r in log_records(proc, "train")] == [6.0]


def test_interrupted_run_resumes_mid_stage_like_an_uninterrupted_one(
    synthetic_bin, xent_checkpoint, tmp_path
):
    start = ["--finetune-from-model", str(xent_checkpoint), "--mixer-epochs-per-stage", "2",
             "--mixer-schedule", "absolute"]  # fmt: skip
    whole = fairseq_train(synthetic_bin, tmp_path / "whole", *MIXER, *start, "--max-update", "8")
    assert len(log_records(whole, "train_inner")) == 8
    first = fairseq_train(synthetic_bin, tmp_path / "cut", *MIXER, *start, "--max-update", "4")
    second = fairseq_train(synthetic_bin, tmp_path / "cut", *MIXER, *start, "--max-update", "8")
    assert "Loaded checkpoint" in second.stdout + second.stderr
    before = log_records(first, "train_inner")
    after = log_records(second, "train_inner")
    assert [r["num_updates"] for r in after] == ["5", "6", "7", "8"]
    assert {r["mixer_s"] for r in before + after} == {"6"}
    expected = log_records(whole, "train_inner")
    for resumed, reference in zip(before + after, expected, strict=True):
        assert resumed.get("reward") == reference.get("reward"), (resumed, reference)
    model_a, baseline_a = model_and_baseline(tmp_path / "whole" / "checkpoint_last.pt")
    model_b, baseline_b = model_and_baseline(tmp_path / "cut" / "checkpoint_last.pt")
    for name in model_a:
        assert torch.allclose(model_a[name], model_b[name], atol=1e-6), name
    for name in baseline_a:
        assert torch.allclose(baseline_a[name], baseline_b[name], atol=1e-6), name


def test_generate_reads_a_mixer_checkpoint_with_safe_loading(
    synthetic_bin, xent_checkpoint, tmp_path
):
    fairseq_train(
        synthetic_bin, tmp_path, *MIXER, "--finetune-from-model", str(xent_checkpoint),
        "--max-update", "2",
    )  # fmt: skip
    checkpoint = tmp_path / "checkpoint_last.pt"
    for beam in ("1", "5"):
        proc = run_tool(
            [
                str(BIN / "fairseq-generate"),
                str(synthetic_bin),
                "--user-dir",
                PLUGIN,
                "--task",
                "mixer",
                "--path",
                str(checkpoint),
                "--beam",
                beam,
                "--cpu",
                "--batch-size",
                "32",
                "--gen-subset",
                "test",
            ]  # fmt: skip
        )
        assert f"Generate test with beam={beam}: BLEU4 = " in proc.stdout
    load = "import torch, sys; torch.load(sys.argv[1]); print('loaded')"
    bare = subprocess.run(
        [sys.executable, "-c", load, str(checkpoint)], capture_output=True, text=True
    )
    assert bare.returncode != 0 and "argparse.Namespace" in bare.stderr
    plugin = subprocess.run(
        [sys.executable, "-c", "import fairseq_mixer; " + load, str(checkpoint)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert plugin.returncode == 0 and "loaded" in plugin.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reward", "bleu9"], "invalid choice: 'bleu9'"),
        (["--mixer-delta", "0"], "--mixer-delta must be >= 1"),
        (["--mixer-unroll-steps", "0"], "--mixer-unroll-steps (T) must be >= 1"),
        (["--mixer-xent-weight", "1.5"], "--mixer-xent-weight must lie in [0, 1]"),
        (["--mixer-baseline", "leave_one_out"], "needs --mixer-samples 2 or more"),
    ],
)
def test_bad_flags_get_a_clear_error(synthetic_bin, tmp_path, flags, message):
    proc = fairseq_train(synthetic_bin, tmp_path, *MIXER, *flags, "--max-update", "1", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*.pt"))


def test_data_folder_without_target_dictionary(synthetic_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for path in synthetic_bin.iterdir():
        if path.name != "dict.tgt.txt":
            (data / path.name).symlink_to(path)
    proc = fairseq_train(data, tmp_path, "--source-lang", "src", "--target-lang", "tgt",
                         "--max-update", "1", check=False)  # fmt: skip
    assert proc.returncode != 0 and "has no dictionary dict.tgt.txt" in proc.stdout + proc.stderr
    missing = fairseq_train(tmp_path / "nowhere", tmp_path, "--max-update", "1", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stdout + missing.stderr


def test_validation_bleu_and_rouge_and_a_schedule_counted_in_updates(synthetic_bin, tmp_path):
    proc = fairseq_train(
        synthetic_bin, tmp_path, *MIXER, "--mixer-stage-unit", "update",
        "--mixer-xent-epochs", "2", "--mixer-epochs-per-stage", "2", "--max-update", "6",
        "--eval-bleu", "--eval-rouge", "--best-checkpoint-metric", "rouge2",
        "--maximize-best-checkpoint-metric", "--validate-interval-updates", "6",
    )  # fmt: skip
    s_values = [float(r["mixer_s"]) for r in log_records(proc, "train_inner")]
    assert s_values == [10.0, 10.0, 6.0, 6.0, 2.0, 2.0]
    valid = log_records(proc, "valid")[0]
    for metric in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert 0.0 <= float(valid[metric]) <= 100.0, valid
    saved = re.search(r"Saved checkpoint \S+ \(epoch 1 @ 6 updates, score ([\d.]+)\)", proc.stdout)
    assert saved and float(saved.group(1)) == float(valid["rouge2"])
    assert (tmp_path / "checkpoint_best.pt").exists()
    stage = torch.load(tmp_path / "checkpoint_last.pt")["task_state"]["mixer_stage"]
    assert stage == {"index": 2, "s": 2, "xent_weight": 0.5}


def test_bf16_flag_keeps_tpu_off_unless_asked():
    from argparse import Namespace

    from fairseq_mixer.train_cli import bf16_without_tpu

    assert not bf16_without_tpu(Namespace(bf16=True, tpu=True), ["--bf16"]).tpu
    assert bf16_without_tpu(Namespace(bf16=True, tpu=True), ["--bf16", "--tpu"]).tpu
    assert bf16_without_tpu(Namespace(bf16=False, tpu=True), ["--tpu"]).tpu


def test_mixer_trains_in_bfloat16_through_fairseq_mixer_train(
    synthetic_bin, xent_checkpoint, tmp_path
):
    """fairseq-train's --bf16 means a TPU; fairseq-mixer-train runs it here, on the CPU, with
    fairseq's own bfloat16 path (model and criterion cast, float32 master weights)."""
    plain = fairseq_train(
        synthetic_bin, tmp_path / "plain", "--bf16", "--max-update", "1", check=False
    )
    assert plain.returncode != 0 and "xla" in (plain.stdout + plain.stderr).lower()
    args = [str(BIN / "fairseq-mixer-train"), str(synthetic_bin), *COMMON, *TINY_LSTM, *MIXER,
            "--bf16", "--finetune-from-model", str(xent_checkpoint), "--max-epoch", "1",
            "--save-dir", str(tmp_path / "bf16")]  # fmt: skip
    proc = run_tool(args)
    inner = log_records(proc, "train_inner")
    assert inner and all(
        torch.isfinite(torch.tensor(float(r[key])))
        for r in inner
        for key in ("loss", "reinforce_loss", "reward", "baseline_mse")
    )
    state = torch.load(tmp_path / "bf16" / "checkpoint_last.pt", map_location="cpu")
    assert state["cfg"]["common"]["bf16"] and not state["cfg"]["common"]["tpu"]
    assert state["optimizer_history"][-1]["optimizer_name"] == "FP16Optimizer"
