"""Rewards on decoded text against sacrebleu and rouge-score, the flags, and a training step on a
sentencepiece-binarised dataset."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_tool
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesDetokenizer

from fairseq_mixer.criterions.mixer import MixerCriterionConfig, check_reward_options
from fairseq_mixer.rewards import SentenceBleu, TextForm, get_reward, text_rewards
from fairseq_mixer.rewards.text_rewards import TextChrf, TextSentenceBleu

TOL = 1e-6
HYP_UNK, REF_UNK = "UNKNOWNTOKENINHYP", "UNKNOWNTOKENINREF"

# Pieces that join into words, punctuation glued to words or standing alone, digits next to
# dots and dashes, html entities, non-ASCII letters and a non-Latin script.
SPM_PIECES = [
    "▁a", "▁man", "▁in", "▁blue", "s", "ing", ".", "▁.", ",", "▁dog", "▁Zoë", "é", "▁(", ")",
    "▁3", ".5", "-", "▁&quot;", "▁it's", "▁über", "▁東京", "京", "▁A", "▁MAN", "!", "▁",
    "x▁y", "\u00a0z",
]  # fmt: skip
BPE_PIECES = [
    "a", "man", "in", "bl@@", "ue", "s", "do@@", "g", ".", ",", "Zo@@", "ë", "(", ")", "3",
    ".5", "-@@", "&quot;", "it's", "über", "東@@", "京", "A", "MAN", "!",
]  # fmt: skip
WORD_PIECES = ["a", "man", "in", "blue", "dog", ".", ",", "Zoë", "(", ")", "3.5", "-", "'s", "!"]


def dictionary(pieces: list[str]) -> Dictionary:
    vocab = Dictionary()
    for piece in pieces:
        vocab.add_symbol(piece)
    return vocab


def random_rows(vocab: Dictionary, seed: int, count: int, max_len: int = 14) -> list[list[int]]:
    """Random id sentences (<unk> included); every other one an edit of the one before, so
    that n-grams of higher orders match."""
    rng = random.Random(seed)
    ids = [*range(vocab.nspecial, len(vocab)), vocab.unk()]
    rows: list[list[int]] = []
    for index in range(count):
        if index % 2 and rows:
            row = [tok for tok in rows[-1] if rng.random() > 0.2]
            row.insert(rng.randint(0, len(row)), rng.choice(ids))
        else:
            row = [rng.choice(ids) for _ in range(rng.randint(0, max_len))]
        rows.append(row)
    return rows


EDGE_ROWS = [  # (hypothesis, reference) as piece strings; "<unk>" is the unknown id
    ([], ["▁a", "▁man"]),
    ([], []),
    (["▁a"], []),
    (["▁a", "▁man"], ["▁a", "▁man"]),
    (["<unk>"], ["<unk>"]),
    (["▁a", "<unk>", "s"], ["▁a", "<unk>", "s"]),
    (["▁blue", "s", "ing"], ["▁blue", "s", "ing"]),
    (["▁blue", "s"], ["▁blue"]),
    (["▁"], ["▁", "."]),
    (["▁東京", "京", "!"], ["▁東京", "!"]),
    (["▁3", ".5", "-"], ["▁3", "-", ".5"]),
    (["▁&quot;", "▁a", "▁&quot;"], ["▁&quot;", "▁a", "▁&quot;"]),
    (["▁A", "▁MAN"], ["▁a", "▁man"]),
    (["▁blue", *["s"] * 15, "▁a"], ["▁blue", *["s"] * 15]),  # a word of many pieces
    (["▁a", "x▁y", "▁man"], ["▁a", "\u00a0z"]),  # pieces that hold a word boundary
]


def edge_rows(vocab: Dictionary) -> list[tuple[list[int], list[int]]]:
    def ids(pieces):
        return [vocab.unk() if piece == "<unk>" else vocab.index(piece) for piece in pieces]

    return [(ids(hyp), ids(ref)) for hyp, ref in EDGE_ROWS]


def padded(vocab: Dictionary, rows: list[list[int]], junk_after_eos: bool = True) -> torch.Tensor:
    """[B, L]: each row, eos, then pad (or, for every third row, more tokens after the eos,
    which the rewards ignore)."""
    width = max(map(len, rows), default=0) + 3
    tokens = torch.full((len(rows), width), vocab.pad())
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        tokens[i, len(row)] = vocab.eos()
        if junk_after_eos and i % 3 == 0:
            tokens[i, len(row) + 1] = vocab.nspecial
    return tokens


def fairseq_text(vocab: Dictionary, row: list[int], post_process: str, unk: str) -> str:
    """What fairseq's validation BLEU scores (before its detokeniser)."""
    return vocab.string(torch.tensor(row, dtype=torch.long), post_process, unk_string=unk)


