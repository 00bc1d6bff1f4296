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
