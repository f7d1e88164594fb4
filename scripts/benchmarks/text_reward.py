"""How fast the text rewards are: against a Python loop over sacrebleu, and within a MIXER update.

On a joint sentencepiece model of Multi30k (``--raw-dir``, raw text, by default
../shared/data/multi30k when it is there) or, without it, on synthetic sentences:

1. reward speed: references are sentencepiece-encoded validation sentences; hypotheses look
   like samples of a partly trained model (each word kept with probability 0.7, otherwise a
   random word of the references; length changed by -3..+3 words). For batches of
   ``--batch-sizes`` sentences it times one call of each text reward on token ids
   (``sentence_bleu`` with post-process sentencepiece and 13a, ``chrf``, ``chrf`` with word
   order 2): "warm", the same batch again (references and words cached, as from the second
   epoch on, or for the other samples of a source); "cold", the same with the reference cache
   emptied before each call; "new", a new batch of hypotheses each call (new words and piece
   combinations; references cached). Against it, a Python loop over sacrebleu's
   ``sentence_score`` on the very strings the reward scores (decoded beforehand: the loop's
   time holds no decoding; sacrebleu's tokeniser cache is emptied before each loop, as the
   hypotheses of training are new strings). The id reward (``sentence_bleu`` on ids) is timed
   too. Speed-up = loop time / reward time.
2. share of a MIXER update (``--update``): the data are binarised with fairseq-preprocess, a
   small transformer is built, and MIXER updates (forward and backward, stage s = 1) on
   batches of ``--update-batch`` sentences are timed with the text reward; the share is the
   median reward call on such a batch / the median update.

Targets (issue 19): the text reward <= 5% of a MIXER update, >= 20x the sacrebleu loop.
Figures go to stdout and to ``--json``. Medians over ``--rounds`` rounds.

Usage: python scripts/benchmarks/text_reward.py [--raw-dir DIR | --synthetic] [--update]
       [--json PATH] [--rounds N] [--batch-sizes 32 256] [--pieces 8000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RAW_DIR = REPO.parent / "shared" / "data" / "multi30k"
sys.path.insert(0, str(REPO))

TARGET_SPEEDUP = 20.0
TARGET_SHARE = 0.05


def read_gz(path: Path, limit: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for _, line in zip(range(limit), handle, strict=False)]


def synthetic_sentences(count: int, seed: int) -> list[str]:
    """Sentences of a made-up language with Zipf-like word frequencies and punctuation."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zé", "ßo"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines = []
    for _ in range(count):
        sentence = rng.choices(words, weights, k=rng.randint(4, 20))
        sentence[0] = sentence[0].capitalize()
        if rng.random() < 0.3:
            sentence[rng.randrange(len(sentence))] += ","
        lines.append(" ".join(sentence) + rng.choice([".", ".", "!", "?"]))
    return lines


def corpus(args: argparse.Namespace) -> tuple[str, list[str], list[str], list[str]]:
    """(name, source training lines, target training lines, target validation lines)."""
    raw = None if args.synthetic else args.raw_dir
    if raw is not None and (raw / "train.en.gz").is_file():
        return (
            f"multi30k ({raw})",
            read_gz(raw / "train.de.gz", args.train_lines),
            read_gz(raw / "train.en.gz", args.train_lines),
            read_gz(raw / "val.en.gz", 1014),
        )
    train = synthetic_sentences(args.train_lines + 1014, seed=1)
    return "synthetic", synthetic_sentences(args.train_lines, seed=2), train[:-1014], train[-1014:]


def train_sentencepiece(lines: list[str], folder: Path, pieces: int) -> Path:
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(folder / "spm"),
        vocab_size=pieces,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    return folder / "spm.model"


def words_of(ids: list[int], starts_word: set[int]) -> list[list[int]]:
    """The pieces of a sentencepiece sentence, grouped into words."""
    words: list[list[int]] = []
    for piece in ids:
        if piece in starts_word or not words:
            words.append([])
        words[-1].append(piece)
    return words


def noisy(rng: random.Random, ids: list[int], starts_word: set[int], lexicon: list) -> list[int]:
    """A partly trained model's sample of a reference: each word kept with probability 0.7,
    otherwise a random word of the corpus (its pieces); the length changed by -3..+3 words."""
    words = [w if rng.random() < 0.7 else rng.choice(lexicon) for w in words_of(ids, starts_word)]
    change = rng.randint(-3, 3)
    words = words[: max(len(words) + change, 1)] + [rng.choice(lexicon) for _ in range(change)]
    return [piece for word in words for piece in word]


