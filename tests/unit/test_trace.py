"""``anp trace``'s tracer on two real stacks joined by the in-memory wire: a ping, a TCP
request and close, fragments, a closed UDP port and a corrupted frame, each traced layer by
layer; the filter; and detaching, which leaves the stack running its own methods."""

from __future__ import annotations

import asyncio

import pytest

from anp_async.obs.trace import (
    PATCHED,
    TraceFilterError,
    Tracer,
    format_record,
    is_traced,
    parse_filter,
)
from anp_async.proto.checksum import checksum
from tests.stackutil import wire_stacks


def _layers(recs: list[dict]) -> list[str]:
    return [r["layer"] for r in recs]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_ping_is_traced_layer_by_layer():
    async with wire_stacks() as (a, b):
        await a.ping("10.0.0.2")  # ARP done before tracing
        recs: list[dict] = []
        t = Tracer(b, recs.append).attach()
        await a.ping("10.0.0.2")
        t.detach()
        assert _layers(recs) == ["wake", "eth", "ip", "icmp", "tx"], recs
        wake, eth, ip, icmp, tx = recs
        assert "mode interrupt" in wake["text"] and wake["frame"] == eth["frame"] == 1
        assert wake["frames"] == 1 and wake["text"].endswith(", 1 frame")
        assert ip["src"] == "10.0.0.1" and ip["dst"] == "10.0.0.2" and ip["proto"] == "icmp"
        assert "echo-request" in icmp["text"] and icmp["counters"] == {"icmp.echo_replies_sent": 1}
        assert icmp["rules"] == ["RFC 792 / RFC 1122 3.2.2.6: echo request answered"]
        assert "echo-reply" in tx["text"]
        assert all(r["us"] >= 0 for r in recs if "us" in r)
        assert "#1 icmp" in format_record(icmp)


async def test_tcp_request_shows_states_and_transport_calls():
    async with wire_stacks() as (a, b):
        await b.start_server(_echo, "10.0.0.2", 7)
        await a.ping("10.0.0.2")
        recs: list[dict] = []
        t = Tracer(b, recs.append, filter="tcp").attach()
        r, w = await a.open_connection("10.0.0.2", 7)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        w.close()
        await w.wait_closed()
        await asyncio.sleep(0.05)
        t.detach()
        tcp = [x for x in recs if x["layer"] == "tcp"]
        states = [tuple(x["state"]) for x in tcp]
        assert states[0] == ("LISTEN", "SYN-RECEIVED")
        assert ("SYN-RECEIVED", "ESTABLISHED") in states
        assert ("ESTABLISHED", "CLOSE-WAIT") in states
        assert states[-1][1] == "CLOSED"
        assert tcp[0]["rules"] == ["RFC 9293 3.10.7.2: SYN on LISTEN: SYN-ACK sent"]
        app = [x["text"] for x in recs if x["layer"] == "app"]
        assert any("connection_made" in x for x in app)
        assert any("data_received(5 B)" in x for x in app)
        assert any("eof_received" in x for x in app)
        assert any("connection_lost(normal)" in x for x in app)
        tx = [x["text"] for x in recs if x["layer"] == "tx"]
        assert any("[SA]" in x for x in tx) and any("len 5" in x for x in tx)
        assert all(x["layer"] != "icmp" for x in recs)  # the filter held


async def test_drops_name_their_rule_and_fragments_reassemble():
    async with wire_stacks() as (a, b):
        await a.ping("10.0.0.2")
        recs: list[dict] = []
        t = Tracer(b, recs.append).attach()
        # A datagram to a closed UDP port: port unreachable (RFC 1122 4.1.3.1).
        tr, _ = await a.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("10.0.0.2", 9)
        )
        tr.sendto(b"x")
        # A ping of 3000 B travels as three fragments.
        await a.ping("10.0.0.2", size=3000)
        # A frame with a broken IPv4 header checksum.
        hdr = bytearray(20)
        hdr[0], hdr[8], hdr[9] = 0x45, 64, 17
        hdr[2:4] = (28).to_bytes(2, "big")
        hdr[12:16], hdr[16:20] = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        hdr[10:12] = (checksum(bytes(hdr)) ^ 1).to_bytes(2, "big")
        eth = bytes.fromhex(b.mac.replace(":", "")) + bytes.fromhex(a.mac.replace(":", ""))
        a.nic.send([eth + b"\x08\x00", bytes(hdr), bytes(8)])
        await asyncio.sleep(0.05)
        tr.close()
        t.detach()
        udp = next(x for x in recs if x["layer"] == "udp")
        assert udp["drop"] and "udp.port_unreachable_sent" in udp["counters"]
        assert "RFC 1122 3.2.2.1 / 4.1.3.1: ICMP port unreachable sent" in udp["rules"]
        ips = [x for x in recs if x["layer"] == "ip"]
        frags = [x for x in ips if "frag off" in x["text"]]
        assert len(frags) == 3 and "ip.reassembled" in frags[-1]["counters"]
        bad = [x for x in ips if "ip.ip_bad_checksum" in x.get("counters", {})]
        assert len(bad) == 1 and bad[0]["drop"]
        assert bad[0]["rules"] == ["RFC 791 3.1 / RFC 1122 3.2.1.2: header checksum must verify"]
        drops = []
        Tracer(b, drops.append, filter="drop", count=1).attach()
        a.nic.send([eth + b"\x08\x00", bytes(hdr), bytes(8)])
        await asyncio.sleep(0.05)
        assert [x["layer"] for x in drops] == ["wake", "eth", "ip"]
        assert not is_traced(b) and not PATCHED  # count reached: the tracer detached itself


