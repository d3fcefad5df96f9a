"""Start the web example for real and stop it in order (the tests and
``python -m bench embed`` use these): uvicorn beside an ``actorq run``
runtime, or gunicorn hosting the runtime in its master."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import actorq

ROOT = Path(__file__).resolve().parents[2]


def env_with(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def wait_http(port: int, path: str = "/noop", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_actors(
    runtime_dir: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the runtime at ``runtime_dir`` answers and has the example's actors."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before it was up")
        try:
            with actorq.connect(runtime_dir, timeout=5) as client:
                client.lookup("hits")
                client.lookup("limiter")
                return
        except (actorq.NoRuntime, actorq.ActorNotFound, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, wait, SIGKILL if it must; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextlib.contextmanager
def runtime(
    runtime_dir: str,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    cpus: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``actorq run examples.webapp.actors:main``, up once its actors are."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "actorq", "run", "examples.webapp.actors:main"),
            *("--workers", str(workers), "--runtime-dir", runtime_dir),
            *(("--cpus", cpus) if cpus else ()),
        ],
        cwd=ROOT,
        env=env_with(extra_env or {}),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_actors(runtime_dir, proc=proc)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def uvicorn_beside_runtime(
    runtime_dir: str,
    port: int,
    web_workers: int = 2,
    runtime_workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``actorq run examples.webapp.actors:main`` + ``uvicorn --workers N``."""
    env = env_with({"ACTORQ_RUNTIME_DIR": runtime_dir, **(extra_env or {})})
    argv = [
        *(sys.executable, "-m", "uvicorn", "examples.webapp.app:app"),
        *("--workers", str(web_workers), "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", "warning", "--no-access-log"),
    ]
    with runtime(runtime_dir, runtime_workers, extra_env) as rt, _web(argv, port, env) as web:
        yield [rt, web]


@contextlib.contextmanager
def gunicorn_hosting_runtime(
    runtime_dir: str,
    port: int,
    web_workers: int = 2,
    runtime_workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """gunicorn with uvicorn workers; its master hosts the runtime (gunicorn_conf.py)."""
    env = env_with(
        {
            "ACTORQ_RUNTIME_DIR": runtime_dir,
            "ACTORQ_WORKERS": str(runtime_workers),
            "WEB_WORKERS": str(web_workers),
            **(extra_env or {}),
        }
    )
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "examples.webapp.app:app",
        "-c",
        str(ROOT / "examples" / "webapp" / "gunicorn_conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    with _web(argv, port, env) as proc:
        yield [proc]


@contextlib.contextmanager
def _web(argv: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A web server process, once it answers on ``port``; stopped after."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        wait_http(port)
        yield proc
    finally:
        stop(proc)
