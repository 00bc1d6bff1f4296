"""The forker, which forks every candidate's process, and what runs in that process (stdlib only; loaded inside
the sandbox next to codescaler/harness.py).

The harness forks the forker once, when it starts, before any job has come. Every candidate's process is a fork of
the forker, so its memory is a copy of one that never held a test, an expected output or another candidate's code:
only the preloaded interpreter. (A process forked from the harness itself could find the assert test it was run
against in its copy of the harness's memory, and return what the test expects.) The forker also never reads a
candidate's job. Per unit the harness sends it the unit's fds, the first of which holds the job (what the candidate
needs to run, its code marshalled); the forker forks, answers with the child's pid and a pidfd, and once it has
reaped the child, with its exit status. Only the child reads the job.

The harness replaces nothing here: a forker that died or was changed retires the whole worker, since a new one
could only be forked from the harness, whose memory has held tests by then.
"""

from __future__ import annotations

import builtins
import marshal
import math
import os
import resource
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


INT = struct.Struct("=i")  # a pid, fd or wait status on the forker's socket
MAX_FDS = 10  # fds of one request: the candidate's job, stdin, stdout, stderr, two results or link fds, ready


def serve(control: int) -> int:
    """The forker's loop: per request from the harness, fork a candidate process, send its pid and pidfd, reap it
    and send its exit status; until the harness closes the socket.

    The socket is a SOCK_SEQPACKET pair, so every message arrives whole with its fds. A request is `request(key)`
    with the unit's fds attached. The loop allocates little and never parses JSON: every page this process writes
    while a candidate shares it is copied, at each fork again."""
    wire.place_fds([0, 1, 2, control])  # none of the harness's other fds
    sock = socket.socket(fileno=3)
    key, syscall_filter = b"N", None
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 256, MAX_FDS)
        if not msg:
            for fd in fds:
                os.close(fd)
            return 0
        if msg != key:  # the filter's key changes only with the tester's pid
            key = msg
            syscall_filter = seccomp.Filter(*filter_key(msg)) if msg[:1] == b"F" else None
        pid, pidfd = fork(candidate_process, fds, syscall_filter)
        for fd in fds:
            os.close(fd)
        socket.send_fds(sock, [INT.pack(pid)], [pidfd])
        os.close(pidfd)
        sock.send(INT.pack(os.waitpid(pid, 0)[1]))


def request(key: list | None) -> bytes:
    """A fork request (in the harness): b"N" for no syscall filter, else b"F" and the filter's key, the pids it
    protects and then the process group."""
    if key is None:
        return b"N"
    protected, group = key
    return b"F" + b"".join(INT.pack(n) for n in [*protected, group])


def filter_key(msg: bytes) -> tuple[tuple[int, ...], int]:
    """Inverse of `request` for a filtered one: (protected pids, group)."""
    values = [n for (n,) in INT.iter_unpack(msg[1:])]
    return tuple(values[:-1]), values[-1]


def write_job(job: dict, code) -> int:
    """A memfd holding what a candidate's process needs (in the harness): the job and the code, marshalled."""
    fd = os.memfd_create("job")
    wire.write_all(fd, marshal.dumps((job, code)))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def candidate_process(fds: list[int], syscall_filter) -> int:
    """The candidate's process: fds[0] is its job (`write_job`), the rest go to `candidate_main`."""
    chunks = []
    while True:
        chunk = os.read(fds[0], 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fds[0])
    job, code = marshal.loads(b"".join(chunks))
    del chunks
    return candidate_main(job, code, fds[1:], syscall_filter)


def set_limits(job: dict, cpu: bool = True) -> None:
    """The run's rlimits; `cpu=False` for the long-lived tester, which the harness's deadline stops instead."""
    limits = [(resource.RLIMIT_AS, job["memory_mb"] << 20), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_FSIZE, job["disk_mb"] << 20), (resource.RLIMIT_NPROC, job["max_procs"]),
              (resource.RLIMIT_NOFILE, 256)]
    if cpu:
        limits.append((resource.RLIMIT_CPU, int(math.ceil(job["timeout"] * job["cpu_cases"] + job["startup_s"])) + 1))
    for res, val in limits:
        resource.setrlimit(res, (val, val))


def enter_child(job: dict, fds: list[int], syscall_filter=None) -> None:
    """In a freshly forked process: `fds` become 0..n-1 and every other fd closes; limits, env, workdir; a
    process group of its own (kill(0) reaches its processes alone) and the syscall filter.

    The last fd is the ready marker: one byte is written to it and it is closed when set-up is done. A
    process whose marker came never ran any code but ours, so only then is its failure infrastructure;
    after it, an exit code of ours (EXIT_SETUP...) may be the candidate's own `os._exit(203)`.
    """
    wire.place_fds(fds)
    os.chdir(job["workdir"])
    set_limits(job)
    os.setpgid(0, 0)
    if syscall_filter is not None:
        syscall_filter.install()
    # the environment (ENVIRONMENT) and sys.stdin/stdout/stderr (on fds 0-2, which now are the run's) were set up
    # once in `main`; the harness itself never reads or writes them, so they hold no buffered data
    sys.argv = ["solution.py"]
    os.write(len(fds) - 1, b"1")
    os.close(len(fds) - 1)


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


def candidate_main(job: dict, code, fds: list[int], syscall_filter=None) -> int:
    """The candidate's process. fds: stdin, stdout, stderr, then (call) results, or (assert) the link's in and
    out, then the ready marker."""
    enter_child(job, fds, syscall_filter)
    kind = job["kind"]
    env = {"__name__": "__main__" if kind == "stdio" else "solution", "__builtins__": builtins}
    try:
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
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            _exit(body(*args))
        except BaseException:  # anything escaping here is the wrapper's own failure
            _exit(EXIT_SETUP)
    return pid, os.pidfd_open(pid)
