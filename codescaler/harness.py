"""The harness that runs *inside* the sandbox (stdlib only; started by `codescaler.sandbox`).

One harness process is a warm worker in its own bubblewrap sandbox (or the
`unshare` fallback). It serves jobs over the control socket and runs every
candidate run ("unit": one stdio case, all call cases, or one assert test) in a
fresh process forked from itself, so no state passes from one candidate to the
next. Each forked process gets rlimits (address space, CPU time, file size,
processes, open files, no core files), a scrubbed environment, only the fds it
needs (never the control socket), and a private work directory. When the unit
ends or hits a limit, the harness SIGKILLs every other process in the sandbox's
PID namespace and empties /tmp, so nothing a candidate started survives.
Candidate code is compiled here, before the fork (a syntax error needs no
process), and so are the test and the problem statement.

The harness refuses to start unless it is in PID and user namespaces other
than the caller's (`confinement_problem`): `sweep` kills every process it can
see, which is only safe inside the sandbox's own PID namespace.

The harness is non-dumpable, and so is every process forked from it: another
process of the same uid cannot ptrace it or read its memory and fds through
/proc. Results:

* stdio: the parent gets the raw stdout and compares it.
* call: the candidate process encodes each return value with exact builtin
  types (`wire.encode`); the parent decodes fresh builtins and compares.
* assert: two processes. The *tester* holds only trusted code (the problem
  statement and its test) and reaches the candidate's process through
  `wire.Remote` proxies, which bring back copies of plain data or opaque
  handles, never a candidate object. When `check` returns, the tester echoes a
  per-run secret (given to it after the fork) on a report pipe that only it
  and the harness hold. The candidate can make the test fail, but it cannot
  reach the tester's memory, fds or comparisons.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import fcntl
import gc
import math
import os
import resource
import select
import signal
import sys
import time
import traceback

try:
    from codescaler import testcode, wire
except ImportError:  # inside the sandbox these are mounted next to this file (the script's directory, sys.path[0])
    import testcode
    import wire

CONTROL_FD = 3  # set from argv; the candidate never holds it
# Set by `main` only after `confinement_problem` found this process in private PID and user
# namespaces. `sweep` (kill everything visible) refuses to run before that: outside a PID
# namespace as root it would kill every process on the machine.
CONFINED = False
# Exit codes of the candidate wrapper; a candidate may fake them, but none means "passed".
EXIT_MEMORY = 201
EXIT_SYNTAX = 202
EXIT_SETUP = 203  # the wrapper itself failed before the candidate ran
PR_SET_DUMPABLE = 4
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "OMP_NUM_THREADS": "1"}  # all a run's process sees
# Modules imported once by the warm harness, so that forked runs find them loaded (what HumanEval-,
# MBPP- and contest-style solutions and tests import most). Only the stdlib; a run's changes to them
# stay in its own copy-on-write process. Every preloaded byte is paid again at each fork (page tables:
# ~50 us per MB here), so not hashlib: its OpenSSL adds 3.7 MB for a module few solutions import.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "random", "fractions", "decimal", "copy", "statistics", "dataclasses", "operator")
_read, _exit = os.read, os._exit
# A process of the sandbox's uid may lower another one's rlimits (prlimit), raise its nice value, or change its
# scheduling policy or CPU affinity, with no ptrace rights. The harness outlives every run, and later runs would
# inherit or suffer such a change, so after each run it compares itself with how it started (`process_state`)
# and, if anything changed, fails that run and retires (the parent starts a fresh worker).
RLIMITS = tuple(getattr(resource, n) for n in sorted(dir(resource)) if n.startswith("RLIMIT_"))
BASELINE: tuple = ()  # process_state(0) when the harness started
PREPARED: dict = {}  # (test, statement) -> testcode.analyse_assert(...), at most 256, oldest dropped first
NOT_PRELOADED: set = set()  # test imports that failed or started threads when tried (`imports_cleanly`)


# ---------------------------------------------------------------- process hygiene


def host_namespaces() -> str:
    """The caller's PID and user namespaces, e.g. "pid:[4026531836],user:[4026531837]" (given to the harness)."""
    return ",".join(os.readlink(f"/proc/self/ns/{ns}") for ns in ("pid", "user"))


