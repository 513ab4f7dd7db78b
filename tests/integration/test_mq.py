"""Multi-queue TAP and stack workers (anp_async.mq) against the kernel, in a fresh netns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anp_async import control
from anp_async.mq import HostConfig, MultiQueueHost
from anp_async.nic.netns import Netns
from anp_async.nic.steering import steer_icmp, steer_queue
from anp_async.nic.tap import TapNic
from tests.netutil import KERNEL_CIDR, STACK_IP, echo_round

pytestmark = pytest.mark.root
TAP = "anpmq0"


def _ctl(path: str, req: dict) -> dict:
    out = control.call(path, req)
    assert out["ok"], out
    return out


def _worker_stats(host: MultiQueueHost, index: int) -> dict:
    path = host.config.control
    assert path is not None
    return _ctl(path, {"cmd": "stats", "worker": index})["stats"]


def test_multiqueue_tap_steers_each_flow_to_the_queue_steer_queue_names(netns: Netns) -> None:
    nics = TapNic.open_queues(TAP, 2, peer=KERNEL_CIDR, netns=netns, vnet_hdr=False)
    try:
        netns.run(["ip", "neigh", "add", STACK_IP, "lladdr", "02:00:00:00:00:02", "dev", TAP],
                  check=True)  # fmt: skip
        sent = []
        with netns.enter():
            for sport in range(40000, 40016):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("10.0.0.1", sport))
                    s.sendto(b"x", (STACK_IP, 5000))
                sent.append(sport)
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 3
        while len(seen) < len(sent) and time.monotonic() < deadline:
            select.select(nics, [], [], 0.2)
            for q, nic in enumerate(nics):
                for f in nic.recv_batch(64):
                    if f[12:14] == b"\x08\x00" and f[23] == 17:
                        seen[struct.unpack_from("!H", f, 34)[0]] = q
        assert sorted(seen) == sent
        assert all(seen[p] == steer_queue(p, 5000, 2) for p in sent), seen
        assert set(seen.values()) == {0, 1}  # both queues used
    finally:
        for nic in nics:
            nic.close()


Host = tuple[MultiQueueHost, asyncio.AbstractEventLoop]


@contextlib.contextmanager
def running_host(netns: Netns, tmp_path: Path, setup: str | None = None) -> Iterator[Host]:
    """Two workers serving TCP/UDP echo on port 7; the supervisor's loop runs in a thread."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    cfg = HostConfig(tap=TAP, queues=2, netns=netns, peer=KERNEL_CIDR, echo=7,
                     control=str(tmp_path / "mq.sock"), setup=setup)  # fmt: skip
    host = MultiQueueHost(cfg)
    try:
        asyncio.run_coroutine_threadsafe(host.start(), loop).result(60)
        yield host, loop
    finally:
        asyncio.run_coroutine_threadsafe(host.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


@pytest.fixture
def host2(netns: Netns, tmp_path: Path) -> Iterator[Host]:
    with running_host(netns, tmp_path) as h:
        yield h


def _icmp_echo(ident: int, seq: int) -> bytes:
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"mq-test!"
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr + b"\0" * (len(hdr) % 2)))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return hdr[:2] + struct.pack("!H", ~s & 0xFFFF) + hdr[4:]


