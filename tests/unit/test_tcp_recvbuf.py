"""The receive buffer hands out exactly the bytes queued, in order, copying once."""

from hypothesis import given
from hypothesis import strategies as st

from anp_async.proto.tcp.recvbuf import RecvBuffer


def test_single_bytes_chunk_leaves_without_a_copy() -> None:
    rb = RecvBuffer()
    data = b"x" * 1000
    rb.append(data)
    assert rb.take() is data
    assert len(rb) == 0 and not rb


def test_view_of_a_reusable_buffer_is_copied_on_the_way_in() -> None:
    scratch = bytearray(b"abcdef")
    rb = RecvBuffer()
    rb.append(memoryview(scratch)[1:4])
    scratch[:] = b"zzzzzz"  # the caller reuses its buffer
    assert rb.take() == b"bcd"


def test_views_of_frames_are_kept_and_split() -> None:
    frame = bytes(range(100))
    rb = RecvBuffer()
    rb.append(memoryview(frame)[10:60])
    rb.append(b"")
    rb.append(memoryview(frame)[60:70])
    assert len(rb) == 60
    assert rb.take(5) == frame[10:15]
    assert rb.take(50) == frame[15:65]
    assert rb.take(0) == b""
    assert rb.take(100) == frame[65:70]
    assert rb.take() == b""


@given(
    st.lists(st.binary(max_size=40), max_size=12),
    st.lists(st.one_of(st.none(), st.integers(-3, 60)), max_size=20),
)
def test_any_takes_return_the_stream_in_order(chunks: list[bytes], takes: list[int | None]) -> None:
    rb = RecvBuffer()
    for c in chunks:
        rb.append(memoryview(c) if len(c) % 2 else c)
    stream = b"".join(chunks)
    got = b""
    for t in takes:
        before = len(rb)
        out = rb.take(t)
        assert isinstance(out, bytes)
        assert len(out) == (before if t is None else min(before, max(0, t)))
        got += out
        assert len(rb) == before - len(out)
    got += rb.take()
    assert got == stream
