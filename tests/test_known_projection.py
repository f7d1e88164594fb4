"""The one-pass rollout's output projection from the logits its steps already made."""

import pytest
import torch
import torch.nn.functional as F
from harness import ARCHS, build

from fairseq_mixer.known_projection import KnownLinear, linear_output_layer


@pytest.mark.parametrize("with_bias", [True, False])
def test_known_linear_has_the_gradients_of_the_linear_map(with_bias):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 5, 4, generator=generator, requires_grad=True)
    weight = torch.randn(7, 4, generator=generator, requires_grad=True)
    bias = torch.randn(7, generator=generator, requires_grad=True) if with_bias else None
    leaves = [features, weight] + ([bias] if with_bias else [])
    upstream = torch.randn(3, 5, 7, generator=generator)

    def gradients(logits):
        (logits.log_softmax(-1) * upstream).sum().backward()
        grads = [leaf.grad.clone() for leaf in leaves]
        for leaf in leaves:
            leaf.grad = None
        return logits.detach(), grads

    with torch.no_grad():
        known = F.linear(features, weight, bias)
    values, grads = gradients(KnownLinear.apply(features, weight, bias, known))
    expected_values, expected_grads = gradients(F.linear(features, weight, bias))
    assert torch.equal(values, known)
    assert torch.allclose(values, expected_values, atol=1e-6)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert torch.allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "flags", "kind"),
    [
        ("lstm", [], "projection"),
        ("lstm", ["--share-decoder-input-output-embed"], "embeddings"),
        ("mixer_paper", [], None),  # read off the model below
        ("transformer", [], "none"),
        ("fconv", [], "none"),
    ],
)
def test_linear_output_layer_is_found_only_where_it_is_one(synthetic_bin, arch, flags, kind):
    _, _, model, _ = build(synthetic_bin, ARCHS[arch] + flags + ["--criterion", "mixer"])
    decoder = model.decoder
    found = linear_output_layer(decoder)
    if kind is None:
        kind = "embeddings" if decoder.share_input_output_embed else "projection"
    if kind == "none":
        assert found is None
        return
    weight, bias = found
    if kind == "embeddings":
        assert weight is decoder.embed_tokens.weight and bias is None
    else:
        assert weight is decoder.fc_out.weight and bias is decoder.fc_out.bias
    features = torch.randn(2, 3, weight.size(1))
    with torch.no_grad():
        assert torch.allclose(F.linear(features, weight, bias), decoder.output_layer(features))
