"""The tester: the process that runs assert tests (stdlib only; loaded inside the sandbox next to harness.py).

A warm worker forks one tester when its first assert test comes and keeps it for the tests that follow. It only
ever runs trusted code, the problems' statements and tests, and no candidate code or object ever enters it (see
wire.py). The harness replaces it when it dies, hits a limit, or has been changed by a candidate (harness.py).
One unit, in order:

1. the harness sends the test and the unit's fds: stdin, stdout, stderr and the link to the candidate;
2. the tester compiles and analyses the test (kept per test) and answers "ready", or why it cannot run it;
3. only then is the candidate's process forked (by the forker), and the harness sends a per-run secret, held by no
   other process;
4. the test reaches the candidate through `wire.Remote` proxies, which bring back copies of plain data or handles;
5. the tester closes the unit's fds and reports: the secret when `check` returned, else the error.

Between units it puts back what a test may have changed in the interpreter (streams, sys.path, builtins, the
environment, the recursion limit, signal dispositions). The modules a test imported stay loaded, so the next test
that imports them (pytest: ~0.15 s) finds them.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import signal
import socket
import sys

try:
    from codescaler import testcode, wire
except ImportError:  # inside the sandbox these are mounted next to this file
    import testcode
    import wire

CONTROL_FD = 3  # the socket to the harness; a unit's stdin, stdout, stderr are 0-2 and its link 4 (in) and 5 (out)
PREPARED: dict = {}  # (test, statement) -> testcode.analyse_assert(...), at most 256, oldest dropped first
# Ignored here, so that a candidate's signal cannot raise KeyboardInterrupt at a random point of this process, and a
# write to a candidate that is gone is an error (wire.CandidateExited), not death. Other signals kill the tester,
# which is then replaced; SIGSTOP is undone by the harness's SIGCONT after each unit.
IGNORED = (signal.SIGINT, signal.SIGPIPE)


def serve(control: int = CONTROL_FD) -> int:
    """The tester's loop: one unit per job from the harness, until the harness closes the socket.

    A MemoryError propagates (the caller exits with forker.EXIT_MEMORY and the harness replaces this process)."""
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=control)
    saved = interpreter_state()
    while True:
        job, fds = wire.recv_frame_fds(sock, 5)
        if job is None:
            return 0
        wire.place_fds(fds[:3] + [control] + fds[3:])
        os.chdir(job["workdir"])
        try:
            check_code, setup_code, names, unsupported = prepare(job["check"], job["setup"])
        except (SyntaxError, ValueError, MemoryError, RecursionError) as e:  # the problem's test, not the candidate
            finish(control, {"bad_test": f"the test does not compile: {e}"[:300]}, saved)
            continue
        if unsupported:  # an infrastructure limit, never a verdict on the candidate: the harness forks no candidate
            finish(control, {"unsupported": unsupported}, saved)
            continue
        wire.send_frame(control, {"ready": True})
        report = run_test(wire.Link(5, 4, job["output_limit"]), check_code, setup_code, names)
        secret = wire.recv_frame(control, 256)  # sent once the candidate was forked
        if not report and isinstance(secret, dict):
            report = {"ok": secret.get("secret")}
        finish(control, report or {"error": "no secret came"}, saved)


def prepare(check: str, setup: str) -> tuple:
    """`testcode.analyse_assert`, kept per (test, statement): the candidates of one problem share it."""
    key = (check, setup)
    if key not in PREPARED:
        if len(PREPARED) >= 256:
            PREPARED.pop(next(iter(PREPARED)))
        PREPARED[key] = testcode.analyse_assert(check, setup)
    return PREPARED[key]


def run_test(link: wire.Link, check_code, setup_code, names: list[str]) -> dict:
    """Run the test against the candidate at the other end of `link`; {} when `check` returned, else the error."""
    env = {"__name__": "test", "__builtins__": builtins}
    try:
        if setup_code is not None:
            try:
                exec(setup_code, env)
            except Exception:  # a statement that does not run on its own just gives no helpers
                pass
        entry, got = link.ask({"op": "start", "names": names})
        env.update(got)
        try:
            exec(check_code, env)
        except ImportError as e:  # the test's own import, of a module this sandbox lacks: not the candidate's fault
            if not _importable(e.name):
                return {"error": f"the test imports {e.name}, which this sandbox lacks (mount its site-packages "
                                 "with --extra-paths)", "assert": False, "unsupported": True, "output_limit": False}
            raise
        env["check"](entry)
    except MemoryError:
        raise
    except BaseException as e:  # the test failed, or the candidate failed it
        return {"error": f"{type(e).__name__}: {e}"[:300], "assert": isinstance(e, AssertionError),
                "unsupported": isinstance(e, wire.Unsupported), "output_limit": isinstance(e, wire.OverLimit)}
    finally:
        wire.flush_std()
    return {}


def _importable(name: str | None) -> bool:
    """Whether module `name` can be found here (True when the error names none: then it is not ours to judge)."""
    if not name:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def finish(control: int, report: dict, saved: dict) -> None:
    """Close the unit's fds (the harness then sees the end of its output), put the interpreter back, report."""
    wire.flush_std()
    for fd in (0, 1, 2, 4, 5):
        try:
            os.close(fd)
        except OSError:
            pass
    restore(saved)
    wire.send_frame(control, report)


def interpreter_state() -> dict:
    return {"streams": (sys.stdin, sys.stdout, sys.stderr), "path": list(sys.path), "builtins": dict(vars(builtins)),
            "environ": dict(os.environ), "recursion": sys.getrecursionlimit(),
            "signals": {sig: signal.getsignal(sig) for sig in IGNORED}}


def restore(saved: dict) -> None:
    """Undo what a test changed in this long-lived interpreter (cheap when it changed nothing)."""
    os.chdir("/tmp")
    sys.stdin, sys.stdout, sys.stderr = saved["streams"]
    if sys.path != saved["path"]:
        sys.path[:] = saved["path"]
    if vars(builtins) != saved["builtins"]:
        vars(builtins).clear()
        vars(builtins).update(saved["builtins"])
    if os.environ != saved["environ"]:
        os.environ.clear()
        os.environ.update(saved["environ"])
    if sys.getrecursionlimit() != saved["recursion"]:
        sys.setrecursionlimit(saved["recursion"])
    for sig, handler in saved["signals"].items():
        if signal.getsignal(sig) != handler:
            signal.signal(sig, handler)
