"""Run candidate code against a Problem's tests in a sandbox and return a Verdict (SPEC.md, "Verdict").

Use from other stages::

    with Verifier(SandboxConfig(workers=2)) as v:
        verdicts = v.verify(problems, [(problem_id, code_or_None), ...])
    verify_batch(problems, items, config)   # the same, with a pool made and closed for you
    verify_one(problem, code, config)

Isolation (per warm worker, `isolation="bwrap"`): a bubblewrap sandbox started
as uid 65534 (root drops to it before starting bwrap, so even the kernel sees
nobody), with every namespace unshared (no network at all), only /usr (and the
interpreter's prefix) mounted read-only, a private tmpfs /tmp, a minimal /dev
and /proc, an environment of PATH only, and no view of the problem files, the
expected outputs, the caller's home or working directory. Inside it the harness
(`codescaler/harness.py`) runs each candidate run in a fresh process that is
pid 1 of its own user/pid/mount namespace, with its own /tmp and /proc, no
capabilities, and rlimits; at the end of every run everything else in the
sandbox is SIGKILLed. See harness.py for the per-run details.

Threat model. What a candidate can do is return values and print. The parent
(this module) compares them with expected outputs that never enter the
candidate's sandbox. Assert tests (`check(candidate)`) run in a second sandbox
(the judge) that calls the candidate over a per-run socket and only ever
receives plain values, and the judge's "passed" must carry a per-run secret
that only the parent and the judge know. Exit codes and printed text never mean
"passed". Not covered: kernel exploits (bwrap is not a VM), CPU side channels,
and resource use of the machine as a whole beyond the rlimits (no cgroups, so
`memory_mb` is an address-space limit per process and `max_procs` is per user
namespace). Fallbacks when bwrap cannot run: `unshare` (user+net+pid+mount
namespaces and rlimits, but the host file system stays visible read-only
through permissions only) and `none` (rlimits and uid 65534 only); each prints
one warning and notes itself in every verdict's `detail`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Iterator

from codescaler import harness
from codescaler.records import Problem, Status, Verdict

ISOLATIONS = ("auto", "bwrap", "unshare")
NOBODY = 65534
SANDBOX_PATH = "/usr/bin:/bin"
HARNESS_IN_SANDBOX = "/opt/codescaler/harness.py"


@dataclass
class SandboxConfig:
    """How candidates run. Per-problem `time_limit_s` / `memory_mb` override `timeout_s` / `memory_mb`."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1,
                         metadata={"help": "warm sandboxed workers running candidates in parallel (default: CPU count)"})
    timeout_s: float = field(default=5.0, metadata={"help": "time limit per test case in seconds (an assert test is one case)"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space limit of each candidate process, MiB"})
    output_limit: int = field(default=8 << 20, metadata={"help": "bytes a candidate may print (and return) per run"})
    disk_mb: int = field(default=64, metadata={"help": "size of the candidate's private /tmp and its largest file, MiB"})
    max_procs: int = field(default=64, metadata={"help": "processes+threads a candidate may have (RLIMIT_NPROC)"})
    isolation: str = field(default="auto", metadata={"help": "auto (bwrap, else the weaker unshare fallback), bwrap or unshare"})
    python: str | None = field(default=None, metadata={
        "help": "interpreter inside the sandbox (default: this one's base interpreter if uid 65534 can run it, else /usr/bin/python3)"})
    extra_paths: tuple = field(default=(), metadata={
        "help": "directories mounted read-only and added to sys.path (e.g. a site-packages with numpy); never the problem data"})
    startup_s: float = field(default=1.0, metadata={"help": "extra seconds for the first case (module import, warm-up)"})

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers={self.workers!r}: use an integer >= 1, e.g. workers={os.cpu_count() or 1}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s!r}: use a positive number of seconds, e.g. timeout_s=5.0")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb={self.memory_mb}: the interpreter alone needs more; use memory_mb >= 64 (default 1024)")
        if self.output_limit < 1024:
            raise ValueError(f"output_limit={self.output_limit}: use at least 1024 bytes (default {8 << 20})")
        if self.max_procs < 1:
            raise ValueError(f"max_procs={self.max_procs}: use max_procs >= 1 (default 64)")
        if not 1 <= self.disk_mb <= self.memory_mb * 4:
            raise ValueError(f"disk_mb={self.disk_mb}: the private /tmp lives in RAM; use 1 <= disk_mb <= {self.memory_mb * 4} "
                             f"(4 x memory_mb={self.memory_mb})")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation={self.isolation!r}: use one of {ISOLATIONS}")
        if self.isolation == "bwrap" and not shutil.which("bwrap"):
            raise ValueError("isolation='bwrap' but bwrap is not installed; install bubblewrap or use isolation='auto'")
        if self.python is not None and not os.path.isfile(self.python):
            raise ValueError(f"python={self.python!r} does not exist; leave it None to pick one")
        for p in self.extra_paths:
            if not os.path.isdir(p):
                raise ValueError(f"extra_paths entry {p!r} is not a directory")
        if self.startup_s < 0:
            raise ValueError(f"startup_s={self.startup_s}: use startup_s >= 0")


