"""Shared memory segments: memfd-backed, mapped by every side, optionally NUMA-bound.

Why memfd and not ``/dev/shm`` or ``multiprocessing.shared_memory``: a memfd has
no name in any filesystem, so nothing can leak when a process dies; the memory
vanishes with its last fd and its last mapping. It travels to another process
by fork inheritance or ``socket.send_fds`` (pass ``socket.MSG_CMSG_CLOEXEC`` to
``recv_fds``). ``multiprocessing.shared_memory`` would bring its resource
tracker, which unlinks segments when an unrelated interpreter exits and
unblocks SIGINT/SIGTERM in the thread that starts it.

NUMA: ``Segment.create(..., node=N)`` applies a *bind* policy to the mapping
before any page is touched (``numa_tonode_memory`` through py-libnuma's libnuma
handle), then populates the pages so they are allocated on node N now rather
than on the first record's hot path. memfd memory is shmem, so the policy is
the file's shared policy: every process that maps it gets pages from node N.
The node is validated against ``/sys/devices/system/node`` and
``numa_max_node()`` first: libnuma crashes the interpreter (or only prints to
stderr) when handed a node that does not exist. Without libnuma the segment
works unbound and a warning says so, once per process.

Ownership: a Segment owns its fd and mapping; ``close()`` releases both.
``from_fd`` takes ownership of the fd it is given.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import mmap
import os
from pathlib import Path

__all__ = ["Segment", "numa_nodes"]

log = logging.getLogger("actorq.shm")

PAGE = mmap.PAGESIZE
_MADV_POPULATE_WRITE = 23  # Linux 5.14; not exported by Python 3.11
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL

_libnuma_state: list[ctypes.CDLL | None] = []  # [] unknown, [None] unusable, [handle] usable
_warned_unbound = False


def numa_nodes(sysfs: str = "/sys/devices/system/node") -> list[int]:
    """The NUMA nodes that exist (have a sysfs directory); [0] where sysfs shows none."""
    try:
        nodes = sorted(
            int(p.name[4:])
            for p in Path(sysfs).iterdir()
            if p.name.startswith("node") and p.name[4:].isdigit()
        )
    except OSError:
        nodes = []
    return nodes or [0]


def _parse_list(text: str) -> set[int]:
    """A kernel list such as "0-2,5" as a set of ints."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def nodes_with_memory(sysfs: str = "/sys/devices/system/node") -> set[int] | None:
    """Nodes that have memory (binding to a memoryless node would SIGBUS on
    first touch); None when sysfs does not say."""
    try:
        with open(f"{sysfs}/has_memory") as f:
            return _parse_list(f.read())
    except (OSError, ValueError):
        return None


def _libnuma() -> ctypes.CDLL | None:
    """py-libnuma's ctypes handle to libnuma.so, or None when NUMA is not usable."""
    if not _libnuma_state:
        handle = None
        try:
            import numa  # py-libnuma: a thin ctypes layer; its LIBNUMA is the CDLL

            lib = numa.LIBNUMA
            lib.numa_available.restype = ctypes.c_int
            if lib.numa_available() >= 0:
                lib.numa_max_node.restype = ctypes.c_int
                lib.numa_tonode_memory.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                lib.numa_tonode_memory.restype = None
                handle = lib
        except (ImportError, OSError, AttributeError) as exc:
            log.debug("libnuma not usable: %s", exc)
        _libnuma_state.append(handle)
    return _libnuma_state[0]


def _warn_unbound(node: int, why: str) -> None:
    global _warned_unbound
    if not _warned_unbound:
        _warned_unbound = True
        log.warning(
            "shared memory is NOT bound to NUMA node %d (%s); segments work unbound. "
            "Install libnuma (libnuma1) and py-libnuma to bind them.",
            node,
            why,
        )


def _address(mm: mmap.mmap) -> int:
    """Start address of a mapping (the ctypes export is dropped at once)."""
    view = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(view)
    finally:
        del view


