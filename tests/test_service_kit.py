"""The service kit in runtime/: the example config is what the runtime's own
loader accepts and documents every option; the systemd unit stops, limits and
pins the service the way the runtime expects."""

from __future__ import annotations

import configparser
import ctypes
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _runtime_helpers import workers_of

from actorq.config import Config, load_config
from actorq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TOML = ROOT / "runtime" / "actorq.toml"
UNIT = ROOT / "runtime" / "actorq@.service"
# Loaded now, not in the forked child: preexec_fn must not take locks (dlopen's).
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM if pytest dies without tearing down."""
    _LIBC.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    cp.read(UNIT)
    return cp


def cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.update(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return out


def test_example_config_loads_with_the_runtime_loader() -> None:
    cfg = load_config(TOML)
    assert cfg.workers == 2
    assert cfg.cpus == (0, 1)
    assert cfg.restart in ("on-crash", "never")
    # The same text under [tool.actorq] of a pyproject.toml reads the same.
    assert cfg.stop_timeout > 0


def test_example_config_documents_every_option() -> None:
    known = {f.name for f in dataclasses.fields(Config)} - {"source"}
    lines = TOML.read_text().splitlines()
    keys = [(i, ln.split("=", 1)[0].strip()) for i, ln in enumerate(lines)
            if re.match(r"^[a-z_]+\s*=", ln)]
    assert {k for _, k in keys} == known, "runtime/actorq.toml must set every option once"
    for i, key in keys:
        assert lines[i - 1].startswith("#"), f"option {key!r} has no comment above it"


def test_example_config_typo_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "actorq.toml"
    bad.write_text(TOML.read_text().replace("workers = 2", "wokers = 2"))
    with pytest.raises(ConfigError, match="wokers"):
        load_config(bad)


def test_unit_stops_with_the_signal_the_runtime_handles() -> None:
    svc = unit()["Service"]
    assert svc["KillSignal"] == "SIGTERM"
    # SIGTERM to the supervisor only; it stops its workers itself.
    assert svc["KillMode"] == "mixed"
    assert svc["ExecStart"].split()[1] == "run"
    stop_timeout = load_config(TOML).stop_timeout
    assert float(svc["TimeoutStopSec"]) > stop_timeout, (
        "TimeoutStopSec must leave the runtime its stop_timeout before systemd SIGKILLs"
    )


def test_unit_limits_pinning_and_restart() -> None:
    cp = unit()
    svc = cp["Service"]
    assert int(svc["LimitNOFILE"]) >= 65536
    assert svc["Restart"] in ("on-failure", "always", "on-abnormal")
    assert svc["NUMAPolicy"] in ("bind", "preferred", "interleave", "local", "default")
    assert cpu_list(svc["CPUAffinity"])
    assert "StartLimitBurst" in cp["Unit"]  # belongs in [Unit], where systemd reads it
    cfg = load_config(TOML)
    assert set(cfg.cpus) <= cpu_list(svc["CPUAffinity"]), "actorq.toml cpus outside CPUAffinity"
    assert cfg.runtime_dir == "/run/" + svc["RuntimeDirectory"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify wants the ExecStart binary to exist: point it at this interpreter's actorq.
    exe = Path(sys.executable).with_name("actorq")
    text = UNIT.read_text().replace("/opt/actorq/venv/bin/actorq", str(exe))
    target = tmp_path / "actorq@kit.service"
    target.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True,
                          text=True, timeout=60)
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                  if str(target) in ln or "actorq@kit" in ln]
    assert not complaints, "\n".join(complaints)


def test_runtime_started_as_the_unit_does_stops_cleanly_on_its_kill_signal(tmp_path: Path) -> None:
    """ExecStart with the example config, then the unit's KillSignal: exit 0 well
    within TimeoutStopSec, every worker gone (what systemctl stop relies on)."""
    pytest.importorskip("zmq")
    import os
    import signal
    import time

    import psutil

    svc = unit()["Service"]
    allowed = sorted(os.sched_getaffinity(0))
    text = TOML.read_text().replace('runtime_dir = "/run/actorq"',
                                    f'runtime_dir = "{tmp_path / "run"}"')
    # a name and a port of its own: other runtimes (and tests) may run beside it
    text = text.replace('name = "myservice"', f'name = "kit-{os.getpid()}"').replace(
        'metrics_address = "127.0.0.1:9464"', 'metrics_address = "127.0.0.1:0"')
    if not {0, 1} <= set(allowed):
        text = text.replace('cpus = "0-1"', f'cpus = "{allowed[0]}"').replace(
            "workers = 2", "workers = 1")
    (tmp_path / "actorq.toml").write_text(text)
    exec_start = svc["ExecStart"].replace("%i", "kit").split()
    assert exec_start[1:4] == ["run", "--config", "/etc/actorq/kit/actorq.toml"]
    argv = [str(Path(sys.executable).with_name("actorq")), "run", "--config",
            str(tmp_path / "actorq.toml"), *exec_start[4:]]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "KVSERVER_PORT": "0"},
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("listening on "):
                break
        else:
            pytest.fail(f"{argv} exited before listening (rc {proc.wait()})")
        workers = workers_of(proc.pid)
        assert workers
        stop_signal = getattr(signal, svc["KillSignal"])
        t0 = time.monotonic()
        proc.send_signal(stop_signal)
        rc = proc.wait(timeout=float(svc["TimeoutStopSec"]))
        took = time.monotonic() - t0
        assert rc == 0, proc.stdout.read()
        _, alive = psutil.wait_procs(workers, timeout=2)
        assert not alive
        assert took < float(svc["TimeoutStopSec"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
