"""The Python API refuses bad configuration at once, with a ValueError that says why:
``StackConfig``, ``Stack`` and ``TcpConfig`` (TapNic.open: test_nic_tap_args.py)."""

from __future__ import annotations

from typing import Any

import pytest

from anp_async import Stack, StackConfig, TcpConfig
from anp_async.nic.wire import Wire


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"ip": "300.1.1.1/24"}, "invalid IPv4 address"),
        ({"ip": "10.0.0.2/33"}, "prefix length must be 0..32"),
        ({"ip": "10.0.0.2/x"}, "prefix length must be 0..32"),
        ({"ip": ""}, "invalid IPv4 address"),
        ({"ip": 5}, "ip must be a string"),
        ({"ip": "224.0.0.1/24"}, "cannot be an interface address"),
        ({"ip": "0.0.0.0/24"}, "cannot be an interface address"),
        ({"mac": "zz:zz"}, "invalid MAC address"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"mac": 7}, "mac must be a string"),
        ({"gateway": "1.2.3"}, "invalid IPv4 address"),
        ({"mtu": 67}, "mtu must be an integer from 68 to 65535"),
        ({"mtu": 70000}, "mtu must be"),
        ({"mtu": "1500"}, "mtu must be"),
        ({"mode": "warp"}, "unknown receive mode"),
        ({"mode": "poll", "mode_params": {"budget": 0}}, "budget must be an integer"),
        ({"mode_params": {"nope": 1}}, "unknown receive-mode parameter"),
        ({"tcp": "fast"}, "tcp must be a TcpConfig"),
        ({"pcap": 3}, "pcap must be a file name"),
    ],
)
def test_stack_config_refuses(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        StackConfig(**fields)


def test_stack_checks_a_config_changed_after_construction() -> None:
    a, b = Wire.pair()
    try:
        cfg = StackConfig(nic=a)
        cfg.mtu = 10
        with pytest.raises(ValueError, match="mtu must be"):
            Stack(cfg)
        with pytest.raises(ValueError, match="must be a Nic"):
            Stack(StackConfig(nic="eth0"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="gateway must be another address"):
            Stack(StackConfig(nic=a, gateway="192.168.9.1"))
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"rto_min": 0}, "rto_min must be a positive number"),
        ({"rto_initial": -1}, "rto_initial must be"),
        ({"rto_max": 0.1, "rto_min": 0.2}, "rto_max .* below rto_min"),
        ({"msl": 0}, "msl must be"),
        ({"msl": "30"}, "msl must be"),
        ({"keepalive_idle": 0}, "keepalive_idle must be"),
        ({"user_timeout": 0}, "user_timeout must be None or > 0"),
        ({"syn_retries": -1}, "syn_retries must be an integer >= 0"),
        ({"max_retries": 0}, "max_retries must be an integer >= 1"),
        ({"keepalive_count": 0}, "keepalive_count must be"),
        ({"initial_cwnd_segments": 0}, "initial_cwnd_segments must be"),
        ({"congestion": "bbr"}, "congestion must be 'newreno' or 'cubic'"),
    ],
)
def test_tcp_config_refuses(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TcpConfig(**fields)


def test_tcp_config_still_clamps_sizes() -> None:
    cfg = TcpConfig(mss=10, send_buffer=1, recv_buffer=10**12, delayed_ack=9.0)
    assert cfg.mss == 88 and cfg.send_buffer == 1024 and cfg.recv_buffer == 64 * 1024 * 1024
    assert cfg.delayed_ack == 0.5
