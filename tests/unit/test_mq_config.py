"""StackConfig(queues=N) and what reaches the workers: every stack field, UDP port rules,
the host's metrics text."""

from __future__ import annotations

import dataclasses

import pytest

from anp_async import Stack, StackConfig
from anp_async.mq import HostConfig, MultiQueueHost
from anp_async.mq.metrics import render_host
from anp_async.mq.spec import WorkerSpec
from anp_async.mq.worker import own_udp_ports, stack_config
from anp_async.nic.steering import steer_queue
from anp_async.nic.wire import Wire
from anp_async.obs.metrics import parse_text
from anp_async.proto.tcp.config import TcpConfig

#: A value other than the default for every StackConfig field a worker's stack must get.
#: A new StackConfig field fails test_every_stack_field_reaches_the_workers until it is
#: listed here -- and carried to the workers.
CHANGED = {
    "ip": "10.9.0.7/16",
    "mac": "02:aa:bb:cc:dd:ee",
    "gateway": "10.9.0.1",
    "ip6": "fd00:9::7/64",
    "gateway6": "fd00:9::1",
    "dad_transmits": 0,
    "mtu": 9000,
    "mode": "coalesce",
    "mode_params": {"rx_frames": 8, "rx_usecs": 30},
    "tcp": TcpConfig(congestion="cubic", sack=True, rack=False, ecn=True, nodelay=True,
                     recv_buffer=1 << 20, rto_min=0.3),  # fmt: skip
    "pcap": "/tmp/x.pcap",
    "icmp_port_unreachable": False,
}
NOT_PER_WORKER = {"nic", "queues"}


def test_queues_is_validated() -> None:
    assert StackConfig().queues == 1
    for bad in (0, -1, 257, True, "2", 1.5):
        with pytest.raises(ValueError, match="queues"):
            StackConfig(queues=bad)  # type: ignore[arg-type]


def test_a_stack_with_more_queues_names_the_way() -> None:
    a, _ = Wire.pair()
    with pytest.raises(ValueError, match=r"MultiQueueHost\.from_stack_config"):
        Stack(StackConfig(nic=a, queues=2))


def test_from_stack_config_wants_no_nic() -> None:
    a, _ = Wire.pair()
    with pytest.raises(ValueError, match="opens the multi-queue TAP itself"):
        HostConfig.from_stack_config(StackConfig(nic=a, queues=2))


def test_ipv6_with_several_queues_is_refused_clearly() -> None:
    cfg = StackConfig(queues=2, ip6="fd00::2/64")
    with pytest.raises(ValueError, match="IPv6 with queues > 1"):
        MultiQueueHost.from_stack_config(cfg, tap="anpx0")


def test_every_stack_field_reaches_the_workers() -> None:
    names = {f.name for f in dataclasses.fields(StackConfig)} - NOT_PER_WORKER
    assert names == set(CHANGED), "list the new StackConfig field in CHANGED (and carry it)"
    default = StackConfig()
    for k, v in CHANGED.items():
        assert getattr(default, k) != v, k
    cfg = StackConfig(queues=1, **CHANGED)  # type: ignore[arg-type]
    host = MultiQueueHost.from_stack_config(cfg, tap="anpx0", peer="10.9.0.1/16", echo=7)
    assert host.config.queues == 1 and host.config.echo == 7 and host.config.tap == "anpx0"
    spec = WorkerSpec.from_json(host.worker_spec(0, -1, b"\x02" * 6).to_json())
    nic, _ = Wire.pair()
    got = stack_config(spec, nic)
    for k, v in CHANGED.items():
        if k == "tcp":
            assert dataclasses.asdict(got.tcp) == dataclasses.asdict(v), k
        else:
            assert getattr(got, k) == v, k
    # with two queues each worker records into its own file
    cfg2 = StackConfig(queues=2, **{**CHANGED, "ip6": None, "gateway6": None})  # type: ignore[arg-type]
    host2 = MultiQueueHost.from_stack_config(cfg2, tap="anpx0")
    specs = [WorkerSpec.from_json(host2.worker_spec(i, -1, b"").to_json()) for i in (0, 1)]
    assert [s.pcap for s in specs] == ["/tmp/x.w0.pcap", "/tmp/x.w1.pcap"]
    assert all(TcpConfig(**s.tcp).ecn and not TcpConfig(**s.tcp).rack for s in specs)


def test_pinned_workers_take_the_allowed_cpus_in_turn() -> None:
    import os

    cpus = sorted(os.sched_getaffinity(0))
    host = MultiQueueHost(HostConfig(tap="anpx0", queues=3, pin_cpus=True))
    assert [host.worker_spec(i, -1, b"").cpu for i in range(3)] == [
        cpus[i % len(cpus)] for i in range(3)
    ]
    assert MultiQueueHost(HostConfig(tap="anpx0", queues=2)).worker_spec(1, -1, b"").cpu is None


def test_udp_ports_a_worker_chooses_come_back_to_it() -> None:
    ok = own_udp_ports(1, 2)
    connected = [p for p in range(40000, 40400) if ok(p, 53)]
    assert connected and all(steer_queue(p, 53, 2) == 1 for p in connected)
    unconnected = [p for p in range(40000, 40400) if ok(p, None)]
    assert unconnected and all(p % 2 == 1 for p in unconnected)  # the worker that owns them


def test_render_host_sums_and_labels_each_worker() -> None:
    def worker(opens: int) -> dict:
        return {"address": "10.0.0.2", "mode": {"name": "interrupt", "wakeups": opens},
                "tcp": {"passive_opens": opens, "connections": [
                    {"local": "10.0.0.2:7", "remote": f"10.0.0.1:{opens}", "state": "ESTABLISHED",
                     "cwnd": 10}]}}  # fmt: skip

    merged = {"address": "10.0.0.2", "mode": {"name": "interrupt", "wakeups": 5},
              "tcp": {"passive_opens": 5, "connections": worker(2)["tcp"]["connections"]
                      + worker(3)["tcp"]["connections"]},
              "workers": {"0": worker(2), "1": worker(3)},
              "mq": {"queues": 2, "alive": 2, "deaths": []}}  # fmt: skip
    text = render_host(merged)
    assert text.endswith("# EOF\n")
    assert text.count("# TYPE anp_tcp_passive_opens counter") == 1
    m = parse_text(text)
    assert m['anp_tcp_passive_opens_total{stack="10.0.0.2"}'] == 5
    assert m['anp_tcp_passive_opens_total{worker="0",stack="10.0.0.2"}'] == 2
    assert m['anp_tcp_passive_opens_total{worker="1",stack="10.0.0.2"}'] == 3
    assert m["anp_mq_workers_alive"] == 2 and m["anp_mq_deaths_total"] == 0
    assert sum(1 for k in m if k.startswith("anp_tcp_sock_cwnd")) == 2  # each connection once