def texts(vocab, pairs, post_process, detok=None, unk_matches=False):
    hyp_unk, ref_unk = ("UNKNOWNTOKEN", "UNKNOWNTOKEN") if unk_matches else (HYP_UNK, REF_UNK)
    finish = (lambda text: detok.detokenize(text.split())) if detok else (lambda text: text)
    hyps = [finish(fairseq_text(vocab, hyp, post_process, hyp_unk)) for hyp, _ in pairs]
    refs = [finish(fairseq_text(vocab, ref, post_process, ref_unk)) for _, ref in pairs]
    return hyps, refs


def scores_of(reward, vocab, pairs) -> list[float]:
    hyps = padded(vocab, [hyp for hyp, _ in pairs])
    refs = padded(vocab, [ref for _, ref in pairs])
    return reward(hyps, refs).tolist()


def scored(reward, vocab, pairs, post_process) -> list[tuple[str, str, float]]:
    """(hypothesis text, reference text, the reward's score) of each pair."""
    hyps, refs = texts(vocab, pairs, post_process)
    return list(zip(hyps, refs, scores_of(reward, vocab, pairs), strict=True))


def text_reward(name: str, vocab: Dictionary, **options):
    return get_reward(
        name, symbols=vocab.symbols, pad=vocab.pad(), eos=vocab.eos(), unk=vocab.unk(),
        bos=vocab.bos(), **options,
    )  # fmt: skip


SPM = dictionary(SPM_PIECES)
BPE = dictionary(BPE_PIECES)
WORDS = dictionary(WORD_PIECES)
CASES = [(SPM, "sentencepiece"), (BPE, "subword_nmt"), (WORDS, "none")]


def cases(vocab: Dictionary, seed: int, count: int = 200) -> list[tuple[list[int], list[int]]]:
    rows = random_rows(vocab, seed, 2 * count)
    pairs = list(zip(rows[0::2], rows[1::2], strict=True))
    if vocab is SPM:
        pairs = edge_rows(vocab) + pairs
    return pairs


# --- equality with sacrebleu and rouge-score ---------------------------------------------------


@pytest.mark.parametrize("vocab, post_process", CASES, ids=["spm", "bpe", "words"])
@pytest.mark.parametrize("tokenize", ["13a", "intl", "char", "none"])
def test_sentence_bleu_matches_sacrebleu(vocab, post_process, tokenize):
    reward = text_reward("sentence_bleu", vocab, text=TextForm(post_process), tokenize=tokenize)
    pairs = cases(vocab, seed=len(tokenize))
    metric = BLEU(tokenize=tokenize, effective_order=True)
    for hyp, ref, got in scored(reward, vocab, pairs, post_process):
        expected = metric.sentence_score(hyp, [ref]).score / 100
        assert got == pytest.approx(expected, abs=TOL), (hyp, ref)


@pytest.mark.parametrize(
    "smooth_method, smooth_value", [("none", None), ("floor", 0.2), ("add-k", 1), ("exp", None)]
)
@pytest.mark.parametrize("lowercase", [False, True])
def test_sentence_bleu_smoothing_and_case(smooth_method, smooth_value, lowercase):
    reward = text_reward(
        "sentence_bleu", SPM, text=TextForm("sentencepiece"), smooth_method=smooth_method,
        smooth_value=smooth_value, lowercase=lowercase,
    )  # fmt: skip
    pairs = cases(SPM, seed=5, count=120)
    metric = BLEU(
        smooth_method=smooth_method, smooth_value=smooth_value, lowercase=lowercase,
        effective_order=True,
    )  # fmt: skip
    for hyp, ref, got in scored(reward, SPM, pairs, "sentencepiece"):
        assert got == pytest.approx(metric.sentence_score(hyp, [ref]).score / 100, abs=TOL)


