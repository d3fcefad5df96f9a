"""The runtime directory: made private, claimed by its owner, and always tidied.

It holds the control socket and ``owner.pid`` ("<pid> <start time>\\n" of the
supervisor). The start time is there because pids are reused: a directory
whose pid now names another process is as ownerless as one whose pid names
none.

Tidying happens at three moments, because no single one covers every exit:

- at the end of a run (``release_runtime_dir``), from the supervisor's
  cleanup, or from ``abort_start`` when the start failed;
- at interpreter exit, for a run whose cleanup did not get that far (an
  ``atexit`` safety net, run only in the process that made the directory: a
  forked child that exits normally must not take its parent's directory);
- at the next start, for a runtime that could not clean up at all (SIGKILL,
  power loss): ``sweep_stale`` removes ``actorq-*`` directories of ours in the
  default base whose owner is gone. A directory without an owner file, or whose
  owner lives, is never touched (many runtimes may share the base).

An explicit directory (``runtime_dir``, e.g. systemd's RuntimeDirectory) is
claimed rather than made: a live owner refuses the start, naming its pid; a
dead one's socket and owner file are removed and the directory reused.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shlex
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import cast

import psutil

from .. import errors

log = logging.getLogger("actorq.rundir")
banner = logging.getLogger("actorq.banner")
banner.setLevel(logging.INFO)  # one line at start, shown at the default level (warning)

PREFIX = "actorq-"
OWNER_FILE = "owner.pid"
_START_TOLERANCE_S = 0.01  # start times are computed from clock ticks: equal or not

# directories this process made or claimed -> the pid that did (see _release_at_exit)
_owned: dict[Path, tuple[int, bool]] = {}


# --- owners ------------------------------------------------------------------------


def _start_time(pid: int) -> float | None:
    """When ``pid`` started, or None if no such (living) process exists."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return cast(float, proc.create_time())  # psutil has no type information: Any
    except psutil.NoSuchProcess:
        return None


def write_owner(directory: Path, pid: int | None = None, started: float | None = None) -> Path:
    """Write ``owner.pid`` (this process by default) atomically; its path.

    Fails with FileExistsError if the directory already has one: a claim is
    exclusive, so two runtimes starting in one directory cannot both win.
    """
    pid = os.getpid() if pid is None else pid
    if started is None:
        started = _start_time(pid)
        if started is None:
            raise ProcessLookupError(f"no process {pid} to record as owner")
    target = directory / OWNER_FILE
    fd, tmp = tempfile.mkstemp(prefix=".owner-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{pid} {started!r}\n")
        os.link(tmp, target)  # atomic, and refuses to replace an existing claim
    finally:
        os.unlink(tmp)
    return target


def read_owner(directory: Path) -> tuple[int, float] | None:
    """(pid, start time) from ``owner.pid``, or None if it is missing or unreadable."""
    path = directory / OWNER_FILE
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        pid_text, started_text = path.read_text().split()
        return int(pid_text), float(started_text)
    except (OSError, ValueError):
        return None


def owner_alive(owner: tuple[int, float]) -> bool:
    """Whether the process that wrote this owner record still runs."""
    pid, started = owner
    try:
        now = _start_time(pid)
    except psutil.Error:  # AccessDenied and kin: someone is there; assume it is the owner
        return True
    return now is not None and abs(now - started) < _START_TOLERANCE_S


# --- the default base and its stale directories ----------------------------------------


