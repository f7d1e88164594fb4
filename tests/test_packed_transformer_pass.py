"""The packed teacher-forced transformer pass against fairseq's own decoder."""

from unittest import mock

import pytest
import torch
from harness import TRANSFORMER_CONFIGS, TWO_LAYERS, batch_with_padded_sources, build

from fairseq_mixer.rollout.packed_transformer_pass import (
    packed_transformer_features,
    supports_packed_pass,
)
from fairseq_mixer.rollout.sampling import shift_right

DROPOUTS = ["--dropout", "0.1", "--attention-dropout", "0.2", "--activation-dropout", "0.3"]


def on_cuda(sample: dict) -> dict:
    net_input = {key: value.cuda() for key, value in sample["net_input"].items()}
    return {"net_input": net_input, "target": sample["target"].cuda()}


def both_passes(model, task, sample):
    """(packed features, fairseq's features at the same positions), both with grad, from one
    encoder output; the teacher-forced input is the batch's padded targets."""
    pad, eos = task.tgt_dict.pad(), task.tgt_dict.eos()
    net_input, target = sample["net_input"], sample["target"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    prev = shift_right(target, eos, pad)
    where = target.ne(pad).view(-1).nonzero().squeeze(1)
    assert where.numel() < target.numel()  # the batch has padding to leave out
    assert supports_packed_pass(model.decoder, encoder_out)
    torch.manual_seed(7)  # decoder layerdrop draws from the global generator
    packed = packed_transformer_features(model.decoder, prev, encoder_out, where)
    torch.manual_seed(7)
    full, _ = model.decoder.extract_features(prev, encoder_out=encoder_out)
    return packed, full.reshape(-1, full.size(-1)).index_select(0, where)


def gradients(model, features) -> dict:
    model.zero_grad()
    weights = torch.linspace(-1.0, 1.0, features.numel(), device=features.device)
    weights = weights.view_as(features)
    (features * weights).sum().backward(retain_graph=True)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_features_and_gradients(model, packed, expected) -> None:
    assert torch.allclose(packed, expected, atol=1e-5)
    grads, expected_grads = gradients(model, packed), gradients(model, expected)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        # sums over some 200 tokens in another order: float32 rounding of about 1e-5
        assert torch.allclose(grad, expected_grads[name], rtol=1e-4, atol=3e-5), name


@pytest.mark.parametrize("config", list(TRANSFORMER_CONFIGS))
def test_packed_pass_gives_fairseqs_features_and_gradients(synthetic_bin, config):
    _, task, model, _ = build(synthetic_bin, TWO_LAYERS + TRANSFORMER_CONFIGS[config])
    model.eval()
    packed, expected = both_passes(model, task, batch_with_padded_sources(task))
    assert_same_features_and_gradients(model, packed, expected)


def scaled_instead_of_dropped(x, p=0.5, training=True, inplace=False):
    """A dropout that scales by 1 + p instead of drawing: both passes then compute the same
    numbers exactly where they apply the same dropouts with the same rates."""
    return x * (1.0 + p) if training else x


@pytest.mark.parametrize("config", ["post_norm_sinusoidal", "pre_norm_learned_shared"])
def test_packed_pass_applies_fairseqs_dropouts_and_layerdrop_in_training(synthetic_bin, config):
    flags = TWO_LAYERS + TRANSFORMER_CONFIGS[config] + DROPOUTS + ["--decoder-layerdrop", "0.5"]
    _, task, model, _ = build(synthetic_bin, flags)
    model.train()
    for layer in model.decoder.layers:
        # fairseq's self-attention otherwise runs torch's fused kernel, whose dropout draws
        # inside; its own path drops the weights through the module, as the packed pass
        layer.self_attn.skip_embed_dim_check = True
    sample = batch_with_padded_sources(task)
    with mock.patch("torch.nn.functional.dropout", scaled_instead_of_dropped):
        packed, expected = both_passes(model, task, sample)
        model.eval()
        undropped, _ = both_passes(model, task, sample)
    assert not torch.allclose(packed, undropped, atol=1e-3)  # the dropouts did apply
    assert_same_features_and_gradients(model, packed, expected)


def activation_bytes_kept_for_backward(model, compute) -> int:
    """Bytes of the floating-point tensors other than parameters that autograd keeps for the
    backward of `compute()`, each storage counted once (not the integer indices)."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    kept = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if tensor.is_floating_point() and storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        compute()
    return sum(kept.values())


@pytest.mark.parametrize("config", list(TRANSFORMER_CONFIGS))
def test_packed_pass_keeps_no_more_for_the_backward_than_fairseqs_decoder(synthetic_bin, config):
    """Over every position of the batch, so that both compute as many tokens: no copies of
    weights or of scattered tokens kept beside the activations."""
    _, task, model, _ = build(synthetic_bin, TWO_LAYERS + TRANSFORMER_CONFIGS[config])
    sample = batch_with_padded_sources(task)
    net_input, target = sample["net_input"], sample["target"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    prev = shift_right(target, task.tgt_dict.eos(), task.tgt_dict.pad())
    every_position = torch.arange(prev.numel())
    packed = activation_bytes_kept_for_backward(
        model, lambda: packed_transformer_features(model.decoder, prev, encoder_out, every_position)
    )
    fairseq = activation_bytes_kept_for_backward(
        model, lambda: model.decoder.extract_features(prev, encoder_out=encoder_out)
    )
    assert 0 < packed <= fairseq


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_pass_gives_fairseqs_features_and_gradients_on_cuda(synthetic_bin):
    _, task, model, _ = build(synthetic_bin, TWO_LAYERS + DROPOUTS)
    model.cuda().eval()
    sample = on_cuda(batch_with_padded_sources(task))
    packed, expected = both_passes(model, task, sample)
    assert packed.is_cuda
    assert_same_features_and_gradients(model, packed, expected)


def test_packed_pass_refuses_what_it_does_not_replicate(synthetic_bin):
    _, task, model, _ = build(synthetic_bin, TWO_LAYERS + ["--cross-self-attention"])
    sample = batch_with_padded_sources(task)
    net_input = sample["net_input"]
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    assert not supports_packed_pass(model.decoder, encoder_out)