class Segment:
    """A memfd mapped shared (``MAP_SHARED``) into this process.

    ``buf`` is a writable memoryview of the whole mapping. Sizes are rounded
    up to whole pages. The size is sealed (``F_SEAL_SHRINK|F_SEAL_GROW``) so a
    peer cannot truncate the file under our mapping (which would SIGBUS).
    """

    __slots__ = ("_mm", "address", "buf", "fd", "name", "node", "size")

    def __init__(self, fd: int, mm: mmap.mmap, size: int, name: str, node: int | None) -> None:
        self.fd = fd
        self.size = size
        self.name = name
        self.node = node
        self._mm: mmap.mmap | None = mm
        self.buf = memoryview(mm)
        self.address = _address(mm)

    # -- creation ---------------------------------------------------------------
    @classmethod
    def create(
        cls, size: int, *, name: str = "actorq", node: int | None = None, populate: bool = True
    ) -> Segment:
        """A new zero-filled segment of at least ``size`` bytes.

        ``node``: bind the memory to this NUMA node before first touch (raises
        ValueError naming the nodes that exist if it is not one of them).
        ``populate``: allocate every page now (False: on first touch, for
        large, sparsely used areas such as inboxes and slabs; such a mapping
        is also kept off transparent huge pages).
        """
        if size <= 0:
            raise ValueError(f"segment size must be positive, not {size}")
        if node is not None:
            existing = numa_nodes()
            if node not in existing:
                raise ValueError(
                    f"NUMA node {node} does not exist on this machine; nodes are {existing}"
                )
            with_memory = nodes_with_memory()
            if with_memory is not None and node not in with_memory:
                raise ValueError(
                    f"NUMA node {node} has no memory (nodes with memory: {sorted(with_memory)}); "
                    "bind to one of those, e.g. the nearest by numa distance"
                )
        size = -(-size // PAGE) * PAGE
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            bound = node is not None and cls._can_bind(node)
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate and not bound else 0)
            mm = mmap.mmap(fd, size, flags=flags)
        except BaseException:
            os.close(fd)
            raise
        if not populate:
            # Sparse means sparse: where shmem transparent huge pages are on
            # ("always"/"within_size"), one touched byte would allocate 2 MiB.
            # The flag stays with the mapping across fork.
            try:
                mm.madvise(mmap.MADV_NOHUGEPAGE)
            except (AttributeError, OSError):
                pass
        seg = cls(fd, mm, size, name, node if bound else None)
        if bound and node is not None:
            try:
                seg._bind(node, populate)
            except BaseException:
                seg.close()
                raise
        return seg

    @classmethod
    def from_fd(cls, fd: int, size: int | None = None) -> Segment:
        """Map a segment received from another process; takes ownership of ``fd``.

        ``size`` defaults to the file's size (fstat)."""
        real = os.fstat(fd).st_size
        if size is None:
            size = real
        if size <= 0 or size > real:
            raise ValueError(f"fd {fd}: cannot map {size} bytes of a {real}-byte segment")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}").removeprefix("/memfd:").split(" ")[0]
        except OSError:
            name = f"fd{fd}"
        return cls(fd, mm, size, name, None)

    @staticmethod
    def _can_bind(node: int) -> bool:
        lib = _libnuma()
        if lib is None:
            _warn_unbound(node, "libnuma is not available")
            return False
        max_node = lib.numa_max_node()
        if node > max_node:
            raise ValueError(f"NUMA node {node} is beyond libnuma's numa_max_node() = {max_node}")
        return True

    def _bind(self, node: int, populate: bool) -> None:
        lib = _libnuma()
        assert lib is not None  # create() binds only after _can_bind() found it
        lib.numa_tonode_memory(self.address, self.size, node)
        assert self._mm is not None
        if not populate:
            return
        try:
            self._mm.madvise(_MADV_POPULATE_WRITE)
        except OSError:  # kernel before 5.14: touch one byte per page instead
            buf = self.buf
            for off in range(0, self.size, PAGE):
                buf[off] = 0

    @property
    def mmap(self) -> mmap.mmap:
        """The mmap object itself: slicing it copies straight to or from bytes
        without an intermediate memoryview (the rings' per-record path)."""
        if self._mm is None:
            raise ValueError(f"segment {self.name!r} is closed")
        return self._mm

    # -- introspection ------------------------------------------------------------
    def numa_maps(self) -> str | None:
        """This mapping's line in /proc/self/numa_maps (policy and pages per node)."""
        prefix = f"{self.address:x} "
        try:
            with open("/proc/self/numa_maps") as f:
                for line in f:
                    if line.startswith(prefix):
                        return line.strip()
        except OSError:
            return None
        return None

    # -- teardown -----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Unmap and close the fd. Idempotent.

        If a memoryview into the segment is still alive elsewhere, the mapping
        cannot be unmapped now; it is then unmapped when the last such view is
        garbage-collected (the fd is closed at once either way)."""
        mm, self._mm = self._mm, None
        if mm is None:
            return
        try:
            self.buf.release()
        except BufferError:  # someone holds a buffer export of `buf` itself
            log.debug("segment %s: buf still exported; unmapping when it is freed", self.name)
        try:
            mm.close()
        except BufferError:
            log.debug("segment %s: views still alive; unmapping when they are freed", self.name)
        self.close_fd()

    def close_fd(self) -> None:
        """Close the memfd descriptor but keep the mapping (the memory lives on
        while it is mapped): for a process that will never pass this segment
        on, so it does not hold one fd per segment. Idempotent."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mm is None else f"fd={self.fd}"
        return f"<Segment {self.name!r} {self.size} bytes {state} node={self.node}>"
