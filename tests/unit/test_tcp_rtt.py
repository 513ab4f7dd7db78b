"""RFC 6298 retransmission-timeout arithmetic, checked with exact numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anp_async.proto.tcp.rtt import RttEstimator


def test_initial_rto_before_any_sample() -> None:
    # RFC 6298 (2.1): RTO starts at 1 s; no SRTT/RTTVAR yet.
    est = RttEstimator()
    assert est.rto == 1.0
    assert est.srtt is None
    assert est.rttvar is None
    assert est.backoff_count == 0


def test_first_sample_sets_srtt_and_half_rttvar() -> None:
    # RFC 6298 (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4*RTTVAR).
    est = RttEstimator()
    est.sample(0.5)
    assert est.srtt == 0.5
    assert est.rttvar == 0.25
    assert est.rto == pytest.approx(1.5)


def test_subsequent_samples_use_alpha_eighth_beta_quarter() -> None:
    # RFC 6298 (2.3), RTTVAR updated with the old SRTT first.
    est = RttEstimator()
    est.sample(0.5)
    est.sample(1.0)
    # RTTVAR = 3/4 * 0.25 + 1/4 * |0.5 - 1.0| = 0.3125; SRTT = 7/8 * 0.5 + 1/8 * 1.0 = 0.5625
    assert est.rttvar == pytest.approx(0.3125)
    assert est.srtt == pytest.approx(0.5625)
    assert est.rto == pytest.approx(0.5625 + 4 * 0.3125)
    est.sample(0.25)
    # RTTVAR = 3/4 * 0.3125 + 1/4 * |0.5625 - 0.25| = 0.3125; SRTT = 7/8 * 0.5625 + 0.25/8
    assert est.rttvar == pytest.approx(0.3125)
    assert est.srtt == pytest.approx(0.5234375)
    assert est.rto == pytest.approx(0.5234375 + 1.25)


def test_small_rto_is_rounded_up_to_rto_min() -> None:
    # RFC 6298 (2.4) with the configurable floor: 0.01 + 4 * 0.005 = 0.03 -> 0.2.
    est = RttEstimator(rto_min=0.2)
    est.sample(0.01)
    assert est.rto == 0.2
    strict = RttEstimator(rto_min=1.0)
    strict.sample(0.01)
    assert strict.rto == 1.0


def test_clock_granularity_bounds_the_variance_term() -> None:
    # RTO = SRTT + max(G, 4*RTTVAR): with a constant RTT, RTTVAR decays to ~0 and G remains.
    est = RttEstimator(rto_min=0.001, clock_granularity=0.1)
    for _ in range(200):
        est.sample(0.05)
    assert est.srtt == pytest.approx(0.05)
    assert est.rttvar is not None and est.rttvar < 1e-9
    assert est.rto == pytest.approx(0.15)


def test_large_sample_is_capped_at_rto_max() -> None:
    # RFC 6298 (2.5): 100 + 4 * 50 = 300 -> 60.
    est = RttEstimator(rto_max=60.0)
    est.sample(100.0)
    assert est.rto == 60.0


def test_backoff_doubles_and_is_capped() -> None:
    # RFC 6298 (5.5): RTO <- RTO * 2 at each expiry, bounded by the maximum.
    est = RttEstimator(rto_max=10.0)
    est.sample(0.5)  # rto 1.5
    seen = []
    for _ in range(5):
        est.backoff()
        seen.append(est.rto)
    assert seen == [3.0, 6.0, 10.0, 10.0, 10.0]
    assert est.backoff_count == 5


def test_backoff_before_first_sample_starts_from_initial_rto() -> None:
    est = RttEstimator(rto_initial=1.0)
    est.backoff()
    est.backoff()
    est.backoff()
    assert est.rto == 8.0
    est.reset_backoff()
    assert est.rto == 1.0


def test_reset_backoff_recomputes_from_srtt_rttvar() -> None:
    est = RttEstimator()
    est.sample(0.5)
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(6.0)
    est.reset_backoff()
    assert est.rto == pytest.approx(1.5)
    assert est.backoff_count == 0


def test_valid_sample_ends_backoff() -> None:
    # Karn's algorithm: the backed-off RTO holds until a valid sample arrives.
    est = RttEstimator()
    est.sample(0.5)
    est.backoff()
    assert est.backoff_count == 1
    est.sample(0.5)
    # RTTVAR = 0.75 * 0.25 + 0 = 0.1875, SRTT = 0.5 -> RTO = 0.5 + 0.75
    assert est.backoff_count == 0
    assert est.rto == pytest.approx(1.25)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf])
def test_invalid_samples_are_ignored(bad: float) -> None:
    est = RttEstimator()
    est.sample(0.5)
    est.sample(bad)
    assert est.srtt == 0.5
    assert est.rttvar == 0.25
    assert est.ignored_samples == 1
    assert est.samples == 1


def test_zero_sample_is_valid() -> None:
    est = RttEstimator(rto_min=0.2)
    est.sample(0.0)
    assert est.srtt == 0.0
    assert est.rttvar == 0.0
    assert est.rto == 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rto_min": 0.0},
        {"rto_min": 2.0, "rto_max": 1.0},
        {"rto_initial": 0.0},
        {"clock_granularity": -1.0},
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RttEstimator(**kwargs)


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=500.0, allow_nan=False),
            st.just("backoff"),
            st.just("reset"),
        ),
        max_size=60,
    )
)
def test_rto_always_within_bounds(ops: list[float | str]) -> None:
    est = RttEstimator(rto_min=0.2, rto_max=60.0)
    for op in ops:
        if op == "backoff":
            est.backoff()
        elif op == "reset":
            est.reset_backoff()
        else:
            assert isinstance(op, float)
            est.sample(op)
        assert 0.2 <= est.rto <= 60.0
        if est.srtt is not None:
            assert est.rttvar is not None and est.rttvar >= 0.0
