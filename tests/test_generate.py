import json
import os

import pytest

from bestofn_helpers import SMOL_PROBLEMS, smol_responses, tiny_model_dir
from codescaler.cli import main
from codescaler.generate import GenerationConfig, TransformersGenerator, generate_to_file, load_policy, render_prompt
from codescaler.records import Problem

PROBLEMS = [Problem(id="p1", prompt="Write add(a, b)."), Problem(id="p2", prompt="Write a longer function please.")]


@pytest.fixture(scope="module")
def tiny():
    return load_policy(tiny_model_dir("LlamaForCausalLM"))


def _rows(path):
    return [json.loads(x) for x in open(path).read().splitlines()]


def test_render_uses_chat_template_and_system_prompt(tiny):
    tok, _ = tiny
    text = render_prompt(tok, "Write add(a, b).", "You are terse.")
    assert text.index("You are terse.") < text.index("Write add(a, b).")
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")
    assert "You are terse." not in render_prompt(tok, "Write add(a, b).")


def test_batched_sampling_is_seeded_and_resumes(tmp_path, tiny):
    tok, lm = tiny
    config = GenerationConfig(model="tiny", n=3, max_new_tokens=6, batch_size=4, temperature=1.0, top_k=50)
    gen = TransformersGenerator(config, tok, lm)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert generate_to_file(PROBLEMS, config, str(a), gen) == 6
    rows = _rows(a)
    assert sorted((r["problem_id"], r["sample"]) for r in rows) == [(p, s) for p in ("p1", "p2") for s in range(3)]
    assert all(r["finish"] in ("stop", "length") and isinstance(r["response"], str) for r in rows)
    assert len({r["response"] for r in rows}) > 1  # sampling, not one repeated string
    assert generate_to_file(PROBLEMS, config, str(b), gen) == 6
    assert _rows(b) == rows  # same seed, same batches: same samples

    assert generate_to_file(PROBLEMS, config, str(a), gen) == 0  # resume: nothing left to do
    lines = a.read_text().splitlines()
    a.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])  # a killed run: two lost, one torn line
    assert generate_to_file(PROBLEMS, config, str(a), gen) == 2
    assert sorted((r["problem_id"], r["sample"]) for r in _rows(a)) == sorted((r["problem_id"], r["sample"]) for r in rows)


def test_greedy_gives_identical_samples(tmp_path, tiny):
    tok, lm = tiny
    config = GenerationConfig(model="tiny", n=2, max_new_tokens=5, batch_size=2, temperature=0.0)
    out = tmp_path / "g.jsonl"
    generate_to_file(PROBLEMS[:1], config, str(out), TransformersGenerator(config, tok, lm))
    r = _rows(out)
    assert r[0]["response"] == r[1]["response"]


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    probs = tmp_path / "p.jsonl"
    probs.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    assert main(["generate", "--problems", str(probs), "--model", "m", "--n", "0", "--output", str(tmp_path / "o")]) == 2
    assert "n=0" in capsys.readouterr().err
    assert main(["generate", "--problems", str(probs), "--model", str(tmp_path / "no.gguf"), "--output",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.jsonl")


@pytest.mark.slow
def test_generate_with_the_real_smollm2_gguf():
    rows = _rows(smol_responses())  # the CLI on the real SmolLM2-135M GGUF, CPU, n=4, 96 new tokens
    assert sorted((r["problem_id"], r["sample"]) for r in rows) == [(p, s) for p in sorted(SMOL_PROBLEMS)
                                                                    for s in range(4)]
    assert all(r["response"].strip() for r in rows)
    assert sum("def " in r["response"] for r in rows) >= len(rows) // 2  # an instruct model writes functions


def test_resume_refuses_responses_of_another_model(tmp_path):
    from codescaler.records import UserError

    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"problem_id": "p1", "response": "x", "sample": 0, "model": "org/first"}) + "\n")
    config = GenerationConfig(model="org/second", n=1)
    with pytest.raises(UserError, match=r"r.jsonl:1: made with model 'org/first', not 'org/second'"):
        generate_to_file(PROBLEMS, config, str(out), generator=object())  # refused before any generation
