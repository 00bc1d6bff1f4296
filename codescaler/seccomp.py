"""The candidate's syscall filter (stdlib only; loaded inside the sandbox next to codescaler/harness.py).

Every process in a sandbox runs as the same uid, and the kernel lets a process of that uid signal another one,
lower its rlimits (prlimit) or change its priority, scheduling or CPU affinity, with no ptrace rights. The
harness and its tester outlive the candidates, so a candidate could stop or kill them or slow down the
candidates after it. The harness checks for that after every run and recovers (forker.process_state,
harness.Tester.usable), but a stopped harness costs a whole timeout. This seccomp filter makes the kernel
refuse those calls with EPERM when they are aimed at the sandbox's own processes (pid 1, the harness, the
tester, their process group, every process of the uid), for the candidate and every process it starts: a
filter is inherited and cannot be removed. Aimed at the candidate's own processes they are allowed, so it can
still manage its children. Where the kernel refuses filters, the harness says so at start and runs without.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# The two ABIs we filter: the AUDIT_ARCH value of a syscall and its numbers (Linux:
# arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h for arm64). A call made through
# any other ABI (x32, i386, arm32 compat) is refused outright: no Python candidate needs one.
ARCHES = {
    "x86_64": (0xC000003E, {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
                            "pidfd_send_signal": 424, "pidfd_open": 434, "prlimit64": 302, "setpriority": 141,
                            "sched_setparam": 142, "sched_setscheduler": 144, "sched_setaffinity": 203,
                            "sched_setattr": 314, "ioprio_set": 251, "setpgid": 109}),
    "aarch64": (0xC00000B7, {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
                             "pidfd_send_signal": 424, "pidfd_open": 434, "prlimit64": 261, "setpriority": 140,
                             "sched_setparam": 118, "sched_setscheduler": 119, "sched_setaffinity": 122,
                             "sched_setattr": 274, "ioprio_set": 30, "setpgid": 154}),
}
X32_BIT = 0x40000000  # x86_64 numbers with this bit set are the x32 ABI
PRIO_USER, IOPRIO_WHO_USER = 2, 3  # setpriority / ioprio_set on every process of a uid
# classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}
LD_ABS, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
NR, ARCH, ARGS = 0, 4, 16
ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW; SECCOMP_RET_ERRNO with EPERM
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_NR = {"x86_64": 317, "aarch64": 277}  # the seccomp(2) syscall
SECCOMP_SET_MODE_FILTER = 1
# Kernels before 5.16 (spec_store_bypass_disable=seccomp) force the Speculative Store Bypass mitigation on every
# filtered process, which slows the candidate's Python; that mitigation guards a process's own memory, and no
# secret lives in the candidate's. Kernels that do not know the flag refuse it (EINVAL): then none is given.
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
EINVAL = 22


def rules(protected: tuple[int, ...], group: int) -> dict[str, list[tuple[int, int]] | None]:
    """Per syscall, the (argument, value) pairs that are refused; None: refused whatever the arguments.

    `protected`: the pids of the sandbox's own processes; `group`: their process group as seen here (0: none
    that can be named). Values are compared as 32-bit ints, the C type of a pid."""
    pids = [(0, p) for p in protected]
    groups = [p for p in protected] + ([group] if group else [])
    return {
        "kill": pids + [(0, -1)] + [(0, -g) for g in groups],  # a pid; -1: every process; -g: a process group
        "tgkill": pids,
        "pidfd_open": pids,
        "prlimit64": pids,
        "sched_setparam": pids,
        "sched_setscheduler": pids,
        "sched_setaffinity": pids,
        "sched_setattr": pids,
        "setpriority": [(0, PRIO_USER)] + [(1, g) for g in groups],
        "ioprio_set": [(0, IOPRIO_WHO_USER)] + [(1, g) for g in groups],
        "setpgid": [(1, group)] if group else [],  # joining the sandbox's group would make kill(0) reach it
        "tkill": None,  # by thread id alone; glibc uses tgkill
        "rt_sigqueueinfo": None,
        "rt_tgsigqueueinfo": None,
        "pidfd_send_signal": None,  # a pidfd can also be an open /proc/<pid> directory of any process
    }


def program(arch: str, protected: tuple[int, ...], group: int) -> bytes:
    """The BPF program (struct sock_filter[]) for `arch` (a key of ARCHES)."""
    audit, numbers = ARCHES[arch]
    code = [(LD_ABS, 0, 0, ARCH), (JEQ, 1, 0, audit), (RET, 0, 0, DENY), (LD_ABS, 0, 0, NR)]
    if arch == "x86_64":
        code += [(JGE, 0, 1, X32_BIT), (RET, 0, 0, DENY)]
    for name, refused in rules(protected, group).items():
        body = [(RET, 0, 0, DENY)] if refused is None else []
        if refused is not None:
            for arg, value in refused:  # the low 32 bits of the argument (little-endian: the first word)
                body += [(LD_ABS, 0, 0, ARGS + 8 * arg), (JEQ, 0, 1, value & 0xFFFFFFFF), (RET, 0, 0, DENY)]
            body.append((RET, 0, 0, ALLOW))
        code += [(JEQ, 0, len(body), numbers[name])] + body  # not this syscall: skip its checks
    code.append((RET, 0, 0, ALLOW))
    return b"".join(struct.pack("=HBBI", *insn) for insn in code)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A filter protecting `protected` and `group`, built and installed by a generation of the forker (forker.py),
    whose candidates inherit it."""

    def __init__(self, protected: tuple[int, ...], group: int):
        code = program(platform.machine(), protected, group)
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = _SockFprog(len(code) // 8, ctypes.addressof(self._buf))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        """On this process and all it forks from now on (a generation, before its first candidate); raises OSError
        when the kernel refuses."""
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or not (
                self._seccomp(SECCOMP_FILTER_FLAG_SPEC_ALLOW) or (ctypes.get_errno() == EINVAL and self._seccomp(0))):
            err = ctypes.get_errno()
            raise OSError(err, f"cannot install the syscall filter (errno {err})")

    def _seccomp(self, flags: int) -> bool:
        nr = SECCOMP_NR[platform.machine()]
        return self._libc.syscall(ctypes.c_long(nr), ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags),
                                  ctypes.byref(self._prog)) == 0


def supported() -> bool:
    return platform.machine() in ARCHES


def works() -> bool:
    """Whether a forked process here can install a filter, and is then refused a signal to its parent."""
    if not supported():
        return False
    pid = os.fork()
    if pid == 0:
        try:
            Filter((os.getppid(),), 0).install()
        except BaseException:  # the kernel refuses filters (an OSError), or ctypes failed: no filter here
            os._exit(2)
        try:
            os.kill(os.getppid(), 0)
        except PermissionError:
            os._exit(0)
        except BaseException:  # anything but the filter's EPERM: it does not work as it should
            os._exit(3)
        os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
