"""Sample N responses per problem from a policy model.

    codescaler generate --problems problems.jsonl --model Qwen/Qwen2.5-Coder-1.5B-Instruct --n 8 --output responses.jsonl

Each problem's `prompt` becomes the user turn of a chat rendered with the model's own chat template (after an optional
`--system-prompt`); a tokenizer without a chat template gets the prompt as plain text. `--model` takes a hub id, a
local directory or a `.gguf` file. The transformers backend runs anywhere (CPU included) and samples in batches of
`--batch-size` sequences; the vLLM backend is used when vllm is installed (`--backend auto`), and gives every sample
its own seed. Output: one Response record `{problem_id, response, sample, finish}` a line, appended and flushed; a
rerun with the same `--output` generates only the (problem, sample) pairs still missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field

from codescaler.records import Problem, UserError

BACKENDS = ("auto", "transformers", "vllm")


@dataclass
class GenerationConfig:
    """Which policy to sample from, and how."""

    model: str | None = field(default=None, metadata={"help": "hub id, local directory or .gguf file of the policy"})
    n: int = field(default=8, metadata={"help": "samples per problem"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature; 0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass (1.0 = off)"})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens (0 = off)"})
    max_new_tokens: int = field(default=1024, metadata={"help": "tokens generated per response at most"})
    batch_size: int = field(default=8, metadata={"help": "sequences per generate() call (transformers backend)"})
    system_prompt: str | None = field(default=None, metadata={"help": "optional system turn before each problem"})
    seed: int = field(default=0, metadata={"help": "base seed; each batch (transformers) or sample (vllm) derives its own"})
    backend: str = field(default="auto", metadata={"help": "auto = vllm when installed, else transformers"})
    dtype: str = field(default="auto", metadata={"help": "auto = bfloat16 on CUDA, float32 on CPU; or bfloat16/float16/float32"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n={self.n}; use 1 or more samples per problem")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}; use 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}; use a value in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}; use 0 (off) or more")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; use 1 or more")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; use 1 or more")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; use one of {BACKENDS}")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype={self.dtype!r}; use auto, bfloat16, float16 or float32")

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def _source(model: str) -> tuple[str, dict]:
    """(directory or hub id, extra from_pretrained kwargs) for a hub id, a local directory or a .gguf file."""
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise UserError(f"--model {model}: no such GGUF file")
        return os.path.dirname(os.path.abspath(model)), {"gguf_file": os.path.basename(model)}
    return model, {}


def load_policy(model: str, dtype: str = "auto", device: str = "auto"):
    """(tokenizer, causal LM) ready for batched sampling: left padding, a pad token, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if dev.startswith("cuda") else "float32"
    src, kwargs = _source(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load policy model {model!r}: {first}") from None
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.eval().requires_grad_(False).to(dev)
    return tokenizer, lm


def render_prompt(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """The text the policy continues: its chat template with a generation prompt, or the plain prompt."""
    if getattr(tokenizer, "chat_template", None) is None:
        return (system_prompt + "\n\n" + prompt) if system_prompt else prompt
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _seed_for(base: int, keys: list[tuple[str, int]]) -> int:
    """A seed derived from the base seed and the (problem, sample) keys of a batch: stable across runs."""
    h = hashlib.sha256(repr((base, keys)).encode("utf-8")).digest()
    return int.from_bytes(h[:4], "little")


class TransformersGenerator:
    """Batched sampling with `model.generate` (CPU or GPU)."""

    def __init__(self, config: GenerationConfig, tokenizer=None, model=None):
        self.config = config
        if model is None:
            tokenizer, model = load_policy(config.model, config.dtype, config.device)
        self.tokenizer, self.model = tokenizer, model
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.plain = getattr(tokenizer, "chat_template", None) is None

    def generate(self, texts: list[str], keys: list[tuple[str, int]]) -> list[tuple[str, str]]:
        """(response, finish) for each rendered prompt; `keys` (problem_id, sample) seed the batch."""
        import torch

        c = self.config
        # The chat template already holds any BOS; a plain prompt gets the tokenizer's special tokens.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=self.plain)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        torch.manual_seed(_seed_for(c.seed, keys))
        sampling = dict(do_sample=True, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k) \
            if c.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=c.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      **sampling)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        results = []
        for ids in new:
            stopped = any(t in eos_ids for t in ids)
            results.append((self.tokenizer.decode(ids, skip_special_tokens=True), "stop" if stopped else "length"))
        return results


class VLLMGenerator:
    """vLLM sampling: one request per (problem, sample), each with its own seed (so resuming changes nothing)."""

    def __init__(self, config: GenerationConfig):
        from vllm import LLM

        self.config = config
        src, kwargs = _source(config.model)
        model = config.model if config.model.endswith(".gguf") else src
        self.llm = LLM(model=model, tokenizer=src if kwargs else None, seed=config.seed,
                       dtype=config.dtype if config.dtype != "auto" else "auto")
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, texts: list[str], keys: list[tuple[str, int]]) -> list[tuple[str, str]]:
        from vllm import SamplingParams

        c = self.config
        params = [SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k or -1,
                                 max_tokens=c.max_new_tokens, seed=_seed_for(c.seed, [k])) for k in keys]
        outs = self.llm.generate(texts, params, use_tqdm=False)
        return [(o.outputs[0].text, "length" if o.outputs[0].finish_reason == "length" else "stop") for o in outs]


