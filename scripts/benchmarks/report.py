"""The figures as a table, the run's circumstances, and the closing lines of the report."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import fairseq
import torch

from .decoding import BEAM, DECODE_MAX_LEN_A, DECODE_MAX_LEN_B
from .methods import REFERENCE, XENT_FLAGS, mixer_flags
from .rewards import REWARDS, compiled_rewards
from .setup import ARCH_LABELS, ARCHS, LEARNING_RATE, USER_DIR
from .sizes import Settings
from .targets import Target
from .training import CLIP_NORM, PRETRAIN_LEARNING_RATE
from .update_cost import MIXER_PHASES, XENT_PHASES

Row = tuple[str, str, str, str]


def other_method_rows(
    figures: dict, arch: str, what: str, unit: str, targets: dict[str, Target]
) -> list[Row]:
    """A row per method beside MIXER, with its target where it has one (DAD's, E2E's)."""
    rows = []
    kind = "update" if unit == "ms" else "memory"
    for name, ratio in figures["ratios"].items():
        if name == "mixer":
            continue
        measured = (
            f"{figures[f'{name}_{unit}']:.1f} / {figures[f'{REFERENCE}_{unit}']:.1f} "
            f"{unit.replace('mib', 'MiB')} = {ratio:.2f}x"
        )
        target = targets.get(f"{kind}_{name}_{arch}")
        bound = ("", "") if target is None else (target.bound(), target.verdict())
        rows.append((f"{what}, {arch}: {name.upper()} / XENT", measured, *bound))
    return rows


def update_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    """Update times, MIXER's against the target, then what explains them."""
    rows = []
    for arch in ARCHS:
        figures, target = results["update"][arch], targets[f"update_{arch}"]
        measured = (
            f"{figures['mixer_ms']:.1f} / {figures['xent_ms']:.1f} ms = {target.measured:.2f}x"
        )
        rows.append((f"update, {arch}: MIXER / XENT", measured, target.bound(), target.verdict()))
        rows += other_method_rows(figures, arch, "update", "ms", targets)
    for arch in ARCHS:
        training = results["pretraining"][arch]
        loss = f"{training['first_loss']:.2f} -> {training['last_loss']:.2f} bits/token"
        label = f"  {arch}: XENT loss over {training['updates']} training updates"
        rows.append((label, loss, "", ""))
    for arch, graph in (results["graph_loop"] or {}).items():
        rows.append((
            f"  {arch}: sentences the CUDA-graph loop samples as the launch-bound loop",
            f"{graph['same']} of {graph['sentences']}", "", "",
        ))  # fmt: skip
    for arch in ARCHS:
        update_figures = results["update"][arch]
        sampled = update_figures["sampled_tokens_per_update"]
        reference = update_figures["reference_tokens_per_update"]
        rows.append((
            f"  {arch}: sampled / reference tokens per MIXER update",
            f"{sampled:.0f} / {reference:.0f}", "", "",
        ))  # fmt: skip
    steps = results["decoder_steps"]
    rows.append((
        f"  LSTM: decoder steps over the {steps['batches']} batches: MIXER / XENT",
        f"{steps['mixer']} / {steps['xent']} = {steps['mixer'] / steps['xent']:.2f}x", "", "",
    ))  # fmt: skip
    for arch in ARCHS:
        for name, label in MIXER_PHASES.items():
            phase = results["phases"][arch][name]
            if phase["ms_per_update"] == 0:
                continue  # a phase of the other rollout
            measured = f"{phase['ms_per_update']:.1f} ms ({100 * phase['share']:.0f}%)"
            rows.append((f"  {arch} MIXER update: {label}", measured, "", ""))
        xent = results["phases"][arch]["xent_ms_per_update"]
        measured = " / ".join(f"{xent[name]:.1f}" for name in XENT_PHASES) + " ms"
        rows.append((f"  {arch} XENT update: {' / '.join(XENT_PHASES)}", measured, "", ""))
    return rows


def reward_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    """Each reward's speed against the sacrebleu loop, and its share of an update."""
    rewards = results["reward"]
    loop = rewards["sacrebleu_loop"]
    batch, small = rewards["batch_size"], rewards["small_batch_size"]
    rows = [(
        f"reward: sacrebleu.sentence_bleu loop, batches of {batch} / {small}",
        f"{loop['sentences_per_s']:,.0f} / {loop['small_batch_sentences_per_s']:,.0f} sent/s",
        "", "",
    )]  # fmt: skip
    mixer_ms = results["update"]["lstm"]["mixer_ms"]
    for name in REWARDS:
        reward = rewards[name]
        speed, share = targets[f"reward_speedup_{name}"], targets[f"reward_share_{name}"]
        rows.append((
            f"reward: {name} speed, batches of {batch}",
            f"{reward['sentences_per_s']:,.0f} sent/s = {speed.measured:.1f}x loop",
            speed.bound(), speed.verdict(),
        ))  # fmt: skip
        rows.append((
            f"  {name} speed, batches of {small}",
            f"{reward['small_batch_sentences_per_s']:,.0f} sent/s "
            f"= {reward['small_batch_speedup_vs_sacrebleu_loop']:.1f}x loop",
            "", "",
        ))  # fmt: skip
        rows.append((
            f"  {name} share of an LSTM MIXER update",
            f"{reward['call_ms_on_update_batch']:.2f} / {mixer_ms:.1f} ms "
            f"= {100 * share.measured:.2f}%",
            share.bound("%", 100), share.verdict(),
        ))  # fmt: skip
    return rows


