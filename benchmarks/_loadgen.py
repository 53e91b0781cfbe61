"""Capacity of the benchmark receiver (``benchmarks._receiver``): many keep-alive connections
from a raw asyncio client, the receiver in its own process.

``python -m benchmarks._loadgen [--connections 64] [--pipeline 1] [--seconds 5] [--latency-ms 0]``

Each connection sends ``--pipeline`` requests at once (1: one request in flight per connection,
as real clients do) and sends again when all are answered. Prints one JSON line: requests/s
accepted by the receiver and the receiver process's CPU µs per request over the measured window
(after a 1 s warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import urlsplit

from ._common import PRODUCT_ID, FastReceiver, emit_json, fast_receiver

_BODY = (
    b'{"eventType":"task_success","productId":"' + PRODUCT_ID.encode() + b'","value":"%012d",'
    b'"valueType":"numeric","influence":"positive","externalConversationId":"chat-%012d",'
    b'"eventAt":"2025-01-01T00:00:00.000000+00:00","properties":{"plan":"pro"},'
    b'"insertId":"load-%04d-%012d"}'
)


class _Client(asyncio.Protocol):
    def __init__(self, number: int, head: bytes, depth: int, running: list[bool]) -> None:
        self._number = number
        self._head = head
        self._depth = depth
        self._running = running
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._outstanding = 0
        self._sent = 0
        self.answered = 0
        self.failed = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self) -> None:
        assert self._transport is not None
        if not self._running[0]:
            self._transport.close()
            return
        chunks = []
        for _ in range(self._depth):
            sent = self._sent
            chunks.append(self._head + _BODY % (sent, sent, self._number, sent))
            self._sent = sent + 1
        self._outstanding = self._depth
        self._transport.write(b"".join(chunks))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        position = 0
        while True:
            end = buffer.find(b"\r\n\r\n", position)
            if end < 0:
                break
            at = buffer.find(b"Content-Length: ", position, end)
            length = int(buffer[at + 16 : buffer.find(b"\r\n", at)])
            if end + 4 + length > len(buffer):
                break
            if buffer.startswith(b"HTTP/1.1 200", position):
                self.answered += 1
            else:
                self.failed += 1
            position = end + 4 + length
            self._outstanding -= 1
        self._buffer = buffer[position:]
        if self._outstanding == 0:
            self._send()


async def _load(
    receiver: FastReceiver, connections: int, depth: int, seconds: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    address = urlsplit(receiver.base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    body_length = len(_BODY % (0, 0, 0, 0))
    head = (
        f"POST {address.path}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {receiver.api_key}\r\nContent-Type: application/json\r\n"
        f"User-Agent: benchmarks-loadgen\r\nAccept: */*\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode()
    running = [True]
    clients: list[_Client] = []
    for number in range(connections):
        _, client = await loop.create_connection(
            lambda number=number: _Client(number, head, depth, running),  # type: ignore[misc]
            host,
            port,
        )
        clients.append(client)
    await asyncio.sleep(1.0)  # warm-up
    before = await asyncio.to_thread(receiver.stats)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    after = await asyncio.to_thread(receiver.stats)
    wall = time.perf_counter() - started
    running[0] = False
    await asyncio.wait_for(asyncio.gather(*(client.closed for client in clients)), 30)
    accepted = after["accepted"] - before["accepted"]
    cpu = after["cpu_seconds"] - before["cpu_seconds"]
    return {
        "requests_per_second": accepted / wall,
        "receiver_cpu_us_per_request": cpu / max(accepted, 1) * 1e6,
        "receiver_cpu_share": cpu / wall,
        "failed": float(sum(client.failed for client in clients)),
        "duplicates": float(after["duplicates"]),
        "peak_concurrency": float(after["peak_concurrency"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._loadgen")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    arguments = parser.parse_args()
    with fast_receiver(arguments.latency_ms) as receiver:
        emit_json(
            asyncio.run(
                _load(receiver, arguments.connections, arguments.pipeline, arguments.seconds)
            )
        )


if __name__ == "__main__":
    main()
