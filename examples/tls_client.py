"""TLS on the stack: an HTTPS request to ``openssl s_server`` on the kernel side, with the
certificate checked against the (self-signed) one the example makes.

    sudo .venv/bin/python examples/tls_client.py

``stack.open_connection(host, port, ssl=context)`` is asyncio's: the TLS is asyncio's own
SSL layer on top of the stack's TCP transport.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import tempfile
from pathlib import Path

from _lab import KERNEL_IP, lab


def make_cert(d: Path) -> tuple[Path, Path]:
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={KERNEL_IP}", "-addext", f"subjectAltName=IP:{KERNEL_IP}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = make_cert(Path(tmp))
        async with lab() as (stack, ns):
            server = ns.popen(
                ["openssl", "s_server", "-quiet", "-www", "-accept", f"{KERNEL_IP}:4433",
                 "-key", str(key), "-cert", str(cert)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                ctx = ssl.create_default_context(cafile=str(cert))
                for _ in range(50):  # until s_server listens
                    try:
                        reader, writer = await stack.open_connection(KERNEL_IP, 4433, ssl=ctx)
                        break
                    except ConnectionRefusedError:
                        await asyncio.sleep(0.1)
                else:
                    raise SystemExit("openssl s_server did not start")
                tls = writer.get_extra_info("ssl_object")
                print(
                    f"TLS: {tls.version()} {tls.cipher()[0]}, peer {tls.getpeercert()['subject']}"
                )
                writer.write(b"GET / HTTP/1.0\r\n\r\n")
                body = await reader.read()
                print(f"HTTPS reply: {body.splitlines()[0].decode()!r}, {len(body)} bytes")
                writer.close()
            finally:
                server.terminate()
                server.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
