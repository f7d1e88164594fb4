"""A short XENT then MIXER run on a few thousand real Multi30k pairs, via the command line."""

import math
import sys

import pytest
from cli_runs import MIXER, fairseq_train, log_records
from conftest import REPO, SHARED_DATA, run_tool

MULTI30K = SHARED_DATA / "multi30k"


@pytest.mark.skipif(
    not (MULTI30K / "train.de.gz").exists(),
    reason=f"real data absent: {MULTI30K} (the developers' shared folder) is not here",
)
def test_xent_then_mixer_on_multi30k(tmp_path):
    run_tool(
        [sys.executable, "-m", "data_prep.prepare_multi30k", "--raw-dir", str(MULTI30K),
         "--dest", str(tmp_path / "multi30k"), "--lowercase", "--limit-train", "3000"],
        cwd=REPO,
    )  # fmt: skip
    data = tmp_path / "multi30k" / "bin"
    xent = fairseq_train(
        data, tmp_path / "xent", "--criterion", "label_smoothed_cross_entropy",
        "--max-epoch", "1", "--log-interval", "10",
    )  # fmt: skip
    mixer = fairseq_train(
        data, tmp_path / "mixer", *MIXER, "--finetune-from-model",
        str(tmp_path / "xent" / "checkpoint_last.pt"), "--max-update", "20",
        "--log-interval", "5", "--reward", "mixer_bleu", "--mixer-loss-scaling", "release",
    )  # fmt: skip
    assert log_records(xent, "train")
    records = log_records(mixer, "train_inner") + log_records(mixer, "valid")
    assert len(records) >= 4
    for record in records:
        for key in ("loss", "reinforce_loss", "reward", "baseline_mse"):
            if record.get(key) is not None:
                assert math.isfinite(float(record[key])), (key, record)
    rewards = [float(r["reward"]) for r in records if "reward" in r]
    assert rewards and all(0.0 <= r <= 1.0 for r in rewards)
