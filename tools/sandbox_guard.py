"""The guard that runs first inside the sandboxed interpreter (standard library only).

The sandbox starts ``python -I -B -X utf8`` running this module's code with a settings
JSON argument. Before the untrusted ``main.py`` of the work dir runs, the guard applies
what only the sandboxed process can apply to itself:

1. ``RLIMIT_NPROC`` (inside bubblewrap's user namespace it counts only the sandbox's tasks),
2. no capabilities at all (root in the fallback keeps uid 0 but loses its powers),
3. Landlock: the system and the interpreter read-only, the work dir read-write, nothing else,
4. seccomp: no new processes (threads are fine), signals only to itself, no sockets, no
   mount, namespace, trace or kernel-module calls.

What cannot be applied is reported on stderr after :data:`MARKER` and the guard exits 125
before any untrusted code has run. This module is also imported by :mod:`tools.sandbox` for
its probes (:func:`landlock_abi`, :func:`seccomp_arch`).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import signal
import struct
import sys
import types

MARKER = "thau-sandbox-guard:"
GUARD_EXIT = 125

# ---------------------------------------------------------------- seccomp

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Syscall numbers (x86_64 from asm/unistd_64.h, aarch64 from asm-generic/unistd.h).
_SYSCALLS = {
    "x86_64": {
        "clone": 56, "clone3": 435, "fork": 57, "vfork": 58,
        "kill": 62, "tkill": 200, "tgkill": 234,
        "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
        "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
        "socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "process_madvise": 440, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "unshare": 272, "setns": 308, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "keyctl": 250, "add_key": 248, "request_key": 249, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168,
    },
    "aarch64": {
        "clone": 220, "clone3": 435,
        "kill": 129, "tkill": 130, "tgkill": 131,
        "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
        "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
        "socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "process_madvise": 440, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "unshare": 97, "setns": 268, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "keyctl": 219, "add_key": 217, "request_key": 218, "kexec_load": 104,
        "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225,
    },
}  # fmt: skip
_DENIED = (
    "fork", "vfork", "tkill", "pidfd_send_signal", "pidfd_open", "pidfd_getfd", "socket",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
    "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff",
)  # fmt: skip
_SIGNAL_CALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # pid is arg 0

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000


def seccomp_arch() -> str | None:
    """The machine name if the guard knows its syscall table, else ``None``."""
    machine = os.uname().machine.lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return machine if sys.platform == "linux" and machine in _SYSCALLS else None


def seccomp_program(arch: str, own_pid: int) -> bytes:
    """The classic-BPF filter for ``arch``; signals may only target ``own_pid``."""
    nr = _SYSCALLS[arch]
    code: list[tuple[int, object, object, int]] = []  # (op, jump-true, jump-false, k)
    labels: dict[str, int] = {}

    def emit(op: int, k: int, jt: object = 0, jf: object = 0) -> None:
        code.append((op, jt, jf, k))

    emit(_LD_W_ABS, 4)  # seccomp_data.arch
    emit(_JEQ, _AUDIT_ARCH[arch], 0, "kill")
    emit(_LD_W_ABS, 0)  # seccomp_data.nr
    if arch == "x86_64":
        emit(_JGE, _X32_BIT, "eperm", 0)  # the x32 ABI would dodge every rule below
    for name in _DENIED:
        if name in nr:
            emit(_JEQ, nr[name], "eperm", 0)
    emit(_JEQ, nr["clone3"], "enosys", 0)  # glibc then falls back to clone
    emit(_JEQ, nr["clone"], "clone", 0)
    for name in _SIGNAL_CALLS:
        emit(_JEQ, nr[name], "signal", 0)
    emit(_RET, _RET_ALLOW)
    labels["clone"] = len(code)
    emit(_LD_W_ABS, 16)  # args[0] (flags), low word
    emit(_JSET, _CLONE_THREAD, "allow", "eperm")
    labels["signal"] = len(code)
    emit(_LD_W_ABS, 16)  # args[0] (pid), low word: the kernel reads an int
    emit(_JEQ, own_pid, "allow", 0)
    emit(_JEQ, 0, "allow", 0)  # our own process group (we lead a new session, alone)
    emit(_JEQ, (-own_pid) & 0xFFFFFFFF, "allow", "eperm")
    labels["allow"] = len(code)
    emit(_RET, _RET_ALLOW)
    labels["eperm"] = len(code)
    emit(_RET, _RET_ERRNO | _EPERM)
    labels["enosys"] = len(code)
    emit(_RET, _RET_ERRNO | _ENOSYS)
    labels["kill"] = len(code)
    emit(_RET, _RET_KILL)

    out = bytearray()
    for index, (op, jt, jf, k) in enumerate(code):
        offsets = [labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= off <= 255 for off in offsets):
            raise ValueError("seccomp jump out of range")
        out += struct.pack("=HBBI", op, offsets[0], offsets[1], k)
    return bytes(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.syscall.restype = ctypes.c_long
    return libc


def _syscall(number: int, *args: object) -> int:
    """``syscall(2)`` with every integer widened to a C long (it is variadic)."""
    wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _libc().syscall(ctypes.c_long(number), *wide)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def apply_seccomp(arch: str) -> None:
    """Install the filter on every thread (``SECCOMP_FILTER_FLAG_TSYNC``)."""
    program = seccomp_program(arch, os.getpid())
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    seccomp_nr = {"x86_64": 317, "aarch64": 277}[arch]
    _check(_syscall(seccomp_nr, 1, 1, ctypes.byref(fprog)), "seccomp")  # FILTER, TSYNC


# ---------------------------------------------------------------- Landlock

_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446  # the same on every architecture
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_NET_ALL = 0b11  # BIND_TCP | CONNECT_TCP (ABI 4)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    if sys.platform != "linux":
        return 0
    try:
        version = _syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def apply_landlock(abi: int, read: list[str], write: list[str], devices: list[str]) -> None:
    """Allow reading beneath ``read``, everything beneath ``write``, nothing else."""
    handled = _fs_rights(abi)
    fields = [handled, _NET_ALL if abi >= 4 else 0]
    attr = struct.pack(f"={len(fields)}Q", *fields)
    ruleset = _check(_syscall(_LL_CREATE, attr, len(attr), 0), "landlock ruleset")
    file_rights = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
    read_rights = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    try:
        wanted = [(p, read_rights) for p in read] + [(p, handled) for p in write]
        wanted += [(p, file_rights) for p in devices]
        for path, rights in wanted:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this system lacks
            try:
                if not os.path.isdir(path):
                    rights &= file_rights
                rule = struct.pack("=Qi", rights & handled, fd)
                _check(_syscall(_LL_ADD_RULE, ruleset, 1, rule, 0), f"landlock {path}")
            finally:
                os.close(fd)
        _check(_syscall(_LL_RESTRICT, ruleset, 0), "landlock restrict")
    finally:
        os.close(ruleset)


SYSTEM_READ = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/timezone", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/mime.types",
    "/etc/os-release", "/etc/ssl/certs", "/etc/ca-certificates", "/etc/alternatives",
    "/sys/devices/system/cpu", "/proc/self", "/proc/cpuinfo", "/proc/meminfo",
    "/dev/urandom", "/dev/random", "/dev/zero",
]  # fmt: skip


def interpreter_paths() -> list[str]:
    """The directories the running interpreter reads modules from."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    return sorted(p for p in paths if os.path.exists(p))


