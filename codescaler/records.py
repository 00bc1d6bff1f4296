"""Typed records and the one JSONL reader/writer (see SPEC.md, "Records").

Every record keeps unknown keys in `extra` and writes them back untouched.
`stream_jsonl` reads `.jsonl` and `.jsonl.gz`; `JsonlWriter` appends and
flushes each line; `pending` gives the inputs a rerun still has to do.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import json
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator


class RecordError(ValueError):
    """Bad input: names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, message: str):
        self.path, self.line, self.field_name = path, line, field_name
        where = str(path) + (f":{line}" if line is not None else "")
        what = f" field '{field_name}'" if field_name else ""
        super().__init__(f"{where}:{what} {message}")


class Status(str, enum.Enum):
    """Verdict statuses. `SANDBOX_ERROR` is infrastructure, never wrong code."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    NO_CODE = "no_code"
    SYNTAX_ERROR = "syntax_error"
    SANDBOX_ERROR = "sandbox_error"


def _split(cls, d: dict, path: str = "<dict>", line: int | None = None) -> dict:
    """Check required fields and types of `d` against dataclass `cls`; unknown keys go to `extra`."""
    if not isinstance(d, dict):
        raise RecordError(path, line, None, f"expected a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name in d:
            kwargs[name] = d[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(path, line, name, "is missing")
    for name, types in getattr(cls, "_types", {}).items():
        if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], types):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise RecordError(path, line, name, f"must be {want}, got {type(kwargs[name]).__name__}")
    kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
    return kwargs


class _Record:
    """Shared dict conversion: known fields first, then `extra` carried through."""

    extra: dict

    @classmethod
    def from_dict(cls, d: dict, path: str = "<dict>", line: int | None = None):
        return cls(**_split(cls, d, path, line))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in out.items()}
        return {**out, **self.extra}


def tests_error(tests) -> tuple[str, str] | None:
    """The first way `tests` breaks SPEC's three kinds, as (field, message); None when runnable (or null)."""
    if tests is None:
        return None
    if not isinstance(tests, dict):
        return "tests", f"must be an object or null, got {type(tests).__name__}"
    kind = tests.get("kind")
    if kind not in ("stdio", "call", "assert"):
        return "tests.kind", f"is {kind!r}; use stdio, call or assert"
    named = {"call": ("fn_name",), "assert": ("entry_point", "code")}.get(kind, ())
    for name in named:
        if not isinstance(tests.get(name), str) or not tests[name]:
            return f"tests.{name}", "must be a non-empty string"
    if kind == "assert":
        return None
    cases = tests.get("cases")
    if not isinstance(cases, list) or not cases:
        return "tests.cases", "must be a non-empty list (a problem with no cases would pass any code)"
    for i, case in enumerate(cases):
        where = f"tests.cases[{i}]"
        if not isinstance(case, dict):
            return where, f"must be an object, got {type(case).__name__}"
        if kind == "stdio":
            for name in ("input", "output"):
                if not isinstance(case.get(name), str):
                    return f"{where}.{name}", f"must be a string, got {type(case.get(name)).__name__}"
        else:
            if not isinstance(case.get("args"), list):
                return f"{where}.args", f"must be a list, got {type(case.get('args')).__name__}"
            if "expected" not in case:
                return f"{where}.expected", "is missing"
    return None


