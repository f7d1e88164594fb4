"""Rewards against sacrebleu, rouge-score and a plain reference of the MIXER release's BLEU."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from fairseq_mixer.rewards import REWARD_NAMES, Reward, base, get_reward
from fairseq_mixer.rewards.compiled import clipped_matches_of_pair
from fairseq_mixer.rewards.ngrams import clipped_counts, clipped_matches, token_equality
from fairseq_mixer.rewards.sequences import to_padded_pair

PAD, EOS, UNK = 1, 2, 3
SPECIAL = {"pad": PAD, "eos": EOS, "unk": UNK}
TOL = 1e-6

EDGE_CASES = [
    ([], [4, 5, 6]),
    ([], []),
    ([4, 5], []),
    ([4], [4]),
    ([4], [5]),
    ([4], [4, 5, 6, 7, 8, 9]),
    ([4, 5, 6, 7, 8, 9, 10, 11], [4, 5, 6]),
    ([4, 4, 4, 4, 4, 4], [4, 4, 5, 4, 4]),
    ([4, 5, 6, 4, 5, 6, 4, 5], [4, 5, 6, 4, 5]),
    ([4, 5, 6, 7, 8], [4, 5, 6, 7, 8]),
    ([4, 5, 6], [7, 8, 9]),
    ([3, 4, 5, 6], [3, 4, 5, 6]),
    ([4, 3, 3, 5], [3, 3, 5, 4]),
]


@pytest.fixture(autouse=True, params=["compiled", "tensor"])
def counting(request, monkeypatch) -> str:
    """Every test runs twice: with the compiled rewards of the CPU, and with the tensor code
    that other devices run."""
    monkeypatch.setattr(base, "COMPILED_ON_CPU", request.param == "compiled")
    return request.param


def _edit(rng: random.Random, seq: list[int], vocab: range) -> list[int]:
    """A copy of ``seq`` with a few substitutions, deletions and insertions."""
    out = []
    for tok in seq:
        roll = rng.random()
        if roll < 0.1:
            continue
        out.append(rng.choice(vocab) if roll < 0.25 else tok)
        if rng.random() < 0.1:
            out.append(rng.choice(vocab))
    return out


def random_pairs(seed: int, count: int, max_len: int = 14) -> list[tuple[list[int], list[int]]]:
    """Random id sentences over small vocabularies (<unk> included) so n-grams repeat.

    Half the references are edited copies of their hypothesis so that 3- and 4-grams match.
    """
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        vocab = range(UNK, rng.choice([6, 9, 13]))
        hyp = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        if index % 2:
            ref = _edit(rng, hyp, vocab)
        else:
            ref = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        pairs.append((hyp, ref) if rng.random() < 0.5 else (ref, hyp))
    return pairs


def as_tensor(seqs: list[list[int]], width: int, seed: int) -> torch.Tensor:
    """Rows ``seq + [EOS] + junk + [PAD...]`` of a fixed width (junk must be ignored)."""
    rng = random.Random(seed)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, seq in enumerate(seqs):
        junk = [rng.choice(range(UNK, 13)) for _ in range(rng.randint(0, 3))]
        full = (seq + [EOS] + junk)[:width]
        out[row, : len(full)] = torch.tensor(full, dtype=torch.long)
    return out


def text(seq: list[int], unk_word: str | None = None) -> str:
    """Space-joined ids; ``unk_word`` replaces <unk> (a word no hypothesis contains)."""
    return " ".join(unk_word if unk_word and tok == UNK else str(tok) for tok in seq)


def run(reward: Reward, pairs: list, **kwargs) -> list[float]:
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    scores = reward(hyps, refs, **kwargs)
    assert scores.shape == (len(pairs),)
    assert scores.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 1)).all())
    return scores.tolist()


# --- sentence_bleu vs sacrebleu -------------------------------------------------------------


def sacrebleu_score(metric: BLEU, hyp: list[int], ref: list[int], unk_matches: bool) -> float:
    ref_text = text(ref, None if unk_matches else "REFUNK")
    return metric.sentence_score(text(hyp), [ref_text]).score / 100


@pytest.mark.parametrize(
    ("method", "value", "max_order"),
    [
        ("exp", None, 4),
        ("none", None, 4),
        ("floor", None, 4),
        ("add-k", None, 4),
        ("floor", 0.3, 4),
        ("add-k", 0.5, 4),
        ("exp", None, 2),
        ("add-k", None, 1),
    ],
)
@pytest.mark.parametrize("unk_matches", [False, True])
def test_sentence_bleu_matches_sacrebleu(method, value, max_order, unk_matches):
    metric = BLEU(
        tokenize="none",
        smooth_method=method,
        smooth_value=value,
        max_ngram_order=max_order,
        effective_order=True,
    )
    reward = get_reward(
        "sentence_bleu",
        smooth_method=method,
        smooth_value=value,
        max_order=max_order,
        unk_matches=unk_matches,
        **SPECIAL,
    )
    pairs = EDGE_CASES + random_pairs(seed=len(method) + max_order, count=300)
    for (hyp, ref), got in zip(pairs, run(reward, pairs), strict=True):
        expected = sacrebleu_score(metric, hyp, ref, unk_matches)
        assert got == pytest.approx(expected, abs=TOL), (hyp, ref)


def test_sentence_bleu_known_values():
    reward = get_reward("sentence_bleu", **SPECIAL)
    got = run(reward, [([4, 5, 6, 7, 8], [4, 5, 6, 7, 8]), ([4, 5], [6, 7]), ([], [4])])
    assert got == pytest.approx([1.0, 0.0, 0.0], abs=TOL)


# --- rouge2 / rougeL vs rouge-score ---------------------------------------------------------


class _SplitTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return text.split()


@pytest.mark.parametrize("rouge_type", ["rouge2", "rougeL"])
@pytest.mark.parametrize("measure", ["fmeasure", "recall", "precision"])
@pytest.mark.parametrize("unk_matches", [False, True])
def test_rouge_matches_rouge_score(rouge_type, measure, unk_matches):
    scorer = rouge_scorer.RougeScorer([rouge_type], tokenizer=_SplitTokenizer())
    reward = get_reward(rouge_type, measure=measure, unk_matches=unk_matches, **SPECIAL)
    pairs = EDGE_CASES + random_pairs(seed=len(measure), count=300)
    for (hyp, ref), got in zip(pairs, run(reward, pairs), strict=True):
        target = text(ref, None if unk_matches else "REFUNK")
        expected = getattr(scorer.score(target=target, prediction=text(hyp))[rouge_type], measure)
        assert got == pytest.approx(expected, abs=TOL), (hyp, ref)


def test_rouge_l_long_sentences():
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_SplitTokenizer())
    reward = get_reward("rougeL", **SPECIAL)
    pairs = random_pairs(seed=7, count=20, max_len=60)
    for (hyp, ref), got in zip(pairs, run(reward, pairs), strict=True):
        expected = scorer.score(target=text(ref, "REFUNK"), prediction=text(hyp))["rougeL"]
        assert got == pytest.approx(expected.fmeasure, abs=TOL)


# --- mixer_bleu vs a plain reference of the spec --------------------------------------------


def mixer_bleu_reference(hyp: list[int], ref: list[int], start: int, unk_matches: bool) -> float:
    """The release's BLEU, sentence by sentence. Positions are 1-indexed; s = first sampled."""
    s = start + 1
    hyp_len, ref_len = len(hyp), len(ref)
    n = min(4, hyp_len - s + 1, ref_len - s + 1)
    if n <= 0:
        return 0.0
    log_sum = 0.0
    for k in range(1, n + 1):
        # The k-gram at 0-indexed i covers 1-indexed positions i+1 .. i+k.
        hyp_grams = Counter(tuple(hyp[i : i + k]) for i in range(hyp_len - k + 1) if i + k >= s)
        ref_grams = Counter(
            tuple(ref[j : j + k])
            for j in range(ref_len - k + 1)
            if j + k >= s and (unk_matches or UNK not in ref[j : j + k])
        )
        matches = sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
        log_sum += math.log((matches + 1) / (sum(hyp_grams.values()) + 1))
    brevity = math.exp(1 - (ref_len + 1) / hyp_len) if hyp_len < ref_len else 1.0
    return math.exp(log_sum / n) * brevity