def config_help() -> dict[str, str]:
    """Field name -> help text (for CLIs and docs)."""
    return {f.name: f.metadata.get("help", "") for f in fields(SandboxConfig)}


class SandboxUnavailable(RuntimeError):
    """A worker died or stopped answering."""


class SandboxStartError(SandboxUnavailable):
    """A worker could not be started at all (infrastructure)."""


# ---------------------------------------------------------------- launching


def _world_usable(path: str) -> bool:
    """Whether uid 65534 can reach and read `path` (every parent directory searchable)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & 0o004:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def sandbox_python(config: SandboxConfig) -> str:
    if config.python:
        return config.python
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if os.geteuid() != 0 or _world_usable(base):
        return base
    return "/usr/bin/python3"


def _system_binds(python: str) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    real = os.path.realpath(python)
    if not real.startswith("/usr/"):
        prefix = os.path.dirname(os.path.dirname(real))
        args += ["--ro-bind", prefix, prefix]
    return args


class _Launch:
    """How to start one harness process for an isolation mode."""

    def __init__(self, config: SandboxConfig, mode: str):
        self.config, self.mode = config, mode
        self.python = sandbox_python(config)
        self.drop = os.geteuid() == 0
        self.tmpdir = None
        if mode != "bwrap":
            # the fallbacks see the host file system: give uid 65534 a readable copy of the harness
            self.tmpdir = tempfile.mkdtemp(prefix="codescaler-harness-")
            os.chmod(self.tmpdir, 0o755)
            shutil.copy(harness.__file__, os.path.join(self.tmpdir, "harness.py"))
            os.chmod(os.path.join(self.tmpdir, "harness.py"), 0o644)

    def start(self, role: str, control_fd: int) -> subprocess.Popen:
        py = [self.python, "-I", "-S", "-B"]
        # the harness refuses to run when its PID namespace is this one (see harness.confinement_problem)
        host_pidns = harness.host_namespaces()
        extra = [os.path.realpath(p) for p in self.config.extra_paths]
        kw = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  start_new_session=True, env={"PATH": SANDBOX_PATH})
        if self.drop:
            kw.update(user=NOBODY, group=NOBODY, extra_groups=[])
        if self.mode == "bwrap":
            with open(harness.__file__, "rb") as src:
                argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--uid", str(NOBODY),
                        "--gid", str(NOBODY), "--hostname", "sandbox", "--clearenv", "--setenv", "PATH", SANDBOX_PATH,
                        *_system_binds(self.python)]
                for p in extra:
                    argv += ["--ro-bind", p, p]
                argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.config.disk_mb << 20), "--tmpfs", "/tmp",
                         "--dir", os.path.dirname(HARNESS_IN_SANDBOX), "--ro-bind-data", str(src.fileno()), HARNESS_IN_SANDBOX,
                         "--chdir", "/tmp", *py, HARNESS_IN_SANDBOX, role, str(control_fd), host_pidns,
                         "--wipe-tmp", *extra]
                return subprocess.Popen(argv, pass_fds=[control_fd, src.fileno()], **kw)
        script = os.path.join(self.tmpdir, "harness.py")
        if self.mode == "unshare":
            argv = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--ipc", "--uts",
                    "--mount", "--mount-proc", *py, script, role, str(control_fd), host_pidns, "--mount-tmp", *extra]
        else:  # there is no unconfined mode: candidates never run outside a PID namespace
            raise SandboxStartError(f"unknown isolation mode {self.mode!r}")
        return subprocess.Popen(argv, pass_fds=[control_fd], cwd=self.tmpdir, **kw)

    def close(self):
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


_probe_lock = threading.Lock()
_probed: dict[tuple, str] = {}
_warned: set[str] = set()


def resolve_isolation(config: SandboxConfig) -> str:
    """The isolation mode that really works here for `config` (tried once per process), warning once on fallback."""
    key = (config.isolation, config.python, tuple(config.extra_paths))
    with _probe_lock:
        if key in _probed:
            return _probed[key]
        order = ["bwrap", "unshare"] if config.isolation == "auto" else [config.isolation]
        errors = []
        for mode in order:
            try:
                box = _Sandbox(_Launch(config, mode), "candidate")
                box.close()
            except SandboxUnavailable as e:
                errors.append(f"{mode}: {e}")
                continue
            if mode != "bwrap" and mode not in _warned:
                _warned.add(mode)
                print(f"codescaler: warning: bubblewrap cannot run here ({'; '.join(errors) or 'not requested'}); "
                      f"isolation is WEAKER: using {mode!r}", file=sys.stderr)
            _probed[key] = mode
            return mode
        raise SandboxUnavailable("no isolation mode works here: " + "; ".join(errors))


class _Sandbox:
    """One warm harness process and its control socket."""

    def __init__(self, launch: _Launch, role: str):
        self.launch, self.role = launch, role
        parent, child = socket.socketpair()
        try:
            self.proc = launch.start(role, child.fileno())
        except OSError as e:
            parent.close()
            raise SandboxStartError(f"cannot start {role} sandbox: {e}") from None
        finally:
            child.close()
        self.sock = parent
        try:
            hello = self._recv(15.0)
        except SandboxUnavailable as e:
            self.close()
            raise SandboxStartError(str(e)) from None
        self.nested = bool(hello.get("nested"))
        self.python_version = hello.get("python")

    def _recv(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            reply = harness.recv_frame_sock(self.sock, harness.MAX_FRAME)
        except (OSError, ValueError) as e:
            reply, why = None, f"{type(e).__name__}"
        else:
            why = "closed"
        if reply is None:
            raise SandboxUnavailable(f"{self.role} sandbox {why}: {self.stderr_tail()}")
        return reply

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        err = self.proc.stderr.read() if self.proc.stderr else b""
        return (err.decode("utf-8", "replace").strip().splitlines() or ["(no output)"])[-1][:300]

    def request(self, job: dict, timeout: float) -> dict:
        self.send(job)
        return self.receive(timeout)

    def send(self, job: dict, fd: int | None = None) -> None:
        data = json.dumps(job).encode()
        try:
            self.sock.settimeout(30.0)
            head = struct.pack("!I", len(data))
            if fd is None:
                self.sock.sendall(head)
            else:
                socket.send_fds(self.sock, [head], [fd])
            self.sock.sendall(data)
        except OSError as e:
            raise SandboxUnavailable(f"{self.role} sandbox is gone ({type(e).__name__})") from None

    def receive(self, timeout: float) -> dict:
        reply = self._recv(timeout)
        if "harness_error" in reply:
            raise SandboxUnavailable(f"harness: {reply['harness_error']}")
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()


# ---------------------------------------------------------------- comparing


def _num_close(a: str, b: str, tol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isfinite(x) and math.isfinite(y) and abs(x - y) <= tol * max(1.0, abs(y))


def stdio_matches(got: str, expected: str, float_tol: float | None = None) -> bool:
    """SPEC: per line, whitespace-separated tokens agree after trailing whitespace and trailing blank lines go."""

    def lines(s: str) -> list[list[str]]:
        rows = [line.rstrip() for line in s.replace("\r\n", "\n").split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        return [row.split() for row in rows]

    a, b = lines(got), lines(expected)
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for ta, tb in zip(ra, rb):
            if ta != tb and not (float_tol is not None and _num_close(ta, tb, float_tol)):
                return False
    return True


def plain_equal(got, expected, float_tol: float | None = None) -> bool:
    """Equality of plain values with tuples as lists (both sides are fresh builtins decoded by us)."""
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(plain_equal(g, e, float_tol) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(plain_equal(got[k], expected[k], float_tol) for k in got)
    if float_tol is not None and type(got) in (int, float) and type(expected) in (int, float):
        return abs(got - expected) <= float_tol * max(1.0, abs(expected))
    return type(got) is not dict and got == expected


# ---------------------------------------------------------------- verdicts

_FATE_STATUS = {"timeout": Status.TIMEOUT, "memory_limit": Status.MEMORY_LIMIT, "output_limit": Status.OUTPUT_LIMIT}


def _fate_failure(fate: dict) -> tuple[Status, str] | None:
    """The status a candidate run's own fate implies, or None when it exited cleanly."""
    kind = fate["fate"]
    if kind in _FATE_STATUS:
        return _FATE_STATUS[kind], kind.replace("_", " ")
    if kind == "setup_error":
        return Status.SANDBOX_ERROR, "the harness failed to set up the run"
    code = fate.get("code", 0)
    if code == harness.EXIT_SYNTAX:
        return Status.SYNTAX_ERROR, _last_line(fate.get("stderr", ""))
    if code != 0:
        how = f"killed by signal {code - 128}" if code > 128 else f"exit code {code}"
        return Status.RUNTIME_ERROR, f"{how}: {_last_line(fate.get('stderr', ''))}"
    return None