def make_generator(config: GenerationConfig):
    if not config.model:
        raise UserError("no --model: give the policy as a hub id, a local directory or a .gguf file")
    backend = config.resolved_backend()
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UserError("--backend vllm: vllm is not installed (pip install 'codescaler[vllm]')")
        return VLLMGenerator(config)
    return TransformersGenerator(config)


def generate_to_file(problems: list[Problem], config: GenerationConfig, output: str, generator=None) -> int:
    """Sample `config.n` responses per problem into `output` (append + flush, resumable). Returns how many were new."""
    from codescaler.cli import progress
    from codescaler.records import JsonlWriter, model_id, pending, refuse_other_run

    model = model_id(config.model) if config.model else None
    refuse_other_run(output, "model", model, "--model")
    wanted = [{"problem_id": p.id, "sample": s} for p in problems for s in range(config.n)]
    todo = pending(wanted, output, key=lambda d: (d.get("problem_id"), d.get("sample")))
    with JsonlWriter(output) as out:
        if todo:
            t0 = time.perf_counter()
            generator = generator or make_generator(config)
            by_id = {p.id: p for p in problems}
            texts = {pid: render_prompt(generator.tokenizer, by_id[pid].prompt, config.system_prompt)
                     for pid in {d["problem_id"] for d in todo}}
            step = config.batch_size if isinstance(generator, TransformersGenerator) else max(64, config.batch_size)
            with progress(total=len(todo), desc="generate", unit="resp") as bar:
                for start in range(0, len(todo), step):
                    batch = todo[start:start + step]
                    keys = [(d["problem_id"], d["sample"]) for d in batch]
                    for d, (text, finish) in zip(batch, generator.generate([texts[k[0]] for k in keys], keys)):
                        out.write({"problem_id": d["problem_id"], "response": text, "sample": d["sample"],
                                   "finish": finish, "model": model})
                    bar.update(len(batch))
            print(f"generated {len(todo)} responses in {time.perf_counter() - t0:.1f}s (model load included) "
                  f"-> {output}", file=sys.stderr)
        out.finish()
    return len(todo)


# ---------------------------------------------------------------- CLI


def add_generation_args(p, model_required: bool = True) -> None:
    """The GenerationConfig options, shared by `generate` and `eval`."""
    from codescaler.cli import add_config_args

    add_config_args(p, GenerationConfig, choices={"backend": BACKENDS}, required=("model",) if model_required else ())


def generation_config_from_args(args) -> GenerationConfig:
    from codescaler.cli import config_from_args

    return config_from_args(GenerationConfig, args)


def add_cli(p) -> None:
    p.add_argument("--problems", required=True, help="problems JSONL(.gz): the policy sees each problem's `prompt`")
    p.add_argument("--output", required=True, help="responses JSONL(.gz) to append to; a rerun fills in what is missing")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems (0 = all)")
    add_generation_args(p)


def cli_main(args) -> int:
    from codescaler.records import read_problems

    config = generation_config_from_args(args)
    problems = list(read_problems(args.problems).values())
    if args.limit:
        problems = problems[:args.limit]
    generate_to_file(problems, config, args.output)
    return 0
