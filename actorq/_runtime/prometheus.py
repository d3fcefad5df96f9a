"""The Prometheus endpoint: ``actorq run --metrics 127.0.0.1:9464``.

The supervisor serves ``/metrics`` in the text exposition format through
``prometheus_client`` (its WSGI app), from one HTTP server thread that
answers one request at a time, each with a deadline. A scrape runs
``RuntimeCollector.collect`` in that thread: it reads the workers' boards
(shared memory, metrics.py) and /proc, so it asks no worker and never waits
on the supervisor's loop; supervision goes on whatever a scrape does.
Every worker is a label of one series (no multiprocess directory: the
supervisor sees every worker's memory).

Counters restart from zero when a worker is restarted (Prometheus' ``rate``
takes that as a counter reset); ring bytes and wake-ups are read from the
rings themselves and do not.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from . import metrics
from .admission import BUCKETS as SOJOURN_BUCKETS

log = logging.getLogger("actorq.metrics")
_REQUEST_TIMEOUT = 5.0  # seconds a scraper may take to send its request or read the answer

_WORKER_COUNTERS = {  # published field -> (metric name, help)
    "turns": ("actorq_worker_loop_turns", "Loop turns of the worker."),
    "callbacks": ("actorq_worker_callbacks", "Callbacks the worker's loop ran."),
    "sent": ("actorq_worker_sent_records", "Records the worker sent."),
    "received": ("actorq_worker_received_records", "Records the worker received."),
    "dead_letters": ("actorq_worker_dead_letters", "Tells to actors that do not exist."),
    "overloaded": ("actorq_worker_refused_messages", "Messages refused by full mailboxes."),
    "refused_sends": ("actorq_worker_refused_sends", "Sends refused past backlog_limit."),
    "expired": ("actorq_worker_expired_asks", "Asks dropped unrun: deadline passed."),
    "ring_bytes_in": ("actorq_worker_ring_in_bytes", "Bytes written into its rings."),
    "ring_bytes_out": ("actorq_worker_ring_out_bytes", "Bytes it wrote into other rings."),
    "wakeups": ("actorq_worker_wakeups", "Doorbells rung to wake the worker."),
    "restarts": ("actorq_worker_restarts", "Times the worker was restarted."),
    "stalls": ("actorq_worker_stalls", "Times the worker's loop was found stalled."),
}
_ACTOR_COUNTERS = {
    "messages": ("actorq_actor_messages", "Messages the actor's methods ran for."),
    "asks": ("actorq_actor_asks_answered", "Asks the actor answered with a value."),
    "errors": ("actorq_actor_errors", "Methods of the actor that raised."),
    "admitted": ("actorq_actor_admitted", "Messages admitted to the mailbox to wait."),
    "shed": ("actorq_actor_shed", "Messages its mailbox refused (overload)."),
    "expired": ("actorq_actor_expired", "Asks dropped unrun from its mailbox: deadline passed."),
}
_SERVER_COUNTERS = {
    f: (f"actorq_server_{f}", f"Connection server: {f.replace('_', ' ')}.")
    for f in ("accepted", "refused", "closed", "bytes_in", "bytes_out")
}


def _counter_families(
    table: dict[str, tuple[str, str]], labels: list[str]
) -> dict[str, CounterMetricFamily]:
    """One labelled counter family per published field of ``table``."""
    return {f: CounterMetricFamily(name, doc, labels=labels) for f, (name, doc) in table.items()}


class RuntimeCollector(Collector):
    """Reads one supervisor's workers at each scrape (module docstring)."""

    def __init__(self, sup: Any) -> None:
        self.sup = sup

    def collect(self) -> Iterator[Any]:
        view = metrics.runtime_view(self.sup)
        wl = ["worker", "cpu"]
        counters = _counter_families(_WORKER_COUNTERS, wl)
        busy = CounterMetricFamily(
            "actorq_worker_busy_seconds", "Loop time not spent waiting for events.", labels=wl
        )
        cpu = CounterMetricFamily(
            "actorq_worker_cpu_seconds", "CPU time of the worker process.", labels=wl
        )
        gauges = {
            "pending_asks": GaugeMetricFamily(
                "actorq_worker_pending_asks", "Asks awaiting their answers.", labels=wl
            ),
            "hosted": GaugeMetricFamily("actorq_worker_actors", "Actors hosted.", labels=wl),
            "stalled": GaugeMetricFamily(
                "actorq_worker_stalled", "1 while the worker's loop is stalled.", labels=wl
            ),
        }
        al = ["actor", "worker", "cls"]
        actor_counters = _counter_families(_ACTOR_COUNTERS, al)
        queued = GaugeMetricFamily(
            "actorq_actor_mailbox_depth", "Messages waiting in the mailbox.", labels=al
        )
        window = GaugeMetricFamily(
            "actorq_actor_admission_window", "Messages the mailbox admits now.", labels=al
        )
        service = HistogramMetricFamily(
            "actorq_actor_service_seconds",
            "Time a sync method and its reply took (sampled: see metrics.py).",
            labels=al,
        )
        sojourn = HistogramMetricFamily(
            "actorq_actor_sojourn_seconds",
            "Time messages that had to queue waited in the mailbox (no sum is kept).",
            labels=al,
        )
        sl = ["worker", "server"]
        servers = _counter_families(_SERVER_COUNTERS, sl)
        server_open = GaugeMetricFamily(
            "actorq_server_connections", "Connections open now.", labels=sl
        )
        for w in view["workers"]:
            wv = [str(w["worker"]), str(w["cpu"])]
            for f, fam in counters.items():
                if w.get(f) is not None:
                    fam.add_metric(wv, w[f])
            busy.add_metric(wv, w["busy_ns"] / 1e9)
            if w["cpu_seconds"] is not None:
                cpu.add_metric(wv, w["cpu_seconds"])
            for f, g in gauges.items():
                g.add_metric(wv, float(w[f]))
            for a in w["actors"]:
                av = [a["label"], str(w["worker"]), (a["cls"] or "?").rpartition(":")[2]]
                for f, fam in actor_counters.items():
                    fam.add_metric(av, a[f])
                queued.add_metric(av, a["queued"])
                window.add_metric(av, a["window"])
                service.add_metric(
                    av,
                    _cumulative(a["service_buckets"], metrics.SERVICE_BUCKETS),
                    a["service_sum_ns"] / 1e9,
                )
                sojourn.add_metric(av, _cumulative(a["sojourn_buckets"], SOJOURN_BUCKETS), None)
            for s in w["servers"]:
                sv = [str(w["worker"]), s["name"]]
                for f, fam in servers.items():
                    fam.add_metric(sv, s[f])
                server_open.add_metric(sv, s["open"])
        yield from counters.values()
        yield busy
        yield cpu
        yield from gauges.values()
        yield from actor_counters.values()
        yield queued
        yield window
        yield service
        yield sojourn
        yield from servers.values()
        yield server_open


