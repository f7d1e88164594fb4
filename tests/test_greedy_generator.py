"""Beam 1 under the mixer task: the greedy decoder gives SequenceGenerator's hypotheses."""

import math
import re

import pytest
import torch
from cli_runs import BIN, PLUGIN
from conftest import run_tool
from fairseq.dataclass.configs import GenerationConfig
from fairseq.sequence_generator import SequenceGenerator, SequenceGeneratorWithAlignment
from fairseq.tasks.translation import TranslationTask
from harness import ARCHS, UPDATES, build
from omegaconf import OmegaConf

from fairseq_mixer.rollout import greedy_generator
from fairseq_mixer.rollout.greedy_generator import GreedyGenerator

KEYS = {"tokens", "score", "attention", "alignment", "positional_scores"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def valid_batches(task, max_sentences: int = 16) -> list[dict]:
    task.load_dataset("valid")
    batches = task.get_batch_iterator(
        dataset=task.dataset("valid"), max_sentences=max_sentences, seed=1
    ).next_epoch_itr(shuffle=False)
    return list(batches)


def stock_generator(task, model, args):
    """What fairseq's translation task builds, the mixer task's hook left out."""
    generator = TranslationTask.build_generator(task, [model], args)
    assert type(generator) is SequenceGenerator
    return generator


def assert_same_hypotheses(mine, theirs) -> list[int]:
    """Compare two generators' outputs; return the hypothesis lengths."""
    assert len(mine) == len(theirs)
    lengths = []
    for ours, stock in zip(mine, theirs, strict=True):
        assert len(ours) == len(stock) == 1
        ours, stock = ours[0], stock[0]
        assert set(ours) == set(stock) == KEYS
        assert torch.equal(ours["tokens"], stock["tokens"])
        # float32 rounding: the batches' shapes differ from SequenceGenerator's over time
        close = dict(atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours["positional_scores"], stock["positional_scores"], **close)
        torch.testing.assert_close(ours["score"], stock["score"], **close)
        torch.testing.assert_close(ours["attention"], stock["attention"], **close)
        assert ours["alignment"].numel() == stock["alignment"].numel() == 0
        lengths.append(len(ours["tokens"]))
    return lengths


def decode_both(task, model, args, batches) -> list[int]:
    greedy = task.build_generator([model], args)
    assert isinstance(greedy, GreedyGenerator)
    stock = stock_generator(task, model, args)
    lengths = []
    for sample in batches:
        mine = task.inference_step(greedy, [model], sample)
        lengths += assert_same_hypotheses(mine, task.inference_step(stock, [model], sample))
    return lengths


def launch_bound(monkeypatch, steps_between_syncs: int = 3) -> None:
    """The loop CUDA runs (a look at the ended sentences every few steps), here on the CPU."""
    monkeypatch.setattr(greedy_generator, "uses_launch_bound_loop", lambda device: True)
    monkeypatch.setattr(greedy_generator, "STEPS_BETWEEN_SYNCS", steps_between_syncs)


@pytest.mark.parametrize("loop", ["synchronising", "launch_bound"])
@pytest.mark.parametrize("arch", ["lstm", "transformer", "mixer_paper"])
def test_greedy_gives_the_hypotheses_of_sequence_generator(trained, arch, loop, monkeypatch):
    if loop == "launch_bound":
        launch_bound(monkeypatch)
    _, task, model = trained(arch)
    args = GenerationConfig(beam=1, max_len_b=40)
    lengths = decode_both(task, model, args, valid_batches(task))
    assert len(lengths) == 48
    assert len(set(lengths)) >= 3, lengths  # EOS at varied steps, not only at max_len


@pytest.mark.parametrize(
    "options",
    [
        dict(min_len=3, lenpen=0.6, unkpen=2.0, temperature=0.7),
        dict(unnormalized=True, max_len_a=0.5, max_len_b=2),
    ],
)
@pytest.mark.parametrize("loop", ["synchronising", "launch_bound"])
def test_greedy_follows_the_generation_options(trained, options, loop, monkeypatch):
    if loop == "launch_bound":
        launch_bound(monkeypatch)
    _, task, model = trained("transformer")
    decode_both(task, model, GenerationConfig(beam=1, **options), valid_batches(task, 12))


def test_eos_is_forced_at_max_len(trained):
    _, task, model = trained("lstm")
    args = GenerationConfig(beam=1, max_len_a=0, max_len_b=3)
    lengths = decode_both(task, model, args, valid_batches(task))
    assert max(lengths) == 4 and min(lengths) < 4  # 3 tokens and the forced EOS
    greedy = task.build_generator([model], args)
    hypotheses = greedy.generate([model], valid_batches(task)[0])
    assert all(h[0]["tokens"][-1] == task.tgt_dict.eos() for h in hypotheses)


def test_max_len_follows_the_padded_source_width(trained):
    _, task, model = trained("lstm")
    greedy = task.build_generator([model], GenerationConfig(beam=1, max_len_a=1.5, max_len_b=2))
    assert greedy.max_length(10) == 17
    sample = valid_batches(task)[0]
    width = sample["net_input"]["src_tokens"].size(1)
    hypotheses = greedy.generate([model], sample)
    assert max(len(h[0]["tokens"]) for h in hypotheses) <= int(1.5 * width + 2) + 1


def test_min_len_holds_eos_back(trained):
    _, task, model = trained("lstm")
    lengths = decode_both(task, model, GenerationConfig(beam=1, min_len=6), valid_batches(task))
    assert min(lengths) == 7  # EOS first allowed after 6 tokens
    greedy = task.build_generator([model], GenerationConfig(beam=1, min_len=5, max_len_b=4))
    with pytest.raises(ValueError, match="min-len"):
        greedy.generate([model], valid_batches(task)[0])


def test_prefix_tokens_and_bos_go_to_sequence_generator(trained):
    _, task, model = trained("lstm")
    args = GenerationConfig(beam=1)
    greedy = task.build_generator([model], args)
    stock = stock_generator(task, model, args)
    sample = valid_batches(task)[0]
    prefix = sample["target"][:, :2]
    mine = task.inference_step(greedy, [model], sample, prefix_tokens=prefix)
    assert_same_hypotheses(mine, task.inference_step(stock, [model], sample, prefix_tokens=prefix))
    assert all(torch.equal(h[0]["tokens"][:2], p) for h, p in zip(mine, prefix, strict=True))
    assert isinstance(greedy.stock_generator(), SequenceGenerator)
    bos = task.tgt_dict.unk()
    mine = greedy.generate([model], sample, bos_token=bos)
    assert_same_hypotheses(mine, stock.generate([model], sample, bos_token=bos))


@pytest.mark.parametrize(
    "options, stock_class",
    [
        (dict(beam=5), SequenceGenerator),
        (dict(beam=1, prefix_size=1), SequenceGenerator),
        (dict(beam=1, no_repeat_ngram_size=2), SequenceGenerator),
        (dict(beam=1, sampling=True), SequenceGenerator),
        (dict(beam=1, match_source_len=True), SequenceGenerator),
        (dict(beam=1, retain_dropout=True), SequenceGenerator),
        (dict(beam=1, print_alignment="hard"), SequenceGeneratorWithAlignment),
    ],
)
def test_other_searches_get_fairseqs_generator(trained, options, stock_class):
    _, task, model = trained("lstm")
    assert type(task.build_generator([model], GenerationConfig(**options))) is stock_class


def test_ensembles_and_language_models_get_fairseqs_generator(trained):
    _, task, model = trained("lstm")
    args = GenerationConfig(beam=1)
    assert type(task.build_generator([model, model], args)) is SequenceGenerator
    fusion = {"lm_model": model, "lm_weight": 0.5}
    assert type(task.build_generator([model], args, extra_gen_cls_kwargs=fusion)) is (
        SequenceGenerator
    )
    no_fusion = {"lm_model": None, "lm_weight": 0.0}  # what fairseq-generate passes
    greedy = task.build_generator([model], args, extra_gen_cls_kwargs=no_fusion)
    assert isinstance(greedy, GreedyGenerator)
    assert greedy.symbols_to_strip_from_output == {task.tgt_dict.eos()}


def test_the_flag_and_validation_decoding(synthetic_bin):
    _, task, model, _ = build(synthetic_bin, ARCHS["lstm"] + ["--mixer-stock-generator"])
    assert type(task.build_generator([model], GenerationConfig(beam=1))) is SequenceGenerator
    _, task, _, _ = build(synthetic_bin, ARCHS["lstm"] + ["--eval-bleu"])
    assert isinstance(task.sequence_generator, GreedyGenerator)  # eval_bleu_args: beam 1


def save_checkpoint(cfg, model, path) -> None:
    """A checkpoint fairseq-generate loads, without a trainer."""
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "optimizer_history": [
            {"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
             "lr_scheduler_state": {}, "num_updates": UPDATES}
        ],
        "extra_state": {},
    }  # fmt: skip
    torch.save(state, path)


