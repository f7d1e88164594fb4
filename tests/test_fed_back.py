"""DAD and E2E against independent references: fairseq's label-smoothed cross-entropy, the
greedy decoder, each other, and finite differences."""

import copy

import pytest
import torch
from fairseq.dataclass.configs import GenerationConfig
from harness import ARCHS, build, first_batch, grads_of, set_stage

from fairseq_mixer.rollout import fed_back
from fairseq_mixer.rollout.fed_back import (
    PredictedTokens,
    SoftTopK,
    prefix_from_model,
    sequential_pass,
    top_k_logits,
    two_pass,
)
from fairseq_mixer.rollout.positions import at_positions, token_positions

STAGES = ["--mixer-xent-epochs", "0", "--mixer-epochs-per-stage", "1", "--mixer-delta", "2"]
ALL_TEACHER_FORCED = {
    # eps = 1 at the first update: k - slope * 0
    "dad": ["--criterion", "dad", "--dad-schedule", "linear", "--dad-k", "1"],
    # s = 199 >= every reference length
    "e2e": ["--criterion", "e2e", *STAGES, "--mixer-unroll-steps", "200", "--mixer-delta", "1"],
}


def loss_and_grads(model, criterion, sample):
    model.zero_grad()
    loss, sample_size, log = criterion(model, sample)
    loss.backward()
    return loss.detach(), sample_size, grads_of(model)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
@pytest.mark.parametrize("name", ["dad", "e2e"])
def test_without_model_inputs_the_step_is_label_smoothed_cross_entropy(synthetic_bin, arch, name):
    smoothing = ["--label-smoothing", "0.1"]
    flags = ARCHS[arch] + ALL_TEACHER_FORCED[name] + smoothing
    _, task, model, criterion = build(synthetic_bin, flags)
    sample = first_batch(task)
    set_stage(task, criterion, epoch=1)
    model.train()
    _, task_ls, model_ls, reference = build(
        synthetic_bin, ARCHS[arch] + ["--criterion", "label_smoothed_cross_entropy", *smoothing]
    )
    loss, size, grads = loss_and_grads(model, criterion, sample)
    expected_loss, expected_size, expected_grads = loss_and_grads(model_ls, reference, sample)
    assert size == expected_size == sample["ntokens"]
    assert torch.equal(loss, expected_loss)
    assert grads.keys() == expected_grads.keys()
    for key, grad in grads.items():
        assert torch.equal(grad, expected_grads[key]), key


def teacher_forced(model, sample):
    """(encoder output, prev tokens, flat target positions, teacher-forced log-probs there)."""
    net_input, pad = sample["net_input"], model.decoder.dictionary.pad()
    where = token_positions(sample["target"], pad)
    lprobs = model.get_normalized_probs(model(**net_input), log_probs=True)
    encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
    return encoder_out, net_input["prev_output_tokens"], where, at_positions(lprobs, where)


@pytest.mark.parametrize(
    "arch, form, soft",
    [
        ("lstm", sequential_pass, False),
        ("lstm", sequential_pass, True),
        ("mixer_paper", sequential_pass, True),
        ("transformer", sequential_pass, False),
        ("transformer", sequential_pass, True),
        ("transformer", two_pass, False),
        ("transformer", two_pass, True),
        ("fconv", two_pass, False),
    ],
)
def test_both_forms_without_model_inputs_give_teacher_forcing(synthetic_bin, arch, form, soft):
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "cross_entropy"])
    sample = first_batch(task)
    pad = task.tgt_dict.pad()
    encoder_out, prev, where, expected = teacher_forced(model, sample)
    feedback = SoftTopK(3, pad) if soft else PredictedTokens(None, pad)
    none = torch.zeros_like(prev, dtype=torch.bool)
    result = form(model, encoder_out, prev, none, feedback, where)
    assert torch.equal(result.fed_tokens, prev)
    torch.testing.assert_close(result.lprobs, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "transformer", "mixer_paper"])
def test_dad_argmax_with_eps_zero_feeds_the_greedy_decode(trained, arch):
    """The sequential form predicting every input from the model (eps = 0) feeds what the
    greedy decoder chooses, token for token, up to its EOS."""
    _, task, model = trained(arch)
    model = copy.deepcopy(model)
    task.load_dataset("valid")
    batch = task.get_batch_iterator(
        dataset=task.dataset("valid"), max_sentences=48, seed=1
    ).next_epoch_itr(shuffle=False)
    sample = next(iter(batch))
    pad = task.tgt_dict.pad()
    target = sample["target"]
    every_input = target.ne(pad)
    every_input[:, 0] = False
    encoder_out, prev, where, _ = teacher_forced(model, sample)
    fed = sequential_pass(
        model, encoder_out, prev, every_input, PredictedTokens(None, pad), where
    ).fed_tokens
    generator = task.build_generator([model], GenerationConfig(beam=1, max_len_b=60, min_len=0))
    hypotheses = task.inference_step(generator, [model], sample)
    compared = 0
    for row, hypothesis in enumerate(hypotheses):
        tokens = hypothesis[0]["tokens"]
        length = min(len(tokens), int(every_input[row].sum()))
        assert torch.equal(fed[row, 1 : length + 1], tokens[:length]), row
        compared += length
    assert compared > 2 * len(hypotheses)


