"""Preference pairs from verified rollouts (`codescaler pairs`).

For each problem, the responses with extractable code (the RM sees code, not
prose) are grouped by normalised code, labelled by their `verdict`, and
paired chosen-vs-rejected:

- rule `pass-fail` (default, CodeScalerPair-51K): chosen passed every test,
  rejected failed any test;
- rule `acecoder`: chosen pass rate >= 0.8, rejected pass rate > 0, and a gap
  of at least 0.4 (AceCoder's rule).

A `sandbox_error` verdict is infrastructure, never wrong code: such responses
are skipped. Pairs are capped per problem and drawn so that each chosen and
each rejected code is used as evenly as possible (seeded per problem, so the
result does not depend on input order). With `--synthesize-negatives N`,
problems with fewer than N failing codes get AST mutants of their passing code
(codescaler/mutate.py) that `verify` shows to fail.
"""

from __future__ import annotations

import ast
import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from codescaler.extract import MODES as EXTRACTION_MODES
from codescaler.extract import extract_code
from codescaler.mutate import KINDS, counts_as_failure, synthesize_negatives
from codescaler.records import Pair, Problem, Verdict, check_verdict
from codescaler.sandbox import add_sandbox_args

GROUP_KEY = "problem_pairs"  # on each written pair: how many pairs its problem has (resume checks it)

RULES = ("pass-fail", "acecoder")


@dataclass
class PairsConfig:
    """How pairs are formed from verified responses."""

    rule: str = field(default="pass-fail", metadata={
        "help": "pass-fail: all tests passed vs any failure (CodeScaler); acecoder: pass-rate thresholds below"})
    min_chosen_rate: float = field(default=0.8, metadata={"help": "acecoder: chosen pass rate at least this"})
    min_rejected_rate: float = field(default=0.0, metadata={"help": "acecoder: rejected pass rate strictly above this"})
    min_gap: float = field(default=0.4, metadata={"help": "acecoder: chosen minus rejected pass rate at least this"})
    max_pairs_per_problem: int = field(default=8, metadata={
        "help": "cap per problem, so problems with many rollouts do not dominate (0 = no cap)"})
    seed: int = field(default=0, metadata={"help": "seed of the balanced pair sampling and of mutant choice"})
    extraction: str = field(default="syntax", metadata={"help": "syntax (SPEC rule) or reference (paper's regex)"})
    synthesize_negatives: int = field(default=0, metadata={
        "help": "for problems with passing code but fewer than this many failing codes, add verified-failing "
                "AST mutants of the passing code up to this many (0 = off; needs the sandbox)"})
    mutation_kinds: tuple = field(default=KINDS, metadata={"help": "mutations to use: " + ", ".join(KINDS)})

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"rule={self.rule!r}; use one of {RULES}")
        if self.extraction not in EXTRACTION_MODES:
            raise ValueError(f"extraction={self.extraction!r}; use one of {EXTRACTION_MODES}")
        if self.max_pairs_per_problem < 0 or self.synthesize_negatives < 0:
            raise ValueError("max_pairs_per_problem and synthesize_negatives must be >= 0 (0 = no cap / off)")
        if not 0 <= self.min_rejected_rate < self.min_chosen_rate <= 1:
            raise ValueError(f"need 0 <= min_rejected_rate ({self.min_rejected_rate}) < min_chosen_rate "
                             f"({self.min_chosen_rate}) <= 1, e.g. 0.0 and 0.8")
        if not 0 < self.min_gap <= 1:
            raise ValueError(f"min_gap={self.min_gap}; use a value in (0, 1], e.g. 0.4")
        bad = set(self.mutation_kinds) - set(KINDS)
        if bad:
            raise ValueError(f"unknown mutation kinds {sorted(bad)}; use any of {KINDS}")


@dataclass
class Candidate:
    """One distinct code of a problem with its verdict."""

    code: str
    pass_rate: float
    passed: bool
    status: str
    sample: int | None = None
    source: str = "rollout"


