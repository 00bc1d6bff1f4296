"""Run candidate code against a Problem's tests in a sandbox and return a Verdict (SPEC.md, "Verdict").

Use from other stages::

    with Verifier(SandboxConfig(workers=2)) as v:
        verdicts = v.verify(problems, [(problem_id, code_or_None), ...])
    verify_batch(problems, items, config)   # the same, with a pool made and closed for you
    verify_one(problem, code, config)

Isolation (per warm worker, `isolation="bwrap"`): a bubblewrap sandbox started
as uid 65534 (root drops to it before starting bwrap), with new user, PID,
network, IPC and UTS namespaces (no network at all), only /usr (and the
interpreter's prefix) mounted read-only, a private size-limited tmpfs /tmp, a
minimal /dev and /proc, an environment of PATH only, and no view of the problem
files, the caller's home or working directory. Inside it the harness
(`codescaler/harness.py`) has a fresh process forked per candidate run, with
rlimits (address space, CPU, file size, processes, open files) and a syscall
filter, and afterwards SIGKILLs every other process in the sandbox (but the
worker's forker, its generation and tester) and empties /tmp. Candidates are forked from the
worker's forker (`codescaler/forker.py`), which was forked before any job came,
or, under the syscall filter, from a generation of it that installed the filter
once for the candidates it forks: a candidate's memory never holds a test, an
expected output or another candidate's code. Workers run one candidate
at a time, so a candidate never sees another's run. The harness refuses to
start outside private PID and user namespaces (its clean-up kills everything it
can see, which must only ever be the sandbox).

Threat model, honestly:
* stdio and call tests: expected outputs never enter the sandbox. The
  candidate's stdout, or its return values encoded with exact builtin types,
  come back and this process compares them. Nothing the candidate does inside
  its process can forge a pass (an object with a forged __eq__ cannot even be
  sent back).
* assert tests: the test runs in the worker's tester process, forked from
  the harness once and kept for the tests that follow (modules a test imports
  stay loaded, as in one pytest session), holding only trusted code (problem
  statements and tests). It reaches the candidate's module through
  `wire.Remote` proxies: calls, attribute and item reads are requests to the
  candidate's process, and what comes back is a fresh copy of plain data or an
  opaque handle (compared by identity, so a forged __eq__ never decides).
  Helpers the statement implements (HumanEval's poly) stay the statement's own.
  A pass needs the tester to echo a per-run secret, which no candidate's
  memory ever held, on a socket only it and the harness hold; both are
  non-dumpable, so the candidate (same uid) cannot read their memory or fds
  through /proc or ptrace. The candidate can make the test fail (exit, kill the tester, send
  garbage on the link), never pass. A test that hands the candidate a function
  or an object of its own cannot run this way: `sandbox_error`, never a
  verdict on the code. Semantics that differ from one shared module: a
  candidate's objects compare by identity in the test, and only top-level
  list/dict/set arguments it changes in place are mirrored back.
* Exit codes and printed text never mean "passed".
* A process of the sandbox's uid may signal another one, lower its rlimits
  (prlimit) or change its priority, scheduling policy or CPU affinity. The
  candidate's seccomp filter (`codescaler/seccomp.py`) refuses those aimed at
  the harness, the forker and its generation, the tester, pid 1, their process
  group or every process of the uid. Behind it, the harness checks itself, the
  forker and the generation after every run's sweep (a run that changed one
  fails, and the worker is replaced) and the tester (continued if stopped;
  replaced if it died or changed).
* Not covered: kernel exploits (bwrap is not a VM), side channels, and the
  machine as a whole: there are no cgroups, so `memory_mb` limits each process's
  address space (max_procs x memory_mb in the worst case) and CPU time is per
  process.
How a worker starts (the command lines, what is mounted, the isolation probe) is `codescaler/launch.py`.
Fallback when bwrap cannot run: `unshare` (user, PID, network, mount, IPC and
UTS namespaces, the same rlimits, and `unshare_root.sh`'s root: the system
directories and the harness read-only, a private /tmp, the old root detached,
so the host's files are hidden as under bwrap). Weaker: everything in it runs
as root of its user namespace, with that namespace's capabilities (it may
remount its own mounts, or set ns_last_pid). It prints one warning and notes
itself in every verdict's `detail`.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Iterator

from codescaler import forker, testcode, verdicts, wire
from codescaler.launch import HARNESS_FILES, Launch, Sandbox, SandboxStartError, SandboxUnavailable, resolve_isolation
from codescaler.records import Problem, Status, Verdict, tests_error

__all__ = ["HARNESS_FILES", "IMPORT_HEADERS", "ISOLATIONS", "SandboxConfig", "SandboxStartError", "SandboxUnavailable",
           "Verifier", "config_help", "import_header", "statement_prelude", "verify_batch", "verify_one"]

ISOLATIONS = ("auto", "bwrap", "unshare")
IMPORT_HEADERS = ("problem",) + forker.HEADERS  # "problem": each problem's own `import_header`


@functools.lru_cache(maxsize=1024)
def statement_prelude(setup: str) -> str:
    """`testcode.statement_prelude`, kept per statement: every candidate of a problem needs the same."""
    return testcode.statement_prelude(setup)


@dataclass
class SandboxConfig:
    """How candidates run. Per-problem `time_limit_s` / `memory_mb` override `timeout_s` / `memory_mb`."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1,
                         metadata={"help": "warm sandboxed workers running candidates in parallel (default: CPU count)"})
    timeout_s: float = field(default=5.0, metadata={
        "help": "time limit per test case in seconds (an assert test is one case), for problems that set no "
                "time_limit_s"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space limit of each candidate process, MiB"})
    output_limit_bytes: int = field(default=8 << 20, metadata={"help": "bytes a candidate may print (and return) per run"})
    disk_mb: int = field(default=64, metadata={"help": "size of the candidate's private /tmp and its largest file, MiB"})
    max_procs: int = field(default=64, metadata={"help": "processes+threads a candidate may have (RLIMIT_NPROC)"})
    isolation: str = field(default="auto", metadata={"help": "auto (bwrap, else the weaker unshare fallback), bwrap or unshare"})
    python: str | None = field(default=None, metadata={
        "help": "interpreter inside the sandbox (default: this one's base interpreter if uid 65534 can run it, else /usr/bin/python3)"})
    extra_paths: tuple = field(default=(), metadata={
        "help": "directories mounted read-only and added to sys.path (e.g. a site-packages with numpy); never the problem data"})
    startup_s: float = field(default=1.0, metadata={
        "help": "extra seconds for a program's start (module import, warm-up): once for a call or assert test's cases, "
                "and on every stdio case, since each runs the program anew"})
    pin_workers: bool = field(default=True, metadata={
        "help": "pin each worker (its harness, tester and candidates) to a CPU of its own when there are as many workers "
                "as CPUs this process may use (the default): a unit hands off between four processes, cheaper on one CPU"})
    import_header: str = field(default="problem", metadata={
        "help": "names bound in the candidate's module before its code runs: 'lcb' is LiveCodeBench's grader's "
                "(from collections/heapq/math/typing/... import *, a recursion limit of 50000), 'none' nothing, "
                "'problem' (default) each problem's own `import_header` key (prepare sets 'lcb' on LCB-graded data)"})
    syscall_filter: bool = field(default=True, metadata={
        "help": "refuse (seccomp) a candidate's signals and limit or scheduling changes aimed at the sandbox's own "
                "processes; off only to test the checks behind it"})

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers={self.workers!r}: use an integer >= 1, e.g. workers={os.cpu_count() or 1}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s!r}: use a positive number of seconds, e.g. timeout_s=5.0")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb={self.memory_mb}: the interpreter alone needs more; use memory_mb >= 64 (default 1024)")
        if self.output_limit_bytes < 1024:
            raise ValueError(f"output_limit_bytes={self.output_limit_bytes}: use at least 1024 (default {8 << 20})")
        if not 4 <= self.max_procs <= 4096:
            raise ValueError(f"max_procs={self.max_procs}: use 4 <= max_procs <= 4096 (default 64; the interpreter "
                             "needs a few, and the limit is what stops fork bombs)")
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
        if self.import_header not in IMPORT_HEADERS:
            raise ValueError(f"import_header={self.import_header!r}: use one of {IMPORT_HEADERS}")
        if self.startup_s < 0:
            raise ValueError(f"startup_s={self.startup_s}: use startup_s >= 0")


