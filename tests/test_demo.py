"""CI run of `codescaler demo --quick`: every artifact exists and is well formed, a rerun resumes,
and the trained RM becomes the default `--model` of `score`."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "PYTHONPATH": ROOT, "CODESCALER_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
    run_dir = tmp / "run"
    r = subprocess.run([sys.executable, "-m", "codescaler", "demo", "--quick", "--run-dir", str(run_dir)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, env, r


@pytest.mark.slow
def test_quick_demo_artifacts(quick_run):
    run, _, _ = quick_run
    for name in ("train.jsonl", "heldout.jsonl", "rollouts_train.jsonl", "rollouts_heldout.jsonl",
                 "verified_train.jsonl", "verified_heldout.jsonl", "pairs.jsonl", "pool_heldout.jsonl"):
        assert jsonl(run / name), name
    assert all("verdict" in d and d["verdict"]["status"] for d in jsonl(run / "verified_heldout.jsonl"))
    assert all(d["verdict"]["passed"] for d in jsonl(run / "verified_canonical_train.jsonl"))
    pairs = jsonl(run / "pairs.jsonl")
    assert all(d["chosen"] != d["rejected"] and d["prompt"] for d in pairs)
    assert os.path.isfile(run / "rm" / "config.json")
    assert jsonl(run / "selected.jsonl")
    log = jsonl(run / "policy" / "reward_log.jsonl")
    assert log and all(isinstance(d["reward"], float) for d in log)
    for png in (run / "report_select.png", run / "policy" / "reward_curve.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC, png
    report = (run / "report.md").read_text()
    for heading in ("## Wall time per stage", "## Execution labels", "## Reward model", "## Best-of-N",
                    "## GRPO", "report_select.png", "reward_curve.png"):
        assert heading in report, heading
    stages = sorted(os.listdir(run / "stages"))
    assert len(stages) == 12 and all(s.endswith(".json") for s in stages)


@pytest.mark.slow
def test_rerun_skips_finished_stages(quick_run):
    run, env, _ = quick_run
    r = subprocess.run([sys.executable, "-m", "codescaler", "demo", "--quick", "--run-dir", str(run), "--no-install"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("skipped") == 12


@pytest.mark.slow
def test_trained_rm_is_the_default_model(quick_run, tmp_path):
    run, env, _ = quick_run
    assert os.path.isfile(os.path.join(env["CODESCALER_HOME"], "default-rm", "config.json"))
    out = tmp_path / "scored.jsonl"
    r = subprocess.run([sys.executable, "-m", "codescaler", "score", "--problems", os.path.join(ROOT, "examples/problems.jsonl"),
                        "--responses", os.path.join(ROOT, "examples/responses.jsonl"), "--output", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = jsonl(out)
    assert len(rows) == 3 and rows[0]["rm_score"] is not None and rows[2]["reward"] == 0.0
