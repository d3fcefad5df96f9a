"""An actor's mailbox under load: fair between senders, admitted by a window
that finds its level from the measured queueing delay, shed by a policy.

Why the delay and not the length: a queue of 1,000 messages is nothing for a
method that takes a microsecond and a disaster for one that takes a
millisecond. CoDel (RFC 8289) watches the *sojourn time* of what leaves the
queue: when even the best message of a whole interval (100 ms) waited longer
than the target (5 ms), the queue is standing, not absorbing a burst, and the
actor is overloaded. Then the admission window (messages admitted but not yet
run) is cut by the ratio target/sojourn, between 0.1 and 0.7 of what it was
(the gradient of Netflix's concurrency limits, a multiplicative decrease like
TCP's), and what waits beyond the new window is shed at once (CoDel drops from
a standing queue; waiting longer only makes it staler). The window starts at
1,024 and doubles each interval in which it was reached (slow start) until the
first standing queue; after that it grows by an eighth per such interval
(additive increase). Nobody has to guess a number: the window follows the
actor's speed. ``mailbox=N`` (or ``mailbox_limit`` from the config) stays a
hard ceiling on it.

Fairness: each sender (a sending actor, or code outside actors on a worker,
or an outside client through the supervisor) has its own FIFO; the mailbox
serves them round robin, one message each in turn (FQ-CoDel's flows, RFC
8290, with a quantum of one message), and a sender with nothing waiting is
admitted even when the window is full (one place each beyond it, up to the
ceiling). FIFO per sender and receiver holds; one flooding sender gets one
turn in N, not the whole actor. O(1) per message.

Shedding, when a message arrives and the window is full (``shed_policy``):

- ``"fattest"`` (default): the sender holding the most queued messages pays:
  its newest queued message is refused (the arriving one, if it is that
  sender's). A polite sender beside a flood keeps getting in.
- ``"newest"``: the arriving message is refused (simplest; the sender hears
  at once: abort early, not late).
- ``"oldest"``: the oldest queued message is refused and the new one
  admitted (fresh work over stale work, like adaptive LIFO's intent).

A refused ask fails with ``Overloaded``; a refused tell is counted as shed
(never as a dead letter for an actor "which does not exist") and pushes back
on its source: the sending worker is told to hold its tells to this actor
back for twice the target, doubled each time it is told again within its
last hold (up to a second); ``await ref.m.tell(x)`` waits out the hold, and
an actor that told during one takes no next message until it ends. Shedding
at the receiver still costs the receiver; the flood has to slow where it
starts. An ask whose
deadline passed while it waited is dropped unrun (the asker has its
``TimeoutError`` already): a timed-out ask no longer occupies the actor.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import SHED_POLICIES as SHED_POLICIES

_DEADLINE = 7  # index of an item's deadline (see host.Item)
_FLOOR = 1  # the window never closes completely: some work always gets in
_NEVER = float("inf")  # no standing message seen in the interval
_START = 1024  # the first window: bursts below it pass untouched
_MOST_CUT, _LEAST_CUT = 0.1, 0.7  # bounds of one multiplicative decrease
# Sojourn histogram bucket upper bounds, in seconds (the last bucket is open).
BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class Admission:
    """The runtime's admission settings (config keys of the same names)."""

    mailbox_limit: int = 100_000  # the ceiling for actors without mailbox=N
    shed_policy: str = "fattest"
    sojourn_target: float = 0.005
    sojourn_interval: float = 0.1
    backlog_limit: int = 65_536  # messages waiting for one destination before sends fail
    fair_queueing: bool = True  # False: one FIFO for all senders (for comparison only)

    def mailbox(self, ceiling: int | None) -> Mailbox:
        return Mailbox(
            ceiling or self.mailbox_limit,
            self.shed_policy,
            self.sojourn_target,
            self.sojourn_interval,
        )


