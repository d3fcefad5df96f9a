"""Small real programs built on actorq: ``hello``, ``pipeline`` and ``kvserver``.

Installed with actorq as ``actorq.examples`` (``actorq/examples`` is a link to
this directory), so they run from any directory:
``actorq run actorq.examples.hello:main``, ``python -m actorq.examples.NAME``.
In the repository they are also the package ``examples``, which the tests
and ``bench/`` import for their pure parts (the RESP protocol, the store).
"""
