"""A condition variable shared by processes: shared memory for the state, one
eventfd per waiting slot for the wake-ups, a semaphore eventfd as the lock.

How it avoids lost wake-ups and the thundering herd
===================================================
The state lives in a memfd mapped by every process (passed by fork or
``socket.send_fds``; no name, nothing to unlink): a ticket counter and a
table of waiter *slots*, each ``FREE``, ``WAITING`` or ``SIGNALLED`` with its
ticket and pid. Each slot has its own eventfd, created with the condvar, so
any process can ring any waiter. The lock is an ``EFD_SEMAPHORE`` eventfd
holding 1: acquiring is a successful read (takes the 1), releasing writes 1
back; the kernel makes that atomic across processes, which plain Python
cannot do on shared memory.

- ``wait()`` is called with the lock held. It claims a free slot, marks it
  WAITING with the next ticket, *then* releases the lock and sleeps on the
  slot's eventfd. A notifier must take the lock to change the predicate and
  to notify, so it either runs before we claimed (and we see its change when
  we checked the predicate) or after (and it sees our slot): no lost
  wake-up.
- ``notify(n)`` (under the lock) marks the ``n`` WAITING slots with the
  lowest tickets SIGNALLED and writes *their* eventfds, and only theirs: one
  notify wakes one waiter, in FIFO order. The write happens under the lock, so
  it can never land on a slot after its owner freed it.
- A waiter woken, timed out or cancelled retakes the lock and frees its
  slot. If it had been SIGNALLED but is leaving because of a timeout or a
  cancel, it passes the notification on to the next waiter, so a notify is
  never swallowed by someone who stopped caring.
- A slot whose process died while WAITING would swallow a notification:
  ``notify`` checks the pid of the slot it picks (``kill(pid, 0)``) and frees
  dead ones. A process that dies *holding the lock* leaves it held: keep the
  critical sections short and do not die in them.

Waits come in two forms: ``await cv.wait()`` inside a loop coroutine (the
slot eventfd is watched by the loop like any fd), and ``cv.wait_blocking()``
for code without a loop. ``cv.buf`` is a user area in the same shared memory
for the predicate's data.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
import time
from typing import Any

__all__ = ["CondVar"]

_MAGIC = 0x41435156  # "ACQV"
_HDR = struct.Struct("=IIIIQ")  # magic, nslots, user_size, pad, next_ticket
_HDR_SIZE = 64
_SLOT = struct.Struct("=IIQQ")  # state, pad, ticket, pid
_SLOT_SIZE = 32
FREE, WAITING, SIGNALLED = 0, 1, 2


class CondVar:
    """A cross-process condition variable (see the module docstring).

    >>> cv = CondVar.create(slots=32, size=64)   # before fork, or pass cv.handles()
    >>> with cv:                                   # the lock
    ...     while not ready(cv.buf):
    ...         await cv.wait()                    # or cv.wait_blocking(timeout)
    >>> with cv:
    ...     make_ready(cv.buf); cv.notify()        # wakes exactly one waiter
    """

    def __init__(self, memfd: int, lock_fd: int, slot_fds: tuple[int, ...]) -> None:
        self._memfd = memfd
        self._lock_fd = lock_fd
        self._slot_fds = slot_fds
        size = os.fstat(memfd).st_size
        self._map = mmap.mmap(memfd, size)
        magic, nslots, user_size, _pad, _t = _HDR.unpack_from(self._map, 0)
        if magic != _MAGIC or nslots != len(slot_fds):
            self._map.close()
            raise ValueError(
                f"fd {memfd} is not a CondVar with {len(slot_fds)} slots "
                f"(magic {magic:#x}, {nslots} slots): pass CondVar.handles() unchanged"
            )
        self._nslots = nslots
        self._user_off = _HDR_SIZE + nslots * _SLOT_SIZE
        self.buf = memoryview(self._map)[self._user_off : self._user_off + user_size]
        self._held = False
        self._closed = False
        self._lock_waiters: list[Any] = []  # Futures of this process's coroutines
        self._lock_loop: Any = None

    # --- making and sharing ----------------------------------------------------
    @classmethod
    def create(cls, slots: int = 32, size: int = 0) -> CondVar:
        """A new condvar with room for ``slots`` simultaneous waiters (in all
        processes) and ``size`` bytes of shared user data in ``buf``."""
        if slots < 1:
            raise ValueError("a CondVar needs at least one waiter slot")
        total = _HDR_SIZE + slots * _SLOT_SIZE + size
        memfd = os.memfd_create("actorq-condvar", os.MFD_CLOEXEC)
        fds = [memfd]
        try:
            os.ftruncate(memfd, total)
            with mmap.mmap(memfd, total) as m:
                _HDR.pack_into(m, 0, _MAGIC, slots, size, 0, 1)
            lock = os.eventfd(1, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            fds.append(lock)
            for _ in range(slots):
                fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
            return cls(memfd, lock, tuple(fds[2:]))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def handles(self) -> tuple[int, ...]:
        """The fds to give another process (``socket.send_fds``); it calls
        ``CondVar.attach(*handles)``. Forked children can use this object."""
        return (self._memfd, self._lock_fd, *self._slot_fds)

    @classmethod
    def attach(cls, memfd: int, lock_fd: int, *slot_fds: int) -> CondVar:
        return cls(memfd, lock_fd, tuple(slot_fds))

    def close(self) -> None:
        """Close this process's mapping and fds (the others keep theirs)."""
        if self._closed:
            return
        self._closed = True
        self.buf.release()
        self._map.close()
        for fd in (self._memfd, self._lock_fd, *self._slot_fds):
            os.close(fd)

    # --- the lock --------------------------------------------------------------------
    def _try_lock(self) -> bool:
        try:
            os.eventfd_read(self._lock_fd)
        except BlockingIOError:
            return False
        self._held = True
        return True

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, blocking the thread (critical sections are short)."""
        if self._try_lock():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        p = select.poll()
        p.register(self._lock_fd, select.POLLIN)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            p.poll(None if left is None else left * 1000)
            if self._try_lock():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    async def acquire_async(self) -> None:
        """Take the lock, letting the loop run while someone else holds it.

        Coroutines of this process queue up (FIFO) behind one registration of
        the lock's eventfd; each release (a write: a new edge) lets the first
        of them try again.
        """
        from .core import current_loop

        if not self._lock_waiters and self._try_lock():
            return
        loop = current_loop()
        fut = loop.create_future()
        self._lock_waiters.append(fut)
        if self._lock_loop is None:
            self._lock_loop = loop
            loop.add_reader(self._lock_fd, self._lock_readable)
            loop.label(self._lock_fd, "condvar")
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # the lock was handed to us as we were cancelled
            elif fut in self._lock_waiters:
                self._lock_waiters.remove(fut)
            self._lock_idle()
            raise

    def _lock_readable(self) -> None:
        # One hand-over per edge: if another process won the race, the next
        # release is a new edge and brings us back here.
        waiters = self._lock_waiters
        while waiters and waiters[0].done():
            waiters.pop(0)
        if waiters and self._try_lock():
            waiters.pop(0).set_result(None)
        self._lock_idle()

    def _lock_idle(self) -> None:
        if not self._lock_waiters and self._lock_loop is not None:
            self._lock_loop.remove_reader(self._lock_fd)
            self._lock_loop = None

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("CondVar.release() without holding its lock in this process")
        self._held = False
        os.eventfd_write(self._lock_fd, 1)

    def __enter__(self) -> CondVar:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> CondVar:
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    # --- slots (all under the lock) ----------------------------------------------------
    def _slot(self, i: int) -> tuple[int, int, int]:
        state, _pad, ticket, pid = _SLOT.unpack_from(self._map, _HDR_SIZE + i * _SLOT_SIZE)
        return state, ticket, pid

    def _set_slot(self, i: int, state: int, ticket: int = 0, pid: int = 0) -> None:
        _SLOT.pack_into(self._map, _HDR_SIZE + i * _SLOT_SIZE, state, 0, ticket, pid)

    def _drain(self, i: int) -> None:
        try:
            os.eventfd_read(self._slot_fds[i])
        except BlockingIOError:
            pass

    def _claim(self) -> int:
        if not self._held:
            raise RuntimeError("CondVar.wait() must be called with the lock held (use `with cv:`)")
        for i in range(self._nslots):
            if self._slot(i)[0] == FREE:
                magic, nslots, user_size, pad, ticket = _HDR.unpack_from(self._map, 0)
                _HDR.pack_into(self._map, 0, magic, nslots, user_size, pad, ticket + 1)
                self._drain(i)
                self._set_slot(i, WAITING, ticket, os.getpid())
                return i
        raise RuntimeError(
            f"all {self._nslots} CondVar waiter slots are in use; create it with more slots"
        )

    def _leave(self, i: int, pass_on: bool) -> bool:
        """Free slot ``i`` (lock held); returns whether it had been signalled.
        With ``pass_on`` (we are leaving because we were cancelled) a signal
        that reached us goes to the next waiter instead of being swallowed."""
        state = self._slot(i)[0]
        self._set_slot(i, FREE)
        self._drain(i)
        signalled = state == SIGNALLED
        if signalled and pass_on:
            self._notify_locked(1)
        return signalled

    def _notify_locked(self, n: int) -> int:
        woken = 0
        while n < 0 or woken < n:
            best = -1
            best_ticket = 0
            for i in range(self._nslots):
                state, ticket, pid = self._slot(i)
                if state == WAITING and (best < 0 or ticket < best_ticket):
                    best, best_ticket = i, ticket
            if best < 0:
                break
            pid = self._slot(best)[2]
            if not _alive(pid):
                self._set_slot(best, FREE)  # its process died waiting
                continue
            self._set_slot(best, SIGNALLED, best_ticket, pid)
            os.eventfd_write(self._slot_fds[best], 1)
            woken += 1
        return woken

    # --- the condition variable ---------------------------------------------------------
    def notify(self, n: int = 1) -> int:
        """Wake up to ``n`` waiters, oldest first; returns how many were woken.
        Takes the lock itself if this process does not hold it."""
        if self._held:
            return self._notify_locked(n)
        self.acquire()
        try:
            return self._notify_locked(n)
        finally:
            self.release()

    def notify_one(self) -> int:
        return self.notify(1)

    def notify_all(self) -> int:
        return self.notify(-1)

    def waiting(self) -> int:
        """How many waiters (all processes) are waiting and not yet signalled."""
        return sum(1 for i in range(self._nslots) if self._slot(i)[0] == WAITING)

    async def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify (or the timeout), retake the lock.
        Returns False on timeout. Cancellation raises ``Cancelled`` with the
        lock held again (so ``with cv:`` releases it), and passes on a
        notification that arrived meanwhile."""
        from .core import current_loop, wait_for, wait_readable

        loop = current_loop()
        i = self._claim()
        fd = self._slot_fds[i]
        self.release()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                if deadline is None:
                    await wait_readable(fd, "condvar")
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        await wait_for(wait_readable(fd, "condvar"), left)
                    except TimeoutError:
                        break
                if self._slot(i)[0] == SIGNALLED:
                    break
                self._drain(i)  # a stray count; only the slot state says we were picked
        except GeneratorExit:
            # The coroutine is being closed (garbage, interpreter exit): we may
            # not await any more, so retake the lock the blocking way -- with a
            # bound, since a coroutine of this process may hold it and can no
            # longer run to release it.
            if self.acquire(timeout=1.0):
                self._leave(i, pass_on=True)
            else:
                self._set_slot(i, FREE)  # best effort: never leave a slot that nobody serves
            raise
        except BaseException:
            await self.acquire_async()
            self._leave(i, pass_on=True)
            raise
        await self.acquire_async()
        # A notify that lands between a timeout and retaking the lock still counts.
        return self._leave(i, pass_on=False)

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """``wait`` for code without a loop: blocks the thread."""
        i = self._claim()
        fd = self._slot_fds[i]
        self.release()
        deadline = None if timeout is None else time.monotonic() + timeout
        p = select.poll()
        p.register(fd, select.POLLIN)
        leaving_early = True
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                p.poll(None if left is None else max(1, int(left * 1000)))
                if self._slot(i)[0] == SIGNALLED:
                    break
            leaving_early = False
        finally:
            self.acquire()
            signalled = self._leave(i, pass_on=leaving_early)
        return signalled


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it waits for no one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as e:
        if e.errno != errno.EPERM:
            return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")
