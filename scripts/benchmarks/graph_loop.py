"""Whether the CUDA-graph loop (`--cuda-loop graph`) samples what the launch-bound loop does.

The graph loop is not yet the plugin's default: it waits for its figures on a GPU, and this
check goes with them.
"""

from __future__ import annotations

from unittest import mock

import torch

import fairseq_mixer.criterions.mixer as mixer_criterion_module
from fairseq_mixer.rollout import sampling

from .setup import Bench


def graph_loop_agreement(bench: Bench) -> dict:
    """How many sentences of the bench's batches the CUDA-graph loop of a two-pass rollout
    samples as the launch-bound loop does: in a MIXER forward of each batch, both loops
    sample with the criterion's own arguments, the generator in the same state."""
    original = mixer_criterion_module.sample_in_eval_mode
    same = 0

    def both_loops(model, encoder_out, arguments, greedy=False):
        nonlocal same
        generator, pad = arguments[3], arguments[4]
        start = None if generator is None else generator.get_state()
        samples = []
        for graph in (True, False):
            sampling.CUDA_GRAPH_ON_CUDA = graph
            if start is not None:
                generator.set_state(start)
            samples.append(original(model, encoder_out, arguments, greedy=greedy))
        sampling.CUDA_GRAPH_ON_CUDA = True
        width = max(drawn.size(1) for drawn in samples)
        graphed, launch_bound = (mixer_criterion_module.fit_width(x, width, pad) for x in samples)
        same += int(graphed.eq(launch_bound).all(1).sum())
        return samples[0]

    criterion = bench.criteria["mixer"]
    patch = mock.patch.object(mixer_criterion_module, "sample_in_eval_mode", both_loops)
    with patch, torch.no_grad():
        for number, batch in enumerate(bench.batches):
            criterion.set_mixer_stage(bench.task.stage, number)
            criterion(bench.model, batch)
    return {"same": same, "sentences": sum(batch["nsentences"] for batch in bench.batches)}