def confinement_problem(host_ns: str) -> str:
    """Why this process must not run candidates, or "" when it is confined.

    Confined means: in a PID namespace and a user namespace other than the
    host's (`host_ns`, the parent's `host_namespaces()`). In a private PID
    namespace no process outside it can even be named by kill(); in a private
    user namespace no capability of the host applies.
    """
    try:
        pid_ns, user_ns = host_ns.split(",")
        if os.readlink("/proc/self/ns/pid") == pid_ns:
            return "not in a private PID namespace"
        if os.readlink("/proc/self/ns/user") == user_ns:
            return "not in a private user namespace"
    except (OSError, ValueError) as e:
        return f"cannot check confinement ({type(e).__name__}: {e})"
    return ""


def sweep(keep: set[int], children: tuple = ()) -> None:
    """SIGKILL every process visible in /proc except `keep` and pid 1, and reap our children.

    `children` (pids we forked) are waited for directly; only processes reparented
    elsewhere are polled for. Only ever inside the sandbox's own PID namespace (see CONFINED).
    """
    if not CONFINED:
        raise RuntimeError("sweep() outside a verified sandbox PID namespace would kill the host's processes")
    for attempt in range(200):
        victims = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and int(p) != 1]
        if not victims:
            break
        if attempt:
            time.sleep(0.001)  # something not ours (reaped by the sandbox's init) is still dying
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in children:
            if pid in victims:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        reap()
    else:
        raise RuntimeError("processes survived the sweep")
    reap()


def process_state(pid: int) -> tuple:
    """What another process of the same uid can change in process `pid` (0: this one): rlimits, nice, policy, CPUs."""
    return (tuple(resource.prlimit(pid, r) for r in RLIMITS), os.getpriority(os.PRIO_PROCESS, pid),
            os.sched_getscheduler(pid), os.sched_getparam(pid).sched_priority, frozenset(os.sched_getaffinity(pid)))


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wipe_tmp() -> None:
    """Empty /tmp (the sandbox's own tmpfs); raise when something stays, so the worker is replaced."""
    for root, dirs, files in os.walk("/tmp", topdown=False):
        for name in files + dirs:
            path = os.path.join(root, name)
            try:
                os.chmod(root, 0o700)
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass
    if os.listdir("/tmp"):
        raise RuntimeError("/tmp could not be emptied")


# ---------------------------------------------------------------- forked processes


def set_limits(job: dict) -> None:
    mem = job["memory_mb"] << 20
    cpu = int(math.ceil(job["timeout"] * job["cpu_cases"] + job["startup_s"])) + 1
    for res, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_FSIZE, job["disk_mb"] << 20), (resource.RLIMIT_NPROC, job["max_procs"]),
                     (resource.RLIMIT_NOFILE, 256)):
        resource.setrlimit(res, (val, val))


def enter_child(job: dict, fds: list[int]) -> None:
    """In a freshly forked process: `fds` become 0..n-1 and every other fd closes; limits, env, workdir.

    The last fd is the ready marker: one byte is written to it and it is closed when set-up is done. A
    process whose marker came never ran any code but ours, so only then is its failure infrastructure;
    after it, an exit code of ours (EXIT_SETUP...) may be the candidate's own `os._exit(203)`.
    """
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]  # out of the way of the targets first
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(len(fds), 1 << 16)
    os.chdir(job["workdir"])
    set_limits(job)
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


def candidate_main(job: dict, code, fds: list[int]) -> int:
    """The candidate's process. fds: stdin, stdout, stderr, then (call) results, or (assert) the link's in and
    out, then the ready marker."""
    enter_child(job, fds)
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
            try_send(3, {"error": "SystemExit"})
        return e.code if isinstance(e.code, int) and 0 <= e.code < 200 else 1
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as e:  # the candidate's own error, reported as a failure
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        return 1
    finally:
        flush_std()


