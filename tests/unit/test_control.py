"""The control socket against a real Stack on the in-memory wire (Unix socket in tmp_path)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket

import pytest
from rich.console import Console

from anp_async import cli, control
from anp_async.control import ControlServer, NoStackError, handle_request
from anp_async.nic.wire import Wire
from anp_async.stack import Stack, StackConfig

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def two_stacks():
    a, b = Wire.pair()
    async with (
        Stack(StackConfig(nic=a, ip="10.0.0.1/24")) as peer,
        Stack(StackConfig(nic=b, ip="10.0.0.2/24")) as stack,
    ):
        yield peer, stack


async def call(path, req):
    """control.call is blocking (anp ctl has no loop): keep it off the stack's loop."""
    return await asyncio.to_thread(control.call, path, req)


async def test_handle_request_directly():
    async with two_stacks() as (_, stack):
        assert handle_request(stack, {"cmd": "mode"}) == {
            "ok": True,
            "mode": "interrupt",
            "params": {},
        }
        r = handle_request(stack, {"cmd": "set_mode", "mode": "poll", "params": {"budget": 8}})
        assert r == {"ok": True, "mode": "poll", "params": {"budget": 8}}
        assert stack.mode_name == "poll"
        bad = [
            ["not", "an", "object"],
            {"cmd": "nope"},
            {"cmd": "set_mode", "mode": "warp"},
            {"cmd": "set_mode"},
            {"cmd": "set_mode", "mode": "poll", "params": {"budget": "many"}},
            {"cmd": "set_mode", "mode": "poll", "params": {"frobs": 1}},
            {"cmd": "set_mode", "mode": "poll", "params": [1]},
        ]
        for req in bad:
            r = handle_request(stack, req)
            assert r["ok"] is False and r["error"], req
        assert stack.mode_name == "poll"  # a refused request changes nothing
        info = handle_request(stack, {"cmd": "info"}, {"tap": "t0"})["info"]
        assert info["tap"] == "t0" and info["ip"] == "10.0.0.2" and info["pid"] == os.getpid()


async def test_control_socket_roundtrip(tmp_path):
    path = str(tmp_path / "run" / "t0.sock")
    async with two_stacks() as (peer, stack), ControlServer(stack, path, {"tap": "t0"}):
        assert os.path.exists(path)
        assert await call(path, {"cmd": "mode"}) == {
            "ok": True,
            "mode": "interrupt",
            "params": {},
        }

        r = await call(path, {"cmd": "set_mode", "mode": "poll", "params": {"budget": 16}})
        assert r["ok"] and r["mode"] == "poll" and r["params"]["budget"] == 16
        assert stack.mode_name == "poll"
        assert await peer.ping("10.0.0.2", timeout=2.0) > 0  # still answering after the switch

        # ethtool -C: switching into coalesce, then changing one knob keeps the other.
        r = await call(path, {"cmd": "coalesce", "params": {"rx_usecs": 50, "rx_frames": 8}})
        assert (r["mode"], r["params"]["rx_usecs"], r["params"]["rx_frames"]) == (
            "coalesce",
            50,
            8,
        )
        r = await call(path, {"cmd": "coalesce", "params": {"rx_usecs": 20}})
        assert (r["params"]["rx_usecs"], r["params"]["rx_frames"]) == (20, 8)
        assert await peer.ping("10.0.0.2", timeout=2.0) > 0

        stats = (await call(path, {"cmd": "stats"}))["stats"]
        assert stats["mode"]["name"] == "coalesce"
        for layer in ("nic", "mode", "eth", "arp", "ip", "icmp", "udp", "tcp"):
            assert layer in stats, layer
        assert stats["nic"]["rx_frames"] >= 2
        json.dumps(stats)  # it crossed the socket as JSON, so it must re-encode

        r = await call(path, {"cmd": "set_mode", "mode": "warp"})
        assert r["ok"] is False and "warp" in r["error"]
        info = (await call(path, {"cmd": "info"}))["info"]
        assert info["socket"] == path and info["tap"] == "t0"
    assert not os.path.exists(path)  # removed on close