@pytest.mark.parametrize("unk_matches", [False, True])
def test_mixer_bleu_matches_reference(unk_matches):
    reward = get_reward("mixer_bleu", unk_matches=unk_matches, **SPECIAL)
    rng = random.Random(11)
    pairs = EDGE_CASES * 4 + random_pairs(seed=12, count=400)
    starts = [rng.randint(0, max(len(hyp), len(ref)) + 2) for hyp, ref in pairs]
    starts[: len(EDGE_CASES)] = [0] * len(EDGE_CASES)
    for start_arg in (starts, torch.tensor(starts)):
        got = run(reward, pairs, start=start_arg)
        for (hyp, ref), start, value in zip(pairs, starts, got, strict=True):
            expected = mixer_bleu_reference(hyp, ref, start, unk_matches)
            assert value == pytest.approx(expected, abs=TOL), (hyp, ref, start)


def test_mixer_bleu_start_forms_agree():
    reward = get_reward("mixer_bleu", **SPECIAL)
    pairs = random_pairs(seed=13, count=50)
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    default = reward(hyps, refs)
    assert torch.equal(default, reward(hyps, refs, start=0))
    assert torch.equal(default, reward(hyps, refs, start=torch.zeros(50, dtype=torch.long)))
    assert torch.equal(reward(hyps, refs, start=2), reward(hyps, refs, start=torch.tensor(2)))


