"""Runtime configuration: ``actorq.toml`` or ``[tool.actorq]`` in pyproject.toml.

Precedence, lowest first: built-in defaults, the file, command-line flags (or
``actorq.run(...)`` keyword arguments). A key this version does not know is an
error naming the key and the file, because a typo that is silently ignored
("wokers = 4") is worse than one that stops the start.

Example ``actorq.toml``::

    workers = 2
    cpus = "0-1"
    log_level = "info"
    stop_timeout = 5.0
    ask_timeout = 5.0      # false: asks have no default deadline
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .topology.cpulist import parse_cpulist

SHED_POLICIES = ("fattest", "newest", "oldest")  # see _runtime/admission.py


@dataclass(frozen=True)
class Config:
    workers: int | None = None  # None: one per physical core in the cpuset
    cpus: tuple[int, ...] | None = None  # None: every CPU the process may use
    log_level: str = "warning"
    runtime_dir: str | None = None  # None: a fresh private dir under $XDG_RUNTIME_DIR or /tmp
    restart: str = "on-crash"  # workers: "on-crash" (restart within 1 s) or "never"
    explain: bool = False  # log every placement decision and its reason
    stop_timeout: float = 5.0  # seconds an orderly stop may take before workers are killed
    ring_capacity: int | None = None  # bytes per ring; None: 256 KiB however many workers
    stall_timeout: float = 10.0  # a worker whose loop is held this long is reported
    stall_action: str = "restart"  # then: "restart" (kill it, like a crash) or "report" only
    restart_intensity: int = 3  # an actor that crashes its worker more than this often ...
    restart_period: float = 5.0  # ... within this many seconds is stopped, not re-created
    # Seconds an ask waits for its answer before it raises TimeoutError (OTP's
    # gen_server:call default); None (``false`` in TOML): no default deadline.
    ask_timeout: float | None = 5.0
    # Overload (see _runtime/admission.py): the most messages any actor without
    # mailbox=N may have waiting; which message goes when its admission window
    # is full; the queueing delay above which (for a whole interval) the window
    # shrinks.
    mailbox_limit: int = 100_000
    shed_policy: str = "fattest"
    sojourn_target: float = 0.005
    sojourn_interval: float = 0.1
    # Messages that may wait for one destination (its ring full) before a tell
    # or ask to it raises Overloaded; past a quarter of it, tells park.
    backlog_limit: int = 65_536
    fair_queueing: bool = True  # false: one FIFO per actor, for comparison in bench overload
    # The runtime's name in the per-user registry (actorq ps/top/stats NAME);
    # None: the app's name and the supervisor's pid, e.g. "hello-4242".
    name: str | None = None
    # Counters kept inside the runtime (see _runtime/metrics.py); false: no
    # sampling of service times and no publishing (for measuring their cost).
    metrics: bool = True
    # "HOST:PORT" to serve Prometheus metrics on (port 0: any free one); None: no endpoint.
    metrics_address: str | None = None
    source: str | None = None  # the file the values came from

    def admission(self) -> Any:
        """The overload settings, as the runtime's nodes take them."""
        from ._runtime.admission import Admission

        return Admission(
            self.mailbox_limit,
            self.shed_policy,
            self.sojourn_target,
            self.sojourn_interval,
            self.backlog_limit,
            self.fair_queueing,
        )

    def merged(self, **overrides: Any) -> Config:
        """A copy with every override that is not None applied (flags win over the file)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        for key in clean:
            if key not in _KEYS:
                raise ConfigError(f"unknown option {key!r}; known: {', '.join(sorted(_KEYS))}")
        out = replace(self, **{k: _coerce(k, v, "argument") for k, v in clean.items()})
        return out


_KEYS = {f.name for f in fields(Config)} - {"source"}
_LEVELS = ("debug", "info", "warning", "error", "critical")


def parse_cpus(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``"0-3,6"`` or ``[0, 1]`` -> sorted unique CPU numbers (the kernel's list
    syntax, read by ``topology.cpulist``)."""
    if isinstance(text, list | tuple):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in text):
            raise ConfigError(f"cpus: {text!r} must be non-negative integers")
        return tuple(sorted(set(text)))
    try:
        cpus = parse_cpulist(str(text))
    except ValueError as exc:
        raise ConfigError(f"cpus: cannot read {text!r} ({exc}); write a list like 0-3,6") from None
    if not cpus:
        raise ConfigError(f"cpus: {text!r} names no CPU")
    return tuple(sorted(cpus))


def parse_host_port(value: Any, where: str) -> str:
    """``"127.0.0.1:9464"`` (or ``"[::1]:9464"``, ``":9464"`` for every address),
    checked: a ConfigError naming what is wrong."""
    if isinstance(value, str):
        _host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and 0 <= int(port) <= 65535:
            return value
    raise ConfigError(
        f"{where}: metrics_address = {value!r} must be HOST:PORT, e.g. 127.0.0.1:9464"
    )


def _coerce(key: str, value: Any, where: str) -> Any:
    def bad(expect: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {value!r} must be {expect}")

    if key == "workers":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if key == "cpus":
        return parse_cpus(value)
    if key == "log_level":
        if not isinstance(value, str) or value.lower() not in _LEVELS:
            raise bad(f"one of {', '.join(_LEVELS)}")
        return value.lower()
    if key == "runtime_dir":
        if not isinstance(value, str | os.PathLike):
            raise bad("a directory path")
        return str(value)
    if key == "restart":
        if value not in ("on-crash", "never"):
            raise bad('"on-crash" or "never"')
        return value
    if key in ("explain", "fair_queueing", "metrics"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "name":
        from ._runtime.rundir import check_name

        return check_name(value)
    if key == "metrics_address":
        return parse_host_port(value, where)
    if key == "stall_action":
        if value not in ("restart", "report"):
            raise bad('"restart" or "report"')
        return value
    if key in ("mailbox_limit", "backlog_limit"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if key == "shed_policy":
        if value not in SHED_POLICIES:
            raise bad(" or ".join(f'"{p}"' for p in SHED_POLICIES))
        return value
    if key in ("sojourn_target", "sojourn_interval"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise bad("a positive number of seconds")
        return float(value)
    if key == "restart_intensity":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a non-negative integer")
        return value
    if key in ("stop_timeout", "stall_timeout", "restart_period"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise bad("a positive number of seconds")
        return float(value)
    if key == "ask_timeout":
        if value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
            raise bad("a positive number of seconds, or false for no default deadline")
        return float(value)
    if key == "ring_capacity":
        if isinstance(value, bool) or not isinstance(value, int) or value < 4096:
            raise bad("an integer number of bytes >= 4096")
        return value
    raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(_KEYS))}")


def _from_table(table: dict[str, Any], where: str) -> Config:
    values = {key: _coerce(key, value, where) for key, value in table.items()}
    return Config(**values, source=where)


def load_config(
    path: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] = "."
) -> Config:
    """Read the configuration: ``path`` if given, else ``actorq.toml`` or
    ``[tool.actorq]`` of ``pyproject.toml`` in ``cwd``; defaults if neither exists."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        candidates = [p]
    else:
        base = Path(cwd)
        candidates = [c for c in (base / "actorq.toml", base / "pyproject.toml") if c.is_file()]
    for p in candidates:
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        if p.name == "pyproject.toml":
            table = data.get("tool", {}).get("actorq")
            if table is None:
                if path is not None:
                    raise ConfigError(f"{p}: has no [tool.actorq] table")
                continue
            return _from_table(table, f"{p} [tool.actorq]")
        return _from_table(data, str(p))
    return Config()
