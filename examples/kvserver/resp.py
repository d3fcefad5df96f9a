"""RESP2, the Redis wire protocol: an incremental request parser, a general
value decoder, and an encoder. Pure functions over bytes; no sockets.

Why two parsers: a server only ever receives *requests* (an array of bulk
strings, or an "inline" line typed by a human in telnet), and parsing those
is the hot path at pipeline depth 16, so :class:`RequestParser` handles just
that, with ``bytes.find`` and slicing and no per-byte Python. A client (and
the tests) must decode every reply type, nested arrays included;
:class:`Decoder` does that, more slowly.

Malformed input never ends the connection. Redis replies
``-ERR Protocol error`` and closes; we reply the same error and *resync*:
the offending line is skipped up to its CRLF and parsing continues, so one
bad frame costs one error reply. A frame that is merely incomplete is not
an error: the parser keeps the bytes and waits for more.
"""

from __future__ import annotations

CRLF = b"\r\n"
#: Largest bulk string a request may carry (Redis's proto-max-bulk-len default).
MAX_BULK = 512 * 1024 * 1024
#: Largest inline command line / multibulk header line kept while waiting for CRLF.
MAX_INLINE = 64 * 1024
#: Most arguments in one request (Redis allows 1024*1024*1024; we keep memory bounded).
MAX_ARGS = 1024 * 1024
#: What one argument of a request in progress is counted as beyond its bytes
#: (about what a small ``bytes`` object and its list slot cost in CPython).
ARG_OVERHEAD = 40


class SimpleString(str):
    """A ``+OK``-style status reply (a str subclass, so it compares as text)."""

    __slots__ = ()


class Error(str):
    """A ``-ERR ...`` error reply: its text, starting with the error kind."""

    __slots__ = ()


class ProtocolError(Error):
    """A malformed request; the parser yields it in place of the bad frame."""

    __slots__ = ()


# ---------------------------------------------------------------- encoding

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
_SMALL_INTS = [b":%d\r\n" % i for i in range(-1, 1025)]


def encode_int(n: int) -> bytes:
    if -1 <= n <= 1024:
        return _SMALL_INTS[n + 1]
    return b":%d\r\n" % n


def encode_bulk(b: bytes | None) -> bytes:
    if b is None:
        return NULL
    return b"$%d\r\n%s\r\n" % (len(b), b)


def encode_simple(s: str) -> bytes:
    if "\r" in s or "\n" in s:
        raise ValueError(f"a RESP simple string cannot hold CR or LF: {s!r}")
    return b"+" + s.encode() + CRLF


def encode_error(s: str) -> bytes:
    # An error line cannot carry CR/LF either; fold them so a message with a
    # newline in it (an exception text, say) still frames correctly.
    return b"-" + s.replace("\r", " ").replace("\n", " ").encode() + CRLF


NULL3 = b"_\r\n"


def encode(value: object, *, resp3: bool = False) -> bytes:
    """Encode a Python value as one RESP2 frame.

    ``None`` is the null bulk string, ``bytes``/``bytearray``/``memoryview``
    and plain ``str`` are bulk strings, :class:`SimpleString` is ``+``,
    :class:`Error` is ``-``, ``int`` (not bool) is ``:``, a list or tuple is
    an array (nested freely). With ``resp3``, None is RESP3's ``_`` and a
    dict is a RESP3 map (without it, a flat array of keys and values).
    """
    parts: list[bytes] = []
    _encode_into(value, parts, resp3)
    return b"".join(parts)


def _encode_into(value: object, out: list[bytes], resp3: bool = False) -> None:
    if value is None:
        out.append(NULL3 if resp3 else NULL)
    elif isinstance(value, bytes | bytearray | memoryview):
        b = bytes(value)
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(CRLF)
    elif isinstance(value, Error):
        out.append(encode_error(value))
    elif isinstance(value, SimpleString):
        out.append(encode_simple(value))
    elif isinstance(value, str):
        _encode_into(value.encode(), out)
    elif isinstance(value, dict):
        out.append(b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value)))
        for k, v in value.items():
            _encode_into(k, out, resp3)
            _encode_into(v, out, resp3)
    elif isinstance(value, bool):
        raise TypeError("RESP2 has no boolean; send 0/1 as an int")
    elif isinstance(value, int):
        out.append(encode_int(value))
    elif isinstance(value, list | tuple):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, out, resp3)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as RESP2")


def to_resp3(reply: bytes) -> bytes:
    """A RESP2-encoded reply as a RESP3 client expects it.

    For the replies this server makes, RESP2 and RESP3 differ only in null:
    RESP3 clients (redis-py 8 asks for RESP3 by default, with HELLO 3)
    cannot read RESP2's ``$-1``. Only whole-reply nulls and arrays that
    hold one need rewriting; every other reply passes through untouched.
    """
    if reply == NULL:
        return NULL3
    if reply[:1] == b"*" and b"$-1\r\n" in reply:
        return encode(decode_all(reply)[0], resp3=True)
    return reply


