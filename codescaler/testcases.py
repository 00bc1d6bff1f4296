"""Source test formats -> SPEC `tests` (stdio / call / assert), with the per-problem cap.

Every list of cases is walked as a stream (`safe_decode.JsonStream`) and only
the kept cases are held: the default rule keeps the `max_tests` cases with the
longest inputs, as DeepCoder's own reward does (`rllm` `check_correctness`,
15 longest), ties going to the earlier case, and the kept cases stay in their
original order. An input's length is its text length for stdin tests and the
length of its JSON for call tests (DeepCoder measures a TACO call input by its
argument count, an accident we do not copy). `max_tests=0` keeps every case.
"""

from __future__ import annotations

import ast
import builtins
import heapq
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from codescaler.testcode import reaches_into_candidate
from codescaler.safe_decode import BlobError, JsonStream, _str_reader

DEFAULT_MAX_TESTS = 15


class TestFormatError(ValueError):
    """Tests that cannot be turned into one of the SPEC kinds (the reason is the message)."""


@dataclass
class Converted:
    """SPEC tests plus what was capped."""

    tests: dict
    total: int  # cases in the source
    kept: int  # cases written

    @property
    def capped(self) -> bool:
        return self.kept < self.total


def _length(x) -> int:
    return len(x) if isinstance(x, str) else len(json.dumps(x, ensure_ascii=False))


@dataclass
class Longest:
    """Streaming top-k by input length; `add` returns nothing, `result` the kept (index, item) in order."""

    k: int
    seen: int = 0
    _heap: list = field(default_factory=list)

    def add(self, length: int, item) -> None:
        i = self.seen
        self.seen += 1
        entry = (length, -i, i, item)
        if self.k <= 0 or len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def result(self) -> list[tuple[int, object]]:
        return sorted(((i, item) for _, _, i, item in self._heap), key=lambda t: t[0])


def select_longest(inputs: Iterable, k: int) -> list[int]:
    """Indices of the `k` longest inputs (all when k <= 0), in original order."""
    top = Longest(k)
    for x in inputs:
        top.add(_length(x), None)
    return [i for i, _ in top.result()]


# ---------------------------------------------------------------- single cases


def _text(x, what: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(s, str) for s in x):
        return "\n".join(x) + ("\n" if x else "")  # TACO sometimes stores lines
    raise TestFormatError(f"stdin test {what} is a {type(x).__name__}, not text")


def stdio_case(inp, out) -> dict:
    return {"input": _text(inp, "input"), "output": _text(out, "output")}


def lcb_call_case(inp: str, out: str) -> dict:
    """LiveCodeBench functional case: one JSON argument per input line, JSON expected output."""
    try:
        args = [json.loads(line) for line in inp.strip("\n").split("\n")] if inp.strip() else []
        expected = json.loads(out)
    except (json.JSONDecodeError, AttributeError) as e:
        raise TestFormatError(f"functional test is not JSON lines ({e})") from None
    return {"args": args, "expected": expected}


def _call_case(args, expected) -> dict:
    if not isinstance(args, list):
        raise TestFormatError(f"call test arguments are a {type(args).__name__}, not a list")
    return {"args": args, "expected": expected}


def _unwrap_outputs(cases: list[dict]) -> list[dict]:
    """TACO/PrimeIntellect wrap a call's return value in a one-element list; unwrap when all cases do."""
    if cases and all(isinstance(c["expected"], list) and len(c["expected"]) == 1 for c in cases):
        return [{"args": c["args"], "expected": c["expected"][0]} for c in cases]
    return cases


# ---------------------------------------------------------------- whole test fields


def from_case_list(cases: Iterable, max_tests: int, fn_name: str | None = None) -> Converted:
    """Case objects (e.g. `JsonStream.iter_array()`): LCB (`testtype` stdin/functional), PrimeIntellect
    (`type` stdin_stdout/function_call, `fn_name`), Codeforces (`input`/`output` only)."""
    top = Longest(max_tests)
    kinds, names = set(), set()
    for t in cases:
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise TestFormatError("a test case lacks input/output")
        kind = t.get("testtype") or t.get("type") or "stdin"
        kind = {"stdin": "stdio", "stdin_stdout": "stdio", "functional": "lcb_call",
                "function_call": "call"}.get(kind)
        if kind is None:
            raise TestFormatError(f"unknown test type {t.get('testtype') or t.get('type')!r}")
        kinds.add(kind)
        meta = t.get("metadata") if isinstance(t.get("metadata"), dict) else {}
        name = t.get("fn_name") or meta.get("func_name")
        if name:
            names.add(name)
        top.add(_length(t["input"]), (t["input"], t["output"]))
    if top.seen == 0:
        raise TestFormatError("no test cases")
    if len(kinds) > 1:
        raise TestFormatError(f"mixes test kinds {sorted(kinds)}")
    kind = kinds.pop()
    kept = [item for _, item in top.result()]
    if kind == "stdio":
        return Converted({"kind": "stdio", "cases": [stdio_case(i, o) for i, o in kept]}, top.seen, len(kept))
    name = fn_name or (names.pop() if len(names) == 1 else None)
    if not name:
        raise TestFormatError("call-based tests without a function name")
    if kind == "lcb_call":
        cases = [lcb_call_case(i, o) for i, o in kept]
    else:
        cases = _unwrap_outputs([_call_case(i, o) for i, o in kept])
    return Converted({"kind": "call", "fn_name": name, "cases": cases}, top.seen, len(kept))


