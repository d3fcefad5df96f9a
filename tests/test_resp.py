"""RESP2 protocol layer of examples/kvserver: encoder/decoder round trips,
requests split at every byte boundary, malformed frames answered and skipped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.kvserver.resp import (
    ARG_OVERHEAD,
    Decoder,
    Error,
    ProtocolError,
    RequestParser,
    SimpleString,
    decode_all,
    encode,
    encode_bulk,
    encode_command,
    encode_error,
    encode_int,
    to_resp3,
)

line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30
)
scalars = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    line_text.map(SimpleString),
    line_text.map(Error),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20)
requests = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@given(values)
def test_encode_decode_round_trip(value: object) -> None:
    assert decode_all(encode(value)) == [value]


@given(st.lists(values, max_size=6))
def test_decoder_takes_any_split(vals: list[object]) -> None:
    wire = b"".join(encode(v) for v in vals)
    for cut in range(0, len(wire) + 1, max(1, len(wire) // 13)):
        d = Decoder()
        d.feed(wire[:cut])
        got = d.values()
        d.feed(wire[cut:])
        got += d.values()
        assert got == vals


def test_encoding_is_redis_wire_format() -> None:
    assert encode(None) == b"$-1\r\n"
    assert encode(b"") == b"$0\r\n\r\n"
    assert encode("é") == b"$2\r\n\xc3\xa9\r\n"
    assert encode(SimpleString("OK")) == b"+OK\r\n"
    assert encode(Error("ERR no")) == b"-ERR no\r\n"
    assert encode(-5) == encode_int(-5) == b":-5\r\n"
    assert encode(10**12) == b":1000000000000\r\n"
    assert encode([b"a", [1, None]]) == b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n"
    assert encode_bulk(None) == b"$-1\r\n"
    assert encode_command("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    # An error text with a newline must not break framing.
    assert encode_error("ERR a\nb") == b"-ERR a b\r\n"
    with pytest.raises(TypeError):
        encode(True)
    with pytest.raises(TypeError):
        encode(1.5)
    with pytest.raises(ValueError, match="CR or LF"):
        encode(SimpleString("a\r\nb"))


@given(st.lists(requests, min_size=1, max_size=8))
@settings(max_examples=60)
def test_pipelined_requests_split_at_every_byte(reqs: list[list[bytes]]) -> None:
    wire = b"".join(encode_command(*r) for r in reqs)
    for cut in range(len(wire) + 1):
        p = RequestParser()
        got = p.feed(wire[:cut]) + p.feed(wire[cut:])
        assert got == reqs
        assert p.pending() == 0


@given(st.lists(requests, min_size=1, max_size=4), st.integers(min_value=1, max_value=7))
def test_requests_fed_in_small_chunks(reqs: list[list[bytes]], size: int) -> None:
    wire = b"".join(encode_command(*r) for r in reqs)
    p = RequestParser()
    got = []
    for i in range(0, len(wire), size):
        got += p.feed(wire[i : i + size])
    assert got == reqs


def test_large_value_arriving_in_pieces_is_parsed_once_complete() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    wire = encode_command("SET", "big", value)
    p = RequestParser()
    got = []
    for i in range(0, len(wire), 65536):
        got += p.feed(wire[i : i + 65536])
        if i + 65536 < len(wire):
            assert got == []
            # What it holds: the bytes received, less the headers of the
            # arguments already parsed, plus ARG_OVERHEAD for each of those.
            assert i + 65536 - 32 < p.pending() < i + 65536 + 2 * ARG_OVERHEAD
    assert got == [[b"SET", b"big", value]]


def _many_args(nbytes: int) -> tuple[bytes, int]:
    """A DEL of 1-byte keys, ``nbytes`` long on the wire (7 bytes per key)."""
    n = (nbytes - 16) // 7
    return b"*%d\r\n$3\r\nDEL\r\n" % (n + 1) + b"$1\r\nx\r\n" * n, n


def test_request_of_many_tiny_arguments_is_parsed_in_linear_time() -> None:
    """A 3.5 MiB request of 1-byte arguments arriving in 64 KiB reads: each read
    continues from the argument where the last stopped (the parser holds only
    the unparsed tail, never the whole request again), so its cost is linear.
    Re-parsing from the start on every read took ~10 s for this one request."""
    import time

    def parse(nbytes: int) -> float:
        wire, n = _many_args(nbytes)
        p = RequestParser()
        got: list = []
        t = time.process_time()
        for i in range(0, len(wire), 65536):
            got += p.feed(wire[i : i + 65536])
            if i + 65536 < len(wire):
                assert got == []
                assert p._have < 16  # only the cut-off argument is held as bytes
                assert p.pending() >= (i + 65536) // 7 * (1 + ARG_OVERHEAD) - 200
        assert len(got) == 1
        assert len(got[0]) == n + 1
        assert got[0][-1] == b"x"
        assert p.pending() == 0
        return time.process_time() - t

    small = min(parse(int(0.875 * 2**20)) for _ in range(3))
    big = min(parse(int(3.5 * 2**20)) for _ in range(3))
    # 4x the bytes: linear is ~4x the time; quadratic was ~10x. Wide margin for noise.
    assert big < 7 * small + 0.05, (small, big)


@given(st.integers(min_value=1, max_value=40))
def test_many_arguments_split_anywhere_then_malformed_resyncs(size: int) -> None:
    wire = encode_command("DEL", *[bytes([97 + i % 26]) for i in range(30)])
    wire += b"*2\r\n$3\r\nGET\r\n$x\r\n" + encode_command("PING")
    p = RequestParser()
    got: list = []
    for i in range(0, len(wire), size):
        got += p.feed(wire[i : i + size])
    assert got[0] == [b"DEL"] + [bytes([97 + i % 26]) for i in range(30)]
    assert isinstance(got[1], ProtocolError)
    assert got[-1] == [b"PING"]
    assert p.pending() == 0


def test_inline_commands() -> None:
    p = RequestParser()
    assert p.feed(b"PING\r\nSET a  b\n\r\n   \r\nGET a") == [[b"PING"], [b"SET", b"a", b"b"]]
    assert p.feed(b"\r\n") == [[b"GET", b"a"]]


def test_empty_and_null_arrays_are_skipped() -> None:
    p = RequestParser()
    assert p.feed(b"*0\r\n*-1\r\n" + encode_command("PING")) == [[b"PING"]]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*2\r\n:1\r\n", "expected '$'"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
        (b"*1\r\n$2\r\nabcd\r\n", "not followed by CRLF"),
        (b"*99999999999\r\n", "invalid multibulk length"),
    ],
)
def test_malformed_frame_gives_error_then_parsing_resumes(frame: bytes, message: str) -> None:
    p = RequestParser()
    got = p.feed(frame + encode_command("PING"))
    assert isinstance(got[0], ProtocolError)
    assert message in got[0]
    assert got[0].startswith("ERR Protocol error")
    assert got[-1] == [b"PING"]


def test_malformed_frame_split_across_reads_still_resyncs() -> None:
    p = RequestParser()
    wire = b"*1\r\n$zz\r\n" + encode_command("ECHO", "hi")
    got: list[object] = []
    for b in wire:
        got += p.feed(bytes([b]))
    assert isinstance(got[0], ProtocolError)
    assert got[1:] == [[b"ECHO", b"hi"]]


def test_unterminated_giant_lines_are_refused_not_buffered() -> None:
    p = RequestParser()
    got = p.feed(b"x" * (70 * 1024))
    assert len(got) == 1
    assert isinstance(got[0], ProtocolError)
    assert "too big inline" in got[0]
    assert p.pending() == 0
    assert p.feed(b"PING\r\n") == [[b"PING"]]


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_garbage_never_raises_and_parser_recovers(junk: bytes) -> None:
    p = RequestParser()
    for item in p.feed(junk):
        assert isinstance(item, list | ProtocolError)
    # After a CRLF-terminated line and a clean request, the parser is back in sync
    # unless the junk left an incomplete multibulk that swallows the request as data.
    p.feed(b"\r\n")
    p2 = RequestParser()
    assert p2.feed(junk.replace(b"*", b"").replace(b"\r", b"").replace(b"\n", b"") + b"\r\n" +
                   encode_command("PING"))[-1] == [b"PING"]


def test_decoder_rejects_unknown_type_byte() -> None:
    d = Decoder()
    d.feed(b"!oops\r\n")
    with pytest.raises(ValueError, match="unknown type byte"):
        d.values()
    with pytest.raises(ValueError, match="trailing"):
        decode_all(b"$5\r\nab")


@given(values)
def test_resp3_nulls_and_maps_round_trip(value: object) -> None:
    assert decode_all(encode(value, resp3=True)) == [value]
    assert decode_all(encode({b"k": value, b"n": None}, resp3=True)) == [{b"k": value, b"n": None}]


def test_to_resp3_rewrites_only_nulls() -> None:
    assert to_resp3(b"$-1\r\n") == b"_\r\n"
    assert to_resp3(b"*2\r\n$-1\r\n$1\r\na\r\n") == b"*2\r\n_\r\n$1\r\na\r\n"
    assert to_resp3(b"$5\r\n$-1\r\n\r\n") == b"$5\r\n$-1\r\n\r\n"  # a value that looks like null
    assert to_resp3(b":3\r\n") == b":3\r\n"