def config_help() -> dict[str, str]:
    """Field name -> help text (for CLIs and docs)."""
    return {f.name: f.metadata.get("help", "") for f in fields(SandboxConfig)}


# ---------------------------------------------------------------- workers


class _Worker:
    """One warm sandbox, owned by one thread; replaced when it dies."""

    def __init__(self, launch: Launch, config: SandboxConfig, index: int = 0):
        self.launch, self.config = launch, config
        self.box: Sandbox | None = None
        cpus = sorted(os.sched_getaffinity(0))
        # only when the workers take every CPU we may use: with fewer, another Verifier or process pinned the same way
        # would share our CPUs while others idle, so the scheduler places them
        self.cpu = cpus[index % len(cpus)] if config.pin_workers and config.workers == len(cpus) else None

    def reset(self) -> None:
        if self.box is not None:
            self.box.close()
        self.box = None

    def run(self, problem: Problem, code: str) -> Verdict:
        tests = problem.tests
        header = import_header(problem, self.config)
        if self.box is None or not self.box.alive():
            self.reset()
            # started for the header of the problem it first runs (a worker's problems mostly share one), whose
            # namespace its candidates then find made; another header costs its candidates the imports
            self.box = Sandbox(self.launch, self.cpu, header)
        timeout = float(problem.time_limit_s or self.config.timeout_s)
        job = {"kind": tests["kind"], "code": code, "timeout": timeout,
               "memory_mb": int(problem.memory_mb or self.config.memory_mb),
               "output_limit": self.config.output_limit_bytes, "disk_mb": self.config.disk_mb,
               "max_procs": self.config.max_procs, "startup_s": self.config.startup_s,
               "syscall_filter": self.config.syscall_filter, "header": header}
        if tests["kind"] == "stdio":
            job["inputs"] = [c["input"] for c in tests["cases"]]
        elif tests["kind"] == "call":
            job.update(fn=tests["fn_name"], inputs=[wire.encode(list(c["args"])) for c in tests["cases"]])
        else:  # the test runs in a tester process of its own, next to the candidate's (see the threat model)
            setup = problem.starter_code or ""
            job.update(fn=tests["entry_point"], check=tests["code"], setup=setup, prelude=statement_prelude(setup))
        n_cases = len(tests.get("cases") or [None])
        budget = (timeout + self.config.startup_s + 0.5) * n_cases + 10.0
        start = time.monotonic()
        reply = self.box.request(job, budget)
        seconds = time.monotonic() - start
        if reply.get("retire"):  # the run changed the harness itself (forker.process_state): never reuse it
            self.reset()
        early = verdicts.tampering(reply, n_cases, seconds)
        if early is not None:
            return early
        if tests["kind"] == "stdio":
            return verdicts.stdio_verdict(problem, reply, seconds)
        if tests["kind"] == "call":
            return verdicts.call_verdict(problem, reply, seconds)
        return verdicts.assert_verdict(reply, seconds)


