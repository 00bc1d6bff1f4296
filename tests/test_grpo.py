"""`codescaler train-policy`: the reference recipe as a GRPOConfig, and real short GRPO runs on CPU with a tiny
policy for each reward (rm, tests, hybrid), resume, and the TRL plug-in inside a plain GRPOTrainer."""

import json
import os
import sys

import pytest

from codescaler.grpo import CURVE_NAME, LOG_NAME, PolicyConfig, grpo_args, read_reward_log, train_policy
from codescaler.scorer import ScorerConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpo_fixtures as F  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory, smollm2_tokenizer, tiny_rm_dir):
    import torch

    before = F.one_thread()
    root = tmp_path_factory.mktemp("grpo")
    tok = smollm2_tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    yield {"policy": F.make_tiny_policy(tok, str(root / "policy")), "rm": tiny_rm_dir, "root": root,
           "problems": F.write_problems(str(root / "problems.jsonl")),
           "hybrid": F.write_problems(str(root / "hybrid.jsonl"), sub_has_tests=False)}
    torch.set_num_threads(before)


def small(env, reward, out, **kw):
    args = dict(problems=env["hybrid"] if reward == "hybrid" else env["problems"], policy=env["policy"],
                output_dir=str(out), reward=reward, num_generations=8, prompts_per_step=2, micro_batch_size=8,
                max_completion_length=32, max_steps=2, save_steps=1, learning_rate=1e-3, seed=0)
    args.update(kw)
    return PolicyConfig(**args)


