"""Small real programs built on actorq: ``examples.pipeline`` and ``examples.kvserver``.

A package so the tests and ``bench/`` can import their pure parts (the RESP
protocol, the store) and start them with ``python -m examples.NAME``.
"""