# ---------------------------------------------------------------- the API


def import_header(problem: Problem, config: SandboxConfig) -> str:
    """The import header a problem's candidates run under: the config's, else the problem's `import_header`."""
    if config.import_header != "problem":
        return config.import_header
    return problem.extra.get("import_header") or "none"


def _no_test_verdict(problem: Problem | None, code: str | None, config: SandboxConfig) -> Verdict | None:
    if code is None:
        return verdicts.make(Status.NO_CODE, 0, _cases_total(problem), 0.0, "no code extracted")
    bad = ("problem", "is unknown (not among the problems given)") if problem is None else \
        ("tests", "are null") if problem.tests is None else tests_error(problem.tests)
    if bad is not None:  # the data's fault, never the candidate's (read_problems refuses these up front)
        return verdicts.make(Status.SANDBOX_ERROR, 0, 0, 0.0, f"the problem has no runnable tests: {' '.join(bad)}")
    header = import_header(problem, config)
    if header not in forker.HEADERS:
        return verdicts.make(Status.SANDBOX_ERROR, 0, _cases_total(problem), 0.0,
                             f"the problem's import_header {header!r} is none of {forker.HEADERS}")
    return None


def _lookup(problems, items) -> list:
    """(problem or None, code) per item; only the problems asked for are checked (a GRPO step asks for a few of
    thousands)."""
    if not isinstance(problems, dict):
        raise TypeError("problems must be a dict {problem id: Problem}, e.g. codescaler.records.read_problems(path)")
    out = [(problems.get(pid), code) for pid, code in items]
    if any(p is not None and not isinstance(p, Problem) for p, _ in out):
        raise TypeError("problems must map ids to Problem records, e.g. codescaler.records.read_problems(path)")
    return out


def _cases_total(problem: Problem | None) -> int:
    tests = problem.tests if problem is not None else None
    if not isinstance(tests, dict):
        return 0
    cases = tests.get("cases")
    return 1 if tests.get("kind") == "assert" else len(cases) if isinstance(cases, list) else 0


