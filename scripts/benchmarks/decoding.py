"""4. Greedy decoding (beam 1) against beam 10 with fairseq's SequenceGenerator."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

from fairseq.tasks.translation import TranslationTask

from .setup import Bench, load_batches
from .sizes import Settings
from .timing import timed

DECODE_MAX_LEN_A = 1.2
DECODE_MAX_LEN_B = 10
BEAM = 10


def decoding_split(data: Path) -> str:
    """The test split where the data has one, else valid."""
    return "test" if any(data.glob("test.*.idx")) else "valid"


def decode(bench: Bench, generator: Any, batch: dict) -> tuple[float, int]:
    """(seconds, tokens of the best hypotheses) of decoding one batch."""
    elapsed, hypotheses = timed(
        bench.device, lambda: bench.task.inference_step(generator, [bench.model], batch)
    )
    return elapsed, sum(len(best[0]["tokens"]) for best in hypotheses)


def time_decoding(bench: Bench, data: Path, settings: Settings) -> dict:
    """Sentences per second of greedy and beam-10 search, alternating batch by batch.

    Greedy is what `--task mixer` builds for beam 1 (the plugin's greedy decoder); fairseq's
    own SequenceGenerator at beam 1 is timed beside it for reference.
    """
    split = decoding_split(data)
    batches = load_batches(
        bench.task, split, settings.decode_batch_size, settings.decode_batches, bench.device
    )
    beams = {"greedy": 1, f"beam{BEAM}": BEAM, "greedy_sequence_generator": 1}
    lengths = {"max_len_a": DECODE_MAX_LEN_A, "max_len_b": DECODE_MAX_LEN_B}
    generators = {
        name: bench.task.build_generator([bench.model], Namespace(beam=beam, **lengths))
        for name, beam in beams.items()
    }
    generators["greedy_sequence_generator"] = TranslationTask.build_generator(
        bench.task, [bench.model], Namespace(beam=1, **lengths)
    )
    seconds = dict.fromkeys(beams, 0.0)
    tokens = dict.fromkeys(beams, 0)
    bench.model.eval()
    for generator in generators.values():  # warm-up: first-call costs are not decoding speed
        decode(bench, generator, batches[0])
    for number, batch in enumerate(batches):
        order = list(beams) if number % 2 == 0 else list(beams)[::-1]
        for name in order:
            elapsed, hypothesis_tokens = decode(bench, generators[name], batch)
            seconds[name] += elapsed
            tokens[name] += hypothesis_tokens
    bench.model.train()
    sentences = sum(batch["nsentences"] for batch in batches)
    figures: dict[str, Any] = {"split": split, "sentences": sentences}
    for name in beams:
        figures[name] = {
            "sentences_per_s": sentences / seconds[name],
            "mean_hypothesis_tokens": tokens[name] / sentences,
        }
    figures["greedy_speedup"] = seconds[f"beam{BEAM}"] / seconds["greedy"]
    figures["sequence_generator_greedy_speedup"] = (
        seconds[f"beam{BEAM}"] / seconds["greedy_sequence_generator"]
    )
    return figures