class Mailbox:
    """Messages waiting for one actor (see the module docstring)."""

    __slots__ = (
        "admitted",
        "ceiling",
        "congested",
        "demand",
        "dropped",
        "expired",
        "hist",
        "interval",
        "interval_end",
        "min_sojourn",
        "order",
        "policy",
        "queues",
        "shed",
        "size",
        "ssthresh",
        "target",
        "window",
    )

    def __init__(self, ceiling: int, policy: str, target: float, interval: float) -> None:
        self.queues: dict[int, collections.deque[tuple[float, Any]]] = {}
        self.order: collections.deque[int] = collections.deque()  # senders with messages
        self.size = 0
        self.ceiling = ceiling
        self.window = min(ceiling, _START)
        self.ssthresh = ceiling  # slow start below it
        self.dropped: list[Any] = []  # shed from a standing queue, for the cell to refuse
        self.policy = policy
        self.target = target
        self.interval = interval
        self.interval_end = 0.0
        self.min_sojourn = float("inf")
        self.demand = False  # the window was reached in this interval
        self.admitted = 0
        self.shed = 0
        self.expired = 0
        self.congested = 0  # intervals that ended with a standing queue
        self.hist = [0] * (len(BUCKETS) + 1)

    def __len__(self) -> int:
        return self.size

    def put(self, key: int, item: Any, now: float, force: bool = False) -> Any:
        """Queue ``item`` from sender ``key``. Returns the item refused to make
        room (this one, or a queued one), or None. ``force``: never refuse
        this one (a stop request)."""
        refused = None
        # A sender with nothing waiting gets one place beyond the window (up to
        # the ceiling): however small the window, every sender keeps a turn.
        if (
            self.size >= self.window
            and not force
            and (key in self.queues or self.size >= self._fair_bound())
        ):
            self.demand = True
            refused = self._choose_victim(key, item)
            self.shed += 1
            if refused is item:
                return item
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = collections.deque()
            self.order.append(key)
        queue.append((now, item))
        self.size += 1
        self.admitted += 1
        return refused

    def _fair_bound(self) -> int:
        return min(self.ceiling, self.window + len(self.order))

    def _choose_victim(self, key: int, item: Any) -> Any:
        if self.policy == "newest" or not self.size:
            return item
        if self.policy == "oldest":
            first = self.order[0]
            return self._remove(first, oldest=True)
        fattest = max(self.order, key=lambda k: len(self.queues[k]))
        # evict another sender's message only if it would still hold more than the
        # arriving sender once this one is in (ties go against the newcomer), and
        # never a sender's only one: each keeps its place in line
        held = len(self.queues[fattest])
        if held < 2 or held <= len(self.queues.get(key, ())) + 1:
            return item
        return self._remove(fattest, oldest=False)

    def _remove(self, key: int, oldest: bool) -> Any:
        queue = self.queues[key]
        _, victim = queue.popleft() if oldest else queue.pop()
        self.size -= 1
        self.admitted -= 1
        if not queue:
            del self.queues[key]
            self.order.remove(key)
        return victim

    def get(self, now: float) -> Any:
        """The next message, round robin between senders; None if every waiting
        message was an ask past its deadline (those are dropped and counted)."""
        while self.size:
            key = self.order[0]
            queue = self.queues[key]
            enqueued, item = queue.popleft()
            self.size -= 1
            standing = bool(queue)  # this sender has more waiting behind it
            if standing:
                self.order.rotate(-1)  # this sender goes to the back of the line
            else:
                self.order.popleft()
                del self.queues[key]
            self._measure(now - enqueued, now, standing)
            deadline = item[_DEADLINE]
            if deadline is not None and deadline <= now:
                self.expired += 1
                continue
            return item
        return None

    def _measure(self, sojourn: float, now: float, standing: bool) -> None:
        self.hist[bisect.bisect_left(BUCKETS, sojourn)] += 1
        # Only messages with more from their sender behind them tell whether a
        # queue stands: with round robin a polite sender's lone message always
        # waits little, and would hide a flood's standing queue (FQ-CoDel keeps
        # its state per flow for the same reason).
        if standing and sojourn < self.min_sojourn:
            self.min_sojourn = sojourn
        if now < self.interval_end:
            return
        if self.interval_end and self.target < self.min_sojourn < _NEVER:
            # a standing queue for a whole interval: cut the window, shed what is beyond
            cut = min(_LEAST_CUT, max(_MOST_CUT, self.target / self.min_sojourn))
            self.window = self.ssthresh = max(_FLOOR, int(min(self.window, self.size + 1) * cut))
            self.congested += 1
            while self.size > self.window:
                fattest = max(self.order, key=lambda k: len(self.queues[k]))
                if len(self.queues[fattest]) < 2:
                    break  # one message per sender is never shed from a standing queue
                self.dropped.append(self._remove(fattest, oldest=False))
                self.shed += 1
        elif self.demand and self.window < self.ceiling:
            grow = self.window if self.window < self.ssthresh else max(1, self.window // 8)
            self.window = min(self.ceiling, self.window + grow)
        self.interval_end = now + self.interval
        self.min_sojourn = float("inf")
        self.demand = False

    def drain(self) -> Iterator[Any]:
        """Every waiting message, oldest first per sender (the actor is going away)."""
        for key in list(self.order):
            for _, item in self.queues.pop(key):
                yield item
        self.order.clear()
        self.size = 0

    def percentile(self, q: float) -> float | None:
        """Sojourn time at quantile ``q`` (upper bound of its bucket), seconds."""
        total = sum(self.hist)
        if not total:
            return None
        rank, seen = q * total, 0
        for i, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                return BUCKETS[min(i, len(BUCKETS) - 1)]  # the open bucket: "at least"
        return None

    def stats(self) -> dict[str, Any]:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {
            "queued": self.size,
            "window": self.window,
            "admitted": self.admitted,
            "shed": self.shed,
            "expired": self.expired,
            "congested": self.congested,
            "ceiling": self.ceiling,
            "sojourn_p50_ms": None if p50 is None else p50 * 1000,
            "sojourn_p99_ms": None if p99 is None else p99 * 1000,
        }
