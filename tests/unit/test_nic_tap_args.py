"""TapNic.open refuses bad arguments with a ValueError that says why, before it touches a
device (so these run without root and create nothing)."""

from __future__ import annotations

import pytest

from anp_async.nic.tap import TapNic


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "x" * 16}, "longer than 15 bytes"),
        ({"name": "a/b"}, "not a valid interface name"),
        ({"name": "a:b"}, "not a valid interface name"),
        ({"name": "a b"}, "not a valid interface name"),
        ({"name": ".."}, "not a valid interface name"),
        ({"name": "tap\x07"}, "unprintable"),
        ({"name": 5}, "non-empty string"),
        ({"name": "t0", "mtu": 67}, "mtu must be an integer from 68 to 65535"),
        ({"name": "t0", "mtu": 65536}, "mtu must be"),
        ({"name": "t0", "mtu": "1500"}, "mtu must be"),
        ({"name": "t0", "mtu": True}, "mtu must be"),
        ({"name": "t0", "peer": "10.0.0.1/33"}, "not an IPv4 address with prefix"),
        ({"name": "t0", "peer": "300.0.0.1/24"}, "not an IPv4 address with prefix"),
        ({"name": "t0", "peer": "10.0.0.1/x"}, "not an IPv4 address with prefix"),
        ({"name": "t0", "peer": "224.0.0.1/24"}, "cannot be an interface address"),
        ({"name": "t0", "peer": "10.0.0.255/24"}, "cannot be an interface address"),
        ({"name": "t0", "peer": 7}, "address/prefix string"),
    ],
)
def test_open_validates_before_touching_anything(kwargs: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TapNic.open(**kwargs)


def test_missing_namespace_is_an_oserror() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TapNic.open("t0", netns="anp-no-such-namespace-x")
