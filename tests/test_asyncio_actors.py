"""asyncio inside actors: the worker's loop is an asyncio loop (loop/aio.py).

Real libraries in actor methods against real servers on loopback:
redis.asyncio against redis-server and against the kv example, httpx against
an HTTP server, asyncio streams, a TaskGroup fan-out; and how asyncio's
cancellation meets actor asks.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import actorq
from actorq.testing import running, wait_until

pytest.importorskip("zmq")

from test_examples_kvserver import kvserver  # noqa: F401  (the fixture, reused)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@actorq.actor
class Slow:
    """Answers after ``seconds``; remembers whether a wait was cancelled."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def wait(self, seconds: float) -> float:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return seconds

    def ping(self) -> str:
        return "pong"


@actorq.actor
class Aio:
    """Actor methods that use asyncio as any asyncio program would."""

    async def basics(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = {"loop": type(loop).__name__}
        out["task"] = asyncio.current_task() is not None
        await asyncio.sleep(0.001)
        out["wait_for"] = await asyncio.wait_for(asyncio.sleep(0.001, "ok"), 5)
        out["gather"] = await asyncio.gather(asyncio.sleep(0, 1), asyncio.sleep(0.001, 2))
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)
        lock = asyncio.Lock()
        got: list[int] = []

        async def consume() -> None:
            for _ in range(8):
                async with lock:
                    got.append(await queue.get())

        async with asyncio.TaskGroup() as tg:
            tg.create_task(consume())
            for i in range(8):
                await queue.put(i)
        out["queue"] = got
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            out["timeout"] = True
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, 7)
        out["future"] = await fut
        await actorq.sleep(0.001)  # actorq's own API keeps working beside asyncio's
        out["executor"] = await loop.run_in_executor(None, sum, [1, 2, 3])
        return out

    async def ask_within(self, slow: Any, seconds: float, limit: float) -> str:
        """An actor ask under asyncio.timeout: the timeout cancels the ask."""
        try:
            async with asyncio.timeout(limit):
                await slow.wait(seconds)
        except TimeoutError:
            return "timed out"
        return "answered"

    async def fan_out(self, slow: Any, n: int) -> list[Any]:
        """asyncio Tasks that await actor asks, in a TaskGroup; and gather,
        which takes the asks themselves (an ask is a Future asyncio accepts)."""

        async def one(i: int) -> float:
            return await slow.wait(0.001 * i)  # type: ignore[no-any-return]

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(i)) for i in range(n)]
        gathered = await asyncio.gather(*[slow.wait(0.001 * i) for i in range(n)])
        return [[t.result() for t in tasks], gathered]

    async def streams_echo(self, rounds: int) -> list[bytes]:
        """An asyncio server and client in this actor, over loopback."""

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = []
        for i in range(rounds):
            writer.write(b"hello %d\n" % i)
            got.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    async def redis_counter(self, port: int, key: str, n: int) -> list[Any]:
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            await client.delete(key)
            for _ in range(n):
                await client.incr(key)
            await client.set(f"{key}:name", "actorq")
            return [int(await client.get(key)), await client.get(f"{key}:name")]
        finally:
            await client.aclose()

    async def http_get(self, url: str) -> list[Any]:
        import httpx

        async with httpx.AsyncClient() as client:
            first = await client.get(url)
            second = await client.get(url + "?again")
        return [first.status_code, first.text, second.text]


@actorq.actor
class Watcher:
    """Collects notes told to it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def note(self, what: str) -> None:
        self.seen.append(what)

    def notes(self) -> list[str]:
        return self.seen


@actorq.actor
class Background:
    """Starts asyncio work that outlives the method that started it."""

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher

    async def start(self) -> str:
        self.task = asyncio.create_task(self.forever())
        await asyncio.sleep(0)
        return "started"

    async def forever(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            self.watcher.note.tell(f"cancelled: {exc.args[0] if exc.args else ''}")
            raise


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running(workers=2, runtime_dir=tmp_path_factory.mktemp("aio") / "rt") as hosted:
        yield hosted.connect()


def test_asyncio_basics_in_an_actor(rt: Any) -> None:
    aio = rt.spawn(Aio)
    out = aio.basics()
    assert out == {
        "loop": "AsyncioLoop",
        "task": True,
        "wait_for": "ok",
        "gather": [1, 2],
        "queue": list(range(8)),
        "timeout": True,
        "future": 7,
        "executor": 6,
    }


def test_asyncio_timeout_cancels_an_actor_ask(rt: Any) -> None:
    aio, slow = rt.spawn(Aio), rt.spawn(Slow)
    assert aio.ask_within(slow, 0.001, 5.0) == "answered"
    assert aio.ask_within(slow, 1.0, 0.05) == "timed out"
    # The ask gave up; the callee was not told (that is the ask protocol's,
    # not the loop's): it finishes its wait, the late reply is dropped, and
    # both actors go on answering.
    assert slow.ping() == "pong"
    assert aio.ask_within(slow, 0.001, 5.0) == "answered"


def test_taskgroup_fan_out_of_actor_asks(rt: Any) -> None:
    aio, slow = rt.spawn(Aio), rt.spawn(Slow)
    expected = [0.001 * i for i in range(10)]
    assert aio.fan_out(slow, 10) == [expected, expected]


def test_asyncio_streams_in_an_actor(rt: Any) -> None:
    aio = rt.spawn(Aio)
    assert aio.streams_echo(5) == [b"HELLO %d\n" % i for i in range(5)]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_redis_asyncio_against_redis_server(rt: Any, redis_port: int) -> None:
    aio = rt.spawn(Aio)
    assert aio.redis_counter(redis_port, "hits", 20) == [20, b"actorq"]


def test_redis_asyncio_against_the_kv_example(rt: Any, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue("kvserver")[0]  # examples/kvserver, started for real
    aio = rt.spawn(Aio)
    assert aio.redis_counter(port, "aio-hits", 20) == [20, b"actorq"]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_url(rt: Any) -> Iterator[str]:  # after rt: workers are not forked with it
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_httpx_in_an_actor(rt: Any, http_url: str) -> None:
    pytest.importorskip("httpx")
    aio = rt.spawn(Aio)
    assert aio.http_get(http_url) == [200, "hello from /x", "hello from /x?again"]


def test_stopping_an_actor_cancels_the_asyncio_tasks_it_started(rt: Any) -> None:
    watcher = rt.spawn(Watcher)
    bg = rt.spawn(Background, watcher)
    assert bg.start() == "started"
    assert watcher.notes() == []
    bg.stop()
    seen = wait_until(watcher.notes, what="the background task's cancellation")
    assert seen == [f"cancelled: actor #{bg.id & 0xFFFFFFFF} stopped"]
