"""Turn what a sandboxed run sent back into a Verdict (SPEC.md, "Verdict").

This runs in the parent, outside the sandbox: expected outputs of stdio and
call tests are only ever read here. Nothing the candidate printed or its exit
code can make a verdict `passed`; only the parent's own comparison (stdio,
call) or the harness's secret echo (assert) can.
"""

from __future__ import annotations

import math

from codescaler import forker, wire
from codescaler.records import Problem, Status, Verdict

_FATE_STATUS = {"timeout": Status.TIMEOUT, "memory_limit": Status.MEMORY_LIMIT, "output_limit": Status.OUTPUT_LIMIT}
_LIMITS = (Status.TIMEOUT, Status.MEMORY_LIMIT, Status.OUTPUT_LIMIT, Status.SYNTAX_ERROR)


def _num_close(a: str, b: str, tol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isfinite(x) and math.isfinite(y) and abs(x - y) <= tol * max(1.0, abs(y))


def stdio_matches(got: str, expected: str, float_tol: float | None = None) -> bool:
    """SPEC: per line, whitespace-separated tokens agree after trailing whitespace and trailing blank lines go.

    Numbers compare exactly as text unless `float_tol` is given (then |a-b| <= tol * max(1, |b|)).
    """

    def lines(s: str) -> list[list[str]]:
        rows = [line.rstrip() for line in s.replace("\r\n", "\n").split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        return [row.split() for row in rows]

    a, b = lines(got), lines(expected)
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for ta, tb in zip(ra, rb):
            if ta != tb and not (float_tol is not None and _num_close(ta, tb, float_tol)):
                return False
    return True


def plain_equal(got, expected, float_tol: float | None = None) -> bool:
    """Equality of plain values, tuples equal to lists (both sides are fresh builtins decoded by us).

    Types are compared exactly apart from that and numbers: True is not 1 and "1" is not 1, but an int and a float
    compare by value as in Python (1.0 == 1), within `float_tol` when the problem sets one.
    """
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(plain_equal(g, e, float_tol) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(plain_equal(got[k], expected[k], float_tol) for k in got)
    numeric = (int, float)
    if float_tol is not None and type(got) in numeric and type(expected) in numeric:
        return abs(got - expected) <= float_tol * max(1.0, abs(expected))
    if type(got) is bool or type(expected) is bool:
        return type(got) is type(expected) and got == expected
    if type(got) in numeric and type(expected) in numeric:
        return got == expected
    return type(got) is type(expected) and type(got) is not dict and got == expected


def float_tol(problem: Problem) -> float | None:
    tol = problem.tests.get("float_tol", problem.extra.get("float_tol"))
    return float(tol) if isinstance(tol, (int, float)) and not isinstance(tol, bool) else None


def fate_failure(fate: dict) -> tuple[Status, str] | None:
    """The status a run's own fate implies, or None when it exited with code 0."""
    kind = fate["fate"]
    if kind in _FATE_STATUS:
        return _FATE_STATUS[kind], kind.replace("_", " ")
    code = fate.get("code", 0)
    # our exit codes count only from a process that never ran candidate code (`ran`, forker.enter_child):
    # otherwise `os._exit(203)` would turn wrong code into an infrastructure error, left out of rewards and pass@k
    ours = not fate.get("ran", False)
    if code == forker.EXIT_SYNTAX and ours:
        return Status.SYNTAX_ERROR, last_line(fate.get("stderr", ""))
    if code == forker.EXIT_SETUP and ours:
        return Status.SANDBOX_ERROR, f"the harness failed to set up the run: {last_line(fate.get('stderr', ''))}".rstrip(": ")
    if code != 0:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Status.RUNTIME_ERROR, f"{how}: {last_line(fate.get('stderr', ''))}".rstrip(": ")
    return None


def last_line(text: str) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return rows[-1][:200] if rows else ""


def make(status: Status, passed_n: int, total: int, seconds: float, detail: str) -> Verdict:
    return Verdict(status=status, passed=status is Status.PASSED, cases_passed=passed_n, cases_total=total,
                   seconds=round(seconds, 4), detail=detail[:300])


def tally(failures: list[tuple[Status, str] | None], seconds: float) -> Verdict:
    """One verdict from per-case failures (None = passed): the first failure names the status."""
    first = next(((i, f) for i, f in enumerate(failures) if f is not None), None)
    status, detail = (first[1][0], f"case {first[0]}: {first[1][1]}") if first else (Status.PASSED, "")
    return make(status, sum(f is None for f in failures), len(failures), seconds, detail)


def tampering(reply: dict, total: int, seconds: float) -> Verdict | None:
    """A failed verdict when a run changed the harness's own limits or scheduling (forker.process_state, checked by codescaler/harness.py)."""
    if any(u.get("tampered") for u in reply["units"]):
        return make(Status.RUNTIME_ERROR, 0, total, seconds, "changed the limits or scheduling of the sandbox's own processes")
    return None


def stdio_verdict(problem: Problem, reply: dict, seconds: float) -> Verdict:
    cases, tol = problem.tests["cases"], float_tol(problem)
    units = reply["units"]
    failures: list[tuple[Status, str] | None] = []
    for i, case in enumerate(cases):
        if i >= len(units):
            earlier = next((f for f in failures if f is not None), (Status.RUNTIME_ERROR, ""))
            failure = earlier[0], "not run after an earlier limit"
        else:
            failure = fate_failure(units[i])
            if failure is None and not stdio_matches(units[i]["stdout"], case["output"], tol):
                failure = (Status.WRONG_ANSWER, "output differs")
        failures.append(failure)
    return tally(failures, seconds)


def call_verdict(problem: Problem, reply: dict, seconds: float) -> Verdict:
    cases, tol = problem.tests["cases"], float_tol(problem)
    fate = reply["units"][0]
    results = fate["results"]
    failures: list[tuple[Status, str] | None] = []
    for i, case in enumerate(cases):
        failure = None
        r = results[i] if i < len(results) else None
        if r is None:
            failure = fate_failure(fate) or (Status.RUNTIME_ERROR, "exited before answering")
        elif not isinstance(r, dict) or r.get("i") != i:
            failure = (Status.RUNTIME_ERROR, "broke the result protocol")
        elif "exc" in r:
            failure = (Status.RUNTIME_ERROR, str(r["exc"])[:200])
        elif "bad" in r:
            failure = (Status.WRONG_ANSWER, str(r["bad"])[:200])
        else:
            try:
                got = wire.decode(r.get("ok"))
            except (ValueError, TypeError, RecursionError):
                failure = (Status.RUNTIME_ERROR, "broke the result protocol")
            else:
                if not plain_equal(got, case["expected"], tol):
                    failure = (Status.WRONG_ANSWER, "returned value differs")
        failures.append(failure)
    return tally(failures, seconds)


def assert_verdict(reply: dict, seconds: float) -> Verdict:
    """Passed only when the harness saw the tester echo its per-run secret after check() returned.

    The fate is the tester's; `fate["candidate"]` is the candidate's own when its process ended first.
    """
    fate = reply["units"][0]
    if fate.get("passed") is True:
        return make(Status.PASSED, 1, 1, seconds, "")
    failure = fate_failure(fate)
    cand = fate.get("candidate")
    # the candidate's process writes to the unit's stderr (the tester shares it): its traceback names the error
    cand_failure = fate_failure({"stderr": fate.get("stderr", ""), **cand}) if cand else None
    for f in (failure, cand_failure):
        if f and f[0] in _LIMITS + (Status.SANDBOX_ERROR,):
            return make(f[0], 0, 1, seconds, f[1])
    report = next((r for r in fate["results"] if isinstance(r, dict) and "error" in r), None)
    if report is not None:
        if report.get("unsupported"):  # the test, not the candidate, cannot run this way
            return make(Status.SANDBOX_ERROR, 0, 1, seconds, str(report["error"]))
        if report.get("output_limit"):
            return make(Status.OUTPUT_LIMIT, 0, 1, seconds, str(report["error"]))
        if str(report["error"]).startswith("CandidateExited"):
            if cand_failure:
                return make(cand_failure[0], 0, 1, seconds, cand_failure[1])
            # the tester's report came before the harness saw the candidate's end: what it printed last says why
            said = last_line(fate.get("stderr", ""))
            return make(Status.RUNTIME_ERROR, 0, 1, seconds, f"{report['error']}: {said}".rstrip(": "))
        status = Status.WRONG_ANSWER if report.get("assert") else Status.RUNTIME_ERROR
        return make(status, 0, 1, seconds, str(report["error"]))
    if failure:
        return make(failure[0], 0, 1, seconds, failure[1])
    return make(Status.RUNTIME_ERROR, 0, 1, seconds, "exited without finishing the test")
