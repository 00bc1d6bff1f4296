"""The harness that runs *inside* the sandbox (stdlib only; started by `codescaler.sandbox`).

One harness process is a warm worker: it serves many jobs over the control
socket (fd 3) and runs every candidate in fresh forked processes. Two roles:

* `candidate`: runs candidate code. Per unit (one stdio case, or all call
  cases, or one assert run) it forks a helper that unshares a new user, pid
  and mount namespace, and forks the candidate as pid 1 of that namespace with
  its own empty tmpfs on /tmp, its own /proc, no capabilities, no-new-privs,
  rlimits (address space, CPU, file size, processes, open files) and only the
  fds it needs (never the control socket). When the unit ends or hits a limit,
  the harness SIGKILLs every other process in the worker's pid namespace, so
  nothing a candidate started survives into the next unit.
* `judge`: runs the trusted assert test (`check`) in its own sandbox. The
  `candidate` callable it passes to `check` is a proxy that sends the arguments
  to the candidate process over a per-run socketpair and gets back plain values
  only (see `encode`/`decode`), so objects with a forged `__eq__`, patched
  modules and `sys.exit` inside the candidate cannot make `check` pass. The
  judge reports "check returned" to the parent together with the per-run secret
  the parent gave it; the candidate's sandbox never sees the secret or the test.

The harness itself is non-dumpable, so a candidate (in a child user namespace)
cannot read its memory or fds through /proc.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

CONTROL_FD = 3  # set from argv; the candidate never holds it
WIPE_TMP = False  # only when /tmp is private to this sandbox, never the host's
# Set by `main` only after `confinement_problem` found this process in a private PID namespace and
# not mapped to host root. `sweep` (kill everything visible) refuses to run before that: outside a
# PID namespace as root it would kill every process on the machine.
CONFINED = False
MAX_FRAME = 1 << 30
# Exit codes the candidate wrapper uses; a candidate may fake them, but none means "passed".
EXIT_MEMORY = 201
EXIT_SYNTAX = 202
EXIT_SETUP = 203  # the wrapper itself failed before the candidate ran

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x10000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
PLAIN_SCALARS = (type(None), bool, int, float, str)


# ---------------------------------------------------------------- value codec


class NotPlain(TypeError):
    """A value that is not made of plain builtin JSON-able types."""


def encode(value, depth: int = 0):
    """A JSON-able form of a plain value; exact types only, so subclasses are refused.

    Lists are JSON lists; tuples, dicts and non-finite floats become one-key
    tagged objects, so `decode(encode(v)) == v` with the same types.
    """
    if depth > 200:
        raise NotPlain("value nested too deeply")
    t = type(value)
    if t is float and not math.isfinite(value):
        return {"__f": repr(value)}
    if t in PLAIN_SCALARS:
        return value
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"__t": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"__d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise NotPlain(f"returned {t.__module__}.{t.__qualname__}, not a plain builtin type")


def decode(obj):
    """Inverse of `encode`; raises ValueError on anything `encode` cannot produce."""
    t = type(obj)
    if t in PLAIN_SCALARS:
        return obj
    if t is list:
        return [decode(v) for v in obj]
    if t is dict and len(obj) == 1:
        (tag, inner), = obj.items()
        if tag == "__f" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        if tag == "__t" and type(inner) is list:
            return tuple(decode(v) for v in inner)
        if tag == "__d" and type(inner) is list:
            out = {}
            for pair in inner:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("bad dict item")
                out[decode(pair[0])] = decode(pair[1])
            return out
    raise ValueError(f"not an encoded plain value: {str(obj)[:80]}")


# ---------------------------------------------------------------- framing


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_frame(fd: int, obj) -> None:
    data = json.dumps(obj).encode()
    write_all(fd, struct.pack("!I", len(data)) + data)


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, limit: int = MAX_FRAME):
    """The next frame's object, or None at end of stream; ValueError when over `limit` or not JSON."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > limit:
        raise ValueError(f"frame of {n} bytes is over the limit")
    body = read_exact(fd, n)
    if body is None:
        return None
    return json.loads(body)


