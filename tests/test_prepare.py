"""`codescaler prepare`: each source format from a small local copy in its real layout, loaded through
`datasets` exactly as the hub path loads it; safe decoding; the test cap; decontamination; resume."""

import base64
import json
import os
import pickle
import subprocess
import sys
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codescaler.cli import main
from codescaler.data import humaneval_problems
from codescaler.safe_decode import UnsafePickleError, decode_lcb_tests, safe_unpickle
from codescaler.testcases import select_longest

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "fixtures", "prepare")
ADD_STDIN = open(os.path.join(FIX, "sol_add_stdin.py")).read()
ADD_FN = open(os.path.join(FIX, "sol_add_fn.py")).read()
TWO_SUM = open(os.path.join(FIX, "sol_two_sum.py")).read()


def lcb_encode(obj) -> str:
    """How LiveCodeBench stores private tests: base64(zlib(pickle(json text)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(obj)))).decode()


def write_parquet(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def write_configs(root, configs):
    """A dataset card whose YAML declares configs and their data files, as the hub repos do."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {name}/{s}-*" for s in splits]
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("\n".join(lines + ["---", ""]))


def prepare(*args):
    return main(["prepare", *map(str, args)])


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def passes(problem, solution, tmp_path):
    """The real sandboxed `verify` on one prepared problem; infrastructure errors fail the test loudly."""
    from codescaler.records import Problem, Status
    from codescaler.sandbox import SandboxConfig, verify_one

    extra = ()
    if "import pytest" in ((problem.get("tests") or {}).get("code") or ""):  # KodCode tests use pytest.raises
        extra = (os.path.dirname(os.path.dirname(pytest.__file__)),)  # its site-packages, bound read-only
    verdict = verify_one(Problem.from_dict(problem), solution,
                         SandboxConfig(workers=1, timeout_s=10, extra_paths=extra))
    assert verdict.status is not Status.SANDBOX_ERROR, verdict.detail
    return verdict.passed


ADD_CASES = [("1 2\n", "3\n"), ("10 20\n", "30\n"), ("-5 5\n", "0\n")]
TWO_SUM_CASES = [("[2,7,11,15]\n9", "[0, 1]"), ("[3,2,4]\n6", "[1, 2]"), ("[3,3]\n6", "[0, 1]")]


@pytest.fixture(scope="module")
def deepcoder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("DeepCoder-Preview-Dataset")
    stdin_list = [{"input": i, "output": o, "testtype": "stdin"} for i, o in ADD_CASES]
    write_parquet(root / "lcbv5/train-00000-of-00001.parquet", [
        {"problem": "Add two integers read from one line.", "starter_code": "", "metadata": "{}",
         "tests": json.dumps(stdin_list)},
        {"problem": "Given nums and target return indices of two numbers adding to target.",
         "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
         "metadata": json.dumps({"func_name": "twoSum"}),
         "tests": json.dumps([{"input": i, "output": o, "testtype": "functional"} for i, o in TWO_SUM_CASES])},
    ])
    write_parquet(root / "lcbv5/test-00000-of-00001.parquet", [
        {"problem": "LCB test split: add two integers.", "starter_code": "", "metadata": "{}",
         "tests": json.dumps(stdin_list)}])
    write_parquet(root / "taco/train-00000-of-00001.parquet", [
        {"problem": "TACO: add two integers (stdin).", "metadata": "{}",
         "tests": json.dumps({"inputs": [i for i, _ in ADD_CASES], "outputs": [o for _, o in ADD_CASES]})},
        {"problem": "TACO: sum two numbers with a function.", "metadata": "{}",
         "tests": json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]]})},
        {"problem": "TACO: a problem whose tests are broken.", "metadata": "{}", "tests": "{\"inputs\": [1, 2"},
    ])
    write_parquet(root / "primeintellect/train-00000-of-00001.parquet", [
        {"problem": "PrimeIntellect: add two integers.", "metadata": "{}",
         "tests": json.dumps([{"type": "stdin_stdout", "input": i, "output": o} for i, o in ADD_CASES])},
        {"problem": "PrimeIntellect: write add.", "metadata": "{}",
         "tests": json.dumps([{"type": "function_call", "fn_name": "add", "input": [a, b], "output": [a + b]}
                              for a, b in [(1, 2), (5, 6), (0, 0)]])},
    ])
    write_parquet(root / "codeforces/test-00000-of-00001.parquet", [
        {"problem": "Codeforces: add two integers.", "metadata": "{}",
         "tests": json.dumps([{"input": i, "output": o} for i, o in ADD_CASES])}])
    write_configs(root, {"lcbv5": ["train", "test"], "taco": ["train"], "primeintellect": ["train"],
                         "codeforces": ["test"]})
    return root


