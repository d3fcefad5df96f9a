"""Logging never blocks a loop: a stuck stderr drops records, it does not stall the runtime.

The unit tests drive ``LogPipe`` in this process against a pipe whose reader
does not read. ``setup`` changes the root logger, so its tests run in a fresh
interpreter. The end-to-end test runs a real runtime whose actors log a lot
while nobody reads its stderr, and checks that it keeps serving and stops on
SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _runtime_helpers import actorq_cmd, env, run_app, run_python, wait_for, write_app

from actorq._runtime import logs

BIG = "x" * 10_000


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    lg = logging.getLogger(f"test_logging.{name}")
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    return lg


def _read_until(
    fd: int, needle: bytes | None = None, done: Callable[[], bool] | None = None
) -> bytes:
    """Read ``fd`` (so the writer is unstuck) until ``needle`` shows up or ``done()``."""
    got = b""
    deadline = time.monotonic() + 20.0
    while (needle is None or needle not in got) and not (done is not None and done()):
        assert time.monotonic() < deadline, f"{needle!r} never came; got {got[-300:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            got += os.read(fd, 1 << 16)
    return got


def _fill(fd: int) -> int:
    """Fill the pipe behind ``fd`` to the brim, so the writer's next write blocks."""
    os.set_blocking(fd, False)
    n = 0
    try:
        while True:
            n += os.write(fd, b"." * 4096)
    except BlockingIOError:
        return n
    finally:
        os.set_blocking(fd, True)


def _emit_in_thread(lg: logging.Logger, n: int) -> None:
    """Emit ``n`` big records; fail (rather than hang the suite) if emit ever blocks."""

    def body() -> None:
        for i in range(n):
            lg.warning("record %d %s", i, BIG)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(30.0)
    assert not t.is_alive(), "emit blocked on a stuck sink"


def test_records_are_formatted_with_pid_role_level_and_name(pipe) -> None:
    r, w = pipe
    lp = logs.LogPipe(fd=w, role="w3")
    lg = _logger("format", lp.handler)
    try:
        lg.info("hello %s", "there")
        try:
            raise ValueError("boom")
        except ValueError:
            lg.exception("it broke")
        lg.info("last")
        out = _read_until(r, b"last\n").decode()
    finally:
        assert lp.stop()
    lines = out.splitlines()
    assert lines[0] == f"actorq[{os.getpid()} w3] INFO test_logging.format: hello there"
    assert lines[1] == f"actorq[{os.getpid()} w3] ERROR test_logging.format: it broke"
    assert "ValueError: boom" in out  # the traceback travels with the record
    assert lp.dropped() == 0


def test_a_stuck_sink_drops_and_counts_then_says_how_many(pipe) -> None:
    r, w = pipe
    lp = logs.LogPipe(fd=w, role="t", capacity=8)
    lg = _logger("stuck", lp.handler)
    _fill(w)  # nobody reads this pipe
    try:
        _emit_in_thread(lg, 200)
        lost = lp.dropped()
        assert lost > 0
        assert lp.thread is not None
        assert lp.thread.is_alive()
        # The reader comes back: the writer finishes the record it was stuck
        # in, says how many were lost, then writes what is still queued.
        got = _read_until(r, b"log records dropped")
        got += _read_until(r, done=lambda: lp.handler.queue.empty())
        lg.warning("after")
        got += _read_until(r, b"after\n")
    finally:
        assert lp.stop()
    text = got.decode()
    notes = [ln for ln in text.splitlines() if "log records dropped" in ln]
    assert notes == [
        f"actorq[{os.getpid()} t] WARNING actorq.logs: {lost} log records dropped: "
        "stderr was not read fast enough (or refused writes)"
    ]
    written = {int(ln.split()[5]) for ln in text.splitlines() if " record " in ln}
    assert len(written) == 200 - lost  # every record is either written or counted
    assert lp.dropped() == lost


