"""examples/webapp for real: uvicorn with 2 workers beside an ``actorq run``
runtime, and gunicorn (uvicorn workers) hosting the runtime in its master;
real HTTP requests; the rate limit and the counter are shared by the web
workers; every process is reaped."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

import actorq
from actorq.testing import wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from examples.webapp.serve import gunicorn_hosting_runtime, uvicorn_beside_runtime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, user: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-User": user})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _exercise(port: int, runtime_dir: str) -> None:
    # the limiter is shared: alice gets her 20 requests at once, whichever worker serves
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _get(port, "/hit", "alice"), range(40)))
    codes = sorted(code for code, _ in answers)
    assert codes.count(200) >= 20  # refills (10/s) may add a few while the burst runs
    assert codes.count(429) >= 10
    # the counter is shared: every 200 got its own number, 1..n
    hits = sorted(body["hits"] for code, body in answers if code == 200)
    assert hits == list(range(1, len(hits) + 1))
    # both web workers are connected straight to the actors' worker: one
    # direct channel each (opened in their lifespan)
    # (the second worker may still be in its lifespan when the first serves)
    with actorq.connect(runtime_dir) as client:
        wait_until(
            lambda: client.stats()["workers"][0]["outside"]["open"] == 2,
            timeout=60,
            what="a direct channel from each web worker",
        )


def _descendants(procs) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            out += psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
def test_uvicorn_two_workers_share_actors(tmp_path) -> None:
    port = _free_port()
    with uvicorn_beside_runtime(str(tmp_path / "rt"), port) as procs:
        _exercise(port, str(tmp_path / "rt"))
        kids = _descendants(procs)
        assert len(kids) >= 3  # 2 web workers, 1 runtime worker at least
    for p in procs:
        assert p.returncode is not None
    _gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, f"left running: {alive}"


@pytest.mark.slow
def test_gunicorn_hosts_the_runtime(tmp_path) -> None:
    pytest.importorskip("gunicorn")
    port = _free_port()
    with gunicorn_hosting_runtime(str(tmp_path / "rt"), port) as procs:
        _exercise(port, str(tmp_path / "rt"))
        kids = _descendants(procs)
        assert len(kids) >= 3
    assert procs[0].returncode == 0
    _gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, f"left running: {alive}"