def test_deepcoder_all_sources_convert_and_reference_solutions_pass(deepcoder_dir, tmp_path):
    out = tmp_path / "train.jsonl"
    assert prepare("--dataset", "deepcoder", "--path", deepcoder_dir, "--split", "train", "--output", out,
                   "--revision", "abc123", "--report", tmp_path / "r.json") == 0
    probs = {p["id"]: p for p in read(out)}
    assert sorted(probs) == ["deepcoder/lcbv5/train/0", "deepcoder/lcbv5/train/1", "deepcoder/primeintellect/train/0",
                             "deepcoder/primeintellect/train/1", "deepcoder/taco/train/0", "deepcoder/taco/train/1"]
    assert all(p["revision"] == "abc123" and p["source"] in ("lcbv5", "taco", "primeintellect") for p in probs.values())
    lc = probs["deepcoder/lcbv5/train/1"]
    assert lc["tests"] == {"kind": "call", "fn_name": "twoSum", "cases": [
        {"args": [[2, 7, 11, 15], 9], "expected": [0, 1]}, {"args": [[3, 2, 4], 6], "expected": [1, 2]},
        {"args": [[3, 3], 6], "expected": [0, 1]}]}
    assert lc["starter_code"].startswith("class Solution") and "class Solution" in lc["prompt"]
    assert probs["deepcoder/taco/train/1"]["tests"]["cases"][0] == {"args": [1, 2], "expected": 3}
    assert "`add`" in probs["deepcoder/taco/train/1"]["prompt"]
    assert "standard input" in probs["deepcoder/taco/train/0"]["prompt"]
    for pid, sol in [("deepcoder/lcbv5/train/0", ADD_STDIN), ("deepcoder/lcbv5/train/1", TWO_SUM),
                     ("deepcoder/taco/train/0", ADD_STDIN), ("deepcoder/taco/train/1", ADD_FN),
                     ("deepcoder/primeintellect/train/0", ADD_STDIN), ("deepcoder/primeintellect/train/1", ADD_FN)]:
        assert passes(probs[pid], sol, tmp_path), pid
        assert not passes(probs[pid], sol.replace("a + b", "a - b").replace("target - x", "target + x"),
                          tmp_path), pid
    # DeepCoder grades its lcbv5 problems with LiveCodeBench's harness, import header included (`import_header`)
    assert {pid: p.get("import_header") for pid, p in probs.items() if p.get("import_header")} == {
        "deepcoder/lcbv5/train/0": "lcb", "deepcoder/lcbv5/train/1": "lcb"}
    leaning = TWO_SUM.replace("seen = {}", "seen = defaultdict(int)")  # defaultdict never imported
    assert passes(probs["deepcoder/lcbv5/train/1"], leaning, tmp_path)
    assert not passes({**probs["deepcoder/lcbv5/train/1"], "import_header": "none"}, leaning, tmp_path)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dropped"] == {"no usable tests: not valid JSON (Expecting ',' delimiter)": 1} or \
        list(report["dropped"])[0].startswith("no usable tests")
    assert report["test_kinds"] == {"stdio": 3, "call": 3}


def test_deepcoder_keep_untested_and_test_split(deepcoder_dir, tmp_path):
    out = tmp_path / "t.jsonl"
    prepare("--dataset", "deepcoder", "--path", deepcoder_dir, "--source", "taco", "--output", out, "--keep-untested")
    probs = read(out)
    assert [p["tests"] is None for p in probs] == [False, False, True]
    assert "untested_reason" in probs[2]
    out2 = tmp_path / "eval.jsonl"
    prepare("--dataset", "deepcoder", "--path", deepcoder_dir, "--split", "test", "--output", out2)
    assert sorted(p["id"] for p in read(out2)) == ["deepcoder/codeforces/test/0", "deepcoder/lcbv5/test/0"]
    assert all(p["role"] == "eval" for p in read(out2))


