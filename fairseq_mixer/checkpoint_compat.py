"""Keep fairseq checkpoints loadable with torch's default safe loading (weights_only=True).

torch >= 2.6 unpickles only allow-listed classes. fairseq checkpoints hold two kinds it
refuses: the argparse.Namespace config of legacy architectures (lstm, fconv, ...), and the
NumPy arrays and scalars of the metrics state (validation BLEU counts) saved in
extra_state. The check stays on: only these plain data types are added to the list.
"""

import argparse

import numpy as np
import torch

_NUMPY_DTYPES = [type(np.dtype(name)) for name in ("bool", "int32", "int64", "float32", "float64")]

torch.serialization.add_safe_globals(
    [
        argparse.Namespace,
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        *_NUMPY_DTYPES,
    ]
)
