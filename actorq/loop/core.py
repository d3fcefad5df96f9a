"""The worker's event loop: one edge-triggered epoll set, one dispatch path.

Edge-triggered epoll, and what it asks of every callback
========================================================

``epoll`` can report readiness in two ways. Level-triggered (the default, and
what ``selectors`` and asyncio use) reports an fd on *every* ``epoll_wait``
for as long as it is readable; edge-triggered (``EPOLLET``) reports it once
each time its state *changes* -- when new data arrives on a socket, when an
eventfd counter is written, when a timer expires. An edge is a promise that
something happened, not a statement about what is there now.

So a loop that uses ``EPOLLET`` asks one thing of every callback: **drain**.
Consume everything the fd has, because nothing will remind you of what is
left. What "everything" means depends on the kind of file, and the rule for
each is different (a literal "read until EAGAIN" costs one failing syscall
plus a raised exception per event -- as much as a whole 64 B send+receive
here -- so we stop as early as each kind allows):

- *stream sockets and pipes*: a read that returns fewer bytes than were asked
  for has emptied the buffer at that instant; bytes that arrive later raise a
  new edge. Stop at the first short read. A read of 0 bytes is end of file.
- *datagram sockets* (UDP, netlink): one read is one datagram, whatever its
  size, so a short read says nothing. Read until ``BlockingIOError``.
- *eventfd* (not ``EFD_SEMAPHORE``): one successful read returns the whole
  counter and resets it to 0. One read drains it. In semaphore mode each read
  takes 1: read until ``BlockingIOError``.
- *timerfd*: one read returns the number of expirations since the last read
  and resets it. One read drains it.
- *signalfd*: a read returns as many 128-byte ``signalfd_siginfo`` records as
  are pending and fit; a read shorter than the buffer has drained it.
- *inotify*: a read returns as many whole events as fit. If fewer bytes came
  back than ``buffer - (16 + NAME_MAX + 1)`` the next event would have fit, so
  none is pending.
- *ZeroMQ sockets*: the FD is zmq's own internal signalling edge, not the
  socket's readiness; see ``ZmqSource`` in ``sources.py``.

Draining everything can starve the rest of the loop when a peer writes faster
than we read, so a source may stop early, after a *budget* of records, and
return ``True`` from its callback: "I am not drained; call me again". The loop
puts it at the back of the ready queue, behind everything already waiting,
and calls it again on the next turn. No edge is lost (we never waited for
one) and no source starves another.

Why edge-triggered and not ``EPOLLONESHOT``
-------------------------------------------
One-shot disarms the fd after each report, so every event costs an extra
``epoll_ctl(MOD)`` syscall to re-arm it -- a second syscall per message on a
path where one syscall is already a third of the cost. Level-triggered costs
no re-arming but reports a busy fd on every ``epoll_wait`` even while its
callback is waiting its turn, and forces a drain to EAGAIN anyway to stop the
reports. Edge-triggered reports each fd once per change with no re-arming,
and the "drain, or say you are not drained" rule above makes it lossless.
(One-shot earns its keep with several threads on one epoll set, which a
pinned worker never has.)

What dup, close and fork do to registrations
--------------------------------------------
epoll registers the *open file description* (the kernel's ``struct file``)
paired with the fd number you gave it, not the number alone:

- ``close(fd)`` removes the registration only when it closes the *last*
  reference to the file. If a ``dup`` of it lives on (another fd, a child
  process after fork, an fd passed with ``SCM_RIGHTS``), the registration
  stays and keeps reporting events under the old fd number -- which may by
  then name a different file. So: **unregister before close**
  (``remove_reader``/``remove_source`` first). This loop tolerates an fd that
  was closed while registered: removing it later is not an error, and a new
  registration that reuses the number replaces the stale entry.
- ``fork()`` gives the child the *same* epoll instance (epoll fds are files
  too). A child that called ``epoll_ctl`` on it would change the parent's
  registrations. A Loop therefore refuses to run in a process other than the
  one that made it; a child makes its own Loop. ``wake()`` is the exception:
  it only writes an eventfd, which is safe from any thread or process.
- ``exec`` closes the loop's fds (they are all ``O_CLOEXEC``).

A turn
======
1. ``epoll_wait`` with a zero timeout. Only if that finds nothing and nothing
   is queued do the ``before_sleep`` hooks run (a ring reader announces that
   it sleeps; a zmq source checks ``EVENTS``), and then the loop blocks until
   the first timer is due. A busy loop never blocks, so it also runs the
   ``every_turns`` checks each 64 turns.
2. Each fd edge goes through one dict lookup to its callback, a plain call
   (arguments are bound at registration).
3. Due timers move to the ready queue in time order. Timers live in 1 ms
   buckets (a dict of lists and a heap of bucket keys); a bucket is sorted
   once, when it comes due. A delay that is not positive skips all that and
   goes straight to the ready queue.
4. The ready queue (a plain deque of handles) runs: everything queued before
   this point, and what those callbacks queue up to ``turn_budget`` in all,
   so a chain of ``call_soon`` does not pay an ``epoll_wait`` per link and
   I/O is still polled every ``turn_budget`` callbacks; a chain also stops
   once the turn has run 2 ms, so it cannot hold due timers back.

Every callback is timed for ``statistics()`` and the slow-callback warning by
one clock read after it; because a busy turn starts without blocking, the
read that ended the previous callback also starts the next (a clock read
costs 0.1-0.3 us on this VM: two per turn were a tenth of a 64 B echo).
Nothing on the path of an event grows with the number of sources or CPUs.

Coroutines are driven by :class:`Task` here, not by asyncio: a coroutine
awaits a :class:`Future` (``sleep``, ``wait_readable``, ``wait_for`` are built
on it) and the task resumes when the future is resolved; ``task.cancel()``
throws ``Cancelled`` (a BaseException) in at the ``await``.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import operator
import os
import select
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, Protocol, TypeVar

from ..errors import Cancelled

__all__ = [
    "Cancelled",
    "Future",
    "Handle",
    "Loop",
    "Source",
    "Task",
    "TimerHandle",
    "current_loop",
    "sleep",
    "wait_for",
    "wait_readable",
    "wait_writable",
]

log = logging.getLogger("actorq.loop")

T = TypeVar("T")

EPOLLIN = select.EPOLLIN
_RDHUP = select.EPOLLRDHUP
_HUNG_UP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
EPOLLOUT = select.EPOLLOUT
EPOLLET = select.EPOLLET
_READ_EVENTS = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
_WHEN = operator.attrgetter("_when")


class Source(Protocol):
    """What ``Loop.add_source`` accepts (the classes in ``sources.py`` are Sources).

    ``on_ready()`` is called on each edge; it drains the fd and returns True if
    it stopped early (budget spent) and wants to be called again.
    ``attach``/``detach`` are called by ``add_source``/``remove_source``.
    """

    kind: str
    events: int

    def fileno(self) -> int: ...

    def on_ready(self) -> bool | None: ...

    def attach(self, loop: Loop) -> None: ...

    def detach(self, loop: Loop) -> None: ...


class Handle:
    """A scheduled callback; ``cancel()`` stops it from running (O(1))."""

    __slots__ = ("_args", "_cancelled", "_fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def when(self) -> float | None:
        """The loop time a timer is due at (None for ``call_soon`` handles and
        for timers that have fired)."""
        return None

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        at = f" at {self.when:.6f}" if self.when is not None else ""
        return f"<Handle {getattr(self._fn, '__qualname__', self._fn)!s}{at}{state}>"


class TimerHandle(Handle):
    """A ``call_later``/``call_at`` handle: cancelling it tells the loop, which
    drops dead timers in bulk once they are the majority."""

    __slots__ = ("_fired", "_loop", "_when")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], loop: Loop, when: float
    ) -> None:
        self._fn = fn
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._when = when
        self._fired = False  # set when it moves to the ready queue

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            if not self._fired:  # a late cancel() must not count it as a dead timer
                self._loop._timer_cancelled()

    @property
    def when(self) -> float | None:
        return None if self._fired else self._when


class _Entry:
    """One registered fd: its reader and writer callbacks and its event count."""

    __slots__ = ("count", "et", "ev", "fd", "kind", "mask", "reader", "source", "writer")

    def __init__(self, fd: int, kind: str) -> None:
        self.fd = fd
        # Zero-argument callables (arguments bound with functools.partial at
        # registration, so dispatch is a plain call).
        self.reader: Callable[[], Any] | None = None
        self.writer: Callable[[], Any] | None = None
        self.mask = 0
        self.kind = kind
        self.count = 0
        # the flags of its last event: a stream reader that sees EPOLLRDHUP
        # there reads on past a short read, to the end of file (aio transports)
        self.ev = 0
        self.source: Source | None = None
        # EPOLLET unless told otherwise: asyncio's add_reader promises its
        # callers level-triggered readiness (see aio.py), nothing else here does.
        self.et = EPOLLET


class _Local(threading.local):
    loop: Loop | None = None


_local = _Local()


def current_loop() -> Loop:
    """The loop running in this thread; RuntimeError outside one."""
    loop = _local.loop
    if loop is None:
        raise RuntimeError(
            "no actorq loop is running in this thread (call this from a callback or coroutine)"
        )
    return loop


def set_current_loop(loop: Loop | None) -> None:
    """Make ``loop`` this thread's current loop before it runs (a forked child
    inherits its parent's, which would be a dead copy there)."""
    _local.loop = loop


