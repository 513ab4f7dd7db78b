"""FamilyPorts: who holds a port, per address family (Linux's rules for AF_INET,
IPV6_V6ONLY and dual-stack AF_INET6 sockets)."""

from __future__ import annotations

from anp_async.proto.ports import FamilyPorts, pick_free


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


def test_a_port_is_shared_only_when_every_holder_agreed() -> None:
    # Linux's SO_REUSEADDR on UDP: both sockets must set it.
    t: FamilyPorts[str] = FamilyPorts()
    t.add(5201, "plain", v6=False)
    assert t.conflict(5201, v6=False, share=True)  # the holder did not agree
    t.remove(5201, "plain")
    t.add(5201, "a", v6=False, share=True)
    assert t.conflict(5201, v6=False)  # the newcomer did not agree
    assert not t.conflict(5201, v6=False, share=True)
    t.add(5201, "b", v6=False, share=True)
    assert not t.conflict(5201, v4=False)  # IPv6 is still free
    assert sorted(t.items()) == [(5201, "a"), (5201, "b")]
    t.remove(5201, "a")
    assert t.items() == [(5201, "b")] and t.held(5201)


def test_a_shared_port_reaches_the_connected_holder_else_the_newest() -> None:
    t: FamilyPorts[str] = FamilyPorts()
    remotes: dict[str, tuple[str, int] | None] = {"old": None, "conn": None, "new": None}
    for name in ("old", "conn", "new"):
        t.add(5201, name, share=True)
    remotes["conn"] = ("10.0.0.1", 4000)
    pick = remotes.__getitem__
    assert t.get(5201, False, ("10.0.0.1", 4000), pick) == "conn"
    assert t.get(5201, True, ("10.0.0.1", 4001), pick) == "new"  # newest unconnected
    assert t.get(5201, False) == "new"  # (no source given: the newest)
    t.remove(5201, "new")
    assert t.get(5201, False, ("10.0.0.9", 53), pick) == "old"
    t.remove(5201, "old")
    # Only a socket connected elsewhere holds it: no holder takes the datagram.
    assert t.get(5201, False, ("10.0.0.1", 4001), pick) is None
    assert t.get(5201, False, ("10.0.0.1", 4000), pick) == "conn"
    t.add(5201, "conn2", share=True)
    remotes["conn2"] = ("10.0.0.2", 1)
    assert t.get(5201, False, ("10.0.0.1", 4001), pick) is None


def test_pick_free_draws_then_scans_and_says_when_none_is_left() -> None:
    t: FamilyPorts[str] = FamilyPorts()
    for p in (1, 2, 3):
        t.add(p, f"x{p}", v6=False)
    draws = iter([2, 5, 4])  # a held one, then one that ok refuses, then a free one
    assert pick_free(t, range(1, 6), lambda p: p != 5, lambda r: next(draws)) == 4
    # (when every draw misses, the scan finds the free one in order)
    assert pick_free(t, range(1, 6), lambda p: p != 4, lambda r: 1) == 5
    assert pick_free(t, range(1, 4), lambda p: True, lambda r: 1) is None


def test_pick_spreads_a_group_by_the_flow_and_follows_its_changes() -> None:
    ports: FamilyPorts[str] = FamilyPorts()
    assert ports.pick(80, False, 7) is None
    for name in ("a", "b", "c"):
        ports.add(80, name, v6=False, share=True)
    assert [ports.pick(80, False, flow) for flow in range(6)] == ["a", "b", "c"] * 2
    assert ports.pick(80, True, 0) is None  # the IPv6 table holds none of them
    ports.remove(80, "b")
    assert {ports.pick(80, False, flow) for flow in range(10)} == {"a", "c"}


def test_an_unconnected_reuseport_group_is_picked_by_the_flow() -> None:
    ports: FamilyPorts[str] = FamilyPorts()
    remote = {"a": None, "b": None, "c": ("peer", 9), "d": None}
    group = {"a", "b", "c"}
    for name in ("a", "b", "c"):
        ports.add(53, name, v6=False, share=True)

    def get(src: object, flow: int) -> str | None:
        return ports.get(53, False, src, remote.get, flow=flow, in_group=group.__contains__)

    assert get(("peer", 9), 0) == "c"  # the connected one first, as before
    assert [get(("x", 1), flow) for flow in range(4)] == ["a", "b", "a", "b"]
    # A newest unconnected socket outside the group takes what no connected one does.
    ports.add(53, "d", v6=False, share=True)
    assert {get(("x", 1), flow) for flow in range(4)} == {"d"}
