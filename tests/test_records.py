import gzip
import json

import pytest

from codescaler.records import (JsonlWriter, Pair, Problem, RecordError, Status, Verdict, pending,
                                read_problems, read_responses, stream_jsonl)


def write(path, lines, mode="w"):
    with open(path, mode) as f:
        f.write(lines)


def test_extra_keys_round_trip():
    d = {"id": "p1", "prompt": "q", "tests": None, "difficulty": "hard", "meta": {"a": [1]}}
    p = Problem.from_dict(d)
    assert p.extra == {"difficulty": "hard", "meta": {"a": [1]}}
    assert p.to_dict() == {**d, "starter_code": None, "source": None, "time_limit_s": None, "memory_mb": None}


def test_missing_and_wrong_type_name_line_and_field(tmp_path):
    f = tmp_path / "r.jsonl"
    write(f, '{"problem_id": "a", "response": "x"}\n{"response": "y"}\n')
    with pytest.raises(RecordError, match=r"r.jsonl:2: field 'problem_id' is missing"):
        read_responses(str(f))
    write(f, '{"problem_id": 3, "response": "x"}\n')
    with pytest.raises(RecordError, match=r":1: field 'problem_id' must be str"):
        read_responses(str(f))


def test_bad_json_and_bad_utf8(tmp_path):
    f = tmp_path / "r.jsonl"
    write(f, '{"problem_id": "a", "response": "x"}\n{"problem_id": \n')
    with pytest.raises(RecordError, match=r"r.jsonl:2: is not valid JSON"):
        list(stream_jsonl(str(f)))
    f.write_bytes(b'{"problem_id": "a", "response": "\xff"}\n')
    with pytest.raises(RecordError, match=r"r.jsonl:1: is not valid UTF-8"):
        list(stream_jsonl(str(f)))


def test_unknown_problem_and_duplicate_ids(tmp_path):
    pf, rf = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write(pf, '{"id": "a", "prompt": "q"}\n')
    write(rf, '{"problem_id": "a", "response": "x"}\n{"problem_id": "zz", "response": "x"}\n')
    with pytest.raises(RecordError, match=r"r.jsonl:2: field 'problem_id' names unknown problem 'zz'"):
        read_responses(str(rf), read_problems(str(pf)))
    write(pf, '{"id": "a", "prompt": "q"}\n{"id": "a", "prompt": "q2"}\n')
    with pytest.raises(RecordError, match="repeats problem id"):
        read_problems(str(pf))


def test_gzip_read_and_append(tmp_path):
    f = str(tmp_path / "out.jsonl.gz")
    with JsonlWriter(f) as w:
        w.write({"problem_id": "a", "response": "1"})
    with JsonlWriter(f) as w:  # a second run appends a new gzip member
        w.write({"problem_id": "b", "response": "2"})
    assert [d["problem_id"] for _, d in stream_jsonl(f)] == ["a", "b"]
    with gzip.open(f, "rt") as g:
        assert len(g.read().splitlines()) == 2


def test_writer_leaves_no_file_until_first_write_and_finish_makes_empty(tmp_path):
    f = tmp_path / "o.jsonl"
    with JsonlWriter(str(f)):
        pass
    assert not f.exists()
    with JsonlWriter(str(f)) as w:
        w.finish()
    assert f.exists() and f.read_text() == ""


def test_resume_skips_done_counts_repeats_and_cuts_torn_tail(tmp_path):
    out = tmp_path / "o.jsonl"
    rows = [{"problem_id": "a", "response": "x", "sample": 0},
            {"problem_id": "a", "response": "x", "sample": 0},  # an exact repeat
            {"problem_id": "b", "response": "y"}]
    write(out, json.dumps({**rows[0], "code": None}) + "\n" + '{"problem_id": "a", "resp')  # killed mid-line
    todo = pending(rows, str(out))
    assert todo == rows[1:]
    with JsonlWriter(str(out)) as w:
        for r in todo:
            w.write(r)
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    assert pending(rows, str(out)) == []


def test_verdict_status_enum_and_consistency():
    v = Verdict.from_dict({"status": "wrong_answer", "passed": False, "cases_passed": 1, "cases_total": 3,
                           "seconds": 0.1, "detail": "case 2"})
    assert v.status is Status.WRONG_ANSWER and v.to_dict()["status"] == "wrong_answer"
    with pytest.raises(ValueError):
        Verdict(status="wrong_answer", passed=True, cases_passed=3, cases_total=3, seconds=0.0)
    with pytest.raises(ValueError):
        Verdict(status="made_up", passed=False, cases_passed=0, cases_total=0, seconds=0.0)


def test_pair_uses_trl_column_names():
    p = Pair(problem_id="a", prompt="q", chosen="x=1", rejected="x=2")
    assert {"prompt", "chosen", "rejected"} <= set(p.to_dict())
