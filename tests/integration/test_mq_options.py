"""Multi-queue host: every stack option reaches the workers (anp up --queues 2 with --trace,
--metrics, --recovery, --congestion), UDP ports steered back to the choosing worker, and a
dead worker's connections reset when it is not restarted. Each test in a fresh netns."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anp_async import control
from anp_async.mq import HostConfig, MultiQueueHost
from anp_async.nic.netns import Netns, unique_name
from anp_async.nic.steering import steer_queue
from tests.netutil import KERNEL_CIDR, STACK_IP, echo_round

pytestmark = pytest.mark.root
TAP = "anpmqo0"


def _ctl(path: str, req: dict) -> dict:
    out = control.call(path, req)
    assert out["ok"], out
    return out


def _http_get(ns: Netns, port: int, path: str) -> str:
    with ns.enter():
        s = socket.create_connection((STACK_IP, port), timeout=5)
    with s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def test_anp_up_queues_passes_stack_options_traces_and_serves_summed_metrics() -> None:
    ns_name, tap = unique_name("anp-mqo"), "anpmqo1"
    sock = control.socket_path(tap)
    argv = [sys.executable, "-m", "anp_async.cli", "up", "--queues", "2", "--tap", tap,
            "--netns", ns_name, "--echo", "7", "--metrics", "9100", "--recovery", "sack",
            "--congestion", "cubic", "--ecn", "on", "--trace", "tcp and port 7",
            "--pin-cpus", "--no-restart"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = proc.stdout.readline()
        assert "2 queues" in banner and "metrics port 9100" in banner, banner + (
            proc.stderr.read() if proc.poll() is not None else ""
        )
        ns = Netns(ns_name)
        cpus = sorted(os.sched_getaffinity(0))
        workers = _ctl(sock, {"cmd": "info"})["info"]["workers"]
        for w in workers:  # --pin-cpus: worker i runs on the i-th CPU only
            assert os.sched_getaffinity(w["pid"]) == {cpus[w["index"] % len(cpus)]}
        with ns.enter():
            socks = [socket.create_connection((STACK_IP, 7), timeout=5) for _ in range(8)]
        owners = [steer_queue(s.getsockname()[1], 7, 2) for s in socks]
        for i, s in enumerate(socks):
            assert echo_round(s, b"hi %d\n" % i) == b"hi %d\n" % i
        conns = _ctl(sock, {"cmd": "stats"})["stats"]["tcp"]["connections"]
        mine = [c for c in conns if c.get("local", "").endswith(":7")]
        assert len(mine) == 8 and {c["worker"] for c in mine} == set(owners)
        # --recovery sack: SACK without RACK; --congestion cubic; on every worker
        assert all(c["sack"] and not c["rack"] and c["congestion"] == "cubic" for c in mine)
        text = _http_get(ns, 9100, "/metrics")
        assert text.startswith("HTTP/1.1 200"), text[:200]
        lines = {ln.rpartition(" ")[0]: float(ln.rpartition(" ")[2])
                 for ln in text.split("\r\n\r\n", 1)[1].splitlines() if ln and ln[0] != "#"}  # fmt: skip
        per = [lines[f'anp_tcp_passive_opens_total{{worker="{q}",stack="{STACK_IP}"}}'] for q in (0, 1)]
        total = lines[f'anp_tcp_passive_opens_total{{stack="{STACK_IP}"}}']
        # the metrics connection itself is one more passive open, on one of the workers
        assert all(per[q] - owners.count(q) in (0, 1) for q in (0, 1)), (per, owners)
        assert total == sum(per) == 9 and lines["anp_mq_workers_alive"] == 2
        # --no-restart: a killed worker stays dead, its flows are reset, the other serves
        victim = owners[0]
        os.kill(workers[victim]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _ctl(sock, {"cmd": "info"})["info"]["workers"][victim]["alive"]:
            assert time.monotonic() < deadline, "the death was not noticed"
            time.sleep(0.1)
        for s, owner in zip(socks, owners, strict=True):
            s.settimeout(3)
            if owner != victim:
                assert echo_round(s, b"still\n") == b"still\n"
                continue
            with pytest.raises(ConnectionResetError):
                s.sendall(b"gone\n")
                s.recv(100)
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        err = proc.stderr.read()
        for q in set(owners):  # each worker traced its own connections, tagged
            assert f"[w{q}] " in err and "> 7 [S]" in err, err[-2000:]
        traced = [ln for ln in err.splitlines() if ln.startswith("[w")]
        # the filter holds: no frame of the metrics connection (port 9100; a bare "9100"
        # may be part of a sequence number)
        assert traced and not any(re.search(r":9100\b", ln) for ln in traced)
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Netns(ns_name).delete()


Host = tuple[MultiQueueHost, asyncio.AbstractEventLoop]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    try:
        yield lp
    finally:
        lp.call_soon_threadsafe(lp.stop)
        t.join(5)
        lp.close()


def _start(loop: asyncio.AbstractEventLoop, cfg: HostConfig) -> MultiQueueHost:
    host = MultiQueueHost(cfg)
    asyncio.run_coroutine_threadsafe(host.start(), loop).result(60)
    return host


def _stop(loop: asyncio.AbstractEventLoop, host: MultiQueueHost) -> None:
    asyncio.run_coroutine_threadsafe(host.close(), loop).result(30)


def _udp_echo_server(ns: Netns, n: int, stop: threading.Event) -> tuple[list[int], threading.Thread]:
    socks = []
    with ns.enter():
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("10.0.0.1", 0))
            socks.append(s)
    ports = [s.getsockname()[1] for s in socks]

    def serve() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], 0.1)
            for s in ready:
                data, addr = s.recvfrom(2048)
                s.sendto(data, addr)
        for s in socks:
            s.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return ports, t


def test_udp_ports_workers_choose_steer_back_to_them(
    netns: Netns, tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    ports, t = _udp_echo_server(netns, 8, stop)
    monkeypatch.setenv("ANP_MQ_UDP_PORTS", ",".join(map(str, ports)))
    monkeypatch.setenv("ANP_MQ_OUT", str(tmp_path))
    cfg = HostConfig(tap=TAP, queues=2, netns=netns, peer=KERNEL_CIDR,
                     control=str(tmp_path / "mq.sock"), setup="tests.mqhooks:udp_exchange")  # fmt: skip
    host = _start(loop, cfg)
    try:
        files = [tmp_path / f"w{q}-udp.json" for q in (0, 1)]
        deadline = time.monotonic() + 20
        while not all(f.exists() for f in files):
            assert time.monotonic() < deadline, "the workers did not finish their UDP exchange"
            time.sleep(0.1)
        misdirected = 0
        for q, f in enumerate(files):
            doc = json.loads(f.read_text())
            assert "error" not in doc, (q, doc)
            c, u = doc["connected"], doc["unconnected"]
            # a connected endpoint's port is steered to its worker, and the echo came back
            assert steer_queue(c["port"], ports[0], 2) == q and c["got"], (q, c)
            # an unconnected endpoint's port is owned by its worker; every echo came back
            assert u["port"] % 2 == q and u["from"] == sorted(ports), (q, u)
            misdirected += sum(1 for p in ports if steer_queue(u["port"], p, 2) != q)
        handed = [_ctl(cfg.control or "", {"cmd": "stats", "worker": q})["stats"]["udp"]
                  .get("handed_on", 0) for q in (0, 1)]  # fmt: skip
        assert misdirected > 0 and sum(handed) >= misdirected, (handed, misdirected)
    finally:
        _stop(loop, host)
        stop.set()
        t.join(5)


def test_without_restart_a_dead_workers_connections_are_reset(
    netns: Netns, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    cfg = HostConfig(tap=TAP, queues=2, netns=netns, peer=KERNEL_CIDR, echo=7, restart=False,
                     control=str(tmp_path / "mq.sock"))  # fmt: skip
    host = _start(loop, cfg)
    socks: list[socket.socket] = []
    try:
        with netns.enter():
            socks = [socket.create_connection((STACK_IP, 7), timeout=5) for _ in range(12)]
        owners = [steer_queue(s.getsockname()[1], 7, 2) for s in socks]
        assert set(owners) == {0, 1}
        for s in socks:
            assert echo_round(s, b"before\n") == b"before\n"
        host.kill_worker(0, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not host.deaths:
            assert time.monotonic() < deadline, "the death was not noticed"
            time.sleep(0.05)
        assert host.pids()[0] is None  # not restarted
        for s, owner in zip(socks, owners, strict=True):
            if owner == 1:
                assert echo_round(s, b"after\n") == b"after\n"
                continue
            s.settimeout(3)  # a reset comes at the next segment, not after retransmissions
            t0 = time.monotonic()
            with pytest.raises(ConnectionResetError):
                s.sendall(b"after\n")
                s.recv(100)
            assert time.monotonic() - t0 < 2.5
        info = _ctl(cfg.control or "", {"cmd": "info"})["info"]
        assert [w["alive"] for w in info["workers"]] == [False, True] and info["deaths"]
    finally:
        for s in socks:
            s.close()
        _stop(loop, host)
        assert not os.path.exists(cfg.control or "")


def test_a_stack_config_runs_as_a_host_ipv6_included_with_one_queue(
    netns: Netns, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    from anp_async import StackConfig, TcpConfig

    cfg = StackConfig(queues=1, ip6="fd00::2/64", dad_transmits=0, mode="coalesce",
                      mode_params={"rx_frames": 4}, tcp=TcpConfig(congestion="cubic"))  # fmt: skip
    hc = HostConfig.from_stack_config(cfg, tap=TAP, peer=KERNEL_CIDR, netns=netns,
                                      peer6="fd00::1/64", echo=7,
                                      control=str(tmp_path / "mq.sock"))  # fmt: skip
    host = _start(loop, hc)
    try:
        with netns.enter():
            s6 = socket.create_connection(("fd00::2", 7), timeout=5)
            s4 = socket.create_connection((STACK_IP, 7), timeout=5)
        with s6, s4:
            assert echo_round(s6, b"six\n") == b"six\n" and echo_round(s4, b"four\n") == b"four\n"
            st = _ctl(hc.control or "", {"cmd": "stats"})["stats"]
            assert st["mode"]["name"] == "coalesce" and st["mode"]["params"]["rx_frames"] == 4
            assert {c["congestion"] for c in st["tcp"]["connections"]} == {"cubic"}
    finally:
        _stop(loop, host)
