"""The supervisor's view of one child process (a worker or the main process).

A child is watched through a pidfd (``os.pidfd_open``): it becomes readable
when that child exits, from any thread and without SIGCHLD, so a runtime
hosted in a thread of a bigger program reaps exactly its own children and
never the host's.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from .board import Board


@dataclass
class Proc:
    """One child slot; a restart forks a new incarnation into the same slot."""

    role: str  # "worker" | "main"
    index: int  # node index in the mesh
    identity: bytes  # control-plane identity of every incarnation
    board: Board
    cpu: int | None = None
    numa_node: int | None = None
    pid: int = 0
    pidfd: int = -1
    incarnation: int = 0
    hello: bool = False
    exited: bool = True
    started: float = 0.0
    restarts: int = 0
    fast_crashes: int = 0  # crashes in a row within a second of starting, with no culprit
    ping_sent: float = 0.0  # when the unanswered heartbeat was sent (0: none pending)
    stalled: bool = False
    kill_reason: str | None = None  # why the supervisor killed it, if it did
    inflight: set[Any] = field(default_factory=set)  # control requests awaiting it

    @property
    def label(self) -> str:
        where = f", CPU {self.cpu}" if self.cpu is not None else ""
        name = f"worker {self.index}" if self.role == "worker" else "main process"
        return f"{name} (pid {self.pid}{where})"

    def started_now(self, pid: int) -> None:
        self.pid, self.hello, self.exited, self.started = pid, False, False, time.monotonic()
        self.ping_sent, self.stalled, self.kill_reason = 0.0, False, None
        self.pidfd = os.pidfd_open(pid)

    def kill(self, why: str | None = None) -> None:
        if self.exited or not self.pid:
            return
        if why is not None and self.kill_reason is None:
            self.kill_reason = why
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self, block: bool = False) -> int | None:
        """Its exit code (negative: killed by that signal), or None if it still runs."""
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0  # reaped already (by someone else)
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