def test_every_worker_answers_arp_and_icmp(host2: Host, netns: Netns) -> None:
    host, _ = host2
    # ARP is steered by the sender address's last byte: .1 -> queue 1, .4 -> queue 0.
    netns.run(["ip", "addr", "add", "10.0.0.4/24", "dev", TAP], check=True)
    for src in ("10.0.0.1", "10.0.0.4"):
        r = netns.run(["arping", "-c", "1", "-w", "3", "-I", TAP, "-s", src, STACK_IP])
        assert r.returncode == 0, r.stdout + r.stderr
    # ICMP echo is steered by its identifier: one identifier for each queue.
    idents = {q: next(i for i in range(1, 1000) if steer_icmp(i, 2) == q) for q in (0, 1)}
    with netns.enter():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with raw:
        raw.settimeout(3)
        for ident in idents.values():
            raw.sendto(_icmp_echo(ident, 1), (STACK_IP, 0))
            deadline = time.monotonic() + 3
            while True:
                assert time.monotonic() < deadline, f"no echo reply for identifier {ident}"
                pkt = raw.recv(2048)
                ihl = (pkt[0] & 15) * 4
                if pkt[ihl] == 0 and struct.unpack_from("!H", pkt, ihl + 4)[0] == ident:
                    break
    for q in (0, 1):
        st = _worker_stats(host, q)
        assert st["arp"]["replies_sent"] >= 1, (q, st["arp"])
        assert st["icmp"]["echo_replies_sent"] >= 1, (q, st["icmp"])


def _connect_many(netns: Netns, n: int, port: int = 7) -> list[socket.socket]:
    socks = []
    with netns.enter():
        for _ in range(n):
            s = socket.create_connection((STACK_IP, port), timeout=5)
            socks.append(s)
    return socks


def test_a_listener_is_served_by_both_workers(host2: Host, netns: Netns) -> None:
    host, _ = host2
    socks = _connect_many(netns, 32)
    try:
        owners = [steer_queue(s.getsockname()[1], 7, 2) for s in socks]
        for i, s in enumerate(socks):
            assert echo_round(s, b"hello %d\n" % i) == b"hello %d\n" % i
        opens = [_worker_stats(host, q)["tcp"]["passive_opens"] for q in (0, 1)]
        assert opens == [owners.count(0), owners.count(1)]
        assert min(opens) > 0
        merged = _ctl(host.config.control or "", {"cmd": "stats"})["stats"]
        assert merged["tcp"]["passive_opens"] == 32
        assert merged["mq"]["alive"] == 2
        ports = {s.getsockname()[1]: q for s, q in zip(socks, owners, strict=True)}
        listed = {
            int(c["remote"].rsplit(":", 1)[1]): c["worker"] for c in merged["tcp"]["connections"]
        }
        assert {p: listed.get(p) for p in ports} == ports  # anp ss sees every worker's
    finally:
        for s in socks:
            s.close()


def _kernel_echo_server(netns: Netns, stop: threading.Event) -> tuple[int, threading.Thread]:
    with netns.enter():
        lsock = socket.socket()
        lsock.bind(("0.0.0.0", 0))
    lsock.listen(64)
    lsock.settimeout(0.2)
    port = lsock.getsockname()[1]

    def serve() -> None:
        with lsock:
            while not stop.is_set():
                try:
                    c, _ = lsock.accept()
                except TimeoutError:
                    continue
                with c:
                    c.settimeout(5)
                    data = c.recv(100)
                    c.sendall(data)
                    c.recv(100)  # the stack closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t


