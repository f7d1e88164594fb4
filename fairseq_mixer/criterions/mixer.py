"""The `mixer` criterion: XENT on a reference prefix, REINFORCE on the model's own samples.

One training step (spec section 3): the encoder runs once; the decoder continues every
reference prefix with its own samples, incrementally. For a recurrent decoder this is the
training forward pass itself (`--mixer-rollout one_pass`, as in the release); otherwise the
samples are drawn under no_grad and one teacher-forced pass over [reference prefix ; sample]
gives the log-probabilities (`two_pass`). Either way the log-probabilities feed both losses
and the decoder features feed the learned baseline. In validation it reports the
teacher-forced NLL, so fairseq's best-checkpoint and lr-on-plateau logic keep working."""

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II
from torch.nn.parallel import DistributedDataParallel

from fairseq_mixer.baseline import StepBaseline, leave_one_out_baseline, sentence_baseline
from fairseq_mixer.losses import baseline_loss, mixer_loss, reinforce_loss, token_nll, xent_loss
from fairseq_mixer.rewards import ALL_REWARD_NAMES, TextForm, TextReward, get_reward
from fairseq_mixer.rewards.text import DETOK_CHOICES, POST_PROCESS_CHOICES
from fairseq_mixer.rewards.text_rewards import sacrebleu_tokenizers
from fairseq_mixer.rollout.decoder_features import teacher_forced_log_probs
from fairseq_mixer.rollout.positions import (
    at_positions,
    padded_from_rows,
    rows_of_positions,
    token_positions,
)
from fairseq_mixer.rollout.sampling import (
    ROLLOUTS,
    batch_generator,
    reordered_encoder_out,
    sample_after_prefix,
    sample_and_score_after_prefix,
    samples_in_training_pass,
    shift_right,
)
from fairseq_mixer.schedule import MixerStage, loss_masks, teacher_forced_lengths

logger = logging.getLogger(__name__)

LOSS_SCALINGS = ("normalized", "release")
BASELINES = ("learned", "self_critical", "leave_one_out")