def test_mixer_bleu_known_values():
    reward = get_reward("mixer_bleu", **SPECIAL)
    identical = [4, 5, 6, 7, 8]
    assert reward([identical], [identical]).tolist() == pytest.approx([1.0])
    assert reward([identical], [identical], start=3).tolist() == pytest.approx([1.0])
    # An immediate EOS and a start past the hypothesis both earn nothing.
    assert reward([[EOS, 4, 5]], [identical]).tolist() == [0.0]
    assert reward([identical], [identical], start=5).tolist() == [0.0]
    assert reward([identical], [identical], start=50).tolist() == [0.0]
    # Unigrams only (n = 1): (1 match + 1) / (1 gram + 1), brevity penalty exp(1 - 3/1).
    assert reward([[4]], [[4, 5]]).tolist() == pytest.approx([math.exp(-2)])


# --- sort-based clipped counts ------------------------------------------------------------


@pytest.mark.parametrize(("max_order", "min_order"), [(1, 1), (2, 1), (2, 2), (4, 1), (5, 3)])
@pytest.mark.parametrize("with_cut", [False, True])
def test_clipped_counts_match_pairwise_counts(max_order, min_order, with_cut):
    pairs = EDGE_CASES + random_pairs(seed=61, count=150)
    rng = random.Random(62)
    hyp, ref = to_padded_pair([h for h, _ in pairs], [r for _, r in pairs], PAD, EOS)
    blocked = ref.tokens == UNK
    cut = torch.tensor([rng.randint(0, 16) for _ in pairs]) if with_cut else None
    got = clipped_counts(hyp, ref, max_order, PAD, EOS, blocked, cut, min_order=min_order)
    hyp_ref = token_equality(hyp, ref, blocked)
    expected = clipped_matches(hyp_ref, token_equality(hyp, hyp), max_order, cut)
    assert got is not None
    assert torch.equal(got, expected[:, min_order - 1 :])