def test_connections_the_stack_opens_land_on_their_worker(
    netns: Netns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    port, t = _kernel_echo_server(netns, stop)
    monkeypatch.setenv("ANP_MQ_PORT", str(port))
    monkeypatch.setenv("ANP_MQ_OUT", str(tmp_path))
    try:
        with running_host(netns, tmp_path, "tests.mqhooks:open_connections") as (host, _):
            deadline = time.monotonic() + 20
            files = [tmp_path / f"w{q}.json" for q in (0, 1)]
            while not all(f.exists() for f in files):
                assert time.monotonic() < deadline, "the workers did not finish their connections"
                time.sleep(0.1)
            for q, f in enumerate(files):
                doc = json.loads(f.read_text())
                assert "error" not in doc, (q, doc)
                assert len(doc["results"]) == 6 and all(r["ok"] for r in doc["results"])
                # each source port was chosen so that the kernel steers its flow to queue q
                assert all(steer_queue(r["port"], port, 2) == q for r in doc["results"])
                assert doc["ping"] > 0
            for q in (0, 1):
                st = _worker_stats(host, q)
                assert st["tcp"]["active_opens"] == 6
    finally:
        stop.set()
        t.join(5)


def test_a_killed_worker_is_reported_and_the_others_keep_serving(host2: Host, netns: Netns) -> None:
    host, loop = host2
    socks = _connect_many(netns, 16)
    try:
        owners = [steer_queue(s.getsockname()[1], 7, 2) for s in socks]
        assert set(owners) == {0, 1}
        for s in socks:
            assert echo_round(s, b"before\n") == b"before\n"
        old_pid = host.pids()[0]
        host.kill_worker(0, signal.SIGKILL)
        asyncio.run_coroutine_threadsafe(host.wait_restarted(0), loop).result(30)
        assert [d.index for d in host.deaths] == [0]
        assert "signal 9" in host.deaths[0].describe()
        info = _ctl(host.config.control or "", {"cmd": "info"})["info"]
        assert info["deaths"] and info["workers"][0]["pid"] != old_pid
        for s, owner in zip(socks, owners, strict=True):
            if owner == 1:  # the other worker's connections go on
                assert echo_round(s, b"after\n") == b"after\n"
            else:  # the dead worker's are gone: its successor resets them
                with pytest.raises((ConnectionResetError, BrokenPipeError)):
                    s.sendall(b"after\n")
                    if not s.recv(100):
                        raise ConnectionResetError("closed")
        new = _connect_many(netns, 8)
        for s in new:
            assert echo_round(s, b"new\n") == b"new\n"
            s.close()
    finally:
        for s in socks:
            s.close()


def test_bench_scale_quick_writes_table_results_and_plot(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "scale"
    argv = [sys.executable, "-m", "anp_async.cli", "bench", "scale", "--quick", "--no-kernel",
            "--bulk-seconds", "0", "--queues", "1,2", "--out", str(out)]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "stack x2" in res.stdout and "handing a frame" in res.stdout
    doc = json.loads((out / "results.json").read_text())
    rates = {s["setup"]: s["rate"] for s in doc["summary"]}
    assert rates["stack x1"] > 0 and rates["stack x2"] > 0
    assert len(doc["summary"][1]["worker_cpu"]) == 2  # CPU of each worker
    assert (out / "scale.png").stat().st_size > 0


def test_anp_up_queues_serves_reports_every_worker_and_stops_cleanly() -> None:
    import subprocess
    import sys

    from anp_async.nic.netns import unique_name

    ns_name, tap = unique_name("anp-mqup"), "anpmqup0"
    sock = control.socket_path(tap)
    argv = [sys.executable, "-m", "anp_async.cli", "up", "--queues", "2", "--tap", tap,
            "--netns", ns_name, "--echo", "7"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "2 queues" in banner, banner + (proc.stderr.read() if proc.poll() else "")
        ping = Netns(ns_name).run(["ping", "-c", "1", "-W", "2", STACK_IP])
        assert ping.returncode == 0, ping.stdout
        info = _ctl(sock, {"cmd": "info"})["info"]
        assert [w["alive"] for w in info["workers"]] == [True, True]
        pids = [w["pid"] for w in info["workers"]]
        assert _ctl(sock, {"cmd": "set_mode", "mode": "coalesce", "params": {"rx_frames": 4}})
        assert [_ctl(sock, {"cmd": "mode", "worker": i})["mode"] for i in (0, 1)] == [
            "coalesce", "coalesce"]  # fmt: skip
        stats = _ctl(sock, {"cmd": "stats"})["stats"]
        assert stats["icmp"]["echo_replies_sent"] == 1 and set(stats["workers"]) == {"0", "1"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        for pid in pids:  # no worker outlives the host
            assert (
                not os.path.exists(f"/proc/{pid}")
                or "zombie" in open(f"/proc/{pid}/status").read().lower()
            )
        assert not Netns(ns_name).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Netns(ns_name).delete()