def default_base() -> Path:
    """``$XDG_RUNTIME_DIR`` if it is a writable directory, else the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        return Path(base)
    return Path(tempfile.gettempdir())


def sweep_stale(base: Path) -> list[Path]:
    """Remove the ``actorq-*`` directories under ``base`` that are ours and whose
    owner is gone; the ones removed. Never one without an owner file."""
    removed: list[Path] = []
    uid = os.getuid()
    try:
        entries = list(os.scandir(base))
    except OSError as exc:
        log.debug("cannot scan %s for stale runtime directories: %s", base, exc)
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        path = Path(entry.path)
        owner = read_owner(path)
        if owner is None or owner_alive(owner):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info(
            "removed stale runtime directory %s (its runtime, pid %d, is gone)", path, owner[0]
        )
        removed.append(path)
    return removed


# --- making, claiming and releasing ----------------------------------------------------


def make_runtime_dir(path: str | None = None) -> tuple[Path, bool]:
    """A private directory for the control socket, claimed by this process:
    (path, created_by_us).

    Without ``path``, stale directories in the default base are swept and a
    fresh ``actorq-*`` one is made there. A given ``path`` must be ours and not
    readable by others (it is created with 0700 if missing).
    """
    if path is None:
        base = default_base()
        sweep_stale(base)
        p = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        try:
            write_owner(p)
        except BaseException:
            shutil.rmtree(p, ignore_errors=True)
            raise
        _remember(p, created=True)
        return p, True
    p = Path(path)
    created = False
    try:
        p.mkdir(mode=0o700, parents=True)
        created = True
    except FileExistsError:
        pass
    st = p.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise errors.ConfigError(f"runtime_dir {str(p)!r} is not a directory")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise errors.ConfigError(
            f"runtime_dir {str(p)!r} must be owned by uid {os.getuid()} with mode 0700 "
            f"(it is uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); anyone who can enter it "
            "can control the runtime"
        )
    _claim(p)
    _remember(p, created)
    return p, created


def _claim(p: Path) -> None:
    """Make ``p`` ours: write our owner file, after clearing a dead owner's leftovers."""
    for _ in range(3):  # another starter may clear or claim between our steps
        try:
            write_owner(p)
        except FileExistsError:
            owner = read_owner(p)
            if owner is None:
                raise errors.ConfigError(
                    f"runtime_dir {str(p)!r} holds an unreadable {OWNER_FILE}; if no runtime "
                    "uses this directory, remove that file"
                ) from None
            if owner_alive(owner):
                raise errors.ConfigError(
                    f"runtime_dir {str(p)!r} is in use by a running runtime (pid {owner[0]}); "
                    "stop it or pick another directory"
                ) from None
            log.info(
                "runtime_dir %s: its previous runtime (pid %d) is gone; reusing it", p, owner[0]
            )
            _unlink(p / "control")
            _unlink(p / OWNER_FILE)
            continue
        break
    else:
        raise errors.ConfigError(f"runtime_dir {str(p)!r}: could not claim it; try again")
    control = p / "control"
    if control.exists() or control.is_symlink():
        if _socket_answers(control):
            _unlink(p / OWNER_FILE)
            raise errors.ConfigError(
                f"runtime_dir {str(p)!r} already holds a control socket that answers: another "
                "runtime (one without an owner file) uses it; pick another directory"
            )
        log.info("runtime_dir %s: removing a control socket nobody answers on", p)
        _unlink(control)


def _socket_answers(path: Path) -> bool:
    """Whether something listens on the unix socket ``path`` (a dead one refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.fspath(path))
        except OSError as exc:
            return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _remember(p: Path, created: bool) -> None:
    if not _owned:
        atexit.register(_release_at_exit)
    _owned[p] = (os.getpid(), created)


def release_runtime_dir(p: Path, created: bool) -> None:
    """Undo ``make_runtime_dir``: remove the directory if we made it, else our
    socket and owner file from it. Safe to call twice."""
    _owned.pop(p, None)
    if created:
        shutil.rmtree(p, ignore_errors=True)
        return
    _unlink(p / "control")
    for chan in p.glob("w*.chan"):  # the workers' direct-channel sockets (outside.py)
        _unlink(chan)
    owner = read_owner(p)
    if owner is not None and owner[0] == os.getpid():
        _unlink(p / OWNER_FILE)


def _release_at_exit() -> None:
    """The safety net: directories a run of this process did not release."""
    for p, (pid, created) in list(_owned.items()):
        if pid == os.getpid():
            release_runtime_dir(p, created)


# --- saying where it is -------------------------------------------------------------------


def announce(workers: int, cpus: str, runtime_dir: Path) -> None:
    """The one line a runtime always prints at start (unless the log level asks
    for errors only): where its directory is, so ``actorq stats`` can find it."""
    if logging.getLogger("actorq").getEffectiveLevel() > logging.WARNING:
        return
    banner.info(
        "runtime up: %d workers on CPUs %s; runtime directory %s (actorq stats %s)",
        workers,
        cpus,
        runtime_dir,
        shlex.quote(os.fspath(runtime_dir)),
    )
