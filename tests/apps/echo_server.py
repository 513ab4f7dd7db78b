# TCP echo server using streams: the example from the Python documentation
# (https://docs.python.org/3/library/asyncio-stream.html#tcp-echo-server-using-streams),
# copied unchanged. Documentation examples are licensed under the Zero-Clause BSD licence.
# Kept byte-for-byte as published, so neither the linter nor the formatter touches it:
# ruff: noqa
# fmt: off
import asyncio

async def handle_echo(reader, writer):
    data = await reader.read(100)
    message = data.decode()
    addr = writer.get_extra_info('peername')

    print(f"Received {message!r} from {addr!r}")

    print(f"Send: {message!r}")
    writer.write(data)
    await writer.drain()

    print("Close the connection")
    writer.close()
    await writer.wait_closed()

async def main():
    server = await asyncio.start_server(
        handle_echo, '127.0.0.1', 8888)

    addrs = ', '.join(str(sock.getsockname()) for sock in server.sockets)
    print(f'Serving on {addrs}')

    async with server:
        await server.serve_forever()

asyncio.run(main())
