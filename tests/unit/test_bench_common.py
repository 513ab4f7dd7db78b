"""bench/common.py: the bulk sink's byte-for-byte check (any split of the stream passes,
any changed, missing or extra byte fails) and the kernel part of a process's CPU."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anp_async.bench.common import BULK_BLOCK, BulkCheck, bulk_block

SEED = 5
STREAM = bulk_block(SEED) * 3  # crosses the block boundary twice


def _feed(check: BulkCheck, data: bytes, cuts: list[int]) -> None:
    view = memoryview(data)
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        check.update(view[last:cut])
        last = cut


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(0, len(STREAM)),
    cuts=st.lists(st.integers(0, len(STREAM)), max_size=12),
)
def test_any_split_of_the_stream_passes(length: int, cuts: list[int]) -> None:
    check = BulkCheck(SEED)
    _feed(check, STREAM[:length], cuts)
    assert check.ok and check.bytes == length


@settings(max_examples=60, deadline=None)
@given(
    where=st.integers(0, len(STREAM) - 1),
    flip=st.integers(1, 255),
    cuts=st.lists(st.integers(0, len(STREAM)), max_size=8),
)
def test_one_changed_byte_anywhere_fails(where: int, flip: int, cuts: list[int]) -> None:
    bad = bytearray(STREAM)
    bad[where] ^= flip
    check = BulkCheck(SEED)
    _feed(check, bytes(bad), cuts)
    assert not check.ok


def test_a_lost_or_repeated_chunk_fails() -> None:
    lost = STREAM[:1000] + STREAM[1448:BULK_BLOCK + 5000]
    repeated = STREAM[:3000] + STREAM[1552:3000] + STREAM[3000:9000]
    for data in (lost, repeated):
        check = BulkCheck(SEED)
        check.update(data)
        assert not check.ok


def test_another_seed_fails() -> None:
    check = BulkCheck(SEED + 1)
    check.update(STREAM[:4096])
    assert not check.ok


def test_proc_sys_ns_is_the_kernel_time_the_process_has_used() -> None:
    import os
    import subprocess

    from anp_async.bench.common import proc_sys_ns

    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    for _ in range(20_000):  # some system time of our own
        os.stat("/")
    mine = proc_sys_ns(os.getpid())
    assert abs(mine - os.times().system * 1e9) <= 2 * tick
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert proc_sys_ns(gone.pid) == -1
