"""The runtime's processes and how they talk (private; the public API is ``actorq``).

- ``supervisor``: forks and watches the processes, signals, restarts, shutdown.
  It runs runtime code only: the user's ``main`` runs in a process of its own.
- ``directory``: where every actor lives (typed records), names, the dead set.
- ``placing``: which worker a new actor goes to (the placer over worker CPUs).
- ``node``: routing in one process (ask/tell/reply/deliver, pending asks).
- ``host``: hosting actors in a worker (cells, mailboxes, on_start/on_stop).
- ``worker``: the body of a worker process and of the main process after fork.
- ``mesh``: the data plane between processes (shared-memory rings).
- ``control``: the ZeroMQ control plane (spawn, lookup, stats, health, shutdown)
  and who may use which of it (trusted identities from the runtime's secret).
- ``rundir``: the runtime directory: claimed, tidied on every exit, swept when stale.
"""