@pytest.mark.parametrize("vocab, post_process", CASES, ids=["spm", "bpe", "words"])
@pytest.mark.parametrize("word_order, lowercase", [(0, False), (2, False), (2, True), (1, False)])
def test_chrf_matches_sacrebleu(vocab, post_process, word_order, lowercase):
    reward = text_reward(
        "chrf", vocab, text=TextForm(post_process), word_order=word_order, lowercase=lowercase
    )
    pairs = cases(vocab, seed=word_order + 10)
    metric = CHRF(word_order=word_order, lowercase=lowercase)
    for hyp, ref, got in scored(reward, vocab, pairs, post_process):
        assert got == pytest.approx(metric.sentence_score(hyp, [ref]).score / 100, abs=TOL)


class _WhitespaceTokenizer:
    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


@pytest.mark.parametrize("name", ["rouge2", "rougeL"])
@pytest.mark.parametrize("measure", ["fmeasure", "recall", "precision"])
def test_rouge_matches_rouge_score(name, measure):
    reward = text_reward(name, SPM, text=TextForm("sentencepiece"), measure=measure)
    scorer = rouge_scorer.RougeScorer([name], tokenizer=_WhitespaceTokenizer())
    pairs = cases(SPM, seed=len(measure))
    for hyp, ref, got in scored(reward, SPM, pairs, "sentencepiece"):
        expected = getattr(scorer.score(target=ref, prediction=hyp)[name], measure)
        assert got == pytest.approx(expected, abs=TOL), (hyp, ref)


def test_moses_detokeniser_and_matching_unknowns():
    """--reward-detok moses: sacremoses' detokeniser, as fairseq's --eval-bleu-detok moses."""
    vocab = WORDS
    pairs = cases(vocab, seed=3, count=100) + [([vocab.unk()], [vocab.unk()])]
    for unk_matches in (False, True):
        reward = text_reward(
            "sentence_bleu", vocab, text=TextForm("none", detok="moses"), unk_matches=unk_matches
        )
        hyps, refs = texts(vocab, pairs, "none", MosesDetokenizer(lang="en"), unk_matches)
        metric = BLEU(effective_order=True)
        for hyp, ref, got in zip(hyps, refs, scores_of(reward, vocab, pairs), strict=True):
            assert got == pytest.approx(metric.sentence_score(hyp, [ref]).score / 100, abs=TOL)
        assert scores_of(reward, vocab, pairs[-1:]) == [1.0 if unk_matches else 0.0]


def test_edge_cases_by_value():
    reward = text_reward("sentence_bleu", SPM, text=TextForm("sentencepiece"))
    scores = scores_of(reward, SPM, edge_rows(SPM))
    assert scores[0] == 0.0 and scores[1] == 0.0 and scores[2] == 0.0  # empty sides
    assert scores[3] == pytest.approx(1.0)
    assert scores[4] == 0.0  # an unknown piece never matches one in the reference
    assert scores[6] == pytest.approx(1.0)  # "bluesing": three pieces, one word
    assert scores[7] == 0.0  # "blues" is not "blue"
    bos_only = torch.tensor([[SPM.bos(), SPM.index("▁a"), SPM.eos()]])
    assert reward(bos_only, torch.tensor([[SPM.index("▁a"), SPM.eos()]])).tolist() == [1.0]
    no_eos = torch.tensor([[SPM.index("▁a"), SPM.index("▁man")]])
    assert reward(no_eos, no_eos).tolist() == [1.0]
    assert reward(no_eos[:0], no_eos[:0]).shape == (0,)


def test_rewards_lie_in_the_unit_interval_and_follow_the_input_device():
    pairs = cases(SPM, seed=9, count=100)
    for name in ("sentence_bleu", "chrf", "rouge2", "rougeL"):
        scores = torch.tensor(
            scores_of(text_reward(name, SPM, text=TextForm("sentencepiece")), SPM, pairs)
        )
        assert scores.min() >= 0 and scores.max() <= 1 and scores.max() == 1.0
    reward = text_reward("chrf", SPM)
    out = reward(padded(SPM, [[5, 6]]), padded(SPM, [[5, 6]]))
    assert out.dtype == torch.float32 and out.device.type == "cpu"


