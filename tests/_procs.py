"""Helpers for tests that fork real children (rings, inboxes): run a function
in a child, reap it on a deadline, kill it if a test failed first."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any


def fork_call(fn: Callable[..., Any], *args: Any) -> int:
    """Run fn(*args) in a forked child; its exit code is 0 iff it returned True."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if fn(*args) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def fork_with_pipe(fn: Callable[[int], Any]) -> tuple[int, int]:
    """Fork a child running ``fn(write_fd)``; returns (pid, read_fd). The child
    exits 0 if ``fn`` returned, 1 if it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            fn(w)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def reap(pid: int, timeout: float = 30.0) -> int:
    """The child's exit code; kills it and fails if it has not exited by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def kill_if_running(pid: int) -> None:
    """Kill and reap ``pid`` unless it was already reaped (cleanup after a failure)."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # already reaped by the test


def memfd_maps() -> list[str]:
    """This process's mappings of actorq memfds (a leaked ring shows here)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if "/memfd:actorq" in line]


def rec(i: int, n: int) -> bytes:
    """Record i of n bytes: its index repeated, so a stale, torn or swapped record shows."""
    return (i.to_bytes(8, "little") * (n // 8 + 1))[:n] if n else b""
