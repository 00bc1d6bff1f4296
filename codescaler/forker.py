"""The forker, which forks every candidate's process, and what runs in that process (stdlib only; loaded inside
the sandbox next to codescaler/harness.py). Also the harness's side of it (`Forker`).

The harness forks the forker once, when it starts, before any job has come. Every candidate's process is a fork of
the forker (or of a generation, below), so its memory is a copy of one that never held a test, an expected output or
another candidate's code: only the preloaded interpreter. (A process forked from the harness itself could find the
assert test it was run against in its copy of the harness's memory, and return what the test expects.) The forker
also never reads a candidate's job. Per unit the harness sends it the unit's fds, the first of which holds the job
(what the candidate needs to run, its code marshalled); the forker forks, answers with the child's pid and a pidfd,
and once it has reaped the child, with its exit status. Only the child reads the job.

Candidates that run under the syscall filter (seccomp.py) are forked by a *generation*: a child of the forker that
installed the filter on itself once, for one key (the processes it protects, itself included), and that the
candidates it forks inherit. Installing a filter costs ~0.2 ms (the kernel compiles it), once per generation
rather than once per candidate; a new key (a new tester) gets a new generation. A generation serves the same
requests as the forker, and its memory is the forker's.

The harness replaces nothing here: a forker that died or was changed retires the whole worker, since a new one
could only be forked from the harness, whose memory has held tests by then."""

from __future__ import annotations

import builtins
import marshal
import math
import os
import resource
import select
import signal
import socket
import struct
import sys

try:
    from codescaler import seccomp, wire
except ImportError:  # inside the sandbox these are mounted next to this file
    import seccomp
    import wire

# Exit codes of the candidate wrapper; a candidate may fake them, but none means "passed".
EXIT_MEMORY = 201
EXIT_SYNTAX = 202
EXIT_SETUP = 203  # the wrapper itself failed before the candidate ran
_exit = os._exit


def exit_fate(status: int) -> dict:
    """A candidate's (or tester's) fate from its wait status: our memory exit code and SIGXCPU are limits."""
    code = os.waitstatus_to_exitcode(status)
    if code == EXIT_MEMORY:
        return {"fate": "memory_limit", "code": code}
    if code == -signal.SIGXCPU:
        return {"fate": "timeout", "code": code}
    return {"fate": "exit", "code": code}


INT = struct.Struct("=i")  # a pid, fd or wait status on the forker's socket
MAX_FDS = 10  # fds of one request: the candidate's job, stdin, stdout, stderr, two results or link fds, ready


def serve(control: int) -> int:
    """The forker's loop, until the harness closes the socket. A request (`request`) with the unit's fds forks a
    candidate without a syscall filter, sends its pid and pidfd, reaps it and sends its exit status; one for a
    generation, with the generation's socket as its one fd, forks a generation and sends its pid and pidfd.

    The socket is a SOCK_SEQPACKET pair, so every message arrives whole with its fds. The loop allocates little and
    never parses JSON: every page this process writes while a child shares it is copied, at each fork again."""
    wire.place_fds([0, 1, 2, control])  # none of the harness's other fds
    # the harness ignores SIGPIPE; candidates (forked by us or a generation) get the default, inherited from here:
    # setting it in each candidate's process would cost it ~20 more pages copied (the signal module's enum lookups)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sock = socket.socket(fileno=3)
    generations: list[int] = []
    for msg, fds in requests(sock):
        if msg[:1] != b"G":
            spawn(sock, fds)
            continue
        for pid in generations:  # the one this replaces, which the harness killed first
            os.waitpid(pid, 0)
        pid, pidfd = fork(generation, fds[0], filter_key(msg))
        generations = [pid]
        for fd in fds:
            os.close(fd)
        socket.send_fds(sock, [INT.pack(pid)], [pidfd])
        os.close(pidfd)
    return 0


def generation(control: int, key: tuple) -> int:
    """A generation's loop: install the filter for `key` on this process (protecting it too), then fork a
    candidate per request, as the forker does, until the harness closes the socket."""
    wire.place_fds([0, 1, 2, control])
    protected, group = key
    seccomp.Filter((*protected, os.getpid()), group).install()
    sock = socket.socket(fileno=3)
    for _, fds in requests(sock):
        spawn(sock, fds)
    return 0