# ---------------------------------------------------------------- privileges


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    libc = _libc()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (fails harmlessly without CAP_SETPCAP)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two zeroed {effective, permitted, inheritable}
    _check(libc.capset(header, data), "capset")


def apply(settings: dict) -> None:
    """Apply every layer ``settings`` asks for; raise if one cannot be applied."""
    if limit := settings.get("nproc"):
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    if sys.platform != "linux":
        return
    libc = _libc()
    if parent := settings.get("parent_pid"):
        _check(libc.prctl(1, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
        if os.getppid() != parent:
            raise RuntimeError("the sandbox's parent is gone")
    drop_capabilities()
    _check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    if abi := settings.get("landlock", 0):
        read = SYSTEM_READ + interpreter_paths()
        apply_landlock(abi, read, settings["write"], ["/dev/null", "/dev/full"])
    if arch := settings.get("seccomp"):
        apply_seccomp(arch)


def run_script(path: str) -> None:
    """Run ``path`` as ``__main__``; tracebacks start at the script, not at the guard."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # kept if killed
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    sys.argv = [path]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        sys.stderr.flush()
        raise SystemExit(1) from None


def main(argv: list[str]) -> None:
    settings = json.loads(argv[1])
    try:
        apply(settings)
    except Exception as exc:
        sys.stderr.write(f"{MARKER} {exc}\n")
        sys.stderr.flush()
        os._exit(GUARD_EXIT)
    run_script(settings["script"])


if __name__ == "__main__":
    main(sys.argv)
