"""gunicorn hosting the actorq runtime in its master process.

    gunicorn examples.webapp.app:app -c examples/webapp/gunicorn_conf.py [--bind 127.0.0.1:8000]

``on_starting`` runs once in the master before any web worker is forked: it
starts the runtime in the background (``actorq.start``: its workers are
processes of their own, pinned) and creates the shared actors; the web
workers find it through ``ACTORQ_RUNTIME_DIR``. ``on_exit`` stops it in order
when gunicorn stops.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import actorq

workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "uvicorn.workers.UvicornWorker"

_hosted: dict[str, Any] = {}


def on_starting(server: Any) -> None:
    from examples.webapp.actors import spawn_all

    runtime_dir = os.environ.get("ACTORQ_RUNTIME_DIR") or tempfile.mkdtemp(prefix="webapp-rt-")
    os.environ["ACTORQ_RUNTIME_DIR"] = runtime_dir  # inherited by the web workers
    rt = actorq.start(workers=int(os.environ.get("ACTORQ_WORKERS", "1")), runtime_dir=runtime_dir)
    _hosted["rt"] = rt
    with rt.connect() as client:
        spawn_all(client)


def on_exit(server: Any) -> None:
    rt = _hosted.pop("rt", None)
    if rt is not None:
        rt.stop(timeout=30)
