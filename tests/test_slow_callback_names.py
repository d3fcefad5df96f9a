"""A method that holds a worker's loop is named in the slow-callback warning.

The loop times callbacks, not methods: a method that came over a ring runs
inside the ring's drain callback. The worker tells its loop which actor
method ran (the board's LAST word), so the warning says ``Sleeper.block``,
not ``RingPort._doorbell``.
"""

from __future__ import annotations

import logging

from _runtime_helpers import run_app, write_app
from test_loop_core import FakeClock

from actorq.loop import Loop

APP = """
import time
import actorq

@actorq.actor
class Sleeper:
    def block(self, seconds):
        time.sleep(seconds)  # holds the worker's loop on purpose
        return seconds

    async def block_async(self, seconds):
        time.sleep(seconds)
        return seconds

async def main(rt):
    s = await rt.spawn(Sleeper, name="sleepy", cpu=rt.workers[-1])
    assert await s.block(0.3) == 0.3
    assert await s.block_async(0.3) == 0.3
"""


def test_a_blocking_method_is_named_in_the_warning(tmp_path, no_leaks) -> None:
    write_app(tmp_path, APP)
    proc = run_app(tmp_path, "app:main", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    held = [ln for ln in proc.stderr.splitlines() if "held the loop" in ln]
    assert any("Sleeper.block of <ActorRef Sleeper 'sleepy'" in ln for ln in held), proc.stderr
    assert any("Sleeper.block_async of" in ln for ln in held), proc.stderr


def test_the_loop_asks_its_describer_only_about_slow_callbacks(caplog) -> None:
    clock = FakeClock()
    lp = Loop(clock=clock, slow_callback=0.5)
    asked: list[object] = []

    def describe(callback: object) -> str:
        asked.append(callback)
        return "Thing.work"

    def hog() -> None:
        clock.now += 1.0

    try:
        lp.call_soon(hog)
        lp.call_soon(lp.stop)
        lp.run_forever()  # the first callbacks set "longest" and may be described too
        lp.describe_slow = describe
        asked.clear()
        caplog.clear()
        lp.call_soon(hog)
        lp.call_soon(lambda: None)  # quick: never described
        lp.call_soon(lp.stop)
        with caplog.at_level(logging.WARNING, logger="actorq.loop"):
            lp.run_forever()
        warned = [r.getMessage() for r in caplog.records if "held the loop" in r.getMessage()]
        assert len(asked) == 1, asked
        assert len(warned) == 1
        assert warned[0].startswith("Thing.work (in callback ")
        assert "hog" in warned[0]
    finally:
        lp.close()
