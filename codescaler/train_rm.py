"""Bradley-Terry reward-model training on pairs (`codescaler train-rm`).

loss = -log sigmoid(r(chosen) - r(rejected) - margin) + c * mean((r_c + r_r)^2)

The training runs TRL's RewardTrainer, but every input is tokenised here by
the scorer's own `build_rm_input` (codescaler/scorer.py): the same chat, the
same duplicate-BOS strip and the same shortening (prompt first, never the
code's end). So training and scoring can never drift, and no pair is dropped
for length (TRL drops pairs over `max_length`; ours never reach it).

The result is a `save_pretrained` directory (LoRA adapters merged in) that
`codescaler score --model DIR` loads unchanged. Runs unchanged under
`accelerate launch -m codescaler train-rm ...` (see
examples/accelerate/deepspeed_zero2.yaml).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

from codescaler.records import Pair, UserError, read_records
from codescaler.scorer import build_rm_input

METHODS = ("full", "lora")
DEFAULT_LR = {"full": 2e-5, "lora": 5e-4}  # measured-here.md: LoRA at 1e-4 learned nothing in ~40 CPU steps
SUMMARY_FILE = "codescaler_train_rm.json"
# transformers' schedulers that need no extra arguments
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
              "inverse_sqrt")


@dataclass
class TrainRMConfig:
    """What to train, on what, and how. Defaults suit a 0.1-8B seq-cls model; each is commented."""

    pairs: str = field(metadata={"help": "pairs JSONL(.gz) from `codescaler pairs` (prompt, chosen, rejected, ...)"})
    base_model: str = field(metadata={
        "help": "a seq-cls checkpoint (hub id such as Skywork/Skywork-Reward-V2-Qwen3-1.7B, or a directory), a "
                "causal-LM checkpoint or a .gguf file (a fresh score head is added)"})
    output_dir: str = field(metadata={"help": "where the trained RM (save_pretrained) and its checkpoints go"})
    method: str = field(default="full", metadata={
        "help": "full: every weight trains; lora: LoRA adapters + the score head train, merged into the output"})
    learning_rate: float = field(default=0.0, metadata={
        "help": f"peak AdamW learning rate; 0 = by method ({DEFAULT_LR['full']:g} full, {DEFAULT_LR['lora']:g} lora)"})
    max_length: int = field(default=2048, metadata={
        "help": "tokens per RM input (chosen and rejected each); longer ones are shortened exactly as the scorer does"})
    batch_size: int = field(default=4, metadata={"help": "pairs per device per step (each pair is 2 sequences)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps summed per optimizer update"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs (BT RMs overfit past ~1-2)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer updates (-1 = by epochs)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of updates with linear LR warmup"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (0: the head is tiny, BT is noisy)"})
    lr_scheduler: str = field(default="cosine", metadata={
        "help": "transformers scheduler after warmup: cosine, linear, constant, constant_with_warmup, "
                "cosine_with_restarts, polynomial or inverse_sqrt"})
    margin: float = field(default=0.0, metadata={
        "help": "BT margin m in -log sigmoid(r_c - r_r - m); 0 = plain BT"})
    margin_by_pass_rate: bool = field(default=False, metadata={
        "help": "scale --margin per pair by (chosen_pass_rate - rejected_pass_rate); needs --margin > 0"})
    center_rewards_coefficient: float = field(default=0.0, metadata={
        "help": "weight of mean((r_c + r_r)^2), keeping rewards near zero (0 = off; 0.01 is the usual value)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0: few steps, dropout only slows)"})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", metadata={
        "help": "comma-separated module names that get LoRA adapters (the score head always trains fully)"})
    eval_fraction: float = field(default=0.1, metadata={
        "help": "fraction of *problems* held out for evaluation (their pairs never train); 0 = none"})
    eval_pairs: str = field(default="", metadata={"help": "a separate eval pairs file (overrides --eval-fraction)"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate every N updates during training (0 = only at the end)"})
    eval_before: bool = field(default=True, metadata={"help": "also measure eval accuracy of the untrained model"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N updates (for resume)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep output_dir/checkpoints after success"})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in output_dir if any"})
    dtype: str = field(default="auto", metadata={
        "help": "auto = bf16 mixed precision on CUDA, float32 on CPU; or bfloat16/float32"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward: less memory, ~30% slower (turn on for long inputs/big models)"})
    group_by_length: bool = field(default=True, metadata={
        "help": "batch pairs of similar length together (less padding, faster; order stays seeded-random)"})
    logging_steps: int = field(default=5, metadata={"help": "log loss/accuracy every N updates"})
    seed: int = field(default=0, metadata={"help": "seed of the head init, the eval split and data order"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; use one of {METHODS}")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype={self.dtype!r}; use auto, bfloat16 or float32")
        if self.max_length < 32:
            raise ValueError(f"max_length={self.max_length} leaves no room for a chat; use at least 32 (e.g. 2048)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction}; use a value in [0, 1), e.g. 0.1")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be at least 1")
        if self.learning_rate < 0 or self.center_rewards_coefficient < 0:
            raise ValueError("learning_rate and center_rewards_coefficient must be >= 0")
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ValueError("nothing to train: set --epochs > 0 or --max-steps > 0")
        if not 0 <= self.warmup_ratio < 1:  # transformers reads a value >= 1 as a number of steps
            raise ValueError(f"warmup_ratio={self.warmup_ratio}; use a fraction of the updates in [0, 1), e.g. 0.05")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r}; use one of {', '.join(SCHEDULERS)}")
        if self.margin_by_pass_rate and not self.margin > 0:
            raise ValueError("margin_by_pass_rate scales --margin, which is 0: set --margin > 0 too (e.g. 1.0)")

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LR[self.method]


# ---------------------------------------------------------------- data


def split_by_problem(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, eval): a seeded `fraction` of problems is held out whole, so eval problems are unseen."""
    ids = sorted({p.problem_id for p in pairs})
    if fraction <= 0 or len(ids) < 2:
        return list(pairs), []
    random.Random(seed).shuffle(ids)
    held = set(ids[:min(len(ids) - 1, max(1, round(fraction * len(ids))))])  # at least one problem trains
    return [p for p in pairs if p.problem_id not in held], [p for p in pairs if p.problem_id in held]