def requests(sock: socket.socket):
    """(message, fds) for each request, until the harness closes the socket."""
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 256, MAX_FDS)
        if not msg:
            for fd in fds:
                os.close(fd)
            return
        yield msg, fds


def spawn(sock: socket.socket, fds: list[int]) -> None:
    """Fork a candidate's process with `fds`, send its pid and pidfd, reap it and send its exit status."""
    pid, pidfd = fork(candidate_process, fds)
    for fd in fds:
        os.close(fd)
    socket.send_fds(sock, [INT.pack(pid)], [pidfd])
    os.close(pidfd)
    sock.send(INT.pack(os.waitpid(pid, 0)[1]))


def request(generation_key: list | None = None) -> bytes:
    """A request (in the harness): b"C" for a candidate, or b"G" and a filter's key for a generation (the pids it
    protects, then the process group)."""
    if generation_key is None:
        return b"C"
    protected, group = generation_key
    return b"G" + b"".join(INT.pack(n) for n in [*protected, group])


def filter_key(msg: bytes) -> tuple[tuple[int, ...], int]:
    """Inverse of `request` for a generation: (protected pids, group)."""
    values = [n for (n,) in INT.iter_unpack(msg[1:])]
    return tuple(values[:-1]), values[-1]


def write_job(job: dict, code, prelude=None) -> int:
    """A memfd holding what a candidate's process needs (in the harness): the job, the code and the statement's
    prelude (code or None), marshalled."""
    fd = os.memfd_create("job")
    wire.write_all(fd, marshal.dumps((job, code, prelude)))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def candidate_process(fds: list[int]) -> int:
    """The candidate's process: fds[0] is its job (`write_job`), the rest go to `candidate_main`."""
    chunks = []
    while True:
        chunk = os.read(fds[0], 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fds[0])
    job, code, prelude = marshal.loads(b"".join(chunks))
    del chunks
    return candidate_main(job, code, fds[1:], prelude)


def set_limits(job: dict, cpu: bool = True) -> None:
    """The run's rlimits; `cpu=False` for the long-lived tester, which the harness's deadline stops instead."""
    limits = [(resource.RLIMIT_AS, job["memory_mb"] << 20), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_FSIZE, job["disk_mb"] << 20), (resource.RLIMIT_NPROC, job["max_procs"]),
              (resource.RLIMIT_NOFILE, 256)]
    if cpu:
        limits.append((resource.RLIMIT_CPU, int(math.ceil(job["timeout"] * job["cpu_cases"] + job["startup_s"])) + 1))
    for res, val in limits:
        resource.setrlimit(res, (val, val))


def enter_child(job: dict, fds: list[int]) -> None:
    """In a freshly forked process: `fds` become 0..n-1 and every other fd closes; limits, env, workdir; a
    process group of its own (kill(0) reaches its processes alone). The syscall filter, if any, came with the fork
    (from the generation).

    The last fd is the ready marker: one byte is written to it and it is closed when set-up is done. A
    process whose marker came never ran any code but ours, so only then is its failure infrastructure;
    after it, an exit code of ours (EXIT_SETUP...) may be the candidate's own `os._exit(203)`.
    """
    wire.place_fds(fds)
    os.chdir(job["workdir"])
    set_limits(job)
    os.setpgid(0, 0)
    # the environment (ENVIRONMENT) and sys.stdin/stdout/stderr (on fds 0-2, which now are the run's) were set up
    # once in `main`; the harness itself never reads or writes them, so they hold no buffered data
    sys.argv = ["solution.py"]
    os.write(len(fds) - 1, b"1")
    os.close(len(fds) - 1)


# Import headers: names a grader binds in the candidate's module before its code runs (`SandboxConfig.import_header`).
# "lcb" is LiveCodeBench's (lcb_runner/evaluation/testing_util.py, before call-based and stdin solutions alike):
# `from M import *` for each of LCB_STAR in this order (a later module's name wins), then `import M` for each of
# LCB_IMPORT, then a recursion limit of 50000.
LCB_STAR = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
            "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