def _again(loop: Loop, fn: Callable[[], Any]) -> None:
    """Call a not-yet-drained callback again; re-queue while it says it is not drained."""
    if fn() is True:
        loop._ready.append(Handle(_again, (loop, fn)))


def _bind(fn: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[], Any]:
    return functools.partial(fn, *args) if args else fn


# A chain of call_soon callbacks (each queueing the next: a drain that finds
# more work) may run past what was ready at the turn's start only this long:
# then the turn ends, so due timers and I/O are not starved by it.
_CHAIN_S = 0.002


class Loop:
    """A single-threaded edge-triggered epoll loop (see the module essay).

    ``clock`` (default ``time.monotonic``) gives the loop's time in seconds;
    timers and statistics use it, so tests can inject one. ``slow_callback``
    is the time (clock units) after which a callback holding the loop is
    logged as a warning. A turn polls epoll once, dispatches the fd edges,
    moves due timers to the ready queue, and runs everything that was ready
    plus callbacks queued meanwhile up to ``turn_budget`` in all.
    ``max_events`` is the most fd events taken from one ``epoll_wait``.

    fd callbacks (``add_reader``/``add_writer``/sources) must drain their fd,
    or return ``True`` (exactly ``True``) to be called again next turn.
    A Loop belongs to the process (and thread) that runs it; only ``wake()``
    and ``call_soon_threadsafe()`` may be called from elsewhere.
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        *,
        slow_callback: float = 0.1,
        max_events: int = 256,
        turn_budget: int = 128,
    ) -> None:
        self._clock: Callable[[], float] = clock or time.monotonic
        self._ep = select.epoll(sizehint=max_events)
        self._max_events = max_events
        self._turn_budget = turn_budget
        self._pid = os.getpid()
        self._ready: collections.deque[Handle] = collections.deque()
        # Timers: buckets of 1 ms (key: int(when * 1000)) in a dict, and a heap
        # of the bucket keys. A bucket is sorted (stable, C float compares)
        # when it comes due; see _run.
        self._buckets: dict[int, list[TimerHandle]] = {}
        self._ticks: list[int] = []
        self._ntimers = 0
        self._cancelled_timers = 0
        self._fds: dict[int, _Entry] = {}
        self._sources: dict[int, Source] = {}  # id(source) -> source
        self._before_sleep: list[Callable[[], Any]] = []
        self._every_turns: list[Callable[[], Any]] = []
        self._running = False
        self._stopping = False
        self._closed = False
        self._exception_handler: Callable[[BaseException, Any], None] | None = None
        # the asyncio face of this loop (aio.AsyncioLoop), once one is attached:
        # asyncio futures of it are this loop's, and spawn() makes asyncio Tasks
        self._facade: Any = None
        # Who wires the loop may say what a slow callback was doing (a worker names
        # the actor method): called with the callback, only when one is slow.
        self.describe_slow: Callable[[Any], str | None] | None = None
        # statistics
        self._slow = slow_callback
        self._callbacks = 0
        self._cb_time = 0.0
        self._longest = 0.0
        self._longest_what = ""
        self._turns = 0
        self._events_by_kind: dict[str, int] = collections.defaultdict(int)
        # wake-up doorbell: an eventfd, safe to write from any thread or process
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_entry = _Entry(self._wake_fd, "wake")
        self._wake_entry.reader = self._drain_wake
        self._wake_entry.mask = EPOLLIN
        self._fds[self._wake_fd] = self._wake_entry
        self._ep.register(self._wake_fd, EPOLLIN | EPOLLET)

    # --- time and continuations -------------------------------------------
    def time(self) -> float:
        """The loop's clock, in seconds."""
        return self._clock()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> Handle:
        """Run ``fn(*args)`` on the next turn, after what is already queued."""
        h = Handle(fn, args)
        self._ready.append(h)
        return h

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> Handle:
        """``call_soon`` from another thread: queue it and wake the loop."""
        h = Handle(fn, args)
        self._ready.append(h)  # deque.append is atomic under the GIL
        self.wake()
        return h

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Handle:
        """Run ``fn(*args)`` after ``delay`` seconds; a delay <= 0 is ``call_soon``."""
        if delay <= 0:
            h = Handle(fn, args)
            self._ready.append(h)
            return h
        return self.call_at(self._clock() + delay, fn, *args)

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Handle:
        """Run ``fn(*args)`` when ``time()`` reaches ``when`` (never earlier)."""
        return self._schedule(TimerHandle(fn, args, self, when), when)

    def _schedule(self, h: TimerHandle, when: float) -> TimerHandle:
        """Put timer ``h`` (due at ``when``) into its bucket."""
        try:
            k = int(when * 1000.0)
        except (OverflowError, ValueError):
            raise ValueError(f"a timer needs a finite time, not {when!r}") from None
        b = self._buckets.get(k)
        if b is None:
            self._buckets[k] = [h]
            heapq.heappush(self._ticks, k)
        else:
            b.append(h)
        self._ntimers += 1
        return h

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        # Lazy deletion, with a rebuild once most of the timers are dead.
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > self._ntimers:
            buckets = self._buckets
            for k in list(buckets):
                live = [h for h in buckets[k] if not h._cancelled]
                if live:
                    buckets[k] = live
                else:
                    del buckets[k]
            self._ticks[:] = list(buckets)  # in place: _run holds the list
            heapq.heapify(self._ticks)
            self._ntimers -= self._cancelled_timers
            self._cancelled_timers = 0

    def wake(self) -> None:
        """Interrupt a sleeping ``poll`` (safe from any thread, or a forked child)."""
        fd = self._wake_fd
        if fd < 0:
            return  # closed: the number may name someone else's file by now
        try:
            os.eventfd_write(fd, 1)
        except BlockingIOError:  # counter saturated: the loop is awake anyway
            pass

    def _drain_wake(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)  # one read resets the counter: drained
        except BlockingIOError:
            pass

    def before_sleep(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn()`` each time the loop is about to block in ``epoll_wait``.

        A hook that finds work (e.g. zmq messages whose edge was consumed
        elsewhere) schedules it with ``call_soon`` and the loop will not
        block. Returns a function that removes the hook.
        """
        return _add_hook(self._before_sleep, fn)

    def every_turns(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Call ``fn()`` every 64 turns while the loop is busy (a loop that
        never blocks never runs its ``before_sleep`` hooks). For checks that
        must not wait for idleness, e.g. zmq messages whose edge was eaten.
        Returns a function that removes it."""
        return _add_hook(self._every_turns, fn)

    # --- file descriptors ----------------------------------------------------
    def _fd_of(self, fd: Any) -> int:
        return fd if isinstance(fd, int) else fd.fileno()

    def _update(self, entry: _Entry, mask: int, force: bool = False) -> None:
        fd = entry.fd
        if mask == entry.mask and not force:
            return
        ep = self._ep
        if mask == 0:
            try:
                ep.unregister(fd)
            except (OSError, ValueError):
                pass  # closed while registered (EBADF), or the kernel already dropped it
            entry.mask = 0
            return
        et = entry.et
        if entry.mask == 0:
            try:
                ep.register(fd, mask | et)
            except FileExistsError:
                # A stale registration under this number (the old file was closed
                # without unregistering and a dup kept it alive, or we never saw the
                # close): replace it.
                ep.modify(fd, mask | et)
        else:
            try:
                ep.modify(fd, mask | et)
            except FileNotFoundError:
                # The fd was closed and reopened under the same number: the kernel
                # dropped the old registration with the old file.
                ep.register(fd, mask | et)
        entry.mask = mask

    def _entry(self, fd: int, kind: str) -> _Entry:
        e = self._fds.get(fd)
        if e is None:
            e = self._fds[fd] = _Entry(fd, kind)
        return e

    def add_reader(self, fd: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on each readable edge of ``fd`` (edge-triggered: drain!).

        ``fn`` may return True to say it stopped before draining (budget spent);
        it is then called again after the other ready work (only ``True`` counts,
        not any truthy value). Replaces an
        existing reader of the same fd.
        """
        self._watch(fd, "reader", EPOLLIN, _bind(fn, args))

    def add_stream_reader(self, fd: Any, fn: Callable[..., Any], *args: Any) -> None:
        """``add_reader`` for a stream socket, told of the peer's hang-up too.

        Edge-triggered, a short read usually means "drained", except when the
        peer's last bytes and its FIN came in one edge: no later edge will
        report the end of file. ``hung_up(fd)`` says whether the last edge
        carried it; read on to the end of file then."""
        self._watch(fd, "reader", EPOLLIN | _RDHUP, _bind(fn, args))

    def hung_up(self, fd: int) -> bool:
        """Whether the last event of ``fd`` (watched by ``add_stream_reader``)
        said the peer hung up or the socket failed."""
        e = self._fds.get(fd)
        return e is not None and bool(e.ev & _HUNG_UP)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; True if it was watched. Safe after close."""
        return self._unwatch(fd, "reader", EPOLLIN | _RDHUP)

    def add_writer(self, fd: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on each writable edge of ``fd`` (write until EAGAIN or done)."""
        self._watch(fd, "writer", EPOLLOUT, _bind(fn, args))

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; True if it was watched. Safe after close."""
        return self._unwatch(fd, "writer", EPOLLOUT)

    def label(self, fd: Any, kind: str) -> None:
        """Count ``fd``'s events under ``kind`` in ``stats()["events"]`` (``fd``
        unless told); ``fd`` must be registered."""
        self._fds[self._fd_of(fd)].kind = kind

    def _watch(self, fd: Any, slot: str, bit: int, cb: Callable[[], Any]) -> None:
        fd = self._fd_of(fd)
        e = self._entry(fd, "fd")
        if e.source is not None:
            raise RuntimeError(f"fd {fd} belongs to source {e.source!r}; remove_source it first")
        setattr(e, slot, cb)
        # Always tell the kernel: the number may name a new file since we last did.
        self._update(e, e.mask | bit, True)

    def _unwatch(self, fd: Any, slot: str, bit: int) -> bool:
        fd = self._fd_of(fd) if not isinstance(fd, int) else fd
        e = self._fds.get(fd)
        if e is None or getattr(e, slot) is None or e.source is not None:
            return False
        setattr(e, slot, None)
        self._update(e, e.mask & ~bit)
        if e.mask == 0:
            self._forget(e)
        return True

    def _forget(self, e: _Entry) -> None:
        if self._fds.get(e.fd) is e:
            del self._fds[e.fd]
        if e.count:
            self._events_by_kind[e.kind] += e.count
            e.count = 0

    # --- sources -------------------------------------------------------------
    def add_source(self, src: Source) -> None:
        """Register a source (timerfd, signalfd, inotify, netlink, zmq, eventfd...)."""
        fd = src.fileno()
        old = self._fds.get(fd)
        if old is not None and (
            old.reader is not None or old.writer is not None or old.source is not None
        ):
            raise RuntimeError(
                f"fd {fd} is already registered with this loop; remove it before add_source"
            )
        attach = getattr(src, "attach", None)
        if attach is not None:
            attach(self)  # may refuse (attached elsewhere): before we change anything
        e = self._entry(fd, getattr(src, "kind", "source"))
        e.kind = getattr(src, "kind", "source")
        e.source = src
        events = getattr(src, "events", EPOLLIN)
        if events & EPOLLIN:
            e.reader = src.on_ready
        if events & EPOLLOUT:
            e.writer = getattr(src, "on_writable", src.on_ready)
        self._sources[id(src)] = src
        try:
            self._update(e, events & (EPOLLIN | EPOLLOUT), True)
        except BaseException:
            self.remove_source(src)
            raise

    def remove_source(self, src: Source) -> bool:
        """Unregister a source (call before closing it); True if it was registered."""
        if self._sources.pop(id(src), None) is None:
            return False
        fd = src.fileno()
        e = self._fds.get(fd)
        if e is not None and e.source is src:
            self._update(e, 0)
            e.reader = e.writer = None
            e.source = None
            self._forget(e)
        detach = getattr(src, "detach", None)
        if detach is not None:
            detach(self)
        return True

    # --- futures and tasks ---------------------------------------------------
    def create_future(self) -> Future[Any]:
        return Future(self)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Task[T]:
        """Run a coroutine on this loop; the Task is a Future of its result.

        With an asyncio face attached (``aio.AsyncioLoop(loop)``), it is an
        asyncio Task of that face, so ``asyncio.current_task()``, TaskGroup
        and ``asyncio.timeout`` work in the coroutine."""
        if self._facade is not None:
            return self._facade.create_task(coro)
        return Task(coro, self)

    # --- running ---------------------------------------------------------------
    def _check_runnable(self) -> None:
        if self._closed:
            raise RuntimeError("this Loop is closed; create a new one")
        if self._pid != os.getpid():
            raise RuntimeError(
                f"this Loop was created in process {self._pid}; "
                "after fork, create a new Loop in the child"
            )
        if self._running:
            raise RuntimeError("this Loop is already running")

    def run_forever(self) -> None:
        """Run turns until ``stop()`` is called."""
        self._check_runnable()
        prev = _local.loop
        _local.loop = self
        self._running = True
        try:
            self._run()
        finally:
            self._stopping = False
            self._running = False
            _local.loop = prev

    def run_until_complete(self, aw: Awaitable[T]) -> T:
        """Run until ``aw`` (a coroutine or Future) is done; return its result or raise."""
        self._check_runnable()
        if isinstance(aw, Future):
            fut = aw
        elif isinstance(aw, Coroutine):
            fut = Task(aw, self)
        else:
            raise TypeError(
                f"run_until_complete needs a coroutine or an actorq Future, not {type(aw).__name__}"
            )
        fut.add_done_callback(self._stop_cb)
        try:
            self.run_forever()
        finally:
            fut.remove_done_callback(self._stop_cb)
        if not fut.done():
            raise RuntimeError("the loop stopped before the awaitable completed")
        return fut.result()

    def _stop_cb(self, _fut: Future[Any]) -> None:
        self._stopping = True

    def stop(self) -> None:
        """Finish the current turn, then return from ``run_forever``."""
        self._stopping = True

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Detach every source and close the loop's own fds (not the sources' fds)."""
        if self._closed:
            return
        if self._running:
            raise RuntimeError("cannot close a running Loop; stop() it first")
        for src in list(self._sources.values()):
            self.remove_source(src)
        self._closed = True
        self._ready.clear()
        self._buckets.clear()
        self._ticks.clear()
        self._fds.clear()
        self._ep.close()
        fd, self._wake_fd = self._wake_fd, -1
        os.close(fd)

    def set_exception_handler(self, handler: Callable[[BaseException, Any], None] | None) -> None:
        """``handler(exc, what)`` is called when a callback raises (default: log it)."""
        self._exception_handler = handler

    def _callback_raised(self, exc: BaseException, what: Any) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        if self._exception_handler is not None:
            self._exception_handler(exc, what)
        else:
            log.error("callback %r raised %s", what, type(exc).__name__, exc_info=exc)

    def _slow_callback(self, d: float, what: Any) -> None:
        name = _describe(what)
        inside = self.describe_slow(what) if self.describe_slow is not None else None
        if inside:
            name = f"{inside} (in callback {name})"
        if d > self._longest:
            self._longest = d
            self._longest_what = name
        if d > self._slow:
            log.warning(
                "%s%s held the loop for %.3f s (threshold %.3f s)",
                "" if inside else "callback ",
                name,
                d,
                self._slow,
            )

    def _run(self) -> None:
        """Turns until stopped: poll, dispatch fd edges, move due timers, run
        what is ready. One function with everything in locals: this is the
        hot path of every event."""
        ready = self._ready
        ticks = self._ticks
        buckets = self._buckets
        clock = self._clock
        fds = self._fds
        poll = self._ep.poll
        max_events = self._max_events
        budget = self._turn_budget
        hooks = self._before_sleep
        periodic = self._every_turns
        popleft = ready.popleft
        append = ready.append
        heappop = heapq.heappop
        raised = self._callback_raised
        read_ev, write_ev = _READ_EVENTS, _WRITE_EVENTS
        slow = self._slow
        floor = self._longest if self._longest < slow else slow
        turns = n_cb = 0
        t_cb = 0.0
        t = seg = clock()
        try:
            while not self._stopping:
                # Look without blocking first. In a busy loop there is work,
                # and the clock reading that ended the last turn's callbacks
                # also starts this one's: one clock read per callback instead
                # of two per turn (a read costs 0.1-0.3 us on this VM, as much
                # as a tenth of a 64 B round trip). Only when there is nothing
                # do we run the before-sleep hooks and block.
                events = poll(0.0, max_events)
                if not events and not ready and not self._stopping:
                    if hooks:
                        for hook in tuple(hooks):
                            hook()
                    if not ready and not self._stopping:
                        if ticks:
                            # Any timer of the first bucket is within 1 ms of
                            # the earliest: at worst we wake < 1 ms late, never early.
                            now = clock()
                            timeout = buckets[ticks[0]][0]._when - now
                            if timeout > 0:
                                t_cb += t - seg
                                events = poll(timeout, max_events)
                                t = seg = clock()
                            else:
                                t = now
                        else:
                            t_cb += t - seg
                            events = poll(-1.0, max_events)
                            t = seg = clock()

                for fd, ev in events:
                    try:
                        e = fds[fd]
                    except KeyError:
                        continue  # removed earlier in this turn
                    e.count += 1
                    e.ev = ev
                    if ev & read_ev:
                        fn = e.reader
                        if fn is not None:
                            try:
                                if fn() is True:
                                    append(Handle(_again, (self, fn)))
                            except BaseException as exc:
                                raised(exc, fn)
                        if ev & write_ev and e.writer is not None and e.writer is not fn:
                            fn = e.writer
                            try:
                                if fn() is True:
                                    append(Handle(_again, (self, fn)))
                            except BaseException as exc:
                                raised(exc, fn)
                    elif ev & write_ev:
                        fn = e.writer
                        if fn is not None:
                            try:
                                if fn() is True:
                                    append(Handle(_again, (self, fn)))
                            except BaseException as exc:
                                raised(exc, fn)
                    t2 = clock()
                    if t2 - t > floor:
                        self._slow_callback(t2 - t, e.reader or e.writer)
                        floor = self._longest if self._longest < slow else slow
                    t = t2

                if ticks and ticks[0] <= int(t * 1000.0):
                    # Move every due timer to the ready queue, in time order.
                    nowk = int(t * 1000.0)
                    while ticks and ticks[0] <= nowk:
                        k = ticks[0]
                        b = buckets[k]
                        if len(b) > 1:
                            b.sort(key=_WHEN)  # stable: equal times keep their order
                        i = 0
                        n = len(b)
                        while i < n:
                            th = b[i]
                            if th._when > t:
                                break
                            i += 1
                            if th._cancelled:
                                self._cancelled_timers -= 1
                                continue
                            th._fired = True
                            append(th)
                        self._ntimers -= i
                        if i == n:
                            del buckets[k]
                            heappop(ticks)
                        else:
                            del b[:i]  # the rest of this millisecond is still ahead
                            break

                if ready:
                    # Everything queued before this point runs, and callbacks
                    # queued by those up to `budget` in all (a chain of
                    # call_soon's does not pay an epoll_wait per link; I/O is
                    # still polled at least every `budget` callbacks).
                    n = len(ready)
                    limit = n if n > budget else budget
                    chain_end = t + _CHAIN_S
                    while ready and limit:
                        limit -= 1
                        n -= 1
                        if n < 0 and (t > chain_end or self._stopping):
                            break  # a chain has had its share of this turn: timers and I/O now
                        n_cb += 1
                        h = popleft()
                        if h._cancelled:
                            continue
                        try:
                            h._fn(*h._args)
                        except BaseException as exc:
                            raised(exc, h)
                        t2 = clock()
                        if t2 - t > floor:
                            self._slow_callback(t2 - t, h)
                            floor = self._longest if self._longest < slow else slow
                        t = t2

                # Statistics live in locals, published every 64 turns and on
                # the way out (attribute updates per turn were a sixth of the
                # loop's own cost per event).
                turns += 1
                if not turns & 63:
                    self._turns += turns
                    self._callbacks += n_cb
                    self._cb_time += t_cb + (t - seg)
                    turns = n_cb = 0
                    t_cb = 0.0
                    seg = t
                    for fn in tuple(periodic):
                        try:
                            fn()
                        except BaseException as exc:
                            raised(exc, fn)
        finally:
            self._turns += turns
            self._callbacks += n_cb
            self._cb_time += t_cb + (t - seg)

    # --- statistics ----------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """Counters since the loop was made (read from a callback, the
        callback/turn counts and times trail by at most 64 turns; exact once
        ``run_forever`` has returned).

        ``events``: fd edges dispatched, per source kind (``fd``, ``timer``,
        ``signal``, ``inotify``, ``netlink``, ``zmq``, ``eventfd``, ``condvar``,
        ``wake``); ``callbacks``: callbacks run (fd edges dispatched plus queued
        callbacks); ``callback_time``: seconds the loop was busy, i.e. not
        blocked in ``epoll_wait`` (callbacks plus the loop's own dispatch
        work); ``longest_callback`` (each callback is timed from the end of
        the previous one, so it includes the dispatch just before it) and
        ``longest_callback_what``; ``turns``; ``ready``, ``timers``, ``fds``:
        what is queued/registered now.
        """
        events = collections.Counter(self._events_by_kind)
        for e in self._fds.values():
            if e.count:
                events[e.kind] += e.count
        return {
            "events": dict(events),
            "callbacks": self._callbacks + sum(events.values()),
            "callback_time": self._cb_time,
            "longest_callback": self._longest,
            "longest_callback_what": self._longest_what,
            "turns": self._turns,
            "ready": len(self._ready),
            "timers": self._ntimers - self._cancelled_timers,
            "fds": len(self._fds),
        }


def _describe(what: Any) -> str:
    if isinstance(what, Handle):
        what = what._fn
        if what is _again or what is Task._step:
            return repr(what)
    return getattr(what, "__qualname__", None) or repr(what)


# --- futures and tasks ---------------------------------------------------------
_PENDING, _DONE, _CANCELLED = 0, 1, 2


class Future(Generic[T]):
    """A result that a callback will provide; ``await fut`` waits for it."""

    __slots__ = (
        "__weakref__",
        "_asyncio_future_blocking",
        "_callbacks",
        "_exc",
        "_loop",
        "_result",
        "_retrieved",
        "_state",
    )

    _result: T  # set by set_result(), read only once it was

    def __init__(self, loop: Loop | None = None) -> None:
        self._loop = loop if loop is not None else current_loop()
        self._state = _PENDING
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], Any]] = []
        self._retrieved = False
        # asyncio's Task waits on whatever it is yielded that carries this flag
        # (set in __await__): so an asyncio Task can await an actorq Future.
        self._asyncio_future_blocking = False

    def get_loop(self) -> Any:
        """The loop, as asyncio sees it: its asyncio face if it has one."""
        return self._loop._facade or self._loop

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self) -> T:
        """The result; raises the exception it was given, ``Cancelled``, or
        RuntimeError if it is not done yet."""
        self._retrieved = True
        if self._state == _DONE:
            if self._exc is not None:
                raise self._exc
            return self._result
        if self._state == _CANCELLED:
            raise self._exc if self._exc is not None else Cancelled()
        raise RuntimeError("the Future is not done yet; await it or add_done_callback")

    def exception(self) -> BaseException | None:
        if self._state == _PENDING:
            raise RuntimeError("the Future is not done yet")
        self._retrieved = True
        return self._exc

    def _finish(self) -> None:
        cbs = self._callbacks
        if cbs:
            self._callbacks = []
            ready = self._loop._ready
            for cb in cbs:
                ready.append(Handle(cb, (self,)))

    def set_result(self, result: T) -> None:
        if self._state != _PENDING:
            raise RuntimeError(
                f"the Future is already {'cancelled' if self._state == _CANCELLED else 'done'}"
            )
        self._result = result
        self._state = _DONE
        self._finish()

    def set_exception(self, exc: BaseException) -> None:
        if self._state != _PENDING:
            raise RuntimeError(
                f"the Future is already {'cancelled' if self._state == _CANCELLED else 'done'}"
            )
        if isinstance(exc, type):
            exc = exc()
        self._exc = exc
        self._state = _DONE
        self._finish()

    def cancel(self, msg: str | None = None) -> bool:
        """Cancel it; awaiting it then raises ``Cancelled``. False if already done."""
        if self._state != _PENDING:
            return False
        self._exc = Cancelled(msg) if msg else Cancelled()
        self._state = _CANCELLED
        self._finish()
        return True

    def add_done_callback(self, fn: Callable[[Future[T]], Any], *, context: Any = None) -> None:
        """Call ``fn(fut)`` (soon, on the loop) once it is done (in ``context``
        if given: a ``contextvars.Context``, as asyncio's Task passes one)."""
        if context is not None:
            fn = functools.partial(context.run, fn)
        if self._state != _PENDING:
            self._loop._ready.append(Handle(fn, (self,)))
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[Future[T]], Any]) -> int:
        n = len(self._callbacks)
        self._callbacks = [
            cb
            for cb in self._callbacks
            if cb != fn and not (isinstance(cb, functools.partial) and cb.args[:1] == (fn,))
        ]
        return n - len(self._callbacks)

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        return self.result()

    __iter__ = __await__

    def __repr__(self) -> str:
        state = ("pending", "done", "cancelled")[self._state]
        return f"<{type(self).__name__} {state}>"


class Task(Future[T]):
    """Drives a coroutine on the loop. ``cancel()`` throws ``Cancelled`` into it
    at the ``await`` where it waits; its cleanup (``finally``) runs."""

    __slots__ = ("_coro", "_must_cancel", "_waiting", "name")

    def __init__(
        self, coro: Coroutine[Any, Any, T], loop: Loop | None = None, name: str | None = None
    ) -> None:
        if not isinstance(coro, Coroutine):
            raise TypeError(
                f"spawn needs a coroutine (call the async function), not {type(coro).__name__}"
            )
        super().__init__(loop)
        self._coro = coro
        self._waiting: Future[Any] | None = None
        self._must_cancel = False
        self.name = name or getattr(coro, "__qualname__", "task")
        self._loop._ready.append(Handle(self._step, (None, None)))

    def cancel(self, msg: str | None = None) -> bool:
        if self._state != _PENDING:
            return False
        w = self._waiting
        if w is not None:
            # Cancelling what we wait on wakes us with Cancelled (and cleans up a
            # sleep's timer or a wait's fd registration through their finally).
            if w.cancel(msg):
                return True
            w.remove_done_callback(self._wakeup)
            w.remove_done_callback(self._wakeup_foreign)
            self._waiting = None
            self._loop._ready.append(Handle(self._step, (None, None)))
        self._must_cancel = True
        return True

    def _step(self, value: Any, exc: BaseException | None) -> None:
        if self._state != _PENDING:
            return
        if self._must_cancel:
            self._must_cancel = False
            if not isinstance(exc, Cancelled):
                exc = Cancelled()
        # (current_loop() is already this loop: steps only run from its queue.)
        try:
            y = self._coro.send(value) if exc is None else self._coro.throw(exc)
        except StopIteration as stop:
            self._result = stop.value
            self._state = _DONE
            self._finish()
        except Cancelled as c:
            self._exc = c
            self._state = _CANCELLED
            self._finish()
        except (KeyboardInterrupt, SystemExit) as e:
            self._exc = e
            self._state = _DONE
            self._finish()
            raise
        except BaseException as e:
            self._exc = e
            self._state = _DONE
            self._finish()
        else:
            if y is None:  # a bare yield: let others run, resume next turn
                self._loop._ready.append(Handle(self._step, (None, None)))
            elif isinstance(y, Future):
                if y._loop is not self._loop:
                    self._loop._ready.append(
                        Handle(
                            self._step,
                            (None, RuntimeError(f"{y!r} belongs to another Loop")),
                        )
                    )
                else:
                    self._waiting = y
                    if y._state != _PENDING:
                        self._loop._ready.append(Handle(self._wakeup, (y,)))
                    else:
                        y._callbacks.append(self._wakeup)
            elif (
                getattr(y, "_asyncio_future_blocking", None) is True
                and y.get_loop() is self._loop._facade
            ):
                # an asyncio Future of this loop (when it is an asyncio loop: aio.py)
                y._asyncio_future_blocking = False
                self._waiting = y
                y.add_done_callback(self._wakeup_foreign)
            else:
                err = RuntimeError(
                    f"a coroutine on the actorq loop yielded {y!r}; await actorq awaitables "
                    "(sleep, wait_readable, Future...), or run on actorq.loop.new_event_loop() "
                    "to await asyncio ones"
                )
                self._loop._ready.append(Handle(self._step, (None, err)))

    def _wakeup(self, fut: Future[Any]) -> None:
        if self._waiting is not fut:
            return
        self._waiting = None
        fut._retrieved = True
        if fut._state == _DONE and fut._exc is None:
            self._step(fut._result, None)
        else:
            self._step(None, fut._exc if fut._exc is not None else Cancelled())

    def _wakeup_foreign(self, fut: Any) -> None:
        result = fut.result  # (taken before the identity test narrows fut's type)
        if self._waiting is not fut:
            return
        self._waiting = None
        try:
            value = result()
        except BaseException as exc:
            self._step(None, exc)
        else:
            self._step(value, None)

    def __repr__(self) -> str:
        state = ("pending", "done", "cancelled")[self._state]
        return f"<Task {self.name} {state}>"

    def __del__(self) -> None:
        # A task that failed and that nobody awaited would fail silently.
        if self._state == _DONE and self._exc is not None and not self._retrieved:
            log.error(
                "task %s raised %s and nobody awaited it",
                self.name,
                type(self._exc).__name__,
                exc_info=self._exc,
            )


class _Yield:
    """Awaitable that gives the loop one turn."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield None


def _resolve(fut: Future[T], value: T) -> None:
    if fut._state == _PENDING:
        fut.set_result(value)


async def sleep(delay: float, result: T = None) -> T:  # type: ignore[assignment]
    """Wait ``delay`` seconds (0: just let the other ready work run first)."""
    if delay <= 0:
        await _Yield()
        return result
    loop = current_loop()
    fut: Future[T] = Future(loop)
    h = loop.call_later(delay, _resolve, fut, result)
    try:
        return await fut
    finally:
        h.cancel()


async def _wait_fd(fd: Any, writable: bool, kind: str = "fd") -> None:
    loop = current_loop()
    fdn = loop._fd_of(fd)
    e = loop._fds.get(fdn)
    if e is not None and (e.source is not None or (e.writer if writable else e.reader) is not None):
        raise RuntimeError(
            f"fd {fdn} already has a {'writer' if writable else 'reader'} on this loop; "
            "one waiter per fd and direction"
        )
    fut: Future[None] = Future(loop)
    if writable:
        loop.add_writer(fdn, _resolve, fut, None)
    else:
        loop.add_reader(fdn, _resolve, fut, None)
    loop.label(fdn, kind)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fdn)
        else:
            loop.remove_reader(fdn)


def wait_readable(fd: Any, kind: str = "fd") -> Coroutine[Any, Any, None]:
    """Wait until ``fd`` is readable (a one-shot registration: readiness that
    is already there when you call it is reported at once). ``kind``: what
    ``stats()`` counts its events as."""
    return _wait_fd(fd, False, kind)


def wait_writable(fd: Any, kind: str = "fd") -> Coroutine[Any, Any, None]:
    """Wait until ``fd`` is writable."""
    return _wait_fd(fd, True, kind)


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds; on timeout it is cancelled
    (its cleanup runs to the end) and ``TimeoutError`` is raised."""
    loop = current_loop()
    if isinstance(aw, Future):
        inner = aw
    elif isinstance(aw, Coroutine):
        inner = Task(aw, loop)
    else:
        raise TypeError(f"wait_for needs a coroutine or an actorq Future, not {type(aw).__name__}")
    if timeout is None:
        return await inner
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        if not inner.done():
            timed_out = True
            inner.cancel()

    h = loop.call_later(timeout, expire) if timeout > 0 else None
    if h is None:
        expire()
    waiter: Future[None] = Future(loop)
    inner.add_done_callback(lambda f: _resolve(waiter, None))
    try:
        await waiter
    except Cancelled:
        # We were cancelled ourselves: pass it on and wait for the inner cleanup.
        if h is not None:
            h.cancel()
        inner.cancel()
        raise
    finally:
        if h is not None:
            h.cancel()
    if timed_out and inner.cancelled():
        raise TimeoutError(f"timed out after {timeout} s")
    return inner.result()


def _add_hook(hooks: list[Callable[[], Any]], fn: Callable[[], Any]) -> Callable[[], None]:
    """Append ``fn`` to ``hooks``; return a function that removes it (idempotent)."""
    hooks.append(fn)

    def remove() -> None:
        try:
            hooks.remove(fn)
        except ValueError:
            pass

    return remove
