"""What an assert test needs from the candidate's module, and whether it can run in a tester of its own
(stdlib only; also loaded inside the sandbox next to codescaler/harness.py). Only trusted code is read here:
the problem's test and statement, never the candidate's.
"""

from __future__ import annotations

import ast
import builtins


def analyse_assert(check: str, setup: str) -> tuple:
    """(test code object, statement code object or None, names the test takes from the candidate's module,
    why the test cannot run in a tester of its own or "")."""
    check_code = compile(check, "test.py", "exec", dont_inherit=True)
    check_tree = ast.parse(check)
    provided = set()
    try:
        tree = ast.parse(setup)
        setup_code = compile(tree, "statement.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):  # a statement that is not whole code gives no helpers
        tree, setup_code = ast.Module(body=[], type_ignores=[]), None
    for node in tree.body:  # helpers the statement implements (HumanEval's poly) stay the statement's own
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_stub(node):
            provided.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            provided |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            provided |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    loaded, bound = set(), set()
    for node in ast.walk(check_tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    names = sorted(loaded - bound - provided - set(vars(builtins)))
    return check_code, setup_code, names, reaches_into_candidate(check_tree)


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


def is_stub(fn: ast.AST) -> bool:
    """A function the statement only declares: its body is a docstring, `pass` or `...`."""
    return all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
               for s in fn.body)