def normalise(code: str) -> str:
    """Dedup key: the AST, so formatting, comments and blank lines do not make codes distinct."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # e.g. a chain of 1,200 `x +` terms
        return code.strip()


def pass_rate(v: Verdict) -> float:
    if v.cases_total > 0:
        return v.cases_passed / v.cases_total
    return 1.0 if v.passed else 0.0


def candidates_from(rows: Sequence[tuple[str, int, dict]], extraction: str, stats: Counter) -> list[Candidate]:
    """Distinct, labelled, extractable codes of one problem; `rows` are (path, line, record)."""
    by_key: dict[str, Candidate] = {}
    conflicted: set[str] = set()
    # A fixed order (by sample, then text), so the result does not depend on the order of the input file.
    rows = sorted(rows, key=lambda r: (r[2].get("sample") is None, r[2].get("sample") or 0, r[2]["response"]))
    for path, line, d in rows:
        if d.get("verdict") is None:
            stats["skipped_response: no verdict (not verified)"] += 1
            continue
        v = check_verdict(d, path, line)
        if v.status.value == "sandbox_error":
            stats["skipped_response: sandbox_error (infrastructure, not wrong code)"] += 1
            continue
        code = extract_code(d["response"], extraction)
        if code is None:
            stats["skipped_response: no extractable code"] += 1
            continue
        key = normalise(code)
        c = Candidate(code, pass_rate(v), v.passed, v.status.value, d.get("sample"))
        if key in by_key:
            if (by_key[key].passed, by_key[key].pass_rate) != (c.passed, c.pass_rate):
                conflicted.add(key)  # same program, different verdicts: flaky, trust neither
            stats["skipped_response: duplicate code"] += 1
            continue
        by_key[key] = c
    for key in conflicted:
        del by_key[key]
        stats["skipped_response: same code got different verdicts (flaky)"] += 1
    return sorted(by_key.values(), key=lambda c: c.code)


def split_by_rule(cands: Sequence[Candidate], config: PairsConfig) -> tuple[list[Candidate], list[Candidate]]:
    """(chosen pool, rejected pool) by the configured rule."""
    if config.rule == "pass-fail":
        return [c for c in cands if c.passed], [c for c in cands if not c.passed]
    return ([c for c in cands if c.pass_rate >= config.min_chosen_rate],
            [c for c in cands if c.pass_rate > config.min_rejected_rate])


def _admissible(c: Candidate, r: Candidate, config: PairsConfig) -> bool:
    if config.rule == "pass-fail":
        return c.passed and not r.passed
    return c.pass_rate - r.pass_rate >= config.min_gap - 1e-12


def balanced_pairs(chosen: Sequence[Candidate], rejected: Sequence[Candidate], config: PairsConfig,
                   rng) -> list[tuple[Candidate, Candidate]]:
    """Up to the cap of distinct admissible pairs, each next one using the least-used chosen and rejected."""
    allowed = [(i, j) for i in range(len(chosen)) for j in range(len(rejected))
               if _admissible(chosen[i], rejected[j], config)]
    rng.shuffle(allowed)
    cap = config.max_pairs_per_problem or len(allowed)
    used_c, used_r, out = Counter(), Counter(), []
    while allowed and len(out) < cap:
        k = min(range(len(allowed)), key=lambda n: (max(used_c[allowed[n][0]], used_r[allowed[n][1]]),
                                                       used_c[allowed[n][0]] + used_r[allowed[n][1]]))
        i, j = allowed.pop(k)
        used_c[i] += 1
        used_r[j] += 1
        out.append((chosen[i], rejected[j]))
    return out


def problem_pairs(problem: Problem, rows: Sequence[tuple[str, int, dict]], config: PairsConfig, stats: Counter,
                  verify: Callable[[Problem, list[str]], list[Verdict]] | None = None) -> list[Pair]:
    """The pairs of one problem (see the module docstring), updating `stats`."""
    import random

    rng = random.Random(f"{config.seed}:{problem.id}")
    cands = candidates_from(rows, config.extraction, stats)
    chosen, rejected = split_by_rule(cands, config)
    if config.synthesize_negatives and chosen and len(rejected) < config.synthesize_negatives:
        if verify is None:
            raise ValueError("synthesize_negatives needs a verify function")
        originals = [c for c in chosen if c.passed] or list(chosen)
        # a mutant's failure shows wrong code only where its original does as well as it did: in another sandbox
        # (a module the tests import missing, a tighter limit) every mutant would "fail", equivalent ones too
        passing = [c.code for c, v in zip(originals, verify(problem, [c.code for c in originals]))
                   if v.passed or pass_rate(v) >= c.pass_rate]
        if not passing:
            stats["no mutants: the passing code does not pass in this sandbox (see --extra-paths, --timeout)"] += 1
        known = {normalise(c.code) for c in cands}
        got = synthesize_negatives(passing, lambda codes: verify(problem, codes),
                                   config.synthesize_negatives - len(rejected), seed=rng.randrange(2**31),
                                   kinds=config.mutation_kinds) if passing else []
        stats["mutants verified failing"] += len(got)
        for m, v in got:
            key = normalise(m.code)
            c = Candidate(m.code, pass_rate(v), v.passed, v.status.value, None, f"mutant:{m.kind}")
            if key not in known and counts_as_failure(v) and split_by_rule([c], config)[1]:
                known.add(key)
                rejected.append(c)
    if not cands:
        stats["skipped_problem: no usable response"] += 1
        return []
    if not chosen:
        stats["skipped_problem: no chosen candidate (nothing passed)"] += 1
        return []
    if not rejected:
        stats["skipped_problem: no rejected candidate (nothing failed)"] += 1
        return []
    picked = balanced_pairs(chosen, rejected, config, rng)
    if not picked:
        stats["skipped_problem: no pair meets the pass-rate gap"] += 1
        return []
    out = []
    for c, r in picked:
        out.append(Pair(problem_id=problem.id, prompt=problem.prompt, chosen=c.code, rejected=r.code,
                        chosen_pass_rate=c.pass_rate, rejected_pass_rate=r.pass_rate,
                        extra={"chosen_sample": c.sample, "rejected_sample": r.sample,
                               "rejected_status": r.status, "rejected_source": r.source}))
    stats["problems with pairs"] += 1
    stats["pairs"] += len(out)
    stats["pairs from mutants"] += sum(r.source != "rollout" for _, r in picked)
    return out


def build_pairs(problems: dict[str, Problem], verified: Sequence[tuple[str, int, dict]], config: PairsConfig,
                verify: Callable[[Problem, list[str]], list[Verdict]] | None = None,
                on_problem: Callable[[list[Pair]], None] | None = None) -> tuple[list[Pair], Counter]:
    """All pairs, problem by problem (input order), and the stats. `verified` rows are (path, line, record)."""
    groups: dict[str, list] = {}
    for row in verified:
        groups.setdefault(row[2]["problem_id"], []).append(row)
    stats: Counter = Counter()
    stats["problems"] = len(groups)
    stats["responses"] = len(verified)
    out: list[Pair] = []
    for pid, rows in groups.items():
        pairs = problem_pairs(problems[pid], rows, config, stats, verify)
        out.extend(pairs)
        if on_problem is not None:
            on_problem(pairs)
    return out, stats


def sandbox_verify(verifier) -> Callable[[Problem, list[str]], list[Verdict]]:
    """The one adapter to the sandbox: (problem, codes) -> verdicts, through `verifier` (a `sandbox.Verifier`,
    whose warm workers the caller holds for the whole run)."""
    def verify(problem: Problem, codes: list[str]) -> list[Verdict]:
        return verifier.verify({problem.id: problem}, [(problem.id, c) for c in codes])

    return verify


def format_stats(stats: Counter) -> str:
    head = ["problems", "responses", "problems with pairs", "pairs", "pairs from mutants", "mutants verified failing"]
    lines = [f"  {k}: {stats.get(k, 0)}" for k in head]
    lines += [f"  {k}: {v}" for k, v in sorted(stats.items()) if k not in head]
    return "pairs stats:\n" + "\n".join(lines)


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.cli import add_config_args

    p.add_argument("--problems", required=True, help="problems JSONL(.gz): each pair carries its problem's `prompt`")
    p.add_argument("--verified", required=True, help="verified responses JSONL(.gz): responses plus `verdict`")
    p.add_argument("--output", required=True, help="pairs JSONL(.gz) to append to; a rerun skips problems already there")
    add_config_args(p, PairsConfig, choices={"rule": RULES, "extraction": EXTRACTION_MODES,
                                             "mutation_kinds": KINDS})
    add_sandbox_args(p.add_argument_group("sandbox (--synthesize-negatives runs the mutants): as for verify"))


def cli_main(args) -> int:
    from codescaler import sandbox
    from codescaler.cli import config_from_args, progress
    from codescaler.records import JsonlWriter, UserError, read_problems, read_responses

    config = config_from_args(PairsConfig, args)
    problems = read_problems(args.problems)
    verified = [(args.verified, n, d) for n, d in read_responses(args.verified, problems)]
    for path, n, d in verified:  # validate every verdict before doing any work
        check_verdict(d, path, n)
    done = _done_problems(args.output)
    todo = [row for row in verified if row[2]["problem_id"] not in done]
    with contextlib.ExitStack() as stack:
        verify = None
        if config.synthesize_negatives:  # one pool of warm sandboxed workers for every problem's mutants
            try:
                verify = sandbox_verify(stack.enter_context(sandbox.Verifier(sandbox.sandbox_config_from_args(args))))
            except sandbox.SandboxUnavailable as e:
                raise UserError(f"--synthesize-negatives needs the sandbox: {e}") from None
        out = stack.enter_context(JsonlWriter(args.output))
        bar = stack.enter_context(progress(total=len({r[2]["problem_id"] for r in todo}), desc="pairs",
                                           unit="problem"))

        def write(pairs: list[Pair]) -> None:
            for pair in pairs:  # each line says how many its problem has, so a rerun knows a cut-off problem
                out.write({**pair.to_dict(), GROUP_KEY: len(pairs)})
            bar.update(1)

        _, stats = build_pairs(problems, todo, config, verify, on_problem=write)
        out.finish()
    if done:
        stats["problems already in output (resumed)"] = len(done)
    print(format_stats(stats), file=sys.stderr)
    return 0


def _done_problems(path: str) -> set[str]:
    """Problems whose pairs `path` holds in full (a rerun skips them). The lines of a problem that a killed run
    wrote only in part are removed (the file is rewritten atomically), and the problem runs again."""
    import os

    from codescaler.records import stream_jsonl, write_jsonl

    if not os.path.exists(path):
        return set()
    rows = [d for _, d in stream_jsonl(path, tolerate_torn_tail=True)]
    held = Counter(d.get("problem_id") for d in rows)
    cut = {d.get("problem_id") for d in rows if held[d.get("problem_id")] < d.get(GROUP_KEY, 0)}
    if cut:
        write_jsonl(path, [d for d in rows if d.get("problem_id") not in cut])
        print(f"{path}: {len(cut)} problems were cut off by an earlier run; their pairs are made again",
              file=sys.stderr)
    return set(held) - cut
