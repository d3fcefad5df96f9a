"""CPython's own asyncio test suite (``test.test_asyncio``), run on actorq's loop.

Each class below is one of CPython's loop-parametrised test classes with its
loop factory pointed at ``actorq.loop.new_event_loop`` (or, for the classes
that get their loop from ``asyncio.new_event_loop()`` or an
``IsolatedAsyncioTestCase`` runner, with actorq's ``EventLoopPolicy``
installed around each test). What we leave out is listed in ``EXCLUDED``,
each with its reason, and shows up as a skip carrying that reason.
"""

from __future__ import annotations

import asyncio
import importlib
import unittest
from typing import Any

import pytest

import actorq.loop

try:
    from test.test_asyncio import utils as test_utils
except ImportError:  # a Python built without its test package
    pytest.skip("this Python has no test.test_asyncio", allow_module_level=True)


def _mod(name: str) -> Any:
    return importlib.import_module(f"test.test_asyncio.{name}")


t_events = _mod("test_events")
t_sock = _mod("test_sock_lowlevel")
t_streams = _mod("test_streams")
t_server = _mod("test_server")
t_buffered = _mod("test_buffered_proto")
t_taskgroups = _mod("test_taskgroups")
t_timeouts = _mod("test_timeouts")
t_queues = _mod("test_queues")
t_locks = _mod("test_locks")
t_waitfor = _mod("test_waitfor")
t_tasks = _mod("test_tasks")
t_pep492 = _mod("test_pep492")
t_context = _mod("test_context")


class _OnActorq:
    """Install actorq's policy around each test, so ``asyncio.new_event_loop()``
    and ``IsolatedAsyncioTestCase`` runners make actorq loops."""

    def setUp(self) -> None:
        self._old_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(actorq.loop.EventLoopPolicy())
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        try:
            super().tearDown()  # type: ignore[misc]
        finally:
            asyncio.set_event_loop_policy(self._old_policy)

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        return actorq.loop.new_event_loop()

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return actorq.loop.new_event_loop()

    def new_test_loop(self, gen: Any = None) -> asyncio.AbstractEventLoop:
        if gen is not None:
            # asyncio's TestLoop runs on virtual time driven by the test's generator
            raise unittest.SkipTest("needs asyncio's virtual-time TestLoop (a time generator)")
        loop = actorq.loop.new_event_loop()
        self.set_event_loop(loop)  # type: ignore[attr-defined]
        return loop


# test name -> why it is left out (one line each)
EXCLUDED: dict[str, str] = {
    # patch or call the stock loop's internals, which our loop does not have
    "EventLoopTestsMixin.test_timeout_rounding": "counts calls of BaseEventLoop._run_once",
    **{
        f"EventLoopTestsMixin.test_create_server_multiple_hosts_ipv{v}": (
            "patches asyncio.base_events.socket"
        )
        for v in (4, 6)
    },
    "CTask_CFuture_Tests.test_log_destroyed_pending_task": "patches BaseEventLoop._run_once",
    "PyTask_PyFuture_Tests.test_log_destroyed_pending_task": "patches BaseEventLoop._run_once",
    "CTask_CFuture_Tests.test_error_in_call_soon": "patches asyncio.base_events.logger",
    "PyTask_PyFuture_Tests.test_error_in_call_soon": "patches asyncio.base_events.logger",
    "CoroutineGatherTests.test_issue46672": "patches BaseEventLoop.call_exception_handler",
    # not supported: NotImplementedError naming the method (see actorq/loop/aio.py)
    "StreamTests.test_read_all_from_pipe_reader": "runs loop.subprocess_exec (no subprocesses)",
}


def _conform(base: type, **overrides: Any) -> type:
    """``base`` (a CPython test class) running on actorq's loop, minus EXCLUDED."""
    cls = type(f"Test{base.__name__}", (_OnActorq, base), {"__module__": __name__, **overrides})
    for qual, reason in EXCLUDED.items():
        owner, _, name = qual.partition(".")
        if owner == base.__name__ and hasattr(cls, name):
            setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
    return cls


def _classes() -> dict[str, type]:
    plain = (unittest.TestCase,)
    out: dict[str, type] = {}
    bases: list[tuple[type, tuple[type, ...]]] = [
        (t_events.EventLoopTestsMixin, (test_utils.TestCase,)),
        (t_sock.BaseSockTestsMixin, (test_utils.TestCase,)),
        (t_server.BaseStartServer, plain),
        (t_buffered.BaseTestBufferedProtocol, plain),
    ]
    for mixin, extra in bases:
        cls = _conform(type(mixin.__name__, (mixin, *extra), {}))
        out[cls.__name__] = cls
    for base in (
        t_streams.StreamTests,
        t_server.SelectorStartServerTests,
        t_taskgroups.TestTaskGroup,
        t_timeouts.TimeoutTests,
        t_queues.QueueBasicTests,
        t_queues.QueueGetTests,
        t_queues.QueuePutTests,
        t_queues.LifoQueueTests,
        t_queues.PriorityQueueTests,
        t_queues.QueueJoinTests,
        t_queues.LifoQueueJoinTests,
        t_queues.PriorityQueueJoinTests,
        t_locks.LockTests,
        t_locks.EventTests,
        t_locks.ConditionTests,
        t_locks.SemaphoreTests,
        t_locks.BarrierTests,
        t_waitfor.AsyncioWaitForTest,
        t_tasks.CTask_CFuture_Tests,
        t_tasks.PyTask_PyFuture_Tests,
        t_tasks.GenericTaskTests,
        t_tasks.CoroutineGatherTests,
        t_tasks.RunCoroutineThreadsafeTests,
        t_tasks.SleepTests,
        t_tasks.CompatibilityTests,
        t_pep492.LockTests,
        t_pep492.StreamReaderTests,
        t_pep492.CoroutineTests,
        t_context.DecimalContextTest,
    ):
        cls = _conform(base)
        name = f"Test{base.__module__.rpartition('.')[2][5:]}_{base.__name__}"
        cls.__name__ = cls.__qualname__ = name
        out[name] = cls
    return out


globals().update(_classes())