def hypothesis_lines(stdout: str) -> dict[int, tuple[float, str]]:
    found = re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", stdout, flags=re.MULTILINE)
    return {int(sid): (float(score), text) for sid, score, text in found}


@pytest.mark.slow
def test_fairseq_generate_prints_the_same_with_and_without_the_flag(
    synthetic_bin, trained, tmp_path
):
    cfg, _, model = trained("lstm")
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(cfg, model, checkpoint)
    args = [
        str(BIN / "fairseq-generate"), str(synthetic_bin), "--user-dir", PLUGIN, "--task", "mixer",
        "--path", str(checkpoint), "--beam", "1", "--cpu", "--batch-size", "16",
        "--required-batch-size-multiple", "1", "--gen-subset", "test", "--max-len-b", "40",
    ]  # fmt: skip
    outputs = {}
    for name, flags in (("greedy", []), ("stock", ["--mixer-stock-generator"])):
        proc = run_tool([*args, *flags])
        assert ("beam 1 decodes greedily" in proc.stdout + proc.stderr) == (name == "greedy")
        outputs[name] = proc.stdout
    greedy, stock = (hypothesis_lines(outputs[name]) for name in ("greedy", "stock"))
    assert len(greedy) == 48 and greedy.keys() == stock.keys()
    for sid, (score, text) in greedy.items():
        assert text == stock[sid][1]
        assert math.isclose(score, stock[sid][0], abs_tol=1e-5)
    bleu = [re.search(r"Generate test with beam=1: (.*)", out).group(1) for out in outputs.values()]
    assert bleu[0] == bleu[1]


def test_calling_the_generator_decodes_like_generate(trained):
    _, task, model = trained("lstm")
    greedy = task.build_generator([model], GenerationConfig(beam=1))
    sample = valid_batches(task)[0]
    assert_same_hypotheses(greedy(sample), greedy.generate([model], sample))
