#!/usr/bin/env python3
"""A TCP relay that adds latency, and can drop the first connections: a piece of network.

The kernel here has no netem (docs/testbed.md, "Network namespaces"), so added latency comes
from this relay: every chunk read on one side is written to the other ``delay_s`` later, in
each direction (one-way delay ``delay_s``, round trip ``+2 x delay_s``). Chunks keep their
order and queue with their due time, so throughput is not cut, only latency added.

``fail_first=N`` makes the first N connections of a listener fail the way a flaky network or
an overloaded load balancer fails them: accepted, then reset (RST, no byte answered). The
benchmarks use the delay; tests/e2e/test_faults.py uses the resets in front of the AWS double
(moto), to prove that tgiops rides out transient AWS endpoint failures. It is part of the
network between tgiops and its peers, not a stand-in for any of them: it never writes a byte
of its own.

Library use (scripts/bench_deploy.py, tests):

    with DelayProxy(delay_s=0.025) as proxy:
        port = proxy.add("10.231.4.2", 22)            # 127.0.0.1:port -> 10.231.4.2:22
        ...
        proxy.stats(port)                             # ListenerStats(connections=.., reset=..)

Command line: ``scripts/delay_proxy.py --delay-ms 25 --upstream 10.231.4.2:22 [--port N]``
prints the listening port and relays until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys
import threading
from dataclasses import dataclass


@dataclass
class ListenerStats:
    """What one listener saw: connections accepted, and how many of them it reset."""

    connections: int = 0
    reset: int = 0


class DelayProxy:
    """TCP relays on ``listen_host`` that delay every chunk by ``delay_s`` in each direction.

    Runs its own asyncio loop in a daemon thread; ``add`` may be called from any thread.
    """

    def __init__(self, delay_s: float = 0.0, listen_host: str = "127.0.0.1") -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self.delay_s = delay_s
        self.listen_host = listen_host
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.AbstractServer] = []
        self._stats: dict[int, ListenerStats] = {}
        self._closed = False

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self, upstream_host: str, upstream_port: int, *, port: int = 0, fail_first: int = 0
    ) -> int:
        """A new listener relaying to ``upstream_host:upstream_port``; returns its port.

        ``fail_first``: reset that many connections (accepted, then RST) before relaying.
        """
        stats = ListenerStats()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stats.connections += 1
            if stats.reset < fail_first:
                stats.reset += 1
                _reset(writer)
                return
            # Ends quietly when close() cancels it: Python 3.11's asyncio logs a traceback for
            # a cancelled connection handler (its done-callback calls task.exception()).
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay(reader, writer, upstream_host, upstream_port)

        async def start() -> int:
            server = await asyncio.start_server(handle, self.listen_host, port)
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        bound = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=10)
        self._stats[bound] = stats
        return bound

    def stats(self, port: int) -> ListenerStats:
        return self._stats[port]

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            _reset(writer)
            return
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def deliver() -> None:
            try:
                while True:
                    due, chunk = await queue.get()
                    wait_s = due - self.loop.time()
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)
                    if chunk is None:
                        break
                    writer.write(chunk)
                    await writer.drain()
            finally:
                writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.delay_s, chunk))
        except OSError:
            pass
        finally:
            queue.put_nowait((self.loop.time() + self.delay_s, None))
            await asyncio.gather(sender, return_exceptions=True)

    def close(self) -> None:
        """Stop every listener and relay, then the loop."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', not a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay (default 25)")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1", metavar="HOST")
    parser.add_argument("--port", type=int, default=0, help="listening port (default: any)")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    host, _, port_text = args.upstream.rpartition(":")
    if not host or not port_text.isdigit():
        parser.error(f"--upstream {args.upstream!r}: give HOST:PORT")
    with DelayProxy(args.delay_ms / 1000, listen_host=args.listen) as proxy:
        port = proxy.add(host, int(port_text), port=args.port, fail_first=args.fail_first)
        print(port, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
