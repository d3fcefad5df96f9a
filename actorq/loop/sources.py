"""Kernel event sources for the loop: each is an fd registered edge-triggered,
and each drains by the rule of its kind (see the essay in ``core.py``).

Every source has ``fileno()``, ``kind`` (the key of its events in
``Loop.statistics()``), ``on_ready()`` (drain; return True if a budget
stopped it early, so the loop calls it again next turn) and ``close()``
(removes it from its loop first: *unregister before close*). Add one with
``loop.add_source(src)``.

- :class:`FdSource` -- any pollable fd, readable and/or writable callbacks.
- :class:`Timer` -- timerfd: one-shot, periodic, absolute wall-clock; reports
  the number of expirations.
- :class:`Signals` -- signalfd; SIGTERM/SIGINT as termination requests,
  SIGCHLD with the reaped child's pid and status.
- :class:`Inotify` -- file system changes with paths and move cookies.
- :class:`Netlink` -- link up/down and address changes; resyncs on overflow.
- :class:`ZmqSource` -- a ZeroMQ socket (zmq's FD is its own edge).
- :class:`EventfdSource` -- an eventfd doorbell (the rings' doorbells).
- :class:`CondVar` -- a condition variable shared by processes (``condvar.py``).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _libc
from .condvar import CondVar as CondVar

if TYPE_CHECKING:
    from .core import Loop

__all__ = [
    "AddrInfo",
    "CondVar",
    "EventfdSource",
    "FdSource",
    "Inotify",
    "InotifyEvent",
    "LinkInfo",
    "Netlink",
    "NetlinkEvent",
    "SignalInfo",
    "Signals",
    "Timer",
    "ZmqSource",
    "block_signals",
    "blocked_signals",
    "unblock_signals",
]

EPOLLIN = 0x001
EPOLLOUT = 0x004


class _Base:
    """What every source shares: the fd, the loop it is attached to, close()."""

    kind = "fd"
    events = EPOLLIN
    _fd = -1
    _loop: Loop | None = None

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._fd

    def attach(self, loop: Loop) -> None:
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError(
                f"{self!r} is already attached to another Loop; remove it there first"
            )
        self._loop = loop

    def detach(self, loop: Loop) -> None:
        self._loop = None

    def on_ready(self) -> bool | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _owns_fd(self) -> bool:
        return True

    def close(self) -> None:
        """Unregister from the loop, then close the fd (in that order: see core.py)."""
        if self._loop is not None:
            self._loop.remove_source(self)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._owns_fd():
                os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd}>"


# --- any fd --------------------------------------------------------------------
class FdSource(_Base):
    """Any pollable fd. ``on_readable()``/``on_writable()`` are called on each
    edge and must drain (or return True to be called again). The fd stays
    the caller's: ``close()`` only unregisters it unless ``own=True``."""

    kind = "fd"

    def __init__(
        self,
        fd: Any,
        on_readable: Callable[[], bool | None] | None = None,
        on_writable: Callable[[], bool | None] | None = None,
        *,
        own: bool = False,
    ) -> None:
        if on_readable is None and on_writable is None:
            raise ValueError("FdSource needs on_readable, on_writable or both")
        self._fd = fd if isinstance(fd, int) else fd.fileno()
        self._own = own
        self._r = on_readable
        self._w = on_writable
        self.events = (EPOLLIN if on_readable else 0) | (EPOLLOUT if on_writable else 0)

    def _owns_fd(self) -> bool:
        return self._own

    def on_ready(self) -> bool | None:
        return self._r() if self._r is not None else None

    def on_writable(self) -> bool | None:
        return self._w() if self._w is not None else None


# --- timers --------------------------------------------------------------------
_CLOCKS = {
    "monotonic": _libc.CLOCK_MONOTONIC,
    "realtime": _libc.CLOCK_REALTIME,
    "boottime": _libc.CLOCK_BOOTTIME,
}


