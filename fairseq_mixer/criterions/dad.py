"""The `dad` criterion: Data As Demonstrator (scheduled sampling, Bengio et al. 2015).

At every target step the decoder's next input is the reference token with probability eps,
otherwise the model's own prediction at that step (drawn from its softmax, or its argmax);
the loss is cross-entropy against the reference at every step, and no gradient flows
through the choice of input. eps follows the `mixer` task's `--dad-schedule` (counted in
updates), or, with `--dad-schedule mixer`, MIXER's incremental schedule: the first s inputs
are the reference and those after are the model's. Recurrent decoders step exactly; the
others by default take the two-pass form (rollout/fed_back.py)."""

from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from fairseq_mixer.criterions.fed_back import (
    FedBackConfig,
    FedBackCriterion,
    PassesChoice,
    passes_field,
)
from fairseq_mixer.rollout.fed_back import PredictedTokens, bernoulli_from_model
from fairseq_mixer.rollout.sampling import batch_generator


@dataclass
class DadCriterionConfig(FedBackConfig):
    dad_prediction: ChoiceEnum(["sample", "argmax"]) = field(
        default="sample",
        metadata={
            "help": "the model's input where the reference is not fed: a token drawn from its "
            "softmax (Bengio et al.) or its most probable token"
        },
    )
    dad_passes: PassesChoice = passes_field("prediction")
    seed: int = II("common.seed")


@register_criterion("dad", dataclass=DadCriterionConfig)
class DadCriterion(FedBackCriterion):
    criterion_name = "dad"

    def __init__(self, task, cfg: DadCriterionConfig):
        super().__init__(task, cfg)
        self.decay = task.cfg.dad_schedule
        self.eps = 1.0

    def set_reference_probability(self, eps: float) -> None:
        """eps of the task's --dad-schedule for the coming update."""
        self.eps = eps

    def _model_inputs(self, sample) -> tuple[torch.Tensor | None, PredictedTokens]:
        target = sample["target"]
        generator = batch_generator(self.cfg.seed, self.num_updates, sample, target.device)
        coin, draws = torch.rand((2,) + target.shape, generator=generator, device=target.device)
        feedback = PredictedTokens(
            draws if self.cfg.dad_prediction == "sample" else None, self.padding_idx
        )
        if self.decay == "mixer":
            return self._stage_prefix(target), feedback
        return bernoulli_from_model(target, self.padding_idx, self.eps, coin), feedback

    def _schedule_log(self, nsentences: int) -> dict:
        log = super()._schedule_log(nsentences)
        if self.decay != "mixer":
            del log["mixer_s"]
            log["dad_eps"] = self.eps * nsentences
        return log
