"""A small aiohttp client, written the ordinary way: fetch URLs, print size and SHA-256.

    python aiohttp_client.py [--cafile PEM] URL [URL ...]

Prints one line per URL: ``URL STATUS BYTES SHA256``; exits 1 if any status is not 200.
"""

import argparse
import asyncio
import hashlib
import ssl
import sys

import aiohttp


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    digest = hashlib.sha256()
    size = 0
    async with session.get(url) as response:
        async for chunk in response.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        print(url, response.status, size, digest.hexdigest(), flush=True)
        return response.status


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cafile", help="trust this certificate for HTTPS")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    connector = aiohttp.TCPConnector(ssl=context) if context else aiohttp.TCPConnector()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        statuses = [await fetch(session, url) for url in args.urls]
    return 0 if all(s == 200 for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
