"""Each source dataset: where it lives on the hub, how its rows load, and row -> `Problem`.

Rows are read with `datasets.load_dataset(..., streaming=True)`, the same
call for the hub id and for a local copy (`path`), so tests exercise the real
code path. A converter raises `TestFormatError` when a row has no usable
tests; the caller drops it (or keeps it with `tests: null`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterator

from codescaler.data import policy_prompt
from codescaler.records import Problem, UserError
from codescaler.safe_decode import DEFAULT_MAX_DECODED_BYTES, BlobError, UnsafePickleError, lcb_blob_stream
from codescaler.testcases import (Converted, TestFormatError, fn_name_from_starter, from_case_list, from_io_lists,
                                  from_json_text, imported_names, mbpp_check, pytest_check)

DEEPCODER_SPLITS = {"lcbv5": ("train", "test"), "primeintellect": ("train",), "taco": ("train",),
                    "codeforces": ("test",)}
LCB_FILES = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]
# Problems whose reference grader is LiveCodeBench's (LCB itself, LiveBench's copy of it, DeepCoder's lcbv5 through
# rllm's) run their candidates under its import header (`SandboxConfig.import_header`, the Problem's `import_header`).
LCB_HEADER = {"import_header": "lcb"}


@dataclass
class Ctx:
    """What a converter needs besides the row."""

    dataset: str
    source: str
    split: str
    revision: str
    max_tests: int
    role: str
    max_blob_bytes: int = DEFAULT_MAX_DECODED_BYTES


@dataclass
class Spec:
    repo: str
    splits: tuple[str, ...]
    convert: Callable[[dict, int, Ctx], Problem]
    sources: tuple[str, ...] = ("",)  # configs (`name=`) to read; "" = the default
    train_splits: tuple[str, ...] = ()  # splits that are training data (decontaminated)


def _json_field(x, default=None):
    if x is None or x == "":
        return default
    if isinstance(x, str):
        try:
            return json.loads(x)
        except json.JSONDecodeError:
            return default
    return x


def _problem(ctx: Ctx, pid: str, statement: str, conv: Converted | None, starter: str | None = None,
             extra: dict | None = None, **kw) -> Problem:
    tests = conv.tests if conv else None
    kind = tests["kind"] if tests else None
    prompt = policy_prompt(statement, starter, stdin=kind == "stdio",
                           fn_name=tests.get("fn_name") if kind == "call" else None,
                           entry_point=tests.get("entry_point") if kind == "assert" else None)
    meta = {"revision": ctx.revision, "dataset": ctx.dataset, "split": ctx.split, "role": ctx.role}
    if conv:
        meta["tests_total"] = conv.total
        if conv.capped:
            meta["tests_capped"] = True
    return Problem(id=pid, prompt=prompt, tests=tests, starter_code=starter or None,
                   source=ctx.source or ctx.dataset, extra={**meta, **(extra or {})}, **kw)


def _convert(fn: Callable[[], Converted]) -> Converted:
    try:
        return fn()
    except TestFormatError:
        raise
    except (BlobError, UnsafePickleError, RecursionError, OverflowError, ValueError, EOFError, MemoryError) as e:
        # a corrupt or hostile blob (JSON nested 5000 deep, a length of 2**64) is the problem's, not the run's
        raise TestFormatError(f"test blob: {type(e).__name__}: {str(e)[:160]}") from None


# ---------------------------------------------------------------- converters


def deepcoder_row(row: dict, index: int, ctx: Ctx) -> Problem:
    meta = _json_field(row.get("metadata"), {}) or {}
    starter = row.get("starter_code") or None
    fn_name = (meta.get("func_name") if isinstance(meta, dict) else None) or fn_name_from_starter(starter)
    pid = f"deepcoder/{ctx.source}/{ctx.split}/{index}"
    conv = _convert(lambda: from_json_text(row.get("tests") or "", ctx.max_tests, fn_name))
    return _problem(ctx, pid, row["problem"], conv, starter, LCB_HEADER if ctx.source == "lcbv5" else None)


def lcb_tests(public: str | None, private: str | None, fn_name: str | None, ctx: Ctx) -> Converted:
    """Public + private LiveCodeBench tests, private ones decoded safely and streamed."""
    streams = []
    try:
        for blob in (public, private):
            if blob:
                streams.append(lcb_blob_stream(blob, ctx.max_blob_bytes))
        return _convert(lambda: from_case_list(chain.from_iterable(s.iter_array() for s in streams),
                                               ctx.max_tests, fn_name))
    except TestFormatError:
        raise
    except (BlobError, UnsafePickleError, RecursionError, OverflowError, ValueError, EOFError, MemoryError) as e:
        raise TestFormatError(f"test blob: {type(e).__name__}: {str(e)[:160]}") from None
    finally:
        for s in streams:
            s.close()


def lcb_row(row: dict, index: int, ctx: Ctx) -> Problem:
    meta = _json_field(row.get("metadata"), {}) or {}
    starter = row.get("starter_code") or None
    fn_name = meta.get("func_name") or fn_name_from_starter(starter)
    conv = lcb_tests(row.get("public_test_cases"), row.get("private_test_cases"), fn_name, ctx)
    extra = {**LCB_HEADER, **{k: row.get(k) for k in ("question_title", "platform", "contest_id", "difficulty")}}
    extra["contest_date"] = str(row.get("contest_date") or "") or None  # datasets may parse it to a datetime
    return _problem(ctx, f"lcb/{row['question_id']}", row["question_content"], conv, starter, extra)


def livebench_row(row: dict, index: int, ctx: Ctx) -> Problem:
    orig = _json_field(row.get("original_json"), {}) or {}
    meta = _json_field(orig.get("metadata"), {}) or {}
    completion = row.get("task") == "coding_completion"
    starter = (row.get("partial_solution") if completion else None) or orig.get("starter_code") or None
    fn_name = meta.get("func_name") or fn_name_from_starter(orig.get("starter_code"))
    statement = orig.get("question_content") or (row.get("turns") or [""])[0]
    conv = lcb_tests(row.get("public_test_cases"), row.get("private_test_cases"), fn_name, ctx)
    extra = {**LCB_HEADER, "task": row.get("task"),
             "release_date": str(row.get("livebench_release_date") or row.get("release_date"))}
    if row.get("solution"):
        extra["canonical_solution"] = row["solution"]
    return _problem(ctx, f"livebench/{row['question_id']}", statement, conv, starter, extra)


def mbpp_row(row: dict, index: int, ctx: Ctx) -> Problem:
    text = row.get("text") or row.get("prompt") or ""
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    tests = list(row.get("test_list") or [])
    statement = text.strip() + "\nYour code should pass these tests:\n\n" + "\n".join(tests)
    conv = Converted(mbpp_check(tests, setup, row.get("code")), len(tests), len(tests))
    return _problem(ctx, f"mbpp/{row['task_id']}", statement, conv,
                    extra={"canonical_solution": row.get("code"), "entry_point": conv.tests["entry_point"]})


def codecontests_row(row: dict, index: int, ctx: Ctx) -> Problem:
    ins, outs = [], []
    for key in ("public_tests", "private_tests", "generated_tests"):
        t = row.get(key) or {}
        ins += list(t.get("input") or [])
        outs += list(t.get("output") or [])
    conv = _convert(lambda: from_io_lists(ins, outs, ctx.max_tests))
    tl = row.get("time_limit") or {}
    seconds = (tl.get("seconds") or 0) + (tl.get("nanos") or 0) / 1e9 if isinstance(tl, dict) else None
    mem = row.get("memory_limit_bytes")
    sols = row.get("solutions") or {}
    ref = next((s for lang, s in zip(sols.get("language") or [], sols.get("solution") or []) if lang == 3), None)
    extra = {"difficulty": row.get("difficulty"), "cf_rating": row.get("cf_rating")}
    if ref:
        extra["canonical_solution"] = ref
    return _problem(ctx, f"codecontests/{row['name']}", row["description"], conv, extra=extra,
                    time_limit_s=seconds or None, memory_mb=int(mem) >> 20 if mem else None)


def codeforces_row(row: dict, index: int, ctx: Ctx) -> Problem:
    if row.get("interaction_format"):
        raise TestFormatError("interactive problem")
    if row.get("generated_checker"):
        raise TestFormatError("needs a special checker (answers are not unique)")
    if row.get("input_mode") not in (None, "", "stdio"):
        raise TestFormatError(f"reads its input from {row.get('input_mode')}")
    tests = row.get("official_tests") or row.get("examples") or []
    conv = _convert(lambda: from_io_lists([t["input"] for t in tests], [t["output"] for t in tests], ctx.max_tests))
    parts = [row.get("title") or "", row.get("description") or ""]
    for head, key in (("Input", "input_format"), ("Output", "output_format"), ("Note", "note")):
        if row.get(key):
            parts.append(f"{head}\n{row[key]}")
    for i, ex in enumerate(row.get("examples") or [], 1):
        parts.append(f"Example {i}\nInput:\n{ex['input']}\nOutput:\n{ex['output']}")
    extra = {"rating": row.get("rating"), "official_tests_complete": row.get("official_tests_complete")}
    tl, mem = row.get("time_limit"), row.get("memory_limit")
    return _problem(ctx, f"codeforces/{row['id']}", "\n\n".join(p for p in parts if p), conv, extra=extra,
                    time_limit_s=float(tl) if tl else None, memory_mb=int(mem) if mem else None)


def kodcode_row(row: dict, index: int, ctx: Ctx) -> Problem:
    info = _json_field(row.get("test_info"), []) or []
    named = [t.get("function_name") for t in info if isinstance(t, dict) and t.get("function_name")]
    imported = imported_names(row.get("test") or "")
    # the entry point must be a top-level name of the solution: one the tests import (test_info may list a
    # class's methods first, e.g. push or __init__)
    entry = next((n for n in imported if n in named), imported[0] if imported else named[0] if named else None)
    if not entry:
        raise TestFormatError("no function name in test_info")
    conv = Converted(pytest_check(row.get("test") or "", entry), 1, 1)
    extra = {"canonical_solution": row.get("solution"), "style": row.get("style"), "subset": row.get("subset")}
    return _problem(ctx, f"kodcode/{row['question_id']}", row["question"], conv, extra=extra)


SPECS: dict[str, Spec] = {
    "deepcoder": Spec("agentica-org/DeepCoder-Preview-Dataset", ("train", "test"), deepcoder_row,
                      tuple(DEEPCODER_SPLITS), ("train",)),
    "kodcode": Spec("KodCode/KodCode-V1", ("train",), kodcode_row, train_splits=("train",)),
    "lcb": Spec("livecodebench/code_generation_lite", ("test",), lcb_row),
    "mbpp": Spec("google-research-datasets/mbpp", ("train", "validation", "test", "prompt"), mbpp_row,
                 ("full",), ("train", "validation", "prompt")),
    "codecontests": Spec("deepmind/code_contests", ("train", "valid", "test"), codecontests_row,
                         train_splits=("train", "valid")),
    "codeforces": Spec("open-r1/codeforces", ("train", "test"), codeforces_row, train_splits=("train",)),
    "livebench": Spec("livebench/coding", ("test",), livebench_row),
}


def lcb_data_files(release: str) -> list[str]:
    """`release_vN` -> test.jsonl .. testN.jsonl (cumulative); `vN` -> only testN.jsonl; `vN_vM` -> N..M."""
    r, last = release.strip().lower(), len(LCB_FILES)
    if r == "release_latest":  # LiveCodeBench's own name for the newest cumulative release
        return list(LCB_FILES)
    try:
        if r.startswith("release_v"):
            a, b = 1, int(r[len("release_v"):])
        elif "_" in r and r.startswith("v"):
            a, b = (int(x.removeprefix("v")) for x in r.split("_"))
        elif r.startswith("v"):
            a = b = int(r[1:])
        else:
            a, b = 0, -1
    except ValueError:
        a, b = 0, -1
    if 1 <= a <= b <= last:
        return LCB_FILES[a - 1:b]
    raise UserError(f"unknown LiveCodeBench release {release!r}; use release_v1..release_v{last}, release_latest, "
                    f"v1..v{last} or vN_vM with N <= M (e.g. v4_v{last})")


def iter_rows(dataset: str, source: str, split: str, revision: str | None, path: str | None,
              data_files: list[str] | None, release: str) -> Iterator[dict]:
    """Rows of one (dataset, source, split), streamed through `datasets.load_dataset`."""
    import datasets

    spec = SPECS[dataset]
    kw: dict = {"split": split, "streaming": True}
    if data_files:
        fmt = "parquet" if all(f.endswith(".parquet") for f in data_files) else "json"
        target, kw["data_files"] = fmt, {split: list(data_files)}
    else:
        target = path or spec.repo
        if revision and not path:
            kw["revision"] = revision
        if dataset == "lcb":
            kw["data_files"] = {split: lcb_data_files(release)}
        elif source:
            kw["name"] = source
    try:
        ds = datasets.load_dataset(target, **kw)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise UserError(f"cannot load {target} ({', '.join(f'{k}={v}' for k, v in kw.items())}): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    yield from ds
