"""Best-of-N: pick one response per problem, and measure how well and how fast each way picks.

    codescaler select --responses scored.jsonl verified.jsonl --by rm tests random majority --output chosen.jsonl
    codescaler select --problems problems.jsonl --responses responses.jsonl --model LARK-Lab/CodeScaler-8B \\
        --measure-latency --output chosen.jsonl

Strategies (`--by`, one or more):
  rm        the highest shaped reward (`reward`, from `codescaler score` or scored here through the shared scorer);
            ties go to the lowest sample.
  tests     the first candidate whose verdict passed; among passing candidates the highest reward when rewards are
            present; with none passing, the highest reward (or the first candidate).
  random    a seeded uniform choice (`--seed`), the same on every run.
  majority  the largest group of candidates whose extracted code is the same after normalisation (ast.unparse drops
            comments and formatting); ties go to the group seen first; candidates without code never vote.
Several `--responses` files are merged per response (same problem, sample and text), so `score` and `verify` outputs of
the same responses can be given side by side. With `--problems`, whatever is missing is computed here: rewards through
`codescaler.scorer.RewardScorer` and verdicts through the sandbox. `--measure-latency` recomputes both on the same
candidates in this run, and the report sets the RM's scoring time against the execution time.

Output: one chosen response per problem and strategy (`selected_by` says which), written whole; plus a markdown report,
a JSON report and a best-of-N curve PNG (accuracy against N, from `--trials` random subsets of each size per problem).
Accuracy is judged by each selected candidate's verdict; the oracle is "any candidate passes". A `sandbox_error`
verdict is an infrastructure failure: it counts as not passing, and the report lists how many there were.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from codescaler.extract import extract_code
from codescaler.records import Status, UserError, response_key

STRATEGIES = ("rm", "tests", "random", "majority")


# ---------------------------------------------------------------- candidates and strategies


def passed(d: dict) -> bool:
    v = d.get("verdict")
    return bool(isinstance(v, dict) and v.get("passed") and v.get("status") == Status.PASSED.value)


def reward(d: dict) -> float | None:
    r = d.get("reward")
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else None


def code_of(d: dict, extraction: str = "syntax") -> str | None:
    return d["code"] if "code" in d else extract_code(d["response"], extraction)


def normalise_code(code: str) -> str:
    """Code with comments and formatting dropped, so that equivalent spellings vote together."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return code.strip()


def _argmax(values: list[float]) -> int:
    values = [-math.inf if math.isnan(v) else v for v in values]  # a NaN score (a broken RM) never wins
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i  # strict: ties keep the earliest
    return best


def select_rm(cands: list[dict], **_) -> int:
    rewards = [reward(d) for d in cands]
    if any(r is None for r in rewards):
        raise ValueError("rm selection needs a reward on every candidate (run `codescaler score`, or pass --problems "
                         "and --model to score here)")
    return _argmax(rewards)


def select_tests(cands: list[dict], **_) -> int:
    if any(not isinstance(d.get("verdict"), dict) for d in cands):
        raise ValueError("tests selection needs a verdict on every candidate (run `codescaler verify`, or pass "
                         "--problems to verify here)")
    rewards = [reward(d) for d in cands]
    have_rm = all(r is not None for r in rewards)
    pool = [i for i, d in enumerate(cands) if passed(d)] or list(range(len(cands)))
    if not have_rm:
        return pool[0]
    return pool[_argmax([rewards[i] for i in pool])]


def select_random(cands: list[dict], rng: random.Random, **_) -> int:
    return rng.randrange(len(cands))