def tester_main(job: dict, fds: list[int]) -> int:
    """The tester's process (assert tests); trusted code only. fds: stdin, stdout, stderr,
    link in, link out, secret, report, ready marker. Echoes the secret on the report pipe when `check` returned."""
    enter_child(job, fds)
    link = wire.Link(4, 3, job["output_limit"])
    env = {"__name__": "test", "__builtins__": builtins}
    try:
        if job["setup_code"] is not None:
            try:
                exec(job["setup_code"], env)
            except Exception:  # a statement that does not run on its own just gives no helpers
                pass
        entry, names = link.ask({"op": "start", "names": job["remote_names"]})
        env.update(names)
        exec(job["check_code"], env)
        env["check"](entry)
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as e:  # the test failed, or the candidate failed it
        try_send(6, {"error": f"{type(e).__name__}: {e}"[:300], "assert": isinstance(e, AssertionError),
                     "unsupported": isinstance(e, wire.Unsupported), "output_limit": isinstance(e, wire.OverLimit)})
        return 1
    finally:
        flush_std()
    wire.write_all(6, _read(5, 64))
    return 0


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, MemoryError):
            pass


def try_send(fd: int, obj) -> None:
    try:
        wire.send_frame(fd, obj)
    except (OSError, ValueError, TypeError):
        pass


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


# ---------------------------------------------------------------- one run


def compile_job(job: dict) -> tuple[object, str]:
    """(code object, "") or (None, the syntax error). Compiling only parses: no candidate code runs here."""
    try:
        return compile(job["code"], "solution.py", "exec", dont_inherit=True), ""
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
        return None, f"{type(e).__name__}: {e}"


def prepare_assert(job: dict) -> None:
    """Compile the test and the statement for the tester, and find the names the test takes from the candidate.

    Kept per (test, statement): the candidates of one problem (a GRPO group, a best-of-N pool) share it.
    """
    key = (job["check"], job.get("setup") or "")
    if key not in PREPARED:
        if len(PREPARED) >= 256:
            PREPARED.pop(next(iter(PREPARED)))
        PREPARED[key] = testcode.analyse_assert(job["check"], key[1])
        preload_test_imports(ast.parse(job["check"]))
    job["check_code"], job["setup_code"], job["remote_names"], job["unsupported"] = PREPARED[key]


def preload_test_imports(tree: ast.AST) -> None:
    """Import here, once, the modules a test imports at its top (pytest takes ~0.15 s), so that every forked
    tester finds them loaded. Only the test's own imports (trusted code), never the candidate's, and only
    those that import cleanly and leave a process single-threaded (`imports_cleanly`): the harness forks
    every run, which must never happen with other threads alive."""
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        for name in names:
            if name in sys.modules or name in NOT_PRELOADED:
                continue
            if not imports_cleanly(name):
                NOT_PRELOADED.add(name)
                continue
            __import__(name)
            gc.freeze()  # the new modules' objects, like PRELOAD's, are never scanned again
            flush_std()  # what an import printed goes to the harness's own fds, never into a later run's


