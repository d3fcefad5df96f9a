"""``actorq run`` with bad targets: one line on stderr, exit code 2, nothing started."""

from __future__ import annotations

import pytest
from _runtime_helpers import run_app, write_app


@pytest.mark.parametrize(
    ("source", "target", "expect"),
    [
        (None, "nosuchmodule_xyz:main", "no module named 'nosuchmodule_xyz'"),
        ("async def main(rt):\n    pass\n", "app:mian", "has no attribute 'mian'"),
        ("def main(rt):\n    pass\n", "app:main", "must be an async function"),
        ("async def main():\n    pass\n", "app:main", "exactly one argument"),
        ("main = 3\n", "app:main", "not callable"),
        ("async def main(rt):\n    pass\n", ":main", "MODULE:ATTR"),
    ],
)
def test_bad_target(tmp_path, no_leaks, source, target, expect) -> None:
    if source is not None:
        write_app(tmp_path, source)
    proc = run_app(tmp_path, target)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0]
    assert lines[0].startswith("actorq run: ")


def test_bad_config_is_exit_2(tmp_path, no_leaks) -> None:
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    (tmp_path / "actorq.toml").write_text("wokers = 2\n")
    proc = run_app(tmp_path, "app:main")
    assert proc.returncode == 2
    assert "wokers" in proc.stderr


def test_cpus_outside_the_affinity_mask(tmp_path, no_leaks) -> None:
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    proc = run_app(tmp_path, "app:main", "--cpus", "4095")
    assert proc.returncode == 2
    assert "4095" in proc.stderr


def test_attr_defaults_to_main_and_config_is_read(tmp_path, no_leaks) -> None:
    write_app(tmp_path, "async def main(rt):\n    print('workers', len(rt.workers))\n")
    (tmp_path / "pyproject.toml").write_text("[tool.actorq]\nworkers = 1\n")
    proc = run_app(tmp_path, "app")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "workers 1"


def test_explain_logs_each_placement_and_its_reason(tmp_path, no_leaks) -> None:
    write_app(
        tmp_path,
        """
        import actorq

        @actorq.actor
        class A:
            def ping(self):
                return 1

        async def main(rt):
            a = await rt.spawn(A, name="first")
            b = await rt.spawn(A, cpu=rt.workers[-1])
            await a.ping()
            await b.ping()
    """,
    )
    proc = run_app(tmp_path, "app:main", "--workers", "2", "--explain")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "actorq.placement" in ln]
    assert len(lines) == 2, proc.stderr
    assert "place first on worker" in lines[0]
    assert "cpu=" in lines[1] or "pinned" in lines[1]


def test_runtime_dir_too_long_for_a_unix_socket(tmp_path, no_leaks) -> None:
    write_app(tmp_path, "async def main(rt):\n    pass\n")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    from _runtime_helpers import run_python

    proc = run_python("-m", "actorq", "run", "app:main", "--runtime-dir", str(deep), cwd=tmp_path)
    assert proc.returncode == 2
    assert "too long" in proc.stderr


def test_too_few_file_descriptors_for_the_rings_is_said_up_front(tmp_path, no_leaks) -> None:
    import resource

    from _runtime_helpers import actorq_cmd, run_cmd

    write_app(tmp_path, "async def main(rt):\n    pass\n")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    proc = run_cmd(
        actorq_cmd(tmp_path, "app:main", "--workers", "40"), cwd=tmp_path, preexec_fn=low_limit
    )
    assert proc.returncode == 2, proc.stderr
    assert "file descriptors" in proc.stderr
    assert "at most 15 workers" in proc.stderr  # a few fds per worker, none per pair