@dataclass
class MixerCriterionConfig(FairseqDataclass):
    reward: ChoiceEnum(ALL_REWARD_NAMES) = field(
        default="sentence_bleu",
        metadata={
            "help": "sentence-level reward; mixer_bleu is the release's suffix BLEU; chrf "
            "(sacrebleu's chrF, chrF++ with --reward-chrf-word-order 2) scores text"
        },
    )
    reward_post_process: Optional[str] = field(
        default=None,
        metadata={
            "help": "score the text, not the token ids: how target symbols become words, as "
            "fairseq's --post-process / --eval-bleu-remove-bpe take it (none, sentencepiece, "
            "subword_nmt, '@@ ', ...); the validation BLEU then scores the same text"
        },
    )
    reward_detok: Optional[ChoiceEnum(DETOK_CHOICES)] = field(
        default=None,
        metadata={
            "help": "detokeniser of the scored text (as --eval-bleu-detok): space or none keep "
            "the post-processed text, moses runs sacremoses' detokeniser; implies text scoring"
        },
    )
    reward_detok_lang: str = field(
        default="en", metadata={"help": "language of --reward-detok moses"}
    )
    reward_tokenize: Optional[str] = field(
        default=None,
        metadata={
            "help": "sacrebleu's tokeniser of --reward sentence_bleu on text (13a, intl, char, "
            "none, ...; default 13a); implies text scoring"
        },
    )
    reward_lowercase: bool = field(
        default=False,
        metadata={"help": "case-insensitive sentence_bleu or chrf on text (sacrebleu's -lc)"},
    )
    reward_chrf_word_order: int = field(
        default=0, metadata={"help": "word n-gram order of --reward chrf (2: chrF++)"}
    )
    reward_smooth_method: ChoiceEnum(["none", "floor", "add-k", "exp"]) = field(
        default="exp", metadata={"help": "sacrebleu smoothing of --reward sentence_bleu"}
    )
    reward_measure: ChoiceEnum(["fmeasure", "recall", "precision"]) = field(
        default="fmeasure", metadata={"help": "which ROUGE measure --reward rouge2/rougeL gives"}
    )
    reward_unk_matches: bool = field(
        default=False, metadata={"help": "let <unk> in the reference match <unk> in a sample"}
    )
    mixer_loss_scaling: ChoiceEnum(LOSS_SCALINGS) = field(
        default="normalized",
        metadata={
            "help": "normalized: both losses summed over tokens and divided by the token "
            "count; release: XENT as a per-step batch mean, REINFORCE summed over the batch, "
            "and step s under both losses (reproduces the paper)"
        },
    )
    mixer_baseline_heads: ChoiceEnum(["per_step", "shared"]) = field(
        default="per_step", metadata={"help": "one baseline regressor per time step, or one"}
    )
    mixer_baseline_steps: int = field(
        default=200, metadata={"help": "number of per-step heads; later steps use the last"}
    )
    mixer_baseline_bias_scale: float = field(
        default=1.0,
        metadata={
            "help": "the baseline's bias moves this many times faster under Adam-like "
            "optimisers (1: the release; about 100 for Adam at a fine-tuning lr)"
        },
    )
    mixer_baseline_weight: float = field(
        default=0.01, metadata={"help": "weight of 1/2 sum (b_t - R)^2 (release: 0.01)"}
    )
    mixer_baseline: ChoiceEnum(BASELINES) = field(
        default="learned",
        metadata={
            "help": "what REINFORCE subtracts from the reward: learned (the paper's per-step "
            "regressor on the decoder state), self_critical (the reward of the greedy "
            "continuation of the same prefix: one more decoding pass, without grad), or "
            "leave_one_out (the mean reward of the other --mixer-samples samples of the source)"
        },
    )
    mixer_samples: int = field(
        default=1,
        metadata={
            "help": "samples drawn per source sentence, each one more rollout "
            "(leave_one_out needs at least 2)"
        },
    )
    mixer_rollout: ChoiceEnum(ROLLOUTS) = field(
        default="auto",
        metadata={
            "help": "one_pass: draw the samples inside the training forward pass, in train mode "
            "and with grad, as the release did (recurrent decoders only); two_pass: draw under "
            "no_grad in eval mode, then score them with one teacher-forced pass; auto: one_pass "
            "for LSTM decoders, whose teacher-forced pass steps through time anyway, two_pass "
            "for the others, whose teacher-forced pass is parallel"
        },
    )
    mixer_sample_len: ChoiceEnum(["reference", "source", "fixed"]) = field(
        default="reference",
        metadata={
            "help": "longest sample: a * reference length + b, a * source length + b, "
            "or T (--mixer-unroll-steps)"
        },
    )
    mixer_sample_len_a: float = field(default=1.0, metadata={"help": "a in a * length + b"})
    mixer_sample_len_b: int = field(default=5, metadata={"help": "b in a * length + b"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing of the XENT part"}
    )
    seed: int = II("common.seed")


TEXT_FLAGS = {
    "reward_post_process": "--reward-post-process",
    "reward_detok": "--reward-detok",
    "reward_tokenize": "--reward-tokenize",
    "reward_lowercase": "--reward-lowercase",
}


def text_flags_given(cfg: MixerCriterionConfig) -> list[str]:
    """The text flags set on the command line (their names)."""
    return [
        flag for key, flag in TEXT_FLAGS.items() if getattr(cfg, key, None) not in (None, False)
    ]


def reward_text_form(cfg: MixerCriterionConfig) -> Optional[TextForm]:
    """How the reward sees the text, or None when it scores token ids (no text flag given)."""
    if cfg.reward != "chrf" and not text_flags_given(cfg):
        return None
    return TextForm(
        post_process=cfg.reward_post_process or "none",
        detok=cfg.reward_detok or "none",
        detok_lang=cfg.reward_detok_lang,
    )


def check_reward_options(cfg: MixerCriterionConfig) -> None:
    """Flag combinations that cannot mean anything fail here, naming the flag."""
    given = text_flags_given(cfg)
    if cfg.reward == "mixer_bleu" and given:
        raise ValueError(
            f"{given[0]}: --reward mixer_bleu scores the token ids of the sampled suffix, not "
            "text; use --reward sentence_bleu or chrf to score the text"
        )
    if cfg.reward_post_process is not None and cfg.reward_post_process not in POST_PROCESS_CHOICES:
        raise ValueError(
            f"--reward-post-process {cfg.reward_post_process!r}: unknown; fairseq's "
            f"--post-process takes {', '.join(map(repr, POST_PROCESS_CHOICES))}"
        )
    if cfg.reward_tokenize is not None:
        if cfg.reward != "sentence_bleu":
            raise ValueError(
                f"--reward-tokenize is the tokeniser of sentence_bleu; --reward {cfg.reward} "
                "does not tokenise (chrf scores characters and words as sacrebleu's chrF, "
                "rouge2/rougeL whitespace words): drop --reward-tokenize"
            )
        if cfg.reward_tokenize not in sacrebleu_tokenizers():
            raise ValueError(
                f"--reward-tokenize {cfg.reward_tokenize!r}: unknown; sacrebleu's tokenisers "
                f"are {', '.join(sacrebleu_tokenizers())}"
            )
    if cfg.reward_lowercase and cfg.reward not in ("sentence_bleu", "chrf"):
        raise ValueError(
            f"--reward-lowercase applies to sentence_bleu and chrf, not --reward {cfg.reward}"
        )
    if cfg.reward_chrf_word_order < 0:
        raise ValueError(
            f"--reward-chrf-word-order must be >= 0 (got {cfg.reward_chrf_word_order})"
        )
    if cfg.reward_chrf_word_order and cfg.reward != "chrf":
        raise ValueError(
            f"--reward-chrf-word-order applies to --reward chrf, not --reward {cfg.reward}"
        )


def reward_options(cfg: MixerCriterionConfig) -> dict:
    """The options of the chosen reward, taken from the criterion's flags."""
    options = {"unk_matches": cfg.reward_unk_matches}
    text = reward_text_form(cfg)
    if text is not None:
        options["text"] = text
        if cfg.reward in ("sentence_bleu", "chrf"):
            options["lowercase"] = cfg.reward_lowercase
    if cfg.reward == "sentence_bleu":
        options["smooth_method"] = cfg.reward_smooth_method
        if text is not None:
            options["tokenize"] = cfg.reward_tokenize or "13a"
    elif cfg.reward in ("rouge2", "rougeL"):
        options["measure"] = cfg.reward_measure
    elif cfg.reward == "chrf":
        options["word_order"] = cfg.reward_chrf_word_order
    return options


def build_reward(cfg: MixerCriterionConfig, dictionary):
    """The reward of the flags, on the target dictionary's ids or on their text."""
    options = reward_options(cfg)
    special = {"pad": dictionary.pad(), "eos": dictionary.eos(), "unk": dictionary.unk()}
    if "text" in options:
        special.update(symbols=dictionary.symbols, bos=dictionary.bos())
    return get_reward(cfg.reward, **special, **options)


def check_criterion_options(cfg: MixerCriterionConfig) -> None:
    check_reward_options(cfg)
    if cfg.mixer_baseline_steps < 1:
        raise ValueError(f"--mixer-baseline-steps must be >= 1 (got {cfg.mixer_baseline_steps})")
    if cfg.mixer_baseline_bias_scale <= 0:
        raise ValueError(
            f"--mixer-baseline-bias-scale must be > 0 (got {cfg.mixer_baseline_bias_scale})"
        )
    if cfg.mixer_baseline_weight < 0:
        raise ValueError(f"--mixer-baseline-weight must be >= 0 (got {cfg.mixer_baseline_weight})")
    if cfg.mixer_samples < 1:
        raise ValueError(f"--mixer-samples must be >= 1 (got {cfg.mixer_samples})")
    if cfg.mixer_baseline == "leave_one_out" and cfg.mixer_samples < 2:
        raise ValueError(
            "--mixer-baseline leave_one_out averages the other samples of a source: it needs "
            f"--mixer-samples 2 or more (got {cfg.mixer_samples})"
        )
    if cfg.mixer_sample_len_a < 0 or cfg.mixer_sample_len_b < 0:
        raise ValueError("--mixer-sample-len-a and --mixer-sample-len-b must be >= 0")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ValueError(f"--label-smoothing must lie in [0, 1) (got {cfg.label_smoothing})")


@register_criterion("mixer", dataclass=MixerCriterionConfig)
class MixerCriterion(FairseqCriterion):
    def __init__(self, task, cfg: MixerCriterionConfig, feature_dim: int):
        super().__init__(task)
        check_criterion_options(cfg)
        self.cfg = cfg
        self.eos = task.target_dictionary.eos()
        self.unk = task.target_dictionary.unk()
        self.reward = build_reward(cfg, task.target_dictionary)
        if self.text_reward is not None:
            logger.info("MIXER reward %s on text: %s", cfg.reward, self.text_reward.signature())
        else:
            logger.info("MIXER reward on token ids: %r", self.reward)
        heads = cfg.mixer_baseline_steps if cfg.mixer_baseline_heads == "per_step" else 1
        self.baseline = StepBaseline(feature_dim, heads, bias_scale=cfg.mixer_baseline_bias_scale)
        self.release_scaling = cfg.mixer_loss_scaling == "release"
        self.unroll_steps = task.cfg.mixer_unroll_steps
        self.placement = task.cfg.mixer_schedule
        self.stage = MixerStage(index=0, s=self.unroll_steps, xent_weight=1.0)
        self.num_updates = 0

    @property
    def text_reward(self) -> Optional[TextReward]:
        """The reward when it scores text (the validation BLEU then scores the same text)."""
        return self.reward if isinstance(self.reward, TextReward) else None

    @classmethod
    def build_criterion(cls, cfg: MixerCriterionConfig, task):
        if not hasattr(task, "decoder_feature_dim"):
            raise ValueError(
                "--criterion mixer needs --task mixer (it owns the MIXER schedule); "
                f"got task {type(task).__name__}"
            )
        if task.decoder_feature_dim is None:
            raise ValueError(
                "--criterion mixer could not read the decoder feature that feeds the output "
                "projection of this model (see the warning above); the baseline needs it"
            )
        return cls(task, cfg, task.decoder_feature_dim)

    def set_mixer_stage(self, stage: MixerStage, num_updates: int) -> None:
        self.stage = stage
        self.num_updates = num_updates

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Tolerate checkpoints without criterion state (warm start from plain XENT)."""
        if not state_dict:
            logger.info("no MIXER criterion state in the checkpoint: baseline initialised")
            return torch.nn.modules.module._IncompatibleKeys([], [])
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            raise ValueError(
                "the checkpoint's criterion state is not a MIXER baseline of this shape: it has "
                f"{sorted(state_dict)}, expected {sorted(expected)} (a checkpoint of another "
                "criterion? start from its model with --finetune-from-model instead)"
            )
        own = self.state_dict()
        for key, value in state_dict.items():
            if value.shape != own[key].shape:
                raise ValueError(
                    f"the checkpoint's MIXER baseline {key} has shape {tuple(value.shape)}, this "
                    f"run's has {tuple(own[key].shape)} (different --mixer-baseline-steps/heads "
                    "or model size)"
                )
        return super().load_state_dict(state_dict, strict=strict)

    def forward(self, model, sample, reduce=True):
        if model.training and self.stage.uses_reinforce:
            return self._mixer_step(model, sample)
        return self._teacher_forced_step(model, sample)

    def _teacher_forced_step(self, model, sample):
        """XENT on the whole reference: stage 0 of training, and validation (NLL)."""
        decoder_out = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(decoder_out, log_probs=True)
        target = sample["target"]
        mask = target.ne(self.padding_idx)
        smoothing = self.cfg.label_smoothing if model.training else 0.0
        token_losses, nll = token_nll(lprobs, target, smoothing)
        release = self.release_scaling and model.training
        loss = xent_loss(token_losses, mask, per_step_mean=release)
        sample_size = 1 if release else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": (nll * mask).sum().data,
            "xent_tokens": sample["ntokens"],
            "ntokens": sample["ntokens"],
            "nsentences": target.size(0),
            "sample_size": sample_size,
        }
        if model.training:
            logging_output.update(self._stage_log(target.size(0)))
        return loss, sample_size, logging_output

    def _mixer_step(self, model, sample):
        check_data_parallel_backend(model)
        net_input, target = sample["net_input"], sample["target"]
        pad, stage, samples = self.padding_idx, self.stage, self.cfg.mixer_samples
        overlap = 1 if self.release_scaling else 0
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])

        ref_lengths = target.ne(pad).sum(1)
        prefix = teacher_forced_lengths(
            ref_lengths, stage.s, self.unroll_steps, self.placement, overlap
        )
        max_lengths = self._max_sample_lengths(ref_lengths, net_input["src_lengths"])
        greedy_rewards = None
        if self.cfg.mixer_baseline == "self_critical":
            greedy_rewards = self._greedy_rewards(model, encoder_out, target, prefix, max_lengths)
        if samples > 1:
            copies = torch.arange(target.size(0), device=target.device)
            copies = copies.repeat_interleave(samples)
            encoder_out = reordered_encoder_out(model.encoder, encoder_out, copies)
            target, ref_lengths, prefix, max_lengths = (
                t.index_select(0, copies) for t in (target, ref_lengths, prefix, max_lengths)
            )
            if greedy_rewards is not None:
                greedy_rewards = greedy_rewards.index_select(0, copies)
        sampling = (
            target,
            prefix,
            max_lengths,
            batch_generator(self.cfg.seed, self.num_updates, sample, target.device),
            pad,
            self.eos,
        )
        # The rewards as soon as the samples exist: on a GPU they are scored on the host
        # (rewards/base.py), and the copy of the samples there waits for the work queued
        # before it, not for the teacher-forced pass. Features and log-probabilities come for
        # the hypotheses' tokens only ([N, ...], at the flat positions `where`), the positions
        # both losses read.
        one_pass = samples_in_training_pass(model.decoder, self.cfg.mixer_rollout)
        if one_pass:
            hyps, features, lprobs = sample_and_score_after_prefix(model, encoder_out, *sampling)
        else:
            hyps = sample_in_eval_mode(model, encoder_out, sampling)
        rewards = self.reward(hyps, target, start=prefix)
        where = token_positions(hyps, pad)
        if not one_pass:
            features, lprobs = teacher_forced_log_probs(
                model, shift_right(hyps, self.eos, pad), encoder_out, where
            )
        rewards = rewards.to(lprobs.dtype)

        sampled = prefix < ref_lengths
        hyp_lengths = hyps.ne(pad).sum(1)
        batch, width = hyps.shape
        xent_mask, rl_mask = loss_masks(prefix, ref_lengths, hyp_lengths, width, overlap)
        xent_mask, rl_mask = xent_mask.to(lprobs.dtype), rl_mask.to(lprobs.dtype)

        reference = at_positions(fit_width(target, width, pad), where)
        token_losses, nll = token_nll(lprobs, reference, self.cfg.label_smoothing)
        hyp_logprobs = lprobs.gather(-1, at_positions(hyps, where).unsqueeze(-1)).squeeze(-1)
        rows = rows_of_positions(where, batch, width)
        token_losses, nll, hyp_logprobs = (
            padded_from_rows(t, rows, batch, width) for t in (token_losses, nll, hyp_logprobs)
        )
        baselines = self._baselines(features, rows, width, rewards, greedy_rewards)

        xent = xent_loss(token_losses, xent_mask, per_step_mean=self.release_scaling)
        reinforce = reinforce_loss(hyp_logprobs, rewards, baselines, rl_mask)
        baseline_err = baseline_loss(baselines, rewards, rl_mask)
        if self.release_scaling:
            # the release sums REINFORCE over the sources of a batch, not over their samples
            reinforce, baseline_err = reinforce / samples, baseline_err / samples
        baseline_weight = (
            self.cfg.mixer_baseline_weight if self.cfg.mixer_baseline == "learned" else 0.0
        )
        loss = mixer_loss(xent, reinforce, baseline_err, stage.xent_weight, baseline_weight)

        xent_tokens = xent_mask.sum()
        rl_tokens = rl_mask.sum()
        sample_size = 1 if self.release_scaling else int(xent_tokens + rl_tokens)
        nsentences = sample["target"].size(0)
        logging_output = {
            "loss": loss.data,
            "nll_loss": (nll * xent_mask).sum().data,
            "xent_tokens": xent_tokens.data,
            "reinforce_loss": reinforce.data,
            "rl_tokens": rl_tokens.data,
            "reward": (rewards * sampled).sum().data,
            "sampled_sentences": sampled.sum().data,
            "baseline": (baselines * rl_mask).sum().data,
            "baseline_sq_err": (2.0 * baseline_err).data,
            "hyp_tokens": hyp_lengths.sum().data,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": sample_size,
            **self._stage_log(nsentences),
        }
        return loss, sample_size, logging_output

    def _baselines(self, features, rows, width: int, rewards, greedy_rewards) -> torch.Tensor:
        """b [B, L] of `--mixer-baseline`: learned per step on the tokens' features [N, d]
        (placed in [B, L] by `rows`), or one value per sentence."""
        if self.cfg.mixer_baseline == "learned":
            return self.baseline(padded_from_rows(features, rows, rewards.size(0), width))
        if self.cfg.mixer_baseline == "self_critical":
            per_sentence = greedy_rewards.to(rewards.dtype)
        else:
            per_sentence = leave_one_out_baseline(rewards, self.cfg.mixer_samples)
        return sentence_baseline(per_sentence, width)

    def _greedy_rewards(self, model, encoder_out, target, prefix, max_lengths) -> torch.Tensor:
        """Rewards [B] of the greedy continuations of the prefixes: the self-critical baseline."""
        greedy = sample_in_eval_mode(
            model,
            encoder_out,
            (target, prefix, max_lengths, None, self.padding_idx, self.eos),
            greedy=True,
        )
        return self.reward(greedy, target, start=prefix)

    def _stage_log(self, nsentences: int) -> dict:
        return {
            "mixer_s": self.stage.s * nsentences,
            "mixer_xent_weight": self.stage.xent_weight * nsentences,
            "mixer_sentences": nsentences,
        }

    def _max_sample_lengths(self, ref_lengths, src_lengths):
        cfg = self.cfg
        if cfg.mixer_sample_len == "fixed":
            return torch.full_like(ref_lengths, self.unroll_steps)
        base = ref_lengths if cfg.mixer_sample_len == "reference" else src_lengths
        return (cfg.mixer_sample_len_a * base.float()).long() + cfg.mixer_sample_len_b

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        xent_tokens = total("xent_tokens")
        if xent_tokens > 0:
            metrics.log_scalar(
                "nll_loss", total("nll_loss") / xent_tokens / math.log(2), xent_tokens, round=3
            )
            metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        rl_tokens = total("rl_tokens")
        if rl_tokens > 0:
            sentences = total("sampled_sentences")
            metrics.log_scalar(
                "reinforce_loss", total("reinforce_loss") / rl_tokens, rl_tokens, round=4
            )
            metrics.log_scalar("reward", total("reward") / sentences, sentences, round=4)
            metrics.log_scalar("baseline", total("baseline") / rl_tokens, rl_tokens, round=4)
            metrics.log_scalar(
                "baseline_mse", total("baseline_sq_err") / rl_tokens, rl_tokens, round=5
            )
            metrics.log_scalar("sample_len", rl_tokens / sentences, sentences, round=2)
            metrics.log_scalar("sampled_share", rl_tokens / total("hyp_tokens"), rl_tokens, round=3)
        stage_sentences = total("mixer_sentences")
        if stage_sentences > 0:
            metrics.log_scalar("mixer_s", total("mixer_s") / stage_sentences, 0, round=1)
            metrics.log_scalar(
                "mixer_xent_weight", total("mixer_xent_weight") / stage_sentences, 0, round=2
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def sample_in_eval_mode(model, encoder_out, sampling: tuple, greedy: bool = False) -> torch.Tensor:
    """`sample_after_prefix` with the decoder in eval mode (no dropout), then back."""
    was_training = model.decoder.training
    model.decoder.eval()
    try:
        return sample_after_prefix(model, encoder_out, *sampling, greedy=greedy)
    finally:
        model.decoder.train(was_training)


def fit_width(tokens: torch.Tensor, width: int, pad: int) -> torch.Tensor:
    """`tokens` [B, L] cut or right-padded to `width` columns."""
    if tokens.size(1) >= width:
        return tokens[:, :width]
    return torch.cat([tokens, tokens.new_full((tokens.size(0), width - tokens.size(1)), pad)], 1)


def check_data_parallel_backend(model) -> None:
    """MIXER calls the encoder and decoder directly, which torch's DDP would not synchronise."""
    inner = getattr(model, "module", None)
    if isinstance(inner, DistributedDataParallel) or isinstance(model, DistributedDataParallel):
        raise ValueError(
            "--criterion mixer runs the encoder and decoder separately, which PyTorch's "
            "DistributedDataParallel does not synchronise: use --ddp-backend legacy_ddp"
        )
