"""The candidate process's own set-up (`codescaler/forker.py`), outside any sandbox: import headers."""

from __future__ import annotations

import sys

import pytest

from codescaler import forker

# LiveCodeBench's `import_string` (lcb_runner/evaluation/testing_util.py), as text: the reference `bind_header` must
# reproduce binding for binding.
LCB_TEXT = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\nfrom heapq import *\n"
    "from bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\nfrom statistics import *\n"
    "from itertools import *\nfrom functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\nimport statistics\n"
    "import itertools\nimport functools\nimport operator\nimport io\nimport sys\nimport json\n"
    "sys.setrecursionlimit(50000)\n")


@pytest.fixture()
def recursion_limit():
    saved, argv = sys.getrecursionlimit(), sys.argv
    yield
    sys.setrecursionlimit(saved)
    sys.argv = argv
    forker.NAMESPACES.clear()


def test_the_lcb_header_binds_what_lcbs_import_string_binds(recursion_limit):
    theirs: dict = {}
    exec(LCB_TEXT, theirs)  # noqa: S102 (the reference text, run here as LCB's grader runs it)
    theirs.pop("__builtins__")
    sys.setrecursionlimit(1000)
    ours: dict = {}
    forker.bind_header(ours, "lcb")
    assert sys.getrecursionlimit() == 50000
    assert ours.keys() == theirs.keys() and len(ours) > 400
    assert [n for n in ours if ours[n] is not theirs[n]] == []
    # where a later module's name wins: builtins' pow over math's, the datetime module over its class
    assert ours["pow"] is pow and ours["datetime"] is sys.modules["datetime"] and ours["defaultdict"].__name__ == "defaultdict"


def test_no_header_binds_nothing(recursion_limit):
    sys.setrecursionlimit(1000)
    env: dict = {}
    forker.bind_header(env, "none")
    assert env == {} and sys.getrecursionlimit() == 1000


def test_a_preloaded_header_binds_the_same_and_reads_sys_in_the_candidate(recursion_limit):
    fresh: dict = {}
    forker.bind_header(fresh, "lcb")
    forker.preload_header("lcb")  # as the harness does before forking the forker
    sys.argv = ["solution.py"]  # as each candidate's process sets its own (forker.enter_child)
    ours: dict = {}
    forker.bind_header(ours, "lcb")
    assert ours.keys() == fresh.keys() and ours["argv"] == ["solution.py"] and ours["argv"] is sys.argv
    assert [n for n in ours if ours[n] is not fresh[n]] == ["argv"]
    names, from_sys = forker.NAMESPACES["lcb"]
    assert "stdin" in from_sys and "sys" not in from_sys  # `import sys` binds the module over any name of sys's