@pytest.mark.parametrize(("max_order", "min_order"), [(1, 1), (2, 1), (2, 2), (4, 1), (5, 3)])
@pytest.mark.parametrize("with_cut", [False, True])
@pytest.mark.parametrize("with_blocking", [False, True])
def test_compiled_counts_match_pairwise_counts(max_order, min_order, with_cut, with_blocking):
    pairs = EDGE_CASES + random_pairs(seed=63, count=150)
    rng = random.Random(64)
    hyp, ref = to_padded_pair([h for h, _ in pairs], [r for _, r in pairs], PAD, EOS)
    blocked = ref.tokens == UNK if with_blocking else None
    cut = torch.tensor([rng.randint(0, 16) for _ in pairs]) if with_cut else None
    hyp_ref = token_equality(hyp, ref, blocked)
    expected = clipped_matches(hyp_ref, token_equality(hyp, hyp), max_order, cut)
    got = np.zeros((len(pairs), max_order - min_order + 1), dtype=np.int64)
    hyp_runs = np.zeros((2, hyp.tokens.size(1) + 1), dtype=np.int64)
    ref_runs = np.zeros((2, ref.tokens.size(1) + 1), dtype=np.int64)
    for row in range(len(pairs)):
        first = 0 if cut is None else int(cut[row])
        clipped_matches_of_pair(
            *(hyp.tokens[row].numpy(), int(hyp.lengths[row])),
            *(ref.tokens[row].numpy(), int(ref.lengths[row])),
            *(UNK, with_blocking, first, min_order, got[row], hyp_runs, ref_runs),
        )
    assert torch.equal(torch.from_numpy(got), expected[:, min_order - 1 :])
    assert got.sum() > 0


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_cpu_rewards_run_compiled_unless_turned_off(name, counting, monkeypatch):
    """On the CPU every reward scores with its compiled kernel (the tensor path is the one
    other devices run); a reward without a kernel falls back to ``score``."""
    calls = []
    reward = get_reward(name, **SPECIAL)
    compiled_score = reward.compiled_score

    def recorded(*args):
        calls.append(args)
        return compiled_score(*args)

    monkeypatch.setattr(reward, "compiled_score", recorded)
    pairs = random_pairs(seed=91, count=20)
    expected = run(reward, pairs)
    assert len(calls) == (1 if counting == "compiled" else 0)
    monkeypatch.setattr(reward, "compiled_score", lambda *a: None)
    assert run(reward, pairs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_rewards_run_their_tensor_code_where_numba_is_missing(name, monkeypatch, caplog):
    reward = get_reward(name, **SPECIAL)
    pairs = random_pairs(seed=92, count=12)
    expected = run(reward, pairs)
    calls = []
    monkeypatch.setattr(reward, "compiled_score", lambda *args: calls.append(args))
    monkeypatch.setitem(sys.modules, "fairseq_mixer.rewards.compiled", None)  # import fails
    base.compiled_kernels_import.cache_clear()
    try:
        assert run(reward, pairs) == pytest.approx(expected, abs=1e-12)
    finally:
        base.compiled_kernels_import.cache_clear()
    assert not calls
    if base.COMPILED_ON_CPU:
        assert "the compiled ones need numba" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", REWARD_NAMES)
def test_rewards_of_cuda_tensors_come_back_on_cuda(name, counting, monkeypatch):
    """On CUDA tensors the compiled kernels score on the host; the scores go back to the
    device and equal the tensor code's there."""
    if counting == "tensor":
        pytest.skip("compares both paths itself: runs once, as the compiled parametrisation")
    reward = get_reward(name, **SPECIAL)
    pairs = random_pairs(seed=93, count=40)
    width = max(len(seq) for pair in pairs for seq in pair)
    hyps, refs = (
        torch.tensor([seq + [PAD] * (width - len(seq)) for seq in side], device="cuda")
        for side in zip(*pairs, strict=True)
    )
    start = torch.arange(len(pairs), device="cuda") % 3
    calls = []
    compiled_score = reward.compiled_score
    monkeypatch.setattr(
        reward, "compiled_score", lambda *args: calls.append(args) or compiled_score(*args)
    )
    scores = reward(hyps, refs, start=start)
    assert len(calls) == 1 and all(a.device.type == "cpu" for a in calls[0][:2])
    assert scores.device.type == "cuda"
    monkeypatch.setattr(base, "COMPILED_ON_CPU", False)
    expected = reward(hyps, refs, start=start)
    assert len(calls) == 1
    assert torch.allclose(scores, expected, atol=1e-6)


def relabel(seqs: list[list[int]], first_id: int, step: int) -> list[list[int]]:
    """Ordinary ids t (> UNK) become first_id + t * step; pad, eos and unk stay."""
    return [[tok if tok <= UNK else first_id + tok * step for tok in seq] for seq in seqs]


@pytest.mark.parametrize(
    ("first_id", "step"),
    [
        (2**16 - 13, 1),  # just below 2**16: 4-gram keys use all 64 bits
        (2**16, 7),  # above: per-row ranks instead of the ids
        (2**62, 2**40),  # near the int64 limit
        (-(2**40), 3),  # negative ids
    ],
)
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mixer_bleu", {}),
        ("sentence_bleu", {}),
        ("rouge2", {}),
        ("sentence_bleu", {"max_order": 12}),  # large ids: too many bits, pairwise counts
    ],
)
def test_scores_only_depend_on_token_equality(first_id, step, name, options):
    reward = get_reward(name, **options, **SPECIAL)
    pairs = EDGE_CASES + random_pairs(seed=71, count=120)
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    start = torch.tensor([i % 5 for i in range(len(pairs))])
    expected = reward(hyps, refs, start=start)
    relabelled = reward(relabel(hyps, first_id, step), relabel(refs, first_id, step), start=start)
    assert torch.equal(relabelled, expected)


