"""Run untrusted Python in a sandbox: bubblewrap where it works, a weaker fallback elsewhere.

Both paths start a fresh ``python -I -B`` whose first statements are the guard of
:mod:`tools.sandbox_guard` (no new processes, signals only to itself, no sockets, no
capabilities, files limited by Landlock). Around it:

- ``bwrap``: user, pid, network, ipc, uts and cgroup namespaces, the system mounted
  read-only, home directories hidden, a private ``/tmp``, the work dir at ``/sandbox``,
  ``--die-with-parent`` and ``--new-session``;
- ``fallback``: the same guard and limits with no namespaces, and a warning that says so.

Always: resource limits set before the interpreter starts (CPU time, address space, file
size, open files, no core dumps; ``RLIMIT_NPROC`` from the guard), a cleared environment, a
wall-clock timeout that kills the whole process group, and stdout/stderr kept to their head
and tail while they are read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import marshal
import math
import os
import pwd
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from thau.errors import ConfigError, ToolError
from thau.tools import sandbox_guard
from thau.tools.sandbox_capture import StreamCapture

SandboxMode = Literal["auto", "bwrap", "fallback"]
INSIDE_WORKDIR = "/sandbox"
SANDBOX_UID = 65534  # "nobody" inside bubblewrap's user namespace
_EXIT_GRACE_S = 0.5  # how long to drain pipes after the main process has exited


class SandboxUnavailable(ToolError):
    """The sandbox asked for cannot be set up on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use."""

    timeout_s: float = 30.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 256
    tasks: int = 64
    """``RLIMIT_NPROC`` inside the sandbox (threads count: new processes are refused)."""
    output_bytes: int = 32_000
    """Bytes kept per stream (head and tail), however much the code prints."""
    disk_mb: int = 64
    """Size of bwrap's memory-backed ``/sandbox`` and ``/tmp`` (where bwrap can size them)."""

    @property
    def cpu_s(self) -> int:
        """CPU seconds (``RLIMIT_CPU``): a little above the wall-clock timeout."""
        return math.ceil(self.timeout_s) + 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SandboxLimits:
        """``THAU_SANDBOX_TIMEOUT``, ``_MEMORY_MB``, ``_OUTPUT_BYTES`` and ``_DISK_MB``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, name, kind in (
            ("THAU_SANDBOX_TIMEOUT", "timeout_s", float),
            ("THAU_SANDBOX_MEMORY_MB", "memory_mb", int),
            ("THAU_SANDBOX_OUTPUT_BYTES", "output_bytes", int),
            ("THAU_SANDBOX_DISK_MB", "disk_mb", int),
        ):
            if raw := env.get(var):
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{var}={raw!r} is not a number") from None
                if values[name] <= 0:
                    raise ConfigError(f"{var} must be positive, not {raw!r}")
        return cls(**values)


@dataclass
class SandboxResult:
    """What happened to one run; ``as_dict()`` is the tool's result."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    signal: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    sandbox: Literal["bwrap", "fallback"]
    warning: str | None
    duration_s: float
    run_id: str = field(default="", repr=False)
    """Also on the command line of every process of the run (tests look for leftovers)."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("run_id")
        return data


def mode_from_env(env: dict[str, str] | None = None) -> SandboxMode:
    """``THAU_SANDBOX``: ``auto`` (default), ``bwrap`` or ``fallback``."""
    env = os.environ if env is None else env
    mode = (env.get("THAU_SANDBOX") or "auto").strip().lower()
    if mode not in ("auto", "bwrap", "fallback"):
        raise ConfigError(f"THAU_SANDBOX={mode!r}: use auto, bwrap or fallback")
    return mode  # type: ignore[return-value]


@functools.cache
def bwrap_problem(bwrap: str | None = None) -> str | None:
    """Why bubblewrap cannot be used here, or ``None`` when it works (probed once)."""
    bwrap = bwrap or shutil.which("bwrap")
    if not bwrap:
        return "bubblewrap (bwrap) is not installed"
    probe = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc"]
    probe += ["--dev", "/dev", "--", sys.executable, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap did not start ({exc})"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        return f"bubblewrap cannot create its namespaces here ({reason})"
    return None


def _namespace_args() -> list[str]:
    return [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "thau-sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]


def _home_dirs() -> list[str]:
    homes = {"/root", "/home", str(Path.home())}
    with contextlib.suppress(KeyError):
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    system = {"/", "/usr", "/etc", "/tmp", "/var", "/opt", "/bin", "/lib"}
    return sorted(h for h in homes if h not in system and os.path.isdir(h))


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@functools.cache
def _bwrap_sizes_tmpfs() -> bool:
    """Whether this bubblewrap has ``--size`` (0.8 and later)."""
    try:
        done = subprocess.run(["bwrap", "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in done.stdout + done.stderr


def _bwrap_mounts(workdir: Path, disk_mb: int) -> list[str]:
    """Read-only system, homes hidden (empty, read-only), an empty /run, a private /tmp
    (the interpreter's directories under any of these bound back read-only), and the work
    dir at /sandbox: a tmpfs of ``disk_mb`` holding main.py where bwrap can size it, else
    the host's work dir."""
    homes = _home_dirs()
    size = ["--size", str(disk_mb * 1024 * 1024)] if _bwrap_sizes_tmpfs() else []
    args: list[str] = []
    for name in sorted(os.listdir("/")):
        path = f"/{name}"
        if name in ("proc", "dev", "tmp", "run") or path in homes:
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--dev", "/dev", "--proc", "/proc", *size, "--tmpfs", "/tmp", "--tmpfs", "/run"]
    for home in homes:
        args += ["--tmpfs", home]
    hidden_roots = [*homes, "/tmp", "/run"]  # the interpreter may live there (a venv in ~)
    kept: list[str] = []
    for path in sandbox_guard.interpreter_paths():
        for candidate in dict.fromkeys([path, os.path.realpath(path)]):
            hidden = any(_under(candidate, root) for root in hidden_roots)
            if hidden and not any(_under(candidate, k) for k in kept):
                kept.append(candidate)
    for path in sorted(kept):
        args += ["--ro-bind", path, path]
    for empty in ["/run", *homes]:  # nothing to write there: no space to fill either
        args += ["--remount-ro", empty]
    if size:
        args += [*size, "--tmpfs", INSIDE_WORKDIR]
        args += ["--ro-bind", str(workdir / "main.py"), f"{INSIDE_WORKDIR}/main.py"]
    else:
        args += ["--bind", str(workdir), INSIDE_WORKDIR]
    return [*args, "--remount-ro", "/", "--chdir", INSIDE_WORKDIR]


def _lower_limit(which: int, soft: int, hard: int | None = None) -> None:
    """Lower a limit to ``(soft, hard)``; never above the hard limit already in place."""
    hard = soft if hard is None else hard
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))


