"""Stand-in verifier for assert-kind (HumanEval-style) tests, used only until `codescaler.sandbox` (issue 3) lands.

`verify_assert(problem, code, timeout, memory_mb)` runs one candidate confined for the machine's sake:
root drops to uid 65534 (`setpriv`), rlimits cap processes, address space, CPU and file size (`prlimit`), and
bubblewrap unshares every namespace (pid, net, ipc, user...) with a read-only root and a private /tmp. Inside, this
file (stdlib only, run by the system python3) executes `code + tests + check(entry_point)` with stdout/stderr sent
to /dev/null, and reports on a duplicate of its original stdout taken before the candidate runs.

Not hack-proof: the candidate runs in the reporting process, so deliberately adversarial code can forge a pass.
It is safe for the machine, not a trustworthy judge of hostile code; the project sandbox replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

PROCS = 256          # RLIMIT_NPROC for uid 65534 (counted across the machine, so not tiny)
STARTUP_S = 2.0      # interpreter start-up allowance on top of the test timeout


def available() -> bool:
    return all(shutil.which(t) for t in ("bwrap", "setpriv", "prlimit")) and os.path.isfile("/usr/bin/python3")


def _argv(timeout: float, memory_mb: int) -> list[str]:
    drop = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.getuid() == 0 else []
    limits = ["prlimit", f"--nproc={PROCS}", f"--as={memory_mb << 20}", f"--cpu={int(timeout) + 3}",
              f"--fsize={16 << 20}", "--"]
    box = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr",
           "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", os.path.abspath(__file__),
           "/runner.py", "--chdir", "/tmp", "--"]
    return drop + limits + box + ["/usr/bin/python3", "-I", "-S", "/runner.py"]


def verify_assert(tests: dict, code: str, timeout: float = 10.0, memory_mb: int = 1024) -> dict:
    """Verdict fields for one candidate against assert-kind `tests` ({entry_point, code})."""
    job = json.dumps({"code": code, "tests": tests["code"], "entry_point": tests["entry_point"]})
    t0 = time.perf_counter()
    proc = subprocess.Popen(_argv(timeout, memory_mb), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(job, timeout=timeout + STARTUP_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()  # bwrap is the namespace's init: everything inside dies with it
        out, err = proc.communicate()
        timed_out = True
    seconds = round(time.perf_counter() - t0, 4)
    lines = out.splitlines()
    if not lines or lines[0] != "started":
        return {"status": "sandbox_error", "seconds": seconds, "detail": (err.strip().splitlines() or ["no output"])[-1][:200]}
    if timed_out:
        return {"status": "timeout", "seconds": seconds, "detail": f"over {timeout}s"}
    try:
        result = json.loads(lines[1])
    except (IndexError, json.JSONDecodeError):
        return {"status": "runtime_error", "seconds": seconds, "detail": f"exited (code {proc.returncode}) before check finished"}
    return {"status": result["status"], "seconds": seconds, "detail": str(result.get("detail", ""))[:200]}


def _main() -> None:
    """Inside the sandbox: run the job from stdin; report through a saved copy of stdout."""
    job = json.loads(sys.stdin.read())
    report = os.fdopen(os.dup(1), "w")
    report.write("started\n")
    report.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    program = job["code"] + "\n\n" + job["tests"] + "\n\n" + f"check({job['entry_point']})\n"
    try:
        exec(compile(program, "candidate.py", "exec"), {"__name__": "__main__"})
        result = {"status": "passed"}
    except AssertionError as e:
        result = {"status": "wrong_answer", "detail": f"AssertionError {e}".strip()}
    except MemoryError:
        result = {"status": "memory_limit"}
    except SyntaxError as e:
        result = {"status": "syntax_error", "detail": str(e)}
    except BaseException as e:  # SystemExit, KeyboardInterrupt... anything the candidate raises is its failure
        result = {"status": "runtime_error", "detail": f"{type(e).__name__}: {e}"}
    report.write(json.dumps(result) + "\n")
    report.flush()
    os._exit(0)


if __name__ == "__main__":
    _main()
