"""The harness that runs *inside* the sandbox (stdlib only; started by `codescaler.sandbox`).

One harness process is a warm worker in its own bubblewrap sandbox (or the
`unshare` fallback). It serves jobs over the control socket and runs every
candidate run ("unit": one stdio case, all call cases, or one assert test) in a
fresh process, so no state passes from one candidate to the next. That process
is forked by the worker's forker (forker.py), itself forked from the harness at
start, before any job (under the syscall filter, by a generation of the forker
that installed the filter once): so a candidate's memory is a copy of one that
never held a test, an output or another candidate's code. Each candidate's
process gets rlimits (address space, CPU time, file size, processes, open
files, no core files), a scrubbed environment, only the fds it needs (never the
control socket), a private work directory and the syscall filter. When the unit
ends or hits a limit, the harness SIGKILLs every other process in the sandbox's
PID namespace (but its forker, generation and tester; none is left when the
candidate was the last process the namespace started, `last_pid`) and empties
/tmp, so nothing a candidate started survives. Candidate code is compiled here
(a syntax error needs no process) and reaches the candidate's process
marshalled, in a memfd that only that process reads.

The harness refuses to start unless it is in PID, user and mount namespaces
other than the caller's, with a tmpfs of its own on /tmp (`confinement_problem`):
`sweep` kills every process it can see and `wipe_tmp` empties /tmp, which is
only safe inside the sandbox.

The harness is non-dumpable, and so is every process forked from it: another
process of the same uid cannot ptrace it or read its memory and fds through
/proc. What such a process can still do to a long-lived one (signals, prlimit,
nice, affinity) the candidate's syscall filter refuses (seccomp.py), and it is
checked after every unit all the same (`forker.process_state`, `Tester.usable`).
Results:

* stdio: the parent gets the raw stdout and compares it.
* call: the candidate process encodes each return value with exact builtin
  types (`wire.encode`); the parent decodes fresh builtins and compares.
* assert: the worker's *tester* (tester.py), a process forked once and kept,
  holds only trusted code (problem statements and tests) and reaches the
  candidate's process through `wire.Remote` proxies, which bring back copies of
  plain data or opaque handles, never a candidate object. It says it is ready
  before the candidate's process exists; then the harness sends it a per-run
  secret, which it echoes when `check` returned, on a socket that only it and
  the harness hold. The candidate can make the test fail, but it cannot
  reach the tester's memory, fds or comparisons.
"""

from __future__ import annotations

import __future__
import ctypes
import gc
import os
import select
import signal
import socket
import sys
import time

try:
    from codescaler import forker, seccomp, wire
except ImportError:  # inside the sandbox these are mounted next to this file (the script's directory, sys.path[0])
    import forker
    import seccomp
    import wire

CONTROL_FD = 3  # set from argv; the candidate never holds it
# Set by `main` only after `confinement_problem` found this process in private PID, user and mount
# namespaces with a tmpfs of its own on /tmp. `sweep` (kill everything visible) and `wipe_tmp` refuse
# to run before that: outside the sandbox they would kill every process it can see and empty the
# machine's /tmp.
CONFINED = False
PR_SET_DUMPABLE = 4
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "OMP_NUM_THREADS": "1"}  # all a run's process sees
# Modules imported once by the warm harness, so that forked runs find them loaded (what HumanEval-,
# MBPP- and contest-style solutions and tests import most). Only the stdlib; a run's changes to them
# stay in its own copy-on-write process. Every preloaded byte is paid again at each fork (page tables:
# ~50 us per MB here), so not hashlib: its OpenSSL adds 3.7 MB for a module few solutions import. Nor
# random (nor statistics, which imports it): it reseeds itself in every forked process (os.register_at_fork),
# ~0.17 ms per fork here, while a candidate that imports it pays ~1.9 ms, so it pays off only when more than
# one candidate in eleven imports it. A tester imports it once, for all the tests that use it. Nor dataclasses
# (1 MB with the inspect, ast and dis it imports, ~50 us per fork): a solution that imports it pays ~7 ms, which
# pays off only when fewer than one candidate in ~150 does.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "fractions", "decimal", "copy", "operator")
# A process of the sandbox's uid may lower another one's rlimits (prlimit), raise its nice value, or change its
# scheduling policy or CPU affinity, with no ptrace rights. The harness outlives every run, and later runs would
# inherit or suffer such a change, so after each run it compares itself with how it started
# (`forker.process_state`) and, if anything changed, fails that run and retires (the parent starts a fresh worker).
BASELINE: tuple = ()  # forker.process_state(0) when the harness started
TESTER = None  # this worker's `Tester` while it has a healthy one
HERE = ""  # the harness's directory (set by `main`), where the tester's modules are
FORKER = None  # this worker's `forker.Forker`, started by `main` before the first job
GENERATION = None  # the forker's generation for the current syscall filter's key (`candidate_forker`)
PRELUDES: dict = {}  # statement prelude text -> its code object (`prelude_of`), at most 256, oldest dropped first
# candidate code and statement preludes are compiled with annotations deferred (`compile_job`)
DEFERRED_ANNOTATIONS = __future__.annotations.compiler_flag
# What of a job the candidate's process gets (forker.write_job): never the test of an assert job.
CANDIDATE_JOB = ("kind", "fn", "workdir", "timeout", "cpu_cases", "startup_s", "memory_mb", "disk_mb", "max_procs",
                 "header")