class Timer(_Base):
    """A kernel timer (timerfd). ``callback(expirations)`` gets how many times
    it expired since the last report (more than 1 when the loop was late for
    a periodic timer). Drain rule: one read returns and resets the count.

    >>> t = Timer.periodic(0.05, on_tick); loop.add_source(t)
    >>> Timer.at(time.time() + 60, on_deadline)   # absolute, CLOCK_REALTIME

    An absolute timer is made with ``TFD_TIMER_CANCEL_ON_SET``: if someone
    steps the wall clock, the read fails with ECANCELED; we count it in
    ``clock_changes`` and call ``callback(0)``.
    """

    kind = "timer"

    def __init__(self, callback: Callable[[int], Any], *, clock: str = "monotonic") -> None:
        if clock not in _CLOCKS:
            raise ValueError(f"unknown clock {clock!r}; use one of {', '.join(_CLOCKS)}")
        self.clock = clock
        self._cb = callback
        self._fd = _libc.timerfd_create(_CLOCKS[clock])
        self.expirations = 0
        self.clock_changes = 0

    @classmethod
    def once(cls, delay: float, callback: Callable[[int], Any]) -> Timer:
        t = cls(callback)
        t.set(delay)
        return t

    @classmethod
    def periodic(
        cls, interval: float, callback: Callable[[int], Any], *, first: float | None = None
    ) -> Timer:
        t = cls(callback)
        t.set(interval if first is None else first, interval)
        return t

    @classmethod
    def at(cls, wall_time: float, callback: Callable[[int], Any], interval: float = 0.0) -> Timer:
        """Fire at ``wall_time`` (seconds since the epoch, like ``time.time()``)."""
        t = cls(callback, clock="realtime")
        t.set_at(wall_time, interval)
        return t

    def set(self, after: float, interval: float = 0.0) -> None:
        """Expire ``after`` seconds from now (> 0), then every ``interval`` if > 0."""
        if after <= 0:
            after = 1e-9  # 0 would disarm; "now" is the nearest thing
        _libc.timerfd_settime(self.fileno(), 0, after, interval)

    def set_at(self, when: float, interval: float = 0.0) -> None:
        """Expire at absolute time ``when`` on this timer's clock (a past time fires at once)."""
        flags = _libc.TFD_TIMER_ABSTIME
        if self.clock == "realtime":
            flags |= _libc.TFD_TIMER_CANCEL_ON_SET
        if when <= 0:
            when = 1e-9
        _libc.timerfd_settime(self.fileno(), flags, when, interval)

    def disarm(self) -> None:
        _libc.timerfd_settime(self.fileno(), 0, 0.0, 0.0)

    def remaining(self) -> tuple[float, float]:
        """(seconds to the next expiration, interval); (0.0, 0.0) when disarmed."""
        return _libc.timerfd_gettime(self.fileno())

    def on_ready(self) -> bool | None:
        try:
            n = int.from_bytes(os.read(self._fd, 8), sys.byteorder)
        except BlockingIOError:
            return None  # disarmed or re-set since the edge
        except OSError as e:
            if e.errno != errno.ECANCELED:
                raise
            self.clock_changes += 1
            n = 0
        self.expirations += n
        self._cb(n)
        return None


# --- signals -------------------------------------------------------------------
def block_signals(*signals: int) -> set[int]:
    """Block ``signals`` in the calling thread (so only a signalfd sees them);
    returns the previously blocked set, for ``unblock_signals``.

    The mask is inherited across fork AND exec: children start with these
    blocked. And starting ``multiprocessing``'s resource tracker (the first
    ``SharedMemory()`` or spawn ``Process.start()``) UNBLOCKS SIGINT and
    SIGTERM in the calling thread: start it before blocking, or re-block
    after (``Signals.reblock()``).
    """
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, signals))


def unblock_signals(*signals: int) -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_UNBLOCK, signals))


def blocked_signals() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


@dataclass(frozen=True)
class SignalInfo:
    """One signal as signalfd reports it (``struct signalfd_siginfo``).

    For SIGCHLD reported by a reaping ``Signals``, ``pid`` is the reaped
    child and ``status`` its exit code (negative: killed by that signal).
    """

    signo: int
    code: int = 0
    pid: int = 0
    uid: int = 0
    status: int = 0
    value: int = 0  # ssi_int: the int a sigqueue() sender attached
    errno: int = 0

    @property
    def name(self) -> str:
        return _libc.signal_name(self.signo)

    @property
    def terminate(self) -> bool:
        """True for SIGTERM and SIGINT: a request to shut down."""
        return self.signo in (signal.SIGTERM, signal.SIGINT)


