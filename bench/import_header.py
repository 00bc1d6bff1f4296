"""What LiveCodeBench's import header costs a stdin unit, with its namespace made before the forker is forked and
without (a worker started for another header), against no header, side by side.

    PYTHONPATH=. python bench/import_header.py [--cases 20] [--candidates 30] [--rounds 4]
        [--output bench/results/import_header.json]

Three warm 2-worker pools: `none` (started for problems without a header), `lcb` (started for `import_header: lcb`
problems: the harness made the header's namespace before forking, `forker.preload_header`) and `lcb_unpreloaded`
(the `none` pool running lcb problems: each candidate's process imports datetime, random and statistics and scans
18 modules). Each round times `--candidates` runs of one stdin problem of `--cases` cases on each, in alternating
order; the milliseconds per unit (one case in a fresh process) are wall time over both workers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from codescaler.records import Problem
from codescaler.sandbox import SandboxConfig, Verifier

CODE = "a, b = map(int, input().split())\nprint(a + b)\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="stdin cases per problem (each a unit of its own)")
    ap.add_argument("--candidates", type=int, default=30, help="candidates per timed batch")
    ap.add_argument("--rounds", type=int, default=4, help="rounds, each timing every way once (order alternates)")
    ap.add_argument("--output", default="bench/results/import_header.json")
    args = ap.parse_args()
    cases = [{"input": f"{i} {i + 1}\n", "output": f"{2 * i + 1}\n"} for i in range(args.cases)]
    problems = {h: Problem(id=h, prompt="", tests={"kind": "stdio", "cases": cases}, extra={"import_header": h})
                for h in ("none", "lcb")}
    ms: dict[str, list[float]] = {"none": [], "lcb": [], "lcb_unpreloaded": []}
    with Verifier(SandboxConfig(workers=2)) as plain, Verifier(SandboxConfig(workers=2)) as preloaded:
        plain.verify(problems, [("none", CODE)] * 4)  # each pool's workers start for their first problem's header
        preloaded.verify(problems, [("lcb", CODE)] * 4)
        ways = [("none", plain, "none"), ("lcb", preloaded, "lcb"), ("lcb_unpreloaded", plain, "lcb")]
        for r in range(args.rounds):
            for name, verifier, header in ways if r % 2 == 0 else ways[::-1]:
                start = time.perf_counter()
                out = verifier.verify(problems, [(header, CODE)] * args.candidates)
                seconds = time.perf_counter() - start
                if not all(v.passed for v in out):
                    raise SystemExit(f"{name}: a run did not pass: {out[0]}")
                ms[name].append(round(seconds / (args.candidates * args.cases) * 1e3, 3))
    result = {"cases": args.cases, "candidates": args.candidates, "workers": 2, "ms_per_unit": ms,
              "median_ms_per_unit": {k: statistics.median(v) for k, v in ms.items()}}
    for name, values in ms.items():
        print(f"{name:>16}: {statistics.median(values):.2f} ms per unit (median of {values})")
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