def _rlimits(limits: SandboxLimits) -> Callable[[], None]:
    """The ``preexec_fn``: limits in place before the interpreter (or bwrap) starts.

    CPU time gets a soft limit (SIGXCPU) one second before the hard one (SIGKILL).
    """
    mib = 1024 * 1024
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1),
        (resource.RLIMIT_AS, limits.memory_mb * mib, None),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * mib, None),
        (resource.RLIMIT_NOFILE, limits.open_files, None),
        (resource.RLIMIT_CORE, 0, None),
    ]

    def apply() -> None:
        for which, soft, hard in wanted:
            _lower_limit(which, soft, hard)

    return apply


def _tasks_of(uid: int) -> int:
    """How many tasks (threads included) ``uid`` runs now: ``RLIMIT_NPROC`` counts them all."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def _clean_env(home: str, tmp: str) -> dict[str, str]:
    threads = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "MPLBACKEND": "Agg",
        **threads,
    }


def _remove_tree(path: Path) -> None:
    def retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Sandbox:
    """Runs Python source with the limits of ``limits`` (see the module's docstring)."""

    def __init__(
        self,
        mode: SandboxMode = "auto",
        limits: SandboxLimits | None = None,
        python: str | None = None,
    ) -> None:
        self.requested = mode
        self.limits = limits or SandboxLimits()
        self.python = python or sys.executable

    def mode(self) -> Literal["bwrap", "fallback"]:
        """The path this sandbox takes; ``SandboxUnavailable`` if bwrap is forced but broken."""
        if self.requested == "fallback":
            return "fallback"
        problem = bwrap_problem()
        if problem is None:
            return "bwrap"
        if self.requested == "bwrap":
            raise SandboxUnavailable(
                f"The bwrap sandbox was asked for, but {problem}. Install bubblewrap "
                "(apt-get install bubblewrap), or set THAU_SANDBOX=fallback."
            )
        return "fallback"

    def run(self, code: str) -> SandboxResult:
        """Run ``code`` as ``main.py`` in a fresh work dir that is removed afterwards."""
        mode = self.mode()
        workdir = Path(tempfile.mkdtemp(prefix="thau-sandbox-"))
        try:
            (workdir / "main.py").write_text(code, encoding="utf-8")
            return self._run(mode, workdir)
        finally:
            _remove_tree(workdir)

    def _command(self, mode: str, workdir: Path, run_id: str) -> tuple[list[str], dict[str, str]]:
        landlock = sandbox_guard.landlock_abi()
        settings: dict[str, Any] = {
            "run": run_id,
            "landlock": landlock,
            "seccomp": sandbox_guard.seccomp_arch(),
            "nproc": self.limits.tasks,
        }
        interpreter = [self.python, "-I", "-B", "-X", "utf8", *_guard_args(self.python)]
        if mode == "bwrap":
            settings |= {"script": f"{INSIDE_WORKDIR}/main.py", "write": [INSIDE_WORKDIR, "/tmp"]}
            mounts = _bwrap_mounts(workdir, self.limits.disk_mb)
            argv = [shutil.which("bwrap") or "bwrap", *_namespace_args(), *mounts]
            argv += ["--", *interpreter, json.dumps(settings)]
            return argv, _clean_env(INSIDE_WORKDIR, "/tmp")
        settings |= {"script": str(workdir / "main.py"), "write": [str(workdir)]}
        settings["parent_pid"] = os.getpid()
        if os.getuid() != 0:  # the kernel counts every task of this user, not just ours
            settings["nproc"] = _tasks_of(os.getuid()) + self.limits.tasks
        return [*interpreter, json.dumps(settings)], _clean_env(str(workdir), str(workdir))

    def _warning(self, mode: str) -> str | None:
        if mode == "bwrap":
            return None
        why = (
            "the fallback was asked for"
            if self.requested == "fallback"
            else (bwrap_problem() or "bubblewrap is unavailable")
        )
        parts = [
            f"Weaker isolation: {why}, so the code ran without namespaces, as your own "
            "user, on the host's network stack and process table."
        ]
        if sandbox_guard.landlock_abi():
            parts.append("Landlock kept files outside the work dir out of reach.")
        else:
            parts.append("Landlock is not available: files your user can read are NOT hidden.")
        if sandbox_guard.seccomp_arch():
            parts.append("A seccomp filter blocked new processes, sockets and signals.")
        else:
            parts.append("No seccomp filter for this machine: processes and sockets are open.")
        return " ".join(parts)

    def _run(self, mode: Literal["bwrap", "fallback"], workdir: Path) -> SandboxResult:
        run_id = uuid.uuid4().hex
        argv, env = self._command(mode, workdir, run_id)
        out = StreamCapture(self.limits.output_bytes)
        err = StreamCapture(self.limits.output_bytes)
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_rlimits(self.limits),  # only setrlimit calls after the fork
        )
        try:
            timed_out = _pump(proc, out, err, start + self.limits.timeout_s)
        finally:
            _kill_group(proc.pid)  # anything the run left behind in its group
            returncode = proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
        duration = time.monotonic() - start
        stderr = err.text()
        if returncode == sandbox_guard.GUARD_EXIT and sandbox_guard.MARKER in stderr:
            reason = stderr.split(sandbox_guard.MARKER, 1)[1].strip()
            raise SandboxUnavailable(f"The sandbox could not be set up: {reason}")
        exit_code, killed_by = _exit_status(returncode, mode)
        return SandboxResult(
            stdout=out.text(),
            stderr=stderr,
            exit_code=exit_code,
            timed_out=timed_out,
            signal=killed_by,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            sandbox=mode,
            warning=self._warning(mode),
            duration_s=round(duration, 3),
            run_id=run_id,
        )