# The candidate's syscall filter (seccomp.py), which refuses its signals and limit changes aimed at our processes:
# whether the kernel takes one (probed by `main`), and our process group.
FILTERS = False
GROUP = 0


# ---------------------------------------------------------------- process hygiene


def confinement_problem(host_ns: str) -> str:
    """Why this process must not run candidates, or "" when it is confined.

    Confined means: in PID, user and mount namespaces other than the host's
    (`host_ns`, the parent's `launch.host_namespaces()`), with a tmpfs mounted on /tmp.
    In a private PID namespace no process outside it can even be named by
    kill(); in a private user namespace no capability of the host applies; and
    the /tmp this process empties after every run is its own.
    """
    try:
        for ns, host in zip(("pid", "user", "mnt"), host_ns.split(",")):
            if os.readlink(f"/proc/self/ns/{ns}") == host:
                return f"not in a private {ns} namespace"
        with open("/proc/self/mountinfo") as f:  # fields: id parent major:minor root mount-point ... - fstype ...
            if not any(line.split()[4] == "/tmp" and line.split(" - ")[1].split()[0] == "tmpfs" for line in f):
                return "/tmp is not a tmpfs of the sandbox's own"
    except (OSError, ValueError, IndexError) as e:
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


def last_pid() -> int:
    """The pid this PID namespace gave out last, or -1. When it is the candidate's, no process (nor thread) started
    after it; every unit before ended with only ours left (swept, or by this same test), and the candidate was
    reaped, so only ours are left now, and a sweep (listing /proc, ~0.08 ms) has nothing to do. Nothing in the
    sandbox can set it (that takes CAP_SYS_ADMIN in its user namespace)."""
    try:
        fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY)
        try:
            return int(os.read(fd, 32))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return -1


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
    if not CONFINED:
        raise RuntimeError("wipe_tmp() outside a verified sandbox would empty the machine's /tmp")
    names = os.listdir("/tmp")
    if len(names) == 1:  # most runs leave their working directory empty: no walk needed (~0.13 ms a unit)
        try:
            os.rmdir(os.path.join("/tmp", names[0]))
            return
        except OSError:  # not empty, or not a directory
            pass
    elif not names:
        return
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


def filter_key(job: dict) -> list | None:
    """What the next candidate's syscall filter protects: pid 1, us, the forker and the tester, and our process
    group (None: no filter). The generation that installs it adds itself."""
    if not (FILTERS and job.get("syscall_filter")):
        return None
    return [[1, os.getpid(), FORKER.pid] + ([TESTER.pid] if TESTER is not None else []), GROUP]


def candidate_forker(job: dict) -> forker.Forker:
    """What forks the next candidate: the generation for its filter's key (a new one when the key changed, with a
    new tester), or the forker itself when it runs without a filter."""
    global GENERATION
    key = filter_key(job)
    if key is None:
        return FORKER
    if GENERATION is not None and GENERATION.key != key:
        GENERATION.retire()
        GENERATION = None
    if GENERATION is None:
        GENERATION = FORKER.generation(key)
    return GENERATION


# ---------------------------------------------------------------- the tester (assert tests; tester.py)


def tester_process(job: dict, control: int) -> int:
    """The tester's process: fds 0-2 on /dev/null and the socket to us on 3, the run's limits but no CPU limit.

    tester.py (and testcode.py, with `ast`) is imported here, never in the harness: every page the harness holds
    is copied into page tables at each fork."""
    try:
        from codescaler import tester
    except ImportError:  # inside the sandbox: from the harness's directory, which `main` took off sys.path
        sys.path.insert(0, HERE)
        import tester
        sys.path.remove(HERE)
    null = os.open("/dev/null", os.O_RDWR)
    wire.place_fds([null, null, null, control])
    os.chdir("/tmp")
    forker.set_limits(job, cpu=False)
    try:
        return tester.serve(tester.CONTROL_FD)
    except MemoryError:
        return forker.EXIT_MEMORY