LCB_IMPORT = tuple(m for m in LCB_STAR if m not in ("builtins", "typing"))
LCB_RECURSION_LIMIT = 50000
HEADERS = ("none", "lcb")
# header -> its namespace (`header_namespace`), made by the harness before it forks the forker when the worker was
# started for problems with that header (`preload_header`): a candidate then copies ~470 names (~0.1 ms) instead of
# importing datetime, random and statistics and scanning 18 modules (~5 ms, which a stdin problem pays per case)
NAMESPACES: dict = {}


def header_namespace(header: str) -> tuple[dict, tuple]:
    """(the names header `header` binds and their values, the names among them whose value is sys's: read again in
    each candidate, whose sys.argv is its own). `from M import *` binds M's `__all__`, else each name of M not
    starting with an underscore."""
    if header != "lcb":
        raise ValueError(f"unknown import header {header!r}")
    names: dict = {}
    from_sys: set = set()
    for name in LCB_STAR:
        module = __import__(name)
        public = getattr(module, "__all__", None)
        if public is None:
            public = [n for n in vars(module) if not n.startswith("_")]
        bound = {n: getattr(module, n) for n in public if hasattr(module, n)}
        names.update(bound)
        from_sys = from_sys | bound.keys() if module is sys else from_sys - bound.keys()
    names.update({name: sys.modules[name] for name in LCB_IMPORT})
    return names, tuple(sorted(from_sys - set(LCB_IMPORT)))


def preload_header(header: str) -> None:
    """Import header `header`'s modules and make its namespace now, for every process forked from this one later."""
    if header != "none":
        NAMESPACES[header] = header_namespace(header)


def bind_header(env: dict, header: str) -> None:
    """Bind import header `header`'s names in `env` as its statements would, and set its recursion limit."""
    if header == "none":
        return
    names, from_sys = NAMESPACES.get(header) or header_namespace(header)
    env.update(names)
    env.update({n: getattr(sys, n) for n in from_sys})
    sys.setrecursionlimit(LCB_RECURSION_LIMIT)


def find_function(env: dict, name: str):
    """A top-level function `name`, else a method of `Solution` (LeetCode style)."""
    fn = env.get(name)
    if callable(fn):
        return fn
    cls = env.get("Solution")
    if isinstance(cls, type) and callable(getattr(cls, name, None)):
        return getattr(cls(), name)
    raise NameError(f"no function {name!r} (nor Solution.{name}) is defined")


def serve_calls(fn, inputs: list, fd: int) -> None:
    for i, args in enumerate(inputs):
        try:
            reply = {"i": i, "ok": wire.encode(fn(*wire.decode(args)))}
        except wire.NotPlain as e:
            reply = {"i": i, "bad": str(e)}
        except MemoryError:
            raise
        except Exception as e:  # the candidate failed on this case; the next cases still run
            reply = {"i": i, "exc": f"{type(e).__name__}: {e}"[:300]}
        wire.send_frame(fd, reply)


def candidate_main(job: dict, code, fds: list[int], prelude=None) -> int:
    """The candidate's process. fds: stdin, stdout, stderr, then (call) results, or (assert) the link's in and
    out, then the ready marker. The job's import header binds its names first (`bind_header`); then `prelude`
    (assert tests): the statement's imports and helpers."""
    enter_child(job, fds)
    kind = job["kind"]
    env = {"__name__": "__main__" if kind == "stdio" else "solution", "__builtins__": builtins}
    try:
        bind_header(env, job.get("header", "none"))
        if prelude is not None:
            try:
                exec(prelude, env)
            except Exception:  # a statement that does not run on its own (a module not installed) gives nothing
                pass
        exec(code, env)
        if kind == "call":
            serve_calls(find_function(env, job["fn"]), job["inputs"], 3)
        elif kind == "assert":
            wire.serve(3, 4, env, lambda: find_function(env, job["fn"]))
        return 0
    except SystemExit as e:
        if kind == "call":
            wire.try_send(3, {"error": "SystemExit"})
        return e.code if isinstance(e.code, int) and 0 <= e.code < 200 else 1
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as e:  # the candidate's own error, reported as a failure
        sys.__excepthook__(type(e), e, e.__traceback__)  # to sys.stderr, in C: no traceback module to preload
        return 1
    finally:
        wire.flush_std()


