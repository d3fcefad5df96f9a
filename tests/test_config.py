"""load_config: actorq.toml, [tool.actorq], flags over file, errors that name the key."""

from __future__ import annotations

import pytest

from actorq.config import Config, load_config, parse_cpus
from actorq.errors import ConfigError


def test_defaults_when_no_file(tmp_path) -> None:
    cfg = load_config(cwd=tmp_path)
    assert cfg == Config()
    assert cfg.workers is None
    assert cfg.stop_timeout == 5.0


def test_actorq_toml(tmp_path) -> None:
    (tmp_path / "actorq.toml").write_text(
        'workers = 3\ncpus = "0-2,5"\nlog_level = "INFO"\nexplain = true\nstop_timeout = 2\n'
    )
    cfg = load_config(cwd=tmp_path)
    assert cfg.workers == 3
    assert cfg.cpus == (0, 1, 2, 5)
    assert cfg.log_level == "info"
    assert cfg.explain is True
    assert cfg.stop_timeout == 2.0
    assert cfg.source is not None
    assert cfg.source.endswith("actorq.toml")


def test_pyproject_tool_table(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\n[tool.actorq]\nworkers = 2\n')
    assert load_config(cwd=tmp_path).workers == 2


def test_pyproject_without_table_is_defaults(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\n')
    assert load_config(cwd=tmp_path) == Config()


def test_actorq_toml_wins_over_pyproject(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.actorq]\nworkers = 2\n")
    (tmp_path / "actorq.toml").write_text("workers = 4\n")
    assert load_config(cwd=tmp_path).workers == 4


def test_flags_win(tmp_path) -> None:
    (tmp_path / "actorq.toml").write_text("workers = 4\nlog_level = 'debug'\n")
    cfg = load_config(cwd=tmp_path).merged(workers=1, log_level=None, cpus="0")
    assert cfg.workers == 1
    assert cfg.log_level == "debug"
    assert cfg.cpus == (0,)


def test_unknown_key_names_key_and_file(tmp_path) -> None:
    (tmp_path / "actorq.toml").write_text("wokers = 4\n")
    with pytest.raises(ConfigError, match="wokers") as info:
        load_config(cwd=tmp_path)
    assert "actorq.toml" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("workers = 0", "workers"),
        ("workers = true", "workers"),
        ("cpus = '3-1'", "cpus"),
        ("cpus = 'x'", "cpus"),
        ("log_level = 'loud'", "log_level"),
        ("explain = 'yes'", "explain"),
        ("stop_timeout = -1", "stop_timeout"),
        ("restart = 'maybe'", "restart"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key) -> None:
    (tmp_path / "actorq.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=key):
        load_config(cwd=tmp_path)


def test_explicit_path_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_not_toml(tmp_path) -> None:
    p = tmp_path / "actorq.toml"
    p.write_text("workers = = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_merged_rejects_unknown_option() -> None:
    with pytest.raises(ConfigError, match="colour"):
        Config().merged(colour="red")


def test_parse_cpus() -> None:
    assert parse_cpus("0-3,6") == (0, 1, 2, 3, 6)
    assert parse_cpus([3, 1, 1]) == (1, 3)
    with pytest.raises(ConfigError):
        parse_cpus("")
