"""End-to-end CLI: `codescaler extract` and `codescaler score`, bad input, resume, the real GGUF model."""

import json
import os
import subprocess
import sys

import pytest

from codescaler.cli import VERBS, main

F = "```"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "codescaler", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture
def files(tmp_path):
    probs = tmp_path / "p.jsonl"
    probs.write_text(json.dumps({"id": "a", "prompt": "Add two numbers.", "tests": None}) + "\n")
    return tmp_path, probs


BAD_INPUTS = [
    ("malformed JSON", b'{"problem_id": "a", "response": "x"}\n{"problem_id": "a",\n', r"r.jsonl:2: is not valid JSON"),
    ("missing problem_id", b'{"response": "x"}\n', r"r.jsonl:1: field 'problem_id' is missing"),
    ("unknown problem", b'{"problem_id": "nope", "response": "x"}\n', r"r.jsonl:1: field 'problem_id' names unknown"),
    ("non-UTF-8 line", b'{"problem_id": "a", "response": "x"}\n{"problem_id": "a", "response": "\xc3\x28"}\n',
     r"r.jsonl:2: is not valid UTF-8"),
    ("not an object", b'[1, 2]\n', r"r.jsonl:1: expected a JSON object"),
]


@pytest.mark.parametrize("name,content,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_score_bad_input_one_line_error_and_no_output(files, tiny_rm_dir, name, content, message):
    tmp, probs = files
    (tmp / "r.jsonl").write_bytes(content)
    out = tmp / "out.jsonl"
    r = run_cli("score", "--problems", str(probs), "--responses", str(tmp / "r.jsonl"), "--model", tiny_rm_dir,
                "--output", str(out))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("codescaler score: error:") and __import__("re").search(message, last), r.stderr
    assert not out.exists()


def test_extract_bad_input_and_empty_input(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(b'{"problem_id": "a"}\n')
    r = run_cli("extract", "--responses", str(tmp_path / "r.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "field 'response' is missing" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
    (tmp_path / "e.jsonl").write_text("")
    assert main(["extract", "--responses", str(tmp_path / "e.jsonl"), "--output", str(tmp_path / "eo.jsonl")]) == 0
    assert (tmp_path / "eo.jsonl").read_text() == ""


def test_score_empty_input_loads_no_model(files):
    tmp, probs = files
    (tmp / "r.jsonl").write_text("")
    assert main(["score", "--problems", str(probs), "--responses", str(tmp / "r.jsonl"),
                 "--model", "/does/not/exist", "--output", str(tmp / "o.jsonl")]) == 0
    assert (tmp / "o.jsonl").read_text() == ""


def test_missing_model_is_one_line(files):
    tmp, probs = files
    (tmp / "r.jsonl").write_text(json.dumps({"problem_id": "a", "response": "x"}) + "\n")
    r = run_cli("score", "--problems", str(probs), "--responses", str(tmp / "r.jsonl"),
                "--model", str(tmp / "no-model"), "--output", str(tmp / "o.jsonl"))
    assert r.returncode == 2 and "no-model: no such file or directory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp / "o.jsonl").exists()


def test_default_model_missing_says_how_to_build_it(files, monkeypatch):
    tmp, probs = files
    (tmp / "r.jsonl").write_text(json.dumps({"problem_id": "a", "response": "x"}) + "\n")
    env_home = tmp / "home"
    r = subprocess.run([sys.executable, "-m", "codescaler", "score", "--problems", str(probs), "--responses",
                        str(tmp / "r.jsonl"), "--output", str(tmp / "o.jsonl")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT, "CODESCALER_HOME": str(env_home)})
    assert r.returncode == 2 and "make demo" in r.stderr and "LARK-Lab/CodeScaler-8B" in r.stderr


def test_over_max_length_sets_truncated_and_resume_skips_done(files, tiny_rm_dir):
    tmp, probs = files
    probs.write_text(json.dumps({"id": "a", "prompt": "word " * 3000, "tests": None}) + "\n")
    rows = [{"problem_id": "a", "response": f"{F}python\nx = {i}\n{F}", "sample": i} for i in range(3)]
    (tmp / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "o.jsonl"
    out.write_text(json.dumps({**rows[0], "code": "x = 0", "rm_score": 123.0, "reward": 123.0,
                               "truncated": False, "rm_model": os.path.realpath(tiny_rm_dir)}) + "\n")
    args = ["score", "--problems", str(probs), "--responses", str(tmp / "r.jsonl"), "--model", tiny_rm_dir,
            "--output", str(out), "--max-length", "256", "--dtype", "float32"]
    assert main(args) == 0
    done = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["sample"] for d in done] == [0, 1, 2]
    assert done[0]["rm_score"] == 123.0  # kept, not recomputed
    assert all(d["truncated"] for d in done[1:])
    assert main(args) == 0 and len(out.read_text().splitlines()) == 3  # nothing left to do


def test_help_for_every_verb_shows_defaults_and_no_format_debris(capsys):
    r = run_cli("--help")
    assert r.returncode == 0 and "score" in r.stdout and "verify" in r.stdout
    for verb in VERBS:
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        text = capsys.readouterr().out
        assert e.value.code == 0 and "option_strings" not in text and "%(" not in text, verb
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 512)" in text and "(default: 4096)" in text  # --chunk, --max-length
    assert "(default: 0)" in text  # --token-budget: a default of 0 is shown (0 == False must not hide it)
    with pytest.raises(SystemExit):
        main(["train-rm", "--help"])
    assert "~30% slower" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_score_real_smollm2_gguf_on_the_shipped_example(smollm2_gguf, tmp_path):
    out = tmp_path / "s.jsonl"
    r = run_cli("score", "--problems", os.path.join(ROOT, "examples/problems.jsonl"),
                "--responses", os.path.join(ROOT, "examples/responses.jsonl"), "--model", smollm2_gguf,
                "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3
    assert rows[0]["code"].startswith("from collections import defaultdict") and rows[0]["reward"] > 0
    assert rows[2]["code"] is None and rows[2]["reward"] == 0.0
    assert all(isinstance(r["rm_score"], float) for r in rows[:2])
