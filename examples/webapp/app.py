"""A Starlette app whose web workers share actors through actorq.

    actorq run examples.webapp.actors:main --runtime-dir /tmp/webapp-rt &
    ACTORQ_RUNTIME_DIR=/tmp/webapp-rt uvicorn examples.webapp.app:app --workers 2

or, with the runtime hosted by gunicorn's master process (gunicorn_conf.py)::

    gunicorn examples.webapp.app:app -c examples/webapp/gunicorn_conf.py

Each web worker connects once, in its lifespan, after the fork (a client
belongs to the process that made it); its asks then travel over its own
shared-memory channel straight to the actor's worker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import actorq

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    client = actorq.connect_async(os.environ["ACTORQ_RUNTIME_DIR"])
    state["limiter"] = await client.lookup("limiter")
    state["hits"] = await client.lookup("hits")
    await state["hits"].add(0)  # opens this process's channel now, not on the first request
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:  # for the benchmark's Redis handler
        import redis.asyncio

        state["redis"] = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield
    finally:
        if "redis" in state:
            await state["redis"].aclose()
        client.close()


async def hit(request: Request) -> Response:
    """Count a visit, unless the caller (``X-User``, else its address) is over its rate."""
    user = request.headers.get("x-user") or (request.client.host if request.client else "?")
    if not await state["limiter"].allow(user):
        return JSONResponse({"error": "rate limited", "user": user}, status_code=429)
    return JSONResponse({"hits": await state["hits"].add(1), "pid": os.getpid()})


# The three handlers the embed benchmark compares (bench/embed.py).
async def noop(request: Request) -> Response:
    return PlainTextResponse("ok")


async def ask(request: Request) -> Response:
    return PlainTextResponse(str(await state["hits"].add(1)))


async def incr(request: Request) -> Response:
    return PlainTextResponse(str(await state["redis"].incr("hits")))


app = Starlette(
    routes=[
        Route("/hit", hit),
        Route("/noop", noop),
        Route("/ask", ask),
        Route("/redis", incr),
    ],
    lifespan=lifespan,
)