def _last_line(text: str) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return rows[-1][:200] if rows else ""


def _float_tol(problem: Problem) -> float | None:
    tol = problem.tests.get("float_tol", problem.extra.get("float_tol"))
    return float(tol) if isinstance(tol, (int, float)) and not isinstance(tol, bool) else None


def _verdict(status: Status, passed_n: int, total: int, seconds: float, detail: str) -> Verdict:
    ok = status is Status.PASSED
    return Verdict(status=status, passed=ok, cases_passed=passed_n, cases_total=total,
                   seconds=round(seconds, 4), detail=detail[:300])


def stdio_verdict(problem: Problem, reply: dict, seconds: float) -> Verdict:
    cases, tol = problem.tests["cases"], _float_tol(problem)
    passed_n, first = 0, None
    for i, case in enumerate(cases):
        units = reply["units"]
        if i >= len(units):
            first = first or (Status.RUNTIME_ERROR, f"case {i}: not run after an earlier limit")
            continue
        failure = _fate_failure(units[i])
        if failure is None and not stdio_matches(units[i]["stdout"], case["output"], tol):
            failure = (Status.WRONG_ANSWER, f"case {i}: output differs")
        if failure is None:
            passed_n += 1
        elif first is None:
            first = (failure[0], failure[1] if failure[1].startswith("case") else f"case {i}: {failure[1]}")
    status, detail = first or (Status.PASSED, "")
    return _verdict(status, passed_n, len(cases), seconds, detail)


