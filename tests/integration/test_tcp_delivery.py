"""How received data reaches the application: asyncio's StreamReaderProtocol and a
BufferedProtocol take the receive buffer's chunks (views of frames, no join copy); any
other protocol -- a StreamReaderProtocol subclass too -- gets ``bytes``, as asyncio promises.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.stackutil import wire_stacks

N = 300_000  # several segments and receive batches
DATA = random.Random(7).randbytes(N)


async def _send_to(a: Any, port: int) -> None:
    _, writer = await a.open_connection("10.0.0.2", port)
    writer.write(DATA)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.types: set[type] = set()
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.types.add(type(data))
        self.got += data

    def eof_received(self) -> bool:
        self.done.set_result(None)
        return False


class Buffered(asyncio.BufferedProtocol):
    """Hands out small buffers, so one received chunk fills several."""

    def __init__(self) -> None:
        self.buf = bytearray(1000)
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buf[:nbytes]

    def eof_received(self) -> bool:
        self.done.set_result(None)
        return False


async def test_stream_reader_gets_every_byte_in_order() -> None:
    async with wire_stacks() as (a, b):
        got = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parts = []
            while chunk := await reader.read(70_000):
                assert type(chunk) is bytes
                parts.append(chunk)
            got.set_result(b"".join(parts))
            writer.close()

        server = await b.start_server(serve, "10.0.0.2", 9001)
        await _send_to(a, 9001)
        assert await asyncio.wait_for(got, 20) == DATA
        server.close()


async def test_buffered_protocol_and_plain_protocols() -> None:
    async with wire_stacks() as (a, b):
        loop = asyncio.get_running_loop()
        for port, factory in ((9002, Buffered), (9003, Recorder)):
            protos: list[Any] = []

            def make(factory: Any = factory, protos: list[Any] = protos) -> Any:
                protos.append(factory())
                return protos[-1]

            server = await b.create_server(make, "10.0.0.2", port)
            await _send_to(a, port)
            await asyncio.wait_for(protos[0].done, 20)
            assert bytes(protos[0].got) == DATA
            if factory is Recorder:
                assert protos[0].types == {bytes}  # asyncio's promise: data is bytes
            server.close()
        # A StreamReaderProtocol subclass may keep what it gets: it gets bytes too.
        types: set[type] = set()

        class Keeping(asyncio.StreamReaderProtocol):
            def data_received(self, data: bytes) -> None:
                types.add(type(data))
                super().data_received(data)

        done = loop.create_future()

        async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            done.set_result(len(await reader.read()))
            writer.close()

        def keeping() -> Keeping:
            return Keeping(asyncio.StreamReader(limit=1 << 16), drain)

        server = await b.create_server(keeping, "10.0.0.2", 9004)
        await _send_to(a, 9004)
        assert await asyncio.wait_for(done, 20) == N
        assert types == {bytes}
        server.close()