def _cumulative(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts -> the exposition's cumulative (le, count) pairs, +Inf last."""
    out, total = [], 0
    for bound, n in zip(bounds, counts, strict=False):
        total += n
        out.append((repr(float(bound)), float(total)))
    out.append(("+Inf", float(sum(counts))))
    return out


class _Quiet(WSGIRequestHandler):
    """No access log on stderr, and a deadline on every read and write: a
    client that connects and says nothing holds the (single) server thread
    for ``timeout`` seconds at most."""

    timeout = _REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    """One request at a time (scrapes are rare; a thread per request would be
    a queue without a bound)."""

    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Endpoint:
    """The HTTP server of one runtime's metrics, on its own daemon thread."""

    def __init__(self, sup: Any, address: str) -> None:
        from prometheus_client import make_wsgi_app

        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RuntimeCollector(sup))
        server_class = _Server6 if ":" in host else _Server
        self.server = make_server(
            host, int(port), make_wsgi_app(self.registry), server_class, _Quiet
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="actorq-metrics", daemon=True
        )
        self.thread.start()
        bound_host, bound_port = str(self.server.server_address[0]), self.server.server_port
        self.address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )
        log.info("Prometheus metrics at http://%s/metrics", self.address)

    def close(self) -> None:
        """Stop serving (from the supervisor's cleanup; bounded by the request timeout)."""
        stopper = threading.Thread(target=self.server.shutdown, daemon=True)
        stopper.start()
        stopper.join(_REQUEST_TIMEOUT + 1.0)
        self.server.server_close()
        self.thread.join(1.0)
