# TCP echo client using streams: the example from the Python documentation
# (https://docs.python.org/3/library/asyncio-stream.html#tcp-echo-client-using-streams),
# copied unchanged. Documentation examples are licensed under the Zero-Clause BSD licence.
# Kept byte-for-byte as published, so neither the linter nor the formatter touches it:
# ruff: noqa
# fmt: off
import asyncio

async def tcp_echo_client(message):
    reader, writer = await asyncio.open_connection(
        '127.0.0.1', 8888)

    print(f'Send: {message!r}')
    writer.write(message.encode())
    await writer.drain()

    data = await reader.read(100)
    print(f'Received: {data.decode()!r}')

    print('Close the connection')
    writer.close()
    await writer.wait_closed()

asyncio.run(tcp_echo_client('Hello World!'))
