import gzip
import json
import re

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


GOOD_TESTS = {
    "stdio": {"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}]},
    "call": {"kind": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 2}]},
    "assert": {"kind": "assert", "entry_point": "f", "code": "def check(c):\n    assert c(1) == 2\n"},
}


@pytest.mark.parametrize("tests, field_name", [
    ({"kind": "stdio", "cases": []}, "tests.cases"),  # no case would pass any code
    ({"kind": "call", "fn_name": "f", "cases": []}, "tests.cases"),
    ({"kind": "stdio"}, "tests.cases"),
    ({"kind": "shell", "cases": [{"input": "", "output": ""}]}, "tests.kind"),
    ({"kind": "stdio", "cases": [{"input": "1\n"}]}, "tests.cases[0].output"),
    ({"kind": "stdio", "cases": [{"input": 5, "output": "5"}]}, "tests.cases[0].input"),
    ({"kind": "stdio", "cases": ["1 2"]}, "tests.cases[0]"),
    ({"kind": "call", "cases": [{"args": [1], "expected": 1}]}, "tests.fn_name"),
    ({"kind": "call", "fn_name": "f", "cases": [{"args": 1, "expected": 1}]}, "tests.cases[0].args"),
    ({"kind": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 1}, {"args": [2]}]},
     "tests.cases[1].expected"),
    ({"kind": "assert", "entry_point": "f"}, "tests.code"),
    ({"kind": "assert", "code": "def check(c): pass"}, "tests.entry_point"),
])
def test_malformed_tests_are_one_line_errors_naming_the_field(tmp_path, tests, field_name):
    f = tmp_path / "p.jsonl"
    write(f, json.dumps({"id": "ok", "prompt": "q", "tests": GOOD_TESTS["stdio"]}) + "\n"
          + json.dumps({"id": "bad", "prompt": "q", "tests": tests}) + "\n")
    with pytest.raises(RecordError, match=rf"p.jsonl:2: field '{re.escape(field_name)}' "):
        read_problems(str(f))


@pytest.mark.parametrize("name, value", [("time_limit_s", -1), ("time_limit_s", 0), ("memory_mb", 0),
                                         ("time_limit_s", True)])
def test_limits_must_be_positive(tmp_path, name, value):
    f = tmp_path / "p.jsonl"
    write(f, json.dumps({"id": "a", "prompt": "q", "tests": GOOD_TESTS["call"], name: value}) + "\n")
    with pytest.raises(RecordError, match=rf":1: field '{name}'"):
        read_problems(str(f))


def test_each_kind_of_valid_tests_reads(tmp_path):
    f = tmp_path / "p.jsonl"
    write(f, "".join(json.dumps({"id": k, "prompt": "q", "tests": t, "time_limit_s": 0.5}) + "\n"
                     for k, t in GOOD_TESTS.items()) + json.dumps({"id": "none", "prompt": "q", "tests": None}) + "\n")
    assert sorted(read_problems(str(f))) == ["assert", "call", "none", "stdio"]


@pytest.mark.parametrize("name", ["o.jsonl", "o.jsonl.gz"])
def test_lone_surrogate_is_written_as_an_escape_and_reads_back(tmp_path, name):
    """A lone surrogate is valid JSON ("\\ud800") but not encodable UTF-8: the line is written ASCII-escaped."""
    from codescaler.records import write_jsonl

    row = {"problem_id": "a", "response": "x\ud800y é"}
    with JsonlWriter(str(tmp_path / name)) as out:
        out.write(row)
        out.write({"problem_id": "b", "response": "é"})
    assert [d for _, d in stream_jsonl(str(tmp_path / name))] == [row, {"problem_id": "b", "response": "é"}]
    write_jsonl(str(tmp_path / ("w" + name)), [row])
    assert [d for _, d in stream_jsonl(str(tmp_path / ("w" + name)))] == [row]


def test_write_jsonl_keeps_gzip_for_gz_paths(tmp_path):
    from codescaler.records import write_jsonl

    path = tmp_path / "a.jsonl.gz"
    write_jsonl(str(path), [{"a": 1}])
    assert gzip.decompress(path.read_bytes()) == b'{"a": 1}\n'


def test_refuse_other_run_names_the_line_and_the_flag(tmp_path):
    from codescaler.records import UserError, refuse_other_run

    out = tmp_path / "o.jsonl"
    refuse_other_run(str(out), "rm_model", "m1", "--model")  # no file: nothing to check
    write(out, json.dumps({"rm_model": "m1"}) + "\n" + json.dumps({"rm_model": "m0"}) + "\n")
    with pytest.raises(UserError, match=r"o.jsonl:2: made with rm_model 'm0', not 'm1'.*the same --model"):
        refuse_other_run(str(out), "rm_model", "m1", "--model")
    write(out, json.dumps({"rm_model": "m1"}) + "\n")
    refuse_other_run(str(out), "rm_model", "m1", "--model")


def test_a_killed_gzip_writer_loses_only_its_partial_line_and_the_file_resumes(tmp_path):
    """gzip.open refuses the whole read that meets a member without its end; the lines a killed writer had
    flushed are still there, and the next writer repairs the file before appending its own member."""
    import subprocess
    import sys

    path = tmp_path / "o.jsonl.gz"
    code = (f"import os\nfrom codescaler.records import JsonlWriter\nw = JsonlWriter({str(path)!r})\n"
            "for i in range(500):\n    w.write({'i': i})\n"
            "w._f.write('{\"i\": 500, \"pa')\nw._f.flush()\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(RecordError, match="is cut off"):
        list(stream_jsonl(str(path)))
    assert [d["i"] for _, d in stream_jsonl(str(path), tolerate_torn_tail=True)] == list(range(500))
    assert len(pending([{"i": i} for i in range(600)], str(path), key=lambda d: (d["i"],))) == 100
    with JsonlWriter(str(path)) as out:
        out.write({"i": "next"})
    assert [d["i"] for _, d in stream_jsonl(str(path))] == list(range(500)) + ["next"]
    with JsonlWriter(str(path)) as out:  # a whole file: a second member appended, both read
        out.write({"i": "after"})
    assert [d["i"] for _, d in stream_jsonl(str(path))][-2:] == ["next", "after"]
