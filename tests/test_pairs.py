"""pairs: labelling by verdict, rules, dedupe, balanced seeded sampling, stats, mutants, CLI and resume."""

import json
import random
from collections import Counter

import pytest

from codescaler.mutate import mutants
from codescaler.pairs import PairsConfig, balanced_pairs, build_pairs, Candidate, normalise
from codescaler.records import Problem, Verdict, write_jsonl

PROBLEM = Problem(id="p0", prompt="Write add(a, b).", tests=None)


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\n"


def row(code: str | None, status: str, passed_cases: int = 0, total: int = 4, pid: str = "p0", sample: int = 0,
        response: str | None = None) -> tuple:
    passed = status == "passed"
    d = {"problem_id": pid, "sample": sample, "response": response if response is not None else fenced(code),
         "verdict": {"status": status, "passed": passed, "cases_passed": total if passed else passed_cases,
                     "cases_total": total, "seconds": 0.1}}
    return ("verified.jsonl", sample + 1, d)


GOOD = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return b + a", "def add(a, b):\n    return sum([a, b])"]
BAD = ["def add(a, b):\n    return a - b", "def add(a, b):\n    return a * b", "def add(a, b):\n    return a",
       "def add(a, b):\n    return b"]


def test_pass_fail_default_pairs_every_passing_with_failing_code():
    rows = [row(c, "passed", sample=i) for i, c in enumerate(GOOD[:2])]
    rows += [row(c, "wrong_answer", 1, sample=10 + i) for i, c in enumerate(BAD[:2])]
    pairs, stats = build_pairs({"p0": PROBLEM}, rows, PairsConfig())
    assert {(p.chosen, p.rejected) for p in pairs} == {(g, b) for g in GOOD[:2] for b in BAD[:2]}
    assert all(p.prompt == PROBLEM.prompt and p.chosen_pass_rate == 1.0 and p.rejected_pass_rate == 0.25
               for p in pairs)
    assert stats["pairs"] == 4 and stats["problems with pairs"] == 1


def test_sandbox_error_and_no_code_never_become_rejected():
    rows = [row(GOOD[0], "passed", sample=0),
            row(BAD[0], "sandbox_error", sample=1),  # infrastructure, not wrong code
            row(None, "no_code", sample=2, response="I cannot solve this."),
            row(None, "wrong_answer", sample=3, response="```python\ndef add(a, b):\n```")]  # does not parse
    pairs, stats = build_pairs({"p0": PROBLEM}, rows, PairsConfig())
    assert pairs == []
    assert stats["skipped_response: sandbox_error (infrastructure, not wrong code)"] == 1
    assert stats["skipped_response: no extractable code"] == 2
    assert stats["skipped_problem: no rejected candidate (nothing failed)"] == 1


def test_dedupe_by_normalised_code_and_flaky_duplicates_dropped():
    reformatted = "def add(a,b):\n    # the sum\n    return (a + b)"
    assert normalise(reformatted) == normalise(GOOD[0]) != normalise(GOOD[1])
    rows = [row(GOOD[0], "passed", sample=0), row(reformatted, "passed", sample=1),
            row(GOOD[1], "passed", sample=2), row(GOOD[1], "wrong_answer", 2, sample=3),  # flaky: same code, two labels
            row(BAD[0], "wrong_answer", sample=4)]
    pairs, stats = build_pairs({"p0": PROBLEM}, rows, PairsConfig())
    assert [(p.chosen, p.rejected) for p in pairs] == [(GOOD[0], BAD[0])]
    assert stats["skipped_response: duplicate code"] == 2
    assert stats["skipped_response: same code got different verdicts (flaky)"] == 1


def test_acecoder_rule_known_answer():
    # pass rates: 1.0, 0.8 | 0.6, 0.4, 0.2, 0.0 (of 5 cases)
    codes = GOOD[:2] + BAD
    rates = [5, 4, 3, 2, 1, 0]
    rows = [row(c, "passed" if k == 5 else "wrong_answer", k, total=5, sample=i)
            for i, (c, k) in enumerate(zip(codes, rates))]
    pairs, _ = build_pairs({"p0": PROBLEM}, rows, PairsConfig(rule="acecoder", max_pairs_per_problem=0))
    got = {(round(p.chosen_pass_rate, 2), round(p.rejected_pass_rate, 2)) for p in pairs}
    # chosen >= 0.8, rejected > 0 (so 0.0 is out), gap >= 0.4
    assert got == {(1.0, 0.6), (1.0, 0.4), (1.0, 0.2), (0.8, 0.4), (0.8, 0.2)}
    with pytest.raises(ValueError, match="min_chosen_rate"):
        PairsConfig(rule="acecoder", min_chosen_rate=0.3, min_rejected_rate=0.5)