def encode_pairs(tokenizer, pairs: Sequence[Pair], max_length: int) -> tuple[list[list[int]], list[list[int]], int]:
    """(chosen ids, rejected ids, sequences shortened): the scorer's exact inputs, never dropped."""
    chosen, rejected, shortened = [], [], 0
    for p in pairs:
        c, tc = build_rm_input(tokenizer, p.prompt, p.chosen, max_length)
        r, tr = build_rm_input(tokenizer, p.prompt, p.rejected, max_length)
        chosen.append(c)
        rejected.append(r)
        shortened += tc + tr
    return chosen, rejected, shortened


def pair_margins(pairs: Sequence[Pair], config: TrainRMConfig) -> list[float]:
    if config.margin_by_pass_rate:
        return [config.margin * (p.chosen_pass_rate - p.rejected_pass_rate) for p in pairs]
    return [config.margin] * len(pairs)


def make_dataset(tokenizer, pairs: Sequence[Pair], config: TrainRMConfig):
    """A pre-tokenised datasets.Dataset with TRL's columns (chosen_ids, rejected_ids[, margin]) and `length`."""
    from datasets import Dataset

    chosen, rejected, shortened = encode_pairs(tokenizer, pairs, config.max_length)
    cols = {"chosen_ids": chosen, "rejected_ids": rejected,
            "length": [max(len(c), len(r)) for c, r in zip(chosen, rejected)]}  # padded width, for grouping
    if config.margin:
        cols["margin"] = pair_margins(pairs, config)
    return Dataset.from_dict(cols), shortened


def safe_pad_token(tokenizer, sequences: Sequence[list[int]]) -> None:
    """Make sure the pad id never ends a real input.

    A seq-cls model reads the score at the rightmost non-pad token; the scorer
    reads it at the last real token. They agree unless an input ends with the
    pad id, so then a pad token that ends no input is chosen.
    """
    ends = {s[-1] for s in sequences if s}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in ends:
        return
    for tok in [tokenizer.unk_token, tokenizer.bos_token, *tokenizer.all_special_tokens, tokenizer.eos_token]:
        if tok is not None and tokenizer.convert_tokens_to_ids(tok) not in ends:
            tokenizer.pad_token = tok
            return
    raise UserError("every special token ends some RM input; cannot pick a pad token that keeps the score position")