def call_verdict(problem: Problem, reply: dict, seconds: float) -> Verdict:
    cases, tol = problem.tests["cases"], _float_tol(problem)
    fate = reply["units"][0]
    results = fate["results"]
    passed_n, first = 0, None
    for i, case in enumerate(cases):
        failure = None
        r = results[i] if i < len(results) else None
        if r is None:
            failure = _fate_failure(fate) or (Status.RUNTIME_ERROR, "exited before answering")
        elif not isinstance(r, dict) or r.get("i") != i:
            failure = (Status.RUNTIME_ERROR, "broke the result protocol")
        elif "exc" in r:
            failure = (Status.RUNTIME_ERROR, str(r["exc"])[:200])
        elif "bad" in r:
            failure = (Status.WRONG_ANSWER, str(r["bad"])[:200])
        else:
            try:
                got = harness.decode(r.get("ok"))
            except (ValueError, TypeError, RecursionError):
                failure = (Status.RUNTIME_ERROR, "broke the result protocol")
            else:
                if not plain_equal(got, case["expected"], tol):
                    failure = (Status.WRONG_ANSWER, "returned value differs")
        if failure is None:
            passed_n += 1
        elif first is None:
            first = (failure[0], f"case {i}: {failure[1]}")
    status, detail = first or (Status.PASSED, "")
    return _verdict(status, passed_n, len(cases), seconds, detail)