class Tester:
    """This worker's tester process: forked when the first assert test comes, kept while it stays healthy.

    It is replaced when it died, missed a report (a timeout, the output limit), runs under other limits than the
    next job's, or was changed by a candidate (`process_state`, checked after every unit's sweep)."""

    def __init__(self, job: dict):
        self.limits = tester_limits(job)
        self.sock, theirs = socket.socketpair()
        self.pid, self.pidfd = forker.fork(tester_process, job, theirs.fileno())
        theirs.close()
        self.sock.settimeout(10.0)  # for its answer to a unit: analysing a test only compiles it
        self.state: tuple | None = None  # process_state once it first answered (its limits are set by then)

    def begin(self, job: dict, fds: list[int]) -> dict | None:
        """Hand it a unit (the test and the unit's fds); its answer ({"ready"}, {"unsupported"}, {"bad_test"}),
        or None when it is gone."""
        try:
            wire.send_frame_fds(self.sock, {"check": job["check"], "setup": job.get("setup") or "",
                                            "workdir": job["workdir"], "output_limit": job["output_limit"]}, fds)
            answer = wire.recv_frame_sock(self.sock, 1 << 16)
            if answer is not None and self.state is None:
                self.state = forker.process_state(self.pid)
        except (OSError, ValueError):  # ProcessLookupError included
            return None
        return answer if isinstance(answer, dict) else None

    def usable(self) -> bool:
        return forker.healthy(self.pid, self.pidfd, self.state)

    def retire(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped already (watch, or sweep's reap)
            pass
        os.close(self.pidfd)
        self.sock.close()


def tester_limits(job: dict) -> tuple:
    return job["memory_mb"], job["disk_mb"], job["max_procs"]


def retire_tester() -> None:
    global TESTER
    if TESTER is not None:
        TESTER.retire()
        TESTER = None


def start_test(job: dict, fds: list[int]) -> dict | None:
    """Hand the unit to the tester (a fresh one when there is none, or it has other limits). None when it is
    ready for the candidate; else the unit's fate: the test cannot run this way, or no tester could start.
    Either way no candidate process exists yet, so nothing here is ever the candidate's doing."""
    global TESTER
    answer = None
    for _ in range(2):  # one that died between units (a candidate may kill it after its report) is replaced once
        if TESTER is not None and TESTER.limits != tester_limits(job):
            retire_tester()
        if TESTER is None:
            TESTER = Tester(job)
        answer = TESTER.begin(job, fds)
        if answer is not None:
            break
        retire_tester()
    done = {"stdout": "", "seconds": 0.0}
    if answer is None:
        return {"fate": "exit", "code": forker.EXIT_SETUP, "stderr": "the tester process failed to start", "results": [], **done}
    if "bad_test" in answer:
        return {"fate": "exit", "code": forker.EXIT_SETUP, "stderr": str(answer["bad_test"]), "results": [], **done}
    if "unsupported" in answer:  # an infrastructure limit, never a verdict on the candidate
        return {"fate": "exit", "code": 0, "stderr": "", "results": [{"error": answer["unsupported"], "unsupported": True}],
                **done}
    return None


# ---------------------------------------------------------------- one run


def compile_job(job: dict) -> tuple[object, str]:
    """(code object, "") or (None, the syntax error). Compiling only parses: no candidate code runs here.
    Annotations are compiled deferred (PEP 563; Python 3.14 defers them too, PEP 649): they are never evaluated
    when a function is defined, so `def f(xs: List[int])` without `from typing import List` is judged on what it
    does, as on Python 3.14, LeetCode or LiveCodeBench (which puts `from typing import *` before every solution)."""
    try:
        return compile(job["code"], "solution.py", "exec", flags=DEFERRED_ANNOTATIONS, dont_inherit=True), ""
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
        return None, f"{type(e).__name__}: {e}"


def prelude_of(job: dict):
    """The compiled statement prelude of an assert job (testcode.statement_prelude, made by the parent), or None.
    Kept per text: the candidates of one problem share it."""
    text = job.get("prelude") or ""
    if not text:
        return None
    if text not in PRELUDES:
        if len(PRELUDES) >= 256:
            PRELUDES.pop(next(iter(PRELUDES)))
        try:
            PRELUDES[text] = compile(text, "statement.py", "exec", flags=DEFERRED_ANNOTATIONS, dont_inherit=True)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
            PRELUDES[text] = None  # the parent parsed it; a statement that does not compile gives nothing
    return PRELUDES[text]


def run_unit(job: dict, code, stdin_data: str | None, prelude=None) -> dict:
    """Run one unit in a fresh candidate process (assert: against the tester), watch it against the limits, kill
    everything left. Returns its fate."""
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
    res_r = tester = None
    ready_r, ready_w = os.pipe()  # the candidate's ready marker (forker.enter_child)
    keys = CANDIDATE_JOB + (("inputs",) if job["kind"] == "call" else ())  # a call test's arguments, all cases
    job_fd = forker.write_job({k: job[k] for k in keys if k in job}, code, prelude)
    fds = [job_fd] + fds
    if job["kind"] == "call":
        res_r, res_w = os.pipe()
        spawner = candidate_forker(job)
        cand = spawner.spawn(fds + [res_w, ready_w])
        theirs = fds + [res_w, ready_w]
    elif job["kind"] == "assert":
        req_r, req_w = os.pipe()  # tester -> candidate
        rep_r, rep_w = os.pipe()  # candidate -> tester
        early = start_test(job, fds[1:] + [rep_r, req_w])
        if early is not None:
            for fd in fds + ours + [req_r, req_w, rep_r, rep_w, ready_r, ready_w]:
                os.close(fd)
            wipe_tmp()
            return early
        tester, res_r = (TESTER.pid, TESTER.pidfd), TESTER.sock.fileno()
        start = time.monotonic()  # the unit's clock starts with the candidate's process
        spawner = candidate_forker(job)  # after start_test: the key names the tester
        cand = spawner.spawn(fds + [req_r, rep_w, ready_w])
        theirs = fds + [req_r, req_w, rep_r, rep_w, ready_w]
    else:
        spawner = candidate_forker(job)
        cand = spawner.spawn(fds + [ready_w])
        theirs = fds + [ready_w]
    for fd in theirs:
        os.close(fd)
    secret = ""
    if tester is not None:  # made after the fork: no process but the tester ever holds it
        secret = os.urandom(16).hex()
        wire.try_send(res_r, {"secret": secret})
    fate: dict = {}
    try:
        fate = watch(job, start, spawner, cand, tester, out_r, err_r, res_r)
    finally:
        spawner.end(cand[1])  # the candidate's process is gone (reaped by its forker) before the sweep
        for fd in ours + ([res_r] if tester is None and res_r is not None else []) + [cand[1]]:
            os.close(fd)
        # the tester lives on unless this unit was its and it did not report (it is killed here then)
        kept = TESTER is not None and (tester is None or "report" in fate)
        # no sweep when the tester stays and no process started after the candidate: only ours can be left
        if (tester is not None and not kept) or last_pid() != cand[0]:
            ours_alive = {os.getpid(), FORKER.pid} | ({GENERATION.pid} if GENERATION is not None else set())
            sweep(ours_alive | ({TESTER.pid} if kept else set()), (tester[0],) if tester else ())
        wipe_tmp()
        ran = os.read(ready_r, 1) == b"1"  # every writer is gone: data or end of file, at once
        os.close(ready_r)
    # after the sweep, when no candidate process is left
    if forker.process_state(0) != BASELINE or not all(f.usable() for f in (FORKER, GENERATION) if f is not None):
        fate["tampered"] = True
    # after any unit, since a stdio or call candidate can reach the idle tester too: a changed tester is replaced.
    # Its candidate is not failed for it: trusted test code may have changed it, and a change can only ever have
    # failed that candidate's own test (less memory, fewer fds, lower priority), never passed it.
    if TESTER is not None and (fate.get("tampered") or not kept or not TESTER.usable()):
        retire_tester()
    if tester is None:
        fate["ran"] = ran
    else:
        if "candidate" in fate:
            fate["candidate"]["ran"] = ran
        report = fate.pop("report", None)
        fate["passed"] = isinstance(report, dict) and report.get("ok") == secret
        fate["results"] = [report] if isinstance(report, dict) and not fate["passed"] else []
    fate["seconds"] = round(time.monotonic() - start, 4)
    return fate


def watch(job, start, spawner, cand, tester, out_r, err_r, res_r) -> dict:
    """Drain the unit's pipes until the main process ends or a limit hits.

    The main process is the candidate, or for assert tests the tester, which ends the unit with a report on its
    socket (`res_r`) and lives on. The fate is the main process's: for assert tests `report` holds the tester's
    report when one came, and `candidate` the candidate's own fate when it ended first.
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
    done = False
    while not fate:
        now = time.monotonic()
        if now >= deadline:
            fate = {"fate": "timeout"}
            break
        # once the main process has ended, only drain what is already in the pipes (never wait for writers left behind)
        waiting = [] if done else [main_fd] + ([cand[1]] if tester and cand_fate is None else [])
        ready, _, _ = select.select(list(open_fds) + waiting, [], [], 0.0 if done else deadline - now)
        for fd in ready:
            if fd == main_fd:
                done = True
            elif tester and fd == cand[1]:
                cand_fate = forker.exit_fate(spawner.status())
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
                if fd == res_r:
                    before = len(results)
                    wire.parse_frames(res, results)
                    if tester and results:
                        done = True  # the tester's report: it closed the unit's fds before sending it
                    elif len(results) > before:  # the per-case clock restarts at each answer
                        deadline = time.monotonic() + per_case
        if done and not ready:
            break
    report = results[0] if tester and results and isinstance(results[0], dict) else {}
    if cand_fate is None and str(report.get("error", "")).startswith("CandidateExited"):
        # its process ended (a memory limit, say) and closed the link before it could be reaped: wait for its status
        if select.select([cand[1]], [], [], max(0.0, min(1.0, deadline - time.monotonic())))[0]:
            cand_fate = forker.exit_fate(spawner.status())
    if not fate:
        fate = {"fate": "exit", "code": 0, "report": results[0]} if tester and results else \
            forker.exit_fate(os.waitpid(main_pid, 0)[1] if tester else spawner.status())
    if cand_fate is not None:
        fate["candidate"] = cand_fate
    fate["stdout"] = out.decode("utf-8", "replace") if job["kind"] == "stdio" else ""
    fate["stderr"] = err.decode("utf-8", "replace")[-500:]
    fate["results"] = results
    return fate


def run_job(job: dict) -> dict:
    job["workdir"] = f"/tmp/run-{time.monotonic_ns()}"
    code, error = compile_job(job)
    if code is None:
        return {"units": [{"fate": "exit", "code": forker.EXIT_SYNTAX, "stderr": error, "stdout": "", "results": [],
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
    job["cpu_cases"] = len(job.get("inputs") or [None])
    return {"units": [run_unit(job, code, None, prelude_of(job) if job["kind"] == "assert" else None)]}


# ---------------------------------------------------------------- main loop


def main(argv: list[str]) -> int:
    """Run as `harness_main.py CONTROL_FD HOST_NS CPU HEADER [EXTRA_SYS_PATH...]` (CPU: "" or the one CPU to run on;
    HEADER: "none" or the import header whose namespace candidates find made, `forker.preload_header`)."""
    global CONTROL_FD, CONFINED, BASELINE, HERE, FILTERS, GROUP, FORKER
    CONTROL_FD, host_ns = int(argv[1]), argv[2]
    why = confinement_problem(host_ns)
    if why:
        print(f"harness: refusing to run: {why}", file=sys.stderr)
        return 3
    CONFINED = True
    HERE = os.path.dirname(os.path.abspath(__file__))
    # our directory off the import path: a candidate's `import tester` (or a name that a file of ours shadows) does
    # not find our files; the modules already loaded stay in sys.modules, like all else in the memory it copies
    sys.path[:] = [p for p in sys.path if p != HERE] + argv[5:]
    if argv[3]:  # before BASELINE (a change after it is a candidate's doing) and before forking anything
        os.sched_setaffinity(0, {int(argv[3])})
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(ENVIRONMENT)
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    for name in PRELOAD:
        __import__(name)
    forker.preload_header(argv[4])
    gc.freeze()  # what is loaded now is never scanned again, so forked runs do not copy its pages to collect
    BASELINE = forker.process_state(0)
    FILTERS, GROUP = seccomp.works(), os.getpgid(0)
    # free heap pages left from start-up back to the kernel: the forker, its generations and
    # every candidate would inherit them resident (~0.6 MB of ~9 MB here), and each fork and exit walks them
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; other C libraries may lack it
    if trim is not None:
        trim(0)
    FORKER = forker.Forker.start()  # now, while our memory holds no job: every candidate's process is a copy of its
    wire.send_frame(CONTROL_FD, {"hello": True, "python": sys.version.split()[0], "syscall_filter": FILTERS})
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