def test_stop_gives_up_on_a_stuck_sink_within_its_timeout(pipe) -> None:
    r, w = pipe
    lp = logs.LogPipe(fd=w, capacity=4)
    lg = _logger("stop", lp.handler)
    _fill(w)
    _emit_in_thread(lg, 50)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(lp.stop(0.2)), daemon=True)
    t.start()
    t.join(10.0)  # generous: the point is that it returns at all
    assert done == [False]
    os.close(r)  # the writer's write fails with EPIPE and the thread can end
    lp.thread.join(10.0)  # type: ignore[union-attr]


def test_a_closed_sink_counts_every_record_as_dropped(pipe) -> None:
    r, w = pipe
    os.close(r)  # writes now fail with EPIPE (Python ignores SIGPIPE)
    lp = logs.LogPipe(fd=w)
    lg = _logger("closed", lp.handler)
    for i in range(5):
        lg.warning("nobody hears %d", i)
    assert lp.stop()
    assert lp.dropped() == 5


def test_a_record_that_cannot_be_formatted_is_reported_not_printed(pipe, capfd) -> None:
    r, w = pipe
    lp = logs.LogPipe(fd=w)
    lg = _logger("bad", lp.handler)
    try:
        lg.warning("%d apples", "some")
        lg.warning("done")
        out = _read_until(r, b"done\n").decode()
    finally:
        assert lp.stop()
    assert "could not log a record from test_logging.bad" in out
    assert "'%d apples'" in out
    assert capfd.readouterr().err == ""  # no traceback on the real stderr


SETUP_OWNS_ROOT = r"""
import logging, os, signal, sys
from actorq._runtime import logs

logs.setup("info", process_name="sup")
root = logging.getLogger()
assert [type(h).__name__ for h in root.handlers] == ["DroppingQueueHandler"], root.handlers
assert root.level == logging.INFO and logging.getLogger("actorq").level == logging.INFO
logging.getLogger("app").info("app info reaches stderr")
logging.getLogger("app").debug("app debug does not")

# A signal sent to the process reaches the main thread, never the writer thread:
# with SIGTERM blocked here and left at its default action, a writer that
# accepted it would kill the process.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
for _ in range(20):
    os.kill(os.getpid(), signal.SIGTERM)
    assert signal.sigwait({signal.SIGTERM}) == signal.SIGTERM

pid = os.fork()
if pid == 0:
    logs.setup_after_fork("warning", "w7")
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    logging.getLogger("app").warning("child says hi; comm=%s", comm)
    logging.getLogger("app").info("child info is below warning")
    logs.shutdown()
    os._exit(0)
os.waitpid(pid, 0)
logging.getLogger("app").warning("parent still logs")
print("dropped", logs.dropped())
"""


def test_setup_configures_the_root_logger_when_nobody_has() -> None:
    proc = run_python("-c", SETUP_OWNS_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "dropped 0"
    lines = proc.stderr.splitlines()
    assert f"actorq[{proc_pid(lines[0])} sup] INFO app: app info reaches stderr" == lines[0]
    assert "app debug does not" not in proc.stderr
    child = [ln for ln in lines if "child says hi" in ln]
    assert len(child) == 1
    assert " w7] WARNING app: child says hi; comm=actorq-w7" in child[0]
    assert "child info" not in proc.stderr
    assert lines[-1].endswith("sup] WARNING app: parent still logs")


def proc_pid(line: str) -> int:
    return int(line.split("[", 1)[1].split()[0])


SETUP_EMBEDDED = r"""
import logging, sys
from actorq._runtime import logs

mine = logging.StreamHandler(sys.stdout)
logging.basicConfig(level=logging.ERROR, handlers=[mine])
logs.setup("debug", process_name="sup")
root = logging.getLogger()
assert root.handlers == [mine], root.handlers
assert root.level == logging.ERROR
assert logging.getLogger("actorq").level == logging.DEBUG
logging.getLogger("actorq.test").debug("through the host's handler")
print("dropped", logs.dropped(), "stopped", logs.shutdown())
"""


def test_setup_leaves_a_host_programs_logging_alone() -> None:
    proc = run_python("-c", SETUP_EMBEDDED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "DEBUG:actorq.test:through the host's handler",
        "dropped 0 stopped True",
    ]


# --- end to end --------------------------------------------------------------------------

CHATTY = r"""
import json, logging, os
import actorq

PROGRESS = os.environ["PROGRESS"]
BIG = "y" * 10_000
app = logging.getLogger("app")

@actorq.actor
class Chatty:
    def talk(self, n: int) -> int:
        for i in range(10):
            app.warning("chatty %d/%d %s", n, i, BIG)
        return n

async def main(rt: actorq.Runtime) -> None:
    refs = [await rt.spawn(Chatty, cpu=c) for c in rt.workers]
    n = 0
    while True:
        for r in refs:
            assert await r.talk(n) == n
        app.warning("main round %d %s", n, BIG)
        row = {"n": n}
        if n % 20 == 0:
            st = await rt.stats()
            row["workers"] = sum(w.get("log_dropped", 0) for w in st["workers"])
            row["supervisor"] = st["supervisor"]["log_dropped"]
        with open(PROGRESS, "a") as f:
            f.write(json.dumps(row) + "\n")
        n += 1
"""


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.endswith("}")]