def select_majority(cands: list[dict], codes: list[str | None], rng: random.Random, **_) -> int:
    """The first candidate of the most common code; a tie between codes (all distinct, say) is broken at random
    (seeded), since taking the lowest sample would measure how candidates are numbered, not voting."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(codes):
        if c is not None:
            groups.setdefault(c, []).append(i)
    if not groups:
        return 0
    top = max(map(len, groups.values()))
    tied = [g for g in groups.values() if len(g) == top]
    return tied[0][0] if len(tied) == 1 else rng.choice(tied)[0]


SELECTORS = {"rm": select_rm, "tests": select_tests, "random": select_random, "majority": select_majority}


def group_by_problem(rows: list[dict]) -> dict[str, list[dict]]:
    """Candidates per problem, in sample order (file order where samples are missing)."""
    groups: dict[str, list[tuple]] = {}
    for pos, d in enumerate(rows):
        s = d.get("sample")
        groups.setdefault(d["problem_id"], []).append((s if isinstance(s, int) else pos, pos, d))
    return {pid: [d for *_, d in sorted(items, key=lambda t: t[:2])] for pid, items in groups.items()}


def pick(strategy: str, cands: list[dict], codes: list[str | None], seed: int, pid: str,
         rng: random.Random | None = None) -> int:
    rng = rng or random.Random(f"{seed}:{pid}")  # string seeds hash the same on every run
    return SELECTORS[strategy](cands, codes=codes, rng=rng)


# ---------------------------------------------------------------- the stage


@dataclass
class SelectConfig:
    """Best-of-N selection and its report."""

    by: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={"help": "strategies to run"})
    seed: int = field(default=0, metadata={"help": "seed of `random` and of the best-of-N subsampling"})
    trials: int = field(default=200, metadata={"help": "random subsets per problem and N for the best-of-N curve"})
    extraction: str = field(default="syntax", metadata={"help": "code extraction for majority and verification"})

    def __post_init__(self):
        bad = [b for b in self.by if b not in STRATEGIES]
        if bad or not self.by:
            raise ValueError(f"--by {bad or self.by}: use some of {STRATEGIES}")
        if self.trials < 1:
            raise ValueError(f"trials={self.trials}; use 1 or more")


def select_all(groups: dict[str, list[dict]], config: SelectConfig) -> tuple[dict[str, dict[str, int]], dict]:
    """{strategy: {problem_id: chosen index}} and the seconds each strategy's own selection step took."""
    choices: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    for strategy in config.by:
        t0 = time.perf_counter()
        choice = {}
        for pid, cands in groups.items():
            codes = [normalise_code(c) if (c := code_of(d, config.extraction)) is not None else None for d in cands] \
                if strategy == "majority" else []
            try:
                choice[pid] = pick(strategy, cands, codes, config.seed, pid)
            except ValueError as e:
                raise UserError(f"--by {strategy}: problem {pid!r}: {e}") from None
        choices[strategy] = choice
        seconds[strategy] = time.perf_counter() - t0
    return choices, seconds


def accuracy(groups: dict[str, list[dict]], choice: dict[str, int]) -> float:
    return sum(passed(groups[pid][i]) for pid, i in choice.items()) / max(1, len(choice))


def oracle(groups: dict[str, list[dict]]) -> float:
    return sum(any(passed(d) for d in cands) for cands in groups.values()) / max(1, len(groups))


def curve_sizes(max_n: int) -> list[int]:
    sizes, n = [], 1
    while n < max_n:
        sizes.append(n)
        n *= 2
    return sizes + [max_n]


def best_of_n_curve(groups: dict[str, list[dict]], strategies: list[str], trials: int, seed: int,
                    extraction: str = "syntax") -> dict:
    """Mean accuracy of each strategy (and the oracle) on random size-N subsets of each problem's candidates;
    `random`'s is its expectation on each subset (the passing share), not a draw."""
    max_n = min(len(c) for c in groups.values())
    sizes = curve_sizes(max_n)
    codes = {pid: [normalise_code(c) if (c := code_of(d, extraction)) is not None else None for d in cands]
             for pid, cands in groups.items()} if "majority" in strategies else {}
    rng = random.Random(seed)
    acc = {s: [] for s in list(strategies) + ["oracle"]}
    for size in sizes:
        hits = {s: 0.0 for s in acc}
        for pid, cands in groups.items():
            for _ in range(trials if size < len(cands) else 1):
                idx = sorted(rng.sample(range(len(cands)), size))
                sub = [cands[i] for i in idx]
                sub_codes = [codes[pid][i] for i in idx] if codes else []
                for s in strategies:
                    if s == "random":  # its expectation on this subset, exactly (one draw at N = all is noise)
                        won = sum(passed(d) for d in sub) / len(sub)
                    else:
                        won = passed(sub[pick(s, sub, sub_codes, seed, pid, rng)])
                    hits[s] += won / (trials if size < len(cands) else 1)
                hits["oracle"] += any(passed(d) for d in sub) / (trials if size < len(cands) else 1)
        for s in acc:
            acc[s].append(hits[s] / len(groups))
    return {"n": sizes, "accuracy": acc}


# ---------------------------------------------------------------- latency: signals computed in this run