def padded(rows: list[list[int]], pad: int, eos: int):
    import torch

    tokens = torch.full((len(rows), max(map(len, rows)) + 1), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        tokens[i, len(row)] = eos
    return tokens


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def median_seconds(
    call: Callable[[], object], rounds: int, before: Callable | None = None
) -> float:
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clear_tokenizer_caches(metric) -> None:
    """Empty the lru caches of sacrebleu's tokeniser: a training run's hypotheses are new
    strings, which the loop would otherwise find tokenised from the round before."""
    tokenizer = getattr(metric, "tokenizer", None)
    for part in (tokenizer, getattr(tokenizer, "_post_tokenizer", None)):
        clear = getattr(type(part).__call__, "cache_clear", None)
        if clear is not None:
            clear()


def sacrebleu_loop(metric, hyps: list[str], refs: list[str]) -> list[float]:
    return [metric.sentence_score(hyp, [ref]).score for hyp, ref in zip(hyps, refs, strict=True)]


def reward_speed(args, dictionary, references: list[list[int]]) -> list[dict]:
    """Section 1: one row per (reward, batch size)."""
    from sacrebleu.metrics import BLEU, CHRF

    from fairseq_mixer.rewards import TextForm, get_reward

    special = {"pad": dictionary.pad(), "eos": dictionary.eos(), "unk": dictionary.unk()}
    text = {
        "symbols": dictionary.symbols,
        "bos": dictionary.bos(),
        "text": TextForm("sentencepiece"),
    }
    rewards = {
        "sentence_bleu": (
            lambda: get_reward("sentence_bleu", **special, **text),
            BLEU(effective_order=True),
        ),
        "chrf": (lambda: get_reward("chrf", **special, **text), CHRF()),
        "chrf++": (lambda: get_reward("chrf", word_order=2, **special, **text), CHRF(word_order=2)),
    }
    rng = random.Random(3)
    starts_word = {i for i, symbol in enumerate(dictionary.symbols) if symbol.startswith("\u2581")}
    lexicon = sorted({tuple(w) for ref in references for w in words_of(ref, starts_word)})
    rows = []
    for batch_size in args.batch_sizes:
        refs_ids = rng.sample(references, batch_size)
        hyps_ids = [noisy(rng, ref, starts_word, lexicon) for ref in refs_ids]
        ends = (dictionary.pad(), dictionary.eos())
        hyps, refs = padded(hyps_ids, *ends), padded(refs_ids, *ends)
        id_reward = get_reward("sentence_bleu", **special)
        id_reward(hyps, refs)
        id_seconds = median_seconds(partial(id_reward, hyps, refs), args.rounds)
        for name, (build, metric) in rewards.items():
            reward = build()
            reward(hyps, refs)  # compiled kernels loaded, words of this batch seen
            fresh = [
                padded([noisy(rng, ref, starts_word, lexicon) for ref in refs_ids], *ends)
                for _ in range(args.rounds)
            ]
            hyp_text = reward.decoder.lines(hyps.numpy(), "hyp")
            ref_text = reward.decoder.lines(refs.numpy(), "ref")
            loop = partial(sacrebleu_loop, metric, hyp_text, ref_text)
            # one of each per round, so that the machine's load weighs on all alike
            timings = {"warm": [], "cold": [], "new": [], "loop": []}
            for new_hyps in fresh:
                timings["warm"].append(seconds(partial(reward, hyps, refs)))
                reward.forget_references()
                timings["cold"].append(seconds(partial(reward, hyps, refs)))
                timings["new"].append(seconds(partial(reward, new_hyps, refs)))
                clear_tokenizer_caches(metric)
                timings["loop"].append(seconds(loop))
            warm, cold, new, loop_seconds = (
                statistics.median(timings[key]) for key in ("warm", "cold", "new", "loop")
            )
            expected = [score / 100 for score in loop()]
            got = reward(hyps, refs).tolist()
            worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
            rows.append(
                {
                    "reward": name,
                    "batch": batch_size,
                    "signature": reward.signature(),
                    "cold_ms": 1e3 * cold,
                    "warm_ms": 1e3 * warm,
                    "new_hyps_ms": 1e3 * new,
                    "sacrebleu_loop_ms": 1e3 * loop_seconds,
                    "speedup_cold": loop_seconds / cold,
                    "speedup_warm": loop_seconds / warm,
                    "speedup_new_hyps": loop_seconds / new,
                    "id_reward_ms": 1e3 * id_seconds if name == "sentence_bleu" else None,
                    "max_abs_difference": worst,
                }
            )
            print(describe_speed(rows[-1]), flush=True)
    return rows


def describe_speed(row: dict) -> str:
    text = (
        f"{row['reward']:<13} batch {row['batch']:>4}: text reward {row['cold_ms']:.2f} ms cold, "
        f"{row['warm_ms']:.2f} ms warm, {row['new_hyps_ms']:.2f} ms new hypotheses; sacrebleu "
        f"loop {row['sacrebleu_loop_ms']:.1f} ms; speed-up {row['speedup_cold']:.0f}x cold, "
        f"{row['speedup_warm']:.0f}x warm, {row['speedup_new_hyps']:.0f}x new; "
        f"max |difference| {row['max_abs_difference']:.1e}"
    )
    if row["id_reward_ms"] is not None:
        text += f"; id reward {row['id_reward_ms']:.2f} ms"
    return text


def binarise(
    folder: Path, processor, source: list[str], target: list[str], valid: list[str]
) -> Path:
    for split, src, tgt in (("train", source, target), ("valid", valid, valid)):
        for lang, lines in (("de", src), ("en", tgt)):
            pieces = [" ".join(p) for p in processor.encode(lines, out_type=str)]
            (folder / f"{split}.{lang}").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    command = [
        sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de",
        "--target-lang", "en", "--trainpref", str(folder / "train"),
        "--validpref", str(folder / "valid"), "--destdir", str(folder / "bin"),
        "--joined-dictionary", "--workers", "1",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return folder / "bin"


def update_share(args, data: Path) -> dict:
    """Section 2: the text reward's share of a MIXER update of a small transformer."""
    import torch
    from fairseq import options, tasks, utils

    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_mixer

    flags = [
        str(data), "--user-dir", str(Path(fairseq_mixer.__file__).parent), "--cpu",
        "--task", "mixer", "--arch", "transformer", "--encoder-layers", "3",
        "--decoder-layers", "3", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
        "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--share-all-embeddings", "--dropout", "0.1",
        "--criterion", "mixer", "--reward", "sentence_bleu", "--reward-post-process",
        "sentencepiece", "--mixer-xent-epochs", "0", "--mixer-epochs-per-stage", "1",
        "--mixer-unroll-steps", "50", "--mixer-delta", "49", "--mixer-schedule", "per_sentence",
    ]  # fmt: skip
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), flags)
    )
    utils.set_torch_seed(1)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    batches = task.get_batch_iterator(
        dataset=task.dataset("train"), max_sentences=args.update_batch, seed=1
    ).next_epoch_itr(shuffle=True)
    task.begin_epoch(1, model)
    criterion.set_mixer_stage(task.stage, 0)
    assert task.stage.uses_reinforce and task.stage.s == 1, task.stage
    model.train()
    reward_calls: list[float] = []
    reward = criterion.reward

    def timed_reward(hyps, refs, start=None):
        begin = time.perf_counter()
        out = reward(hyps, refs, start=start)
        reward_calls.append(time.perf_counter() - begin)
        return out

    criterion.reward = timed_reward
    updates = []
    for index, sample in zip(range(args.updates + 2), batches, strict=False):
        begin = time.perf_counter()
        loss, _, _ = criterion(model, sample)
        loss.backward()
        model.zero_grad()
        if index >= 2:  # warm-up
            updates.append(time.perf_counter() - begin)
    update = statistics.median(updates)
    call = statistics.median(reward_calls[2:])
    row = {
        "model": "transformer 3+3 layers, 256 units, shared embeddings",
        "batch": args.update_batch,
        "threads": torch.get_num_threads(),
        "mixer_update_ms": 1e3 * update,
        "reward_call_ms": 1e3 * call,
        "share": call / update,
        "note": "reward calls of the timed updates (references cold in the first epoch)",
    }
    print(
        f"MIXER update ({row['model']}, batch {row['batch']}): {row['mixer_update_ms']:.0f} ms; "
        f"text reward call {row['reward_call_ms']:.2f} ms = {100 * row['share']:.2f}% of it",
        flush=True,
    )
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW_DIR, help="Multi30k .gz files")
    parser.add_argument("--synthetic", action="store_true", help="synthetic sentences instead")
    parser.add_argument("--train-lines", type=int, default=10000, help="lines of the spm model")
    parser.add_argument("--pieces", type=int, default=8000, help="sentencepiece vocabulary")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per figure")
    parser.add_argument("--update", action="store_true", help="also time MIXER updates")
    parser.add_argument("--updates", type=int, default=6, help="timed MIXER updates")
    parser.add_argument("--update-batch", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write the figures there")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import sentencepiece
    from fairseq.data import Dictionary

    name, source, target, valid = corpus(args)
    print(f"data: {name}; {len(target)} training lines, {len(valid)} references", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = train_sentencepiece(source + target, folder, args.pieces)
        processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
        dictionary = Dictionary()
        for pieces in processor.encode(source + target, out_type=str):
            for piece in pieces:
                dictionary.add_symbol(piece)
        references = [
            [dictionary.index(piece) for piece in pieces]
            for pieces in processor.encode(valid, out_type=str)
        ]
        result = {
            "data": name,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "sentencepiece_pieces": args.pieces,
            "rewards": reward_speed(args, dictionary, references),
        }
        if args.update:
            result["update"] = update_share(
                args, binarise(folder, processor, source, target, valid)
            )
    speedups = [
        min(row["speedup_cold"], row["speedup_new_hyps"])
        for row in result["rewards"]
        if row["batch"] >= 256
    ]
    result["targets"] = {
        "speedup_at_least": TARGET_SPEEDUP,
        "speedup_min_256_cold_or_new": min(speedups) if speedups else None,
        "share_at_most": TARGET_SHARE,
        "share": result.get("update", {}).get("share"),
    }
    print(json.dumps(result["targets"]), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