@pytest.mark.parametrize("name", ["mixer_bleu", "sentence_bleu", "rouge2"])
def test_pad_equal_to_eos_uses_pairwise_counts(name):
    pairs = EDGE_CASES + random_pairs(seed=81, count=60)  # no eos inside
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    distinct = get_reward(name, pad=PAD, eos=EOS, unk=UNK)(hyps, refs, start=1)
    same = get_reward(name, pad=PAD, eos=PAD, unk=UNK)(hyps, refs, start=1)
    assert torch.equal(same, distinct)


# --- shared behaviour -----------------------------------------------------------------------


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_lists_and_padded_tensors_agree(name):
    reward = get_reward(name, **SPECIAL)
    pairs = EDGE_CASES + random_pairs(seed=21, count=100)
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    start = torch.tensor([i % 4 for i in range(len(pairs))])
    expected = reward(hyps, refs, start=start)
    hyp_tensor = as_tensor(hyps, width=20, seed=1)
    ref_tensor = as_tensor(refs, width=25, seed=2)
    assert torch.equal(reward(hyp_tensor, ref_tensor, start=start), expected)
    assert torch.equal(reward(hyp_tensor, refs, start=start), expected)
    assert torch.equal(reward(hyps, ref_tensor.int(), start=start), expected)
    assert torch.equal(reward(list(hyp_tensor), list(ref_tensor), start=start), expected)
    # Junk after an EOS inside a list is ignored as well.
    assert torch.equal(reward([h + [EOS, 4, 5] for h in hyps], refs, start=start), expected)


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_scores_do_not_depend_on_the_rest_of_the_batch(name):
    reward = get_reward(name, **SPECIAL)
    pairs = random_pairs(seed=31, count=40)
    together = run(reward, pairs)
    alone = [run(reward, [pair])[0] for pair in pairs]
    assert together == pytest.approx(alone, abs=1e-7)


