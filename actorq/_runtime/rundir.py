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
  power loss): ``sweep_stale`` removes the directories of ours in the
  registry (below) whose owner is gone, and the registry's links to
  directories whose owner is gone. A directory without an owner file, or
  whose owner lives, is never touched (many runtimes share the registry).

Where runtimes are found: every runtime has a name (``--name``, ``name`` in
the config; by default the app's and the supervisor's pid, ``hello-4242``)
and an entry of that name in one per-user place, the *registry*
(``$XDG_RUNTIME_DIR/actorq/``, or ``/tmp/actorq-<uid>/`` without it; mode
0700, refused if someone else owns it or can read it). A runtime's default
directory is its registry entry itself; an explicit one is linked from it.
``runtime.json`` in the directory says what ``actorq ps`` shows (name,
workers, start time, metrics address), so listing runtimes asks none of them.

An explicit directory (``runtime_dir``, e.g. systemd's RuntimeDirectory) is
claimed rather than made: a live owner refuses the start, naming its pid; a
dead one's socket and owner file are removed and the directory reused.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, cast

import psutil

from .. import errors

log = logging.getLogger("actorq.rundir")
banner = logging.getLogger("actorq.banner")
banner.setLevel(logging.INFO)  # one line at start, shown at the default level (warning)

PREFIX = "actorq-"
OWNER_FILE = "owner.pid"
INFO_FILE = "runtime.json"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_START_TOLERANCE_S = 0.01  # start times are computed from clock ticks: equal or not

# directories this process made or claimed -> the pid that did (see _release_at_exit)
_owned: dict[Path, tuple[int, bool]] = {}
# explicit directories -> their link in the registry (removed with the directory's claim)
_links: dict[Path, Path] = {}


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


# --- the registry and its stale entries -------------------------------------------------


def registry_path() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "actorq"
    return Path(tempfile.gettempdir()) / f"actorq-{os.getuid()}"


def _registered() -> Path | None:
    """The registry if it exists (readers do not make it), checked like ``registry()``."""
    return registry() if registry_path().exists() else None


def _forget_registry_if_empty() -> None:
    """The last runtime of this user to stop removes the registry too (rmdir
    fails on a directory that is not empty: a runtime registered meanwhile
    keeps it, and a runtime registering meanwhile makes it again)."""
    try:
        os.rmdir(registry_path())
    except OSError:
        pass


def registry() -> Path:
    """The per-user place where running runtimes are found (module docstring);
    made 0700 if missing. A ConfigError if it is not a private directory of ours."""
    p = registry_path()
    try:
        p.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = p.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        now = (
            f"uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}"
            if stat.S_ISDIR(st.st_mode)
            else "not a directory"
        )
        raise errors.ConfigError(
            f"{p} must be a directory owned by uid {os.getuid()} with mode 0700 (it is {now}); "
            "actorq keeps its runtimes' control sockets there: remove it, or set "
            "XDG_RUNTIME_DIR to a private directory"
        )
    return p


def check_name(name: str) -> str:
    """``name`` if it can name a runtime (a registry entry), else a ConfigError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise errors.ConfigError(
            f"runtime name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def default_name(app: str | None) -> str:
    """``<app>-<pid>``: the app's last telling dotted part (``examples.hello.app``
    gives ``hello``; ``actorq`` without an app), made a valid name."""
    parts = [p for p in (app or "").split(".") if p]
    while len(parts) > 1 and parts[-1] in ("app", "main", "__main__"):
        parts.pop()
    stem = parts[-1] if parts else "actorq"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-")[:40] or "actorq"
    return f"{stem}-{os.getpid()}"


def sweep_stale(base: Path, prefix: str = PREFIX, links: bool = False) -> list[Path]:
    """Remove the ``prefix*`` directories under ``base`` that are ours and whose
    owner is gone; the ones removed. Never one without an owner file. With
    ``links`` (the registry), also the links whose directory is gone or
    ownerless (the link only, never what it points to)."""
    removed: list[Path] = []
    uid = os.getuid()
    try:
        entries = list(os.scandir(base))
    except OSError as exc:
        log.debug("cannot scan %s for stale runtime directories: %s", base, exc)
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or entry.name.startswith("."):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if links and stat.S_ISLNK(st.st_mode) and st.st_uid == uid:
            owner = read_owner(Path(entry.path))
            if owner is None or not owner_alive(owner):
                _unlink(Path(entry.path))
                removed.append(Path(entry.path))
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


def make_runtime_dir(
    path: str | None = None, name: str | None = None, app: str | None = None
) -> tuple[Path, bool]:
    """A private directory for the control socket, claimed by this process:
    (path, created_by_us), and registered under ``name``.

    Stale entries of the registry are swept first. Without ``path`` the
    directory is the registry entry ``name`` itself; a given ``path`` must be
    ours and not readable by others (it is created with 0700 if missing) and
    is linked from the registry entry. A ``name`` in use by a live runtime is
    refused; without one, ``<app>-<pid>`` is used, with a suffix (``-2``,
    ``-3``, ...) for the second runtime of one process (``name_of`` says which).
    """
    names = [check_name(name)] if name else [default_name(app)]
    if not name:
        names += [f"{names[0]}-{i}" for i in range(2, 100)]
    reg = registry()
    sweep_stale(reg, prefix="", links=True)
    p, created = (None, True) if path is None else _claim_explicit(Path(path))
    for n in names:
        for _ in range(3):  # the registry may vanish under us (_forget_registry_if_empty)
            entry = registry() / n
            try:
                if p is None:
                    entry.mkdir(mode=0o700)
                    try:
                        write_owner(entry)
                    except BaseException:
                        shutil.rmtree(entry, ignore_errors=True)
                        raise
                    _remember(entry, created=True)
                    return entry, True
                entry.symlink_to(p.resolve())
                _links[p] = entry
                return p, created
            except FileNotFoundError:
                continue  # make the registry again and retry this name
            except FileExistsError:
                break  # taken: the next name
    if p is not None:
        release_runtime_dir(p, created)
    entry = reg / names[0]
    owner = read_owner(entry)
    who = f" (pid {owner[0]})" if owner is not None else ""
    raise errors.ConfigError(
        f"a runtime named {names[0]!r} is already running{who} ({entry}); "
        "pick another name (--name, or name in the config)"
    )


def name_of(directory: Path) -> str:
    """The registry name of a directory ``make_runtime_dir`` gave this process."""
    link = _links.get(directory)
    return (link if link is not None else directory).name


def _claim_explicit(p: Path) -> tuple[Path, bool]:
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


def write_info(directory: Path, info: dict[str, Any]) -> None:
    """Write ``runtime.json`` (what ``actorq ps`` shows) atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".info-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, directory / INFO_FILE)
    except BaseException:
        _unlink(Path(tmp))
        raise