async def test_bad_lines_get_an_error_and_the_connection_survives(tmp_path):
    path = str(tmp_path / "t1.sock")
    async with two_stacks() as (_, stack), ControlServer(stack, path):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"this is not json\n\n" + json.dumps({"cmd": "mode"}).encode() + b"\n")
        await writer.drain()
        first = json.loads(await asyncio.wait_for(reader.readline(), 5))
        second = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert first == {"ok": False, "error": "request is not valid JSON"}
        assert second["ok"] and second["mode"] == "interrupt"
        # An over-long line is refused and the connection closed (bounded input).
        writer.write(b"x" * (control.MAX_LINE + 10) + b"\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert json.loads(answer)["ok"] is False
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_second_server_refused_and_stale_socket_replaced(tmp_path):
    path = str(tmp_path / "t2.sock")
    async with two_stacks() as (_, stack):
        async with ControlServer(stack, path):
            assert control.serving(path)
            with pytest.raises(FileExistsError):
                await ControlServer(stack, path).start()
            assert os.path.exists(path)  # the refused server did not remove ours
        # A socket file nobody serves (a killed process) is replaced.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        assert os.path.exists(path) and not control.serving(path)
        async with ControlServer(stack, path):
            assert (await call(path, {"cmd": "mode"}))["ok"]


async def test_no_stack_is_a_clear_error(tmp_path):
    path = str(tmp_path / "none.sock")
    with pytest.raises(NoStackError):
        control.call(path, {"cmd": "mode"})
    with pytest.raises(ValueError):
        control.socket_path("a/b")
    assert control.socket_path("anptap0") == "/run/anp/anptap0.sock"


async def test_anp_ctl_commands_against_a_running_stack(tmp_path, capsys):
    path = str(tmp_path / "t3.sock")

    def ctl(*argv):
        return asyncio.to_thread(cli.main, ["ctl", "--socket", path, *argv])

    async with two_stacks() as (peer, stack), ControlServer(stack, path):
        assert await peer.ping("10.0.0.2", timeout=2.0) > 0
        assert await ctl("mode") == 0
        assert capsys.readouterr().out.strip() == "mode interrupt"
        assert await ctl("mode", "poll", "--budget", "32") == 0
        assert capsys.readouterr().out.strip() == "mode poll (budget=32)"
        assert stack.mode_name == "poll" and stack.mode_params["budget"] == 32
        assert await ctl("coalesce", "--rx-usecs", "50") == 0
        assert stack.mode_name == "coalesce" and stack.mode_params["rx_usecs"] == 50
        capsys.readouterr()
        assert await ctl("stats", "--json") == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["mode"]["name"] == "coalesce"
        assert await ctl("stats") == 0
        out = capsys.readouterr().out
        assert "receive mode: coalesce" in out and "protocol counters" in out
        assert "rx_frames" in out
        # A knob of another mode is refused before anything is sent.
        assert await ctl("mode", "poll", "--rx-usecs", "5") == 2
        assert "--rx-usecs does not apply to mode poll" in capsys.readouterr().err
        assert stack.mode_name == "coalesce"
    capsys.readouterr()
    assert await ctl("mode") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no stack runs on TAP" in err


async def test_print_stats_renders_connections_table():
    stats = {
        "address": "10.0.0.2",
        "mac": "02:00:00:00:00:02",
        "nic": {"rx_frames": 3, "tx_frames": 4},
        "mode": {"name": "poll", "params": {"budget": 64}, "wakeups": 9, "cpu_seconds": 0.25},
        "ip": {"rx": 3},
        "tcp": {
            "segments_in": 5,
            "connections": [{"local": "10.0.0.2:7", "remote": "10.0.0.1:4000", "cwnd": 14600}],
        },
    }
    console = Console(record=True, width=200)
    cli.print_stats(stats, console)
    text = console.export_text()
    for word in ("receive mode: poll (budget=64)", "segments_in", "10.0.0.1:4000", "14600"):
        assert word in text, word
