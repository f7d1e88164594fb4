"""The `mixer` task: translation data plus MIXER's schedule (Algorithm 1, spec section 2).

It trains as plain translation with any other criterion, so one task serves the XENT
pretraining, the MIXER fine-tuning and fairseq-generate.
"""

import json
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.data import encoders
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from fairseq_mixer.dad_schedule import DECAYS, check_decay_options, reference_probability
from fairseq_mixer.resume import batches_epoch, install_atomic_checkpoint_copies
from fairseq_mixer.rollout.decoder_features import (
    check_full_softmax,
    check_incremental_decoder,
    decoder_feature_dim,
)
from fairseq_mixer.rollout.greedy_generator import build_greedy_generator
from fairseq_mixer.rollout.sampling import samples_in_training_pass
from fairseq_mixer.schedule import PLACEMENTS, MixerStage, check_schedule_options, mixer_stage
from fairseq_mixer.validation_rouge import ROUGE_TYPES, rouge_sums

logger = logging.getLogger(__name__)


@dataclass
class MixerConfig(TranslationConfig):
    mixer_xent_epochs: int = field(
        default=25,
        metadata={
            "help": "N_XENT: epochs of XENT alone before the first mixed stage "
            "(0 when starting from a pretrained XENT checkpoint)"
        },
    )
    mixer_epochs_per_stage: int = field(
        default=5, metadata={"help": "N_XE+R: epochs of each mixed stage"}
    )
    mixer_delta: int = field(
        default=3, metadata={"help": "Delta: steps s drops by from one stage to the next"}
    )
    mixer_unroll_steps: int = field(
        default=25, metadata={"help": "T: the unrolled length; s starts at T"}
    )
    mixer_xent_weight: float = field(
        default=0.5, metadata={"help": "weight of XENT in the mixed stages (REINFORCE: 1 - w)"}
    )
    mixer_schedule: ChoiceEnum(PLACEMENTS) = field(
        default="absolute",
        metadata={
            "help": "absolute: s counts from the start of every sentence (the release); "
            "per_sentence: the last T - s words of each reference are sampled"
        },
    )
    mixer_stage_unit: ChoiceEnum(["epoch", "update"]) = field(
        default="epoch",
        metadata={
            "help": "count --mixer-xent-epochs and --mixer-epochs-per-stage in epochs or in updates"
        },
    )
    dad_schedule: ChoiceEnum(DECAYS) = field(
        default="inverse_sigmoid",
        metadata={
            "help": "--criterion dad: how eps, the probability of feeding the reference token, "
            "decays over the updates (Bengio et al. 2015): inverse_sigmoid k / (k + exp(i / k)), "
            "linear max(min_eps, k - slope * i), exponential k ** i; or mixer: the first s "
            "inputs are the reference and the rest the model's, s from MIXER's stages"
        },
    )
    dad_k: Optional[float] = field(
        default=None,
        metadata={
            "help": "k of --dad-schedule (default: 1000 inverse_sigmoid, 1 linear, 0.9997 "
            "exponential)"
        },
    )
    dad_linear_slope: float = field(
        default=1e-4, metadata={"help": "slope of --dad-schedule linear, per update"}
    )
    dad_min_eps: float = field(default=0.0, metadata={"help": "eps never falls below this"})
    eval_bleu_args: Optional[str] = field(
        default='{"beam": 1}',
        metadata={"help": "generation args for validation BLEU/ROUGE (greedy by default)"},
    )
    eval_rouge: bool = field(
        default=False,
        metadata={"help": "validation ROUGE-1/2/L F-measure (rouge-score) of greedy decodes"},
    )
    mixer_stock_generator: bool = field(
        default=False,
        metadata={
            "help": "decode beam 1 with fairseq's SequenceGenerator too; by default beam 1 "
            "(fairseq-generate, validation BLEU/ROUGE) uses a greedy decoder that gives the "
            "same output faster"
        },
    )