@dataclass
class Problem(_Record):
    id: str
    prompt: str
    tests: dict | None = None
    starter_code: str | None = None
    source: str | None = None
    time_limit_s: float | None = None
    memory_mb: int | None = None
    extra: dict = field(default_factory=dict)
    _types = {"id": str, "prompt": str, "tests": dict, "starter_code": str, "source": str,
              "time_limit_s": (int, float), "memory_mb": int}

    @classmethod
    def from_dict(cls, d: dict, path: str = "<dict>", line: int | None = None):
        p = super().from_dict(d, path, line)
        bad = tests_error(p.tests)
        if bad is not None:
            raise RecordError(path, line, *bad)
        for name in ("time_limit_s", "memory_mb"):
            value = getattr(p, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise RecordError(path, line, name, f"is {value!r}; use a positive number, or leave it out")
        return p


@dataclass
class Response(_Record):
    problem_id: str
    response: str
    sample: int | None = None
    extra: dict = field(default_factory=dict)
    _types = {"problem_id": str, "response": str, "sample": int}


@dataclass
class Verdict(_Record):
    status: Status
    passed: bool
    cases_passed: int
    cases_total: int
    seconds: float
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.status = Status(self.status)
        # Only a harness-reported pass of every case is a pass.
        if self.passed and (self.status is not Status.PASSED or self.cases_passed != self.cases_total):
            raise ValueError(f"inconsistent verdict: passed=True with status {self.status.value}")


@dataclass
class Scored(_Record):
    code: str | None
    rm_score: float | None
    reward: float
    truncated: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Pair(_Record):
    problem_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_pass_rate: float = 1.0
    rejected_pass_rate: float = 0.0
    extra: dict = field(default_factory=dict)
    _types = {"problem_id": str, "prompt": str, "chosen": str, "rejected": str,
              "chosen_pass_rate": (int, float), "rejected_pass_rate": (int, float)}


# ---------------------------------------------------------------- JSONL I/O


def _open_text(path: str, mode: str):
    if str(path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="\n")
    return open(path, mode, encoding="utf-8", newline="\n")


def stream_jsonl(path: str, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line of a .jsonl or .jsonl.gz file.

    Raises RecordError naming the line on bad UTF-8 or bad JSON. With
    `tolerate_torn_tail`, a last line cut off without its newline (a killed
    writer) is skipped instead: that is how our own outputs are resumed.
    """
    path = str(path)
    if not os.path.exists(path):
        raise RecordError(path, None, None, "no such file")
    try:
        with open(path, "rb") as f:
            lines = _gzip_lines(f) if path.endswith(".gz") else f
            for n, raw in enumerate(lines, 1):
                if not raw.strip():
                    continue
                torn = not raw.endswith(b"\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RecordError(path, n, None, f"is not valid UTF-8 ({e.reason} at byte {e.start})") from None
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    if torn and tolerate_torn_tail:
                        return
                    raise RecordError(path, n, None, f"is not valid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise RecordError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
                yield n, obj
    except _TornGzip:
        if not tolerate_torn_tail:
            raise RecordError(path, None, None,
                              "is cut off: its last gzip member has no end (a killed writer)") from None
    except (OSError, EOFError, zlib.error) as e:
        raise RecordError(path, None, None, f"cannot be read ({e})") from None


class _TornGzip(Exception):
    """The last gzip member of a file ends without its trailer: a writer was killed mid-line or mid-member."""


def _gzip_lines(f) -> Iterator[bytes]:
    """The complete lines of every gzip member in binary file `f`, decompressed as they stream; raises _TornGzip
    (after the last complete line) when the last member is cut off. gzip.open would lose the lines a killed
    writer had already flushed, since it refuses the whole read that meets the missing end."""
    unzip, fed, parts = zlib.decompressobj(wbits=31), False, []  # parts: the current line so far
    while chunk := f.read(1 << 16):
        while chunk:
            data, fed, start = unzip.decompress(chunk), True, 0
            while (end := data.find(b"\n", start)) >= 0:
                parts.append(data[start:end + 1])
                yield b"".join(parts)
                parts, start = [], end + 1
            parts.append(data[start:])
            chunk = b""
            if unzip.eof:  # the next member (an appending run) starts in what this one left over
                chunk, unzip, fed = unzip.unused_data, zlib.decompressobj(wbits=31), False
    if fed:
        raise _TornGzip()
    if any(parts):
        yield b"".join(parts)


def check_verdict(d: dict, path: str, line: int | None) -> Verdict | None:
    """A row's `verdict` as a Verdict (None when it has none), or a RecordError naming the file and line
    (eval, select and pairs read verdicts that another run wrote)."""
    v = d.get("verdict")
    if v is None:
        return None
    if not isinstance(v, dict):
        raise RecordError(path, line, "verdict", f"must be an object, got {type(v).__name__}")
    try:
        return Verdict.from_dict(v, path, line)
    except RecordError:
        raise
    except ValueError as e:  # an unknown status, or passed=true without a pass
        raise RecordError(path, line, "verdict", str(e)) from None


def read_records(path: str, cls) -> list:
    """Read every line of `path` as `cls` (Problem, Response, Pair...), validating fields."""
    return [cls.from_dict(d, str(path), n) for n, d in stream_jsonl(path)]


def read_problems(path: str) -> dict[str, Problem]:
    """Problems by id; a repeated id is an error."""
    out: dict[str, Problem] = {}
    for n, d in stream_jsonl(path):
        p = Problem.from_dict(d, str(path), n)
        if p.id in out:
            raise RecordError(str(path), n, "id", f"repeats problem id {p.id!r}")
        out[p.id] = p
    return out


def read_responses(path: str, problems: dict[str, Problem] | None = None) -> list[tuple[int, dict]]:
    """Raw response dicts with their line numbers, validated as Response (and against `problems`)."""
    out = []
    for n, d in stream_jsonl(path):
        r = Response.from_dict(d, str(path), n)
        if problems is not None and r.problem_id not in problems:
            raise RecordError(str(path), n, "problem_id", f"names unknown problem {r.problem_id!r}")
        out.append((n, d))
    return out


def _json_line(row: dict) -> str:
    """One JSONL line, UTF-8 text as is; a lone surrogate (valid JSON "\\ud800", not encodable UTF-8) makes the
    line ASCII with escapes, which reads back to the same string."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line + "\n"


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    """Write a whole file at once, atomically (temp file + rename)."""
    tmp = f"{path}.tmp.{os.getpid()}" + (".gz" if str(path).endswith(".gz") else "")  # compressed like `path`
    with _open_text(tmp, "w") as f:
        for row in rows:
            f.write(_json_line(row))
    os.replace(tmp, path)


class JsonlWriter:
    """Append-only JSONL output that flushes every line.

    The file is opened on the first write, so a run that fails before
    producing anything leaves no file behind. A torn last line left by a
    killed earlier run is cut off before appending.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._f = None
        self.written = 0

    def write(self, row: dict) -> None:
        if self._f is None:
            d = os.path.dirname(self.path)
            if d:
                os.makedirs(d, exist_ok=True)
            _cut_torn_tail(self.path)
            self._f = _open_text(self.path, "a")
        self._f.write(_json_line(row))
        self._f.flush()
        self.written += 1

    def finish(self) -> None:
        """Call on success: an empty input still leaves an (empty) output file."""
        if self._f is None and not os.path.exists(self.path):
            _open_text(self.path, "w").close()
        self.close()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cut_torn_tail(path: str) -> None:
    """Drop a final line without newline, or from a .gz file the cut-off member's partial line."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    if path.endswith(".gz"):
        _repair_gzip(path)
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = pos - step + i + 1
                if cut != size:
                    f.truncate(cut)
                return
            pos -= step
        f.truncate(0)


def _repair_gzip(path: str) -> None:
    """Rewrite (atomically) a .gz output whose last member a killed writer cut off, keeping its complete lines;
    appending a new member after a cut one would leave both unreadable."""
    try:
        with open(path, "rb") as f:
            for _ in _gzip_lines(f):
                pass
        return  # whole
    except _TornGzip:
        pass
    except zlib.error as e:
        raise RecordError(path, None, None, f"cannot be read ({e})") from None
    tmp = f"{path}.tmp.{os.getpid()}.gz"
    with open(path, "rb") as f, gzip.open(tmp, "wb") as out:
        try:
            for line in _gzip_lines(f):
                if line.endswith(b"\n"):
                    out.write(line)
        except _TornGzip:
            pass
    os.replace(tmp, path)


def response_key(d: dict) -> tuple:
    """Identity of a response record for resuming: problem, sample and the text itself."""
    text = d.get("response", "")
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return (d.get("problem_id"), d.get("sample"), digest)


def pending(inputs: list, output_path: str, key: Callable[[Any], tuple] = response_key,
            item: Callable[[Any], dict] = lambda x: x) -> list:
    """The inputs that `output_path` does not hold yet (by `key`, counting repeats)."""
    if not output_path or not os.path.exists(output_path):
        return list(inputs)
    done = Counter(key(d) for _, d in stream_jsonl(output_path, tolerate_torn_tail=True))
    todo = []
    for x in inputs:
        k = key(item(x))
        if done[k] > 0:
            done[k] -= 1
        else:
            todo.append(x)
    return todo


def refuse_other_run(output_path: str, field_name: str, value, flag: str) -> None:
    """Before resuming `output_path`, check that its rows were made with the same `field_name` (e.g. the same
    model): a rerun with another model must not be counted as done by the first one's rows."""
    if not output_path or not os.path.exists(output_path):
        return
    for n, d in stream_jsonl(output_path, tolerate_torn_tail=True):
        if d.get(field_name) != value:
            raise UserError(f"{output_path}:{n}: made with {field_name} {d.get(field_name)!r}, not {value!r}; "
                            f"a rerun resumes only the same run: give another output path, or the same {flag}")


def model_id(model: str) -> str:
    """How a run names its model in its rows: a hub id as given, a local path made absolute."""
    return os.path.realpath(model) if os.path.exists(model) else model


class UserError(Exception):
    """A problem with what the user asked for (bad option, missing model): one line, no traceback."""
