"""A minimal, UNSANDBOXED reference runner for tests only: runs a trusted solution against one Problem.

Usage: python _reference_runner.py problem.json solution.py  -> prints JSON {"passed": bool, "detail": str}.
It follows SPEC semantics (stdio token compare, call with JSON values, assert via check(entry_point)) so
that the converters of `codescaler prepare` can be checked before the sandboxed `verify` exists.
"""

import contextlib
import io
import json
import sys


def _lines(text):
    rows = [line.split() for line in text.rstrip().split("\n")]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _plain(x):
    if isinstance(x, tuple):
        return [_plain(v) for v in x]
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def run(problem, source):
    tests = problem["tests"]
    if tests["kind"] == "stdio":
        for i, case in enumerate(tests["cases"]):
            out = io.StringIO()
            sys.stdin = io.StringIO(case["input"])
            with contextlib.redirect_stdout(out):
                exec(compile(source, "solution", "exec"), {"__name__": "__main__"})
            if _lines(out.getvalue()) != _lines(case["output"]):
                return False, f"case {i}: got {out.getvalue()[:80]!r}"
        return True, ""
    ns = {"__name__": "solution"}
    exec(compile(source, "solution", "exec"), ns)
    if tests["kind"] == "call":
        name = tests["fn_name"]
        fn = ns.get(name) or getattr(ns["Solution"](), name)
        for i, case in enumerate(tests["cases"]):
            got = _plain(fn(*json.loads(json.dumps(case["args"]))))
            if got != case["expected"]:
                return False, f"case {i}: got {got!r}"
        return True, ""
    exec(compile(tests["code"], "tests", "exec"), ns)
    ns["check"](ns[tests["entry_point"]])
    return True, ""


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        prob = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        src = f.read()
    try:
        ok, detail = run(prob, src)
    except AssertionError as e:
        ok, detail = False, f"assert failed {e}"
    sys.stdout = sys.__stdout__
    print(json.dumps({"passed": ok, "detail": detail}))