def test_cap_keeps_longest_inputs_like_deepcoder(tmp_path):
    inputs = ["x" * n for n in [5, 50, 1, 50, 30, 2]]
    assert select_longest(inputs, 3) == [1, 3, 4]
    assert select_longest(inputs, 0) == list(range(6))
    root = tmp_path / "dc"
    cases = [{"input": f"{i} {i}\n" + " " * i, "output": f"{2 * i}\n", "testtype": "stdin"} for i in range(40)]
    write_parquet(root / "lcbv5/train-00000-of-00001.parquet",
                  [{"problem": "add", "starter_code": "", "metadata": "{}", "tests": json.dumps(cases)}])
    write_configs(root, {"lcbv5": ["train"]})
    out = tmp_path / "o.jsonl"
    prepare("--dataset", "deepcoder", "--source", "lcbv5", "--path", root, "--output", out, "--report", tmp_path / "r")
    (p,) = read(out)
    assert [c["output"] for c in p["tests"]["cases"]] == [f"{2 * i}\n" for i in range(25, 40)]
    assert p["tests_total"] == 40 and p["tests_capped"] is True
    rep = json.loads((tmp_path / "r").read_text())
    assert rep["capped_problems"] == 1 and rep["cases_cut_by_cap"] == 25


class WritesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_unpickle_decodes_real_lcb_blobs(protocol):
    tests = [{"input": f"{i} 2\n", "output": "3\n", "testtype": "stdin"} for i in range(3)] + [{"input": "é" * 3, "output": ""}]
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests), protocol=protocol))).decode()
    assert decode_lcb_tests(blob) == tests
    nested = base64.b64encode(zlib.compress(pickle.dumps(tests, protocol=protocol))).decode()
    assert decode_lcb_tests(nested) == tests
    assert decode_lcb_tests(json.dumps(tests)) == tests


@pytest.mark.parametrize("payload", [1, 2.5, None, b"x", (1,), {1: "a"}, set()])
def test_safe_unpickle_refuses_anything_but_str_list_dict(payload):
    import io

    with pytest.raises(UnsafePickleError, match="refusing pickle opcode|only str keys"):
        safe_unpickle(io.BytesIO(pickle.dumps(payload, protocol=4)))


def test_malicious_pickle_is_refused_and_writes_nothing(tmp_path):
    import io

    marker = tmp_path / "pwned"
    evil = pickle.dumps(WritesFile(marker))
    with pytest.raises(UnsafePickleError, match="GLOBAL|STACK_GLOBAL"):
        safe_unpickle(io.BytesIO(evil))
    shared = [["a"]]
    shared.append(shared[0])
    with pytest.raises(UnsafePickleError, match="repeats a list"):
        safe_unpickle(io.BytesIO(pickle.dumps(shared, protocol=4)))
    # Through the whole CLI: the problem is dropped with the reason, and no file appears.
    root = tmp_path / "lcb"
    row = lcb_row("evil", "2024-01-01", private=base64.b64encode(zlib.compress(evil)).decode())
    write_jsonl(root / "test.jsonl", [row])
    out = tmp_path / "o.jsonl"
    assert prepare("--dataset", "lcb", "--path", root, "--release", "release_v1", "--output", out,
                   "--report", tmp_path / "r.json") == 0
    assert read(out) == [] and not marker.exists()
    (reason,) = json.loads((tmp_path / "r.json").read_text())["dropped"]
    assert "refusing pickle opcode" in reason


def lcb_row(qid, date, stdin=True, private=None, title="t"):
    if stdin:
        pub, priv = ADD_CASES[:1], ADD_CASES[1:]
        mk = lambda cs: [{"input": i, "output": o, "testtype": "stdin"} for i, o in cs]  # noqa: E731
        meta, starter, content = {}, "", f"{title}: read a and b, print a+b."
    else:
        pub, priv = TWO_SUM_CASES[:1], TWO_SUM_CASES[1:]
        mk = lambda cs: [{"input": i, "output": o, "testtype": "functional"} for i, o in cs]  # noqa: E731
        meta = {"func_name": "twoSum"}
        starter = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        "
        content = f"{title}: return the indices of the two numbers that add up to target."
    return {"question_title": title, "question_content": content, "platform": "atcoder" if stdin else "leetcode",
            "question_id": qid, "contest_id": "c1", "contest_date": date + "T00:00:00", "starter_code": starter,
            "difficulty": "easy", "public_test_cases": json.dumps(mk(pub)),
            "private_test_cases": private if private is not None else lcb_encode(mk(priv)),
            "metadata": json.dumps(meta)}


