import json

import pytest

from bestofn_helpers import humaneval_subset, smol_responses, tiny_model_dir
from codescaler.cli import main
from codescaler.select import (SelectConfig, accuracy, best_of_n_curve, group_by_problem, normalise_code, oracle,
                               select_all)


def cand(pid, sample, ok, reward=None, code="x = 1", status=None):
    d = {"problem_id": pid, "sample": sample, "response": f"```python\n{code}\n```", "code": code,
         "verdict": {"status": status or ("passed" if ok else "wrong_answer"), "passed": ok,
                     "cases_passed": int(ok), "cases_total": 1, "seconds": 0.01}}
    if reward is not None:
        d["reward"] = reward
    return d


# Hand-made pools with known picks.
#  A: the RM prefers a failing candidate (s1); tests must pick a passing one, the higher-reward of the two (s3).
#  B: nothing passes: oracle 0; tests falls back to the highest reward (s0).
#  C: majority: two spellings of the same code (comment/spacing differ) beat the single other one.
ROWS = [cand("A", 0, False, 0.5), cand("A", 1, False, 2.0), cand("A", 2, True, 0.1), cand("A", 3, True, 0.9),
        cand("B", 0, False, 1.0), cand("B", 1, False, 0.2),
        cand("C", 0, False, 0.3, "def f(x):\n    return x-1"), cand("C", 1, True, 0.2, "def f(x):\n    return x+1"),
        cand("C", 2, True, 0.1, "def f(x):  # add one\n    return x + 1")]


def test_strategies_pick_the_known_candidates():
    groups = group_by_problem(list(reversed(ROWS)))  # put back in sample order
    assert [d["sample"] for d in groups["A"]] == [0, 1, 2, 3]
    choices, seconds = select_all(groups, SelectConfig(by=["rm", "tests", "majority", "random"]))
    assert choices["rm"] == {"A": 1, "B": 0, "C": 0}
    assert choices["tests"] == {"A": 3, "B": 0, "C": 1}
    assert choices["majority"]["C"] == 1
    assert accuracy(groups, choices["rm"]) == pytest.approx(0.0)
    assert accuracy(groups, choices["tests"]) == pytest.approx(2 / 3) == oracle(groups)
    assert set(seconds) == {"rm", "tests", "majority", "random"}
    again, _ = select_all(groups, SelectConfig(by=["random"]))
    assert again["random"] == choices["random"]  # seeded
    other = [select_all(groups, SelectConfig(by=["random"], seed=s))[0]["random"] for s in range(1, 20)]
    assert any(o != choices["random"] for o in other)


def test_tests_without_rewards_takes_the_first_passing():
    groups = group_by_problem([cand("A", 0, False), cand("A", 1, True), cand("A", 2, True)])
    assert select_all(groups, SelectConfig(by=["tests"]))[0]["tests"] == {"A": 1}


def test_rm_refuses_missing_rewards():
    from codescaler.records import UserError

    with pytest.raises(UserError, match="reward on every candidate"):
        select_all(group_by_problem([cand("A", 0, True)]), SelectConfig(by=["rm"]))


def test_normalise_code_merges_spellings_only():
    assert normalise_code("def f(x):  # c\n    return x + 1") == normalise_code("def f(x):\n    return x+1")
    assert normalise_code("def f(x):\n    return x+1") != normalise_code("def f(x):\n    return x-1")


