import json

import pytest

from bestofn_helpers import tiny_model_dir
from codescaler.cli import main
from codescaler.records import RecordError
from codescaler.rmbench import (RMBenchSample, accuracy_matrix, matrix_summary, read_rmbench, rmbench_metrics,
                                score_samples)

# Hand-made scores. Sample A: chosen [3, 2, 1], rejected [2.5, 1.5, 0.5]
#   c0=3 beats all -> [1,1,1]; c1=2 beats 1.5, 0.5 -> [0,1,1]; c2=1 beats 0.5 -> [0,0,1]
# Sample B: chosen [0, 0, 0], rejected [0, 1, -1]: only rejected[2] is beaten; a tie is a loss -> rows [0,0,1]
A = ([3.0, 2.0, 1.0], [2.5, 1.5, 0.5])
B = ([0.0, 0.0, 0.0], [0.0, 1.0, -1.0])
M_AB = [[0.5, 0.5, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 1.0]]


def test_matrix_known_answer():
    m = accuracy_matrix([A[0], B[0]], [A[1], B[1]])
    assert m.tolist() == M_AB
    s = matrix_summary(m)
    assert s["hard"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)   # upper triangle: (0,1), (0,2), (1,2)
    assert s["normal"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # diagonal
    assert s["easy"] == pytest.approx(0.0)                      # lower triangle: (1,0), (2,0), (2,1)
    assert s["total"] == pytest.approx(4.5 / 9)


def test_matrix_is_not_symmetric_in_its_arguments():
    m = accuracy_matrix([A[1]], [A[0]])  # swapped sides: every chosen loses except 2.5 > 2 and 2.5 > 1, 1.5 > 1
    assert m.tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_per_domain_and_avg_over_domains():
    samples = [RMBenchSample("a", "p", ["x"] * 3, ["y"] * 3, "code"),
               RMBenchSample("b", "p", ["x"] * 3, ["y"] * 3, "safety-refuse"),
               RMBenchSample("c", "p", ["x"] * 3, ["y"] * 3, "safety-response")]
    scores = {"a": ([1, 1, 1], [0, 0, 0]), "b": A, "c": B}
    m = rmbench_metrics(samples, scores)
    assert set(m["domains"]) == {"code", "safety"}
    assert m["domains"]["code"]["total"] == 1.0 and m["domains"]["safety"]["matrix"] == M_AB
    assert m["avg"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["hard"] == pytest.approx((1.0 + 2.5 / 3) / 2) and m["easy"] == pytest.approx(0.5)
    # pooled over all samples (3 samples), not the headline mean over domains
    assert m["pooled"]["total"] == pytest.approx((9 + 6 + 3) / 27)  # wins per sample: a 9, b 6, c 3


def _sample(i, domain):
    return {"id": i, "prompt": f"Question {i}?", "domain": domain,
            "chosen": [f"Right answer {i}.", f"The right answer to {i} is this, explained.",
                       f"## Answer\n\n**Right** answer {i}."],
            "rejected": [f"Wrong answer {i}.", f"The wrong answer to {i} is this, explained.",
                         f"## Answer\n\n**Wrong** answer {i}."]}


def test_reader_formats_and_errors(tmp_path):
    arr = tmp_path / "rm.json"
    arr.write_text(json.dumps([_sample(1, "chat"), _sample(2, "math")]))
    assert [s.id for s in read_rmbench(str(arr))] == ["1", "2"]
    bad = _sample(3, "chat")
    bad["chosen"] = bad["chosen"][:2]
    lines = tmp_path / "rm.jsonl"
    lines.write_text(json.dumps(_sample(1, "chat")) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=r"rm.jsonl:2: field 'chosen' must be a list of 3"):
        read_rmbench(str(lines))


def test_cli_scores_whole_responses_through_the_shared_scorer(tmp_path):
    from codescaler.scorer import RewardScorer, ScorerConfig

    data = [_sample(1, "chat"), _sample(2, "math"), _sample(3, "safety-refuse")]
    code = _sample(4, "code")
    code["chosen"] = ["```python\ndef f(x):\n    return x + 1\n```"] * 3
    data.append(code)
    path = tmp_path / "total_dataset.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "scores.jsonl"
    model = tiny_model_dir("Qwen3ForSequenceClassification")
    args = ["rm-bench", "--data", str(path), "--model", model, "--output", str(out), "--dtype", "float32"]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["chosen_scores"]) == 3 and len(r["rejected_scores"]) == 3 for r in rows)
    metrics = json.loads((tmp_path / "scores.metrics.json").read_text())
    assert set(metrics["domains"]) == {"chat", "math", "safety", "code"} and metrics["rm_input"] == "response"

    # the scores are the RM's logits on the whole response text (not extracted code)
    scorer = RewardScorer(ScorerConfig(model=model, dtype="float32"))
    direct = scorer.score_code([data[0]["prompt"]] * 3, data[0]["chosen"])
    assert rows[0]["chosen_scores"] == pytest.approx([s for s, _ in direct], abs=1e-4)
    samples = read_rmbench(str(path))
    code_mode = score_samples(samples, scorer, "code")
    assert code_mode["1"] == ([0.0] * 3, [0.0] * 3)                    # prose has no code block: reward 0
    assert all(x > 0 for x in code_mode["4"][0])                         # softplus of a real score

    assert main(args) == 0  # resume: nothing rescored
    assert len(out.read_text().splitlines()) == 4


def test_cli_refuses_to_resume_scores_of_another_model(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_sample(1, "chat")]))
    out = tmp_path / "scores.jsonl"
    out.write_text(json.dumps({"id": 1, "rm_input": "response", "chosen_scores": [-9] * 3,
                               "rejected_scores": [9] * 3, "rm_model": "someone/else"}) + "\n")
    model = tiny_model_dir("Qwen3ForSequenceClassification")
    rc = main(["rm-bench", "--data", str(path), "--model", model, "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "made with rm_model 'someone/else'" in err and "--model" in err
    assert main(["rm-bench", "--data", str(path), "--model", model, "--output", str(out), "--chunk", "0"]) == 2