def read_info(directory: Path) -> dict[str, Any]:
    """``runtime.json`` of a runtime directory ({} if missing or unreadable)."""
    try:
        info = json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


# --- finding running runtimes -------------------------------------------------------------


def running_runtimes() -> list[dict[str, Any]]:
    """The live runtimes of this user in the registry, by name: each with its
    name, directory, pid, start time and what its ``runtime.json`` says."""
    reg = _registered()
    if reg is None:
        return []
    out = []
    for entry in sorted(reg.iterdir()):
        if entry.name.startswith("."):
            continue
        owner = read_owner(entry)
        if owner is None or not owner_alive(owner):
            continue
        info = read_info(entry)
        out.append(
            {
                **info,
                "name": entry.name,
                "directory": os.fspath(entry.resolve()),
                "pid": owner[0],
                "started": owner[1],
            }
        )
    return out


def find_runtime(which: str | None) -> str:
    """The directory (or address) of the runtime ``which`` names: a runtime
    directory, an ``ipc://`` address, a name in the registry, or nothing (the
    only running one). LookupError with the choices when that is not one runtime."""
    if which is not None and ("/" in which or "://" in which or which in (".", "..")):
        return which
    reg = _registered()
    if which is not None:
        entry = reg / which if reg is not None else None
        if entry is not None and entry.exists():
            return os.fspath(entry)
        if Path(which).is_dir():
            return which
    live = running_runtimes()
    if which is None and len(live) == 1:
        return str(live[0]["directory"])
    names = ", ".join(str(r["name"]) for r in live)
    if which is not None:
        raise LookupError(
            f"no runtime named {which!r} in {registry_path()}"
            + (f"; running: {names}" if names else "; none is running")
        )
    if not live:
        raise LookupError(f"no runtime of yours is running (none in {registry_path()})")
    raise LookupError(f"{len(live)} runtimes are running ({names}): name one")


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
    link = _links.pop(p, None)
    if link is not None and link.is_symlink():
        _unlink(link)
    if created:
        shutil.rmtree(p, ignore_errors=True)
    else:
        _unlink(p / "control")
        _unlink(p / INFO_FILE)
        for chan in p.glob("w*.chan"):  # the workers' direct-channel sockets (outside.py)
            _unlink(chan)
        owner = read_owner(p)
        if owner is not None and owner[0] == os.getpid():
            _unlink(p / OWNER_FILE)
    _forget_registry_if_empty()


def _release_at_exit() -> None:
    """The safety net: directories a run of this process did not release."""
    for p, (pid, created) in list(_owned.items()):
        if pid == os.getpid():
            release_runtime_dir(p, created)


# --- saying where it is -------------------------------------------------------------------


def announce(
    workers: int, cpus: str, runtime_dir: Path, name: str = "", metrics: str | None = None
) -> None:
    """The one line a runtime always prints at start (unless the log level asks
    for errors only): its name and directory, so ``actorq stats``/``top`` find it."""
    if logging.getLogger("actorq").getEffectiveLevel() > logging.WARNING:
        return
    banner.info(
        "runtime %s up: %d workers on CPUs %s; runtime directory %s "
        "(actorq top %s, actorq stats %s)%s",
        name or "?",
        workers,
        cpus,
        runtime_dir,
        shlex.quote(name),
        shlex.quote(name),
        f"; Prometheus metrics at http://{metrics}/metrics" if metrics else "",
    )