# --- the caches --------------------------------------------------------------------------------


def test_references_are_decoded_once(monkeypatch):
    reward = text_reward("sentence_bleu", SPM, text=TextForm("sentencepiece"))
    irregular = {SPM.index("x▁y"), SPM.index("\u00a0z")}  # rows with them are read as text
    pairs = [pair for pair in cases(SPM, seed=4, count=50) if not irregular & set(pair[0])]
    first = scores_of(reward, SPM, pairs)
    distinct = {tuple(ref) for _, ref in pairs}
    assert len(reward.reference_table) == len(distinct)
    decoded = []
    lines = reward.decoder.lines
    monkeypatch.setattr(
        reward.decoder, "lines", lambda tokens, side: decoded.append(side) or lines(tokens, side)
    )
    assert scores_of(reward, SPM, pairs) == first
    assert decoded == []  # references from the cache, hypotheses' words from their pieces
    reward.decoder.piece_words = None  # words read from the text instead
    assert scores_of(reward, SPM, pairs) == first
    assert decoded == ["hyp"]


def test_full_caches_start_again(monkeypatch):
    monkeypatch.setattr(text_rewards, "CACHE_LIMIT", 5)
    pairs = cases(SPM, seed=6, count=60)
    for name, options in (("sentence_bleu", {}), ("chrf", {"word_order": 2})):
        limited = text_reward(name, SPM, text=TextForm("sentencepiece"), **options)
        expected = scores_of(limited, SPM, pairs)
        for _ in range(3):
            assert scores_of(limited, SPM, pairs[:10]) == expected[:10]
            assert scores_of(limited, SPM, pairs[10:]) == expected[10:]
        assert len(limited.vocab) < 200


def test_word_local_tokenisers_equal_the_whole_line():
    """13a, char and none tokenise word by word here: the same tokens as the whole line."""
    rng = random.Random(0)
    alphabet = list("ab.,-09&;'\"()?!é京 ") + ["&quot;", "&amp;", "<skipped>", "\u00a0"]
    for tokenize in text_rewards.WORD_LOCAL_TOKENIZERS:
        reward = text_reward("sentence_bleu", WORDS, tokenize=tokenize)
        for _ in range(300):
            line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            per_word = [tok for word in line.split() for tok in reward.metric_tokens(word)]
            assert per_word == reward.metric_tokens(line), (tokenize, line)


# --- construction and flags -------------------------------------------------------------------


def test_text_reward_options():
    with pytest.raises(ValueError, match="symbols"):
        get_reward("chrf")
    with pytest.raises(ValueError, match="tokeniser 'moses'"):
        text_reward("sentence_bleu", SPM, tokenize="moses")
    with pytest.raises(ValueError, match="post-processing 'bpe'"):
        TextForm("bpe")
    with pytest.raises(ValueError, match="detokeniser"):
        TextForm("none", detok="nltk")
    with pytest.raises(TypeError, match="'measure'"):
        text_reward("chrf", SPM, measure="recall")
    with pytest.raises(ValueError, match="scores token ids only"):
        text_reward("mixer_bleu", SPM)
    assert isinstance(get_reward("sentence_bleu"), SentenceBleu)
    assert isinstance(text_reward("chrf", SPM, word_order=2), TextChrf)
    signature = text_reward("sentence_bleu", SPM, text=TextForm("sentencepiece")).signature()
    assert signature == (
        "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0"
        "|post-process:sentencepiece|detok:none"
    )


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"reward": "mixer_bleu", "reward_post_process": "sentencepiece"}, "--reward-post-process"),
        ({"reward": "mixer_bleu", "reward_detok": "moses"}, "--reward-detok"),
        ({"reward": "chrf", "reward_tokenize": "13a"}, "--reward-tokenize"),
        ({"reward": "rougeL", "reward_tokenize": "intl"}, "--reward-tokenize"),
        ({"reward": "sentence_bleu", "reward_tokenize": "moses"}, "--reward-tokenize 'moses'"),
        ({"reward": "sentence_bleu", "reward_post_process": "bpe"}, "--reward-post-process 'bpe'"),
        ({"reward": "sentence_bleu", "reward_chrf_word_order": 2}, "--reward-chrf-word-order"),
        ({"reward": "chrf", "reward_chrf_word_order": -1}, "--reward-chrf-word-order"),
        ({"reward": "rouge2", "reward_lowercase": True}, "--reward-lowercase"),
    ],
)
def test_impossible_flag_combinations_name_the_flag(options, flag):
    with pytest.raises(ValueError, match=flag.replace("'", ".")):
        check_reward_options(MixerCriterionConfig(**options))


