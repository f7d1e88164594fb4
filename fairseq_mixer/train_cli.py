"""`fairseq-mixer-train`: fairseq-train whose `--bf16` runs on a GPU (or the CPU).

fairseq 0.12's argument parsing makes `--bf16` imply `--tpu` (fairseq/options.py), so a plain
`fairseq-train --bf16` on a GPU machine asks for an XLA device and stops before training. This
entry point parses the same flags with fairseq's own parser, undoes only that implication when
`--tpu` was not given, and hands over to fairseq_cli.train: its trainer then casts the model and
the criterion to bfloat16 and keeps float32 master weights, as it does for `--fp16`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from fairseq import distributed_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import train


def bf16_without_tpu(args: argparse.Namespace, argv: Sequence[str]) -> argparse.Namespace:
    """`args` with `tpu` off again when only `--bf16` (not `--tpu`) turned it on."""
    if getattr(args, "bf16", False) and "--tpu" not in argv:
        args.tpu = False
    return args


def log_like_fairseq_train() -> None:
    """fairseq-train's log format. fairseq_cli.train sets it at import only when logging has no
    handler yet, and importing fairseq (through this package) has installed one by then; tools
    that read fairseq's logs (scripts/plot.py, the recipes) expect this format."""
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stdout,
        force=True,
    )


def cli_main(argv: Sequence[str] | None = None) -> None:
    log_like_fairseq_train()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = options.get_training_parser()
    args = bf16_without_tpu(options.parse_args_and_arch(parser, input_args=argv), argv)
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), train.main)


if __name__ == "__main__":
    cli_main()