def test_cap_and_balance():
    chosen = [Candidate(f"c{i}", 1.0, True, "passed") for i in range(2)]
    rejected = [Candidate(f"r{i}", 0.0, False, "wrong_answer") for i in range(6)]
    picked = balanced_pairs(chosen, rejected, PairsConfig(max_pairs_per_problem=6), random.Random(0))
    assert len(picked) == 6 and len({(c.code, r.code) for c, r in picked}) == 6
    assert Counter(c.code for c, _ in picked) == {"c0": 3, "c1": 3}
    assert Counter(r.code for _, r in picked) == {f"r{i}": 1 for i in range(6)}
    picked = balanced_pairs(chosen, rejected, PairsConfig(max_pairs_per_problem=0), random.Random(0))
    assert len(picked) == 12


def test_seeded_and_independent_of_input_order():
    rows = [row(c, "passed", sample=i) for i, c in enumerate(GOOD)]
    rows += [row(c, "wrong_answer", sample=10 + i) for i, c in enumerate(BAD)]
    cfg = PairsConfig(max_pairs_per_problem=5, seed=1)
    a, _ = build_pairs({"p0": PROBLEM}, rows, cfg)
    b, _ = build_pairs({"p0": PROBLEM}, list(reversed(rows)), cfg)
    assert len(a) == 5 and {(p.chosen, p.rejected) for p in a} == {(p.chosen, p.rejected) for p in b}
    draws = {frozenset((p.chosen, p.rejected) for p in build_pairs({"p0": PROBLEM}, rows,
                                                                   PairsConfig(max_pairs_per_problem=5, seed=s))[0])
             for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_synthesized_negatives_are_verified_mutants_of_passing_code():
    good = "def add(a, b):\n    # add them\n    return a + b\n"
    calls = []

    def verify(problem, codes):
        calls.append(codes)
        # A stand-in verifier: only the literal original passes; "a - b" hits an infrastructure error.
        return [Verdict(status="passed", passed=True, cases_passed=2, cases_total=2, seconds=0.0)
                if c.strip() == good.strip() else
                Verdict(status="sandbox_error" if "a - b" in c else "wrong_answer", passed=False, cases_passed=0,
                        cases_total=2, seconds=0.0) for c in codes]

    rows = [row(good, "passed", total=2)]
    pairs, stats = build_pairs({"p0": PROBLEM}, rows, PairsConfig(synthesize_negatives=3), verify=verify)
    assert calls and pairs and stats["pairs from mutants"] == len(pairs)
    spans = {m.code: m for m in mutants(good)}
    for p in pairs:
        assert p.chosen == good.strip() or p.chosen == good
        m = spans[p.rejected if p.rejected in spans else p.rejected + "\n"]
        assert "a - b" not in p.rejected and p.extra["rejected_source"] == f"mutant:{m.kind}"
        assert "# add them" in p.rejected  # formatting kept: only the mutated span differs
    with pytest.raises(ValueError):
        build_pairs({"p0": PROBLEM}, rows, PairsConfig(synthesize_negatives=3))


def test_no_mutants_where_the_original_fails_in_this_sandbox():
    """Verified elsewhere with pytest mounted, the original fails here (ModuleNotFoundError in the test): every
    mutant would fail too, equivalent ones included, so none is taken as a rejected code."""
    good = "def add(a, b):\n    debug_level = 3  # unused\n    return a + b\n"

    def verify(problem, codes):
        return [Verdict(status="runtime_error", passed=False, cases_passed=0, cases_total=1, seconds=0.0,
                        detail="No module named 'pytest'") for _ in codes]

    pairs, stats = build_pairs({"p0": PROBLEM}, [row(good, "passed", total=2)], PairsConfig(synthesize_negatives=4),
                               verify=verify)
    assert pairs == [] and stats["mutants verified failing"] == 0
    assert any("does not pass in this sandbox" in k for k in stats)


def _write_inputs(tmp_path, n_problems=3):
    problems = [{"id": f"p{i}", "prompt": f"Problem {i}", "tests": None} for i in range(n_problems)]
    verified = [row(c, "passed", pid=f"p{i}", sample=j)[2] for i in range(n_problems) for j, c in enumerate(GOOD[:2])]
    verified += [row(c, "wrong_answer", pid=f"p{i}", sample=5 + j)[2] for i in range(n_problems - 1)
                 for j, c in enumerate(BAD[:2])]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    write_jsonl(tmp_path / "verified.jsonl", verified)


def test_cli_writes_pairs_prints_stats_and_resumes(tmp_path, capsys):
    from codescaler.cli import main

    _write_inputs(tmp_path)
    argv = ["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified", str(tmp_path / "verified.jsonl"),
            "--output", str(tmp_path / "pairs.jsonl"), "--max-pairs-per-problem", "3"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "pairs: 6" in err and "problems with pairs: 2" in err and "nothing failed" in err
    lines = [json.loads(x) for x in open(tmp_path / "pairs.jsonl")]
    assert len(lines) == 6 and set(lines[0]) >= {"problem_id", "prompt", "chosen", "rejected", "chosen_pass_rate",
                                                 "rejected_pass_rate"}
    assert main(argv) == 0  # rerun: problems already there are skipped, nothing is duplicated
    assert "resumed" in capsys.readouterr().err
    assert len(open(tmp_path / "pairs.jsonl").readlines()) == 6


def test_a_problem_cut_off_mid_write_is_made_again_on_rerun(tmp_path, capsys):
    from codescaler.cli import main

    _write_inputs(tmp_path)
    argv = ["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified", str(tmp_path / "verified.jsonl"),
            "--output", str(tmp_path / "pairs.jsonl"), "--max-pairs-per-problem", "3"]
    assert main(argv) == 0
    full = open(tmp_path / "pairs.jsonl").readlines()
    assert [json.loads(x)["problem_pairs"] for x in full] == [3] * 6
    (tmp_path / "pairs.jsonl").write_text("".join(full[:4]))  # killed after the first line of the second problem
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 problems were cut off" in capsys.readouterr().err
    assert sorted(open(tmp_path / "pairs.jsonl").readlines()) == sorted(full)


def test_cli_bad_verdict_is_a_one_line_error(tmp_path, capsys):
    from codescaler.cli import main

    write_jsonl(tmp_path / "problems.jsonl", [{"id": "p0", "prompt": "x", "tests": None}])
    write_jsonl(tmp_path / "verified.jsonl", [{"problem_id": "p0", "response": "x",
                                               "verdict": {"status": "great", "passed": True}}])
    assert main(["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified",
                 str(tmp_path / "verified.jsonl"), "--output", str(tmp_path / "pairs.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count("verified.jsonl:1") == 1 and "verdict" in err
    assert not (tmp_path / "pairs.jsonl").exists()


def test_synthesized_negatives_through_the_real_sandbox(tmp_path, capsys):
    """HumanEval canonical solutions -> `verify` -> `pairs --synthesize-negatives`: mutants are labelled by execution."""
    from codescaler.cli import main
    from codescaler.data import humaneval_problems

    problems = humaneval_problems()[:2]
    write_jsonl(tmp_path / "problems.jsonl", [p.to_dict() for p in problems])
    write_jsonl(tmp_path / "responses.jsonl", [{"problem_id": p.id, "response": fenced(p.starter_code + p.extra[
        "canonical_solution"])} for p in problems])
    assert main(["verify", "--problems", str(tmp_path / "problems.jsonl"), "--responses",
                 str(tmp_path / "responses.jsonl"), "--output", str(tmp_path / "verified.jsonl")]) == 0
    assert main(["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified", str(tmp_path / "verified.jsonl"),
                 "--output", str(tmp_path / "pairs.jsonl"), "--synthesize-negatives", "2"]) == 0
    pairs = [json.loads(x) for x in open(tmp_path / "pairs.jsonl")]
    assert {p["problem_id"] for p in pairs} == {p.id for p in problems} and len(pairs) == 4
    for p in pairs:
        assert p["rejected_source"].startswith("mutant:") and p["rejected_status"] != "sandbox_error"
        assert p["rejected_pass_rate"] < 1.0 and p["chosen_pass_rate"] == 1.0
        # chosen and rejected differ in one contiguous span only
        c, r = p["chosen"], p["rejected"]
        head = next(i for i in range(min(len(c), len(r))) if c[i] != r[i])
        tail = next(i for i in range(min(len(c), len(r)) - head) if c[len(c) - 1 - i] != r[len(r) - 1 - i])
        assert "\n" not in c[head:len(c) - tail] + r[head:len(r) - tail] or p["rejected_source"] == "mutant:return"


def test_code_too_deep_to_parse_is_a_candidate_not_a_traceback(tmp_path, capsys):
    from codescaler.cli import main

    deep = "def f(x):\n    return " + " + ".join(["x"] * 1200) + "\n"
    write_jsonl(tmp_path / "problems.jsonl", [{"id": "p0", "prompt": "x", "tests": None}])
    write_jsonl(tmp_path / "verified.jsonl", [row(deep, "passed")[2], row(BAD[0], "wrong_answer", sample=1)[2]])
    assert main(["pairs", "--problems", str(tmp_path / "problems.jsonl"), "--verified",
                 str(tmp_path / "verified.jsonl"), "--output", str(tmp_path / "pairs.jsonl")]) == 0
    assert "Traceback" not in capsys.readouterr().err and len(open(tmp_path / "pairs.jsonl").readlines()) == 1
