"""A ``multiprocessing.Pool`` pushing work to actors.

The pool's processes do the CPU work (here: counting words in generated
documents); the results go to one ``WordTotals`` actor that every pool
process shares, and a ``Progress`` actor tells the parent how far they got.
Each pool process connects in its initializer, after the fork: a client
belongs to the process that made it.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
from typing import Any

import actorq

WORDS = ["actor", "ring", "core", "numa", "cache", "queue", "epoll", "fork", "pool", "shm"]

_client: dict[str, Any] = {}


@actorq.actor
class WordTotals:
    def __init__(self) -> None:
        self.totals: collections.Counter[str] = collections.Counter()
        self.docs = 0

    def merge(self, counts: dict[str, int]) -> int:
        self.totals.update(counts)
        self.docs += 1
        return self.docs

    def top(self, n: int) -> list[list[Any]]:
        return [[w, c] for w, c in self.totals.most_common(n)]

    def summary(self) -> dict[str, int]:
        return {"docs": self.docs, "words": sum(self.totals.values())}


def document(seed: int, length: int = 200) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(WORDS) for _ in range(length)]


def connect(address: str) -> None:
    """Pool initializer: this process's own client, made after the fork."""
    _client["c"] = client = actorq.connect(address)
    _client["totals"] = totals = client.lookup("totals")
    totals.summary()  # opens this process's channel to the actor's worker now


def count(seed: int) -> tuple[int, int]:
    """The pool's task: count a document's words, merge them into the shared
    totals; (this process's pid, documents merged so far by everyone)."""
    counts = collections.Counter(document(seed))
    return os.getpid(), int(_client["totals"].merge(dict(counts)))


def run(docs: int = 200, processes: int = 4, workers: int = 1) -> dict[str, Any]:
    with actorq.start(workers=workers) as rt, rt.connect() as client:
        totals = client.spawn(WordTotals, name="totals")
        with multiprocessing.get_context("fork").Pool(
            processes, initializer=connect, initargs=(rt.address,)
        ) as pool:
            merged = pool.map(count, range(docs), chunksize=8)
        worker = client.stats()["workers"][totals.worker - 1]
        expected: collections.Counter[str] = collections.Counter()
        for seed in range(docs):
            expected.update(document(seed))
        return {
            "summary": totals.summary(),
            "top": totals.top(3),
            "expected_top": [[w, c] for w, c in expected.most_common(3)],
            "merges_seen": max(n for _, n in merged),
            "task_processes": len({pid for pid, _ in merged}),
            # one direct channel per pool process (the parent has asked nothing yet)
            "channels_opened": worker["outside"]["opened"],
        }