def test_lcb_release_window_and_both_test_types(tmp_path):
    root = tmp_path / "code_generation_lite"
    write_jsonl(root / "test.jsonl", [lcb_row("abc001_a", "2023-06-01"), lcb_row("two-sum", "2024-03-01", False)])
    write_jsonl(root / "test2.jsonl", [lcb_row("abc300_b", "2024-08-01")])
    out = tmp_path / "lcb.jsonl"
    assert prepare("--dataset", "lcb", "--path", root, "--release", "release_v2", "--start-date", "2024-01-01",
                   "--output", out) == 0
    probs = {p["id"]: p for p in read(out)}
    assert sorted(probs) == ["lcb/abc300_b", "lcb/two-sum"]
    assert probs["lcb/two-sum"]["tests"]["kind"] == "call" and len(probs["lcb/two-sum"]["tests"]["cases"]) == 3
    assert len(probs["lcb/abc300_b"]["tests"]["cases"]) == 3  # eval: public + private, uncapped
    assert passes(probs["lcb/two-sum"], TWO_SUM, tmp_path) and passes(probs["lcb/abc300_b"], ADD_STDIN, tmp_path)
    assert all(p["import_header"] == "lcb" for p in probs.values())
    out1 = tmp_path / "v1.jsonl"
    prepare("--dataset", "lcb", "--path", root, "--release", "release_v1", "--end-date", "2023-12-31", "--output", out1)
    assert [p["id"] for p in read(out1)] == ["lcb/abc001_a"]


