"""DAD and E2E end to end through fairseq's command-line tools: XENT, each from it, then
fairseq-generate, for an LSTM (sequential form) and a transformer (two-pass form)."""

import pytest
import torch
from cli_runs import BIN, COMMON, PLUGIN, TINY_LSTM, TINY_TRANSFORMER, fairseq_train, log_records
from conftest import run_tool

import fairseq_mixer  # noqa: F401  (allow-lists what fairseq checkpoints hold)

DAD = ["--criterion", "dad", "--dad-k", "1.5", "--label-smoothing", "0.1"]
E2E = ["--criterion", "e2e", "--e2e-topk", "5", "--mixer-xent-epochs", "0",
       "--mixer-stage-unit", "update", "--mixer-epochs-per-stage", "3",
       "--mixer-unroll-steps", "10", "--mixer-delta", "4",
       "--mixer-schedule", "per_sentence"]  # fmt: skip
MODELS = {"lstm": TINY_LSTM, "transformer": TINY_TRANSFORMER}


@pytest.fixture(scope="module")
def transformer_xent(synthetic_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("xent_transformer")
    fairseq_train(
        synthetic_bin, save_dir, "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-epoch", "2", model=TINY_TRANSFORMER,
    )  # fmt: skip
    return save_dir / "checkpoint_last.pt"


def finite(record: dict, key: str) -> float:
    value = float(record[key])
    assert torch.isfinite(torch.tensor(value)), (key, record)
    return value


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_dad_and_e2e_fine_tune_from_xent_and_generate(
    synthetic_bin, xent_checkpoint, transformer_xent, tmp_path, arch
):
    start = xent_checkpoint if arch == "lstm" else transformer_xent
    dad = fairseq_train(
        synthetic_bin, tmp_path / "dad", *DAD, "--finetune-from-model", str(start),
        "--max-update", "6", model=MODELS[arch],
    )  # fmt: skip
    inner = log_records(dad, "train_inner")
    eps = [finite(r, "dad_eps") for r in inner]
    assert eps[0] == pytest.approx(1.5 / (1.5 + 1), abs=1e-4) and eps[-1] < 0.06
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    shares = [finite(r, "model_input_share") for r in inner]
    assert shares[0] < 0.5 < shares[-1] <= 1.0
    assert all(finite(r, "loss") > 0 for r in inner)
    valid = log_records(dad, "valid")
    assert len(valid) == 1 and all("model_input_share" not in r for r in valid)
    assert all(finite(r, "nll_loss") > 0 for r in valid)

    e2e = fairseq_train(
        synthetic_bin, tmp_path / "e2e", *E2E, "--finetune-from-model", str(start),
        "--max-update", "6", model=MODELS[arch],
    )  # fmt: skip
    inner = log_records(e2e, "train_inner")
    assert [float(r["mixer_s"]) for r in inner] == [6.0] * 3 + [2.0] * 3
    shares = [finite(r, "model_input_share") for r in inner]
    assert 0.0 < max(shares[:3]) < min(shares[3:])
    assert all(0.0 < finite(r, "top_k_mass") <= 1.0 for r in inner)

    for method in ("dad", "e2e"):
        proc = run_tool(
            [str(BIN / "fairseq-generate"), str(synthetic_bin), "--user-dir", PLUGIN,
             "--task", "mixer", "--path", str(tmp_path / method / "checkpoint_last.pt"),
             "--beam", "1", "--cpu", "--batch-size", "32", "--gen-subset", "test"]
        )  # fmt: skip
        assert "Generate test with beam=1: BLEU4 = " in proc.stdout


def test_e2e_trains_in_bfloat16_through_fairseq_mixer_train(
    synthetic_bin, xent_checkpoint, tmp_path
):
    args = [str(BIN / "fairseq-mixer-train"), str(synthetic_bin), *COMMON, *TINY_LSTM, *E2E,
            "--bf16", "--finetune-from-model", str(xent_checkpoint), "--max-update", "4",
            "--save-dir", str(tmp_path)]  # fmt: skip
    inner = log_records(run_tool(args), "train_inner")
    assert len(inner) == 4
    assert all(finite(r, "loss") > 0 and 0 < finite(r, "top_k_mass") <= 1 for r in inner)
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert state["cfg"]["common"]["bf16"]
    assert state["optimizer_history"][-1]["optimizer_name"] == "FP16Optimizer"
