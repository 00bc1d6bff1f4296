"""mutate: formatting-preserving single edits, one per kind, and only verified failures kept."""

import ast

import pytest

from codescaler.mutate import KINDS, Mutant, counts_as_failure, mutants, synthesize_negatives
from codescaler.records import Status, Verdict

CODE = '''def below_zero(operations: list) -> bool:
    """Return True if the balance ever drops below 0, e.g. 'x' < "y"."""
    balance = 0  # start + nothing
    for i in range(len(operations)):
        balance += operations[i] * 1
        if balance < 0 and i >= 0:
            return True
    label = f"{balance+1}"
    return operations[1:3] == [] or False
'''


def _verdict(status: str) -> Verdict:
    passed = status == "passed"
    return Verdict(status=status, passed=passed, cases_passed=3 if passed else 1, cases_total=3, seconds=0.01)


def test_every_kind_is_produced_and_edits_only_its_span():
    ms = mutants(CODE)
    assert {m.kind for m in ms} == set(KINDS)
    for m in ms:
        # Outside [start, end) every character, quote, comment and blank is the original's.
        assert m.code[:m.start] == CODE[:m.start]
        assert m.code[m.start + len(m.replacement):] == CODE[m.end:]
        assert CODE[m.start:m.end] == m.original and m.original != m.replacement
        assert ast.dump(ast.parse(m.code)) != ast.dump(ast.parse(CODE))
    assert len({m.code for m in ms}) == len(ms)


def test_known_edits():
    ms = mutants("def f(a, b):\n    return a + b  # a - b\n")
    got = {(m.kind, m.original, m.replacement) for m in ms}
    assert ("operator", "+", "-") in got and ("return", "a + b", "None") in got
    assert [m.code for m in ms if m.kind == "operator"] == ["def f(a, b):\n    return a - b  # a - b\n"]
    cmp = {m.replacement for m in mutants("def f(a):\n    return a <= 3\n", ["comparison"])}
    assert cmp == {"<"}
    rng = [m.code for m in mutants("def f(n):\n    return list(range(n))\n", ["boundary"])]
    assert rng == ["def f(n):\n    return list(range(n + 1))\n", "def f(n):\n    return list(range(n - 1))\n"]
    assert {m.replacement for m in mutants("x = 0\n", ["off_by_one"])} == {"1"}  # no "-1" literal from 0


def test_no_edit_inside_strings_comments_or_fstrings():
    ms = mutants(CODE)
    doc_lo, doc_hi = CODE.index('"""'), CODE.index('"""', CODE.index('"""') + 3) + 3
    comment = CODE.index("# start + nothing")
    fstr = CODE.index('f"{balance+1}"')
    for m in ms:
        assert not doc_lo <= m.start < doc_hi
        assert not comment <= m.start < comment + len("# start + nothing")
        assert not fstr <= m.start < fstr + len('f"{balance+1}"')


def test_unparsable_or_mutation_free_code_gives_nothing():
    assert mutants("def f(:\n") == []
    assert mutants("import os\n") == []
    with pytest.raises(ValueError):
        mutants(CODE, ["nonsense"])


def test_synthesize_keeps_only_real_failures():
    seen: list[list[str]] = []

    def verify(codes):
        seen.append(list(codes))
        # Mutants of the `return` kind "pass" (tests too weak), comparison ones hit infrastructure errors.
        out = []
        for c in codes:
            if "return None" in c:
                out.append(_verdict("passed"))
            elif "balance <= 0" in c:
                out.append(_verdict("sandbox_error"))
            else:
                out.append(_verdict("wrong_answer"))
        return out

    kept = synthesize_negatives([CODE], verify, n=50, seed=3, max_tries=1000)
    assert len(seen) == 1 and len(seen[0]) == len(mutants(CODE))
    assert kept and all(isinstance(m, Mutant) and counts_as_failure(v) for m, v in kept)
    assert not any("return None" in m.code or "balance <= 0" in m.code for m, _ in kept)
    assert len(kept) == len(seen[0]) - sum("return None" in c or "balance <= 0" in c for c in seen[0])
    # Seeded and capped: same seed, same picks; n bounds the result and 4n bounds the work.
    a = synthesize_negatives([CODE], verify, n=3, seed=7)
    b = synthesize_negatives([CODE], verify, n=3, seed=7)
    assert [m.code for m, _ in a] == [m.code for m, _ in b] and len(a) == 3 and len(seen[-1]) == 12
    # Round-robin over kinds: the first picks are of different kinds.
    assert len({m.kind for m, _ in synthesize_negatives([CODE], verify, n=3, seed=1)}) == 3


def test_sandbox_error_is_never_a_failure():
    assert not counts_as_failure(_verdict("sandbox_error"))
    assert not counts_as_failure(_verdict("passed"))
    assert counts_as_failure(_verdict("timeout")) and counts_as_failure(_verdict("wrong_answer"))
    assert Status("sandbox_error") is Status.SANDBOX_ERROR


def test_only_the_tokenizers_line_ends_split_lines():
    """str.splitlines also splits on \\x0c, \\x1c-\\x1e, \\x85, \\u2028: edits after one landed in the wrong place."""
    code = 'def f(x):\n    s = "a\x0cb\u2028c"\n    return x + 1\n'
    for m in mutants(code):
        assert m.code[:m.start] == code[:m.start] and m.code[m.start:].endswith(code[m.end:])
        assert code[m.start:m.end] == m.original and m.original in ("x + 1", "+", "1"), m


def test_code_too_deep_to_parse_gives_no_mutants_and_no_crash():
    assert mutants("def f(x):\n    return " + " + ".join(["x"] * 1200) + "\n") == []
