"""Congestion control windows: NewReno (RFC 5681/6582/3465) and CUBIC (RFC 9438)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anp_async.proto.tcp.congestion import (
    INITIAL_SSTHRESH,
    MAX_CWND,
    CongestionControl,
    Cubic,
    NewReno,
    initial_window,
    make_congestion,
)

MSS = 1000


def run_rounds(
    cc: CongestionControl, now: float, rtt: float, rounds: int
) -> list[tuple[float, int]]:
    """Simulate ``rounds`` RTTs of a cwnd-limited sender with one ACK per MSS, spread evenly
    over each RTT; return (time, cwnd) at the end of every round."""
    history = []
    for _ in range(rounds):
        n_acks = max(1, cc.cwnd // cc.mss)
        for i in range(n_acks):
            cc.on_ack(cc.mss, now + rtt * (i + 1) / n_acks, rtt)
        now += rtt
        history.append((now, cc.cwnd))
    return history


def in_congestion_avoidance(cc: CongestionControl, window: int) -> None:
    """Put ``cc`` into congestion avoidance at ``window`` bytes via a fast-recovery episode."""
    cc.cwnd = 2 * window
    cc.on_loss_fast(2 * window, 0.0)
    cc.on_recovery_exit(0.0)


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_initial_state(cls: type[CongestionControl]) -> None:
    cc = cls(MSS)
    assert cc.mss == MSS
    assert cc.cwnd == 10 * MSS
    assert cc.ssthresh == INITIAL_SSTHRESH
    assert cc.in_slow_start
    assert cls(MSS, initial_cwnd_segments=4).cwnd == 4 * MSS


def test_initial_window_follows_rfc6928() -> None:
    # RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)).
    assert initial_window(1460) == 14600
    assert initial_window(536) == 5360
    assert initial_window(9000) == 18000
    assert initial_window(1460, 1) == 1460


def test_make_congestion() -> None:
    assert isinstance(make_congestion("newreno", MSS), NewReno)
    cubic = make_congestion("CUBIC", 1460, 4)
    assert isinstance(cubic, Cubic)
    assert cubic.cwnd == 4 * 1460
    with pytest.raises(ValueError):
        make_congestion("bbr", MSS)
    with pytest.raises(ValueError):
        NewReno(0)


# -- slow start -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_growth_per_ack(cls: type[CongestionControl]) -> None:
    cc = cls(MSS)
    cc.on_ack(1000, 0.1, 0.1)
    assert cc.cwnd == 11000  # RFC 5681 (3.1): + min(N, SMSS)
    cc.on_ack(500, 0.1, 0.1)
    assert cc.cwnd == 11500  # a partial segment adds only what it acked
    cc.on_ack(2000, 0.1, 0.1)
    assert cc.cwnd == 13500  # RFC 3465 (2.2): L = 2*SMSS for a delayed ACK
    cc.on_ack(5000, 0.1, 0.1)
    assert cc.cwnd == 15500  # ... but never more than L per ACK
    cc.on_ack(0, 0.1, 0.1)
    assert cc.cwnd == 15500


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_doubles_per_rtt(cls: type[CongestionControl]) -> None:
    cc = cls(MSS)
    history = run_rounds(cc, 0.0, 0.1, 3)
    assert [cwnd for _, cwnd in history] == [20000, 40000, 80000]


def test_slow_start_stops_at_ssthresh_and_counts_the_rest() -> None:
    cc = NewReno(MSS)
    cc.ssthresh = 10500
    cc.on_ack(2000, 0.1, 0.1)
    assert cc.cwnd == 10500
    assert not cc.in_slow_start
    # 1500 bytes were left over for byte counting; 9000 more complete one cwnd of ACKs.
    cc.on_ack(8999, 0.2, 0.1)
    assert cc.cwnd == 10500
    cc.on_ack(1, 0.2, 0.1)
    assert cc.cwnd == 11500


# -- NewReno congestion avoidance --------------------------------------------------------------


def test_congestion_avoidance_one_mss_per_rtt() -> None:
    cc = NewReno(MSS)
    in_congestion_avoidance(cc, 20000)
    assert (cc.cwnd, cc.ssthresh) == (20000, 20000)
    assert not cc.in_slow_start
    history = run_rounds(cc, 0.0, 0.1, 5)
    assert [cwnd for _, cwnd in history] == [21000, 22000, 23000, 24000, 25000]


def test_congestion_avoidance_with_delayed_acks_is_the_same_per_rtt() -> None:
    cc = NewReno(MSS)
    in_congestion_avoidance(cc, 20000)
    # 10 ACKs of 2 segments = one window: still exactly +1 MSS (byte counting).
    for _ in range(10):
        cc.on_ack(2000, 0.1, 0.1)
    assert cc.cwnd == 21000
    for _ in range(10):
        cc.on_ack(2000, 0.2, 0.1)
    assert cc.cwnd == 21000  # 20000 of 21000 bytes counted
    cc.on_ack(1000, 0.2, 0.1)
    assert cc.cwnd == 22000


# -- NewReno loss reactions ---------------------------------------------------------------------


def test_fast_loss_halves_flight() -> None:
    cc = NewReno(MSS)
    cc.on_loss_fast(30000, 1.0)
    # RFC 5681 (4): ssthresh = max(FlightSize/2, 2*SMSS); cwnd = ssthresh (+ inflation later).
    assert cc.ssthresh == 15000
    assert cc.cwnd == 15000
    assert not cc.in_slow_start
    cc.on_loss_fast(1500, 2.0)
    assert cc.ssthresh == 2000
    assert cc.cwnd == 2000
    cc.on_loss_fast(9000, 3.0)
    assert (cc.ssthresh, cc.cwnd) == (4500, 4500)


def test_recovery_inflation_partial_ack_and_exit() -> None:
    cc = NewReno(MSS)
    cc.on_loss_fast(20000, 1.0)
    for _ in range(3):
        cc.on_recovery_dup_ack(1.0)  # RFC 5681 (3.2 step 4)
    assert cc.cwnd == 13000
    cc.on_recovery_partial_ack(4000, 1.1)  # RFC 6582 step 5: -4000 + 1000
    assert cc.cwnd == 10000
    cc.on_recovery_partial_ack(500, 1.2)  # less than one SMSS: nothing added back
    assert cc.cwnd == 9500
    cc.on_recovery_exit(1.3)
    assert cc.cwnd == cc.ssthresh == 10000


def test_recovery_exit_with_small_flight_avoids_burst() -> None:
    cc = NewReno(MSS)
    cc.on_loss_fast(20000, 1.0)
    cc.on_recovery_exit(1.3, in_flight=3000)  # RFC 6582 step 3 option 1
    assert cc.cwnd == 4000
    assert cc.ssthresh == 10000
    assert cc.in_slow_start


def test_timeout_sets_loss_window() -> None:
    cc = NewReno(MSS)
    cc.on_timeout(30000, 5.0)
    assert cc.ssthresh == 15000
    assert cc.cwnd == 1000  # RFC 5681 (4): LW = 1 SMSS
    assert cc.in_slow_start
    # A second expiry for the same (unacknowledged) data holds ssthresh.
    cc.on_timeout(1000, 6.0)
    assert cc.ssthresh == 15000
    assert cc.cwnd == 1000
    assert cc.timeouts == 2
    # After new data was ACKed, the next timeout computes ssthresh afresh.
    cc.on_ack(1000, 6.5, 0.1)
    assert cc.cwnd == 2000
    cc.on_timeout(4000, 7.0)
    assert cc.ssthresh == 2000
    assert cc.cwnd == 1000


def test_slow_start_after_timeout_reaches_ssthresh_then_linear() -> None:
    cc = NewReno(MSS)
    cc.on_timeout(16000, 0.0)
    history = run_rounds(cc, 0.0, 0.1, 5)
    assert [cwnd for _, cwnd in history] == [2000, 4000, 8000, 9000, 10000]


def test_cwnd_is_bounded() -> None:
    cc = NewReno(MSS)
    for _ in range(1000):
        cc.on_ack(1 << 24, 1.0, 0.1)
    assert cc.cwnd <= MAX_CWND
    cc.on_recovery_dup_ack(1.0)
    assert cc.cwnd <= MAX_CWND


# -- CUBIC ----------------------------------------------------------------------------------


def cubic_after_loss(w_max_segments: int) -> Cubic:
    cc = Cubic(MSS)
    cc.cwnd = w_max_segments * MSS
    cc.on_loss_fast(w_max_segments * MSS, 0.0)
    cc.on_recovery_exit(0.0)
    return cc


def test_cubic_loss_reduces_to_beta_times_w_max() -> None:
    cc = cubic_after_loss(100)
    assert cc.w_max == pytest.approx(100.0)
    assert cc.cwnd == 70000  # RFC 9438 (4.6): cwnd = 0.7 * W_max
    assert cc.ssthresh == 70000
    assert not cc.in_slow_start


def test_cubic_ssthresh_uses_flight_size() -> None:
    cc = Cubic(MSS)
    cc.cwnd = 100_000
    cc.on_loss_fast(50_000, 0.0)  # RFC 9438 Figure 5: flight_size * beta
    assert cc.ssthresh == 35000
    assert cc.w_max == pytest.approx(100.0)
    cc.on_loss_fast(1000, 0.0)
    assert cc.ssthresh == 2000  # never below 2 SMSS


def test_cubic_k_per_rfc9438_eq2() -> None:
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, 1.0, 0.1)
    assert cc.epoch_start == 1.0
    assert cc.cwnd_epoch == pytest.approx(70.0)
    # K = cubic_root((W_max - cwnd_epoch) / C) = cubic_root(30 / 0.4)
    assert cc.k == pytest.approx(75.0 ** (1.0 / 3.0))
    assert cc.w_cubic(0.0) == pytest.approx(70.0)
    assert cc.w_cubic(cc.k) == pytest.approx(100.0)


def test_cubic_concave_then_convex_around_w_max() -> None:
    cc = cubic_after_loss(100)
    rtt = 0.1
    history = run_rounds(cc, 0.0, rtt, 56)  # up to 5.6 s
    k = cc.k
    assert k == pytest.approx(4.2172, abs=1e-3)
    cwnds = [cwnd for _, cwnd in history]
    assert all(b >= a for a, b in zip(cwnds, cwnds[1:], strict=False))  # never shrinks on ACK

    def growth(t0: float, t1: float) -> int:
        at = {round(t, 6): c for t, c in history}
        return at[round(t1, 6)] - at[round(t0, 6)]

    # Concave: fast growth right after the loss, slowing down while approaching W_max.
    assert growth(0.1, 1.1) > growth(1.1, 2.1) > growth(2.1, 3.1) > growth(3.1, 4.1)
    # Plateau near W_max around t = K.
    at_k = dict((round(t, 1), c) for t, c in history)[4.2]
    assert at_k == pytest.approx(100_000, rel=0.01)
    # Convex: growth accelerates after K.
    assert growth(4.2, 4.7) < growth(4.7, 5.2) < growth(5.2, 5.6)
    assert cwnds[-1] > 100_000
    # The window follows the cubic curve closely (within 1.5 segments).
    for t, cwnd in history:
        assert cwnd / MSS == pytest.approx(cc.w_cubic(t), abs=1.5)


def test_cubic_reno_friendly_region_at_small_rtt() -> None:
    cc = cubic_after_loss(20)  # cwnd 14 segments, W_max 20, K ~ 2.47 s
    rtt = 0.001
    history = run_rounds(cc, 0.0, rtt, 30)
    # In 30 ms the cubic curve has hardly moved, while W_est grows per RTT: Reno-friendly.
    now, cwnd = history[-1]
    assert cc.w_cubic(now) < 14.5
    assert cwnd > 30000
    assert cwnd == pytest.approx(cc.w_est * MSS, abs=1)
    # RFC 9438 (4.3): alpha = 3(1-0.7)/(1+0.7) ~ 0.53 segments per RTT below cwnd_prior ...
    first = history[0][1] - 14000
    assert first == pytest.approx(529, abs=15)
    # ... and 1 segment per RTT once W_est has passed cwnd_prior (20 segments).
    late = [c for _, c in history if c > 21000]
    assert len(late) >= 3
    assert late[-1] - late[-2] == pytest.approx(1000, abs=50)


def test_cubic_fast_convergence_reduces_w_max() -> None:
    cc = cubic_after_loss(100)
    cc.cwnd = 90_000  # the next loss comes before reaching the previous W_max
    cc.on_loss_fast(90_000, 10.0)
    # RFC 9438 (4.7): W_max = cwnd * (1 + beta) / 2
    assert cc.w_max == pytest.approx(90 * 0.85)
    assert cc.cwnd == 63000

    slow = cubic_after_loss(100)
    slow.fast_convergence = False
    slow.cwnd = 90_000
    slow.on_loss_fast(90_000, 10.0)
    assert slow.w_max == pytest.approx(90.0)

    grown = cubic_after_loss(100)
    grown.cwnd = 110_000  # beyond the old W_max: no fast convergence
    grown.on_loss_fast(110_000, 10.0)
    assert grown.w_max == pytest.approx(110.0)


def test_cubic_timeout_then_first_ca_stage_uses_k_zero() -> None:
    cc = Cubic(MSS)
    cc.cwnd = 100_000
    cc.on_timeout(100_000, 0.0)
    # RFC 9438 (4.8): ssthresh from beta_cubic, cwnd = 1 SMSS.
    assert cc.ssthresh == 70000
    assert cc.cwnd == 1000
    assert cc.in_slow_start
    now = 0.0
    while cc.in_slow_start:
        cc.on_ack(MSS, now, 0.1)
        now += 0.01
    assert cc.cwnd == 70000
    cc.on_ack(MSS, now, 0.1)
    # First CA stage after the timeout: K = 0 and W_max = cwnd at its start.
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(70.0)
    assert cc.w_est >= 70.0


def test_cubic_first_ca_without_loss_starts_at_current_window() -> None:
    cc = Cubic(MSS)
    cc.ssthresh = 20000
    run_rounds(cc, 0.0, 0.1, 2)
    assert cc.epoch_start is not None
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(20.0)


def test_cubic_info() -> None:
    cc = cubic_after_loss(100)
    info = cc.info()
    assert info["cc"] == "cubic"
    assert info["cwnd"] == 70000
    assert info["w_max"] == pytest.approx(100000.0)


# -- invariants under arbitrary event sequences ----------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["ack", "fast", "dup", "partial", "exit", "timeout"]),
        st.integers(min_value=0, max_value=200_000),
    ),
    max_size=80,
)


@given(st.sampled_from(["newreno", "cubic"]), events)
def test_windows_stay_sane(name: str, ops: list[tuple[str, int]]) -> None:
    cc = make_congestion(name, MSS)
    now = 0.0
    for op, n in ops:
        now += 0.01
        before = cc.cwnd
        if op == "ack":
            cc.on_ack(n, now, 0.05)
            assert cc.cwnd >= before
        elif op == "fast":
            cc.on_loss_fast(n, now)
            assert cc.cwnd == cc.ssthresh >= 2 * MSS
        elif op == "dup":
            cc.on_recovery_dup_ack(now)
        elif op == "partial":
            cc.on_recovery_partial_ack(n, now)
        elif op == "exit":
            cc.on_recovery_exit(now)
            assert cc.cwnd == min(cc.ssthresh, MAX_CWND)
        else:
            cc.on_timeout(n, now)
            assert cc.cwnd == MSS
            assert cc.ssthresh >= 2 * MSS
        assert MSS <= cc.cwnd <= MAX_CWND
        assert isinstance(cc.cwnd, int)
        assert isinstance(cc.ssthresh, int)