def params(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def test_reference_recipe_maps_onto_grpoconfig(tmp_path):
    args = grpo_args(PolicyConfig(problems="p", policy="m", output_dir=str(tmp_path)))
    assert (args.num_generations, args.epsilon, args.epsilon_high, args.beta) == (8, 0.2, 0.28, 0.0)
    assert args.loss_type == "dapo"  # token-mean over the whole accumulated batch
    assert args.learning_rate == 1e-6 and args.lr_scheduler_type == "constant"
    assert args.max_completion_length == 16384 and args.scale_rewards == "group"
    # one generation batch = 128 prompts x 8 rollouts, one optimizer step per batch
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 1024
    assert args.generation_batch_size == 1024 and args.use_cpu


def test_the_policy_dataset_carries_what_the_rewards_read():
    # each column reaches the reward functions as a keyword argument (rewards.problems_for reads them back)
    from codescaler.grpo import policy_dataset
    from codescaler.records import Problem
    from codescaler.rewards import problems_for

    problems = [Problem(id="lcb/1", prompt="p1", tests=F.ADD_TESTS, extra={"import_header": "lcb"}),
                Problem(id="free", prompt="p2", tests=None)]
    ds = policy_dataset(problems, conversational=True)
    back = problems_for(ds["prompt"], {k: ds[k] for k in ds.column_names if k != "prompt"})
    assert [(b.id, b.prompt, b.tests, b.extra.get("import_header")) for b in back] == [
        ("lcb/1", "p1", F.ADD_TESTS, "lcb"), ("free", "p2", None, "none")]


def test_config_errors_say_what_works(tmp_path):
    with pytest.raises(ValueError, match="epsilon_high >= epsilon"):
        PolicyConfig(problems="p", policy="m", output_dir="o", epsilon=0.3, epsilon_high=0.2)
    with pytest.raises(ValueError, match="at least 2"):
        PolicyConfig(problems="p", policy="m", output_dir="o", num_generations=1)
    with pytest.raises(ValueError, match=r"micro_batch_size=4 does not divide; use one of \[1, 2, 3, 6\]"):
        PolicyConfig(problems="p", policy="m", output_dir="o", prompts_per_step=3, num_generations=2, micro_batch_size=4)
    with pytest.raises(ValueError, match=r"updates_per_batch=3 updates; use one of \[1, 2, 4, 8\]"):
        PolicyConfig(problems="p", policy="m", output_dir="o", prompts_per_step=2, num_generations=4,
                     updates_per_batch=3, micro_batch_size=1)
    for bad, match in (({"temperature": 0.0}, "temperature > 0"), ({"beta": -0.5}, "beta >= 0"),
                       ({"top_p": 0.0}, "0 < top_p <= 1")):
        with pytest.raises(ValueError, match=match):
            PolicyConfig(problems="p", policy="m", output_dir="o", **bad)


def test_fewer_problems_than_a_rollout_batch_is_an_error_before_any_loading(env, tmp_path):
    from codescaler.records import UserError

    with pytest.raises(UserError, match=r"2 problems, but a rollout batch takes --prompts-per-step 4 .* 2 or less"):
        train_policy(small(env, "rm", tmp_path, prompts_per_step=4), ScorerConfig(model="no/such-model"))


def test_reward_url_refuses_rm_options_the_server_would_ignore(capsys):
    from codescaler.cli import main

    rc = main(["train-policy", "--problems", "p.jsonl", "--policy", "m", "--output-dir", "o", "--reward", "rm",
               "--reward-url", "http://127.0.0.1:9", "--model", "/some/rm", "--shaping", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and "--model, --shaping would be ignored" in err


def test_no_resume_clears_the_earlier_runs_checkpoints_and_log(tmp_path):
    from codescaler.grpo import _resume_point

    for step in (1, 3):
        os.makedirs(tmp_path / f"checkpoint-{step}")
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / LOG_NAME).write_text("".join(json.dumps({"step": s, "reward": 0.5}) + "\n" for s in (1, 2, 3)))
    (tmp_path / "other.txt").write_text("kept")
    cfg = PolicyConfig(problems="p", policy="m", output_dir=str(tmp_path))
    assert _resume_point(cfg, str(tmp_path / LOG_NAME)).endswith("checkpoint-3")  # the default resumes
    cfg = PolicyConfig(problems="p", policy="m", output_dir=str(tmp_path), resume=False)
    assert _resume_point(cfg, str(tmp_path / LOG_NAME)) is None
    assert sorted(os.listdir(tmp_path)) == ["other.txt"]  # the next default run starts from nothing, too


@pytest.mark.parametrize("reward", ["rm", "tests", "hybrid"])
def test_grpo_runs_changes_the_policy_and_logs(env, reward, tmp_path):
    out = train_policy(small(env, reward, tmp_path / reward), ScorerConfig(model=env["rm"], max_length=256))
    assert out["steps"] == 2
    rows = read_reward_log(os.path.join(tmp_path / reward, LOG_NAME))
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"reward", "valid_code_rate", "response_length", "loss"} <= set(r)
        assert 0 <= r["valid_code_rate"] <= 1 and r["response_length"] > 0
    assert any(r["grad_norm"] > 0 for r in rows), rows  # rewards differed within a group: a real update
    if reward != "rm":
        assert all("pass_rate" in r for r in rows)
    if reward == "hybrid":
        assert all(r["tests_fraction"] == 0.5 for r in rows)  # one of the two problems has tests
    before, after = params(env["policy"]), params(tmp_path / reward)
    assert any(not (before[k] == after[k]).all() for k in before)
    assert os.path.getsize(tmp_path / reward / CURVE_NAME) > 1000


def test_resume_continues_from_the_last_checkpoint(env, tmp_path):
    scorer = ScorerConfig(model=env["rm"], max_length=256)
    train_policy(small(env, "rm", tmp_path, max_steps=1, num_generations=4, micro_batch_size=4), scorer)
    rows = read_reward_log(str(tmp_path / LOG_NAME))
    with open(tmp_path / LOG_NAME, "w") as f:  # step 1 as if it had taken 1000 s; then a step logged after the
        f.write(json.dumps({**rows[0], "seconds": 1000.0}) + "\n")  # last checkpoint, as if killed mid-save
        f.write(json.dumps({"step": 2, "reward": 9.0}) + "\n")
    out = train_policy(small(env, "rm", tmp_path, max_steps=2, num_generations=4, micro_batch_size=4), scorer)
    assert out["steps"] == 2
    rows = read_reward_log(str(tmp_path / LOG_NAME))
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["reward"] != 9.0
    assert rows[1]["seconds"] > 1000.0  # cumulative across the resume, not restarted at 0


def test_trl_plugin_inside_grpotrainer(env, tmp_path):
    """Our RMReward as-is in TRL's GRPOTrainer(reward_funcs=[...]), with only a `prompt` column: one step."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from codescaler.rewards import RMReward

    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": F.PROMPTS[k]}] for k in ("add", "sub")]})
    args = GRPOConfig(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=8, max_steps=1,
                      max_completion_length=32, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
                      beta=0.0, epsilon_high=0.28, learning_rate=1e-3, seed=0)
    trainer = GRPOTrainer(model=env["policy"], reward_funcs=[RMReward(ScorerConfig(model=env["rm"], max_length=256))],
                          args=args, train_dataset=data)
    trainer.train()
    log = trainer.state.log_history[0]
    assert "rewards/codescaler_rm/mean" in log and "valid_code_rate" in log
    assert log["reward"] >= 0 and log["grad_norm"] > 0


def test_cli_tests_reward_needs_tests(env, capsys):
    from codescaler.cli import main

    rc = main(["train-policy", "--problems", env["hybrid"], "--policy", env["policy"], "--output-dir",
               str(env["root"] / "cli"), "--reward", "tests"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tests: null" in err[0] and "--reward hybrid" in err[0]
