"""Real fairseq task, model and criterion objects built from command-line flags, in-process."""

import contextlib
from pathlib import Path
from unittest import mock

import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_mixer  # noqa: F401  (registers the plugin)
from fairseq_mixer.rollout import sampling
from fairseq_mixer.rollout.sampling import sample_and_score_after_prefix

TINY_LSTM = [
    "--arch", "lstm", "--encoder-embed-dim", "16", "--encoder-hidden-size", "16",
    "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16",
]  # fmt: skip
TINY_TRANSFORMER = [
    "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
    "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
    "--decoder-attention-heads", "2",
]  # fmt: skip
TINY_FCONV = [
    "--arch", "fconv", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--decoder-out-embed-dim", "16", "--encoder-layers", "[(16, 3)] * 2",
    "--decoder-layers", "[(16, 3)] * 2",
]  # fmt: skip
TINY_PAPER = ["--arch", "mixer_paper", "--embed-dim", "16", "--hidden-size", "16"]
ARCHS = {
    "lstm": TINY_LSTM,
    "transformer": TINY_TRANSFORMER,
    "fconv": TINY_FCONV,
    "mixer_paper": TINY_PAPER,
}

TWO_LAYERS = ARCHS["transformer"] + ["--decoder-layers", "2", "--encoder-layers", "2"]
TRANSFORMER_CONFIGS = {
    "post_norm_sinusoidal": [],
    "pre_norm_learned_shared": [
        "--decoder-normalize-before", "--decoder-learned-pos",
        "--share-decoder-input-output-embed",
    ],
    "pre_norm_sinusoidal_shared_ln_embedding_gelu": [
        "--decoder-normalize-before", "--encoder-normalize-before",
        "--share-decoder-input-output-embed", "--layernorm-embedding", "--activation-fn", "gelu",
    ],
    "post_norm_learned_projected_out_unscaled": [
        "--decoder-learned-pos", "--decoder-output-dim", "12", "--no-scale-embedding",
    ],
}  # fmt: skip


def build(data: Path, flags: list[str]):
    """(cfg, task, model, criterion) as fairseq-train would build them."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [
            str(data),
            "--user-dir",
            str(Path(fairseq_mixer.__file__).parent),
            "--cpu",
            "--task",
            "mixer",
            "--dropout",
            "0",
            *flags,
        ],
    )
    cfg = convert_namespace_to_omegaconf(args)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return cfg, task, model, criterion


def first_batch(task, split: str = "train", max_sentences: int = 16) -> dict:
    task.load_dataset(split)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(split), max_sentences=max_sentences, seed=1
    ).next_epoch_itr(shuffle=False)
    return next(iter(iterator))


def set_stage(task, criterion, epoch: int, num_updates: int = 0) -> None:
    task.begin_epoch(epoch, None)
    criterion.set_mixer_stage(task.stage, num_updates)


def grads_of(module: torch.nn.Module) -> dict:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def varied_prefixes(
    target: torch.Tensor, pad: int, spread: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prefix lengths k, sampling length limits) for a batch's targets: k = 0..3, every
    fifth sentence copied whole (so never in the decoding batch), limits k + 1 + (i mod
    spread) so that rows finish at many steps and the batch is compacted."""
    ref_lengths = target.ne(pad).sum(1)
    prefix = (torch.arange(len(ref_lengths)) % 4).clamp(max=ref_lengths)
    prefix[::5] = ref_lengths[::5]
    return prefix, prefix + 1 + torch.arange(len(ref_lengths)) % spread


