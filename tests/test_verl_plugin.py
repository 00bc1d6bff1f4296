"""The verl plug-in: our compute_score in-process, and called by verl 0.9.1's own loader and managers.

The verl side runs in the separate venv .venv-verl (verl 0.9.1 needs transformers < 5.11); see the README
section train-policy for the commands that build it. Without that venv those tests skip, saying so.
"""

import json
import os
import subprocess
import sys

import pytest

from codescaler.integrations.verl import compute_score, compute_score_async, compute_score_batch
from codescaler.scorer import RewardScorer, ScorerConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpo_fixtures as F  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERL_PY = os.path.join(REPO, ".venv-verl", "bin", "python")
FREE = "Write a Python function double(x) that returns 2 * x."  # a problem without tests: the RM scores it
ROWS = [  # (response, ground_truth, problem prompt)
    (F.ANSWERS["add"][0], json.dumps(F.ADD_TESTS), F.PROMPTS["add"]),  # tests pass -> 1.0
    (F.ANSWERS["add"][1], json.dumps(F.ADD_TESTS), F.PROMPTS["add"]),  # tests fail -> 0.0
    ("```python\ndef double(x):\n    return 2 * x\n```", "", FREE),  # no tests -> softplus(RM)
    ("```python\ndef double(x):\n    return x + x + 0\n```", "", FREE),
    ("I cannot do that.", "", FREE),  # no code -> 0.0
]


@pytest.fixture(scope="module")
def opts(tiny_rm_dir):
    return {"model": tiny_rm_dir, "device": "cpu", "dtype": "float32", "max_length": 512}


@pytest.fixture(scope="module")
def expected(opts):
    """The known answers: tests rows from the sandbox's pass/fail, RM rows from the shared scorer."""
    scorer = RewardScorer(ScorerConfig(**opts))
    rm = [s.reward for s in scorer.score([p for _, _, p in ROWS[2:]], [r for r, _, _ in ROWS[2:]])]
    assert rm[0] > 0 and rm[1] > 0 and rm[0] != rm[1] and rm[2] == 0.0
    return [1.0, 0.0] + rm


def _extra(prompt, i):
    return {"problem_prompt": prompt, "problem_id": f"p{i}"}


def test_compute_score_hybrid_known_answers(opts, expected):
    got = [compute_score("codescaler", r, gt, _extra(p, i), reward="hybrid", **opts) for i, (r, gt, p) in enumerate(ROWS)]
    # tests rows exactly; RM rows up to float noise of batch composition (one row vs five: padding differs)
    assert [g["score"] for g in got[:2]] == [1.0, 0.0] and got[4]["score"] == 0.0
    assert [g["score"] for g in got] == pytest.approx(expected, rel=1e-5)
    assert [g["from_tests"] for g in got] == [1, 1, 0, 0, 0] and [g["valid_code"] for g in got] == [1, 1, 1, 1, 0]
    batch = compute_score_batch(["codescaler"] * 5, [r for r, _, _ in ROWS], [gt for _, gt, _ in ROWS],
                                [_extra(p, i) for i, (_, _, p) in enumerate(ROWS)], reward="hybrid", **opts)
    assert [b["score"] for b in batch] == pytest.approx([g["score"] for g in got], rel=1e-5)
    import asyncio

    one = asyncio.run(compute_score_async("codescaler", *ROWS[2][:2], _extra(FREE, 2), reward="hybrid", **opts))
    assert one == got[2]  # both scored alone: identical


def test_rm_reward_ignores_ground_truth_format(opts, expected):
    # verl's own code datasets carry other ground_truth formats; --reward rm never reads it
    got = compute_score("codescaler", ROWS[2][0], {"inputs": [1], "outputs": [2]}, _extra(FREE, 0), **opts)
    assert got["score"] == pytest.approx(expected[2], rel=1e-5)


def test_the_tests_reward_takes_the_import_header_from_extra_info():
    lcb = {**_extra(F.PROMPTS["add"], 0), "import_header": "lcb"}
    assert compute_score("codescaler", F.LEANING, json.dumps(F.ADD_TESTS), lcb, reward="tests")["score"] == 1.0
    assert compute_score("codescaler", F.LEANING, json.dumps(F.ADD_TESTS), _extra(F.PROMPTS["add"], 0),
                         reward="tests")["score"] == 0.0


def test_the_tests_reward_needs_no_problem_prompt():
    row = {"problem_id": "p0"}  # the tests reward never shows the problem to an RM
    assert compute_score("codescaler", F.ANSWERS["add"][0], json.dumps(F.ADD_TESTS), row, reward="tests")["score"] == 1.0
    with pytest.raises(ValueError, match="no problem_prompt"):
        compute_score("codescaler", F.ANSWERS["add"][0], json.dumps(F.ADD_TESTS), row, reward="hybrid")


def test_prepare_data_rows_carry_what_the_plugin_reads():
    import importlib.util

    from codescaler.integrations.verl import problem_of
    from codescaler.records import Problem

    spec = importlib.util.spec_from_file_location("prepare_data", os.path.join(REPO, "examples", "verl", "prepare_data.py"))
    prepare_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare_data)
    problems = [Problem(id="lcb/1", prompt="p1", tests=F.ADD_TESTS, extra={"import_header": "lcb"}),
                Problem(id="free", prompt="p2", tests=None)]
    back = [problem_of(r["reward_model"]["ground_truth"], r["extra_info"], i)
            for i, r in enumerate(prepare_data.verl_rows(problems))]
    assert [(b.id, b.prompt, b.tests, b.extra.get("import_header")) for b in back] == [
        ("lcb/1", "p1", F.ADD_TESTS, "lcb"), ("free", "p2", None, "none")]


def test_bad_options_and_rows_fail_clearly(opts):
    with pytest.raises(TypeError, match="unknown reward_kwargs.*max_lenght"):
        compute_score("codescaler", "x", "", _extra(FREE, 0), max_lenght=10, **opts)
    with pytest.raises(ValueError, match="problem_prompt"):
        compute_score("codescaler", "x", "", {"index": 3}, **opts)
    with pytest.raises(ValueError, match="use one of"):
        compute_score("codescaler", "x", "", _extra(FREE, 0), reward="exec", **opts)


@pytest.mark.skipif(not os.path.exists(VERL_PY), reason=".venv-verl is absent (verl 0.9.1 + transformers<5.11 in a "
                    "separate venv; build it with the commands in README section train-policy)")
def test_verl_loader_calls_our_compute_score(tmp_path, opts, expected, tiny_rm_dir):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"tokenizer": tiny_rm_dir, "rows": [
        {"response": r, "ground_truth": gt, "extra_info": _extra(p, i)} for i, (r, gt, p) in enumerate(ROWS)]}))
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    names = "compute_score,compute_score_async,compute_score_batch"
    proc = subprocess.run([VERL_PY, os.path.join(REPO, "tests", "verl_loader_check.py"), str(cases), names,
                           json.dumps({**opts, "reward": "hybrid"})], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [d["name"] for d in lines] == names.split(",")
    for d in lines:
        assert d["verl"] == "0.9.1"
        assert d["manager"] == ("BatchRewardManager" if d["name"] == "compute_score_batch" else "NaiveRewardManager")
        # verl decoded our responses from token ids and called the plug-in itself: the same rewards
        assert d["scores"] == pytest.approx(expected, rel=1e-5), d
        assert [e["from_tests"] for e in d["extra"]] == [1, 1, 0, 0, 0]
