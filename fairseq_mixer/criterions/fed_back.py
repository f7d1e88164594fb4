"""What DAD and E2E share: cross-entropy against the reference at every step, with some
decoder inputs taken from the model itself (rollout/fed_back.py says which and how).

A subclass says which inputs are the model's and what it feeds there (`_model_inputs`).
Where no input is the model's (validation, MIXER's XENT-only stage, eps = 1) the step is
fairseq's label-smoothed cross-entropy on one teacher-forced pass, exactly."""

import math
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from fairseq_mixer.criterions.mixer import check_data_parallel_backend
from fairseq_mixer.rollout.fed_back import (
    PASSES,
    prefix_from_model,
    sequential_pass,
    two_pass,
    uses_sequential_pass,
)
from fairseq_mixer.rollout.positions import at_positions, token_positions
from fairseq_mixer.schedule import MixerStage, teacher_forced_lengths


def passes_field(what: str):
    """The `--<criterion>-passes` flag: which form feeds `what` (rollout/fed_back.py)."""
    return field(
        default="auto",
        metadata={
            "help": f"sequential: step the decoder with grad, each {what} made from the inputs "
            "fed before it (exact); two_pass: from a teacher-forced pass on the reference, "
            "then a second pass on the mixed inputs (Mihaylova and Martins 2019); auto: "
            "sequential for LSTM decoders, two_pass for the others"
        },
    )


@dataclass
class FedBackConfig(FairseqDataclass):
    """The flags `dad` and `e2e` share with fairseq's label_smoothed_cross_entropy."""

    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing, 0 means none"}
    )
    sentence_avg: bool = II("optimization.sentence_avg")


PassesChoice = ChoiceEnum(PASSES)


class FedBackCriterion(FairseqCriterion):
    """Base of `dad` and `e2e`, registered as `criterion_name`, whose config has the field
    `<criterion_name>_passes` (sequential, two_pass or auto)."""

    criterion_name = ""

    def __init__(self, task, cfg):
        super().__init__(task)
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must lie in [0, 1) (got {cfg.label_smoothing})")
        self.cfg = cfg
        self.unroll_steps = task.cfg.mixer_unroll_steps
        self.placement = task.cfg.mixer_schedule
        self.stage = MixerStage(index=0, s=self.unroll_steps, xent_weight=1.0)
        self.num_updates = 0

    @classmethod
    def build_criterion(cls, cfg, task):
        if not hasattr(task, "stage_at"):
            raise ValueError(
                f"--criterion {cls.criterion_name} needs --task mixer (it owns the schedule "
                f"of the model-fed inputs); got task {type(task).__name__}"
            )
        return cls(task, cfg)

    def set_mixer_stage(self, stage: MixerStage, num_updates: int) -> None:
        self.stage = stage
        self.num_updates = num_updates

    def check_model(self, model) -> None:
        """Raise ValueError where this criterion cannot feed `model`'s decoder."""
        self._sequential(model.decoder)

    def _sequential(self, decoder) -> bool:
        passes = getattr(self.cfg, f"{self.criterion_name}_passes")
        return uses_sequential_pass(decoder, passes, f"--{self.criterion_name}-passes")

    def _model_inputs(self, sample) -> tuple[torch.Tensor | None, object]:
        """(bool [B, L]: the decoder inputs that are the model's, None where none is; the
        feedback of rollout/fed_back.py that goes there)."""
        raise NotImplementedError

    def _stage_prefix(self, target: torch.Tensor) -> torch.Tensor | None:
        """MIXER's incremental schedule: the inputs after the first s are the model's (None
        in the XENT-only stage)."""
        if self.stage.index == 0:
            return None
        ref_lengths = target.ne(self.padding_idx).sum(1)
        prefix = teacher_forced_lengths(
            ref_lengths, self.stage.s, self.unroll_steps, self.placement, overlap=0
        )
        return prefix_from_model(target, self.padding_idx, prefix)

    def forward(self, model, sample, reduce=True):
        from_model, feedback = self._model_inputs(sample) if model.training else (None, None)
        if from_model is None or not bool(from_model.any()):
            lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
            lprobs = lprobs.view(-1, lprobs.size(-1))
            target = sample["target"].view(-1)
            return self._loss(model, sample, lprobs, target, model_inputs=0, top_k_mass=None)
        check_data_parallel_backend(model)
        net_input, target = sample["net_input"], sample["target"]
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        where = token_positions(target, self.padding_idx)
        form = sequential_pass if self._sequential(model.decoder) else two_pass
        fed = form(
            model,
            encoder_out,
            net_input["prev_output_tokens"],
            from_model,
            feedback,
            where,
        )
        mass = None if fed.top_k_mass is None else fed.top_k_mass.sum().data
        reference = at_positions(target, where)
        return self._loss(model, sample, fed.lprobs, reference, from_model.sum().data, mass)

    def _loss(self, model, sample, lprobs, target, model_inputs, top_k_mass):
        """fairseq's label-smoothed cross-entropy of log-probabilities [N, V] against `target`
        [N] (padding ignored), summed, and its sample size."""
        smoothing = self.cfg.label_smoothing if model.training else 0.0
        loss, nll = label_smoothed_nll_loss(lprobs, target, smoothing, self.padding_idx)
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.cfg.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll.data,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if model.training:
            logging_output.update(self._schedule_log(nsentences))
            logging_output["model_inputs"] = model_inputs
            if top_k_mass is not None:
                logging_output["top_k_mass"] = top_k_mass
        return loss, sample_size, logging_output

    def _schedule_log(self, nsentences: int) -> dict:
        return {"mixer_s": self.stage.s * nsentences, "schedule_sentences": nsentences}

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size, ntokens = total("sample_size"), total("ntokens")
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        sentences = total("schedule_sentences")
        if sentences == 0:
            return
        model_inputs = total("model_inputs")
        metrics.log_scalar("model_input_share", model_inputs / ntokens, ntokens, round=3)
        for key in ("mixer_s", "dad_eps"):
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(key, total(key) / sentences, 0, round=4)
        if model_inputs > 0 and any("top_k_mass" in log for log in logging_outputs):
            metrics.log_scalar("top_k_mass", total("top_k_mass") / model_inputs, 0, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