# ---------------------------------------------------------------- model


def _trainer_class():
    """TRL's RewardTrainer, keeping our `length` column so that length-grouped batching can read it."""
    from trl import RewardTrainer

    class CodeScalerRewardTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "length"]

    return CodeScalerRewardTrainer


def load_base(base_model: str, dtype):
    """(tokenizer, trainable seq-cls model with 1 label) via the scorer's loader (hub id, dir or .gguf)."""
    from codescaler.scorer import load_reward_model

    tokenizer, model = load_reward_model(base_model, dtype=dtype)
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF is dequantised on load: drop the "quantized" flag, else Trainer refuses full fine-tuning and
        # TRL casts LoRA adapters to bf16 as it does for QLoRA.
        model.hf_quantizer.remove_quantization_config(model)
    model.train().requires_grad_(True)
    return tokenizer, model


def lora_config(config: TrainRMConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=[m.strip() for m in config.lora_target_modules.split(",") if m.strip()])


def final_model(model):
    """The plain transformers model to save: LoRA merged, GGUF quantization config removed."""
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        model = model.merge_and_unload()
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model


# ---------------------------------------------------------------- evaluation


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float:
    """Fraction of pairs ranked right; a tie counts half."""
    if not chosen_scores:
        return float("nan")
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_scores, rejected_scores))
    return wins / len(chosen_scores)


def evaluate_pairs(scorer, chosen_ids: Sequence[list[int]], rejected_ids: Sequence[list[int]]) -> dict:
    """Pairwise accuracy and mean margin of `scorer` (a RewardScorer) on pre-built inputs."""
    from codescaler.cli import progress

    with progress(total=2 * len(chosen_ids), desc="eval", unit="seq") as bar:
        rc, rr = scorer.score_ids(chosen_ids, bar.update), scorer.score_ids(rejected_ids, bar.update)
    return {"accuracy": pairwise_accuracy(rc, rr), "pairs": len(rc),
            "mean_margin": sum(c - r for c, r in zip(rc, rr)) / max(1, len(rc))}


def length_baseline(chosen_ids: Sequence[list[int]], rejected_ids: Sequence[list[int]]) -> float:
    """Pairwise accuracy of "the longer input is better" (1 - this is "the shorter is better")."""
    return pairwise_accuracy([len(c) for c in chosen_ids], [len(r) for r in rejected_ids])


# ---------------------------------------------------------------- training