def test_large_blob_streams_in_bounded_memory(tmp_path):
    """A 200 MB private-test blob is decoded, capped to 15 cases and converted with a peak well under its size."""
    n_cases, size = 100, 2 << 20
    cases = [{"input": f"{i} {i}\n" + " " * (size + i), "output": f"{2 * i}\n", "testtype": "stdin"}
             for i in range(n_cases)]
    text = json.dumps(cases)
    blob = base64.b64encode(zlib.compress(pickle.dumps(text, protocol=4), 1)).decode()
    del cases, text
    (tmp_path / "blob.txt").write_text(blob)
    probe = os.path.join(HERE, "_memory_probe.py")
    r = subprocess.run([sys.executable, probe, str(tmp_path / "blob.txt")], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["kept"] == 15 and got["total"] == n_cases
    assert got["first_kept_output"] == f"{2 * 85}\n"
    decoded_mb = n_cases * size / 2**20
    # Peak = the 15 kept cases (30 MB) plus a few MB of buffers; decoding the naive way holds > 3x decoded_mb.
    assert got["peak_mb"] < got["kept_mb"] + 16 and got["peak_mb"] < 0.25 * decoded_mb, got


def mbpp_rows():
    return [{"task_id": 2, "text": "Write a function to find the shared elements from the given two lists.",
             "code": "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n"
                     "  return (res) ",
             "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                           "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
             "test_setup_code": "", "challenge_test_list": []},
            {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
             "code": "import math\ndef is_not_prime(n):\n    result = False\n    for i in range(2,int(math.sqrt(n)) + 1):"
                     "\n        if n % i == 0:\n            result = True\n    return result",
             "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                           "assert math.isclose(float(is_not_prime(35)), 1.0)"],
             "test_setup_code": "import math", "challenge_test_list": []}]


def test_mbpp_asserts_become_check_and_reference_passes(tmp_path):
    root = tmp_path / "mbpp"
    write_parquet(root / "full/test-00000-of-00001.parquet", mbpp_rows())
    write_configs(root, {"full": ["test"]})
    out = tmp_path / "mbpp.jsonl"
    assert prepare("--dataset", "mbpp", "--path", root, "--output", out, "--report", tmp_path / "r.json") == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["capped_problems"] == 0 and rep["cases_cut_by_cap"] == 0  # one assert test holds all the asserts
    probs = read(out)
    assert [p["tests"]["entry_point"] for p in probs] == ["similar_elements", "is_not_prime"]
    assert "assert is_not_prime(2) == False" in probs[1]["prompt"]
    for p in probs:
        assert passes(p, p["canonical_solution"], tmp_path)
        assert not passes(p, p["canonical_solution"].replace("&", "|").replace("result = True", "pass"), tmp_path)


def test_codecontests_codeforces_kodcode_livebench(tmp_path):
    cc = tmp_path / "code_contests"
    write_parquet(cc / "data/test-00000-of-00001.parquet", [{
        "name": "1_A. Sum", "description": "Print a+b.", "source": 2, "difficulty": 7,
        "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
        "private_tests": {"input": ["10 20\n"], "output": ["30\n"]},
        "generated_tests": {"input": ["-5 5\n"], "output": ["0\n"]},
        "solutions": {"language": [2, 3], "solution": ["int main(){}", ADD_STDIN]},
        "time_limit": {"seconds": 2, "nanos": 500000000}, "memory_limit_bytes": 268435456, "cf_rating": 800}])
    out = tmp_path / "cc.jsonl"
    assert prepare("--dataset", "codecontests", "--path", cc, "--output", out) == 0
    (p,) = read(out)
    assert p["time_limit_s"] == 2.5 and p["memory_mb"] == 256 and len(p["tests"]["cases"]) == 3
    assert passes(p, p["canonical_solution"], tmp_path)

    cf = tmp_path / "codeforces"
    base = {"contest_id": 1, "index": "A", "title": "Sum", "description": "Add.", "input_format": "Two ints.",
            "output_format": "Their sum.", "note": None, "examples": [{"input": "1 2\n", "output": "3\n"}],
            "official_tests": [{"input": i, "output": o} for i, o in ADD_CASES], "official_tests_complete": True,
            "time_limit": 1.0, "memory_limit": 256.0, "interaction_format": None, "input_mode": "stdio",
            "generated_checker": None, "rating": 800}
    write_parquet(cf / "data/test-00000-of-00001.parquet", [
        {**base, "id": "1/A"}, {**base, "id": "2/B", "interaction_format": "Interact."},
        {**base, "id": "3/C", "generated_checker": "def check(): pass"}])
    out = tmp_path / "cf.jsonl"
    assert prepare("--dataset", "codeforces", "--path", cf, "--output", out, "--report", tmp_path / "r.json") == 0
    (p,) = read(out)
    assert p["id"] == "codeforces/1/A" and "Their sum." in p["prompt"] and passes(p, ADD_STDIN, tmp_path)
    assert set(json.loads((tmp_path / "r.json").read_text())["dropped"]) == {
        "no usable tests: interactive problem", "no usable tests: needs a special checker (answers are not unique)"}

    kc = tmp_path / "kodcode"
    test_code = ("from solution import add\nimport pytest\n\ndef test_add():\n    assert add(1, 2) == 3\n\n"
                 "def test_raises():\n    with pytest.raises(TypeError):\n        add(1, 'a')\n")
    write_parquet(kc / "data/train-00000-of-00001.parquet", [{
        "version": "V1", "style": "instruct", "subset": "Leetcode", "question_id": "Leetcode_1",
        "question": "Write add(a, b).", "solution": ADD_FN, "test": test_code,
        "test_info": [{"function_name": "add", "parameter_list": "(a, b)", "function_declaration": "def add(a, b):",
                       "docstring": None}], "gpt_difficulty": "easy"}])
    out = tmp_path / "kc.jsonl"
    assert prepare("--dataset", "kodcode", "--path", kc, "--output", out, "--no-decontaminate") == 0
    (p,) = read(out)
    assert "from solution" not in p["tests"]["code"] and passes(p, p["canonical_solution"], tmp_path)
    assert not passes(p, ADD_FN.replace("a + b", "a * b"), tmp_path)

    lb = tmp_path / "livebench.jsonl"
    orig = {"question_content": "Return indices of two numbers summing to target.",
            "starter_code": lcb_row("x", "2024-01-01", False)["starter_code"], "metadata": '{"func_name": "twoSum"}'}
    write_jsonl(lb, [{**{k: v for k, v in lcb_row("x", "2024-01-01", False).items()
                         if k in ("public_test_cases", "private_test_cases")},
                      "question_id": "abc", "category": "coding", "task": "LCB_generation", "turns": ["prompt"],
                      "original_json": orig, "release_date": "2024-06-24", "solution": TWO_SUM}])
    out = tmp_path / "lb.jsonl"
    assert prepare("--dataset", "livebench", "--data-files", lb, "--output", out) == 0
    (p,) = read(out)
    assert p["tests"]["fn_name"] == "twoSum" and passes(p, p["canonical_solution"], tmp_path)
    assert p["import_header"] == "lcb"


def test_humaneval_offline_all_canonical_pass(tmp_path):
    out = tmp_path / "he.jsonl"
    assert prepare("--dataset", "humaneval", "--output", out) == 0
    probs = read(out)
    assert len(probs) == 164 and all(p["role"] == "eval" and p["revision"] for p in probs)
    for p in probs[:20]:
        assert passes(p, p["canonical_solution"], tmp_path), p["id"]


def reword(text: str) -> str:
    for a, b in [("Return", "Give back"), ("return", "give back"), ("list", "array"), ("given", "provided"),
                 ("Check if", "Determine whether"), ("numbers", "values")]:
        text = text.replace(a, b)
    return text


def test_decontamination_drops_planted_humaneval_problems(tmp_path):
    he = tmp_path / "humaneval.jsonl"
    assert prepare("--dataset", "humaneval", "--output", he) == 0
    planted = humaneval_problems()[:164:16]  # 11 problems, reworded into MBPP-style training rows
    rows = [{"task_id": 1000 + i, "text": "Write a function as follows. " + reword(p.starter_code),
             "code": p.extra["canonical_solution"], "test_list": [f"assert callable({p.tests['entry_point']})"],
             "test_setup_code": "", "challenge_test_list": []} for i, p in enumerate(planted)]
    rows += mbpp_rows()
    root = tmp_path / "mbpp"
    write_parquet(root / "full/train-00000-of-00001.parquet", rows)
    write_configs(root, {"full": ["train"]})
    out = tmp_path / "mbpp_train.jsonl"
    assert prepare("--dataset", "mbpp", "--split", "train", "--path", root, "--output", out,
                   "--report", tmp_path / "r.json") == 0  # humaneval.jsonl beside it is found by default
    kept = [p["id"] for p in read(out)]
    assert kept == ["mbpp/2", "mbpp/3"]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert sorted(c["eval_id"] for c in rep["contaminated"]) == sorted(p.id for p in planted)
    assert rep["dropped"] == {"overlaps an evaluation problem": len(planted)}
    # Explicit opt-out keeps them; an explicit file works from anywhere.
    out2 = tmp_path / "sub" / "m.jsonl"
    prepare("--dataset", "mbpp", "--split", "train", "--path", root, "--output", out2)
    assert len(read(out2)) == len(rows)
    out3 = tmp_path / "sub" / "m3.jsonl"
    prepare("--dataset", "mbpp", "--split", "train", "--path", root, "--output", out3, "--decontaminate-against", he)
    assert len(read(out3)) == 2


def test_resume_skips_done_and_errors_are_one_line(deepcoder_dir, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    prepare("--dataset", "deepcoder", "--path", deepcoder_dir, "--source", "taco", "--output", out)
    with open(out, "rb+") as f:  # a killed run: last line torn
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(data[: data.rindex(b"\n", 0, len(data) - 1) + 1] + b'{"id": "deepc')
    prepare("--dataset", "deepcoder", "--path", deepcoder_dir, "--source", "taco", "--output", out)
    assert [p["id"] for p in read(out)] == ["deepcoder/taco/train/0", "deepcoder/taco/train/1"]
    capsys.readouterr()
    assert prepare("--dataset", "deepcoder", "--path", tmp_path / "nope", "--output", tmp_path / "x.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codescaler prepare: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "x.jsonl").exists()
    assert prepare("--dataset", "lcb", "--release", "v9", "--path", tmp_path, "--output", tmp_path / "y.jsonl") == 2
    assert "unknown LiveCodeBench release" in capsys.readouterr().err


def test_decontamination_separates_reworded_from_unrelated():
    """Calibration: reworded HumanEval statements score >= 0.5, unrelated HumanEval statements stay < 0.3."""
    from codescaler.decontam import DecontamConfig, EvalIndex

    he = humaneval_problems()
    index = EvalIndex(DecontamConfig(threshold=0.0, min_shared=1))
    for p in he[:82]:
        index.add(p.id, p.prompt)
    planted = [index.best("Write a function as follows. " + reword(p.starter_code)) for p in he[:82]]
    unrelated = [index.best("Write a function as follows. " + p.starter_code) for p in he[82:]]
    assert all(m is not None and m.score >= 0.5 for m in planted)
    # HumanEval/56 and /61 are near-twins (bracketing with "<>" vs "()"); the rewording of 56 matches 61 best.
    assert [p.id for m, p in zip(planted, he) if m.eval_id != p.id] == ["HumanEval/56"]
    assert max(m.score if m else 0.0 for m in unrelated) < 0.3


def test_deepcoder_data_files_need_their_source(deepcoder_dir, tmp_path, capsys):
    files = [str(deepcoder_dir / "taco/train-00000-of-00001.parquet")]
    out = tmp_path / "o.jsonl"
    assert prepare("--dataset", "deepcoder", "--data-files", *files, "--output", out, "--no-decontaminate") == 2
    assert "name the files' --source" in capsys.readouterr().err and not out.exists()
    assert prepare("--dataset", "deepcoder", "--data-files", *files, "--source", "taco", "--output", out,
                   "--no-decontaminate") == 0
    assert [p["id"] for p in read(out)] == ["deepcoder/taco/train/0", "deepcoder/taco/train/1"]  # once each


def test_memo_bombs_and_corrupt_blobs_drop_the_problem_not_the_run(tmp_path):
    """A < 1 KB pickle whose memo repeats one 500 KB string 2000 times, JSON nested 5000 deep, and a string
    length of 2**64 - 1: each problem is dropped with its reason, the others are written."""
    import struct

    from codescaler.safe_decode import BlobError, lcb_blob_stream

    def s(text):
        b = text.encode()
        return b"X" + struct.pack("<I", len(b)) + b

    def case(first):  # {input: S, output: S, testtype: stdin}, S memoised once as memo 0
        if first:
            return b"}(" + s("input") + b"q\x01" + s("x" * 500_000) + b"q\x00" + s("output") + b"q\x02h\x00" \
                + s("testtype") + b"q\x04" + s("stdin") + b"q\x03u"
        return b"}(h\x01h\x00h\x02h\x00h\x04h\x03u"

    bomb = b"\x80\x02](" + case(True) + case(False) * 1999 + b"e."
    bomb_blob = base64.b64encode(zlib.compress(bomb, 9)).decode()
    assert len(bomb_blob) < 2000
    with pytest.raises(BlobError, match="memo bomb"):
        for _ in lcb_blob_stream(bomb_blob).iter_array():
            pass
    deep = base64.b64encode(zlib.compress(pickle.dumps("[" * 5000 + "]" * 5000))).decode()
    overflow = base64.b64encode(zlib.compress(b"\x80\x04\x8d" + struct.pack("<Q", 2**64 - 1))).decode()
    root = tmp_path / "lcb"
    write_jsonl(root / "test.jsonl", [lcb_row("bomb", "2024-01-01", private=bomb_blob),
                                      lcb_row("deep", "2024-01-01", private=deep),
                                      lcb_row("overflow", "2024-01-01", private=overflow),
                                      lcb_row("good", "2024-01-01")])
    out = tmp_path / "o.jsonl"
    assert prepare("--dataset", "lcb", "--path", root, "--release", "v1", "--output", out,
                   "--report", tmp_path / "r.json") == 0
    assert [p["id"] for p in read(out)] == ["lcb/good"]
    dropped = json.loads((tmp_path / "r.json").read_text())["dropped"]
    assert sum(dropped.values()) == 3 and all(r.startswith("no usable tests: test blob") for r in dropped), dropped


def test_malformed_rows_are_dropped_and_counted_and_all_malformed_is_an_error(tmp_path, capsys):
    cf = tmp_path / "cf.jsonl"
    good = {"id": "1/A", "contest_id": 1, "index": "A", "title": "Sum", "description": "Add.",
            "input_format": "Two ints.", "output_format": "Their sum.", "note": None, "examples": [],
            "official_tests": [{"input": i, "output": o} for i, o in ADD_CASES], "official_tests_complete": True,
            "time_limit": 1.0, "memory_limit": 256.0, "interaction_format": None, "input_mode": "stdio",
            "generated_checker": None, "rating": 800}
    write_jsonl(cf, [{**good, "memory_limit": "256 megabytes"}, good])
    out = tmp_path / "o.jsonl"
    assert prepare("--dataset", "codeforces", "--data-files", cf, "--output", out, "--no-decontaminate") == 0
    err = capsys.readouterr().err
    assert [p["id"] for p in read(out)] == ["codeforces/1/A"]
    assert "dropped 1: malformed row" in err and "ValueError" in err and "Traceback" not in err
    write_jsonl(cf, [{**good, "memory_limit": "256 megabytes"}])
    assert prepare("--dataset", "codeforces", "--data-files", cf, "--output", tmp_path / "o2.jsonl") == 2
    assert "every row was malformed" in capsys.readouterr().err and not (tmp_path / "o2.jsonl").exists()
    (tmp_path / "empty.jsonl").write_text("")
    assert prepare("--dataset", "codeforces", "--data-files", tmp_path / "empty.jsonl", "--output",
                   tmp_path / "o3.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read" in err and len(err.splitlines()) == 1 and not (tmp_path / "o3.jsonl").exists()


def test_kodcode_prompt_names_the_function_its_tests_call(tmp_path):
    kc = tmp_path / "kodcode"
    test_code = "from solution import longest_run\n\ndef test_it():\n    assert longest_run([1, 1, 2]) == 2\n"
    write_parquet(kc / "data/train-00000-of-00001.parquet", [{
        "version": "V1", "style": "instruct", "subset": "Leetcode", "question_id": "Leetcode_2",
        "question": "Given a list of integers, return the length of the longest run of equal values.",
        "solution": "def longest_run(xs):\n    return 2\n", "test": test_code,
        "test_info": [{"function_name": "longest_run", "parameter_list": "(xs)",
                       "function_declaration": "def longest_run(xs):", "docstring": None}], "gpt_difficulty": "easy"}])
    out = tmp_path / "kc.jsonl"
    assert prepare("--dataset", "kodcode", "--path", kc, "--output", out, "--no-decontaminate") == 0
    (p,) = read(out)
    assert "`longest_run`" in p["prompt"] and "Solution" not in p["prompt"]


@pytest.mark.parametrize("args, message", [
    (["--release", "v0"], "unknown LiveCodeBench release"),
    (["--release", "release_v9"], "unknown LiveCodeBench release"),
    (["--release", "v3_v1"], "unknown LiveCodeBench release"),
    (["--start-date", "2024-8-1"], "use YYYY-MM-DD"),
    (["--end-date", "2024/08/01"], "use YYYY-MM-DD"),
])
def test_lcb_release_and_dates_are_checked(tmp_path, capsys, args, message):
    root = tmp_path / "lcb"
    write_jsonl(root / "test.jsonl", [lcb_row("a", "2024-09-15")])
    assert prepare("--dataset", "lcb", "--path", root, "--output", tmp_path / "o.jsonl", *args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()


def test_release_latest_and_dates_only_for_lcb(tmp_path, capsys):
    from codescaler.sources import LCB_FILES, lcb_data_files

    assert lcb_data_files("release_latest") == LCB_FILES and lcb_data_files("v2_v3") == LCB_FILES[1:3]
    assert prepare("--dataset", "mbpp", "--start-date", "2024-01-01", "--output", tmp_path / "o.jsonl") == 2
    assert "use --dataset lcb" in capsys.readouterr().err


def test_kodcode_entry_point_is_imported_not_a_method_from_test_info():
    from codescaler.sources import Ctx, kodcode_row

    row = {"question_id": "Q", "question": "Implement a Stack class.", "solution": "", "style": "", "subset": "",
           "test": "from solution import Stack\n\ndef test_push():\n    s = Stack()\n    s.push(1)\n",
           "test_info": [{"function_name": "push"}, {"function_name": "__init__"}]}
    p = kodcode_row(row, 0, Ctx("kodcode", "", "train", "r", 0, "train", 1 << 20))
    assert p.tests["entry_point"] == "Stack"