def assert_verdict(judge: dict, token: str, cand: dict, seconds: float) -> Verdict:
    fate = cand["units"][0]
    report = judge.get("report")
    if isinstance(report, dict) and report.get("token") == token and report.get("ok") is True:
        return _verdict(Status.PASSED, 1, 1, seconds, "")
    failure = _fate_failure(fate)
    if failure and failure[0] in (Status.TIMEOUT, Status.MEMORY_LIMIT, Status.OUTPUT_LIMIT, Status.SYNTAX_ERROR,
                                  Status.SANDBOX_ERROR):
        return _verdict(failure[0], 0, 1, seconds, failure[1])
    if not isinstance(report, dict):
        return _verdict(Status.TIMEOUT, 0, 1, seconds, "the test did not finish in time")
    if report.get("token") != token:
        return _verdict(Status.WRONG_ANSWER, 0, 1, seconds, "the test's report failed authentication")
    why, detail = report.get("why"), str(report.get("detail", ""))
    if why in ("assert", "not_plain", "check_error"):
        return _verdict(Status.WRONG_ANSWER, 0, 1, seconds, detail)
    if failure:
        return _verdict(failure[0], 0, 1, seconds, failure[1] or detail)
    return _verdict(Status.RUNTIME_ERROR, 0, 1, seconds, detail)


# ---------------------------------------------------------------- workers


