"""Test-format conversion (codescaler/testcases.py): assert-kind known answers."""

from __future__ import annotations

import pytest

from codescaler import testcases
from codescaler.testcases import mbpp_check, pytest_check


def test_pytest_check_drops_the_solution_import_and_calls_every_test():
    tests = pytest_check("from solution import add\nimport pytest\n\ndef test_a():\n    assert add(1, 2) == 3\n\n"
                         "def test_b():\n    with pytest.raises(TypeError):\n        add(1, 'a')\n", "add")
    assert tests["kind"] == "assert" and tests["entry_point"] == "add"
    assert "from solution" not in tests["code"] and "    test_a()\n    test_b()\n" in tests["code"]


@pytest.mark.parametrize("test_code", [
    "from unittest.mock import patch\nfrom solution import f\ndef test_a():\n"
    "    with patch('builtins.input', return_value='3'):\n        assert f() == 3\n",
    "import sys, io\nfrom solution import f\ndef test_a():\n    sys.stdout = io.StringIO()\n    f()\n",
    "from solution import f\ndef test_a(capsys):\n    f()\n",
])
def test_tests_that_patch_the_candidates_process_are_refused(test_code):
    # the test runs in a tester process of its own, so it could not patch or capture the candidate's
    with pytest.raises(testcases.TestFormatError):
        pytest_check(test_code, "f")


def test_mbpp_check_binds_the_entry_point_and_refuses_patching():
    tests = mbpp_check(["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "import math", "def add(a, b):\n    return a + b")
    assert tests["entry_point"] == "add" and tests["code"].startswith("import math\n")
    assert "    add = candidate\n" in tests["code"]
    with pytest.raises(testcases.TestFormatError, match="patch|capture"):
        mbpp_check(["assert add(1, 2) == 3", "assert sys.stdout is not None"], "", "def add(a, b):\n    return a + b")


@pytest.mark.parametrize("test_code, reason", [
    ("from solution import add\nasync def test_a():\n    assert add(1, 2) == 99\n", "async"),
    ("from solution import add\ndef test_a():\n    yield\n    assert add(1, 2) == 99\n", "generator"),
    ("from solution import add\ndef test_trivial():\n    assert True\n\nclass TestAdd:\n"
     "    def test_a(self):\n        assert add(1, 2) == 99\n", "test class"),
    ("from solution import add\nSTATE = {}\ndef setup_function():\n    STATE['x'] = 1\n"
     "def test_a():\n    assert add(STATE['x'], 1) == 2\n", "setup/teardown"),
    ("def test_a():\n    from solution import add\n    assert add(1, 2) == 3\n", "below the top level"),
])
def test_tests_that_would_pass_or_fail_wrongly_are_refused(test_code, reason):
    """Each of these used to convert: async and generator tests (and test classes next to a top-level test)
    passed any code, since calling them runs nothing; setup functions and nested imports failed good code."""
    with pytest.raises(testcases.TestFormatError, match=reason):
        pytest_check(test_code, "add")


def test_aliases_and_imports_sharing_a_line_survive_the_conversion():
    code = pytest_check("import math; from solution import add as plus, sub\n"
                        "from solution import (\n    mul,\n)\n\ndef test_a():\n    assert plus(1, math.floor(2.5)) == 3\n",
                        "add")["code"]
    assert code.startswith("import math; plus = add\npass\n") and "from solution" not in code
    env = {"add": lambda a, b: a + b, "sub": None, "mul": None}
    exec(code, env)
    env["check"](env["add"])  # a correct add passes
    env["add"] = lambda a, b: a - b
    exec(code, env)
    with pytest.raises(AssertionError):
        env["check"](env["add"])


def test_kodcode_entry_point_is_a_name_the_tests_import():
    assert testcases.imported_names("from solution import Stack\nfrom solution import (a, b as c)\n") == \
        ["Stack", "a", "b"]