def train_reward_model(config: TrainRMConfig) -> dict:
    """Train, save a `score`-loadable RM in `config.output_dir`, and return the summary (also saved there)."""
    import torch
    from transformers.trainer_utils import get_last_checkpoint
    from trl import RewardConfig

    from codescaler.scorer import RewardScorer, ScorerConfig

    pairs = read_records(config.pairs, Pair)
    if not pairs:
        raise UserError(f"{config.pairs}: no pairs to train on")
    if config.eval_pairs:
        train_pairs, eval_pairs = pairs, read_records(config.eval_pairs, Pair)
    else:
        train_pairs, eval_pairs = split_by_problem(pairs, config.eval_fraction, config.seed)
    if os.path.isfile(os.path.join(config.output_dir, SUMMARY_FILE)):
        raise UserError(f"{config.output_dir} already holds a trained RM; pick another --output-dir or remove it")

    cuda = torch.cuda.is_available()
    bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and cuda)
    tokenizer, model = load_base(config.base_model, torch.float32)
    train_ds, train_short = make_dataset(tokenizer, train_pairs, config)
    eval_ds, eval_short = make_dataset(tokenizer, eval_pairs, config) if eval_pairs else (None, 0)
    eval_c, eval_r = (list(eval_ds["chosen_ids"]), list(eval_ds["rejected_ids"])) if eval_ds is not None else ([], [])
    safe_pad_token(tokenizer, list(train_ds["chosen_ids"]) + list(train_ds["rejected_ids"]) + eval_c + eval_r)
    model.config.pad_token_id = tokenizer.pad_token_id
    print(f"train-rm: {len(train_pairs)} train pairs ({train_short} inputs shortened to {config.max_length} tokens), "
          f"{len(eval_pairs)} eval pairs; {config.method}, lr {config.lr:g}", file=sys.stderr)

    summary: dict = {"base_model": config.base_model, "config": asdict(config), "train_pairs": len(train_pairs),
                     "eval_pairs": len(eval_pairs), "inputs_shortened": train_short + eval_short}
    # Under `accelerate launch` only the main process measures the untrained model (on its own GPU).
    if eval_ds is not None and config.eval_before and int(os.environ.get("RANK", "0")) == 0:
        if cuda:
            model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
        model.eval()
        scorer = RewardScorer(ScorerConfig(max_length=config.max_length, dtype="float32"), tokenizer, model)
        summary["eval_before"] = evaluate_pairs(scorer, eval_c, eval_r)
        summary["eval_length_baseline"] = length_baseline(eval_c, eval_r)
        model.train()

    ckpt_dir = os.path.join(config.output_dir, "checkpoints")
    args = RewardConfig(
        output_dir=ckpt_dir,
        max_length=config.max_length,  # every input is <= this already, so TRL's length filter drops nothing
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total
        weight_decay=config.weight_decay,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        activation_checkpointing=config.gradient_checkpointing,
        bf16=bf16,
        use_cpu=not cuda,
        eval_strategy="steps" if (eval_ds is not None and config.eval_steps) else "no",
        eval_steps=config.eval_steps or None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=False,
        # Similar lengths share a batch (the collator pads chosen+rejected to the longest of the batch).
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            processing_class=tokenizer,
                            peft_config=lora_config(config) if config.method == "lora" else None)
    if len(trainer.train_dataset) != len(train_pairs):  # our guarantee: nothing dropped for length
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(train_pairs)} training pairs")
    last = get_last_checkpoint(ckpt_dir) if (config.resume and os.path.isdir(ckpt_dir)) else None
    if last:
        print(f"train-rm: resuming from {last}", file=sys.stderr)
    result = trainer.train(resume_from_checkpoint=last)
    summary["train"] = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    summary["log_history"] = trainer.state.log_history

    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return summary
    rm = final_model(trainer.accelerator.unwrap_model(trainer.model))
    rm.eval()
    rm.save_pretrained(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    del trainer
    if eval_ds is not None:  # measured on the saved directory, loaded the way `codescaler score` loads it
        scorer = RewardScorer(ScorerConfig(model=config.output_dir, max_length=config.max_length, dtype="float32"))
        summary["eval_after"] = evaluate_pairs(scorer, eval_c, eval_r)
    with open(os.path.join(config.output_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=str)
    if not config.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"train pairs {summary['train_pairs']}, eval pairs {summary['eval_pairs']}, "
             f"inputs shortened {summary['inputs_shortened']}"]
    t = summary.get("train", {})
    if t:
        lines.append(f"train: {t.get('train_runtime', float('nan')):.0f}s, final loss {t.get('train_loss', float('nan')):.4f}")
    for key, name in (("eval_before", "eval accuracy, untrained"), ("eval_after", "eval accuracy, trained")):
        if key in summary:
            e = summary[key]
            lines.append(f"{name}: {e['accuracy']:.3f} ({e['pairs']} pairs, mean margin {e['mean_margin']:+.3f})")
    if "eval_length_baseline" in summary:
        b = summary["eval_length_baseline"]
        lines.append(f"eval accuracy, longer-is-better baseline: {b:.3f} (shorter-is-better {1 - b:.3f})")
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.cli import add_config_args

    add_config_args(p, TrainRMConfig, choices={"method": METHODS})


def cli_main(args) -> int:
    from codescaler.cli import config_from_args

    config = config_from_args(TrainRMConfig, args)
    summary = train_reward_model(config)
    print(format_summary(summary), file=sys.stderr)
    print(f"train-rm: saved the RM to {config.output_dir} (load it with `codescaler score --model "
          f"{config.output_dir}`)", file=sys.stderr)
    return 0