_GUARD_LOADER = "import marshal,sys;exec(marshal.loads(bytes.fromhex(sys.argv.pop(1))))"


@functools.cache
def _guard_args(python: str) -> tuple[str, ...]:
    """``-c`` arguments that run the guard: its bytecode, compiled once, when the sandbox
    runs this interpreter (compiling 300 lines at every start costs tens of ms), else its
    source."""
    source = Path(sandbox_guard.__file__).read_text(encoding="utf-8")
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return ("-c", source)
    code = compile(source, "<thau-sandbox-guard>", "exec")
    return ("-c", _GUARD_LOADER, marshal.dumps(code).hex())


def _pump(
    proc: subprocess.Popen[bytes], out: StreamCapture, err: StreamCapture, deadline: float
) -> bool:
    """Read both pipes until they close, then wait for the process; kill the group at
    ``deadline``. True if the deadline fired."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
    selector.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _EXIT_GRACE_S:
                break  # something else holds the pipes open; it is killed with the group
            for key, _ in selector.select(min(deadline - now, 0.1)):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.feed(chunk)
                else:
                    selector.unregister(key.fileobj)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            _drain(selector, 1.0)
            return True
        return False
    finally:
        selector.close()


def _drain(selector: selectors.BaseSelector, seconds: float) -> None:
    """Read what the killed run had already written, for at most ``seconds``."""
    end = time.monotonic() + seconds
    while selector.get_map() and time.monotonic() < end:
        for key, _ in selector.select(0.05):
            chunk = os.read(key.fd, 65536)
            if chunk:
                key.data.feed(chunk)
            else:
                selector.unregister(key.fileobj)


def _exit_status(returncode: int, mode: str) -> tuple[int | None, str | None]:
    """``(exit_code, signal name)``; bwrap reports a child killed by signal N as 128+N."""
    number = -returncode if returncode < 0 else None
    if mode == "bwrap" and 128 < returncode < 128 + signal.NSIG:
        number = returncode - 128
    if number is None:
        return returncode, None
    try:
        return None, signal.Signals(number).name
    except ValueError:
        return None, f"signal {number}"