def score_rows(problems, rows: list[dict], scorer_config) -> dict:
    """Add Scored fields to rows through the shared scorer; returns timings (load vs scoring)."""
    from codescaler.cli import progress
    from codescaler.scorer import RewardScorer

    t0 = time.perf_counter()
    scorer = RewardScorer(scorer_config)
    t1 = time.perf_counter()
    with progress(total=len(rows), desc="score", unit="resp") as bar:
        scored = scorer.score([problems[d["problem_id"]].prompt for d in rows], [d["response"] for d in rows],
                              progress=bar.update)
    t2 = time.perf_counter()
    for d, s in zip(rows, scored):
        d.update(s.to_dict())
    return {"load_seconds": t1 - t0, "seconds": t2 - t1, "candidates": len(rows),
            "device": str(scorer.device), "dtype": str(scorer.dtype).replace("torch.", ""),
            "model": scorer_config.model}


def verify_rows_timed(problems, rows: list[dict], workers: int, timeout: float, extraction: str) -> dict:
    """Add verdicts to rows by running them (the sandbox through evaluate's adapter); returns the timing."""
    from codescaler.evaluate import EvalConfig, verify_rows

    for d in rows:
        d.pop("verdict", None)  # measured afresh; `code` (if scored) is the same extraction
    t0 = time.perf_counter()
    verify_rows(problems, rows, EvalConfig(workers=workers, timeout=timeout), None, extraction)
    return {"seconds": time.perf_counter() - t0, "candidates": len(rows), "workers": workers}


def merge_inputs(paths: list[str], problems=None) -> list[dict]:
    """Rows of several responses files merged per response (problem, sample, text): later files add fields."""
    from codescaler.records import RecordError, check_verdict, read_responses

    merged: dict[tuple, dict] = {}
    for path in paths:
        seen: Counter = Counter()  # the j-th repeat of a response in one file is the j-th in the others
        for line, d in read_responses(path, problems):
            check_verdict(d, path, line)
            r = d.get("reward")
            if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))):
                raise RecordError(path, line, "reward", f"must be a number, got {type(r).__name__}")
            key = response_key(d)
            seen[key] += 1
            key = (*key, seen[key])
            merged[key] = {**merged.get(key, {}), **d}
    return list(merged.values())


# ---------------------------------------------------------------- report


def write_report(report: dict, md_path: str, png_path: str | None) -> None:
    lines = ["# Best-of-N selection", "",
             f"{report['problems']} problems, {report['candidates']} candidates "
             f"(N = {report['n_min']}..{report['n_max']} per problem).", "",
             "| strategy | accuracy | selection time (s) | per problem (ms) | what the time covers |",
             "|---|---|---|---|---|"]
    for s, r in report["strategies"].items():
        lines.append(f"| {s} | {r['accuracy']:.4f} | {_fmt(r['latency_seconds'])} | "
                     f"{_fmt(r['latency_ms_per_problem'])} | {r['latency_covers']} |")
    lines.append(f"| oracle (any candidate passes) | {report['oracle']:.4f} | | | |")
    lat = report["latency"]
    lines += ["", "## Latency of the selection signal (same run, same candidates)", ""]
    if lat.get("rm"):
        r = lat["rm"]
        lines.append(f"- RM scoring: {r['seconds']:.2f} s for {r['candidates']} candidates on {r['device']} "
                     f"({r['dtype']}); model load {r['load_seconds']:.1f} s not included.")
    else:
        lines.append("- RM scoring: not timed (rewards were read from the input; use --measure-latency).")
    if lat.get("tests"):
        t = lat["tests"]
        lines.append(f"- Execution: {t['seconds']:.2f} s for {t['candidates']} candidates with {t['workers']} workers.")
    else:
        lines.append("- Execution: not timed (verdicts were read from the input; use --measure-latency).")
    if lat.get("rm") and lat.get("tests") and lat["rm"]["seconds"] > 0:
        lines.append(f"- Execution / RM scoring = {lat['tests']['seconds'] / lat['rm']['seconds']:.2f}x.")
    if report["sandbox_errors"]:
        lines.append(f"\n{report['sandbox_errors']} candidates had sandbox errors (infrastructure, not wrong code); "
                     "they count as not passing here.")
    if png_path:
        lines += ["", "## Best-of-N curve", "", f"![best-of-N]({os.path.basename(png_path)})", "",
                  "| N | " + " | ".join(report["curve"]["accuracy"]) + " |",
                  "|---|" + "---|" * len(report["curve"]["accuracy"])]
        for k, n in enumerate(report["curve"]["n"]):
            lines.append(f"| {n} | " + " | ".join(f"{v[k]:.4f}" for v in report["curve"]["accuracy"].values()) + " |")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.scorer import add_scorer_args

    p.add_argument("--responses", required=True, nargs="+",
                   help="responses JSONL(.gz) files with rewards (score) and/or verdicts (verify); merged per response")
    p.add_argument("--problems", help="problems JSONL(.gz): lets select score and verify what the inputs lack")
    p.add_argument("--output", required=True, help="chosen responses JSONL (one per problem and strategy)")
    p.add_argument("--by", nargs="+", default=list(STRATEGIES), choices=STRATEGIES, help="strategies (default: all)")
    p.add_argument("--report", help="markdown report path (default: <output stem>.report.md; .json and .png beside it)")
    p.add_argument("--measure-latency", action="store_true",
                   help="score (RM) and run (tests) every candidate in this run, timing both; needs --problems")
    p.add_argument("--seed", type=int, default=0, help="seed of `random` and of the curve's subsampling")
    p.add_argument("--trials", type=int, default=200, help="random subsets per problem and N for the curve")
    p.add_argument("--workers", type=int, default=2, help="verification workers (when verifying here)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds per test case (when verifying here), for problems that set no time_limit_s")
    add_scorer_args(p)


