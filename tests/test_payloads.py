"""Request payloads of the reward server (codescaler/payloads.py): known answers, no server needed."""

from __future__ import annotations

import pytest

from codescaler.payloads import (BadInput, decode_body, parse_reward_request, parse_score_request, problem_statement,
                                 sigmoid, split_query, strip_end_markers)
from codescaler.records import Problem


def test_split_query_and_statement():
    chatml = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd two ints.\n<|im_end|>\n" \
             "<|im_start|>assistant\n"
    assert problem_statement(chatml) == "Add two ints.\n"
    llama3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSort it.<|eot_id|>" \
             "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert problem_statement(llama3) == "Sort it."
    assert problem_statement("plain prompt, no template") == "plain prompt, no template"
    assert split_query(chatml + "```python\nx = 1\n```<|im_end|>", chatml) == (chatml, "```python\nx = 1\n```")
    # no prompts (old OpenRLHF clients): cut after the last assistant turn
    assert split_query(chatml + "hi<|im_end|>\n<|endoftext|>", None) == (chatml, "hi")
    # a prompt that was cut short by prompt_max_len: split where query and prompt stop agreeing
    assert split_query("<|im_start|>user\nAdd tw" + "ANSWER", "<|im_start|>user\nAdd two ints") == \
        ("<|im_start|>user\nAdd two ints", "ANSWER")
    assert strip_end_markers("```\n<|im_end|>\n<|endoftext|>  ") == "```\n"
    with pytest.raises(ValueError):
        split_query("no template at all", None)


def test_sigmoid_is_stable_at_the_extremes():
    assert sigmoid(0.0) == 0.5 and sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


def test_bodies_are_checked_field_by_field():
    with pytest.raises(BadInput, match="body: is not valid JSON"):
        decode_body(b"{")
    with pytest.raises(BadInput, match=r"records\[0\]\.response: is missing"):
        parse_score_request({"records": [{"prompt": "p"}]}, None, 10)
    with pytest.raises(BadInput, match="over the limit"):
        parse_score_request({"records": [{"prompt": "p", "response": "r"}] * 3}, None, 2)
    problems = {"p1": Problem(id="p1", prompt="Add two ints.", tests={})}
    assert parse_score_request({"records": [{"problem_id": "p1", "response": "r"}]}, problems, 10) == \
        (["Add two ints."], ["r"])
    chatml = "<|im_start|>user\nAdd.<|im_end|>\n<|im_start|>assistant\n"
    assert parse_reward_request({"query": [chatml + "x = 1<|im_end|>"], "prompts": [chatml]}, None, 10) == \
        (["Add."], ["x = 1"])
    assert parse_reward_request({"query": [chatml + "x"], "labels": ["p1"]}, problems, 10) == (["Add two ints."], ["x"])
    assert parse_reward_request({"query": []}, None, 10) == ([], [])  # OpenRLHF posts empty chunks to spare servers
    with pytest.raises(BadInput, match="labels: is missing"):
        parse_reward_request({"query": [chatml + "x"]}, problems, 10)


def test_a_prompt_that_opens_thinking_gives_the_same_code_with_or_without_prompts():
    """DeepSeek-R1's template ends the prompt in "<think>\\n": the response holds only "</think>". With `prompts`
    sent (OpenRLHF) or without, the code inside the thinking is dropped the same way."""
    from codescaler.extract import extract_code

    prompt = "<｜User｜>Write f.<｜Assistant｜><think>\n"
    response = "Try ```python\nx = (\n``` hmm.\n</think>\nFinal:\n```python\ndef f():\n    return 1\n```"
    with_prompt = split_query(prompt + response, prompt)
    without = split_query(prompt + response, None)
    assert with_prompt[1].startswith("<think>") and without[1].startswith("<think>")
    assert extract_code(with_prompt[1]) == extract_code(without[1]) == "def f():\n    return 1"
    closed = "<｜User｜>Write f.<｜Assistant｜><think>\nno</think>\n"  # thinking closed in the prompt: left alone
    assert split_query(closed + "```python\nx = 1\n```", closed)[1] == "```python\nx = 1\n```"