class Verifier:
    """A pool of warm sandboxed workers; reuse one across batches (GRPO rewards, best-of-N, eval).

    Threads may call `verify` and `imap` at the same time (verl's async reward runs one call per rollout in threads):
    their candidates share the pool, each worker running one at a time. Close it (or use `with`) to stop the
    sandboxes, once no call is running.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.isolation = resolve_isolation(self.config)
        self._launch = Launch(self.config, self.isolation)
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="sandbox")
        self.note = "" if self.isolation == "bwrap" else f" [isolation: {self.isolation}, weaker than bwrap]"

    def _worker(self) -> _Worker:
        w = getattr(self._local, "worker", None)
        if w is None:
            with self._lock:
                w = self._local.worker = _Worker(self._launch, self.config, len(self._workers))
                self._workers.append(w)
        return w

    def _one(self, problem: Problem | None, code: str | None) -> Verdict:
        early = _no_test_verdict(problem, code, self.config)
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
                return verdicts.make(Status.SANDBOX_ERROR, 0, _cases_total(problem), 0.0, str(e))
            except SandboxUnavailable as e:
                worker.reset()
                died.append(str(e))
        else:
            return verdicts.make(Status.RUNTIME_ERROR, 0, _cases_total(problem), 0.0,
                            f"the sandbox worker died twice running this candidate: {died[-1]}")
        note = self.note
        if self.config.syscall_filter and worker.box is not None and not worker.box.hello.get("syscall_filter"):
            note += " [no syscall filter: this kernel refuses seccomp]"
        if note:
            v.detail = (v.detail + note)[:400]
        return v

    def imap(self, problems: dict[str, Problem], items: Iterable[tuple[str, str | None]]) -> Iterator[Verdict]:
        """Verdicts for (problem_id, code or None) items, yielded in input order as they finish."""
        futures = [self._pool.submit(self._one, problem, code) for problem, code in _lookup(problems, items)]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def verify(self, problems: dict[str, Problem], items: list[tuple[str, str | None]],
               progress: Callable[[int], None] | None = None) -> list[Verdict]:
        """A list of verdicts in input order; `progress(n)` is called after each one."""
        if progress is None:  # this thread sleeps until the last one (no wake-up, nor GIL hand-off, per verdict)
            futures = [self._pool.submit(self._one, problem, code) for problem, code in _lookup(problems, items)]
            try:
                wait(futures)
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
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


def add_sandbox_args(p) -> None:
    """The sandbox's options, shared by every verb that runs code (verify, pairs --synthesize-negatives)."""
    help_ = config_help()
    p.add_argument("--workers", type=int, default=None, help=help_["workers"])
    p.add_argument("--timeout", type=float, default=5.0, help=help_["timeout_s"] + " (default 5)")
    p.add_argument("--memory-mb", type=int, default=1024, help=help_["memory_mb"] + " (default 1024)")
    p.add_argument("--isolation", choices=ISOLATIONS, default="auto", help=help_["isolation"])
    p.add_argument("--extra-paths", nargs="*", default=[], help=help_["extra_paths"])
    p.add_argument("--import-header", choices=IMPORT_HEADERS, default="problem", help=help_["import_header"])


def sandbox_config_from_args(args) -> SandboxConfig:
    from codescaler.records import UserError

    try:
        return SandboxConfig(**{k: v for k, v in dict(
            workers=args.workers, timeout_s=args.timeout, memory_mb=args.memory_mb, isolation=args.isolation,
            extra_paths=tuple(args.extra_paths), import_header=args.import_header).items()
            if v is not None})
    except ValueError as e:
        raise UserError(str(e)) from None


def add_cli(p) -> None:
    from codescaler.extract import MODES

    p.add_argument("--problems", required=True, help="problems JSONL(.gz) with tests")
    p.add_argument("--responses", required=True, help="responses JSONL(.gz): {problem_id, response, ...}")
    p.add_argument("--output", required=True,
                   help="JSONL(.gz) to append to (responses plus `verdict`); a rerun resumes")
    add_sandbox_args(p)
    p.add_argument("--extraction", choices=MODES, default="syntax",
                   help="how code is taken from the response: syntax (SPEC rule, default) or reference (the paper's)")


def cli_main(args) -> int:
    from codescaler.cli import progress
    from codescaler.extract import extract_code
    from codescaler.records import JsonlWriter, UserError, pending, read_problems, read_responses

    problems = read_problems(args.problems)
    rows = [d for _, d in read_responses(args.responses, problems)]
    todo = pending(rows, args.output)
    config = sandbox_config_from_args(args)
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