def test_curve_known_values():
    # 4 candidates, 1 passing, RM ranks the passing one highest: tests and rm reach the oracle at every N;
    # random at N=1 is the pass rate (1/4); the oracle at N=2 is 1 - C(3,2)/C(4,2) = 1/2.
    rows = [cand("A", i, i == 2, reward=float(i == 2)) for i in range(4)]
    curve = best_of_n_curve(group_by_problem(rows), ["rm", "tests", "random"], trials=4000, seed=1)
    assert curve["n"] == [1, 2, 4]
    acc = curve["accuracy"]
    assert acc["tests"] == pytest.approx(acc["oracle"]) and acc["rm"] == pytest.approx(acc["oracle"])
    assert acc["oracle"][0] == pytest.approx(0.25, abs=0.03) and acc["oracle"][1] == pytest.approx(0.5, abs=0.03)
    assert acc["random"][0] == pytest.approx(0.25, abs=0.03) and acc["oracle"][2] == 1.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_on_given_signals_writes_report_and_png(tmp_path):
    _write(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "chosen.jsonl"
    assert main(["select", "--responses", str(tmp_path / "in.jsonl"), "--output", str(out), "--trials", "20"]) == 0
    chosen = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(chosen) == 4 * 3 and {c["selected_by"] for c in chosen} == {"rm", "tests", "random", "majority"}
    report = json.loads((tmp_path / "chosen.report.json").read_text())
    assert report["strategies"]["tests"]["accuracy"] == pytest.approx(report["oracle"])
    assert report["strategies"]["rm"]["latency_seconds"] is None  # the RM signal was read, not timed
    md = (tmp_path / "chosen.report.md").read_text()
    assert "| tests |" in md and "oracle" in md and "not timed" in md
    assert (tmp_path / "chosen.report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    _write(tmp_path / "in.jsonl", [{"problem_id": "A", "sample": 0, "response": "r"}])
    assert main(["select", "--responses", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "verify them first" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "A"}\n')
    assert main(["select", "--responses", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl:1: field 'response' is missing" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_end_to_end_smollm2_candidates_verified_scored_selected(tmp_path):
    """Real SmolLM2-135M candidates (CPU) -> verified in the sandbox -> scored by an RM -> all four strategies.

    The RM here is a tiny random model (plumbing only: its accuracy means nothing)."""
    out = tmp_path / "chosen.jsonl"
    args = ["select", "--problems", humaneval_subset(), "--responses", smol_responses(), "--model",
            tiny_model_dir("Qwen3ForSequenceClassification"), "--dtype", "float32", "--measure-latency",
            "--output", str(out), "--trials", "50", "--timeout", "5"]
    assert main(args) == 0
    report = json.loads((tmp_path / "chosen.report.json").read_text())
    assert report["problems"] == 2 and report["candidates"] == 8
    assert report["strategies"]["tests"]["accuracy"] == pytest.approx(report["oracle"])
    lat = report["latency"]
    assert lat["rm"]["seconds"] > 0 and lat["tests"]["seconds"] > 0 and lat["rm"]["candidates"] == 8
    md = (tmp_path / "chosen.report.md").read_text()
    assert "RM scoring:" in md and "Execution:" in md and "not timed" not in md
    assert (tmp_path / "chosen.report.png").stat().st_size > 1000
    rows = {(d["selected_by"], d["problem_id"]) for d in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 4 * 2


def test_identical_responses_without_sample_stay_separate_candidates(tmp_path):
    """SPEC's `sample` is optional: three identical passing responses are three votes, not one."""
    from codescaler.select import merge_inputs

    def row(code, ok):
        d = cand("A", 0, ok, code=code)
        del d["sample"]
        return d

    rows = [row("x = 0", False), row("x = 1", True), row("x = 1", True), row("x = 1", True)]
    path = tmp_path / "maj.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in rows))
    merged = merge_inputs([str(path), str(path)])  # the same rows from a second file add fields to the same four
    assert len(merged) == 4
    groups = group_by_problem(merged)
    choices, _ = select_all(groups, SelectConfig(by=["majority"]))
    assert accuracy(groups, choices["majority"]) == 1.0


def test_a_nan_reward_never_wins():
    nan = float("nan")
    groups = group_by_problem([cand("A", 0, False, nan), cand("A", 1, True, 5.0), cand("A", 2, False, nan)])
    assert select_all(groups, SelectConfig(by=["rm"]))[0]["rm"] == {"A": 1}


@pytest.mark.parametrize("change, field", [
    ({"verdict": {"status": "bogus"}}, "passed"), ({"verdict": {"status": "bogus", "passed": True}}, "cases_passed"),
    ({"verdict": "passed"}, "verdict"), ({"reward": "high"}, "reward"),
])
def test_malformed_signals_are_one_line_errors_naming_the_line(tmp_path, capsys, change, field):
    path = tmp_path / "v.jsonl"
    path.write_text(json.dumps(cand("A", 0, True, 1.0)) + "\n"
                    + json.dumps({**cand("A", 1, True, 1.0), **change}) + "\n")
    rc = main(["select", "--responses", str(path), "--by", "tests", "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "v.jsonl:2:" in err and f"'{field}'" in err and not (tmp_path / "o.jsonl").exists()


def test_random_on_the_curve_is_its_expectation_not_one_draw():
    """At N = all candidates there is one subset: a single random draw made the curve read 1.0 or 0.0 there."""
    from codescaler.select import best_of_n_curve

    groups = group_by_problem([cand(p, i, i == 0) for p in "AB" for i in range(3)])
    curve = best_of_n_curve(groups, ["random"], trials=5, seed=0)
    assert curve["n"] == [1, 2, 3] and curve["accuracy"]["random"][-1] == pytest.approx(1 / 3)


def test_majority_breaks_ties_at_random_not_by_sample_order():
    """All codes distinct: lowest-sample-first made majority pick whatever is numbered first (in the demo's pool,
    always a mutant). A seeded random tie-break picks each of the tied codes across problems."""
    rows = [cand(f"P{k}", i, i == 2, code=f"x = {i}") for k in range(40) for i in range(3)]
    groups = group_by_problem(rows)
    choices, _ = select_all(groups, SelectConfig(by=["majority"]))
    assert set(choices["majority"].values()) == {0, 1, 2}
    assert select_all(groups, SelectConfig(by=["majority"]))[0] == choices  # seeded