def fork(body, *args) -> tuple[int, int]:
    """Start `body(*args)` in a forked process; (pid, pidfd). The child's exit code is body's return value."""
    pid = os.fork()
    if pid == 0:
        try:
            _exit(body(*args))
        except BaseException:  # anything escaping here is the wrapper's own failure
            _exit(EXIT_SETUP)
    return pid, os.pidfd_open(pid)


# ---------------------------------------------------------------- the harness's side

# A process of the sandbox's uid may lower another one's rlimits (prlimit), raise its nice value, or change its
# scheduling policy or CPU affinity, with no ptrace rights: what `process_state` reads.
RLIMITS = tuple(getattr(resource, n) for n in sorted(dir(resource)) if n.startswith("RLIMIT_"))


def process_state(pid: int) -> tuple:
    """What another process of the same uid can change in process `pid` (0: this one): rlimits, nice, policy, CPUs."""
    return (tuple(resource.prlimit(pid, r) for r in RLIMITS), os.getpriority(os.PRIO_PROCESS, pid),
            os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority, frozenset(os.sched_getaffinity(pid)))


def exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def healthy(pid: int, pidfd: int, state: tuple | None) -> bool:
    """After a unit's sweep, when no candidate process is left: a long-lived process of ours is alive, and its limits
    and scheduling are as they were (`process_state`). One that a candidate stopped is continued first."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        return process_state(pid) == state and not exited(pidfd)
    except ProcessLookupError:
        return False


class Forker:
    """The harness's handle on its forker (`Forker.start`, once, before any job; never replaced: a new one could only
    come from the harness's memory, which has held tests by then, so the worker retires instead) or on one of the
    forker's generations (`generation`, whose `key` is the filter it installed)."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, key: list | None = None):
        self.pid, self.pidfd, self.sock, self.key = pid, pidfd, sock, key
        self.sock.settimeout(10.0)
        self.state = process_state(pid)  # inherited from the harness, and never changed by the process itself
        self.pending = False  # a candidate was spawned whose exit status has not been read

    @classmethod
    def start(cls) -> Forker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid, pidfd = fork(serve, theirs.fileno())
        theirs.close()
        return cls(pid, pidfd, ours)

    def generation(self, key: list) -> Forker:
        """A new generation under the filter for `key` ([protected pids, process group]); the forker's own handle
        only, and only once the generation it replaces was retired."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, pidfd = self._ask(request(key), [theirs.fileno()])
        except RuntimeError:
            ours.close()
            raise
        finally:
            theirs.close()
        return Forker(pid, pidfd, ours, key)

    def spawn(self, fds: list[int]) -> tuple[int, int]:
        """A candidate's process, forked with `fds` (its job first): (pid, pidfd)."""
        pid, pidfd = self._ask(request(), fds)
        self.pending = True
        return pid, pidfd

    def _ask(self, msg: bytes, fds: list[int]) -> tuple[int, int]:
        try:
            socket.send_fds(self.sock, [msg], fds)
            reply, got, _, _ = socket.recv_fds(self.sock, 16, 1)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"the forker failed ({type(e).__name__})") from None
        if len(reply) != INT.size or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise RuntimeError("the forker failed")
        return INT.unpack(reply)[0], got[0]

    def status(self) -> int:
        """The wait status of the candidate last spawned, once it was reaped."""
        try:
            msg = self.sock.recv(16)
        except OSError:
            msg = b""
        if len(msg) != INT.size:
            raise RuntimeError("the forker stopped answering")
        self.pending = False
        return INT.unpack(msg)[0]

    def usable(self) -> bool:
        return healthy(self.pid, self.pidfd, self.state)

    def end(self, pidfd: int) -> None:
        """Kill the candidate last spawned if it still runs, and wait until it was reaped."""
        if self.pending:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.status()

    def retire(self) -> None:
        """Kill a generation (the forker reaps it when it makes the next one)."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.close(self.pidfd)
        self.sock.close()