def memory_and_decoding_rows(results: dict, targets: dict[str, Target]) -> list[Row]:
    """Peak memory per method, then greedy against beam decoding."""
    rows = []
    for arch in ARCHS:
        memory, target = results["memory"][arch], targets[f"memory_{arch}"]
        measured = (
            f"{memory['mixer_mib']:.1f} / {memory['xent_mib']:.1f} MiB = {target.measured:.2f}x"
        )
        rows.append(
            (f"peak memory, {arch}: MIXER / XENT", measured, target.bound(), target.verdict())
        )
        rows += other_method_rows(memory, arch, "peak memory", "mib", targets)
        if memory["compiled_rewards_load_mib"]:
            rows.append((
                "  compiled rewards, loaded once per process before the updates",
                f"{memory['compiled_rewards_load_mib']:.1f} MiB", "", "",
            ))  # fmt: skip
    decoding, target = results["decoding"], targets["decoding"]
    greedy, beam = decoding["greedy"], decoding[f"beam{BEAM}"]
    measured = (
        f"{greedy['sentences_per_s']:.0f} / {beam['sentences_per_s']:.0f} sent/s "
        f"= {target.measured:.1f}x"
    )
    rows.append(
        (f"decoding, LSTM: greedy / beam {BEAM}", measured, target.bound(), target.verdict())
    )
    lengths = f"{greedy['mean_hypothesis_tokens']:.1f} / {beam['mean_hypothesis_tokens']:.1f}"
    rows.append(("  mean hypothesis tokens: greedy / beam", lengths, "", ""))
    stock = decoding["greedy_sequence_generator"]
    rows.append((
        "  greedy with fairseq's SequenceGenerator / beam 10",
        f"{stock['sentences_per_s']:.0f} sent/s = "
        f"{decoding['sequence_generator_greedy_speedup']:.1f}x",
        "", "",
    ))  # fmt: skip
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows in aligned columns under a header."""
    header: Row = ("figure", "measured", "target", "result")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def environment(args: argparse.Namespace, settings: Settings, data: str) -> dict:
    """The machine, versions, options and sizes the figures were taken with."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": settings.mode,
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": fairseq.__version__,
        "fairseq_mixer": USER_DIR,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": data,
        "settings": asdict(settings),
        "models": ARCH_LABELS,
        "mixer_flags": " ".join(mixer_flags(args.rollout, args.stage_s)),
        "cuda_loop": args.cuda_loop,
        "rewards": "compiled" if compiled_rewards() else "tensor (numba does not import)",
        "xent_flags": " ".join(XENT_FLAGS),
        "optimizer": f"SGD lr {LEARNING_RATE}, gradient norm clipped at {CLIP_NORM}",
        "pretraining": f"XENT with Adam, lr {PRETRAIN_LEARNING_RATE}",
        "decoding": f"max_len_a {DECODE_MAX_LEN_A}, max_len_b {DECODE_MAX_LEN_B}",
    }


def busy_machine(load: dict[str, float], threads: int) -> bool:
    """True when other work used the cores this run wanted (the end value includes this run)."""
    cores = os.cpu_count() or 1
    return load["start"] > cores - threads + 1.0 or load["end"] > cores + 1.0


def print_report(results: dict, targets: dict[str, Target], args: argparse.Namespace) -> None:
    """The table, the verdict count, the time taken and, last, the LSTM update-time ratio."""
    rows = update_rows(results, targets) + reward_rows(results, targets)
    rows += memory_and_decoding_rows(results, targets)
    print(format_table(rows))
    print(f"memory: {results['memory']['method']}")
    passed = sum(target.passed for target in targets.values())
    print(f"targets: {passed} of {len(targets)} pass")
    env = results["environment"]
    load = env["load_average_1min"]
    print(
        f"{env['mode']} mode on {args.device}, {args.threads} threads, rollout {args.rollout}, "
        f"stage s = {args.stage_s}, cuda loop {args.cuda_loop}, rewards {env['rewards']}, "
        f"load average {load['start']:.1f} -> {load['end']:.1f}: took "
        f"{results['seconds']:.0f} s (after imports); results in {args.json}"
    )
    if busy_machine(load, args.threads):
        advice = "a quiet machine is steadier" + (", or --threads 1" if args.threads > 1 else "")
        print(
            f"warning: other work shared the cores during the run, so timings are noisy ({advice})"
        )
    print(f"mixer/xent update time ratio: {results['update']['lstm']['ratio']:.3f}")
