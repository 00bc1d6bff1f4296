"""Starting a warm sandboxed harness process and talking to it (bubblewrap, or the weaker `unshare` fallback).

`sandbox.py` holds the configuration, the workers and the API; its docstring is the threat model. This module
builds the command lines (what the sandbox mounts, as whom it runs), probes which isolation works here
(`resolve_isolation`) and wraps one harness process and its control socket (`Sandbox`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from codescaler import forker, harness, seccomp, testcode, tester, wire

NOBODY = 65534
SANDBOX_PATH = "/usr/bin:/bin"
HARNESS_IN_SANDBOX = "/opt/codescaler/harness_main.py"  # runs harness.py; the modules they import sit next to it
HARNESS_MAIN = os.path.join(os.path.dirname(harness.__file__), "harness_main.py")
HARNESS_FILES = (HARNESS_MAIN, harness.__file__, wire.__file__, testcode.__file__, tester.__file__, seccomp.__file__,
                 forker.__file__)
UNSHARE_ROOT = os.path.join(os.path.dirname(harness.__file__), "unshare_root.sh")  # the unshare mode's file system


class SandboxUnavailable(RuntimeError):
    """A worker died or stopped answering."""


class SandboxStartError(SandboxUnavailable):
    """A worker could not be started at all (infrastructure)."""


def host_namespaces() -> str:
    """This process's PID, user and mount namespaces, e.g. "pid:[4026531836],user:[4026531837],mnt:[4026531841]"
    (given to the harness, which refuses to run in any of them: `harness.confinement_problem`)."""
    return ",".join(os.readlink(f"/proc/self/ns/{ns}") for ns in ("pid", "user", "mnt"))


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


def sandbox_python(config) -> str:
    """The interpreter inside the sandbox for a `SandboxConfig`."""
    if config.python:
        return config.python
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if os.geteuid() != 0 or _world_usable(base):
        return base
    return "/usr/bin/python3"


def system_dirs(python: str) -> list[str]:
    """What a sandbox shows of the host, read-only: the system directories and the interpreter's prefix."""
    dirs = ["/usr"] + [top for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32") if os.path.lexists(top)]
    real = os.path.realpath(python)
    if not real.startswith("/usr/"):
        dirs.append(os.path.dirname(os.path.dirname(real)))
    return dirs


def _system_binds(python: str) -> list[str]:
    args = []
    for path in system_dirs(python):
        args += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    return args


class Launch:
    """How to start one warm harness process in an isolation mode."""

    def __init__(self, config, mode: str):
        self.config, self.mode = config, mode
        self.python = sandbox_python(config)
        self.tmpdir = self.rootdir = None
        if mode == "unshare":
            # uid 65534 gets a readable copy of the harness, shown inside at the same path, and an empty folder
            # that becomes the sandbox's root (unshare_root.sh); not under /tmp, where the sandbox mounts its own
            parent = "/var/tmp" if os.path.isdir("/var/tmp") else "/"
            self.tmpdir = tempfile.mkdtemp(prefix="codescaler-harness-", dir=parent)
            self.rootdir = tempfile.mkdtemp(prefix="codescaler-root-", dir=parent)
            for folder in (self.tmpdir, self.rootdir):
                os.chmod(folder, 0o755)
            for path in HARNESS_FILES + (UNSHARE_ROOT,):
                shutil.copy(path, os.path.join(self.tmpdir, os.path.basename(path)))
                os.chmod(os.path.join(self.tmpdir, os.path.basename(path)), 0o644)

    def start(self, control_fd: int, cpu: int | None = None, header: str = "none") -> subprocess.Popen:
        # -E -s -S -B: no environment, user site or site; not -I, so that the script's directory (the harness
        # and wire.py alone) is sys.path[0] until the harness drops it
        py = [self.python, "-E", "-s", "-S", "-B"]
        # the harness refuses to run in this PID, user or mount namespace, or without a /tmp of its own
        # (harness.confinement_problem)
        host_ns = host_namespaces()
        pin = "" if cpu is None else str(cpu)  # the harness pins itself, and so all it forks, to this CPU
        extra = [os.path.realpath(p) for p in self.config.extra_paths]
        kw = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  start_new_session=True, env={"PATH": SANDBOX_PATH})
        if os.geteuid() == 0:  # never start a sandbox as root: everything below runs as nobody
            kw.update(user=NOBODY, group=NOBODY, extra_groups=[])
        if self.mode == "bwrap":
            with contextlib.ExitStack() as stack:
                sources = [stack.enter_context(open(path, "rb")) for path in HARNESS_FILES]
                argv = ["bwrap", "--unshare-all", "--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent",
                        "--new-session", "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox",
                        "--clearenv", "--setenv", "PATH", SANDBOX_PATH, *_system_binds(self.python)]
                # extra paths appear under /opt/codescaler/extraN (a host path under /tmp would clash with the
                # private /tmp that the harness empties after every run)
                home = os.path.dirname(HARNESS_IN_SANDBOX)
                inside = [f"{home}/extra{i}" for i in range(len(extra))]
                for host, mount in zip(extra, inside):
                    argv += ["--ro-bind", host, mount]
                argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.config.disk_mb << 20), "--tmpfs", "/tmp",
                         "--dir", home]
                for src in sources:  # harness.py and the stdlib-only modules it imports, read-only
                    argv += ["--ro-bind-data", str(src.fileno()), os.path.join(home, os.path.basename(src.name))]
                argv += ["--chdir", "/tmp", *py, HARNESS_IN_SANDBOX, str(control_fd), host_ns, pin, header, *inside]
                return subprocess.Popen(argv, pass_fds=[control_fd] + [src.fileno() for src in sources], **kw)
        if self.mode != "unshare":  # there is no unconfined mode: candidates never run outside a PID namespace
            raise SandboxStartError(f"unknown isolation mode {self.mode!r}")
        # root of the new user namespace (uid 65534 outside) builds a root of system directories, the harness and
        # the extra paths, with a private size-limited /tmp, pivots into it (unshare_root.sh) and runs the harness
        shown = system_dirs(self.python) + [self.tmpdir] + extra
        if any(":" in path for path in shown):
            raise SandboxStartError(f"the unshare sandbox cannot show a path with ':' in it: {shown}")
        argv = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--ipc", "--uts",
                "--mount", "--mount-proc", "--propagation", "private", "/bin/sh",
                os.path.join(self.tmpdir, os.path.basename(UNSHARE_ROOT)), self.rootdir, str(self.config.disk_mb),
                ":".join(shown), *py, os.path.join(self.tmpdir, os.path.basename(HARNESS_MAIN)), str(control_fd),
                host_ns, pin, header, *extra]
        return subprocess.Popen(argv, pass_fds=[control_fd], cwd=self.tmpdir, **kw)

    def close(self):
        for folder in (self.tmpdir, self.rootdir):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


