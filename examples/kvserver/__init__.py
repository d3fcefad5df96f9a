"""A Redis-protocol key-value server on actorq: every worker accepts (SO_REUSEPORT),
keys are sharded by hash across one shard actor per worker, a connection is
served on the worker that accepted it, and keys owned elsewhere are reached
through the rings. ``python -m actorq.examples.kvserver``; see README.md here.

The protocol (:mod:`.resp`), the data (:mod:`.store`) and the command table
(:mod:`.commands`) are plain modules with no runtime in them.
"""
