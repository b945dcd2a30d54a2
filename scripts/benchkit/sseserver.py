"""An HTTPS server of server-sent events, each carrying the time it was sent (ns).

    sseserver.py CERT KEY PORTFILE [--events N] [--interval SECONDS]
Listens on 127.0.0.1 (an ephemeral port, written to PORTFILE); every GET gets N events,
INTERVAL apart, then the end of the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from pathlib import Path


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cert")
    p.add_argument("key")
    p.add_argument("portfile")
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.001)
    a = p.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(a.cert, a.key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            next_at = time.monotonic()
            for _ in range(a.events):
                event = b"data: %d\n\n" % time.time_ns()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                next_at += a.interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    Path(a.portfile).write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