def encode_command(*args: bytes | str | int) -> bytes:
    """A request as clients send it: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


# ---------------------------------------------------------------- requests

# Lookup tables for the fast path below: a dict lookup is several times
# cheaper than int() on a slice. Headers outside them take the general path.
_MBULK_HEADERS = {b"*%d" % n: n for n in range(1, 1025)}
_BULK_LENGTHS = {b"$%d" % n: n for n in range(0, 8193)}


class RequestParser:
    """Incremental parser for client requests.

    ``feed(data)`` appends bytes and returns every request now complete, in
    order: each is a ``list[bytes]`` (the command and its arguments) or a
    :class:`ProtocolError` standing in for a malformed frame. Bytes of an
    incomplete frame are kept for the next ``feed``. Empty inline lines and
    ``*0``/``*-1`` arrays are skipped, as Redis does.

    Linear in the bytes received, whatever the framing: a request still
    arriving keeps its parse state (the arguments complete so far and how
    many are still due), so each byte is looked at once or twice, never
    once per read. (Re-parsing an incomplete request from its start on
    every read made a 3.5 MiB request of 1-byte arguments cost ~10 s of a
    worker, quadratic in its size.)
    """

    __slots__ = ("_argbytes", "_args", "_count", "_have", "_held", "_need")

    def __init__(self) -> None:
        # Bytes not parsed yet (the incomplete part of a frame), kept as
        # chunks: a 100 MB value that arrives 64 KB at a time must not be
        # re-joined and re-scanned on every read, so once the bulk string's
        # total size is known (``_need``) we only append until it is reached.
        self._held: list[bytes] = []
        self._have = 0
        self._need = 0
        # The multibulk request in progress: its arguments so far (None: none
        # in progress), how many it declared, and what they hold in memory.
        self._args: list[bytes] | None = None
        self._count = 0
        self._argbytes = 0

    def pending(self) -> int:
        """Bytes held for a request not yet complete (its unparsed bytes, and
        its complete arguments counted with ARG_OVERHEAD each)."""
        return self._have + self._argbytes

    @staticmethod
    def _fast(buf: bytes, out: list[list[bytes] | ProtocolError]) -> int:
        """Parse the leading run of well-formed multibulk requests; return where it stopped.

        Splitting the whole buffer on CRLF once (in C) and taking the
        arguments as slices of the token list is ~3x cheaper per request than
        walking it with ``find``. A bulk value may itself contain CRLF: then
        its declared length no longer matches its token, the check below
        fails, and the general loop in :meth:`feed` takes over from that
        request on, as it does for anything unusual (inline commands,
        malformed or incomplete frames, values over 8 KiB).
        """
        parts = buf.split(b"\r\n")
        last = len(parts) - 1  # parts[last] follows the final CRLF: never complete
        headers = _MBULK_HEADERS.get
        lengths = _BULK_LENGTHS.get
        i = 0
        while i < last:
            count = headers(parts[i])
            if count is None:
                break
            end = i + 2 * count + 1
            if end > last:
                break
            args = parts[i + 2 : end : 2]
            if list(map(len, args)) != list(map(lengths, parts[i + 1 : end : 2])):
                break
            out.append(args)
            i = end
        if i == 0:
            return 0
        if i == last:  # all consumed (the usual case): no need to add up the lengths
            return len(buf) - len(parts[last])
        return sum(map(len, parts[:i])) + 2 * i

    def _bulks(self, buf: bytes, p: int, args: list[bytes], count: int
               ) -> tuple[int, ProtocolError | None, int]:
        """Append bulk strings from ``buf[p:]`` to ``args`` until it holds ``count``.

        Returns (where it stopped, the error if a frame was malformed, the
        bytes from there that the next bulk string needs in all: 0 unknown).
        """
        n = len(buf)
        find = buf.find
        added = 0
        bad: ProtocolError | None = None
        need = 0
        while len(args) < count:
            if p >= n:
                break
            if buf[p] != 36:  # '$'
                bad = ProtocolError(f"ERR Protocol error: expected '$', got '{chr(buf[p])}'")
                break
            eol = find(CRLF, p)
            if eol < 0:
                if n - p > MAX_INLINE:
                    bad = ProtocolError("ERR Protocol error: too big bulk count string")
                break
            try:
                size = int(buf[p + 1 : eol])
            except ValueError:
                bad = ProtocolError("ERR Protocol error: invalid bulk length")
                break
            if size < 0 or size > MAX_BULK:
                bad = ProtocolError("ERR Protocol error: invalid bulk length")
                break
            end = eol + 2 + size
            if end + 2 > n:
                need = end + 2 - p
                break
            if buf[end : end + 2] != CRLF:
                bad = ProtocolError("ERR Protocol error: bulk string not followed by CRLF")
                break
            args.append(buf[eol + 2 : end])
            added += size + ARG_OVERHEAD
            p = end + 2
        self._argbytes += added
        return p, bad, need

    def feed(self, data: bytes) -> list[list[bytes] | ProtocolError]:
        if self._held:
            self._held.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._held)
        else:
            buf = data
        need = 0
        out: list[list[bytes] | ProtocolError] = []
        pos = 0
        n = len(buf)
        find = buf.find
        args = self._args
        if args is not None:  # a request in progress: carry on from its next argument
            pos, bad, need = self._bulks(buf, 0, args, self._count)
            if bad is not None:
                self._args = None
                self._argbytes = 0
                out.append(bad)
                eol = find(CRLF, pos)
                pos = n if eol < 0 else eol + 2
            elif len(args) == self._count:
                self._args = None
                self._argbytes = 0
                out.append(args)
            else:
                return self._keep(buf, pos, need, out)
        if buf[pos : pos + 1] == b"*":
            pos += self._fast(buf[pos:] if pos else buf, out)
        while pos < n:
            if buf[pos] == 42:  # '*': multibulk
                eol = find(CRLF, pos)
                if eol < 0:
                    if n - pos > MAX_INLINE:
                        out.append(ProtocolError("ERR Protocol error: too big mbulk count string"))
                        pos = n
                    break
                try:
                    count = int(buf[pos + 1 : eol])
                except ValueError:
                    out.append(ProtocolError("ERR Protocol error: invalid multibulk length"))
                    pos = eol + 2
                    continue
                if count > MAX_ARGS:
                    out.append(ProtocolError("ERR Protocol error: invalid multibulk length"))
                    pos = eol + 2
                    continue
                if count <= 0:
                    pos = eol + 2
                    continue
                args = []
                p, bad, need = self._bulks(buf, eol + 2, args, count)
                if bad is not None:
                    self._argbytes = 0
                    out.append(bad)
                    # Resync: drop the offending line (up to its CRLF, or all we have).
                    eol = find(CRLF, p)
                    pos = n if eol < 0 else eol + 2
                    continue
                if len(args) < count:
                    # Incomplete: keep the arguments parsed and only the bytes after them.
                    self._args = args
                    self._count = count
                    pos = p
                    break
                self._argbytes = 0
                out.append(args)
                pos = p
            else:  # inline command: a line of space-separated words
                eol = find(b"\n", pos)
                if eol < 0:
                    if n - pos > MAX_INLINE:
                        out.append(ProtocolError("ERR Protocol error: too big inline request"))
                        pos = n
                    break
                line = buf[pos:eol]
                pos = eol + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                words = line.split()
                if words:
                    out.append(words)
        return self._keep(buf, pos, need, out)

    def _keep(self, buf: bytes, pos: int, need: int,
              out: list[list[bytes] | ProtocolError]) -> list[list[bytes] | ProtocolError]:
        """Hold ``buf[pos:]`` (the incomplete part) for the next feed; return ``out``."""
        if pos >= len(buf):
            self._held = []
            self._have = self._need = 0
        else:
            rest = buf[pos:] if pos else buf
            self._held = [rest]
            self._have = len(rest)
            self._need = need
        return out


# ---------------------------------------------------------------- replies


class _Incomplete(Exception):
    pass


class Decoder:
    """Incremental decoder of any RESP2 value (what a client reads).

    ``feed(data)`` then ``values()`` returns every complete value: bytes,
    None, int, :class:`SimpleString`, :class:`Error`, or lists of these. A
    malformed frame raises :class:`ValueError` (a client cannot resync with
    a server that speaks garbage).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def values(self) -> list[object]:
        out: list[object] = []
        buf = bytes(self._buf)
        pos = 0
        while pos < len(buf):
            try:
                value, pos2 = self._one(buf, pos)
            except _Incomplete:
                break
            out.append(value)
            pos = pos2
        del self._buf[:pos]
        return out

    def _line(self, buf: bytes, pos: int) -> tuple[bytes, int]:
        eol = buf.find(CRLF, pos)
        if eol < 0:
            raise _Incomplete
        return buf[pos:eol], eol + 2

    def _one(self, buf: bytes, pos: int) -> tuple[object, int]:
        if pos >= len(buf):
            raise _Incomplete
        kind = buf[pos : pos + 1]
        line, pos = self._line(buf, pos + 1)
        if kind == b"+":
            return SimpleString(line.decode()), pos
        if kind == b"-":
            return Error(line.decode()), pos
        if kind == b":":
            return int(line), pos
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, pos
            if pos + size + 2 > len(buf):
                raise _Incomplete
            if buf[pos + size : pos + size + 2] != CRLF:
                raise ValueError(f"RESP bulk string of {size} bytes not followed by CRLF")
            return buf[pos : pos + size], pos + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._one(buf, pos)
                items.append(item)
            return items, pos
        if kind == b"_":  # RESP3 null
            return None, pos
        if kind == b"%":  # RESP3 map
            mapping = {}
            for _ in range(int(line)):
                key, pos = self._one(buf, pos)
                mapping[key], pos = self._one(buf, pos)
            return mapping, pos
        raise ValueError(f"RESP frame starts with unknown type byte {kind!r}")


def decode_all(data: bytes) -> list[object]:
    """Every value in ``data`` (which must hold only complete frames)."""
    d = Decoder()
    d.feed(data)
    values = d.values()
    if d._buf:
        raise ValueError(f"{len(d._buf)} trailing bytes do not make a complete RESP frame")
    return values