@pytest.mark.parametrize("name", ["sentence_bleu", "rouge2", "rougeL"])
def test_start_is_ignored_by_whole_sentence_rewards(name):
    reward = get_reward(name, **SPECIAL)
    pairs = random_pairs(seed=41, count=30)
    hyps = [hyp for hyp, _ in pairs]
    refs = [ref for _, ref in pairs]
    assert torch.equal(reward(hyps, refs, start=100), reward(hyps, refs))


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_unk_in_reference_matches_only_when_asked(name):
    pair = ([UNK, 4, 5, 6, 7], [UNK, 4, 5, 6, 7])
    strict = run(get_reward(name, **SPECIAL), [pair])[0]
    lenient = run(get_reward(name, unk_matches=True, **SPECIAL), [pair])[0]
    assert lenient == pytest.approx(1.0)
    assert strict < lenient
    only_unk = ([UNK, UNK], [UNK, UNK])
    assert run(get_reward(name, **SPECIAL), [only_unk])[0] < 1.0


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_identical_and_disjoint_sentences(name):
    reward = get_reward(name, **SPECIAL)
    same = [4, 5, 6, 7, 8, 9]
    assert run(reward, [(same, same)]) == pytest.approx([1.0])
    if name != "mixer_bleu":  # add-one smoothing keeps a disjoint sample above 0
        assert run(reward, [([4, 5, 6], [7, 8, 9])]) == [0.0]


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_empty_batches(name):
    reward = get_reward(name, **SPECIAL)
    for hyps, refs in (([], []), (torch.ones(0, 5, dtype=torch.long), [])):
        scores = reward(hyps, refs)
        assert scores.shape == (0,)
        assert scores.dtype == torch.float32


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_input_errors(name):
    reward = get_reward(name, **SPECIAL)
    with pytest.raises(ValueError, match="batch size"):
        reward([[4, 5]], [[4], [5]])
    with pytest.raises(ValueError, match="2-D"):
        reward(torch.tensor([4, 5]), torch.tensor([[4, 5]]))
    with pytest.raises(ValueError, match="integer"):
        reward(torch.zeros(1, 2), [[4]])


def test_start_errors():
    reward = get_reward("mixer_bleu", **SPECIAL)
    with pytest.raises(ValueError, match="shape"):
        reward([[4, 5]], [[4, 5]], start=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        reward([[4, 5]], [[4, 5]], start=-1)


def test_registry_and_options():
    assert REWARD_NAMES == ("mixer_bleu", "sentence_bleu", "rouge2", "rougeL")
    with pytest.raises(ValueError, match=r"'bleu4'.*mixer_bleu, sentence_bleu, rouge2, rougeL"):
        get_reward("bleu4")
    with pytest.raises(TypeError, match="'smooth_method'.*'mixer_bleu'"):
        get_reward("mixer_bleu", smooth_method="exp")
    with pytest.raises(TypeError, match="'measure'"):
        get_reward("sentence_bleu", measure="recall")
    with pytest.raises(ValueError, match="smooth_method"):
        get_reward("sentence_bleu", smooth_method="add-one")
    with pytest.raises(ValueError, match="smooth_value"):
        get_reward("sentence_bleu", smooth_method="floor", smooth_value=-0.1)
    with pytest.raises(ValueError, match="max_order"):
        get_reward("sentence_bleu", max_order=0)
    with pytest.raises(ValueError, match="measure"):
        get_reward("rougeL", measure="f1")
    assert get_reward("rouge2", pad=0, eos=1, unk=2).pad == 0


def test_rewards_import_without_fairseq():
    """The rewards subpackage needs torch and numba only (the parent package is stubbed to skip
    fairseq)."""
    package_dir = Path(__file__).resolve().parents[1] / "fairseq_mixer"
    code = textwrap.dedent(
        f"""
        import sys, types
        parent = types.ModuleType("fairseq_mixer")
        parent.__path__ = [{str(package_dir)!r}]
        sys.modules["fairseq_mixer"] = parent
        from fairseq_mixer.rewards import get_reward
        print(get_reward("rougeL")([[4, 5]], [[4, 5]]).tolist())
        assert not any(name.split(".")[0] == "fairseq" for name in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0]"


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", REWARD_NAMES)
def test_output_device_and_dtype(name, device):
    reward = get_reward(name, **SPECIAL)
    pairs = random_pairs(seed=51, count=60)
    hyps = as_tensor([hyp for hyp, _ in pairs], width=18, seed=3)
    refs = as_tensor([ref for _, ref in pairs], width=16, seed=4)
    start = torch.tensor([i % 3 for i in range(len(pairs))])
    expected = reward(hyps, refs, start=start)
    scores = reward(hyps.to(device), refs.to(device), start=start.to(device))
    assert scores.device.type == device
    assert scores.dtype == torch.float32
    assert torch.allclose(scores.cpu(), expected, atol=1e-6, rtol=0)