_probe_lock = threading.Lock()
_probed: dict[tuple, str] = {}
_warned: set[str] = set()


def resolve_isolation(config) -> str:
    """The isolation mode that really works here for `config` (tried once per process), warning once on fallback."""
    key = (config.isolation, config.python, tuple(config.extra_paths))
    with _probe_lock:
        if key in _probed:
            return _probed[key]
        order = ["bwrap", "unshare"] if config.isolation == "auto" else [config.isolation]
        errors = []
        for mode in order:
            launch = Launch(config, mode)
            try:
                Sandbox(launch).close()
            except SandboxUnavailable as e:
                errors.append(f"{mode}: {e}")
                continue
            finally:
                launch.close()
            if mode != "bwrap" and mode not in _warned:
                _warned.add(mode)
                print(f"codescaler: warning: bubblewrap cannot run here ({'; '.join(errors) or 'not requested'}); "
                      f"isolation is WEAKER: using {mode!r}", file=sys.stderr)
            _probed[key] = mode
            return mode
        raise SandboxUnavailable("no isolation mode works here: " + "; ".join(errors))


class Sandbox:
    """One warm harness process and its control socket."""

    def __init__(self, launch: Launch, cpu: int | None = None, header: str = "none"):
        """`header`: the import header whose namespace the harness makes before forking (`forker.preload_header`)."""
        parent, child = socket.socketpair()
        try:
            self.proc = launch.start(child.fileno(), cpu, header)
        except OSError as e:
            parent.close()
            raise SandboxStartError(f"cannot start the sandbox: {e}") from None
        finally:
            child.close()
        self.sock = parent
        try:
            self.hello = self._recv(15.0)
        except SandboxUnavailable as e:
            self.close()
            raise SandboxStartError(str(e)) from None

    def _recv(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            reply = wire.recv_frame_sock(self.sock, wire.MAX_FRAME)
        except (OSError, ValueError) as e:
            reply, why = None, f"failed ({type(e).__name__})"
        else:
            why = "closed"
        if reply is None:
            self.close()
            raise SandboxUnavailable(f"sandbox {why}: {self.stderr_tail()}")
        return reply

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        err = self.proc.stderr.read() if self.proc.stderr and not self.proc.stderr.closed else b""
        return (err.decode("utf-8", "replace").strip().splitlines() or ["(no output)"])[-1][:300]

    def request(self, job: dict, timeout: float) -> dict:
        try:
            self.sock.settimeout(30.0)
            self.sock.sendall(wire.frame(job))
        except OSError as e:
            self.close()
            raise SandboxUnavailable(f"sandbox is gone ({type(e).__name__})") from None
        reply = self._recv(timeout)
        if "harness_error" in reply:
            self.close()
            raise SandboxUnavailable(f"harness: {reply['harness_error']}")
        return reply

    def alive(self) -> bool:
        return self.sock.fileno() >= 0 and self.proc.poll() is None

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session bwrap was started in, ours alone
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        if self.proc.stderr and self.proc.stderr.closed is False:
            self.stderr_tail()
            self.proc.stderr.close()