class Signals(_Base):
    """Signals as events, through a signalfd.

    ``callback(info: SignalInfo)`` is called once per signal record. Standard
    signals coalesce (two SIGUSR1 before a read are one record); realtime
    signals queue. SIGTERM and SIGINT count as termination requests
    (``termination_requests``; ``on_terminate(n)`` is called with the count, so
    a runtime can stop in order on the first and exit at once on the second).
    With ``reap=True`` (default) a SIGCHLD runs a ``waitpid(-1, WNOHANG)``
    loop -- SIGCHLDs coalesce too, so the record's pid alone would miss
    children -- and the callback gets one SIGCHLD ``SignalInfo`` per reaped
    child. (It reaps every child, so do not mix it with ``subprocess.wait``.)

    The signals are blocked in the calling thread (``block=True``), which must
    be the loop's thread, and every other thread must block them too, or the
    kernel may deliver them there instead.
    Drain rule: a read returns as many 128-byte records as are pending; a
    short read has drained it.
    """

    kind = "signal"
    budget = 64

    def __init__(
        self,
        signals: Iterable[int],
        callback: Callable[[SignalInfo], Any] | None = None,
        *,
        on_terminate: Callable[[int], Any] | None = None,
        block: bool = True,
        reap: bool = True,
    ) -> None:
        self.signals = frozenset(int(s) for s in signals)
        if not self.signals:
            raise ValueError("Signals needs at least one signal")
        self._cb = callback
        self._on_terminate = on_terminate
        self._reap = reap
        self.termination_requests = 0
        if block:
            block_signals(*self.signals)
        self._fd = _libc.signalfd(self.signals)
        self._buf = bytearray(_libc.SIGINFO_SIZE * 16)

    def reblock(self) -> set[int]:
        """Block our signals again (after something unblocked them); returns
        the ones that had been unblocked."""
        missing = self.signals - blocked_signals()
        if missing:
            block_signals(*missing)
        return set(missing)

    def on_ready(self) -> bool | None:
        buf = self._buf
        size = _libc.SIGINFO_SIZE
        for _ in range(self.budget):
            try:
                n = os.readv(self._fd, [buf])
            except BlockingIOError:
                return None
            for off in range(0, n, size):
                f = struct.unpack_from(_libc.SIGINFO_FORMAT, buf, off)
                info = SignalInfo(
                    signo=f[0], errno=f[1], code=f[2], pid=f[3], uid=f[4], status=f[10], value=f[11]
                )
                self._deliver(info)
            if n < len(buf):
                return None  # short read: drained
        return True

    def _deliver(self, info: SignalInfo) -> None:
        if info.signo == signal.SIGCHLD and self._reap:
            self._reap_children(info)
            return
        if info.terminate:
            self.termination_requests += 1
            if self._on_terminate is not None:
                self._on_terminate(self.termination_requests)
        if self._cb is not None:
            self._cb(info)

    def _reap_children(self, info: SignalInfo) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self._cb is not None:
                self._cb(SignalInfo(signo=signal.SIGCHLD, code=info.code, pid=pid, status=code))


# --- inotify -------------------------------------------------------------------
IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_ISDIR = 0x40000000

_IN_NAMES = {
    IN_ACCESS: "access",
    IN_MODIFY: "modify",
    IN_ATTRIB: "attrib",
    IN_CLOSE_WRITE: "close_write",
    IN_CLOSE_NOWRITE: "close_nowrite",
    IN_OPEN: "open",
    IN_MOVED_FROM: "moved_from",
    IN_MOVED_TO: "moved_to",
    IN_CREATE: "create",
    IN_DELETE: "delete",
    IN_DELETE_SELF: "delete_self",
    IN_MOVE_SELF: "move_self",
    IN_UNMOUNT: "unmount",
    IN_Q_OVERFLOW: "overflow",
    IN_IGNORED: "ignored",
    IN_ISDIR: "isdir",
}


@dataclass(frozen=True)
class InotifyEvent:
    """One inotify record. ``path`` is the watched path joined with ``name``
    (the watched path itself for events about it, e.g. delete_self).
    A rename is a moved_from and a moved_to with the same ``cookie``."""

    wd: int
    mask: int
    cookie: int
    name: str
    path: str
    kinds: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