async def test_detach_restores_the_stack_and_count_stops():
    async with wire_stacks(mode="coalesce") as (a, b):
        await a.ping("10.0.0.2")
        recs: list[dict] = []
        t = Tracer(b, recs.append, count=2).attach()
        with pytest.raises(RuntimeError):
            Tracer(b, recs.append).attach()
        assert is_traced(b) and (type(b.tcp), "input") in PATCHED
        for _ in range(4):
            await a.ping("10.0.0.2")
        assert t.done and not t.attached and t.emitted == 2
        assert len([x for x in recs if x["layer"] == "wake"]) == 2
        assert "rx_frames=" in recs[0]["text"]  # the mode's parameters
        assert not is_traced(b) and not PATCHED
        # The classes have their own functions back; the instances were never written to.
        assert "_rx_frame" in type(b).__dict__ and not hasattr(type(b)._rx_frame, "__wrapped__")
        assert "_rx_frame" not in b.__dict__ and "input" not in b.tcp.__dict__


def test_filter_grammar():
    from anp_async.obs.trace import FrameInfo

    f = FrameInfo(protos={"eth", "ip", "tcp"}, hosts={"10.0.0.1"}, ports={80, 5555})
    assert parse_filter("tcp and port 80")(f)
    assert not parse_filter("udp or port 81")(f)
    assert parse_filter("udp or host 10.0.0.1")(f)
    assert parse_filter("not icmp")(f) and not parse_filter("drop")(f)
    assert parse_filter("")(f)
    for bad in ("port", "port x", "tcp or", "frobnicate"):
        with pytest.raises(TraceFilterError):
            parse_filter(bad)


async def test_trace_cost_bench_leaves_nothing_behind():
    from anp_async.bench.trace_cost import measure

    res = await measure(requests=100, rounds=3)
    assert res["hooks_left_after_detach"] == [] and not PATCHED
    # Per request the traced server records: wake, eth, ip, udp, app, tx.
    assert res["records_per_request"] == 6.0
    assert set(res["us_per_request"]) == {"never", "control", "off", "on"}


async def test_tcp_over_ipv6_is_traced_with_its_addresses():
    from anp_async import Stack, StackConfig
    from anp_async.nic.wire import Wire
    from tests.stackutil import fast_tcp

    na, nb = Wire.pair()
    ca = StackConfig(nic=na, ip="10.0.0.1/24", ip6="fd00::1/64", dad_transmits=0, tcp=fast_tcp())
    cb = StackConfig(nic=nb, ip="10.0.0.2/24", ip6="fd00::2/64", dad_transmits=0, tcp=fast_tcp())
    async with Stack(ca) as a, Stack(cb) as b:
        await b.start_server(_echo, "::", 7)
        assert await a.ping("fd00::2", timeout=1.0) > 0  # neighbours known
        recs: list[dict] = []
        t = Tracer(b, recs.append, filter="tcp and host fd00::1").attach()
        r, w = await a.open_connection("fd00::2", 7)
        w.write(b"six")
        assert await r.readexactly(3) == b"six"
        w.close()
        await w.wait_closed()
        await asyncio.sleep(0.05)
        t.detach()
        tcp = [x for x in recs if x["layer"] == "tcp"]
        assert tcp and all(x["src"] == "fd00::1" for x in tcp)
        assert tuple(tcp[0]["state"]) == ("LISTEN", "SYN-RECEIVED")
        tx = [x["text"] for x in recs if x["layer"] == "tx"]
        assert any(x.startswith("TCP [fd00::2]:7 > [fd00::1]:") for x in tx), tx
        app = [x["text"] for x in recs if x["layer"] == "app"]
        assert any("data_received(3 B) ([fd00::1]:" in x for x in app), app
