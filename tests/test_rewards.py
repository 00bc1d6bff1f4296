"""Reward callables: hybrid routing (known answers with a real tiny RM and the real sandbox), TRL's signature,
equality with `codescaler score`, and the remote RM through `codescaler serve`."""

import json
import os
import sys

import pytest

from codescaler.records import Problem, UserError
from codescaler.rewards import HybridReward, RMReward, TestsReward, make_reward, parse_tests, text_of
from codescaler.scorer import RewardScorer, ScorerConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpo_fixtures as F  # noqa: E402

FREE = "Write a Python function double(x) that returns 2 * x."
DOUBLE = "```python\ndef double(x):\n    return 2 * x\n```"


@pytest.fixture(scope="module")
def scorer(tiny_rm_dir):
    return RewardScorer(ScorerConfig(model=tiny_rm_dir, device="cpu", dtype="float32", max_length=512))


def chat(role, text):
    return [{"role": role, "content": text}]


def test_text_of_and_parse_tests():
    assert text_of("plain", "assistant") == "plain"
    assert text_of([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "user") == "u"
    assert text_of(chat("assistant", "a"), "assistant") == "a"
    assert parse_tests("") is None and parse_tests(None) is None
    assert parse_tests(json.dumps(F.ADD_TESTS)) == F.ADD_TESTS
    with pytest.raises(UserError, match="not valid JSON"):
        parse_tests("{oops")


def test_hybrid_routes_by_tests_known_answers(scorer):
    """Rows with tests get the sandbox's 1/0, rows with tests: null the shared scorer's softplus(RM), no code 0."""
    problems = {"add": Problem(id="add", prompt=F.PROMPTS["add"], tests=F.ADD_TESTS),
                "free": Problem(id="free", prompt=FREE, tests=None)}
    rows = [("add", F.ANSWERS["add"][0]), ("add", F.ANSWERS["add"][1]), ("add", F.ANSWERS["add"][2]),
            ("free", DOUBLE), ("free", "no code at all")]
    logged = {}
    reward = HybridReward(RMReward(scorer), TestsReward())
    got = reward([chat("user", problems[p].prompt) for p, _ in rows], [chat("assistant", r) for _, r in rows],
                 problem_id=[p for p, _ in rows], problem_prompt=[problems[p].prompt for p, _ in rows],
                 tests=[json.dumps(problems[p].tests) if problems[p].tests else "" for p, _ in rows],
                 log_metric=logged.__setitem__)
    rm_double = scorer.score([FREE], [DOUBLE])[0].reward
    assert rm_double > 0
    assert got == [1.0, 0.0, 0.0, pytest.approx(rm_double, rel=1e-5), 0.0]
    assert logged == {"valid_code_rate": 3 / 5, "pass_rate": 1 / 3, "sandbox_errors": 0.0, "tests_fraction": 3 / 5}
    # the same answer when problems come from a dict instead of dataset columns
    by_dict = make_reward("hybrid", scorer, problems=problems)
    assert by_dict([p for p, _ in rows], [r for _, r in rows], problem_id=[p for p, _ in rows]) == got


def test_tests_reward_refuses_problems_without_tests():
    with pytest.raises(UserError, match="--reward hybrid"):
        TestsReward()(["p"], [DOUBLE], problem_id=["free"], tests=[""])


def test_tests_reward_keeps_its_sandboxed_workers_warm_until_closed():
    # one pool of workers for all of a run's calls (GRPO steps), not one started per call
    problems = {"add": Problem(id="add", prompt=F.PROMPTS["add"], tests=F.ADD_TESTS)}
    answers = [F.ANSWERS["add"][0], F.ANSWERS["add"][1]]
    with TestsReward(problems) as reward:
        assert reward(["add"] * 2, answers, problem_id=["add"] * 2) == [1.0, 0.0]
        pool = reward.verifier()
        harnesses = [w.box.proc for w in pool._workers if w.box is not None]
        assert reward(["add"] * 2, answers, problem_id=["add"] * 2) == [1.0, 0.0]
        assert reward.verifier() is pool and harnesses and all(p.poll() is None for p in harnesses)
    assert reward._verifier is None and all(p.poll() is not None for p in harnesses)


def test_tests_reward_takes_the_import_header_column():
    # a dataset built by train-policy carries each problem's import_header (LCB-graded data: "lcb")
    with TestsReward() as reward:
        got = [reward(["p"], [F.LEANING], problem_id=["add"], tests=[json.dumps(F.ADD_TESTS)], import_header=[h])
               for h in ("lcb", "none")]
    assert got == [[1.0], [0.0]]


def test_trl_plugin_equals_codescaler_score(tmp_path, scorer, tiny_rm_dir):
    """RMReward, called as TRL calls it (conversational and plain), gives exactly `codescaler score`'s rewards."""
    from codescaler.cli import main

    problems = [{"id": "add", "prompt": F.PROMPTS["add"], "tests": F.ADD_TESTS}, {"id": "free", "prompt": FREE, "tests": None}]
    responses = [{"problem_id": "add", "response": a} for a in F.ANSWERS["add"]] + \
                [{"problem_id": "free", "response": DOUBLE}, {"problem_id": "free", "response": "```js\nx\n```"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in responses))
    assert main(["score", "--problems", str(tmp_path / "p.jsonl"), "--responses", str(tmp_path / "r.jsonl"),
                 "--output", str(tmp_path / "s.jsonl"), "--model", tiny_rm_dir, "--device", "cpu",
                 "--dtype", "float32", "--max-length", "512"]) == 0
    want = [json.loads(line)["reward"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    prompt_of = {p["id"]: p["prompt"] for p in problems}
    plugin = RMReward(scorer)
    conv = plugin([chat("user", prompt_of[r["problem_id"]]) for r in responses],
                  [chat("assistant", r["response"]) for r in responses], completion_ids=None)
    plain = plugin([prompt_of[r["problem_id"]] for r in responses], [r["response"] for r in responses])
    assert conv == want and plain == want
    assert want[1] > 0 and want[2] == 0.0 and want[4] == 0.0  # wrong-but-valid code > 0; no / non-Python code 0


def test_remote_rm_through_codescaler_serve(scorer):
    from codescaler.server import BackgroundServer, ServerConfig, create_app

    prompts, responses = [F.PROMPTS["add"]] * 3 + [FREE], list(F.ANSWERS["add"]) + [DOUBLE]
    local = RMReward(scorer)(prompts, responses)
    with BackgroundServer(create_app(scorer, ServerConfig(port=0))) as srv:
        remote = make_reward("rm", url=srv.url)
        assert remote(prompts, responses) == pytest.approx(local, rel=1e-5)


def test_every_trl_callable_sees_the_problem_prompt_column(scorer):
    """RMReward, RewardScorer and RewardClient give the same rewards for one TRL call: all read `problem_prompt`
    (the policy's prompt wraps the problem in instructions the RM never saw in training)."""
    from codescaler.client import RewardClient
    from codescaler.server import BackgroundServer, ServerConfig, create_app

    prompts = [chat("user", "Solve in Python, in one fenced block.\n\n" + FREE)] * 2
    completions = [chat("assistant", DOUBLE), chat("assistant", DOUBLE.replace("2 * x", "x + x"))]
    columns = {"problem_prompt": [FREE, FREE]}
    want = RMReward(scorer)(prompts, completions, **columns)
    assert want == pytest.approx(scorer([FREE] * 2, completions), rel=1e-6)  # the column, not the wrapped turn
    assert want != pytest.approx(scorer(prompts, completions), rel=1e-6)
    assert scorer(prompts, completions, **columns) == pytest.approx(want, rel=1e-6)
    with BackgroundServer(create_app(scorer, ServerConfig(port=0))) as srv, RewardClient(srv.url) as client:
        assert client(prompts, completions, **columns) == pytest.approx(want, rel=1e-5)
