"""``anp bench soak``: mixed traffic between the stack and the Linux kernel over a TAP, for
minutes, every byte checked; what it costs the stack in memory at the end.

    anp bench soak [--minutes 2] [--conns 16] [--loss 0.01] [--mode adaptive] [--json]

A namespace of its own holds the TAP's kernel end (10.0.0.1) and a kernel peer (plain
sockets, threads): an echo server for the stack's clients, and clients of its own that
talk to the stack's echo server. Both sides keep ``--conns`` connections busy with a mix:
request/response (small messages, one connection many times), bulk echoes (up to 1 MiB),
short connections, and connections the client aborts halfway. The stack's side of the
wire goes through the seeded fault injector (``--loss`` with some reordering and
duplication), the kernel retransmits as it does. Every echoed byte is compared.

Reported: connections each way (completed, aborted on purpose, failed), bytes checked,
the stack's retransmissions, the TCBs, buffered bytes and process memory at the end, and
whether the stack's TCBs all went away (CLOSED or TIME_WAIT) once the traffic stopped.
Exit status 0 when nothing was corrupted, nothing failed that should not and nothing hung.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from typing import Any

from .common import number_arg

HELP = "mixed stack<->kernel traffic over a TAP for minutes, every byte checked (soak)"

STACK_IP = "10.0.0.2"
KERNEL_IP = "10.0.0.1"
TAP = "anpsoak0"
ECHO_PORT = 7
#: Largest bulk echo (bytes).
BULK_MAX = 1 << 20

#: The kernel side: echo server on ECHO_PORT and clients to the stack's echo server, until
#: the deadline; prints one JSON line with what it saw. Bounded: socket timeouts, deadline.
KERNEL_PEER = r"""
import json, random, socket, sys, threading, time
stack_ip, port, conns, seconds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
deadline = time.monotonic() + seconds
stats = {"served": 0, "client_ok": 0, "client_failed": 0, "client_aborted": 0, "bytes": 0, "corrupt": 0, "errors": []}
lock = threading.Lock()
def note(k, n=1):
    with lock: stats[k] += n
def serve_one(c):
    try:
        c.settimeout(60)
        while (d := c.recv(1 << 16)):
            c.sendall(d)
        note("served")
    except OSError:
        pass
    finally:
        c.close()
# Listening before "ready" is printed: the stack's first SYNs follow at once (a listen()
# left to the server thread lost that race now and then, and Linux answers a SYN to a
# port nobody listens on with RST: four refused connects, seen with tcpdump).
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(256); s.settimeout(1)
def server():
    while time.monotonic() < deadline + 30:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()
def client(i):
    rng = random.Random(seed * 1000 + i)
    while time.monotonic() < deadline:
        kind = rng.choice(["rr", "bulk", "short", "abort"])
        try:
            c = socket.create_connection((stack_ip, port), timeout=30)
        except OSError as e:
            note("client_failed"); stats["errors"].append(f"connect: {e}"); time.sleep(0.2); continue
        try:
            msgs = [rng.randbytes(rng.randint(1, 2000)) for _ in range(rng.randint(5, 50))] if kind == "rr" else [rng.randbytes(rng.randint(1, 1 << 20 if kind == "bulk" else 3000))]
            for j, m in enumerate(msgs):
                c.sendall(m)
                if kind == "abort" and j == 0:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"); c.close(); note("client_aborted"); break
                got = bytearray()
                while len(got) < len(m):
                    d = c.recv(len(m) - len(got))
                    if not d: raise OSError("EOF before the echo was complete")
                    got += d
                if got != m: note("corrupt")
                note("bytes", len(m))
            else:
                c.shutdown(socket.SHUT_WR)
                c.settimeout(30)
                if c.recv(1): note("corrupt")
                note("client_ok")
        except OSError as e:
            note("client_failed"); stats["errors"].append(f"{kind}: {e}")
        finally:
            c.close()
threading.Thread(target=server, daemon=True).start()
print("ready", flush=True)
ts = [threading.Thread(target=client, args=(i,)) for i in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
stats["errors"] = stats["errors"][:10]
print(json.dumps(stats), flush=True)
sys.stdin.read()  # keep serving the stack's clients until the parent says they are done
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=_positive, default=2.0, help="traffic time (default 2)")
    p.add_argument("--conns", type=_count, default=16, help="busy connections each way")
    p.add_argument("--loss", type=_loss, default=0.01, help="loss on the stack's side")
    p.add_argument(
        "--mode", choices=("interrupt", "coalesce", "poll", "adaptive"), default="adaptive"
    )
    p.add_argument("--no-offload", dest="offload", action="store_false", help="plain TAP")
    p.add_argument("--seed", type=int, default=1, help="seed of the traffic and the faults")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