class _Worker:
    """A candidate sandbox plus (for assert tests) a judge sandbox; owned by one thread."""

    def __init__(self, launch: _Launch, config: SandboxConfig):
        self.launch, self.config = launch, config
        self.cand: _Sandbox | None = None
        self.judge: _Sandbox | None = None

    def _box(self, role: str) -> _Sandbox:
        box = getattr(self, "cand" if role == "candidate" else role)
        if box is None or box.proc.poll() is not None:
            if box is not None:
                box.close()
            box = _Sandbox(self.launch, role)
            setattr(self, "cand" if role == "candidate" else role, box)
        return box

    def reset(self) -> None:
        for box in (self.cand, self.judge):
            if box is not None:
                box.close()
        self.cand = self.judge = None

    def run(self, problem: Problem, code: str) -> Verdict:
        tests = problem.tests
        timeout = float(problem.time_limit_s or self.config.timeout_s)
        memory = int(problem.memory_mb or self.config.memory_mb)
        base = {"kind": tests["kind"], "code": code, "timeout": timeout, "memory_mb": memory,
                "output_limit": self.config.output_limit, "disk_mb": self.config.disk_mb,
                "max_procs": self.config.max_procs, "startup_s": self.config.startup_s}
        n_cases = len(tests.get("cases") or [None])
        budget = timeout * n_cases + self.config.startup_s + 10.0 + 0.05 * n_cases
        start = time.monotonic()
        if tests["kind"] == "stdio":
            job = {**base, "inputs": [c["input"] for c in tests["cases"]], "nested": self._box("candidate").nested}
            return stdio_verdict(problem, self.cand.request(job, budget), time.monotonic() - start)
        if tests["kind"] == "call":
            job = {**base, "fn": tests["fn_name"], "inputs": [harness.encode(list(c["args"])) for c in tests["cases"]],
                   "nested": self._box("candidate").nested}
            return call_verdict(problem, self.cand.request(job, budget), time.monotonic() - start)
        return self._run_assert(problem, base, budget, start)

    def _run_assert(self, problem: Problem, base: dict, budget: float, start: float) -> Verdict:
        tests = problem.tests
        token = os.urandom(16).hex()
        cand_box, judge_box = self._box("candidate"), self._box("judge")
        ours, theirs = socket.socketpair()
        try:
            judge_job = {**base, "code": "", "check": tests["code"], "setup": problem.starter_code or "", "token": token}
            cand_job = {**base, "fn": tests["entry_point"], "nested": cand_box.nested}
            # the judge gets one end, the candidate the other; the parent keeps neither, so when
            # either side exits the other sees end-of-stream at once
            judge_box.send(judge_job, ours.fileno())
            cand_box.send(cand_job, theirs.fileno())
        finally:
            ours.close()
            theirs.close()
        cand_reply = cand_box.receive(budget)
        judge_reply = judge_box.receive(budget)
        return assert_verdict(judge_reply, token, cand_reply, time.monotonic() - start)


# ---------------------------------------------------------------- the API


def _no_test_verdict(problem: Problem | None, code: str | None) -> Verdict | None:
    if code is None:
        return _verdict(Status.NO_CODE, 0, _cases_total(problem), 0.0, "no code extracted")
    if problem is None or not isinstance(problem.tests, dict) or problem.tests.get("kind") not in ("stdio", "call", "assert"):
        return _verdict(Status.SANDBOX_ERROR, 0, 0, 0.0, "the problem has no runnable tests")
    return None


def _cases_total(problem: Problem | None) -> int:
    tests = problem.tests if problem is not None else None
    if not isinstance(tests, dict):
        return 0
    return 1 if tests.get("kind") == "assert" else len(tests.get("cases") or [])


