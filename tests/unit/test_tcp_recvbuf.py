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


def test_take_views_hands_out_the_chunks_themselves() -> None:
    frame = bytes(range(100))
    first = memoryview(frame)[10:60]
    rb = RecvBuffer()
    rb.append(first)
    rb.append(b"tail")
    views = rb.take_views(52)
    assert views[0] is first  # not copied: the view of the frame itself
    assert [bytes(v) for v in views] == [frame[10:60], b"ta"]
    assert len(rb) == 2
    assert rb.take_views(0) == []
    assert [bytes(v) for v in rb.take_views()] == [b"il"]
    assert not rb and rb.take_views() == []


@given(
    st.lists(st.binary(max_size=40), max_size=12),
    st.lists(st.one_of(st.none(), st.integers(-3, 60)), max_size=20),
)
def test_any_take_views_return_the_stream_in_order(
    chunks: list[bytes], takes: list[int | None]
) -> None:
    rb = RecvBuffer()
    for c in chunks:
        rb.append(memoryview(c) if len(c) % 2 else c)
    got = b""
    for t in takes:
        before = len(rb)
        views = rb.take_views(t)
        n = sum(len(v) for v in views)
        assert n == (before if t is None else min(before, max(0, t)))
        assert all(len(v) for v in views)
        got += b"".join(views)
        assert len(rb) == before - n
    got += b"".join(rb.take_views())
    assert got == b"".join(chunks)