def one_input_from_model(target, pad: int, position: int = 3) -> torch.Tensor:
    """Each sentence's input at `position` (or its last) is the model's, the rest the
    reference: where both forms' predictions are conditioned on the same inputs."""
    lengths = target.ne(pad).sum(1)
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[torch.arange(len(target)), (lengths - 1).clamp(max=position)] = True
    mask[:, 0] = False
    return mask


def graded(result) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.linspace(-1.0, 1.0, result.lprobs.numel()).view_as(result.lprobs)
    (result.lprobs * weights).sum().backward()
    return result.fed_tokens, result.lprobs.detach()


@pytest.mark.parametrize("arch", ["transformer", "lstm", "fconv"])
def test_two_pass_predictions_are_those_of_fairseqs_teacher_forced_pass(synthetic_bin, arch):
    """Wherever the model-fed inputs sit (here one per sentence, after a reference prefix),
    DAD's two-pass form feeds the argmax of fairseq's own teacher-forced pass there, and E2E's
    the soft input of its features."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "cross_entropy"])
    model.eval()
    sample = first_batch(task)
    pad = task.tgt_dict.pad()
    mask = one_input_from_model(sample["target"], pad)
    encoder_out, prev, where, expected = teacher_forced(model, sample)
    rows, steps = mask.nonzero(as_tuple=True)
    full = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    predicted = full[rows, steps - 1].clone()
    predicted[:, pad] = float("-inf")
    dad = two_pass(model, encoder_out, prev, mask, PredictedTokens(None, pad), where)
    assert torch.equal(dad.fed_tokens[rows, steps], predicted.argmax(-1))
    if arch != "fconv":
        e2e = two_pass(model, encoder_out, prev, mask, SoftTopK(1, pad), where)
        assert torch.equal(e2e.fed_tokens, dad.fed_tokens)
        torch.testing.assert_close(e2e.lprobs, dad.lprobs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("soft", [False, True], ids=["dad", "e2e"])
def test_two_pass_on_an_lstm_equals_the_sequential_form_where_inputs_agree(synthetic_bin, soft):
    _, task, model, _ = build(synthetic_bin, ARCHS["lstm"] + ["--criterion", "cross_entropy"])
    sample = first_batch(task)
    pad = task.tgt_dict.pad()
    mask = one_input_from_model(sample["target"], pad)
    outcomes = []
    for form in (sequential_pass, two_pass):
        model.zero_grad()
        encoder_out, prev, where, _ = teacher_forced(model, sample)
        feedback = SoftTopK(3, pad) if soft else PredictedTokens(None, pad)
        outcomes.append((*graded(form(model, encoder_out, prev, mask, feedback, where)),
                         grads_of(model)))  # fmt: skip
    (fed, lprobs, grads), (fed_2, lprobs_2, grads_2) = outcomes
    assert torch.equal(fed, fed_2) and not torch.equal(
        fed, sample["net_input"]["prev_output_tokens"]
    )
    torch.testing.assert_close(lprobs, lprobs_2, atol=1e-5, rtol=1e-5)
    for key, grad in grads.items():
        torch.testing.assert_close(grad, grads_2[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, form", [("lstm", sequential_pass), ("transformer", two_pass)])
def test_e2e_with_k_1_feeds_the_argmax_embedding(synthetic_bin, arch, form):
    """With k = 1 the soft input is the embedding of the most probable word, weight 1: what
    DAD feeds with argmax predictions."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "cross_entropy"])
    sample = first_batch(task)
    pad = task.tgt_dict.pad()
    mask = prefix_from_model(sample["target"], pad, torch.full((len(sample["target"]),), 1))
    results = []
    for feedback in (SoftTopK(1, pad), PredictedTokens(None, pad)):
        encoder_out, prev, where, _ = teacher_forced(model, sample)
        results.append(form(model, encoder_out, prev, mask, feedback, where))
    soft, hard = results
    assert torch.equal(soft.fed_tokens, hard.fed_tokens)
    torch.testing.assert_close(soft.lprobs, hard.lprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(soft.top_k_mass, soft.top_k_mass.clamp(0, 1))


@pytest.mark.parametrize(
    "arch, form, step, rel, k",
    [
        ("lstm", sequential_pass, 1e-6, 1e-7, 3),
        # fairseq's attention takes its softmax in float32, whose rounding a larger step
        # drowns; k spans the vocabulary, so that no step of that size changes the k words
        ("transformer", two_pass, 1e-3, 1e-4, None),
    ],
)
def test_e2e_gradient_reaches_earlier_steps_through_the_weights(
    synthetic_bin, arch, form, step, rel, k, monkeypatch
):
    """Autograd's directional derivative of the E2E loss matches central finite differences
    (float64 where fairseq allows), and the one with the top-k weights held constant (no
    gradient into the steps before a soft input) does not."""
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + ["--criterion", "cross_entropy"])
    model = model.double()
    sample = first_batch(task, max_sentences=6)
    pad = task.tgt_dict.pad()
    mask = prefix_from_model(sample["target"], pad, torch.full((len(sample["target"]),), 1))
    params = [p for p in model.decoder.parameters() if p.requires_grad]
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i))
                 for i, p in enumerate(params)]  # fmt: skip

    def loss() -> torch.Tensor:
        encoder_out, prev, where, _ = teacher_forced(model, sample)
        result = form(
            model, encoder_out, prev, mask, SoftTopK(k or len(task.tgt_dict) - 1, pad), where
        )
        reference = at_positions(sample["target"], where)
        # in float64 throughout: fairseq's get_normalized_probs would compute in float32
        logits = model.decoder.output_layer(result.features.unsqueeze(1)).squeeze(1)
        return -logits.log_softmax(-1).gather(-1, reference.unsqueeze(-1)).sum()

    def directional_derivative() -> float:
        model.zero_grad()
        loss().backward()
        return sum(float((p.grad * d).sum()) for p, d in zip(params, direction, strict=True))

    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(step * d)
        plus = float(loss())
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * step * d)
        minus = float(loss())
        for p, d in zip(params, direction, strict=True):
            p.add_(step * d)
    finite_difference = (plus - minus) / (2 * step)
    exact = directional_derivative()
    tolerance = rel * abs(finite_difference)
    assert abs(exact - finite_difference) < tolerance

    original = fed_back.top_k_logits
    monkeypatch.setattr(fed_back, "top_k_logits", lambda *a: original(*a).detach())
    assert abs(directional_derivative() - finite_difference) > 10 * tolerance