def graded_rollout(model, sample, prefix, max_lengths, pad: int, eos: int, seed: int = 11):
    """(samples, features, log-probabilities, parameter gradients) of one one-pass rollout of
    `sample` in the model's current mode, the global RNG (dropout) seeded with `seed` and the
    draws with 3; the gradients are those of a fixed weighting of the log-probabilities and
    the features."""
    model.zero_grad()
    torch.manual_seed(seed)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    generator = torch.Generator().manual_seed(3)
    hyps, features, lprobs = sample_and_score_after_prefix(
        model, encoder_out, sample["target"], prefix, max_lengths, generator, pad, eos
    )
    weights = torch.linspace(-1.0, 1.0, lprobs.numel()).view_as(lprobs)
    ((lprobs * weights).sum() + features.square().sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return hyps, features.detach(), lprobs.detach(), grads


def assert_rollouts_agree(model, task, switch, grad_atol: float) -> tuple[torch.Tensor, dict]:
    """Runs :func:`graded_rollout` on the first 24-sentence batch (varied prefixes, limit
    spread 7) after ``switch(True)`` and after ``switch(False)``, asserts the same samples,
    features, log-probabilities and gradients, and returns the samples and gradients of the
    first."""
    sample = first_batch(task, max_sentences=24)
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    prefix, max_lengths = varied_prefixes(sample["target"], pad, spread=7)
    results = []
    for on in (True, False):
        switch(on)
        results.append(graded_rollout(model, sample, prefix, max_lengths, pad, eos))
    (hyps, features, lprobs, grads), (expected_hyps, *expected) = results
    expected_features, expected_lprobs, expected_grads = expected
    assert torch.equal(hyps, expected_hyps)
    assert torch.allclose(features, expected_features, atol=1e-6)
    assert torch.allclose(lprobs, expected_lprobs, atol=1e-5)
    assert lprobs.size(0) == hyps.ne(pad).sum()  # one row per token
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], rtol=1e-4, atol=grad_atol), name
    return hyps, grads


def batch_with_padded_sources(task, size: int = 24) -> dict:
    """A training batch of sentences of many source lengths (fairseq's batches group them)."""
    task.load_dataset("train")
    dataset = task.dataset("train")
    by_length = torch.as_tensor(dataset.src_sizes).argsort(stable=True)
    picks = by_length[torch.linspace(0, len(by_length) - 1, size).long()]
    sample = dataset.collater([dataset[int(i)] for i in picks])
    assert sample["net_input"]["src_lengths"].unique().numel() > 3
    return sample


# What reads a tensor's values on the host: each waits for the device, and none may happen
# while a CUDA graph is captured.
HOST_READS = ("item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__")


def _refused(name: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"Tensor.{name} in a step that a CUDA graph would capture")

    return refuse


def without_host_reads(step):
    def run() -> None:
        with contextlib.ExitStack() as stack:
            for name in HOST_READS:
                stack.enter_context(mock.patch.object(torch.Tensor, name, _refused(name)))
            stack.enter_context(mock.patch.object(torch, "nonzero", _refused("nonzero")))
            step()

    return run


def fixed_shape_loop(monkeypatch, on: bool) -> list:
    """Turns the fixed-shape loop on or off; returns the list its captured steps go to. The
    steps run with every host read of a tensor refused."""
    monkeypatch.setattr(sampling, "uses_fixed_shape_loop", lambda device: on)
    captured: list = []
    original = sampling._run_then_capture
    monkeypatch.setattr(
        sampling,
        "_run_then_capture",
        lambda step, device: captured.append(step) or original(without_host_reads(step), device),
    )
    return captured


def graph_and_launch_bound_samples(model, encoder_out, references: tuple, pad: int, eos: int):
    """(samples of the CUDA-graph loop, samples of the launch-bound loop) of a no-grad
    rollout on CUDA, each drawn with a generator seeded alike; `references` is (target,
    prefix lengths, max lengths) on the device."""
    samples = []
    for graph in (True, False):
        sampling.CUDA_GRAPH_ON_CUDA = graph
        try:
            generator = torch.Generator(device="cuda").manual_seed(5)
            args = (*references, generator, pad, eos)
            samples.append(sampling.sample_after_prefix(model, encoder_out, *args))
        finally:
            sampling.CUDA_GRAPH_ON_CUDA = False
    return samples[0], samples[1]


UPDATES = 100  # enough for EOS at varied lengths on the synthetic pair


def train_briefly(data, arch: str):
    """(cfg, task, model) after a few dozen cross-entropy updates, in eval mode."""
    cfg, task, model, criterion = build(data, ARCHS[arch] + ["--criterion", "cross_entropy"])
    task.load_dataset("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    updates = 0
    while updates < UPDATES:
        batches = task.get_batch_iterator(
            dataset=task.dataset("train"), max_sentences=32, seed=updates + 1
        ).next_epoch_itr(shuffle=True)
        for sample in batches:
            loss, sample_size, _ = criterion(model, sample)
            optimizer.zero_grad()
            (loss / sample_size).backward()
            optimizer.step()
            updates += 1
            if updates == UPDATES:
                break
    model.eval()
    return cfg, task, model