_positive = number_arg(
    float, lambda v: 0 < v <= 24 * 60, "{text!r}: minutes must be more than 0, at most 1440"
)



_count = number_arg(int, lambda v: 1 <= v <= 512, "{text!r}: connections must be 1..512")



_loss = number_arg(float, lambda v: 0 <= v <= 0.3, "{text!r}: loss must be within 0..0.3")



async def _stack_client(
    stack: Any, i: int, deadline: float, seed: int, out: dict[str, Any]
) -> None:
    """One of the stack's clients: connections of every kind to the kernel's echo server."""
    rng = random.Random(seed * 7919 + i)
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        kind = rng.choice(["rr", "bulk", "short", "abort"])
        try:
            r, w = await asyncio.wait_for(stack.open_connection(KERNEL_IP, ECHO_PORT), 60)
        except ConnectionRefusedError as e:
            # The kernel answered a SYN with RST: its listener is gone (counted apart).
            out["refused"] += 1
            out["errors"].append(f"connect: {e!r}")
            await asyncio.sleep(0.2)
            continue
        except (OSError, TimeoutError) as e:
            out["failed"] += 1
            out["errors"].append(f"connect: {e!r}")
            await asyncio.sleep(0.2)
            continue
        try:
            if kind == "rr":
                msgs = [rng.randbytes(rng.randint(1, 2000)) for _ in range(rng.randint(5, 50))]
            elif kind == "bulk":
                msgs = [rng.randbytes(rng.randint(1, BULK_MAX))]
            else:
                msgs = [rng.randbytes(rng.randint(1, 3000))]
            for m in msgs:
                w.write(m)
                if kind == "abort":
                    w.transport.abort()
                    out["aborted"] += 1
                    break
                got = await asyncio.wait_for(r.readexactly(len(m)), 60)
                if got != m:
                    out["corrupt"] += 1
                out["bytes"] += len(m)
            else:
                w.write_eof()
                if await asyncio.wait_for(r.read(1), 60):
                    out["corrupt"] += 1
                out["ok"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            out["failed"] += 1
            out["errors"].append(f"{kind}: {e!r}")
        finally:
            w.close()


#: Seconds the stack's echo server waits on a silent connection (a real server's idle
#: timeout: a client whose RST was lost would otherwise hold the connection for ever).
IDLE_TIMEOUT = 15.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await asyncio.wait_for(reader.read(1 << 16), IDLE_TIMEOUT):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        pass
    finally:
        writer.close()


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; returns the report."""
    from ..cli.serving import ConnectionHandlers
    from ..nic.faults import FaultConfig, FaultyNic
    from ..nic.netns import Netns
    from ..nic.tap import TapNic
    from ..proto.tcp.config import TcpConfig
    from ..stack import Stack, StackConfig

    seconds = args.minutes * 60.0
    ns = Netns.create()
    peer: asyncio.subprocess.Process | None = None
    try:
        tap = await asyncio.to_thread(
            TapNic.open, TAP, peer=f"{KERNEL_IP}/24", netns=ns, vnet_hdr=args.offload
        )
        faults = FaultConfig(
            loss=args.loss, reorder=args.loss / 2, duplicate=args.loss / 4, seed=args.seed
        )
        nic = FaultyNic(tap, faults) if args.loss else tap
        cfg = StackConfig(
            nic=nic,
            ip=f"{STACK_IP}/24",
            mac="02:00:00:00:50:02",
            mode=args.mode,
            tcp=TcpConfig(msl=5.0, max_retries=10),
        )
        out: dict[str, Any] = {
            "ok": 0, "aborted": 0, "failed": 0, "refused": 0, "corrupt": 0, "bytes": 0,
            "errors": [],
        }  # fmt: skip
        t0 = time.monotonic()
        async with Stack(cfg) as stack:
            handlers = ConnectionHandlers()
            server = await stack.start_server(
                handlers.wrap(_echo), STACK_IP, ECHO_PORT, backlog=512
            )
            peer = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", ns.name, sys.executable, "-c", KERNEL_PEER,
                STACK_IP, str(ECHO_PORT), str(args.conns), str(seconds), str(args.seed),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert peer.stdout is not None
            if b"ready" not in await asyncio.wait_for(peer.stdout.readline(), 30):
                raise RuntimeError("the kernel peer did not start")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            await asyncio.gather(
                *(_stack_client(stack, i, deadline, args.seed, out) for i in range(args.conns))
            )
            line = await asyncio.wait_for(peer.stdout.readline(), seconds + 180)
            # Only now may the kernel's echo server go (the stack's clients are done): it
            # went with the peer's clients before, and a last connect met no listener.
            assert peer.stdin is not None
            peer.stdin.close()
            await asyncio.wait_for(peer.wait(), 30)
            kernel = json.loads(line or b"{}")
            server.close()
            # Let the last connections close (FIN handshakes, idle timeouts, TIME_WAIT).
            end = loop.time() + IDLE_TIMEOUT + 30
            while loop.time() < end and any(
                ep.conn.state.name not in ("TIME_WAIT",) for ep in stack.tcp.conns.values()
            ):
                await asyncio.sleep(0.2)
            st = stack.stats()
            conns = list(stack.tcp.conns.values())
            states: dict[str, int] = {}
            for ep in conns:
                states[ep.conn.state.name] = states.get(ep.conn.state.name, 0) + 1
            buffered = sum(
                ep.conn.info()["send_queued"] + ep.conn.info()["recv_queued"]  # type: ignore[operator]
                for ep in conns
            )
            faults_seen = dict(st["nic"].get("faults", {}))
            await handlers.aclose()
        return {
            "seconds": round(time.monotonic() - t0, 1),
            "mode": args.mode,
            "offload": args.offload,
            "loss": args.loss,
            "stack_clients": {k: v for k, v in out.items() if k != "errors"},
            "stack_client_errors": out["errors"][:10],
            "kernel_clients": kernel,
            "stack_retransmits": st["tcp"].get("conn_retransmits", 0),
            "faults": faults_seen,
            "tcbs_at_end": states,
            "buffered_bytes_at_end": buffered,
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        if peer is not None and peer.returncode is None:
            peer.kill()
            await peer.wait()
        ns.delete()


def _verdict(rep: dict[str, Any]) -> list[str]:
    """What went wrong (empty: the soak passed)."""
    bad = []
    sc, kc = rep["stack_clients"], rep["kernel_clients"]
    if sc["corrupt"] or kc.get("corrupt"):
        bad.append(f"corrupted echoes: stack clients {sc['corrupt']}, kernel {kc.get('corrupt')}")
    if sc["failed"] or kc.get("client_failed"):
        bad.append(
            f"failed connections: stack clients {sc['failed']}, kernel {kc.get('client_failed')}"
        )
    hung = {k: v for k, v in rep["tcbs_at_end"].items() if k != "TIME_WAIT"}
    if hung:
        bad.append(f"TCBs left after the traffic stopped: {hung}")
    if not sc["ok"] or not kc.get("client_ok"):
        bad.append("no connection completed on one side")
    if sc["refused"]:
        bad.append(f"{sc['refused']} connects refused by the kernel's echo server")
    return bad


def run(args: argparse.Namespace) -> int:
    """``anp bench soak``: run, print the report, exit 0 when it passed."""
    if os.geteuid() != 0:
        print("anp: error: anp bench soak needs root (network namespace, TAP).", file=sys.stderr)
        return 2
    try:
        rep = asyncio.run(soak(args))
    except (OSError, RuntimeError, TimeoutError) as e:
        print(f"anp: error: soak aborted: {e}.", file=sys.stderr)
        return 1
    bad = _verdict(rep)
    rep["problems"] = bad
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        sc, kc = rep["stack_clients"], rep["kernel_clients"]
        print(f"soak: {rep['seconds']} s, mode {rep['mode']}, offload {rep['offload']}, "
              f"loss {rep['loss']}")  # fmt: skip
        print(f"  stack -> kernel  {sc['ok']} completed, {sc['aborted']} aborted on purpose, "
              f"{sc['failed']} failed, {sc['refused']} connects refused, {sc['bytes']} bytes "
              "checked")  # fmt: skip
        print(f"  kernel -> stack  {kc.get('client_ok')} completed, {kc.get('client_aborted')} "
              f"aborted on purpose, {kc.get('client_failed')} failed, {kc.get('bytes')} bytes "
              "checked")  # fmt: skip
        print(f"  retransmissions  {rep['stack_retransmits']} (faults injected {rep['faults']})")
        print(f"  at the end       TCBs {rep['tcbs_at_end']}, buffered "
              f"{rep['buffered_bytes_at_end']} B, max RSS {rep['max_rss_mib']} MiB")  # fmt: skip
        for line in bad:
            print(f"  PROBLEM: {line}")
        for err in rep["stack_client_errors"] + kc.get("errors", []):
            print(f"    {err}")
        print("soak passed" if not bad else "soak FAILED")
    return 0 if not bad else 1