@register_task("mixer", dataclass=MixerConfig)
class MixerTask(TranslationTask):
    cfg: MixerConfig

    def __init__(self, cfg: MixerConfig, src_dict, tgt_dict):
        check_schedule_options(
            cfg.mixer_xent_epochs,
            cfg.mixer_epochs_per_stage,
            cfg.mixer_delta,
            cfg.mixer_unroll_steps,
            cfg.mixer_xent_weight,
        )
        check_decay_options(cfg.dad_schedule, cfg.dad_k, cfg.dad_linear_slope, cfg.dad_min_eps)
        super().__init__(cfg, src_dict, tgt_dict)
        self.dad_eps = self.reference_probability_at(0)
        install_atomic_checkpoint_copies()
        self.decoder_feature_dim: Optional[int] = None
        # the criterion's reward when it scores text: validation BLEU/ROUGE read its text
        self.validation_text_reward = None
        self.trains_with_mixer = False
        self.stage = self.stage_at(1)

    @classmethod
    def setup_task(cls, cfg: MixerConfig, **kwargs):
        data = utils.split_paths(cfg.data)[0] if cfg.data else ""
        if not os.path.isdir(data):
            raise FileNotFoundError(f"data folder {data!r} does not exist")
        for lang in (cfg.source_lang, cfg.target_lang):
            if lang is not None and not os.path.exists(os.path.join(data, f"dict.{lang}.txt")):
                raise FileNotFoundError(
                    f"data folder {data!r} has no dictionary dict.{lang}.txt: binarise the data "
                    "with fairseq-preprocess first"
                )
        return super().setup_task(cfg, **kwargs)

    def stage_at(self, unit: int) -> MixerStage:
        cfg = self.cfg
        return mixer_stage(
            unit,
            cfg.mixer_xent_epochs,
            cfg.mixer_epochs_per_stage,
            cfg.mixer_delta,
            cfg.mixer_unroll_steps,
            cfg.mixer_xent_weight,
        )

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if isinstance(getattr(model, "decoder", None), torch.nn.Module) and hasattr(
            model, "encoder"
        ):
            try:
                self.decoder_feature_dim = decoder_feature_dim(model)
            except (NotImplementedError, ValueError, TypeError) as error:
                logger.warning("cannot read the decoder feature size: %s", error)
        if self.cfg.eval_rouge and not self.cfg.eval_bleu:
            detok_args = json.loads(self.cfg.eval_bleu_detok_args)
            self.tokenizer = encoders.build_tokenizer(
                Namespace(tokenizer=self.cfg.eval_bleu_detok, **detok_args)
            )
            gen_args = json.loads(self.cfg.eval_bleu_args)
            self.sequence_generator = self.build_generator([model], Namespace(**gen_args))
        self._model = model
        return model

    def build_generator(
        self,
        models,
        args,
        seq_gen_cls=None,
        extra_gen_cls_kwargs=None,
        prefix_allowed_tokens_fn=None,
    ):
        if not getattr(self.cfg, "mixer_stock_generator", False):
            greedy = build_greedy_generator(
                models,
                self.target_dictionary,
                args,
                seq_gen_cls,
                extra_gen_cls_kwargs,
                prefix_allowed_tokens_fn,
            )
            if greedy is not None:
                return greedy
        return super().build_generator(
            models, args, seq_gen_cls, extra_gen_cls_kwargs, prefix_allowed_tokens_fn
        )

    def build_criterion(self, cfg):
        name = getattr(cfg, "_name", None)
        self.trains_with_mixer = name in ("mixer", "e2e") or (
            name == "dad" and self.cfg.dad_schedule == "mixer"
        )
        if name == "mixer":
            check_incremental_decoder(self._model)
            check_full_softmax(self._model)
            # refuses --mixer-rollout one_pass for a decoder that is not recurrent, now
            samples_in_training_pass(self._model.decoder, cfg.mixer_rollout)
        criterion = super().build_criterion(cfg)
        if hasattr(criterion, "check_model"):
            check_full_softmax(self._model, f"--criterion {name}")
            criterion.check_model(self._model)
        self.validation_text_reward = getattr(criterion, "text_reward", None)
        if self.validation_text_reward is not None and (self.cfg.eval_bleu or self.cfg.eval_rouge):
            check_validation_text(self.cfg, self.validation_text_reward)
            logger.info(
                "validation %s scores the reward's text: %s",
                "BLEU" if self.cfg.eval_bleu else "ROUGE",
                self.validation_text_reward.text.describe(),
            )
        return criterion

    def reference_probability_at(self, num_updates: int) -> float:
        """eps of --dad-schedule after `num_updates` updates."""
        cfg = self.cfg
        return reference_probability(
            num_updates, cfg.dad_schedule, cfg.dad_k, cfg.dad_linear_slope, cfg.dad_min_eps
        )

    def get_batch_iterator(
        self,
        dataset,
        max_tokens=None,
        max_sentences=None,
        max_positions=None,
        ignore_invalid_inputs=False,
        required_batch_size_multiple=1,
        seed=1,
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
        data_buffer_size=0,
        disable_iterator_cache=False,
        skip_remainder_batch=False,
        grouped_shuffling=False,
        update_epoch_batch_itr=False,
    ):
        """fairseq's iterator, its batches built as in a run that started at epoch 1, so that a
        run resumed at a later epoch trains on the same batches (see fairseq_mixer.resume)."""
        reusable = (
            not disable_iterator_cache
            and not update_epoch_batch_itr
            and self.can_reuse_epoch_itr(dataset)
        )
        build_at = batches_epoch(epoch, reusable, dataset in self.dataset_to_epoch_iter)
        iterator = super().get_batch_iterator(
            dataset,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            max_positions=max_positions,
            ignore_invalid_inputs=ignore_invalid_inputs,
            required_batch_size_multiple=required_batch_size_multiple,
            seed=seed,
            num_shards=num_shards,
            shard_id=shard_id,
            num_workers=num_workers,
            epoch=build_at,
            data_buffer_size=data_buffer_size,
            disable_iterator_cache=disable_iterator_cache,
            skip_remainder_batch=skip_remainder_batch,
            grouped_shuffling=grouped_shuffling,
            update_epoch_batch_itr=update_epoch_batch_itr,
        )
        if build_at != epoch:
            dataset.set_epoch(epoch)
            iterator.epoch = max(epoch, 1)
        return iterator

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.cfg.mixer_stage_unit == "epoch":
            self._enter_stage(self.stage_at(epoch), f"epoch {epoch}")

    def _enter_stage(self, stage: MixerStage, when: str) -> None:
        announce = stage != self.stage or when.startswith("epoch")
        if announce and self.trains_with_mixer:
            logger.info(
                "MIXER stage %d from %s: s=%d, XENT weight %.2f%s",
                stage.index,
                when,
                stage.s,
                stage.xent_weight,
                "" if stage.uses_reinforce else " (XENT only)",
            )
        self.stage = stage

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.cfg.mixer_stage_unit == "update":
            self._enter_stage(self.stage_at(update_num + 1), f"update {update_num + 1}")
        set_stage = getattr(criterion, "set_mixer_stage", None)
        if set_stage is not None:
            set_stage(self.stage, update_num)
        self.dad_eps = self.reference_probability_at(update_num)
        set_eps = getattr(criterion, "set_reference_probability", None)
        if set_eps is not None:
            set_eps(self.dad_eps)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def state_dict(self):
        state = super().state_dict()
        state["mixer_stage"] = {
            "index": self.stage.index,
            "s": self.stage.s,
            "xent_weight": self.stage.xent_weight,
        }
        state["dad_eps"] = self.dad_eps
        return state

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.cfg.eval_rouge:
            hyps, refs = self._greedy_hypotheses(sample, model)
            logging_output.update(rouge_sums(hyps, refs))
        return loss, sample_size, logging_output

    def _inference_with_bleu(self, generator, sample, model):
        """fairseq's validation BLEU, on the reward's text when the reward scores text."""
        if self.validation_text_reward is None:
            return super()._inference_with_bleu(generator, sample, model)
        from sacrebleu.metrics import BLEU

        hyps, refs = self._reward_text_pairs(generator, sample, model)
        reward = self.validation_text_reward
        tokenize = getattr(reward, "tokenize", "13a")
        lowercase = getattr(reward, "lowercase", False)
        return BLEU(tokenize=tokenize, lowercase=lowercase).corpus_score(hyps, [refs])

    def _reward_text_pairs(self, generator, sample, model) -> tuple[list[str], list[str]]:
        """Best hypotheses and references as the text reward decodes them."""
        gen_out = self.inference_step(generator, [model], sample, prefix_tokens=None)
        pad = self.tgt_dict.pad()
        hyps = torch.nn.utils.rnn.pad_sequence(
            [out[0]["tokens"].cpu() for out in gen_out], batch_first=True, padding_value=pad
        )
        decoder = self.validation_text_reward.decoder
        return decoder.lines(hyps.numpy(), "hyp"), decoder.lines(
            sample["target"].cpu().numpy(), "ref"
        )

    def _greedy_hypotheses(self, sample, model) -> tuple[list[str], list[str]]:
        if self.validation_text_reward is not None:
            return self._reward_text_pairs(self.sequence_generator, sample, model)

        def decode(tokens, unk_string):
            text = self.tgt_dict.string(
                tokens.int().cpu(), self.cfg.eval_bleu_remove_bpe, unk_string=unk_string
            )
            return self.tokenizer.decode(text) if self.tokenizer else text

        gen_out = self.inference_step(self.sequence_generator, [model], sample)
        hyps = [decode(out[0]["tokens"], "UNKNOWNTOKENINHYP") for out in gen_out]
        refs = [
            decode(utils.strip_pad(target, self.tgt_dict.pad()), "UNKNOWNTOKENINREF")
            for target in sample["target"]
        ]
        return hyps, refs

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not self.cfg.eval_rouge:
            return
        count = sum(log.get("_rouge_count", 0) for log in logging_outputs)
        if count == 0:
            return
        for rouge_type in ROUGE_TYPES:
            total = sum(log.get(f"_{rouge_type}_sum", 0.0) for log in logging_outputs)
            metrics.log_scalar(rouge_type, 100.0 * total / count, count, round=2)


def check_validation_text(cfg: MixerConfig, reward) -> None:
    """The validation score must read the reward's text: fairseq's own flags may not differ."""
    text = reward.text
    if cfg.eval_bleu_remove_bpe not in (None, text.post_process):
        raise ValueError(
            f"--eval-bleu-remove-bpe {cfg.eval_bleu_remove_bpe!r} differs from "
            f"--reward-post-process {text.post_process!r}: validation would score other text "
            "than the reward (leave --eval-bleu-remove-bpe out: validation follows the reward)"
        )
    if cfg.eval_bleu_detok not in ("space", text.detok):
        raise ValueError(
            f"--eval-bleu-detok {cfg.eval_bleu_detok!r} differs from --reward-detok "
            f"{text.detok!r}: validation would score other text than the reward"
        )
    if cfg.eval_tokenized_bleu:
        raise ValueError(
            "--eval-tokenized-bleu scores BLEU with tokenize none; with a text reward, "
            "validation BLEU uses the reward's --reward-tokenize: drop --eval-tokenized-bleu"
        )
