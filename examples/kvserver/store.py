"""The key-value semantics of the kv server, as a plain class.

A :class:`Store` is one shard's data: a dict of bytes to bytes plus the
expiry time of the keys that have one. It knows nothing of sockets, RESP or
workers, so its semantics (Redis's, for the commands the example serves) are
tested directly with an injectable clock.

Expiry is lazy and active, as in Redis: a read of an expired key deletes it
(so a reader never sees a stale value), and :meth:`Store.sweep`, called from
a periodic timer by the server, reclaims keys that are never read again, so
memory stays bounded by the live keys. :meth:`Store.size` sweeps first, which
makes DBSIZE exact (Redis may count expired keys not yet reclaimed).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class KvError(Exception):
    """A command failed the way Redis reports it: ``str(exc)`` is the error line."""


NOT_AN_INTEGER = "ERR value is not an integer or out of range"


def parse_int(raw: bytes) -> int:
    """A 64-bit signed integer spelled the way Redis accepts it (no spaces, no '+')."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    # bytes.isdigit is ASCII-only, and unlike int() it refuses "1_000", " 1", "+1".
    if not digits.isdigit() or len(raw) > 20:
        raise KvError(NOT_AN_INTEGER)
    if digits[:1] == b"0" and (len(digits) > 1 or raw[:1] == b"-"):
        raise KvError(NOT_AN_INTEGER)  # Redis rejects leading zeros and "-0"
    n = int(digits)
    if raw[:1] == b"-":
        n = -n
    if not INT64_MIN <= n <= INT64_MAX:
        raise KvError(NOT_AN_INTEGER)
    return n


class Store:
    """One shard of keys. ``clock`` returns seconds (monotonic by default)."""

    __slots__ = ("_clock", "_heap", "data", "expires")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.data: dict[bytes, bytes] = {}
        #: key -> absolute expiry time in ms of ``clock``; only keys with a TTL.
        self.expires: dict[bytes, int] = {}
        # (when, key) for every TTL ever set, soonest first, so a sweep touches
        # only keys that are due instead of scanning them all. An entry whose key
        # has since got another TTL, or none, is stale: skipped when popped, and
        # dropped wholesale when stale entries outnumber live ones.
        self._heap: list[tuple[int, bytes]] = []

    def _set_expiry(self, key: bytes, when: int) -> None:
        self.expires[key] = when
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self.expires) + 64:
            self._heap = [(t, k) for k, t in self.expires.items()]
            heapq.heapify(self._heap)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _alive(self, key: bytes) -> bool:
        """Whether ``key`` exists, deleting it first if its time has passed."""
        if key not in self.data:
            return False
        when = self.expires.get(key)
        if when is not None and when <= self.now_ms():
            del self.data[key]
            del self.expires[key]
            return False
        return True

    # -- reads ----------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        value = self.data.get(key)
        if (
            value is not None
            and self.expires
            and key in self.expires
            and self.expires[key] <= self.now_ms()
        ):
            del self.data[key]
            del self.expires[key]
            return None
        return value

    def exists(self, key: bytes) -> bool:
        return self._alive(key)

    def pttl(self, key: bytes) -> int:
        """Milliseconds left; -2 if the key does not exist, -1 if it has no expiry."""
        if not self._alive(key):
            return -2
        when = self.expires.get(key)
        if when is None:
            return -1
        return max(0, when - self.now_ms())

    def ttl(self, key: bytes) -> int:
        """Seconds left, rounded as Redis does; -2 missing, -1 no expiry."""
        ms = self.pttl(key)
        return ms if ms < 0 else (ms + 500) // 1000

    def size(self) -> int:
        self.sweep()
        return len(self.data)

    # -- writes ---------------------------------------------------------
    def set(
        self,
        key: bytes,
        value: bytes,
        *,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> bool:
        """SET with its conditions; ``px`` is a relative TTL in ms. False if a condition failed."""
        if nx or xx:
            alive = self._alive(key)
            if (nx and alive) or (xx and not alive):
                return False
        self.data[key] = value
        if px is not None:
            self._set_expiry(key, self.now_ms() + px)
        elif not keepttl and self.expires:
            self.expires.pop(key, None)
        return True

    def delete(self, key: bytes) -> bool:
        if not self._alive(key):
            return False
        del self.data[key]
        self.expires.pop(key, None)
        return True

    def incrby(self, key: bytes, delta: int) -> int:
        """Add ``delta`` to the integer at ``key`` (0 if missing); the TTL is kept."""
        raw = self.get(key)
        current = 0 if raw is None else parse_int(raw)
        result = current + delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise KvError("ERR increment or decrement would overflow")
        self.data[key] = b"%d" % result
        return result

    def pexpire(self, key: bytes, ms: int) -> bool:
        """Set a relative TTL; a TTL <= 0 deletes the key now. False if the key does not exist."""
        if not self._alive(key):
            return False
        if ms <= 0:
            del self.data[key]
            self.expires.pop(key, None)
        else:
            self._set_expiry(key, self.now_ms() + ms)
        return True

    def flush(self) -> None:
        self.data.clear()
        self.expires.clear()
        self._heap.clear()

    def sweep(self, limit: int | None = None) -> int:
        """Delete expired keys (at most ``limit`` of them); returns how many went.

        Cost: O(log n) per key due (and per stale entry passed), not O(keys with a TTL).
        """
        heap = self._heap
        if not heap:
            return 0
        now = self.now_ms()
        expires = self.expires
        gone = 0
        while heap and heap[0][0] <= now and (limit is None or gone < limit):
            when, key = heapq.heappop(heap)
            if expires.get(key) != when:
                continue  # stale: the key got another TTL, or lost it, or went
            del self.data[key]
            del expires[key]
            gone += 1
        return gone