def recv_frame_sock(sock: socket.socket, limit: int):
    """`recv_frame` for a socket with a timeout (socket.timeout is an OSError)."""

    def exact(n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    head = exact(4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > limit:
        raise ValueError(f"frame of {n} bytes is over the limit")
    body = exact(n)
    return None if body is None else json.loads(body)


def recv_job(sock: socket.socket):
    """A control frame plus at most one passed fd (SCM_RIGHTS rides on the length header)."""
    head, fds, _, _ = socket.recv_fds(sock, 4, 1)
    if not head:
        return None, None
    if len(head) < 4:
        rest = read_exact(sock.fileno(), 4 - len(head))
        if rest is None:
            return None, None
        head += rest
    (n,) = struct.unpack("!I", head)
    body = read_exact(sock.fileno(), n)
    if body is None:
        return None, None
    return json.loads(body), (fds[0] if fds else None)


# ---------------------------------------------------------------- process hygiene


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def set_dumpable(flag: int) -> None:
    libc().prctl(PR_SET_DUMPABLE, flag, 0, 0, 0)


def drop_capabilities() -> None:
    """Clear every capability set (the candidate holds caps in its own user namespace otherwise)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    if libc().capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


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
        if host_namespaces() == host_ns:
            return "not in private PID and user namespaces"
        pid_ns, user_ns = host_ns.split(",")
        if os.readlink("/proc/self/ns/pid") == pid_ns:
            return "not in a private PID namespace"
        if os.readlink("/proc/self/ns/user") == user_ns:
            return "not in a private user namespace"
    except (OSError, ValueError) as e:
        return f"cannot check confinement ({type(e).__name__}: {e})"
    return ""


def sweep(keep: set[int]) -> int:
    """SIGKILL every process visible in /proc except `keep` and pid 1; reap our children. Returns kills.

    Only ever inside the sandbox's own PID namespace (see CONFINED).
    """
    if not CONFINED:
        raise RuntimeError("sweep() outside a verified sandbox PID namespace would kill the host's processes")
    killed = 0
    for _ in range(20):
        victims = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and int(p) != 1]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        reap()
        time.sleep(0.001)
    reap()
    return killed


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wipe_tmp() -> None:
    """Empty /tmp (only matters when a candidate could not get its own tmpfs)."""
    wipe_tree("/tmp", keep_root=True)


def wipe_tree(top: str, keep_root: bool = False) -> None:
    for root, dirs, files in os.walk(top, topdown=False):
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
    if not keep_root:
        try:
            os.rmdir(top)
        except OSError:
            pass


# ---------------------------------------------------------------- candidate side


def enter_private_namespaces(tmp_mb: int) -> str:
    """In the forked helper: new user+pid+mount namespaces. Returns "" or why it failed."""
    uid, gid = os.getuid(), os.getgid()
    if libc().unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS) != 0:
        return f"unshare failed (errno {ctypes.get_errno()})"
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    return ""


def private_mounts(tmp_mb: int) -> bool:
    """In the candidate (pid 1 of its namespace): fresh /tmp, /dev/shm and /proc."""
    lc = libc()
    if lc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    opts = f"size={tmp_mb}m,mode=1777".encode()
    ok = lc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0
    lc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, opts)
    lc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    return ok


def set_limits(job: dict) -> None:
    mem = job["memory_mb"] << 20
    cpu = int(math.ceil(job["timeout"] * max(1, job.get("cpu_cases", 1)))) + 1
    for res, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_FSIZE, job["disk_mb"] << 20), (resource.RLIMIT_NPROC, job["max_procs"]),
                     (resource.RLIMIT_NOFILE, 256)):
        resource.setrlimit(res, (val, val))


def run_candidate(job: dict, fds: dict) -> int:
    """Body of the candidate process: set up, run the candidate code, return the exit code."""
    os.dup2(fds["stdin"], 0)
    os.dup2(fds["stdout"], 1)
    os.dup2(fds["stderr"], 2)
    extra = fds.get("extra")
    if extra is not None:
        os.dup2(extra, 3)
    os.closerange(4 if extra is not None else 3, 1 << 16)
    set_limits(job)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.argv = ["solution.py"]
    try:
        code = compile(job["code"], "solution.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_SYNTAX
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    kind = job["kind"]
    try:
        if kind == "stdio":
            exec(code, env)
            return 0
        exec(code, env)
        fn = find_function(env, job["fn"])
        if kind == "call":
            serve_calls(fn, job["inputs"])
        else:
            serve_rpc(fn)
        return 0
    except SystemExit as e:
        if e.code is None or e.code == 0:
            return 0
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) and 0 < e.code < 200 else 1
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as e:  # the candidate's own error, reported as a runtime error
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        if kind == "assert":
            try_send(3, {"error": f"{type(e).__name__}: {e}"[:500]})
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, MemoryError):
                pass


def find_function(env: dict, name: str):
    """A top-level function `name`, else a method of `Solution` (LeetCode style)."""
    fn = env.get(name)
    if callable(fn):
        return fn
    cls = env.get("Solution")
    if isinstance(cls, type) and callable(getattr(cls, name, None)):
        return getattr(cls(), name)
    raise NameError(f"no function {name!r} (nor Solution.{name}) is defined")


def try_send(fd: int, obj) -> None:
    try:
        send_frame(fd, obj)
    except (OSError, ValueError, TypeError):
        pass


def serve_calls(fn, inputs: list) -> None:
    for i, args in enumerate(inputs):
        try:
            value = fn(*decode(args))
            reply = {"i": i, "ok": encode(value)}
        except NotPlain as e:
            reply = {"i": i, "bad": str(e)}
        except MemoryError:
            raise
        except Exception as e:  # the candidate failed on this case; the next cases still run
            reply = {"i": i, "exc": f"{type(e).__name__}: {e}"[:300]}
        send_frame(3, reply)


def serve_rpc(fn) -> None:
    """Answer the judge's calls on fd 3 until it hangs up."""
    send_frame(3, {"ready": True})
    while True:
        call = recv_frame(3)
        if call is None:
            return
        try:
            value = fn(*decode(call["args"]), **decode(call["kwargs"]))
            reply = {"ok": encode(value)}
        except NotPlain as e:
            reply = {"bad": str(e)}
        except MemoryError:
            raise
        except Exception as e:  # an exception raised by the candidate reaches check() as one
            reply = {"exc": f"{type(e).__name__}: {e}"[:300]}
        send_frame(3, reply)


def candidate_process(job: dict, fds: dict) -> None:
    """The forked helper: private namespaces, then the candidate as pid 1 of them. Never returns."""
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        why = enter_private_namespaces(job["disk_mb"]) if job["nested"] else "disabled"
        child = os.fork()
        if child == 0:
            libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if not why:
                if private_mounts(job["disk_mb"]):
                    os.chdir("/tmp")
                else:
                    os.chdir(job["workdir"])
                drop_capabilities()
            else:
                os.chdir(job["workdir"])
            os._exit(run_candidate(job, fds))
        for fd in fds.values():
            os.close(fd)
        os.closerange(0, 1 << 16)
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException:  # anything here is our fault, not the candidate's
        os._exit(EXIT_SETUP)


def run_unit(job: dict, stdin_data: str | None, rpc_fd: int | None) -> dict:
    """Fork one candidate run, watch it against the limits, kill everything left. Returns its fate."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r = res_w = None
    stdin_fd = os.memfd_create("stdin")
    if stdin_data:
        write_all(stdin_fd, stdin_data.encode("utf-8", "surrogatepass"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    fds = {"stdin": stdin_fd, "stdout": out_w, "stderr": err_w}
    if job["kind"] == "call":
        res_r, res_w = os.pipe()
        fds["extra"] = res_w
    elif rpc_fd is not None:
        fds["extra"] = rpc_fd
    os.makedirs(job["workdir"], mode=0o700, exist_ok=True)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        if res_r is not None:
            os.close(res_r)
        os.close(CONTROL_FD)
        candidate_process(job, fds)
    for fd in fds.values():
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    fate = watch(job, pid, pidfd, out_r, err_r, res_r, start)
    os.close(pidfd)
    for fd in (out_r, err_r, res_r):
        if fd is not None:
            os.close(fd)
    sweep({os.getpid()})
    if WIPE_TMP:
        wipe_tmp()
    else:
        wipe_tree(job["workdir"])
    fate["seconds"] = round(time.monotonic() - start, 4)
    return fate


def watch(job, pid, pidfd, out_r, err_r, res_r, start) -> dict:
    per_case = job["timeout"]
    deadline = start + per_case + job.get("startup_s", 0.0)
    out, err, res = bytearray(), bytearray(), bytearray()
    results: list = []
    limit = job["output_limit"]
    fate: dict = {}
    open_fds = {out_r: out, err_r: err}
    if res_r is not None:
        open_fds[res_r] = res
    exited = False
    while True:
        now = time.monotonic()
        if now >= deadline:
            fate = {"fate": "timeout"}
            break
        # once the candidate has exited, only drain what is already in the pipes (never wait for writers left behind)
        wait = 0.0 if exited else deadline - now
        ready, _, _ = select.select(list(open_fds) + ([] if exited else [pidfd]), [], [], wait)
        if pidfd in ready:
            exited = True
        for fd in ready:
            if fd == pidfd:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                del open_fds[fd]
                continue
            buf = open_fds[fd]
            if fd == err_r:
                buf += chunk
                del buf[:-4000]
                continue
            buf += chunk
            if len(out) + len(res) > limit:
                fate = {"fate": "output_limit"}
                break
            if fd == res_r:
                before = len(results)
                parse_results(res, results)
                if len(results) > before:  # the per-case clock restarts at each answer
                    deadline = time.monotonic() + per_case
        if fate:
            break
        if exited and not ready:
            break
    if not fate:
        _, status = os.waitpid(pid, 0)
        pid = 0
        code = os.waitstatus_to_exitcode(status)
        fate = {"fate": "exit", "code": code}
        if code == EXIT_MEMORY:
            fate["fate"] = "memory_limit"
        elif code == EXIT_SETUP:
            fate["fate"] = "setup_error"
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    fate["stdout"] = out.decode("utf-8", "replace") if job["kind"] == "stdio" else ""
    fate["stderr"] = err.decode("utf-8", "replace")[-500:]
    fate["results"] = results
    return fate


def parse_results(buf: bytearray, results: list) -> None:
    while len(buf) >= 4:
        (n,) = struct.unpack("!I", buf[:4])
        if len(buf) < 4 + n:
            return
        try:
            results.append(json.loads(bytes(buf[4:4 + n])))
        except ValueError:
            results.append({"garbled": True})
        del buf[:4 + n]


def candidate_job(job: dict, rpc_fd: int | None) -> dict:
    job["workdir"] = f"/tmp/run-{os.getpid()}-{time.monotonic_ns()}"
    if job["kind"] == "stdio":
        units = []
        job["cpu_cases"] = 1
        for text in job["inputs"]:
            fate = run_unit(job, text, None)
            units.append(fate)
            if fate["fate"] in ("timeout", "memory_limit", "output_limit", "setup_error"):
                break  # later cases would hit the same limit; they count as not passed
        return {"units": units}
    job["cpu_cases"] = len(job.get("inputs") or [None])
    return {"units": [run_unit(job, None, rpc_fd)]}


# ---------------------------------------------------------------- judge side


class CandidateGone(Exception):
    """The candidate process stopped answering (exited, killed, or broke the protocol)."""


def judge_process(job: dict, rpc_fd: int, report_fd: int) -> None:
    """Run check(candidate-proxy) and report through `report_fd` with the run's secret. Never returns."""
    token = job.pop("token")
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        resource.setrlimit(resource.RLIMIT_AS, (job["memory_mb"] << 20,) * 2)
        deadline = time.monotonic() + job["timeout"] + job.get("startup_s", 0.0)
        sock = socket.socket(fileno=rpc_fd)

        def recv():
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                msg = recv_frame_sock(sock, job["output_limit"])
            except (OSError, ValueError) as e:
                raise CandidateGone(f"candidate stopped answering ({type(e).__name__})") from None
            if msg is None:
                raise CandidateGone("candidate exited before answering")
            return msg

        hello = recv()
        if "error" in hello:
            raise CandidateGone(hello["error"])

        def candidate(*args, **kwargs):
            data = json.dumps({"args": encode(list(args)), "kwargs": encode(dict(kwargs))}).encode()
            try:
                sock.sendall(struct.pack("!I", len(data)) + data)
            except OSError as e:
                raise CandidateGone(f"candidate stopped listening ({type(e).__name__})") from None
            reply = recv()
            if "ok" in reply:
                return decode(reply["ok"])
            if "bad" in reply:
                raise NotPlain(reply["bad"])
            raise CandidateError(reply.get("exc", "malformed reply"))

        env = {"__name__": "__check__"}
        if job.get("setup"):
            try:  # helpers from the problem statement (e.g. HumanEval's poly), not the candidate's copies
                exec(compile(job["setup"], "setup.py", "exec"), env)
            except Exception:  # a prompt that is not runnable on its own just gives no helpers
                pass
        exec(compile(job["check"], "check.py", "exec"), env)
        env["check"](candidate)
        outcome = {"ok": True}
    except CandidateGone as e:
        outcome = {"ok": False, "why": "gone", "detail": str(e)[:300]}
    except NotPlain as e:
        outcome = {"ok": False, "why": "not_plain", "detail": str(e)[:300]}
    except CandidateError as e:
        outcome = {"ok": False, "why": "exception", "detail": str(e)[:300]}
    except AssertionError as e:
        outcome = {"ok": False, "why": "assert", "detail": ("AssertionError: " + str(e))[:300]}
    except BaseException as e:  # the test itself failed in some other way
        outcome = {"ok": False, "why": "check_error", "detail": f"{type(e).__name__}: {e}"[:300]}
    try_send(report_fd, {**outcome, "token": token})
    os._exit(0)


class CandidateError(Exception):
    """An exception the candidate raised, re-raised inside check()."""


def judge_job(job: dict, rpc_fd: int) -> dict:
    rep_r, rep_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rep_r)
        os.close(CONTROL_FD)
        judge_process(job, rpc_fd, rep_w)
    job.pop("token", None)
    os.close(rep_w)
    os.close(rpc_fd)
    deadline = start + job["timeout"] + job.get("startup_s", 0.0) + 1.0
    report = None
    ready, _, _ = select.select([rep_r], [], [], max(0.0, deadline - time.monotonic()))
    if ready:
        try:
            report = recv_frame(rep_r, 1 << 16)
        except ValueError:
            report = None
    os.close(rep_r)
    sweep({os.getpid()})
    return {"report": report, "seconds": round(time.monotonic() - start, 4)}


# ---------------------------------------------------------------- main loop


def probe_nested() -> bool:
    """Whether candidates can get private user/pid/mount namespaces here (tried once per worker)."""
    pid = os.fork()
    if pid == 0:
        try:
            if enter_private_namespaces(1):
                os._exit(1)
            child = os.fork()
            if child == 0:
                os._exit(0 if private_mounts(1) and drop_capabilities() is None else 1)
            _, status = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        except BaseException:  # any failure means "not available"
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def main(argv: list[str]) -> int:
    """harness.py ROLE CONTROL_FD HOST_NS [--mount-tmp] [--wipe-tmp] [EXTRA_SYS_PATH...]"""
    global CONTROL_FD, WIPE_TMP, CONFINED
    role, CONTROL_FD, host_pidns = argv[1], int(argv[2]), argv[3]
    why = confinement_problem(host_pidns)
    if why:
        print(f"harness: refusing to run: {why}", file=sys.stderr)
        return 3
    CONFINED = True
    for arg in argv[4:]:
        if arg == "--mount-tmp":  # `unshare` fallback: we are root of our own user namespace
            libc().mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=256m,mode=1777")
            WIPE_TMP = True
        elif arg == "--wipe-tmp":  # /tmp is the sandbox's own (bwrap)
            WIPE_TMP = True
        else:
            sys.path.append(arg)
    set_dumpable(0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sock = socket.socket(fileno=CONTROL_FD)
    send_frame(CONTROL_FD, {"hello": role, "python": sys.version.split()[0], "nested": probe_nested()})
    while True:
        job, fd = recv_job(sock)
        if job is None:
            return 0
        try:
            reply = judge_job(job, fd) if role == "judge" else candidate_job(job, fd)
        except Exception as e:  # an infrastructure failure: reported, the worker keeps serving
            reply = {"harness_error": f"{type(e).__name__}: {e}"}
        send_frame(CONTROL_FD, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
