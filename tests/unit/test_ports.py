"""FamilyPorts: who holds a port, per address family (Linux's rules for AF_INET,
IPV6_V6ONLY and dual-stack AF_INET6 sockets)."""

from __future__ import annotations

from anp_async.proto.ports import FamilyPorts


def test_an_ipv4_and_an_ipv6_only_item_share_a_port_a_dual_one_clashes() -> None:
    t: FamilyPorts[str] = FamilyPorts()
    assert not t.held(80) and not t.conflict(80)
    t.add(80, "inet", v6=False)
    assert t.held(80) and t.conflict(80) and t.conflict(80, v6=False)
    assert not t.conflict(80, v4=False)  # an IPV6_V6ONLY socket may join
    t.add(80, "v6only", v4=False)
    assert (t.get(80, v6=False), t.get(80, v6=True)) == ("inet", "v6only")
    assert sorted(t.items()) == [(80, "inet"), (80, "v6only")]
    t.remove(80, "inet")
    assert t.get(80, v6=False) is None and t.held(80)
    t.remove(80, "inet")  # not held any more: nothing happens
    t.remove(80, "v6only")
    assert not t.held(80) and t.items() == []


def test_a_dual_item_is_listed_once_and_released_from_both() -> None:
    t: FamilyPorts[str] = FamilyPorts()
    t.add(53, "dual")
    assert t.get(53, v6=False) == t.get(53, v6=True) == "dual"
    assert t.items() == [(53, "dual")]
    t.remove(53, "other")  # someone else's release leaves it
    assert t.held(53)
    t.remove(53, "dual")
    assert not t.held(53)


def test_entries_say_which_families_each_item_hears() -> None:
    t: FamilyPorts[str] = FamilyPorts()
    t.add(53, "dual")
    t.add(80, "inet", v6=False)
    t.add(80, "v6only", v4=False)
    assert sorted(t.entries()) == [
        (53, "dual", True, True), (80, "inet", True, False), (80, "v6only", False, True),
    ]  # fmt: skip