@pytest.mark.parametrize(
    "arch, flags",
    [
        ("lstm", []),
        ("lstm", ["--share-decoder-input-output-embed"]),
        ("transformer", []),
        ("transformer", ["--share-decoder-input-output-embed"]),
    ],
)
def test_top_k_logits_read_the_rows_of_the_output_projection(synthetic_bin, arch, flags):
    _, task, model, _ = build(synthetic_bin, ARCHS[arch] + flags + ["--criterion", "cross_entropy"])
    encoder_out, prev, where, _ = teacher_forced(model, first_batch(task))
    features, _ = model.decoder.extract_features(prev, encoder_out=encoder_out)
    features = at_positions(features, where)
    indices = torch.randint(0, len(task.tgt_dict), (len(features), 4))
    full = model.decoder.output_layer(features.unsqueeze(1)).squeeze(1)
    expected = full.gather(-1, indices)
    torch.testing.assert_close(top_k_logits(model.decoder, features, indices), expected)


@pytest.mark.parametrize(
    "flags, message",
    [
        (ARCHS["fconv"] + ["--criterion", "e2e"], "FConvDecoder lacks them"),
        (ARCHS["fconv"] + ["--criterion", "dad", "--dad-passes", "sequential"], "use two_pass"),
        (ARCHS["lstm"] + ["--criterion", "e2e", "--e2e-topk", "100000"], "--e2e-topk"),
        (
            ARCHS["lstm"]
            + ["--criterion", "dad", "--dad-schedule", "exponential", "--dad-k", "1.5"],
            "--dad-k",
        ),  # fmt: skip
        (ARCHS["lstm"] + ["--criterion", "dad", "--label-smoothing", "1.0"], "--label-smoothing"),
        (
            ARCHS["transformer"] + ["--criterion", "e2e", "--adaptive-softmax-cutoff", "20"],
            "--criterion e2e needs a decoder with a full softmax",
        ),  # fmt: skip
    ],
)
def test_impossible_settings_are_refused_with_the_flag_named(synthetic_bin, flags, message):
    with pytest.raises(ValueError, match=message):
        build(synthetic_bin, flags)


def test_dad_needs_the_mixer_task(synthetic_bin):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from fairseq_mixer.criterions.dad import DadCriterion

    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [
            str(synthetic_bin),
            "--task",
            "translation",
            *ARCHS["lstm"],
            "--criterion",
            "cross_entropy",
        ],
    )
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    with pytest.raises(ValueError, match="--criterion dad needs --task mixer"):
        DadCriterion.build_criterion(None, task)
