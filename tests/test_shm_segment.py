"""Segments: memfd-backed, shared across processes, NUMA-bound, leaving nothing behind."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from actorq.shm import Segment, numa_nodes
from actorq.shm import segment as segmod


def memfd_maps(tag: str = "/memfd:actorq") -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if tag in line]


def test_segment_is_an_unnamed_memfd_shared_with_a_child(no_leaks: None) -> None:
    before = memfd_maps()
    seg = Segment.create(10_000, name="actorq-segtest")
    assert seg.size % os.sysconf("SC_PAGE_SIZE") == 0
    assert seg.size >= 10_000
    assert os.readlink(f"/proc/self/fd/{seg.fd}").startswith("/memfd:actorq-segtest")
    assert not [n for n in os.listdir("/dev/shm") if "segtest" in n]
    seg.buf[:5] = b"hello"
    pid = os.fork()
    if pid == 0:  # child: sees the parent's bytes, writes its own
        ok = bytes(seg.buf[:5]) == b"hello"
        seg.buf[100:105] = b"world"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert bytes(seg.buf[100:105]) == b"world"
    assert len(memfd_maps()) == len(before) + 1
    seg.close()
    seg.close()  # idempotent
    assert memfd_maps() == before


def test_segment_travels_by_send_fds_to_an_unrelated_interpreter(no_leaks: None) -> None:
    seg = Segment.create(4096, name="actorq-sendfds")
    seg.buf[:3] = b"abc"
    parent, child = socket.socketpair()
    code = textwrap.dedent(
        """
        import socket, sys
        from actorq.shm import Segment
        s = socket.socket(fileno=int(sys.argv[1]))
        _, fds, _, _ = socket.recv_fds(s, 16, 1, socket.MSG_CMSG_CLOEXEC)
        seg = Segment.from_fd(fds[0])
        assert bytes(seg.buf[:3]) == b"abc"
        seg.buf[3:6] = b"xyz"
        seg.close()
        s.send(b"done")
        """
    )
    with parent, child:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(child.fileno())], pass_fds=[child.fileno()]
        )
        try:
            socket.send_fds(parent, [b"seg"], [seg.fd])
            parent.settimeout(30)
            assert parent.recv(4) == b"done"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            seg_ok = bytes(seg.buf[:6])
            seg.close()
    assert seg_ok == b"abcxyz"


def test_segment_size_is_sealed() -> None:
    with Segment.create(4096) as seg, pytest.raises(PermissionError):
        os.ftruncate(seg.fd, 8192)


def test_close_with_a_live_view_defers_the_unmap(no_leaks: None) -> None:
    before = memfd_maps()
    seg = Segment.create(4096, name="actorq-liveview")
    view = seg.buf[10:20]
    seg.close()  # fd closed now; mapping stays while `view` lives
    assert len(memfd_maps()) == len(before) + 1
    view[0] = 1  # still valid memory
    del view
    assert memfd_maps() == before


def test_numa_binding_is_visible_in_numa_maps(no_leaks: None) -> None:
    node = numa_nodes()[0]
    if segmod._libnuma() is None:
        pytest.skip("libnuma not available here")
    with Segment.create(64 * 1024, name="actorq-numa", node=node) as seg:
        assert seg.node == node
        line = seg.numa_maps()
        assert line is not None, "mapping not found in /proc/self/numa_maps"
        assert f"bind:{node}" in line, line
        pages = seg.size // os.sysconf("SC_PAGE_SIZE")
        assert f"N{node}={pages}" in line, line  # populated on the bound node


def test_unbound_segment_has_default_policy() -> None:
    with Segment.create(4096) as seg:
        line = seg.numa_maps()
        assert line is not None
        assert "bind:" not in line


def test_nonexistent_numa_node_is_refused_before_libnuma_sees_it() -> None:
    bad = max(numa_nodes()) + 7
    with pytest.raises(ValueError, match=f"NUMA node {bad} does not exist"):
        Segment.create(4096, node=bad)
    with pytest.raises(ValueError, match="does not exist"):
        Segment.create(4096, node=-1)


def test_without_libnuma_it_works_unbound_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(segmod, "_libnuma_state", [None])
    monkeypatch.setattr(segmod, "_warned_unbound", False)
    with caplog.at_level(logging.WARNING, logger="actorq.shm"):
        for _ in range(3):
            with Segment.create(4096, node=numa_nodes()[0]) as seg:
                assert seg.node is None
                seg.buf[0] = 1
    warnings = [r for r in caplog.records if "NOT bound" in r.getMessage()]
    assert len(warnings) == 1


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Segment.create(0)
    with Segment.create(4096) as seg:
        fd = os.dup(seg.fd)
        with pytest.raises(ValueError, match="cannot map"):
            Segment.from_fd(fd, 1 << 20)
        os.close(fd)


def test_kernel_lists_parse_and_memoryless_nodes_are_known() -> None:
    assert segmod._parse_list("0-2,5,7-8\n") == {0, 1, 2, 5, 7, 8}
    assert segmod._parse_list("") == set()
    with_memory = segmod.nodes_with_memory()
    if with_memory is not None:
        assert with_memory <= set(numa_nodes())
        assert with_memory


def test_a_memoryless_node_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    node = numa_nodes()[0]
    monkeypatch.setattr(segmod, "nodes_with_memory", lambda: {node + 1})  # as on CXL/HBM boxes
    with pytest.raises(ValueError, match=f"NUMA node {node} has no memory"):
        Segment.create(4096, node=node)
