"""What reward calls receive: the server's /score and /get_reward bodies, checked field by field, and TRL's
prompts and completions.

`/score` takes SPEC records; `/get_reward` takes OpenRLHF's remote-RM payload, whose queries are the policy
prompt plus the response under the policy's chat template (`split_query`, `problem_statement`). Every
problem is a `BadInput` that names the field, answered 4xx by `codescaler.server`. A TRL reward call gives
plain or conversational prompts/completions and the dataset's columns (`rm_prompts`, `text_of`).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

from codescaler.records import Scored


class BadInput(Exception):
    """A request the server will not score: answered with `status` and '<field>: <message>'."""

    def __init__(self, field_name: str, message: str, status: int = 422):
        super().__init__(f"{field_name}: {message}")
        self.field_name, self.message, self.status = field_name, message, status



# ---------------------------------------------------------------- OpenRLHF queries

# (user turn opens, user turn ends, assistant turn opens) of common policy chat templates.
CHAT_TURNS = (
    ("<|im_start|>user\n", "<|im_end|>", "<|im_start|>assistant\n"),  # ChatML: Qwen, SmolLM, Yi
    ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
     "<|start_header_id|>assistant<|end_header_id|>\n\n"),  # Llama 3
    ("<start_of_turn>user\n", "<end_of_turn>", "<start_of_turn>model\n"),  # Gemma
    ("<|user|>\n", "<|end|>", "<|assistant|>\n"),  # Phi-3
    ("<｜User｜>", "<｜Assistant｜>", "<｜Assistant｜>"),  # DeepSeek-R1 distills
    ("[INST]", "[/INST]", "[/INST]"),  # Mistral, Llama 2
)
# Tokens a policy emits to end its turn; OpenRLHF decodes with skip_special_tokens=False, so they trail the query.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>",
               "<eos>", "</s>", "<|return|>", "<｜end▁of▁sentence｜>", "<pad>", "<|pad|>",
               "<|finetune_right_pad_id|>")


def strip_end_markers(text: str) -> str:
    """Drop end-of-turn/EOS/pad tokens (and the whitespace between them) from the end of a response."""
    while True:
        tail = text.rstrip()
        for marker in END_MARKERS:
            if tail.endswith(marker):
                text = tail[:-len(marker)]
                break
        else:
            return text


def problem_statement(policy_prompt: str) -> str:
    """The last user turn of a chat-templated policy prompt, verbatim; the whole prompt when no template is recognised."""
    best, best_at = None, -1
    for user_open, user_end, _ in CHAT_TURNS:
        at = policy_prompt.rfind(user_open)
        if at > best_at:
            best, best_at = (user_open, user_end), at
    if best is None:
        return policy_prompt
    body = policy_prompt[best_at + len(best[0]):]
    end = body.find(best[1])
    return body if end < 0 else body[:end]


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """(policy prompt, response) of an OpenRLHF query.

    With `prompt`, the response is what follows the longest common prefix of query and prompt (the query
    is the decoded prompt+response tokens, so it normally starts with the prompt exactly); a prompt that ends
    inside an open <think> gives a response that starts with it. Without it, the query is cut after its last
    assistant-turn opener. Raises ValueError when there is nothing to cut at.
    """
    if prompt is None:
        cuts = [(query.rfind(opener), opener) for _, _, opener in CHAT_TURNS]
        at, opener = max(cuts)
        if at < 0:
            raise ValueError("has no assistant turn of a known chat template to split at; send `prompts`")
        return query[:at + len(opener)], strip_end_markers(query[at + len(opener):])
    if query.startswith(prompt):
        n = len(prompt)
    else:
        n = 0
        for a, b in zip(query, prompt):
            if a != b:
                break
            n += 1
    response = strip_end_markers(query[n:])
    if prompt.rfind("<think>") > prompt.rfind("</think>"):
        # the template opened the thinking (DeepSeek-R1's ends in "<think>\n"): the response is still inside it,
        # as it is when the query is cut at the assistant opener, so extraction drops it the same way
        response = "<think>" + response
    return prompt, response


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def openrlhf_reply(scored: Sequence[Scored]) -> dict:
    """OpenRLHF's remote-RM answer: rewards for advantages, 0-1 scores for dynamic filtering, per-sample logs."""
    return {
        "rewards": [s.reward for s in scored],
        "scores": [sigmoid(s.rm_score) if s.rm_score is not None else 0.0 for s in scored],
        "extra_logs": {
            "rm_score": [s.rm_score if s.rm_score is not None else 0.0 for s in scored],
            "code_extracted": [float(s.code is not None) for s in scored],
            "rm_truncated": [float(s.truncated) for s in scored],
        },
    }


# ---------------------------------------------------------------- request validation