def _read_to_eof(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_a_stderr_nobody_reads_does_not_stall_the_runtime(tmp_path, monkeypatch, no_leaks) -> None:
    write_app(tmp_path, CHATTY)
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv("PROGRESS", str(progress))
    r, w = os.pipe()  # nobody reads it while the runtime runs
    try:
        proc = subprocess.Popen(
            actorq_cmd(tmp_path, "app:main", "--workers", "2"),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=w,
        )
    finally:
        os.close(w)
    try:
        # Each round the actors log 200 KB and main 10 KB: the 64 KiB pipe is
        # full within the first round, and the rounds must go on regardless.
        wait_for(
            lambda: len(_rows(progress)) >= 100 or proc.poll() is not None,
            timeout=60,
            what="100 rounds of asks",
        )
        assert proc.poll() is None, "the runtime exited early"
        # (main runs in a process of its own, so the supervisor itself logs
        # little here: its own drops are covered by the unit tests above; what
        # counts is that it keeps answering stats and stops on SIGTERM)
        wait_for(
            lambda: any(r.get("workers", 0) > 0 for r in _rows(progress)),
            timeout=60,
            what="dropped records in the workers' stats",
        )
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=5.0 + 15.0)  # stop_timeout plus a generous bound
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM did not stop a runtime whose stderr is full") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err = _read_to_eof(r)  # only now is stderr read
        os.close(r)
    assert rc == 0, err[-2000:]
    assert "] WARNING app: chatty 0/0 " in err  # the first records made it, the rest were dropped
    assert len(err) < 1 << 20


LEVELS = r"""
import logging
import actorq

@actorq.actor
class Greeter:
    def greet(self) -> None:
        logging.getLogger("app").info("an actor's info line")
        logging.getLogger("app").debug("an actor's debug line")

async def main(rt: actorq.Runtime) -> None:
    g = await rt.spawn(Greeter)
    await g.greet()
    logging.getLogger("app").info("main's info line")
"""


@pytest.mark.parametrize("level", ["info", "warning"])
def test_log_level_applies_to_the_apps_own_loggers(tmp_path, no_leaks, level) -> None:
    write_app(tmp_path, LEVELS)
    proc = run_app(tmp_path, "app:main", "--workers", "1", "--log-level", level)
    assert proc.returncode == 0, proc.stderr
    shown = level == "info"
    assert ("INFO app: an actor's info line" in proc.stderr) is shown, proc.stderr
    assert ("INFO app: main's info line" in proc.stderr) is shown, proc.stderr
    assert "debug line" not in proc.stderr
    if shown:
        actor_line = next(ln for ln in proc.stderr.splitlines() if "an actor's info" in ln)
        assert " w1] INFO" in actor_line  # the worker's role is in its lines
