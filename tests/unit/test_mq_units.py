"""The pure parts of the multi-queue host: steering function, stats merging, specs."""

from __future__ import annotations

import pytest

from anp_async.bench.scale import parse_queues
from anp_async.mq.fanout import merge_stats
from anp_async.mq.spec import WorkerSpec
from anp_async.mq.worker import own_ports
from anp_async.nic.steering import STEERING_PROGRAM, mix, steer_icmp, steer_queue


def test_steering_is_symmetric_and_spreads_even_ports() -> None:
    assert steer_queue(40000, 7, 4) == steer_queue(7, 40000, 4)
    # Linux hands connect() even ports: the hash must still use every queue.
    assert {steer_queue(p, 7, 2) for p in range(40000, 40064, 2)} == {0, 1}
    assert {steer_queue(p, 80, 4) for p in range(40000, 40256, 2)} == {0, 1, 2, 3}
    assert {steer_icmp(i, 3) for i in range(64)} == {0, 1, 2}
    assert 0 <= mix(0xFFFF) <= 0xFFFF
    assert len(STEERING_PROGRAM) % 8 == 0


def test_a_worker_takes_only_ports_steered_to_it() -> None:
    ok = own_ports(1, 3)
    taken = [p for p in range(32768, 33768) if ok(p, 443)]
    assert taken and all(steer_queue(p, 443, 3) == 1 for p in taken)
    assert 200 < len(taken) < 460  # about a third


def test_merge_stats_sums_counters_and_tags_lists() -> None:
    w0 = {"address": "10.0.0.2", "mode": {"name": "coalesce", "params": {"rx_frames": 8},
          "wakeups": 3}, "tcp": {"passive_opens": 2, "connections": [{"remote": "a"}]},
          "flag": False}  # fmt: skip
    w1 = {"address": "10.0.0.2", "mode": {"name": "coalesce", "params": {"rx_frames": 8},
          "wakeups": 5}, "tcp": {"passive_opens": 1, "connections": [{"remote": "b"}],
          "extra": 4}, "flag": True}  # fmt: skip
    m = merge_stats([(0, w0), (1, w1)])
    assert m["address"] == "10.0.0.2"
    assert m["mode"] == {"name": "coalesce", "params": {"rx_frames": 8}, "wakeups": 8}
    assert m["tcp"]["passive_opens"] == 3 and m["tcp"]["extra"] == 4
    assert m["tcp"]["connections"] == [{"remote": "a", "worker": 0}, {"remote": "b", "worker": 1}]
    assert m["flag"] is True


def test_worker_spec_round_trips_through_json() -> None:
    spec = WorkerSpec(index=1, queues=2, tap="t", tap_fd=5, ip="10.0.0.2/24", mac="02:00:00:00:00:02",
                      relay_out=[7], mode_params={"rx_frames": 4})  # fmt: skip
    assert WorkerSpec.from_json(spec.to_json()) == spec


def test_parse_queues() -> None:
    assert parse_queues("1,2,4") == [1, 2, 4]
    for bad in ("", "0", "a", "1,100"):
        with pytest.raises(ValueError):
            parse_queues(bad)