def from_taco_dict(text: str, max_tests: int) -> Converted:
    """TACO/APPS `{"inputs": [...], "outputs": [...], "fn_name"?: ...}` (streamed; two passes if outputs come first)."""
    js = JsonStream(_str_reader(text))
    top = Longest(max_tests)
    keep: set[int] | None = None
    outputs: dict[int, object] = {}
    fn_name = None
    outputs_first = False
    for key in js.iter_object():
        if key == "inputs":
            for x in js.iter_array():
                top.add(_length(x), x)
            keep = {i for i, _ in top.result()}
        elif key == "outputs":
            if keep is None:
                outputs_first = True
                js.skip()
            else:
                for i, y in enumerate(js.iter_array()):
                    if i in keep:
                        outputs[i] = y
        elif key == "fn_name":
            fn_name = js.value()
        else:
            js.skip()
    if keep is None:
        raise TestFormatError("TACO tests have no 'inputs'")
    if outputs_first:
        js = JsonStream(_str_reader(text))
        for key in js.iter_object():
            if key == "outputs":
                for i, y in enumerate(js.iter_array()):
                    if i in keep:
                        outputs[i] = y
            else:
                js.skip()
    kept = top.result()
    if not kept:
        raise TestFormatError("no test cases")
    if any(i not in outputs for i, _ in kept):
        raise TestFormatError("TACO tests have fewer outputs than inputs")
    if fn_name:
        if not isinstance(fn_name, str):
            raise TestFormatError("fn_name is not a string")
        cases = _unwrap_outputs([_call_case(x, outputs[i]) for i, x in kept])
        return Converted({"kind": "call", "fn_name": fn_name, "cases": cases}, top.seen, len(kept))
    cases = [stdio_case(x, outputs[i]) for i, x in kept]
    return Converted({"kind": "stdio", "cases": cases}, top.seen, len(kept))


def from_json_text(text: str, max_tests: int, fn_name: str | None = None) -> Converted:
    """A DeepCoder `tests` string: a list of cases, or a TACO dict."""
    if not isinstance(text, str):
        text = json.dumps(text)
    head = text.lstrip()[:1]
    try:
        if head == "{":
            return from_taco_dict(text, max_tests)
        if head == "[":
            return from_case_list(JsonStream(_str_reader(text)).iter_array(), max_tests, fn_name)
    except BlobError as e:
        raise TestFormatError(str(e)) from None
    raise TestFormatError("tests are neither a JSON list nor a JSON object")


def from_io_lists(inputs: list, outputs: list, max_tests: int) -> Converted:
    """Parallel input/output lists (CodeContests, Codeforces official tests): stdio."""
    if len(inputs) != len(outputs):
        raise TestFormatError("inputs and outputs differ in number")
    if not inputs:
        raise TestFormatError("no test cases")
    idx = select_longest(inputs, max_tests)
    cases = [stdio_case(inputs[i], outputs[i]) for i in idx]
    return Converted({"kind": "stdio", "cases": cases}, len(inputs), len(idx))


