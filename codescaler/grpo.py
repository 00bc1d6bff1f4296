"""`codescaler train-policy`: GRPO on TRL's GRPOTrainer with the rm, tests or hybrid reward.

The defaults are the paper's verl recipe mapped onto TRL's GRPOConfig (see `grpo_args`):
n=8 rollouts per prompt, 128 prompts per rollout batch, lr 1e-6 (constant), clip 0.2/0.28
(clip-higher), token-mean loss (TRL's loss_type="dapo"), beta=0 (no KL, no reference model),
16384-token responses, RM max_length 4096. What TRL cannot express (DAPO dynamic sampling
`filter_groups`, verl's dual-clip `clip_ratio_c`, prompt-length filtering) is listed in the README.

Every optimizer step appends a line to OUTPUT_DIR/reward_log.jsonl (reward, valid-code rate,
response length, loss, ...); the end of training draws OUTPUT_DIR/reward_curve.png. Checkpoints
go to OUTPUT_DIR/checkpoint-N every --save-steps; rerunning the same command resumes from the last
one. vLLM generates when it is installed (colocated); on a machine without CUDA, TRL runs with use_cpu.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import MISSING, dataclass, field, fields

from codescaler.records import Problem, UserError, read_problems, stream_jsonl, write_jsonl
from codescaler.rewards import REWARDS, make_reward
from codescaler.scorer import ScorerConfig, add_scorer_args, scorer_config_from_args

LOG_NAME = "reward_log.jsonl"
CURVE_NAME = "reward_curve.png"
CHOICES = {"reward": REWARDS, "vllm": ("auto", "on", "off"), "gradient_checkpointing": ("auto", "on", "off"),
           "loss_type": ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")}


@dataclass
class PolicyConfig:
    """What to train, on what, with which reward; defaults mirror the paper's verl recipe."""

    problems: str = field(metadata={"help": "problems JSONL(.gz): each problem's `prompt` is the policy prompt"})
    policy: str = field(metadata={"help": "policy: hub id (e.g. Qwen/Qwen3-8B-Base), local directory or .gguf file"})
    output_dir: str = field(metadata={"help": "checkpoints, the final policy, reward_log.jsonl and reward_curve.png"})
    reward: str = field(default="rm", metadata={
        "help": "rm: softplus(RM) on extracted code; tests: 1 if all tests pass in the sandbox; "
                "hybrid: tests where a problem has them, RM where tests is null"})
    reward_url: str | None = field(default=None, metadata={
        "help": "score with a `codescaler serve` at this URL instead of loading the RM in-process (rm/hybrid); "
                "the server's own --model, --shaping and --extraction then apply to the RM"})
    reward_timeout: float = field(default=600.0, metadata={
        "help": "seconds a --reward-url call may wait for its answer (a call that times out is not sent again)"})
    num_generations: int = field(default=8, metadata={"help": "rollouts per prompt, the GRPO group (verl rollout.n)"})
    prompts_per_step: int = field(default=128, metadata={
        "help": "prompts per rollout batch (verl data.train_batch_size); completions = this x num_generations"})
    updates_per_batch: int = field(default=1, metadata={
        "help": "optimizer steps per rollout batch (verl train_batch_size / ppo_mini_batch_size)"})
    micro_batch_size: int = field(default=4, metadata={
        "help": "completions per forward/backward on each device (memory only; gradients accumulate)"})
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate, constant (verl optim.lr)"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clip of the ratio (verl clip_ratio_low)"})
    epsilon_high: float = field(default=0.28, metadata={
        "help": "upper clip of the ratio, > epsilon is DAPO clip-higher (verl clip_ratio_high)"})
    loss_type: str = field(default="dapo", metadata={
        "help": "dapo = token-mean over all tokens of the batch (verl loss_agg_mode=token-mean); or grpo, dr_grpo, ..."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; 0 loads no reference model (verl use_kl_loss=False)"})
    max_completion_length: int = field(default=16384, metadata={
        "help": "response tokens per rollout (verl data.max_response_length)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps to run; -1 = --epochs over the problems"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the problems when --max-steps is -1"})
    limit: int = field(default=0, metadata={"help": "use only the first N problems (0 = all)"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N optimizer steps (resume point)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (older ones are deleted)"})
    resume: bool = field(default=True, metadata={"help": "resume from the last checkpoint in --output-dir if any"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, shuffling and initialisation"})
    vllm: str = field(default="auto", metadata={"help": "auto = generate with vLLM (colocated) when installed and on CUDA"})
    gradient_checkpointing: str = field(default="auto", metadata={"help": "auto = on with CUDA, off on CPU"})
    sandbox_workers: int = field(default=0, metadata={"help": "sandbox processes for tests/hybrid (0 = sandbox default)"})

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; use one of {', '.join(allowed)}")
        if self.reward_url and self.reward == "tests":
            raise ValueError("reward_url is for the RM; --reward tests runs no RM: drop --reward-url or use rm/hybrid")
        if not self.reward_timeout > 0:
            raise ValueError(f"reward_timeout={self.reward_timeout}; use seconds > 0 (default 600)")
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: GRPO needs a group of at least 2 (reference: 8)")
        for name in ("prompts_per_step", "updates_per_batch", "micro_batch_size", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; use 1 or more")
        if self.epsilon_high < self.epsilon:
            raise ValueError(f"epsilon_high={self.epsilon_high} < epsilon={self.epsilon}; clip-higher needs "
                             f"epsilon_high >= epsilon (reference 0.28 vs 0.2)")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}; GRPO samples its group: use a temperature > 0 "
                             "(reference 1.0)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}; use 0 < top_p <= 1 (reference 1.0)")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta}: a negative KL coefficient pushes away from the reference; "
                             "use beta >= 0")
        completions = self.prompts_per_step * self.num_generations
        if completions % self.updates_per_batch:
            divisors = [d for d in range(1, completions + 1) if completions % d == 0 and d <= 16]
            raise ValueError(f"prompts_per_step x num_generations = {completions} completions do not split into "
                             f"updates_per_batch={self.updates_per_batch} updates; use one of {divisors}")
        per_update = completions // self.updates_per_batch
        if per_update % self.micro_batch_size:
            divisors = [d for d in range(1, per_update + 1) if per_update % d == 0 and d <= 64]
            raise ValueError(f"each of the {self.updates_per_batch} updates has {per_update} completions, which "
                             f"micro_batch_size={self.micro_batch_size} does not divide; use one of {divisors}")


# ---------------------------------------------------------------- pieces


def load_policy(policy: str, cuda: bool):
    """(tokenizer, causal LM) for a hub id, a local directory or a .gguf file (dequantised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, kwargs = policy, {}
    if policy.endswith(".gguf"):
        if not os.path.isfile(policy):
            raise UserError(f"--policy {policy}: no such GGUF file")
        src, kwargs["gguf_file"] = os.path.dirname(os.path.abspath(policy)), os.path.basename(policy)
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load policy {policy!r}: {first}") from None
    if getattr(model, "hf_quantizer", None) is not None:  # a GGUF checkpoint: now plain weights
        model.hf_quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def policy_dataset(problems: list[Problem], conversational: bool):
    """The GRPO prompt dataset; the extra columns reach the reward functions as keyword arguments."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p.prompt}] if conversational else p.prompt for p in problems],
        "problem_id": [p.id for p in problems],
        "problem_prompt": [p.prompt for p in problems],  # what the RM sees as the problem
        "tests": [json.dumps(p.tests) if p.tests is not None else "" for p in problems],  # JSON text: one Arrow type
        "import_header": [p.extra.get("import_header") or "none" for p in problems],  # the sandbox's, for tests
    })


def grpo_args(cfg: PolicyConfig, world_size: int = 1, cuda: bool = False, vllm: bool = False):
    """The reference recipe as a TRL GRPOConfig (one comment per mapped hyperparameter)."""
    import torch
    from trl import GRPOConfig

    completions = cfg.prompts_per_step * cfg.num_generations
    per_update = completions // cfg.updates_per_batch
    if per_update % (cfg.micro_batch_size * world_size):
        raise UserError(f"{per_update} completions per update do not split over {world_size} processes x "
                        f"micro_batch_size={cfg.micro_batch_size}; pick a micro batch size dividing "
                        f"{per_update // world_size if per_update % world_size == 0 else per_update}")
    accumulation = per_update // (cfg.micro_batch_size * world_size)
    checkpointing = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and cuda)
    return GRPOConfig(
        output_dir=cfg.output_dir,
        # --- rollouts: batch 128 prompts x n=8, one rollout batch feeds updates_per_batch optimizer steps
        num_generations=cfg.num_generations,  # verl rollout.n
        per_device_train_batch_size=cfg.micro_batch_size,  # verl ppo_micro_batch_size_per_gpu (memory only)
        gradient_accumulation_steps=accumulation,  # one optimizer step = completions / updates_per_batch
        steps_per_generation=accumulation * cfg.updates_per_batch,  # generation batch = prompts_per_step x n
        num_iterations=1,  # each rollout batch is used once (verl ppo_epochs=1)
        max_completion_length=cfg.max_completion_length,  # verl data.max_response_length = 16384
        temperature=cfg.temperature, top_p=cfg.top_p,
        # --- the objective: GRPO advantages, clip-higher, token-mean, no KL
        scale_rewards="group",  # (r - group mean) / group std (verl norm_adv_by_std_in_grpo=True)
        epsilon=cfg.epsilon,  # verl clip_ratio_low = 0.2
        epsilon_high=cfg.epsilon_high,  # verl clip_ratio_high = 0.28 (DAPO clip-higher)
        loss_type=cfg.loss_type,  # "dapo": mean over every active token of the batch = verl token-mean
        beta=cfg.beta,  # 0: no KL term and no reference model (verl use_kl_loss=False)
        # --- the optimizer: verl's actor defaults
        learning_rate=cfg.learning_rate,  # 1e-6
        lr_scheduler_type="constant", warmup_steps=0,  # verl lr_scheduler_type=constant, no warmup
        weight_decay=0.01,  # verl optim.weight_decay
        max_grad_norm=1.0,  # verl actor.grad_clip
        # --- run control
        max_steps=cfg.max_steps, num_train_epochs=cfg.epochs, seed=cfg.seed,
        logging_steps=1, report_to="none", log_completions=False,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        remove_unused_columns=False,  # keep problem_id / problem_prompt / tests for the reward
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=checkpointing,
        use_vllm=vllm, vllm_mode="colocate",
    )


def _want_vllm(choice: str, cuda: bool) -> bool:
    from trl.import_utils import is_vllm_available

    if choice == "off":
        return False
    available = cuda and is_vllm_available()
    if choice == "on" and not available:
        raise UserError("--vllm on needs CUDA and the vllm package (pip install 'codescaler[vllm]'); use --vllm auto")
    return available


# ---------------------------------------------------------------- logging


LOG_KEYS = {  # reward-log name: TRL metric name
    "reward": "reward", "reward_std": "reward_std", "valid_code_rate": "valid_code_rate",
    "response_length": "completions/mean_length", "response_length_max": "completions/max_length",
    "clipped_ratio": "completions/clipped_ratio", "pass_rate": "pass_rate", "tests_fraction": "tests_fraction",
    "sandbox_errors": "sandbox_errors", "loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate",
    "entropy": "entropy",
}


def reward_log_callback(path: str):
    """A TrainerCallback appending one JSONL line per logged step, and drawing the curve at the end."""
    from transformers import TrainerCallback

    class RewardLog(TrainerCallback):
        def __init__(self):
            done = read_reward_log(path)  # a resumed run goes on counting from its log's last time
            self.t0 = time.perf_counter() - (done[-1].get("seconds", 0.0) if done else 0.0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            row = {"step": state.global_step, "epoch": logs.get("epoch"),
                   "seconds": round(time.perf_counter() - self.t0, 2)}
            for name, key in LOG_KEYS.items():
                value = logs.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    row[name] = float(value)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero and os.path.exists(path):
                plot_reward_log(path, os.path.join(os.path.dirname(path), CURVE_NAME))

    return RewardLog()


def read_reward_log(path: str) -> list[dict]:
    return [d for _, d in stream_jsonl(path, tolerate_torn_tail=True)] if os.path.exists(path) else []


def plot_reward_log(log_path: str, png_path: str) -> None:
    """Reward, valid-code rate and response length against the step, one panel each."""
    from matplotlib.figure import Figure

    rows = read_reward_log(log_path)
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 3), ("reward", "valid_code_rate", "response_length"),
                              ("mean reward", "valid-code rate", "mean response length (tokens)")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=2)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.savefig(png_path, dpi=110)


def _resume_point(cfg: PolicyConfig, log_path: str) -> str | None:
    """The checkpoint to resume from; the reward log is cut back to it so no step appears twice."""
    from transformers.trainer_utils import get_last_checkpoint

    if not os.path.isdir(cfg.output_dir):
        return None
    if not cfg.resume:  # starting over: the earlier run's checkpoints and log would be resumed by the next rerun
        old = [os.path.join(cfg.output_dir, d) for d in os.listdir(cfg.output_dir) if d.startswith("checkpoint-")]
        for path in old:
            shutil.rmtree(path)
        for name in (LOG_NAME, CURVE_NAME):
            if os.path.exists(os.path.join(cfg.output_dir, name)):
                os.remove(os.path.join(cfg.output_dir, name))
        if old:
            print(f"--no-resume: removed {len(old)} checkpoints of the earlier run in {cfg.output_dir}",
                  file=sys.stderr)
        return None
    last = get_last_checkpoint(cfg.output_dir)
    step = 0
    if last:
        with open(os.path.join(last, "trainer_state.json"), encoding="utf-8") as f:
            step = json.load(f)["global_step"]
    rows = read_reward_log(log_path)
    if rows and any(r.get("step", 0) > step for r in rows):
        write_jsonl(log_path, [r for r in rows if r.get("step", 0) <= step])
    return last


# ---------------------------------------------------------------- the stage


def train_policy(cfg: PolicyConfig, scorer: ScorerConfig | None = None) -> dict:
    """Run GRPO; returns paths and the last logged metrics. The policy is saved in cfg.output_dir."""
    import torch
    from accelerate import PartialState
    from trl import GRPOTrainer

    problems = list(read_problems(cfg.problems).values())
    if cfg.limit:
        problems = problems[:cfg.limit]
    if not problems:
        raise UserError(f"{cfg.problems}: no problems to train on")
    if cfg.reward == "tests" and any(p.tests is None for p in problems):
        n = sum(p.tests is None for p in problems)
        raise UserError(f"--reward tests: {n} of {len(problems)} problems have tests: null; "
                        "use --reward hybrid (RM for those) or drop them")
    if len(problems) < cfg.prompts_per_step:
        raise UserError(f"{len(problems)} problems, but a rollout batch takes --prompts-per-step "
                        f"{cfg.prompts_per_step} distinct prompts: use --prompts-per-step {len(problems)} or less")
    scorer = scorer or ScorerConfig()
    cuda = torch.cuda.is_available()
    if cfg.reward != "tests" and not cfg.reward_url and scorer.device == "auto" and not cuda:
        scorer = ScorerConfig(**{**scorer.__dict__, "device": "cpu"})
    sandbox_config = None
    if cfg.reward != "rm" and cfg.sandbox_workers:
        from codescaler import sandbox

        sandbox_config = sandbox.SandboxConfig(workers=cfg.sandbox_workers)
    reward = make_reward(cfg.reward, None if cfg.reward_url else scorer, url=cfg.reward_url, timeout=cfg.reward_timeout,
                         problems={p.id: p for p in problems}, sandbox_config=sandbox_config,
                         extraction=scorer.extraction)

    os.makedirs(cfg.output_dir, exist_ok=True)
    log_path = os.path.join(cfg.output_dir, LOG_NAME)
    resume_from = _resume_point(cfg, log_path)
    tokenizer, model = load_policy(cfg.policy, cuda)
    args = grpo_args(cfg, PartialState().num_processes, cuda, _want_vllm(cfg.vllm, cuda))
    dataset = policy_dataset(problems, conversational=getattr(tokenizer, "chat_template", None) is not None)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[reward_log_callback(log_path)])
    if resume_from:
        print(f"resuming from {resume_from}", file=sys.stderr)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        reward.close()  # the tests reward's warm sandboxed workers
    trainer.save_model(cfg.output_dir)
    rows = read_reward_log(log_path)
    return {"output_dir": cfg.output_dir, "reward_log": log_path,
            "reward_curve": os.path.join(cfg.output_dir, CURVE_NAME), "steps": trainer.state.global_step,
            "last": rows[-1] if rows else {}}


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    for f in fields(PolicyConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "resume":
            p.add_argument("--no-resume", dest="resume", action="store_false",
                           help="start over: delete the checkpoints and reward log of an earlier run in --output-dir")
        elif f.name in CHOICES:
            p.add_argument(flag, choices=CHOICES[f.name], default=f.default, help=f.metadata["help"])
        elif f.default is MISSING:
            p.add_argument(flag, required=True, help=f.metadata["help"])
        else:
            p.add_argument(flag, type=type(f.default) if f.default is not None else str, default=f.default,
                           help=f.metadata["help"])
    add_scorer_args(p.add_argument_group("reward model (--reward rm/hybrid, in-process)"))


def cli_main(args) -> int:
    scorer = scorer_config_from_args(args)  # for tests too: its --extraction picks the code that runs
    if args.reward_url:  # the server scores with its own RM options: refuse ones that would be ignored
        default = ScorerConfig()
        ignored = [f"--{name.replace('_', '-')}" for name in vars(default)
                   if name != "extraction" and getattr(scorer, name) != getattr(default, name)]
        if ignored:
            raise UserError(f"--reward-url scores with the server's RM, so {', '.join(ignored)} would be ignored: "
                            "drop them here (set them on `codescaler serve`)")
    try:
        cfg = PolicyConfig(**{f.name: getattr(args, f.name) for f in fields(PolicyConfig)})
    except ValueError as e:
        raise UserError(str(e)) from None
    out = train_policy(cfg, scorer)
    last = out["last"]
    print(f"trained {out['steps']} steps -> {out['output_dir']}; reward log {out['reward_log']}, curve "
          f"{out['reward_curve']}; last step reward {last.get('reward', float('nan')):.3f}, valid-code rate "
          f"{last.get('valid_code_rate', float('nan')):.2f}", file=sys.stderr)
    return 0
