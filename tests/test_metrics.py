"""The runtime's own counters (metrics.py), scraped from the Prometheus
endpoint with a real HTTP client and parsed with prometheus_client's parser:
they move when messages flow, stay still when the runtime is idle, and the
connection server's are there too.

Every test gets its own registry (``XDG_RUNTIME_DIR``), so no test sees
another's runtimes."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import actorq
from actorq import net
from actorq._runtime import metrics, rundir
from actorq.errors import RemoteError
from actorq.testing import running, wait_until


@actorq.actor
class Echo:
    def f(self, x: int) -> int:
        return x

    def boom(self) -> None:
        raise ValueError("boom")


class _EchoConn(net.Connection):
    def on_data(self, data: bytes) -> int:
        self.write(data)
        return 0


@actorq.actor
class Listener:
    def __init__(self) -> None:
        self.server: net.Server | None = None

    def on_start(self) -> None:
        self.server = net.Server(_EchoConn, "127.0.0.1", 0, name="echo-test")
        self.server.start()

    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def on_stop(self) -> None:
        if self.server is not None:
            self.server.close()


def scrape(address: str) -> dict[str, list[Any]]:
    """name -> samples of every family the endpoint serves now."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_counters_move_with_messages_and_stay_still_when_idle(xdg, tmp_path, no_leaks) -> None:
    with running(workers=2, runtime_dir=tmp_path / "rt", metrics_address="127.0.0.1:0") as rt:
        address = rundir.read_info(rt.runtime_dir)["metrics"]
        with rt.connect() as client:
            echo = client.spawn(Echo, name="echo")
            who = {"actor": "Echo 'echo' #1"}
            before = scrape(address)
            assert not before.get("actorq_actor_messages_total") or (
                value(before, "actorq_actor_messages_total", **who) == 0
            )
            for i in range(200):
                assert echo.f(i) == i
            with pytest.raises(RemoteError):
                echo.boom()

            def messages() -> float:
                return value(scrape(address), "actorq_actor_messages_total", **who)

            wait_until(lambda: messages() == 201, what="the 201 messages to be published")
            got = scrape(address)
            assert value(got, "actorq_actor_asks_answered_total", **who) == 200
            assert value(got, "actorq_actor_errors_total", **who) == 1
            # sampled by the loop (every 16th sleep: one ask at a time sleeps between)
            timed = value(got, "actorq_actor_service_seconds_count", **who)
            assert 1 <= timed <= 200
            assert value(got, "actorq_actor_service_seconds_sum", **who) > 0
            inf = value(got, "actorq_actor_service_seconds_bucket", le="+Inf", **who)
            assert inf == timed
            worker = next(s.labels["worker"] for s in got["actorq_actor_messages_total"])
            received = value(got, "actorq_worker_received_records_total", worker=worker)
            assert received == 201  # the asks (the spawn went over the control plane)
            assert value(got, "actorq_worker_ring_in_bytes_total", worker=worker) > 0
            assert value(got, "actorq_worker_cpu_seconds_total", worker=worker) > 0
            assert value(got, "actorq_worker_actors", worker=worker) == 1

            time.sleep(metrics.PUBLISH_S * 2 + 0.2)  # idle: at least two publishes go by
            idle = scrape(address)
            still = [
                ("actorq_actor_messages_total", who),
                ("actorq_actor_service_seconds_count", who),
                ("actorq_worker_received_records_total", {"worker": worker}),
                ("actorq_worker_sent_records_total", {"worker": worker}),
                ("actorq_worker_ring_in_bytes_total", {"worker": worker}),
            ]
            for name, labels in still:
                assert value(idle, name, **labels) == value(got, name, **labels), name


def test_connection_server_counters(xdg, tmp_path) -> None:
    with running(workers=1, runtime_dir=tmp_path / "rt", metrics_address="127.0.0.1:0") as rt:
        address = rundir.read_info(rt.runtime_dir)["metrics"]
        with rt.connect() as client:
            port = client.spawn(Listener).port()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"hello\n")
                assert s.recv(100) == b"hello\n"
                wait_until(
                    lambda: scrape(address).get("actorq_server_bytes_in_total"),
                    what="the server's counters",
                )

                def published() -> bool:
                    got = scrape(address)
                    return value(got, "actorq_server_bytes_in_total", server="echo-test") == 6

                wait_until(published, what="6 bytes in")
                got = scrape(address)
                assert value(got, "actorq_server_accepted_total", server="echo-test") == 1
                assert value(got, "actorq_server_bytes_out_total", server="echo-test") == 6
                assert value(got, "actorq_server_connections", server="echo-test") == 1
                assert value(got, "actorq_server_refused_total", server="echo-test") == 0


def test_the_endpoint_goes_with_the_runtime(xdg, tmp_path) -> None:
    with running(workers=1, runtime_dir=tmp_path / "rt", metrics_address="127.0.0.1:0") as rt:
        address = rundir.read_info(rt.runtime_dir)["metrics"]
        assert "actorq_worker_loop_turns_total" in scrape(address)
    host, _, port = address.rpartition(":")
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
        pass


def test_a_bad_metrics_address_is_a_config_error(xdg, tmp_path) -> None:
    with (
        pytest.raises(actorq.ConfigError, match="HOST:PORT"),
        running(workers=1, runtime_dir=tmp_path / "rt", metrics_address="nowhere"),
    ):
        pass


def test_metrics_false_publishes_nothing(xdg, tmp_path) -> None:
    with (
        running(workers=1, runtime_dir=tmp_path / "rt", metrics=False) as rt,
        rt.connect() as client,
    ):
        echo = client.spawn(Echo)
        for i in range(20):
            echo.f(i)
        time.sleep(metrics.PUBLISH_S * 2 + 0.2)
        (worker,) = client.stats()["metrics"]["workers"]
        assert worker["published_ns"] == 0
        assert [a["messages"] for a in worker["actors"]] == [0]  # counted, never published
