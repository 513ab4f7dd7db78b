"""A small aiohttp web application, written the ordinary way.

    python aiohttp_server.py HOST PORT [--cert CERT --key KEY]

GET /        a greeting
GET /bytes/N N bytes of a repeating pattern
POST /sha256 the request body's length and SHA-256, as JSON
"""

import argparse
import hashlib
import ssl

from aiohttp import web

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.Response(text=f"Hello from aiohttp, {request.remote}!\n")


@routes.get("/bytes/{n:\\d+}")
async def pattern(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    block = bytes(range(256))
    return web.Response(body=(block * (n // 256 + 1))[:n])


@routes.post("/sha256")
async def sha256(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--key", help="private key of --cert (PEM)")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(routes)
    web.run_app(app, host=args.host, port=args.port, ssl_context=context)


if __name__ == "__main__":
    main()
