"""Enter a strong jail and become the jailed command: the last step before `exec`.

Run by httpjail (as root) as a separate process, `python -I -S enter.py ARGS -- CMD...`,
in the process group and with the terminal that `jail.child` gave it. It is a script of
the standard library only, so that it starts fast and the steps below happen in a fresh,
single-threaded process (not in a `preexec_fn` of the multi-threaded proxy process):

1. join the jail's network namespace (`setns`);
2. a private mount namespace, in which the jail's resolv.conf is bind-mounted over the
   host's (over the file a symlinked /etc/resolv.conf points to), and host daemons'
   sockets that would do network work for the jail are covered with /dev/null: Docker
   (`docker run --network host` would be an escape), containerd, podman, and the name
   services that resolve names outside the jail (systemd-resolved, nscd, D-Bus);
3. CAP_NET_ADMIN and CAP_NET_RAW (and the capabilities that could undo the jail:
   CAP_SYS_ADMIN for `setns` back to the host, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_BPF;
   and CAP_PERFMON, which alone, with neither of the other two, still let a jailed root
   read httpjail's /proc/<pid>/environ, where the real --secret values are, in spite of
   httpjail being undumpable) dropped from the bounding set, so not even a setuid-root
   program run later gets them;
4. the invoking user's identity (`--user UID:GID`), or, staying root, the same
   capabilities removed from the inheritable and ambient sets;
5. a SIGKILL for the command when httpjail dies (`PR_SET_PDEATHSIG`, set after the change
   of user, which clears it): a jail whose proxy is gone has nothing left to serve it;
6. `exec` of the command, with the signals httpjail forwards unblocked (it blocked them
   for the start of this process): 127 when it does not exist, 126 when it cannot be
   executed.

Everything it imports is imported before it becomes the user, who may not be able to
read the interpreter's own library (a pyenv Python under /root).

Arguments: `--netns NAME --resolv PATH [--user UID:GID] -- CMD...`.
"""

from __future__ import annotations

# The C module under `signal`: the same functions and numbers, without the enum classes
# `signal` builds at import (~8 ms of the ~25 this script takes, on every jail's start).
import _signal as signal  # type: ignore[import-not-found]
import ctypes
import errno
import os
import pwd
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_SLAVE = 0x1000, 0x4000, 0x80000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 47, 4
SIGKILL = 9
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # jail/signals.py HANDLED
CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 16, 19, 21
CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON, CAP_BPF = 12, 13, 38, 39
DROPPED_CAPS = (
    CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF
)
_CAP_VERSION_3 = 0x20080522

MASKED_SOCKETS = (
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/nscd/socket",
    "/run/dbus/system_bus_socket",
)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _check(
        _libc.mount(source and source.encode(), target.encode(), None, ctypes.c_ulong(flags), None),
        f"mount {source} on {target}",
    )


def _say(message: str) -> None:
    os.write(2, f"httpjail: {message}\n".encode())


def join_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def private_mounts(resolv: str) -> None:
    os.unshare(CLONE_NEWNS)
    # Slave: nothing mounted here propagates back to the host.
    _mount(None, "/", MS_REC | MS_SLAVE)
    target = os.path.realpath("/etc/resolv.conf")
    if os.path.isfile(target):
        _mount(resolv, target, MS_BIND)
    else:
        _say(f"/etc/resolv.conf ({target}) does not exist: name lookups in the jail will fail")
    for path in MASKED_SOCKETS:
        real = os.path.realpath(path)
        if os.path.exists(real) and not os.path.isdir(real):
            _mount("/dev/null", real, MS_BIND)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_bounding() -> None:
    for cap in DROPPED_CAPS:
        # EINVAL: a capability this kernel does not know (CAP_BPF before 5.8).
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"drop capability {cap} from the bounding set")


def drop_inheritable() -> None:
    """Staying root: exec gives root its bounding set plus these; take them out of both."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for cap in DROPPED_CAPS:
        word, bit = divmod(cap, 32)
        data[word].inheritable &= ~(1 << bit)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def become(uid: int, gid: int) -> None:
    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)  # drops every capability: no keepcaps


def _find(name: str) -> str | None:
    """Where `name` is, as a shell finds it: a directory of PATH it cannot read is skipped."""
    if "/" in name:
        return name if os.path.lexists(name) else None
    found = None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            found = found or candidate  # not executable: 126, unless a later one is
    return found


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] not in ("--netns", "--resolv", "--user") or i + 1 >= len(argv):
            raise SystemExit(f"enter.py: bad argument {argv[i]!r}")
        options[argv[i][2:]] = argv[i + 1]
        i += 2
    command = argv[i + 1:]
    if "netns" not in options or "resolv" not in options or not command:
        raise SystemExit("usage: enter.py --netns NAME --resolv PATH [--user UID:GID] -- CMD...")
    return options, command


def main(argv: list[str]) -> int:
    options, command = parse(argv)
    parent = os.getppid()
    try:
        join_netns(options["netns"])
        private_mounts(options["resolv"])
        drop_bounding()
        if "user" in options:
            uid, gid = (int(x) for x in options["user"].split(":"))
            become(uid, gid)
        else:
            drop_inheritable()
        _check(_libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "set the parent-death signal")
        if os.getppid() != parent:  # httpjail died before that took effect
            return 125
    except OSError as e:
        _say(f"cannot enter the jail: {e}")
        return 125
    program = _find(command[0])
    if program is None:
        _say(f"command not found: {command[0]}")
        return 127
    # httpjail started this process with its signals blocked (`run_child(..., held=True)`):
    # one sent while the interpreter was still starting would have ended it with a
    # traceback and status 1. Now the command's defaults apply, and one that is pending
    # ends this process as it would have ended the command.
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    try:
        os.execv(program, command)
    except OSError as e:
        _say(f"cannot execute {command[0]}: {e.strerror}")
        return 126

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