def cli_main(args) -> int:
    from codescaler.records import read_problems, write_jsonl
    from codescaler.scorer import scorer_config_from_args

    try:
        config = SelectConfig(by=list(dict.fromkeys(args.by)), seed=args.seed, trials=args.trials,
                              extraction=args.extraction)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.measure_latency and not args.problems:
        raise UserError("--measure-latency scores and runs the candidates here: give --problems too")
    problems = read_problems(args.problems) if args.problems else None
    rows = merge_inputs(args.responses, problems)
    if not rows:
        raise UserError("no responses to select from")
    latency: dict = {"rm": None, "tests": None}
    need_rm = "rm" in config.by and any(reward(d) is None for d in rows)
    if problems is not None and (args.measure_latency or need_rm):
        latency["rm"] = score_rows(problems, rows, scorer_config_from_args(args))
    need_verdicts = any(not isinstance(d.get("verdict"), dict) for d in rows)
    if problems is not None and (args.measure_latency or need_verdicts):
        latency["tests"] = verify_rows_timed(problems, rows, args.workers, args.timeout, args.extraction)
    if any(not isinstance(d.get("verdict"), dict) for d in rows):
        raise UserError("accuracy is judged by verdicts, and some responses have none: verify them first "
                        "(`codescaler verify`), or pass --problems to verify here")

    groups = group_by_problem(rows)
    choices, seconds = select_all(groups, config)
    n_problems = len(groups)
    report: dict = {"problems": n_problems, "candidates": len(rows),
                    "n_min": min(map(len, groups.values())), "n_max": max(map(len, groups.values())),
                    "oracle": oracle(groups), "latency": latency, "strategies": {},
                    "sandbox_errors": sum((d["verdict"].get("status") == Status.SANDBOX_ERROR.value) for d in rows)}
    for s in config.by:
        signal = {"rm": latency["rm"], "tests": latency["tests"]}.get(s)
        total = (signal["seconds"] + seconds[s]) if signal else (seconds[s] if s in ("random", "majority") else None)
        covers = {"rm": "RM scoring of every candidate + argmax", "tests": "running every candidate + pick",
                  "random": "the choice itself", "majority": "extraction, normalisation and voting"}[s]
        if s in ("rm", "tests") and not signal:
            covers = "signal read from input, not timed"
        report["strategies"][s] = {"accuracy": accuracy(groups, choices[s]), "latency_seconds": total,
                                   "latency_ms_per_problem": None if total is None else 1000 * total / n_problems,
                                   "latency_covers": covers}
    curve_strategies = [s for s in ("rm", "tests", "random", "majority") if s in config.by]
    report["curve"] = best_of_n_curve(groups, curve_strategies, config.trials, config.seed, config.extraction)

    chosen = [{**groups[pid][i], "selected_by": s} for s in config.by for pid, i in choices[s].items()]
    write_jsonl(args.output, chosen)
    stem = os.path.splitext(args.report)[0] if args.report else _stem(args.output) + ".report"
    md_path = args.report or stem + ".md"
    png_path = stem + ".png"
    from codescaler.plots import best_of_n_png

    best_of_n_png(report["curve"], png_path, title=f"Best-of-N on {n_problems} problems")
    report["png"] = png_path
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    write_report(report, md_path, png_path)
    for s, r in report["strategies"].items():
        print(f"{s:9s} accuracy {r['accuracy']:.4f}  latency {_fmt(r['latency_seconds'])} s", file=sys.stderr)
    print(f"oracle    accuracy {report['oracle']:.4f}\nreport -> {md_path}", file=sys.stderr)
    return 0


def _stem(path: str) -> str:
    for ext in (".jsonl.gz", ".jsonl", ".json"):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path