def fn_name_from_starter(starter: str | None) -> str | None:
    """The method name in LeetCode-style starter code (`class Solution: def name(self, ...)`)."""
    if not starter:
        return None
    m = re.search(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", starter, re.MULTILINE)
    return m.group(1) if m else None


# ---------------------------------------------------------------- assert kind


def _called_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield node.func.id


def _defined_names(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def mbpp_check(test_list: list[str], setup: str = "", reference: str | None = None) -> dict:
    """MBPP asserts -> assert kind.

    The entry point is the function the asserts call that the reference code
    defines (else the most called non-builtin name, else a defined name the
    asserts mention). `check(candidate)` binds that name to
    the candidate locally and runs the asserts verbatim, so nested calls and
    helper expressions keep working; setup code and the imports the asserts
    use (e.g. `math`) go at module level.
    """
    asserts = [t.strip() for t in test_list if t and t.strip()]
    if not asserts:
        raise TestFormatError("no asserts")
    counts: dict[str, int] = {}
    mentioned: set[str] = set()
    for a in asserts:
        try:
            tree = ast.parse(a)
        except SyntaxError:
            raise TestFormatError(f"assert does not parse: {a[:60]!r}") from None
        for name in _called_names(tree):
            counts[name] = counts.get(name, 0) + 1
        mentioned |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    defined = _defined_names(reference or "")
    ranked = sorted(counts, key=lambda n: (n not in defined, -counts[n]))
    ranked = [n for n in ranked if n in defined or not hasattr(builtins, n)]
    ranked += [n for n in defined if n in mentioned and n not in ranked]  # e.g. `assert callable(f)`
    if not ranked:
        raise TestFormatError("asserts call no function")
    entry = ranked[0]
    why = reaches_into_candidate(ast.parse("\n".join(asserts)))
    if why:
        raise TestFormatError(why)
    head = (setup.strip() + "\n\n") if setup and setup.strip() else ""
    body = "\n".join("    " + a for a in asserts)
    code = f"{head}def check(candidate):\n    {entry} = candidate\n{body}\n"
    return {"kind": "assert", "entry_point": entry, "code": code}


def solution_imports(tree: ast.Module, module: str = "solution") -> list[ast.ImportFrom]:
    """The top-level `from solution import ...` statements of a parsed pytest file."""
    return [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == module]


def imported_names(test_code: str, module: str = "solution") -> list[str]:
    """The names a pytest file imports from the solution at its top level, in order (none when it does not parse)."""
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return []
    return [a.name for n in solution_imports(tree, module) for a in n.names if a.name != "*"]


def pytest_check(test_code: str, entry_point: str, module: str = "solution") -> dict:
    """A pytest file (`from solution import f` + `def test_*()`) -> assert kind.

    The candidate is run in the same module as the test code (HumanEval style), so each `from solution import`
    statement is cut out (an alias `f as g` becomes `g = f`); `check` calls every `test_*` function. What this
    cannot run faithfully is refused: fixtures, parametrize and other decorators, async or generator tests,
    test classes, setup/teardown functions, and imports of the solution anywhere but the top level.
    """
    try:
        tree = ast.parse(test_code)
    except SyntaxError as e:
        raise TestFormatError(f"test code does not parse ({e.msg})") from None
    tests = []
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name == module for a in node.names):
            raise TestFormatError(f"test code uses 'import {module}'")
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            raise TestFormatError(f"test class {node.name} (only top-level test functions are run)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name.split("_")[0] in ("setup", "teardown"):
            raise TestFormatError(f"{node.name} (setup/teardown functions are not run)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if isinstance(node, ast.AsyncFunctionDef):
                raise TestFormatError(f"{node.name} is async (calling it would not run its body)")
            if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(node)):
                raise TestFormatError(f"{node.name} is a generator (calling it would not run its body)")
            if node.args.args or node.args.posonlyargs or node.args.kwonlyargs or node.args.vararg:
                raise TestFormatError(f"{node.name} needs pytest fixtures")
            if node.decorator_list:
                raise TestFormatError(f"{node.name} is decorated (parametrize/fixtures)")
            tests.append(node.name)
    if not tests:
        raise TestFormatError("no test functions")
    top = solution_imports(tree, module)
    nested = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == module and n not in top]
    if nested:
        raise TestFormatError(f"imports from {module} below the top level (line {nested[0].lineno})")
    why = reaches_into_candidate(tree)
    if why:  # the test runs in a process of its own (codescaler/testcode.py): it cannot patch the candidate's
        raise TestFormatError(why)
    edits = [(n, "; ".join(f"{a.asname} = {a.name}" for a in n.names if a.asname and a.name != "*") or "pass")
             for n in top]
    calls = "\n".join(f"    {t}()" for t in tests)
    code = _replace_statements(test_code, edits).rstrip() + f"\n\n\ndef check(candidate):\n{calls}\n"
    return {"kind": "assert", "entry_point": entry_point, "code": code}


def _replace_statements(source: str, edits: list[tuple[ast.stmt, str]]) -> str:
    """`source` with each statement's exact span replaced by its text (other statements on its lines kept).
    ast's columns are UTF-8 byte offsets, so the lines are edited as bytes."""
    lines = [line.encode("utf-8") for line in source.split("\n")]
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        lines[first:last + 1] = [lines[first][:node.col_offset] + text.encode("utf-8")
                                 + lines[last][node.end_col_offset:]]
    return "\n".join(line.decode("utf-8") for line in lines)
