"""The `e2e` criterion: the paper's End-to-End backprop (spec section 9).

Where the decoder would take its own prediction, its next input is the sum of the
embeddings of the k most likely words of its previous softmax, weighted by their
probabilities renormalised over those k; gradients flow through the weights into the
previous steps, not through the choice of the k words. The loss is cross-entropy against
the reference at every step. Which inputs are soft follows MIXER's incremental schedule
from the `mixer` task: the first s are the reference, those after s soft, s shrinking by
Delta per stage."""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from torch import nn

from fairseq_mixer.criterions.fed_back import (
    FedBackConfig,
    FedBackCriterion,
    PassesChoice,
    passes_field,
)
from fairseq_mixer.rollout.decoder_features import has_feature_api
from fairseq_mixer.rollout.fed_back import SoftTopK


@dataclass
class E2ECriterionConfig(FedBackConfig):
    e2e_topk: int = field(
        default=10,
        metadata={
            "help": "k: the soft input mixes the embeddings of the k most "
            "likely words (the paper: 10)"
        },
    )
    e2e_passes: PassesChoice = passes_field("soft input")


@register_criterion("e2e", dataclass=E2ECriterionConfig)
class E2ECriterion(FedBackCriterion):
    criterion_name = "e2e"

    def __init__(self, task, cfg: E2ECriterionConfig):
        super().__init__(task, cfg)
        vocab = len(task.target_dictionary)
        if not 1 <= cfg.e2e_topk < vocab:
            raise ValueError(
                f"--e2e-topk must lie in [1, {vocab - 1}] for this vocabulary of {vocab} "
                f"(got {cfg.e2e_topk})"
            )

    def check_model(self, model) -> None:
        decoder = model.decoder
        if not has_feature_api(decoder) or not isinstance(
            getattr(decoder, "embed_tokens", None), nn.Embedding
        ):
            raise ValueError(
                "--criterion e2e feeds soft embeddings where the decoder embeds its input "
                "tokens: it needs a decoder with extract_features()/output_layer() and an "
                f"nn.Embedding `embed_tokens` (fairseq's lstm, transformer); "
                f"{type(decoder).__name__} lacks them"
            )
        super().check_model(model)

    def _model_inputs(self, sample) -> tuple[object, SoftTopK]:
        return self._stage_prefix(sample["target"]), SoftTopK(self.cfg.e2e_topk, self.padding_idx)
