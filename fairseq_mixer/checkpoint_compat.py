"""Keep fairseq checkpoints loadable with torch's default safe loading (weights_only=True).

Checkpoints of fairseq's legacy architectures (lstm, fconv, ...) store their config as an
argparse.Namespace, which torch >= 2.6 refuses to unpickle unless it is allow-listed. The
check stays on: only these plain containers are added to the allow-list.
"""

import argparse

import torch

torch.serialization.add_safe_globals([argparse.Namespace])