def test_without_text_flags_nothing_changes():
    check_reward_options(MixerCriterionConfig())
    from fairseq_mixer.criterions.mixer import reward_options

    assert reward_options(MixerCriterionConfig()) == {"unk_matches": False, "smooth_method": "exp"}
    assert "text" in reward_options(MixerCriterionConfig(reward="chrf"))


# --- a training step on sentencepiece data ----------------------------------------------------

WORDS_OF_SENTENCES = (
    "a man in a blue shirt is standing on a ladder . two dogs play in the grass near Zoë's "
    "café , while 3 children watch ( happily ) ! the woman rides a bicycle down the street"
).split()


@pytest.fixture(scope="module")
def spm_bin(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny German-English-like pair in sentencepiece pieces, binarised with a joined
    dictionary: (bin folder, sentencepiece model)."""
    import sentencepiece

    folder = tmp_path_factory.mktemp("spm_data")
    rng = random.Random(1)
    lines = {
        split: [" ".join(rng.choices(WORDS_OF_SENTENCES, k=rng.randint(3, 12))) for _ in range(n)]
        for split, n in (("train", 160), ("valid", 24))
    }
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines["train"]), model_prefix=str(folder / "spm"), vocab_size=80,
        model_type="bpe", character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    for split, split_lines in lines.items():
        for lang, shift in (("de", 1), ("en", 0)):
            shifted = [
                " ".join(line.split()[shift:] + line.split()[:shift]) for line in split_lines
            ]
            pieces = [" ".join(p) for p in processor.encode(shifted, out_type=str)]
            (folder / f"{split}.{lang}").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    run_tool(
        [
            sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de",
            "--target-lang", "en", "--trainpref", str(folder / "train"),
            "--validpref", str(folder / "valid"), "--destdir", str(folder / "bin"),
            "--joined-dictionary", "--workers", "1",
        ]
    )  # fmt: skip
    return folder / "bin", folder / "spm.model"


TEXT_MIXER = [
    "--criterion", "mixer", "--reward", "sentence_bleu", "--reward-post-process", "sentencepiece",
    "--mixer-xent-epochs", "1", "--mixer-epochs-per-stage", "1", "--mixer-unroll-steps", "6",
    "--mixer-delta", "3",
]  # fmt: skip


def test_mixer_step_with_the_text_reward_on_sentencepiece_data(spm_bin, caplog):
    from harness import TINY_TRANSFORMER, build, first_batch, grads_of, set_stage

    data, _ = spm_bin
    with caplog.at_level("INFO"):
        _, task, model, criterion = build(data, TINY_TRANSFORMER + TEXT_MIXER + ["--eval-bleu"])
    assert isinstance(criterion.reward, TextSentenceBleu)
    assert "tok:13a|smooth:exp|version:2.6.0|post-process:sentencepiece" in caplog.text
    sample = first_batch(task)
    set_stage(task, criterion, epoch=2)
    model.train()
    loss, _, log = criterion(model, sample)
    assert torch.isfinite(loss) and log["rl_tokens"] > 0
    assert 0.0 <= float(log["reward"]) <= float(log["sampled_sentences"])
    loss.backward()
    assert grads_of(model) and all(torch.isfinite(g).all() for g in grads_of(model).values())

    # validation BLEU reads the reward's text: fairseq's own with --eval-bleu-remove-bpe
    # sentencepiece gives the same statistics.
    model.eval()
    valid = first_batch(task, "valid")
    with torch.no_grad():
        ours = task._inference_with_bleu(task.sequence_generator, valid, model)
        task.cfg.eval_bleu_remove_bpe = "sentencepiece"
        task.tokenizer = None
        fairseqs = TranslationTask._inference_with_bleu(task, task.sequence_generator, valid, model)
    assert (ours.counts, ours.totals, ours.sys_len, ours.ref_len) == (
        fairseqs.counts, fairseqs.totals, fairseqs.sys_len, fairseqs.ref_len,
    )  # fmt: skip


def test_flags_reach_the_criterion_and_conflicts_are_refused(spm_bin):
    from harness import TINY_TRANSFORMER, build, first_batch

    data, _ = spm_bin
    chrf = [
        "--reward",
        "chrf",
        "--reward-chrf-word-order",
        "2",
        "--reward-post-process",
        "sentencepiece",
    ]
    _, _, _, criterion = build(data, TINY_TRANSFORMER + TEXT_MIXER + chrf)
    assert isinstance(criterion.reward, TextChrf) and criterion.reward.word_order == 2
    with pytest.raises(ValueError, match="--reward-tokenize"):
        build(data, TINY_TRANSFORMER + TEXT_MIXER + chrf + ["--reward-tokenize", "13a"])
    with pytest.raises(ValueError, match="--eval-bleu-remove-bpe"):
        build(data, TINY_TRANSFORMER + TEXT_MIXER + ["--eval-bleu", "--eval-bleu-remove-bpe"])
    _, _, _, criterion = build(data, TINY_TRANSFORMER + TEXT_MIXER[:4] + TEXT_MIXER[6:])
    assert isinstance(criterion.reward, SentenceBleu)  # no text flag: the id reward

    rouge = ["--reward", "rougeL", "--eval-rouge"]
    _, task, model, criterion = build(data, TINY_TRANSFORMER + TEXT_MIXER + rouge)
    valid = first_batch(task, "valid")
    model.eval()
    with torch.no_grad():
        hyps, refs = task._greedy_hypotheses(valid, model)  # validation ROUGE's text
    assert refs == criterion.reward.decoder.lines(valid["target"].numpy(), "ref")
    assert refs[0] and "\u2581" not in "".join(refs) and len(hyps) == len(refs)


# --- the reported score and the data --------------------------------------------------------


def load_evaluate():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("script_evaluate_text", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_evaluate_reads_the_text_the_reward_scores():
    """evaluate.py --post-process turns fairseq-generate's H- lines (symbols) into the text the
    reward and the validation BLEU score, and reports chrF with BLEU."""
    evaluate = load_evaluate()
    pairs = cases(SPM, seed=8, count=40)
    reward = text_reward("chrf", SPM, text=TextForm("sentencepiece"))
    form = evaluate.text_form("sentencepiece", "none", "en")
    symbols = [SPM.string(torch.tensor(hyp, dtype=torch.long)) for hyp, _ in pairs]  # H- lines
    hyps = form.finish_all(evaluate.unknowns_as(symbols, "<unk>", HYP_UNK))
    assert hyps == reward.decoder.lines(padded(SPM, [hyp for hyp, _ in pairs]).numpy(), "hyp")
    refs = texts(SPM, pairs, "sentencepiece")[1]
    scores = evaluate.score("bleu", hyps, refs, "13a", chrf_word_order=2)
    assert scores["chrf"] == pytest.approx(CHRF(word_order=2).corpus_score(hyps, [refs]).score)
    assert "nw:2" in scores["chrf_signature"] and "tok:13a" in scores["signature"]
    assert evaluate.text_form(None, "space", "en") is None
    with pytest.raises(evaluate.EvaluationError, match="--post-process 'bpe'"):
        evaluate.text_form("bpe", "none", "en")


def test_multi30k_raw_text_is_kept_as_it_is():
    from data_prep.common import ParallelSplit
    from data_prep.prepare_multi30k import build_parser, tokenise_split

    split = ParallelSplit("valid", ["Ein  Hund, der läuft."], ["A dog (running)."])
    raw = tokenise_split(split, ("de", "en"), lowercase=False, workers=1, tokenizer="none")
    assert (raw.source, raw.target) == (["Ein Hund, der läuft."], ["A dog (running)."])
    moses = tokenise_split(split, ("de", "en"), lowercase=False, workers=1)
    assert moses.target == ["A dog ( running ) ."]
    assert build_parser().parse_args(["--dest", "x", "--tokenizer", "none"]).tokenizer == "none"