def decode_body(raw: bytes) -> dict:
    """The JSON object in a request body, or BadInput naming `body`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput("body", f"is not valid UTF-8 ({e.reason} at byte {e.start})", 400) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput("body", f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", 400) from None
    except RecursionError:
        raise BadInput("body", "nests too deeply", 400) from None
    if not isinstance(obj, dict):
        raise BadInput("body", f"must be a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(x) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(x), type(x).__name__)


def _text(x, name: str) -> str:
    if not isinstance(x, str):
        raise BadInput(name, f"must be a string, got {_json_type(x)}")
    try:
        x.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadInput(name, f"is not valid Unicode (lone surrogate at character {e.start})") from None
    return x


def _list(body: dict, name: str, max_items: int, allow_empty: bool = False) -> list:
    if name not in body:
        raise BadInput(name, "is missing")
    value = body[name]
    if not isinstance(value, list):
        raise BadInput(name, f"must be an array, got {_json_type(value)}")
    if not value and not allow_empty:
        raise BadInput(name, "is empty; send at least one item")
    if len(value) > max_items:
        raise BadInput(name, f"has {len(value)} items, over the limit of {max_items} per request "
                             "(--max-request-items); split it", 413)
    return value


def parse_score_request(body: dict, problems: dict | None, max_items: int) -> tuple[list[str], list[str]]:
    """(prompts, responses) of a /score request."""
    records = _list(body, "records", max_items)
    prompts, responses = [], []
    for i, rec in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(rec, dict):
            raise BadInput(where, f"must be an object, got {_json_type(rec)}")
        if "response" not in rec:
            raise BadInput(f"{where}.response", "is missing")
        responses.append(_text(rec["response"], f"{where}.response"))
        if "prompt" in rec:
            prompts.append(_text(rec["prompt"], f"{where}.prompt"))
        elif "problem_id" in rec:
            pid = _text(rec["problem_id"], f"{where}.problem_id")
            if problems is None:
                raise BadInput(f"{where}.problem_id", "needs the server started with --problems; or send `prompt`")
            if pid not in problems:
                raise BadInput(f"{where}.problem_id", f"names unknown problem {pid!r}")
            prompts.append(problems[pid].prompt)
        else:
            raise BadInput(where, "needs `prompt` (the problem text) or `problem_id`")
    return prompts, responses


def parse_reward_request(body: dict, problems: dict | None, max_items: int) -> tuple[list[str], list[str]]:
    """(RM problem texts, responses) of an OpenRLHF /get_reward request.

    Empty lists are allowed: OpenRLHF's RemoteRewardModel splits a batch evenly across its servers and
    posts an empty chunk to the surplus ones.
    """
    queries = [_text(q, f"query[{i}]") for i, q in enumerate(_list(body, "query", max_items, allow_empty=True))]
    prompts: list | None = None
    if body.get("prompts") is not None:
        prompts = [_text(p, f"prompts[{i}]") for i, p in enumerate(
            _list(body, "prompts", max_items, allow_empty=True))]
        if len(prompts) != len(queries):
            raise BadInput("prompts", f"has {len(prompts)} items but query has {len(queries)}")
    labels = body.get("labels")
    if labels is not None:
        labels = _list(body, "labels", max_items, allow_empty=True)
        if len(labels) != len(queries):
            raise BadInput("labels", f"has {len(labels)} items but query has {len(queries)}")
    texts, responses = [], []
    for i, q in enumerate(queries):
        try:
            policy_prompt, response = split_query(q, None if prompts is None else prompts[i])
        except ValueError as e:
            raise BadInput(f"query[{i}]", str(e)) from None
        if problems is not None:
            if labels is None:
                raise BadInput("labels", "is missing; with --problems each label is the problem id")
            pid = _text(labels[i], f"labels[{i}]")
            if pid not in problems:
                raise BadInput(f"labels[{i}]", f"names unknown problem {pid!r} (--problems)")
            texts.append(problems[pid].prompt)
        else:
            texts.append(problem_statement(policy_prompt))
        responses.append(response)
    return texts, responses


# ---------------------------------------------------------------- TRL reward calls


def rm_prompts(prompts: Sequence, columns: dict) -> list[str]:
    """The problem text the RM sees for each row of a TRL reward call: the dataset's `problem_prompt` column when
    there is one (the policy's prompt may wrap the problem in instructions), else the prompt's last user turn.
    Every TRL callable (RewardScorer, RewardClient, codescaler.rewards) reads it here."""
    texts = columns.get("problem_prompt") or [None] * len(prompts)
    return [t if isinstance(t, str) else text_of(p, "user") for p, t in zip(prompts, texts)]


def text_of(x, role: str) -> str:
    """Plain text of a TRL prompt/completion: a string, or the last `role` message of a conversation."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("content", ""))
    msgs = [m for m in x if isinstance(m, dict) and m.get("role") == role] or list(x)
    return str(msgs[-1].get("content", "")) if msgs else ""
