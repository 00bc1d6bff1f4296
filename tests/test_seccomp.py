"""The candidate's syscall filter, run on a small BPF interpreter: which calls it refuses, per architecture."""

import struct

import pytest

from codescaler import seccomp

HARNESS, TESTER, GROUP = 2, 5, 1
PROTECTED = (1, HARNESS, TESTER)


def run_bpf(code: bytes, nr: int, arch: int, args=(0,) * 6) -> int:
    """What classic BPF `code` returns for struct seccomp_data {nr, arch, ip, args[6]} (the subset the filter uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (6 - len(args)))
    insns = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = insns[pc]
        if op == seccomp.LD_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif op in (seccomp.JEQ, seccomp.JGE):
            pc += jt if (acc == k if op == seccomp.JEQ else acc >= k) else jf
        elif op == seccomp.RET:
            return k
        else:
            raise AssertionError(f"unexpected instruction {op:#x}")
        pc += 1


@pytest.mark.parametrize("arch", sorted(seccomp.ARCHES))
@pytest.mark.parametrize("call, args, refused", [
    ("kill", (HARNESS, 9), True),
    ("kill", (TESTER, 19), True),
    ("kill", (1, 9), True),
    ("kill", (-1, 9), True),
    ("kill", (-GROUP, 9), True),
    ("kill", (-HARNESS, 9), True),
    ("kill", (0, 9), False),  # its own process group
    ("kill", (7, 9), False),  # its own child
    ("kill", (-7, 15), False),  # its child's group
    ("tgkill", (HARNESS, HARNESS, 9), True),
    ("tgkill", (7, 8, 10), False),
    ("tkill", (7, 9), True),
    ("rt_sigqueueinfo", (7, 10, 0), True),
    ("pidfd_send_signal", (3, 9, 0, 0), True),
    ("pidfd_open", (TESTER, 0), True),
    ("pidfd_open", (7, 0), False),
    ("prlimit64", (HARNESS, 7, 0, 0), True),
    ("prlimit64", (0, 7, 0, 0), False),
    ("prlimit64", (7, 7, 0, 0), False),
    ("setpriority", (0, TESTER, 19), True),
    ("setpriority", (1, GROUP, 19), True),
    ("setpriority", (2, 0, 19), True),  # PRIO_USER: every process of the uid
    ("setpriority", (0, 0, 19), False),
    ("sched_setaffinity", (HARNESS, 8, 0), True),
    ("sched_setaffinity", (0, 8, 0), False),
    ("sched_setscheduler", (TESTER, 5, 0), True),
    ("sched_setattr", (1, 0, 0), True),
    ("sched_setparam", (0, 0), False),
    ("ioprio_set", (1, HARNESS, 3 << 13), True),
    ("ioprio_set", (3, 0, 3 << 13), True),
    ("ioprio_set", (1, 0, 3 << 13), False),
    ("setpgid", (0, GROUP), True),
    ("setpgid", (0, 0), False),
])
def test_what_the_filter_refuses(arch, call, args, refused):
    audit, numbers = seccomp.ARCHES[arch]
    code = seccomp.program(arch, PROTECTED, GROUP)
    assert run_bpf(code, numbers[call], audit, args) == (seccomp.DENY if refused else seccomp.ALLOW)


@pytest.mark.parametrize("arch", sorted(seccomp.ARCHES))
def test_other_syscalls_pass_and_other_abis_are_refused(arch):
    audit, numbers = seccomp.ARCHES[arch]
    code = seccomp.program(arch, PROTECTED, GROUP)
    for nr in range(460):
        if nr not in numbers.values():
            assert run_bpf(code, nr, audit, (HARNESS, HARNESS, HARNESS)) == seccomp.ALLOW, nr
    other = next(a for name, (a, _) in seccomp.ARCHES.items() if name != arch)
    assert run_bpf(code, 0, other) == seccomp.DENY  # a foreign ABI
    assert run_bpf(code, 0x40000000 | 62, audit) == (seccomp.DENY if arch == "x86_64" else seccomp.ALLOW)  # x32


def test_a_pid_is_compared_as_a_32_bit_int():
    audit, numbers = seccomp.ARCHES["x86_64"]
    code = seccomp.program("x86_64", PROTECTED, GROUP)
    assert run_bpf(code, numbers["kill"], audit, ((0xDEAD << 32) | HARNESS, 9)) == seccomp.DENY  # upper half ignored
    assert run_bpf(code, numbers["kill"], audit, (0xFFFFFFFF, 9)) == seccomp.DENY  # -1 as an unsigned register


def test_without_a_nameable_group_setpgid_is_free():
    audit, numbers = seccomp.ARCHES["x86_64"]
    code = seccomp.program("x86_64", PROTECTED, 0)
    assert run_bpf(code, numbers["setpgid"], audit, (0, 0)) == seccomp.ALLOW
    assert run_bpf(code, numbers["kill"], audit, (0, 9)) == seccomp.ALLOW
