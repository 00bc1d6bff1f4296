"""What an assert test takes from the candidate's module, and which tests cannot run in a tester of their own."""

import pytest

from codescaler.testcode import analyse_assert, free_globals, reaches_into_candidate_source, statement_prelude

TRICKY = '''
import pytest
from math import isclose as ic
import os.path
class T:
    x = helper()
    def m(self, a=default()):
        return [y for y in a if y > lim] + [lambda q: q + glob2]
def check(candidate):
    global G
    G = 1
    try:
        candidate(1)
    except Err as e:
        print(e)
    with open("f") as fh:
        del fh
    for i, j in pairs():
        pass
    assert candidate(G) == other(i) and (w := walrus_src) and ic(1, 1)
    outer = 1
    def inner():
        nonlocal outer
        return outer + outer_free
    print(f"{fmt_name}", os, T, inner)
'''


def test_free_globals_are_the_loaded_names_bound_in_no_scope():
    assert free_globals(TRICKY) == {"helper", "default", "lim", "glob2", "Err", "open", "pairs", "other",
                                    "walrus_src", "outer_free", "fmt_name", "print"}


def test_the_names_a_test_takes_leave_out_builtins_and_what_the_statement_implements():
    statement = "import math\n\ndef poly(xs, x):\n    return sum(xs)\n\ndef find_zero(xs):\n    \"\"\"...\"\"\"\n"
    test = "def check(candidate):\n    assert poly([candidate([1, 2])], 0) == helper(math.pi, find_zero)\n"
    _, setup_code, names, why = analyse_assert(test, statement)
    assert names == ["find_zero", "helper"] and setup_code is not None and why == ""
    assert analyse_assert(TRICKY, "")[2] == ["Err", "default", "fmt_name", "glob2", "helper", "lim", "other",
                                              "outer_free", "pairs", "walrus_src"]


def test_a_statement_the_test_takes_nothing_from_is_not_compiled_for_the_tester():
    statement = "from typing import List\n\ndef add(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
    test = "def check(candidate):\n    assert candidate([1, 2]) == 3\n"
    assert analyse_assert(test, statement)[1:3] == (None, [])
    uses_list = "def check(candidate):\n    assert candidate(List([1])) == 1\n"  # List: the statement's import
    assert analyse_assert(uses_list, statement)[1] is not None and analyse_assert(uses_list, statement)[2] == []
    star = "from math import *\n"
    assert analyse_assert("def check(candidate):\n    assert candidate(pi)\n", star)[1] is not None


@pytest.mark.parametrize("test, caught", [
    ("def check(candidate):\n    assert candidate(2) == 4\n", False),
    ("def check(candidate):\n    dispatch = {1: candidate}\n    assert dispatch[1](2) == 4\n", False),  # parsed
    ("from unittest import mock\ndef check(candidate):\n    pass\n", True),
    ("import unittest.mock\ndef check(candidate):\n    pass\n", True),
    ("def check(candidate):\n    monkeypatch.setattr(candidate, 'x', 1)\n", True),
    ("import sys, io\ndef check(candidate):\n    sys.stdout = io.StringIO()\n", True),
    ("from contextlib import redirect_stdout\ndef check(candidate):\n    pass\n", True),
    ("def check(candidate):\n    \uff4d\uff4f\uff43\uff4b = 1\n", True),  # fullwidth letters: the identifier is `mock`
])
def test_tests_that_would_patch_the_candidates_process_are_caught(test, caught):
    assert bool(reaches_into_candidate_source(test)) is caught


@pytest.mark.parametrize("statement,prelude", [
    # HumanEval: the imports stay, the declared function goes (its lines left blank)
    ("from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Doc.\"\"\"\n",
     "from typing import List\n\n\n\n\n"),
    # a helper the statement implements stays; a decorated stub goes with its decorator; `...` and `pass` are stubs
    ("import math\ndef poly(xs, x):\n    return math.fsum(xs)\n@dec\ndef g():\n    ...\ndef h():\n    pass\n",
     "import math\ndef poly(xs, x):\n    return math.fsum(xs)\n\n\n\n\n\n"),
    ("N = 10\nclass Point:\n    x: int\n", "N = 10\nclass Point:\n    x: int\n"),  # not functions: kept
    ("def f():\n    \"\"\"Only a stub.\"\"\"\n", ""),  # nothing left
    ("class Solution:\n    def twoSum(self, nums):\n        ", ""),  # a LeetCode stub is not whole code
    ("", ""),
])
def test_statement_prelude(statement, prelude):
    assert statement_prelude(statement) == prelude