def imports_cleanly(name: str) -> bool:
    """Whether importing `name` succeeds and starts no thread, tried in a forked process first."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            __import__(name)
            ok = len(os.listdir("/proc/self/task")) == 1
        except BaseException:  # any failure means: do not import it in the harness
            pass
        os.write(w, b"1" if ok else b"0")
        _exit(0)
    os.close(w)
    try:
        return os.read(r, 1) == b"1"
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def run_unit(job: dict, code, stdin_data: str | None) -> dict:
    """Run one unit in fresh processes, watch it against the limits, kill everything left. Returns its fate."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin_fd = os.memfd_create("stdin")
    if stdin_data:
        wire.write_all(stdin_fd, stdin_data.encode("utf-8", "surrogatepass"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    fds = [stdin_fd, out_w, err_w]
    ours = [out_r, err_r]
    os.makedirs(job["workdir"], mode=0o700, exist_ok=True)
    start = time.monotonic()
    res_r = secret_w = tester = None
    ready_r, ready_w = os.pipe()  # the candidate's ready marker (enter_child)
    if job["kind"] == "call":
        res_r, res_w = os.pipe()
        cand = fork(candidate_main, job, code, fds + [res_w, ready_w])
        theirs = fds + [res_w, ready_w]
    elif job["kind"] == "assert":
        req_r, req_w = os.pipe()  # tester -> candidate
        rep_r, rep_w = os.pipe()  # candidate -> tester
        secret_r, secret_w = os.pipe()
        res_r, res_w = os.pipe()  # tester -> harness: the report
        tester_ready_r, tester_ready_w = os.pipe()
        # the tester is set up before the candidate exists, so that no failure of its set-up can be the candidate's
        tester = fork(tester_main, job, fds + [rep_r, req_w, secret_r, res_w, tester_ready_w])
        os.close(tester_ready_w)
        tester_ready = os.read(tester_ready_r, 1) == b"1"
        os.close(tester_ready_r)
        if not tester_ready:
            os.waitpid(tester[0], 0)
            for fd in fds + ours + [req_r, req_w, rep_r, rep_w, secret_r, secret_w, res_r, res_w, ready_r, ready_w,
                                    tester[1]]:
                os.close(fd)
            sweep({os.getpid()})
            wipe_tmp()
            return {"fate": "exit", "code": EXIT_SETUP, "stderr": "the tester process failed to start", "stdout": "",
                    "results": [], "seconds": round(time.monotonic() - start, 4)}
        cand = fork(candidate_main, job, code, fds + [req_r, rep_w, ready_w])
        theirs = fds + [req_r, req_w, rep_r, rep_w, secret_r, res_w, ready_w]
    else:
        cand = fork(candidate_main, job, code, fds + [ready_w])
        theirs = fds + [ready_w]
    for fd in theirs:
        os.close(fd)
    secret = b""
    if secret_w is not None:  # made after the forks: no process but the tester ever holds it
        secret = os.urandom(16).hex().encode()
        wire.write_all(secret_w, secret)
        os.close(secret_w)
    try:
        fate = watch(job, start, cand, tester, out_r, err_r, res_r)
    finally:
        for fd in ours + [res_r, cand[1]] + ([tester[1]] if tester else []):
            if fd is not None:
                os.close(fd)
        sweep({os.getpid()}, (cand[0],) + ((tester[0],) if tester else ()))
        wipe_tmp()
        ran = os.read(ready_r, 1) == b"1"  # every writer is gone: data or end of file, at once
        os.close(ready_r)
    if process_state(0) != BASELINE:  # checked after the sweep: no other process is left to change it
        fate["tampered"] = True
    if tester is None:
        fate["ran"] = ran
    elif "candidate" in fate:
        fate["candidate"]["ran"] = ran
    if tester is not None:
        raw = fate.pop("raw_results", b"")
        fate["passed"] = bool(secret) and raw == secret
        if not fate["passed"]:
            wire.parse_frames(bytearray(raw), fate["results"])
    fate["seconds"] = round(time.monotonic() - start, 4)
    return fate


def exit_fate(status: int) -> dict:
    code = os.waitstatus_to_exitcode(status)
    if code == EXIT_MEMORY:
        return {"fate": "memory_limit", "code": code}
    if code == -signal.SIGXCPU:
        return {"fate": "timeout", "code": code}
    return {"fate": "exit", "code": code}


def watch(job, start, cand, tester, out_r, err_r, res_r) -> dict:
    """Drain the unit's pipes until the main process (the tester, else the candidate) exits or a limit hits.

    The fate is the main process's; for assert tests `candidate` holds the candidate's own when it ended first.
    """
    per_case = job["timeout"]
    deadline = start + per_case + job["startup_s"]
    main_pid, main_fd = tester or cand
    out, err, res = bytearray(), bytearray(), bytearray()
    results: list = []
    limit = job["output_limit"]
    fate: dict = {}
    cand_fate = None
    open_fds = {out_r: out, err_r: err}
    if res_r is not None:
        open_fds[res_r] = res
    exited = False
    while not fate:
        now = time.monotonic()
        if now >= deadline:
            fate = {"fate": "timeout"}
            break
        # once the main process has exited, only drain what is already in the pipes (never wait for writers left behind)
        waiting = [] if exited else [main_fd] + ([cand[1]] if tester and cand_fate is None else [])
        ready, _, _ = select.select(list(open_fds) + waiting, [], [], 0.0 if exited else deadline - now)
        for fd in ready:
            if fd == main_fd:
                exited = True
            elif tester and fd == cand[1]:
                cand_fate = exit_fate(os.waitpid(cand[0], 0)[1])
            else:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    del open_fds[fd]
                    continue
                buf = open_fds[fd]
                buf += chunk
                if fd == err_r:
                    del buf[:-4000]
                    continue
                if len(out) + len(res) > limit:
                    fate = {"fate": "output_limit"}
                    break
                if fd == res_r and job["kind"] == "call":
                    before = len(results)
                    wire.parse_frames(res, results)
                    if len(results) > before:  # the per-case clock restarts at each answer
                        deadline = time.monotonic() + per_case
        if exited and not ready:
            break
    if not fate:
        fate = exit_fate(os.waitpid(main_pid, 0)[1])
    if cand_fate is not None:
        fate["candidate"] = cand_fate
    fate["stdout"] = out.decode("utf-8", "replace") if job["kind"] == "stdio" else ""
    fate["stderr"] = err.decode("utf-8", "replace")[-500:]
    fate["results"] = results
    if tester:
        fate["raw_results"] = bytes(res)
    return fate


def run_job(job: dict) -> dict:
    job["workdir"] = f"/tmp/run-{time.monotonic_ns()}"
    code, error = compile_job(job)
    if code is None:
        return {"units": [{"fate": "exit", "code": EXIT_SYNTAX, "stderr": error, "stdout": "", "results": [],
                           "seconds": 0.0}]}
    if job["kind"] == "stdio":
        units = []
        job["cpu_cases"] = 1
        for text in job["inputs"]:
            fate = run_unit(job, code, text)
            units.append(fate)
            if fate["fate"] in ("timeout", "memory_limit", "output_limit") or fate.get("tampered"):
                break  # later cases would hit the same limit; they count as not passed
        return {"units": units}
    if job["kind"] == "assert":
        try:
            prepare_assert(job)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as e:  # the problem's test, not the candidate
            return {"units": [{"fate": "exit", "code": EXIT_SETUP, "stderr": f"the test does not compile: {e}",
                               "stdout": "", "results": [], "seconds": 0.0}]}
        if job["unsupported"]:  # an infrastructure limit, never a verdict on the candidate: no process runs
            return {"units": [{"fate": "exit", "code": 0, "stderr": "", "stdout": "", "seconds": 0.0,
                               "results": [{"error": job["unsupported"], "unsupported": True}]}]}
    job["cpu_cases"] = len(job.get("inputs") or [None])
    return {"units": [run_unit(job, code, None)]}


# ---------------------------------------------------------------- main loop


def main(argv: list[str]) -> int:
    """harness.py CONTROL_FD HOST_NS [EXTRA_SYS_PATH...]"""
    global CONTROL_FD, CONFINED, BASELINE
    CONTROL_FD, host_ns = int(argv[1]), argv[2]
    why = confinement_problem(host_ns)
    if why:
        print(f"harness: refusing to run: {why}", file=sys.stderr)
        return 3
    CONFINED = True
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p != here] + argv[3:]  # candidates cannot import the harness by name
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(ENVIRONMENT)
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # what is loaded now is never scanned again, so forked runs do not copy its pages to collect
    BASELINE = process_state(0)
    wire.send_frame(CONTROL_FD, {"hello": True, "python": sys.version.split()[0]})
    while True:
        job = wire.recv_frame(CONTROL_FD)
        if job is None:
            return 0
        try:
            reply = run_job(job)
        except Exception as e:  # an infrastructure failure: reported, and the parent replaces the worker
            reply = {"harness_error": f"{type(e).__name__}: {e}"}
        if any(u.get("tampered") for u in reply.get("units", ())):
            reply["retire"] = True  # the parent starts a fresh worker for the next candidate
        wire.send_frame(CONTROL_FD, reply)
        if "harness_error" in reply or "retire" in reply:
            return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv))