class Inotify(_Base):
    """File system changes: ``callback(event: InotifyEvent)`` per record.

    ``watch(path)`` watches a file or a directory (not recursively) for
    create, modify, delete, moves and delete/move of itself. When a watch
    goes away (deleted, unmounted, ``unwatch``) the kernel sends ``ignored``
    and we forget the path. A queue overflow arrives as an event with kind
    ``overflow`` and wd -1: rescan what you care about.
    Drain rule: a read returns as many whole records as fit; if fewer bytes
    came back than the buffer minus the largest record, it is drained.
    """

    kind = "inotify"
    DEFAULT_MASK = (
        IN_CREATE
        | IN_MODIFY
        | IN_CLOSE_WRITE
        | IN_DELETE
        | IN_MOVED_FROM
        | IN_MOVED_TO
        | IN_DELETE_SELF
        | IN_MOVE_SELF
    )
    _MAX_RECORD = 16 + 255 + 1
    budget = 16

    def __init__(self, callback: Callable[[InotifyEvent], Any]) -> None:
        self._cb = callback
        self._fd = _libc.inotify_init()
        self._paths: dict[int, str] = {}
        self._buf = bytearray(65536)

    def watch(self, path: str | os.PathLike[str], mask: int | None = None) -> int:
        """Watch ``path``; returns the watch descriptor (the same one again for the same inode)."""
        p = os.fspath(path)
        wd = _libc.inotify_add_watch(self.fileno(), p, self.DEFAULT_MASK if mask is None else mask)
        self._paths[wd] = p
        return wd

    def unwatch(self, wd_or_path: int | str | os.PathLike[str]) -> None:
        if isinstance(wd_or_path, int):
            wd = wd_or_path
        else:
            p = os.fspath(wd_or_path)
            matches = [w for w, q in self._paths.items() if q == p]
            if not matches:
                raise KeyError(f"{p!r} is not watched by this Inotify")
            wd = matches[0]
        try:
            _libc.inotify_rm_watch(self.fileno(), wd)
        except OSError as e:
            if e.errno != errno.EINVAL:  # already gone (deleted): the IGNORED is on its way
                raise

    @property
    def watched(self) -> dict[int, str]:
        return dict(self._paths)

    def on_ready(self) -> bool | None:
        buf = self._buf
        for _ in range(self.budget):
            try:
                n = os.readv(self._fd, [buf])
            except BlockingIOError:
                return None
            self._parse(buf, n)
            if n < len(buf) - self._MAX_RECORD:
                return None
        return True

    def _parse(self, buf: bytearray, n: int) -> None:
        off = 0
        paths = self._paths
        while off < n:
            wd, mask, cookie, length = struct.unpack_from("=iIII", buf, off)
            raw = bytes(buf[off + 16 : off + 16 + length]).rstrip(b"\0")
            off += 16 + length
            name = os.fsdecode(raw)
            base = paths.get(wd, "")
            path = os.path.join(base, name) if name else base
            kinds = frozenset(v for k, v in _IN_NAMES.items() if mask & k)
            if mask & IN_IGNORED:
                paths.pop(wd, None)
            self._cb(InotifyEvent(wd, mask, cookie, name, path, kinds))


