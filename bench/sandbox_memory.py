"""Memory of one warm sandbox worker's processes: what every candidate's fork copies and tears down.

    PYTHONPATH=. python bench/sandbox_memory.py [--output bench/results/sandbox_memory.json]

Starts one bubblewrap worker, runs a few no-op assert units (so that its tester and generation exist), then reads
/proc/PID/smaps of the harness, the forker, the generation and the tester from outside (as the user who started
the sandbox). The forker's anonymous memory is what matters: each candidate's process is a fork of it (through the
generation), so fork copies page-table entries for all of it and the candidate's exit walks them again (~50 us per MB
on the 2-CPU machine of README's numbers). Run as root, or as the user the sandbox runs as.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from codescaler.sandbox import SandboxConfig, Verifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_throughput import start_workers  # noqa: E402


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def anonymous_kb(pid: int) -> dict[str, int]:
    """Anonymous kB by mapping (the heap, the stack, the interpreter's data, nameless mappings: Python's arenas)."""
    out: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts[0].endswith(":"):
                if parts[0] == "Anonymous:" and int(parts[1]):
                    out[name] = out.get(name, 0) + int(parts[1])
            else:  # a mapping's header: address perms offset dev inode [path]
                name = os.path.basename(parts[5]) if len(parts) > 5 else "[anonymous]"
    return out


def sandbox_processes(bwrap_pid: int) -> dict[str, int]:
    """{"harness", "forker", "generation", "tester": pid}: bwrap's Python descendant is the harness; of its children,
    the forker is the one with a child (its generation)."""
    pid = bwrap_pid
    while not os.readlink(f"/proc/{pid}/exe").split("/")[-1].startswith("python"):
        (pid,) = children(pid)
    found = {"harness": pid}
    for child in children(pid):
        grandchildren = children(child)
        if grandchildren:
            found["forker"], found["generation"] = child, grandchildren[0]
        else:
            found["tester"] = child
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "sandbox_memory.json"))
    args = ap.parse_args()
    with Verifier(SandboxConfig(workers=1, isolation="bwrap")) as v:
        start_workers(v, 1)
        processes = sandbox_processes(v._workers[0].box.proc.pid)
        result = {role: {"pid": pid, "anonymous_kb": anonymous_kb(pid)} for role, pid in processes.items()}
    for role, r in result.items():
        r["anonymous_kb_total"] = sum(r["anonymous_kb"].values())
        top = sorted(r["anonymous_kb"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{role:10s} {r['anonymous_kb_total'] / 1024:5.2f} MiB anonymous  ({', '.join(f'{k} {v}' for k, v in top)} kB)")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
