"""Confine the current process before it reads a model file: rlimits, an unprivileged user, Landlock, seccomp.

Called once, early, by the sandbox child (:mod:`mia_robustness.sandbox.child`); every step is one-way, so
the process can never undo it, and code that a model file manages to run afterwards inherits all of it.

In order, because each step needs what the next one takes away:

1. **rlimits**: address space, CPU seconds, size of a written file, open files, no core dumps. Soft and
   hard limits are set equal, so they cannot be raised again.
2. **User**: where the process is root (as on SageMaker) it becomes ``nobody``, which owns nothing but the
   sandbox folder (the parent ``chown``-ed it), so file permissions stop it even where Landlock is absent.
3. **no_new_privs**: required by both Landlock and seccomp for an unprivileged process.
4. **Landlock** (Linux 5.13+): the file system becomes read-only except the sandbox folder, and readable
   only under the Python installation, the system libraries and a few ``/proc`` and ``/sys`` files of
   the process itself; no TCP bind/connect (ABI 4+); no signals or abstract sockets outside the sandbox
   (ABI 6+). Skipped, and reported as absent, where the kernel lacks it.
5. **seccomp** (libseccomp's own BPF compiler through the ``pyseccomp`` ctypes bindings: the filter is
   built by the library Docker and systemd use, and nothing is compiled at install time): no program
   execution, no process creation other than threads, no sockets, no ptrace or cross-process memory
   access, no mount, namespace, module, BPF, keyring or io_uring calls, no signals to other processes,
   no rlimit changes of other processes. Denied calls fail with ``EPERM`` (``ENOSYS`` for ``clone3``, so
   the C library falls back to ``clone``, whose flags the filter can read).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import resource
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

try:  # imported before the process gives up root: the interpreter may then be unreadable
    import pyseccomp as seccomp
except ImportError:  # pragma: no cover - a dependency; confine() reports its absence
    seccomp = None

# Unprivileged account the child becomes when it starts as root.
SANDBOX_USER = "nobody"
_NOBODY_FALLBACK_ID = 65534

# Landlock system calls have the same numbers on every architecture (the unified syscall table).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4

# Landlock rights, one bit each in the order below (bit 0 first), by the ABI version that introduced them:
# the file-system rights of ABI 1, then REFER (ABI 2), TRUNCATE (ABI 3) and IOCTL_DEV (ABI 5); the network
# rights came in ABI 4, the scopes in ABI 6.
_FS = enum.IntFlag(
    "_FS",
    "EXECUTE WRITE_FILE READ_FILE READ_DIR REMOVE_DIR REMOVE_FILE MAKE_CHAR MAKE_DIR MAKE_REG MAKE_SOCK MAKE_FIFO "
    "MAKE_BLOCK MAKE_SYM REFER TRUNCATE IOCTL_DEV",
)
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET = enum.IntFlag("_NET", "BIND_TCP CONNECT_TCP")
_SCOPE = enum.IntFlag("_SCOPE", "ABSTRACT_UNIX_SOCKET SIGNAL")

_READ = _FS.READ_FILE | _FS.READ_DIR
_READ_FILE_ONLY = _FS.READ_FILE
_WORK = (
    _FS.READ_FILE
    | _FS.READ_DIR
    | _FS.WRITE_FILE
    | _FS.REMOVE_DIR
    | _FS.REMOVE_FILE
    | _FS.MAKE_DIR
    | _FS.MAKE_REG
    | _FS.TRUNCATE
)

# Readable trees besides the Python installation: shared libraries, their loader's cache, time zones.
SYSTEM_READ_ROOTS = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
    # CPU and memory facts that OpenMP, BLAS, threadpoolctl and joblib read to size their pools.
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/dev/urandom",
    "/dev/random",
)
# Writable besides the sandbox folder: only the null device.
SYSTEM_WRITE_FILES = ("/dev/null",)

# System calls no audit needs and an escaped model would want.
DENIED_SYSCALLS = (
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "mknod",
    "mknodat",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "syslog",
    "vhangup",
    "tkill",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "kcmp",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "personality",
    "lookup_dcookie",
    "iopl",
    "ioperm",
)
_CLONE_THREAD = 0x00010000


@dataclass(frozen=True)
class Limits:
    """Resource limits of the sandbox child.

    Attributes
    ----------
    address_space_bytes:
        ``RLIMIT_AS``: most virtual memory; allocations beyond it fail (``MemoryError`` in Python).
    cpu_seconds:
        ``RLIMIT_CPU``: most CPU seconds, all threads together; the kernel stops the process past it.
    file_bytes:
        ``RLIMIT_FSIZE``: largest file the process may write.
    open_files:
        ``RLIMIT_NOFILE``.
    """

    address_space_bytes: int
    cpu_seconds: int
    file_bytes: int = 256 * 1024**2
    open_files: int = 512


@dataclass(frozen=True)
class Containment:
    """What :func:`confine` put in place, for the report (limits, which vary with the machine's thread
    count, go to the log only, so that the report stays the same for the same bundle and seed)."""

    seccomp: bool
    landlock_abi: int
    user: str

    def to_dict(self) -> dict[str, object]:
        return {"seccomp": self.seccomp, "landlock_abi": self.landlock_abi, "user": self.user}


class ConfinementError(RuntimeError):
    """A confinement step that must succeed did not (the child refuses to go on)."""


def nobody_ids() -> tuple[int, int]:
    """User and group id of :data:`SANDBOX_USER` (65534 where the account database lacks it)."""
    try:
        import pwd

        entry = pwd.getpwnam(SANDBOX_USER)
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return _NOBODY_FALLBACK_ID, _NOBODY_FALLBACK_ID


def nobody_cannot_run_python() -> str | None:
    """The first folder of the Python installation or import path that :data:`SANDBOX_USER` cannot
    read, or ``None`` when it can run this interpreter (then a root parent's child drops to it).

    An interpreter installed under a private home (``/root/.pyenv``) cannot import its own standard
    library once the child is ``nobody``; such a child stays root, confined by Landlock and seccomp.
    """
    uid, _gid = nobody_ids()
    for root in sorted({sys.prefix, sys.base_prefix, *(p for p in sys.path if p and os.path.isabs(p))}):
        path = Path(root)
        if not path.exists():
            continue
        for folder in [*reversed(path.parents), path]:
            info = folder.stat()
            if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
                return str(folder)
        if path.is_dir() and not path.stat().st_mode & stat.S_IROTH:
            return str(path)
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _set_limits(limits: Limits) -> None:
    for which, value in (
        (resource.RLIMIT_AS, limits.address_space_bytes),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def _drop_privileges(drop: bool) -> str:
    if os.geteuid() != 0 or not drop:
        import getpass

        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return str(os.geteuid())
    uid, gid = nobody_ids()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getegid() == 0:
        raise ConfinementError("could not give up root")
    return SANDBOX_USER


def _set_no_new_privs(libc: ctypes.CDLL) -> None:
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfinementError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
    # Not dumpable: other processes of the same user cannot ptrace it or read its /proc memory files.
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi(libc: ctypes.CDLL | None = None) -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    libc = libc or _libc()
    version = libc.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(int(version), 0)


def _read_roots() -> list[str]:
    """Trees the child may read: the interpreter's installation and import path, the system libraries."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    roots.update(SYSTEM_READ_ROOTS)
    return sorted(roots)


def _apply_landlock(libc: ctypes.CDLL, work_folder: Path) -> int:
    abi = landlock_abi(libc)
    if abi < 1:
        return 0
    handled_fs = _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=(_NET.BIND_TCP | _NET.CONNECT_TCP) if abi >= 4 else 0,
        scoped=(_SCOPE.ABSTRACT_UNIX_SOCKET | _SCOPE.SIGNAL) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise ConfinementError(f"landlock_create_ruleset failed: errno {ctypes.get_errno()}")
    try:
        rules = [(path, _READ) for path in _read_roots()]
        rules.append((f"/proc/{os.getpid()}", _READ))  # its own /proc entry, not its parent's
        rules += [(path, _READ_FILE_ONLY | _FS.WRITE_FILE) for path in SYSTEM_WRITE_FILES]
        rules.append((str(work_folder), _WORK))
        for path, access in rules:
            _add_path_rule(libc, ruleset, path, access & handled_fs)
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise ConfinementError(f"landlock_restrict_self failed: errno {ctypes.get_errno()}")
    finally:
        os.close(ruleset)
    return abi


def _add_path_rule(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # not on this system: nothing to allow
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            # Rights that only make sense on folders are refused (EINVAL) on a file.
            access &= _FS.EXECUTE | _FS.WRITE_FILE | _FS.READ_FILE | _FS.TRUNCATE | _FS.IOCTL_DEV
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        if (
            libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            != 0
        ):
            raise ConfinementError(f"landlock_add_rule({path}) failed: errno {ctypes.get_errno()}")
    finally:
        os.close(fd)


def _apply_seccomp() -> None:
    deny = seccomp.ERRNO(errno.EPERM)
    pid = os.getpid()
    syscall_filter = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            syscall_filter.add_rule(deny, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a system call on this architecture
    # Threads only: clone without CLONE_THREAD makes a process. clone3 hides its flags in memory the
    # filter cannot read, so it reports "not implemented" and the C library falls back to clone.
    syscall_filter.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    syscall_filter.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Signals and rlimits for itself only.
    syscall_filter.add_rule(deny, "kill", seccomp.Arg(0, seccomp.NE, pid))
    syscall_filter.add_rule(deny, "tgkill", seccomp.Arg(0, seccomp.NE, pid))
    syscall_filter.add_rule(deny, "prlimit64", seccomp.Arg(0, seccomp.NE, 0))
    syscall_filter.load()


def confine(work_folder: Path, limits: Limits, *, drop_privileges: bool = True) -> Containment:
    """Confine this process for good; see the module docstring for what each step does.

    Parameters
    ----------
    work_folder:
        The only folder the process may write to (its temporary files); owned by ``nobody`` when the
        process starts as root.
    limits:
        Resource limits to set.
    drop_privileges:
        Become :data:`SANDBOX_USER` when running as root (see :func:`nobody_cannot_run_python`).

    Raises
    ------
    ConfinementError
        A step that must work did not (no seccomp, root not dropped); the caller stops.
    """
    libc = _libc()
    _set_limits(limits)
    if seccomp is None:
        raise ConfinementError("the seccomp bindings (pyseccomp) are not installed")
    user = _drop_privileges(drop_privileges)
    _set_no_new_privs(libc)
    abi = _apply_landlock(libc, work_folder)
    try:
        _apply_seccomp()
    except (ImportError, OSError, RuntimeError) as exc:
        raise ConfinementError(f"could not install the seccomp filter ({type(exc).__name__})") from None
    return Containment(seccomp=True, landlock_abi=abi, user=user)