# --- netlink -------------------------------------------------------------------
NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    flags: int

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP)."""
        return bool(self.flags & IFF_UP)

    @property
    def running(self) -> bool:
        """Operationally up: carrier present (IFF_RUNNING / IFF_LOWER_UP)."""
        return bool(self.flags & (IFF_RUNNING | IFF_LOWER_UP))


@dataclass(frozen=True)
class AddrInfo:
    index: int
    family: int
    address: str
    prefixlen: int
    label: str = ""


@dataclass(frozen=True)
class NetlinkEvent:
    """``kind`` is "link", "addr" or "resync". ``action``: for a link "new"
    (first seen), "up" / "down" (IFF_UP changed), "change" (other flags,
    e.g. carrier: see ``LinkInfo.running``) or "del"; for an address "new" or
    "del"; "" for a resync. A link event has ``link``; an addr event ``addr``; a resync
    (after the kernel dropped events: ENOBUFS) carries the full ``links`` and
    ``addrs`` as dumped, and is also counted in ``Netlink.overflows``."""

    kind: str
    action: str = ""
    link: LinkInfo | None = None
    addr: AddrInfo | None = None
    links: tuple[LinkInfo, ...] = ()
    addrs: tuple[AddrInfo, ...] = ()


def _attrs(data: bytes | memoryview, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        length, typ = _RTATTR.unpack_from(data, off)
        if length < 4:
            break
        out[typ & 0x3FFF] = bytes(data[off + 4 : off + length])
        off += (length + 3) & ~3
    return out


def _parse_route(data: bytes | memoryview) -> list[tuple[int, LinkInfo | AddrInfo | None]]:
    """Parse a netlink datagram into (message type, info) pairs."""
    out: list[tuple[int, LinkInfo | AddrInfo | None]] = []
    off = 0
    n = len(data)
    while off + 16 <= n:
        length, typ, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < 16:
            break
        body, end = off + 16, off + length
        if typ in (RTM_NEWLINK, RTM_DELLINK):
            _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
            a = _attrs(data, body + _IFINFOMSG.size, end)
            name = a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
            out.append((typ, LinkInfo(index, name, flags)))
        elif typ in (RTM_NEWADDR, RTM_DELADDR):
            fam, plen, _fl, _scope, index = _IFADDRMSG.unpack_from(data, body)
            a = _attrs(data, body + _IFADDRMSG.size, end)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS) or b""
            try:
                addr = socket.inet_ntop(fam, raw)
            except (ValueError, OSError):
                addr = raw.hex()
            label = a.get(IFA_LABEL, b"").rstrip(b"\0").decode(errors="replace")
            out.append((typ, AddrInfo(index, fam, addr, plen, label)))
        else:
            out.append((typ, None))
        off += (length + 3) & ~3
    return out


class Netlink(_Base):
    """Network changes from a NETLINK_ROUTE socket: links appearing, going
    up/down or away, addresses added and removed -- ``callback(NetlinkEvent)``.

    ``links`` (index -> LinkInfo) and ``addrs`` (a set of AddrInfo) are kept
    current. If the kernel overflows our receive buffer it drops events and
    ``recv`` fails with ENOBUFS: we then dump links and addresses afresh,
    replace the tables, count it in ``overflows`` and report a "resync"
    event. Drain rule: netlink is datagrams, so read until EAGAIN (or budget).
    A listener sees only its own network namespace.
    """

    kind = "netlink"
    budget = 64

    def __init__(
        self,
        callback: Callable[[NetlinkEvent], Any],
        *,
        groups: int = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
        rcvbuf: int | None = None,
        snapshot: bool = True,
    ) -> None:
        self._cb = callback
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
        if rcvbuf is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._sock.bind((0, groups))
        self._fd = self._sock.fileno()
        self.links: dict[int, LinkInfo] = {}
        self.addrs: set[AddrInfo] = set()
        self.overflows = 0
        if snapshot:
            self._load(*self.dump())

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_source(self)
        if self._fd >= 0:
            self._fd = -1
            self._sock.close()

    def dump(self, timeout: float = 5.0) -> tuple[list[LinkInfo], list[AddrInfo]]:
        """Ask the kernel for every link and address now (on a separate socket)."""
        links: list[LinkInfo] = []
        addrs: list[AddrInfo] = []
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        ) as s:
            s.settimeout(timeout)
            s.bind((0, 0))
            for seq, (typ, body) in enumerate(
                (
                    (RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0)),
                    (RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0)),
                ),
                start=1,
            ):
                s.send(
                    _NLMSGHDR.pack(16 + len(body), typ, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
                )
                done = False
                while not done:
                    data = s.recv(1 << 16)
                    for mtype, info in _parse_route(data):
                        if mtype == NLMSG_DONE:
                            done = True
                        elif mtype == NLMSG_ERROR:
                            raise OSError(f"netlink dump (type {typ}) failed")
                        elif isinstance(info, LinkInfo):
                            links.append(info)
                        elif isinstance(info, AddrInfo):
                            addrs.append(info)
        return links, addrs

    def _load(self, links: list[LinkInfo], addrs: list[AddrInfo]) -> None:
        self.links = {link.index: link for link in links}
        self.addrs = set(addrs)

    def resync(self) -> None:
        """Re-read the whole state (after an overflow) and report it."""
        links, addrs = self.dump()
        self._load(links, addrs)
        self._cb(NetlinkEvent("resync", links=tuple(links), addrs=tuple(addrs)))

    def on_ready(self) -> bool | None:
        recv = self._sock.recv
        for _ in range(self.budget):
            try:
                data = recv(1 << 16)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # The kernel dropped events for us; the socket is usable again.
                self.overflows += 1
                self._drop_queued()
                self.resync()
                return None
            for typ, info in _parse_route(data):
                self._apply(typ, info)
        return True

    def _drop_queued(self) -> None:
        # Whatever is still queued predates the dump we are about to take.
        while True:
            try:
                self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise

    def _apply(self, typ: int, info: LinkInfo | AddrInfo | None) -> None:
        if isinstance(info, LinkInfo):
            if typ == RTM_NEWLINK:
                old = self.links.get(info.index)
                self.links[info.index] = info
                if old is None:
                    action = "new"
                elif old.up != info.up:
                    action = "up" if info.up else "down"
                else:
                    action = "change"
                self._cb(NetlinkEvent("link", action, link=info))
            else:
                self.links.pop(info.index, None)
                self.addrs = {a for a in self.addrs if a.index != info.index}
                self._cb(NetlinkEvent("link", "del", link=info))
        elif isinstance(info, AddrInfo):
            if typ == RTM_NEWADDR:
                self.addrs.add(info)
                self._cb(NetlinkEvent("addr", "new", addr=info))
            else:
                self.addrs.discard(info)
                self._cb(NetlinkEvent("addr", "del", addr=info))


# --- zeromq --------------------------------------------------------------------
class ZmqSource(_Base):
    """A ZeroMQ socket as a source: ``callback(msg)`` per incoming message
    (a list of frames, or bytes with ``multipart=False``).

    zmq's ``FD`` is not the socket's readiness: it is zmq's internal
    notification pipe, and it signals edge-style when zmq's *internal* state
    changes. Any operation on the socket -- a ``send``, a ``getsockopt(EVENTS)``
    -- may process pending commands and consume that edge while messages are
    waiting. So the only truth is ``getsockopt(zmq.EVENTS)``: on every wake we
    receive while EVENTS says POLLIN (a budget may stop us: we say so and are
    called again), and *before the loop sleeps* we check EVENTS again (a
    ``before_sleep`` hook), because a send made elsewhere may have eaten the
    edge; a loop that is too busy to sleep checks every 64 turns
    (``every_turns``). The socket stays the caller's; ``close()`` only
    unregisters.
    """

    kind = "zmq"
    budget = 64

    def __init__(
        self, sock: Any, callback: Callable[[Any], Any], *, multipart: bool = True
    ) -> None:
        import zmq

        self._zmq = zmq
        self.socket = sock
        self._cb = callback
        self._multipart = multipart
        self._fd = sock.getsockopt(zmq.FD)
        self._remove_hook: Callable[[], None] | None = None
        self._remove_periodic: Callable[[], None] | None = None
        self._queued = False

    def _owns_fd(self) -> bool:
        return False

    def attach(self, loop: Loop) -> None:
        super().attach(loop)
        self._remove_hook = loop.before_sleep(self._check)
        self._remove_periodic = loop.every_turns(self._check)

    def detach(self, loop: Loop) -> None:
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None
        if self._remove_periodic is not None:
            self._remove_periodic()
            self._remove_periodic = None
        super().detach(loop)

    def _readable(self) -> bool:
        return bool(self.socket.getsockopt(self._zmq.EVENTS) & self._zmq.POLLIN)

    def _check(self) -> None:
        """Before sleeping: messages may be waiting with their edge consumed."""
        if not self._queued and self._loop is not None and self._fd >= 0 and self._readable():
            self._queued = True
            self._loop.call_soon(self._run_queued)

    def _run_queued(self) -> None:
        self._queued = False
        if self._loop is not None and self.on_ready() is True:
            self._queued = True
            self._loop.call_soon(self._run_queued)

    def on_ready(self) -> bool | None:
        zmq = self._zmq
        sock = self.socket
        recv = sock.recv_multipart if self._multipart else sock.recv
        for _ in range(self.budget):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return None
            try:
                msg = recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            self._cb(msg)
            if self._fd < 0:
                return None  # the callback closed us
        return True


# --- eventfd doorbells -----------------------------------------------------------
class EventfdSource(_Base):
    """An eventfd (non-semaphore) as a doorbell: ``callback(value)`` with the
    counter read on each edge. Drain rule: one read returns and resets the
    counter. If the callback returns True (it stopped early, e.g. a ring
    drain with a limit) it is called again next turn with ``value`` 0, without
    another read. The fd stays the caller's unless ``own=True``.
    """

    kind = "eventfd"

    def __init__(
        self, fd: int, callback: Callable[[int], bool | None], *, own: bool = False
    ) -> None:
        self._fd = fd
        self._cb = callback
        self._own = own
        self._again = False

    def _owns_fd(self) -> bool:
        return self._own

    def on_ready(self) -> bool | None:
        if self._again:
            self._again = False
            value = 0
        else:
            try:
                value = os.eventfd_read(self._fd)
            except BlockingIOError:
                value = (
                    0  # the edge was for a value someone else read; the callback checks its ring
                )
        if self._cb(value) is True:
            self._again = True
            return True
        return None
