"""Testing actors and programs that use actorq: a runtime per test, and waits
on conditions instead of sleeps.

    from actorq.testing import running, wait_until

    def test_counter(tmp_path):
        with running(workers=2, runtime_dir=tmp_path / "rt") as rt:
            client = rt.connect()
            hits = client.spawn(Counter, 1)
            assert hits.add(2) == 3
            wait_until(lambda: client.stats()["workers"][0]["received"] > 0)

The runtime is a real one (pinned worker processes, rings, control plane)
hosted in a background thread of the test process (``actorq.start``); actor
classes defined in the test module work, because workers are forked from it.
Leaving the block stops it in order and waits until every process is reaped.

This module is also a pytest plugin (``pytest_plugins = ["actorq.testing"]``
in a conftest, or ``-p actorq.testing``): the ``actorq_runtime`` fixture
yields a running two-worker runtime whose directory lives in the test's
``tmp_path``, so tests stay safe under pytest-xdist.

Not here yet: a fake clock (timers run on the real monotonic clock).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._hosting import HostedRuntime, start

T = TypeVar("T")


@contextmanager
def running(workers: int = 2, **options: Any) -> Iterator[HostedRuntime]:
    """A runtime for the duration of a ``with`` block (options as ``actorq.start``)."""
    if "runtime_dir" in options and options["runtime_dir"] is not None:
        options["runtime_dir"] = os.fspath(options["runtime_dir"])
    rt = start(workers=workers, **options)
    try:
        yield rt
    finally:
        rt.stop(timeout=60.0)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Raises AssertionError naming ``what`` (or the predicate) after ``timeout``
    seconds, with the last value seen: a deadline, not a sleep, synchronises.
    """
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(
                f"timed out after {timeout} s waiting for {name} (last: {value!r})"
            )
        time.sleep(interval)
        value = predicate()
    return value


try:
    import pytest
except ImportError:  # pragma: no cover - the plugin needs pytest; the helpers do not
    pass
else:

    @pytest.fixture
    def actorq_runtime(tmp_path: Any) -> Iterator[HostedRuntime]:
        """A running two-worker runtime, stopped and reaped after the test."""
        with running(workers=2, runtime_dir=tmp_path / "rt") as rt:
            yield rt
