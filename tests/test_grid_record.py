"""Per-sentence statistics (comparison.sentences): BLEU's paired bootstrap from sacreBLEU's
sufficient statistics is sacreBLEU's PairedTest."""

import sys

import numpy as np
import pytest
from conftest import REPO
from test_grid import sentences

sys.path.insert(0, str(REPO / "scripts"))

from comparison import significance  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bleu_from_statistics_is_sacrebleus_paired_test(seed, monkeypatch):
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    monkeypatch.delenv("SACREBLEU_SEED", raising=False)
    rng = np.random.default_rng(seed)
    refs, base, system = sentences(seed, count=int(rng.integers(20, 60)))
    _, scores = PairedTest(
        [("b", base), ("s", system)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=300
    )()
    stats = [significance.bleu_statistics(hyps, refs) for hyps in (base, system)]
    ours = significance.bleu_stats_paired_bootstrap(*stats, n_samples=300)
    assert ours.baseline == scores["BLEU"][0].score and ours.system == scores["BLEU"][1].score
    assert ours.p_value == scores["BLEU"][1].p_value
