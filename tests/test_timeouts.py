"""Ask deadlines and deadlock detection, end to end on real runtimes.

Every ask has a deadline (``ask_timeout`` from the config, or the call's own
through ``ref.m.with_timeout(s)``); a cycle of non-reentrant actors asking
each other fails at once with ``actorq.Deadlock`` naming the cycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorq
from actorq.config import Config, load_config
from actorq.errors import ConfigError
from actorq.testing import running

# --- the actors and main, as an application would write them ----------------------


@actorq.actor(reentrant=True)
class Hang:
    async def never(self) -> None:
        await actorq.current_loop().create_future()  # nobody ever sets it

    async def late(self, delay: float) -> str:
        await actorq.sleep(delay)
        return "late"


@actorq.actor
class Slow:
    # not reentrant: ping runs only after late has returned and its reply was sent
    async def late(self, delay: float) -> str:
        await actorq.sleep(delay)
        return "late"

    def ping(self) -> str:
        return "pong"


@actorq.actor
class Asker:
    async def ask_never(self, hang: actorq.ActorRef, timeout: Any = ...) -> list[Any]:
        m = hang.never if timeout is ... else hang.never.with_timeout(timeout)
        t0 = time.monotonic()
        try:
            await m()
        except TimeoutError as e:
            return [str(e), time.monotonic() - t0]
        return ["answered", 0]


@actorq.actor
class Ping:
    def __init__(self) -> None:
        self.peer: Any = None

    def set_peer(self, peer: actorq.ActorRef) -> None:
        self.peer = peer

    async def f(self) -> Any:
        return await self.peer.g()

    def h(self) -> str:
        return "h"

    async def f_gives_up(self) -> Any:
        try:
            return await self.peer.g_later.with_timeout(0.1)()
        except TimeoutError:
            return "gave up"

    async def block(self, delay: float) -> None:
        await actorq.sleep(delay)  # busy in a turn of its own (part of the scenario)


@actorq.actor(reentrant=True)
class RPing(Ping):
    pass


@actorq.actor
class Pong:
    def __init__(self) -> None:
        self.peer: Any = None
        self.outcome: Any = None

    def set_peer(self, peer: actorq.ActorRef) -> None:
        self.peer = peer

    async def g(self) -> Any:
        return await self.peer.h()

    async def g_later(self) -> None:
        await actorq.sleep(0.3)  # outlives the 0.1 s its caller waits (the scenario)
        try:
            self.outcome = await self.peer.h()
        except Exception as e:
            self.outcome = type(e).__name__

    def get_outcome(self) -> Any:
        return self.outcome


@actorq.actor
class Outer:
    async def a(self, ping: actorq.ActorRef) -> Any:
        return await ping.f()


async def timed(make: Any) -> list[Any]:
    """Await what ``make()`` returns; the clock starts before the ask (and its
    deadline) is made, so an elapsed time is never shorter than the deadline."""
    t0 = time.monotonic()
    try:
        return ["ok", await make(), time.monotonic() - t0]
    except (TimeoutError, actorq.ActorError) as e:
        return [type(e).__name__, str(e), time.monotonic() - t0]


async def pair(
    rt: actorq.Runtime, ping_cls: type, w1: int, w2: int
) -> tuple[actorq.ActorRef, actorq.ActorRef]:
    ping = await rt.spawn(ping_cls, cpu=w1)
    pong = await rt.spawn(Pong, cpu=w2)
    await ping.set_peer(pong)
    await pong.set_peer(ping)
    return ping, pong


async def main(rt: actorq.Runtime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    w1, w2 = rt.workers[0], rt.workers[-1]
    hang = await rt.spawn(Hang, cpu=w2)
    # from main: the config's default, then per-call overrides
    out["main_default"] = await timed(hang.never)
    out["main_override"] = await timed(lambda: hang.never.with_timeout(0.1)())
    out["main_forever"] = await timed(lambda: hang.late.with_timeout(None)(1.5))
    out["main_longer"] = await timed(lambda: hang.late.with_timeout(5)(1.5))
    # from actors, on the same worker and on another
    for where, cpu in (("same", w2), ("other", w1)):
        asker = await rt.spawn(Asker, cpu=cpu)
        # (main's own ask would time out as soon as the asker's: it gets longer)
        out[f"actor_default_{where}"] = await asker.ask_never.with_timeout(5)(hang)
        out[f"actor_override_{where}"] = await asker.ask_never.with_timeout(5)(hang, 0.1)
    # a late reply is dropped: Slow answers ping only after late's reply went out
    slow = await rt.spawn(Slow, cpu=w1)
    out["late"] = await timed(lambda: slow.late.with_timeout(0.1)(0.5))
    out["after_late"] = await slow.ping()
    out["pending_after"] = (await rt.stats())["supervisor"]["pending_asks"]
    # ask cycles between two non-reentrant actors, on one worker and on two
    for where, (c1, c2) in (("one", (w1, w1)), ("two", (w1, w2))):
        ping, pong = await pair(rt, Ping, c1, c2)
        out[f"cycle_{where}"] = await timed(ping.f)
        out[f"usable_{where}"] = await ping.h()
        rping, _ = await pair(rt, RPing, c1, c2)
        out[f"reentrant_{where}"] = await timed(rping.f)
    # the cycle named from where it closes, not from the outermost caller
    ping, pong = await pair(rt, Ping, w1, w2)
    outer = await rt.spawn(Outer, cpu=w2)
    out["cycle_nested"] = await timed(lambda: outer.a(ping))
    # an abandoned ask leaves no stale chain: Ping gave up on g_later and is
    # inside another turn when g_later asks it back; that is a wait, not a deadlock
    ping, pong = await pair(rt, Ping, w1, w2)
    out["gave_up"] = await ping.f_gives_up()
    await ping.block.with_timeout(5)(1.0)
    out["abandoned_chain"] = await pong.get_outcome()  # Pong is not reentrant: after g_later
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("timeouts")
    return actorq.run(main, workers=2, runtime_dir=str(tmp / "rt"), ask_timeout=1.0)


def test_ask_times_out_at_the_configured_default(result: dict) -> None:
    kind, message, elapsed = result["main_default"]
    assert kind == "TimeoutError"
    assert message.startswith("ask Hang.never to <ActorRef Hang #")
    assert "within 1.0 s" in message
    assert "with_timeout" in message  # says how to allow longer
    assert elapsed >= 1.0  # not before it


def test_per_call_override(result: dict) -> None:
    kind, message, elapsed = result["main_override"]
    assert kind == "TimeoutError"
    assert "Hang.never" in message
    assert "within 0.1 s" in message  # the call's deadline fired, not the default of 1 s
    assert elapsed >= 0.1
    assert result["main_forever"][:2] == ["ok", "late"]  # None: no deadline
    assert result["main_longer"][:2] == ["ok", "late"]  # longer than the default


def test_asks_from_actors_time_out_too(result: dict) -> None:
    for where in ("same", "other"):
        message, elapsed = result[f"actor_default_{where}"]
        assert "Hang.never" in message, where
        assert "within 1.0 s" in message, where
        assert elapsed >= 1.0
        message, elapsed = result[f"actor_override_{where}"]
        assert "within 0.1 s" in message, where
        assert elapsed >= 0.1


def test_late_reply_is_dropped(result: dict) -> None:
    assert result["late"][0] == "TimeoutError"
    assert "Slow.late" in result["late"][1]
    assert result["after_late"] == "pong"
    assert result["pending_after"] == 0


CYCLE = (
    "ask cycle Ping.f -> Pong.g -> Ping.h: Ping is not reentrant and is still inside f "
    "waiting on this chain; declare @actorq.actor(reentrant=True) on Ping, or make one of "
    "the calls a tell"
)


@pytest.mark.parametrize("where", ["one", "two"])
def test_ask_cycle_is_a_deadlock_naming_the_cycle(result: dict, where: str) -> None:
    kind, message, _ = result[f"cycle_{where}"]
    assert kind == "Deadlock"  # at once: at the deadline it would be a TimeoutError
    assert message == CYCLE
    assert result[f"usable_{where}"] == "h"  # the actors are free again


@pytest.mark.parametrize("where", ["one", "two"])
def test_reentrant_cycle_succeeds(result: dict, where: str) -> None:
    assert result[f"reentrant_{where}"][:2] == ["ok", "h"]


def test_cycle_is_named_from_where_it_closes(result: dict) -> None:
    kind, message, _ = result["cycle_nested"]
    assert kind == "Deadlock"
    assert message.startswith("ask cycle Ping.f -> Pong.g -> Ping.h: ")


def test_an_abandoned_ask_is_not_a_deadlock(result: dict) -> None:
    assert result["gave_up"] == "gave up"
    assert result["abandoned_chain"] == "h"


# --- outside clients --------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, no_leaks: None) -> Iterator[str]:
    with running(workers=1, runtime_dir=tmp_path / "rt", ask_timeout=0.5) as rt:
        with rt.connect() as client:
            client.spawn(Hang, name="hang")
        yield rt.address


def test_sync_client_deadlines(service: str) -> None:
    with actorq.connect(service) as client:
        hang = client.lookup("hang")
        with pytest.raises(TimeoutError, match=r"Hang\.never .* within 0\.5 s"):
            hang.never()  # the runtime's default, well inside the client's 30 s
        with pytest.raises(TimeoutError, match=r"Hang\.never .* within 0\.1 s"):
            hang.never.with_timeout(0.1)()
        assert hang.late.with_timeout(None)(1.0) == "late"
        assert hang.late.with_timeout(3)(1.0) == "late"


def test_async_client_deadlines(service: str) -> None:
    async def go() -> None:
        client = actorq.connect(service, asyncio=True)
        try:
            hang = await client.lookup("hang")
            with pytest.raises(TimeoutError, match=r"Hang\.never .* within 0\.1 s"):
                await hang.never.with_timeout(0.1)()
            assert await hang.late.with_timeout(None)(1.0) == "late"
        finally:
            client.close()

    asyncio.run(go())


# --- configuration and API checks ------------------------------------------------


def test_config_key(tmp_path: Path) -> None:
    assert Config().ask_timeout == 5.0  # OTP's gen_server:call default
    (tmp_path / "actorq.toml").write_text("ask_timeout = 2\n")
    assert load_config(cwd=tmp_path).ask_timeout == 2.0
    (tmp_path / "actorq.toml").write_text("ask_timeout = false\n")
    assert load_config(cwd=tmp_path).ask_timeout is None
    assert Config().merged(ask_timeout=0.25).ask_timeout == 0.25


@pytest.mark.parametrize("bad", ["0", "-1", '"5s"', "true"])
def test_bad_ask_timeout_names_the_key(tmp_path: Path, bad: str) -> None:
    (tmp_path / "actorq.toml").write_text(f"ask_timeout = {bad}\n")
    with pytest.raises(ConfigError, match="ask_timeout") as info:
        load_config(cwd=tmp_path)
    assert "false for no default deadline" in str(info.value)


def test_with_timeout_checks_its_argument() -> None:
    ref = actorq.ActorRef(1 << 32, "m:C")
    with pytest.raises(ValueError, match="timeout -1"):
        ref.add.with_timeout(-1)
    with pytest.raises(ValueError, match="timeout '1'"):
        ref.add.with_timeout("1")
    assert "timeout 0.5 s" in repr(ref.add.with_timeout(0.5))
