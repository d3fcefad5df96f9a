"""Direct channels: an outside process's own pair of rings to a worker.

A web worker, a ``multiprocessing.Pool`` worker or a script that calls
actors through ``actorq.connect`` would otherwise send every ask through the
supervisor's ZeroMQ socket: two more hops and two more processes' CPU per
call. Instead each client process opens, per worker it talks to, a channel
of its own:

1. It asks the supervisor (control op ``channel``) for a *ticket*: a client
   number, unique in this runtime, and an HMAC of it under the worker's
   secret identity (``control.trusted_identity``). Only the supervisor can
   make one, so a process that can reach the unix socket but was never let
   in through the control plane cannot open a channel.
2. It makes two standalone rings (``shm/ring.py``), client->worker and
   worker->client, and passes their memfds and eventfds with the ticket over
   the worker's ``SOCK_SEQPACKET`` socket ``<runtime dir>/w<N>.chan``
   (``socket.send_fds``, SCM_RIGHTS).
3. The worker checks the ticket, attaches the rings, watches the inbound
   ring's doorbell in its own loop and answers ``[PROTOCOL, "ok", sender]``.

From then on an ask is an ASK record (the same bytes a worker sends to
another worker) in the client's ring, and its REPLY or FAIL comes back in
the other ring: no process in between. The channel is *sender*
``OUTSIDE_BASE + client`` to the worker's ``Node``: its records are
delivered as a peer node's are, replies addressed to that sender come back
here (``Listener.send``), and the mailbox's fair queueing sees each client as
a sender of its own. Only ASK, TELL and STOP records are taken from a
client; anything else (a forged REPLY, garbage) closes its channel.

Lifetime: the unix socket stays open beside the rings and carries nothing
more. When the client closes it or its process dies, the worker sees end of
file and frees the channel (replies still owed to it are dropped and
counted). When the worker dies, the client sees end of file and fails the
asks it waits on with ``ActorDied``. A reply the client does not read is
bounded: past ``BACKLOG_LIMIT`` queued replies the client is taken for stuck
and its channel is closed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _codec
from ..errors import PayloadTooLarge, RingFull
from ..shm.doorbell import Spinner
from ..shm.ring import Ring, RingReader, RingWriter
from .board import TAKEN

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("actorq.worker")

PROTOCOL = 1
OUTSIDE_BASE = 1 << 24  # sender ids from here up are outside channels, never nodes
CHANNEL_BYTES = 1 << 18  # each ring's capacity: a record may be up to half of it
FDS_PER_RING = 3  # ring memfd, doorbell eventfd, space eventfd
BACKLOG_LIMIT = 65536  # replies queued for a client that does not read them
MAX_CHANNELS = 4096  # open channels per worker (each maps 2 x CHANNEL_BYTES, holds 6 fds)
_BUDGET = 256  # records per drain before the loop's other work gets a turn
_ACCEPTED = (_codec.ASK, _codec.TELL, _codec.STOP)


def channel_path(runtime_dir: str | os.PathLike[str], worker: int) -> Path:
    """Where worker ``worker`` listens for direct channels."""
    return Path(runtime_dir) / f"w{worker}.chan"


def ticket(identity: bytes, client: int) -> bytes:
    """What entitles client number ``client`` to a channel to the worker whose
    control identity is ``identity`` (secret-derived: only the runtime has it)."""
    return hmac.new(identity, b"outside-channel %d" % client, hashlib.sha256).digest()


def _decode_request(record: bytes) -> list[Any] | None:
    """An ASK, TELL or STOP record (a msgpack fixarray whose first item is its
    kind), decoded; None for anything else, or a record that does not decode."""
    if not (len(record) > 1 and record[0] & 0xF0 == 0x90 and record[1] in _ACCEPTED):
        return None
    try:
        msg = _codec.unpack(record)
    except Exception:
        return None
    return msg if isinstance(msg, list) else None


class Channel:
    """The worker's end of one client's channel."""

    def __init__(
        self,
        listener: Listener,
        sender: int,
        conn: socket.socket,
        inbound: Ring,
        outbound: Ring,
    ) -> None:
        self.listener = listener
        self.sender = sender
        self.conn = conn
        self.inbound, self.outbound = inbound, outbound
        self.reader: RingReader = inbound.reader()
        self.writer: RingWriter = outbound.writer()
        self.backlog: collections.deque[bytes] = collections.deque()
        self.draining = False
        self.dirty = False
        self._again = False
        self._batch: list[bytes] = []
        self.closed = False

    def start(self) -> None:
        loop = self.listener.loop
        loop.add_reader(self.reader.doorbell_fd, self._doorbell)
        loop.add_reader(self.conn, self._conn_readable)
        self._drain()  # records may have come before we watched the doorbell

    # --- inbound ------------------------------------------------------------------
    def _doorbell(self) -> None:
        self.reader.wake_up()
        self._drain()

    def _drain(self) -> None:
        self._again = False
        if self.closed:
            return
        node = self.listener.node
        batch = self._batch
        try:
            self.reader.drain(batch.append, _BUDGET)
        except Exception as exc:  # a corrupt ring: this client's problem only
            log.warning("outside channel %d: %s; closing it", self.sender - OUTSIDE_BASE, exc)
            self.close()
            return
        if batch:
            self._batch = []
            node.board[TAKEN] += len(batch)
            self.draining = True
            try:
                for record in batch:
                    msg = _decode_request(record)
                    if msg is not None:
                        node.deliver(self.sender, [msg])  # one message per record here
                    else:
                        node.board[TAKEN] -= 1  # never handed to the node: not lost either
                        self.listener.refused += 1
                        log.warning(
                            "outside channel %d sent a record that is not an ask, tell "
                            "or stop; closing it",
                            self.sender - OUTSIDE_BASE,
                        )
                        self.close()
                        return
            finally:
                self.draining = False
                if self.dirty:
                    self.dirty = False
                    self.writer.publish()
        if self.reader.pending() or not self.reader.prepare_sleep():
            self.queue_drain()  # more came: after the loop's other ready work
        elif batch:
            self.listener.expect(self)

    def queue_drain(self) -> None:
        if not self._again:
            self._again = True
            self.listener.loop.call_soon(self._drain)

    def _conn_readable(self) -> None:
        """Nothing more travels on the socket: readable means closed (or a
        misbehaving client); either way the channel ends."""
        try:
            data = self.conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            log.warning(
                "outside channel %d: unexpected data on its socket; closing it",
                self.sender - OUTSIDE_BASE,
            )
        self.close()

    # --- outbound -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """A reply (or failure, or slow-down notice) for this client."""
        if self.backlog:
            self._queue(data)
            return
        try:
            if self.draining:
                self.writer.write(data)
                self.dirty = True
            else:
                self.writer.send_nowait(data)
        except RingFull:
            self._queue(data)
            self._park()

    def _queue(self, data: bytes) -> None:
        if len(self.backlog) >= BACKLOG_LIMIT:
            self.listener.dropped += len(self.backlog) + 1
            log.warning(
                "outside channel %d: %d replies not read by the client; closing its channel",
                self.sender - OUTSIDE_BASE,
                len(self.backlog),
            )
            self.close()
            return
        self.backlog.append(data)

    def _park(self) -> None:
        w = self.writer
        self.dirty = False
        self.listener.loop.add_reader(w.space_fd, self._space)
        if w.wait_for_space(len(self.backlog[0])):
            self.listener.loop.call_soon(self._space)

    def _space(self) -> None:
        if self.closed:
            return
        w, q = self.writer, self.backlog
        while q:
            try:
                w.write(q[0])
            except RingFull:
                w.publish()
                if w.wait_for_space(len(q[0])):
                    continue
                return  # still armed: the client rings space_fd when it has read
            except PayloadTooLarge:  # cannot be: send() checked the size of it
                self.listener.dropped += 1
            q.popleft()
        w.publish()
        self.listener.loop.remove_reader(w.space_fd)

    # --- end ------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.listener.loop
        if not loop.is_closed():
            loop.remove_reader(self.reader.doorbell_fd)
            loop.remove_reader(self.writer.space_fd)
            loop.remove_reader(self.conn)
        self.listener.dropped += len(self.backlog)
        self.backlog.clear()
        self.listener.channels.pop(self.sender, None)
        self.conn.close()
        self.inbound.close()
        self.outbound.close()


class Listener:
    """A worker's direct-channel socket and the channels it opened."""

    def __init__(self, node: Node, runtime_dir: str | os.PathLike[str], identity: bytes) -> None:
        self.node = node
        self.loop = node.loop
        self.identity = identity
        self.path = channel_path(runtime_dir, node.index)
        self.channels: dict[int, Channel] = {}
        self.opened = 0
        self.refused = 0  # bad tickets, bad hellos, records that are not requests
        self.dropped = 0  # replies for channels that were gone or stuck
        try:
            self.path.unlink()  # a dead predecessor's socket
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self._accept)
        self._expecting: dict[Channel, None] = {}  # answered records since the last sleep
        self._spinner = Spinner()
        self._remove_hooks = [self.loop.before_sleep(self._before_sleep)]

    def expect(self, channel: Channel) -> None:
        """``channel`` just answered records: its client may well ask again at once."""
        self._expecting[channel] = None

    def _before_sleep(self) -> None:
        """The worker is about to block: spin on the channels that were just
        busy (once per answered drain, a full ``Spinner.max_s``, as the mesh's
        port does: a client needs a wake-up and some µs of Python before it
        asks again, longer than a decayed adaptive budget), with their sleep
        announcement withdrawn so a client that asks meanwhile rings no
        doorbell; then announce them asleep again. A worker whose loop never
        blocks never gets here, and its channels stay announced: their
        clients' doorbells reach it as events."""
        if not self._expecting:
            return
        channels = [c for c in self._expecting if not c.closed]
        self._expecting = {}
        if not channels:
            return
        readers = [c.reader for c in channels]
        for r in readers:
            r.wake_up()
        spinner = self._spinner
        spinner.budget = spinner.max_s
        spinner.spin(lambda: any(r.pending() for r in readers))
        for channel in channels:
            if channel.reader.pending() or not channel.reader.prepare_sleep():
                channel.queue_drain()

    def send(self, sender: int, data: bytes) -> None:
        """What the node calls for a record addressed to an outside sender."""
        channel = self.channels.get(sender)
        if channel is None:
            self.dropped += 1  # its client closed or died: nobody waits for it
            return
        if len(data) > channel.writer.ring.max_record:
            raise PayloadTooLarge(
                f"{len(data)} bytes do not fit the direct channel to an outside client "
                f"(at most {channel.writer.ring.max_record}); return less, or have the "
                "client connect with direct=False"
            )
        channel.send(data)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and kin: refuse this one, keep serving
                log.warning("outside channels: accept failed: %s", exc)
                return
            conn.setblocking(False)
            self.loop.add_reader(conn, self._hello, conn)

    def _hello(self, conn: socket.socket) -> None:
        self.loop.remove_reader(conn)
        fds: list[int] = []
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 2 * FDS_PER_RING, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            self.loop.add_reader(conn, self._hello, conn)
            return
        except OSError:
            conn.close()
            return
        try:
            channel = self._open(conn, msg, fds)
        except ValueError as exc:
            self.refused += 1
            for fd in fds:
                os.close(fd)
            log.warning("outside channels: refused a client: %s", exc)
            try:
                conn.send(_codec.pack([PROTOCOL, "err", str(exc)]))
            except OSError:
                pass
            conn.close()
            return
        self.opened += 1
        self.channels[channel.sender] = channel
        conn.send(_codec.pack([PROTOCOL, "ok", channel.sender]))
        channel.start()

    def _open(self, conn: socket.socket, msg: bytes, fds: list[int]) -> Channel:
        try:
            version, client, proof, _pid = _codec.unpack(msg)
        except Exception:
            raise ValueError("its hello is not [version, client, ticket, pid]") from None
        if version != PROTOCOL:
            raise ValueError(f"it speaks channel protocol {version!r}; this worker {PROTOCOL}")
        if not isinstance(client, int) or not isinstance(proof, bytes) or client <= 0:
            raise ValueError("its hello has no valid client number and ticket")
        if not hmac.compare_digest(proof, ticket(self.identity, client)):
            raise ValueError(f"client {client}'s ticket is not this runtime's")
        if len(fds) != 2 * FDS_PER_RING:
            raise ValueError(f"it passed {len(fds)} fds, not {2 * FDS_PER_RING}")
        sender = OUTSIDE_BASE + client
        if len(self.channels) >= MAX_CHANNELS and sender not in self.channels:
            raise ValueError(
                f"this worker has {len(self.channels)} direct channels open already (at most "
                f"{MAX_CHANNELS}); close clients that are done, or connect with direct=False"
            )
        old = self.channels.get(sender)
        if old is not None:
            old.close()  # the same ticket again: the newer channel wins
        try:
            inbound = Ring.attach(*fds[:FDS_PER_RING])
        except Exception as exc:
            for fd in fds[1:]:  # attach closed the ring's memfd, not its eventfds
                os.close(fd)
            fds.clear()
            raise ValueError(f"its first ring is not usable: {exc}") from None
        try:
            outbound = Ring.attach(*fds[FDS_PER_RING:])
        except Exception as exc:
            inbound.close()
            for fd in fds[FDS_PER_RING + 1 :]:
                os.close(fd)
            fds.clear()
            raise ValueError(f"its second ring is not usable: {exc}") from None
        fds.clear()  # the rings own them now
        return Channel(self, sender, conn, inbound, outbound)

    def stats(self) -> dict[str, int]:
        return {
            "open": len(self.channels),
            "opened": self.opened,
            "refused": self.refused,
            "dropped": self.dropped,
        }

    def close(self) -> None:
        for channel in list(self.channels.values()):
            channel.close()
        for remove in self._remove_hooks:
            remove()
        if not self.loop.is_closed():
            self.loop.remove_reader(self.sock)
        self.sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass
