"""The few libc calls Python 3.11 lacks (timerfd, signalfd, inotify), via ctypes.

Each wrapper raises ``OSError`` with the real errno, like ``os`` functions do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Iterable

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

O_NONBLOCK = os.O_NONBLOCK
O_CLOEXEC = os.O_CLOEXEC

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_BOOTTIME = 7
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


# --- timerfd -------------------------------------------------------------------
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", timespec), ("it_value", timespec)]


_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(itimerspec),
    ctypes.POINTER(itimerspec),
]
_libc.timerfd_gettime.argtypes = [ctypes.c_int, ctypes.POINTER(itimerspec)]


def _ts(seconds: float) -> timespec:
    sec = int(seconds)
    nsec = round((seconds - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return timespec(sec, nsec)


def timerfd_create(clock: int) -> int:
    return _check(_libc.timerfd_create(clock, O_NONBLOCK | O_CLOEXEC), "timerfd_create")


def timerfd_settime(fd: int, flags: int, value: float, interval: float) -> None:
    """Arm (value > 0, or an absolute time with TFD_TIMER_ABSTIME) or disarm (0, 0)."""
    spec = itimerspec(_ts(interval), _ts(value))
    _check(_libc.timerfd_settime(fd, flags, ctypes.byref(spec), None), "timerfd_settime")


def timerfd_gettime(fd: int) -> tuple[float, float]:
    """(seconds until the next expiration, interval); (0, 0) when disarmed."""
    spec = itimerspec()
    _check(_libc.timerfd_gettime(fd, ctypes.byref(spec)), "timerfd_gettime")
    v, i = spec.it_value, spec.it_interval
    return v.tv_sec + v.tv_nsec / 1e9, i.tv_sec + i.tv_nsec / 1e9


# --- signalfd ------------------------------------------------------------------
class sigset_t(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))]


_libc.signalfd.argtypes = [ctypes.c_int, ctypes.POINTER(sigset_t), ctypes.c_int]


def make_sigset(signals: Iterable[int]) -> sigset_t:
    s = sigset_t()
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    for sig in signals:
        n = int(sig) - 1
        s.val[n // bits] |= 1 << (n % bits)
    return s


def signalfd(signals: Iterable[int], fd: int = -1) -> int:
    mask = make_sigset(signals)
    return _check(_libc.signalfd(fd, ctypes.byref(mask), O_NONBLOCK | O_CLOEXEC), "signalfd")


# struct signalfd_siginfo: 128 bytes.
SIGINFO_FORMAT = "=IiiIIiIIIIiiQQQQHHiQI28x"
SIGINFO_SIZE = 128

# --- inotify -------------------------------------------------------------------
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def inotify_init() -> int:
    return _check(_libc.inotify_init1(O_NONBLOCK | O_CLOEXEC), "inotify_init1")


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    p = os.fsencode(path)
    ret = _libc.inotify_add_watch(fd, p, mask)
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"inotify_add_watch({os.fsdecode(p)!r}): {os.strerror(e)}", os.fsdecode(p))
    return ret


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check(_libc.inotify_rm_watch(fd, wd), "inotify_rm_watch")


def sigqueue(pid: int, sig: int, value: int) -> None:
    """Send a (realtime) signal carrying an int, like sigqueue(3)."""

    class sigval(ctypes.Union):
        _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]

    _libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, sigval]
    _check(_libc.sigqueue(pid, sig, sigval(sival_int=value)), "sigqueue")


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
        return f"signal {sig}"