class Verifier:
    """A pool of warm sandboxed workers; reuse one across batches (GRPO rewards, best-of-N, eval).

    Thread-safe for one `verify` call at a time. Close it (or use `with`) to stop the sandboxes.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.isolation = resolve_isolation(self.config)
        self._launch = _Launch(self.config, self.isolation)
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="sandbox")
        self.note = "" if self.isolation == "bwrap" else f" [isolation: {self.isolation}, weaker than bwrap]"

    def _worker(self) -> _Worker:
        w = getattr(self._local, "worker", None)
        if w is None:
            w = self._local.worker = _Worker(self._launch, self.config)
            with self._lock:
                self._workers.append(w)
        return w

    def _one(self, problem: Problem | None, code: str | None) -> Verdict:
        early = _no_test_verdict(problem, code)
        if early is not None:
            return early
        worker = self._worker()
        died = []
        for _ in range(2):  # a worker that died is replaced and the candidate retried once
            try:
                v = worker.run(problem, code)
                break
            except SandboxStartError as e:
                worker.reset()
                return _verdict(Status.SANDBOX_ERROR, 0, _cases_total(problem), 0.0, str(e))
            except SandboxUnavailable as e:
                worker.reset()
                died.append(str(e))
        else:
            return _verdict(Status.RUNTIME_ERROR, 0, _cases_total(problem), 0.0,
                            f"the sandbox worker died twice running this candidate: {died[-1]}")
        if self.note:
            v.detail = (v.detail + self.note)[:400]
        return v

    def imap(self, problems: dict[str, Problem], items: Iterable[tuple[str, str | None]]) -> Iterator[Verdict]:
        """Verdicts for (problem_id, code or None) items, yielded in input order as they finish."""
        futures = [self._pool.submit(self._one, problems.get(pid), code) for pid, code in items]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def verify(self, problems: dict[str, Problem], items: list[tuple[str, str | None]],
               progress: Callable[[int], None] | None = None) -> list[Verdict]:
        """A list of verdicts in input order; `progress(n)` is called after each one."""
        out = []
        for v in self.imap(problems, items):
            out.append(v)
            if progress is not None:
                progress(1)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for w in self._workers:
                w.reset()
            self._workers.clear()
        self._launch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def verify_batch(problems: dict[str, Problem], items: list[tuple[str, str | None]],
                 config: SandboxConfig | None = None, progress: Callable[[int], None] | None = None) -> list[Verdict]:
    """Verdicts for (problem_id, code or None) in input order, with a pool made and closed for this call."""
    with Verifier(config) as v:
        return v.verify(problems, items, progress)


def verify_one(problem: Problem, code: str | None, config: SandboxConfig | None = None) -> Verdict:
    """One candidate's verdict (starts and stops a one-worker pool: use Verifier for many)."""
    cfg = config or SandboxConfig(workers=1)
    return verify_batch({problem.id: problem}, [(problem.id, code)], cfg)[0]


# ---------------------------------------------------------------- CLI


def add_cli(p) -> None:
    from codescaler.extract import MODES

    help_ = config_help()
    p.add_argument("--problems", required=True, help="problems JSONL(.gz) with tests")
    p.add_argument("--responses", required=True, help="responses JSONL(.gz): {problem_id, response, ...}")
    p.add_argument("--output", required=True, help="JSONL(.gz) to append to (responses plus `verdict`); a rerun resumes")
    p.add_argument("--workers", type=int, default=None, help=help_["workers"])
    p.add_argument("--timeout", type=float, default=5.0, help=help_["timeout_s"] + " (default 5)")
    p.add_argument("--memory-mb", type=int, default=1024, help=help_["memory_mb"] + " (default 1024)")
    p.add_argument("--isolation", choices=ISOLATIONS, default="auto", help=help_["isolation"])
    p.add_argument("--extraction", choices=MODES, default="syntax",
                   help="how code is taken from the response: syntax (SPEC rule, default) or reference (the paper's)")


def cli_main(args) -> int:
    from codescaler.cli import progress
    from codescaler.extract import extract_code
    from codescaler.records import JsonlWriter, UserError, pending, read_problems, read_responses

    problems = read_problems(args.problems)
    rows = [d for _, d in read_responses(args.responses, problems)]
    todo = pending(rows, args.output)
    try:
        config = SandboxConfig(**{k: v for k, v in dict(
            workers=args.workers, timeout_s=args.timeout, memory_mb=args.memory_mb, isolation=args.isolation).items()
            if v is not None})
    except ValueError as e:
        raise UserError(str(e)) from None
    with JsonlWriter(args.output) as out:
        if todo:
            items = [(d["problem_id"], extract_code(d["response"], args.extraction)) for d in todo]
            try:
                verifier = Verifier(config)
            except SandboxUnavailable as e:
                raise UserError(str(e)) from None
            with verifier, progress(total=len(todo), desc="verify", unit="resp") as bar:
                for d, v in zip(todo, verifier.imap(problems, items)):
                    out.write({**d, "verdict": v.to_dict()})
                    bar.update(1)
        out.finish()
    return 0
