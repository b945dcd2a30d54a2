"""The benchmark's client: a plan of workloads, run through a proxy or directly.

It runs as its own process, so that httpjail can jail it like any command:
    client.py PLAN.json [--proxy ...] [--cafile ...]
The proxy is `--proxy http://host:port`, or `--proxy env` for HTTPS_PROXY/HTTP_PROXY (what
httpjail gives a jailed command), or absent for a direct connection. `--cafile` is the CA
to trust (default: SSL_CERT_FILE).

Workloads (all times in microseconds, rates per second):
    keepalive (url, count)        sequential GETs on one connection: per-request times
    newconn (url, count)          a new HTTPS connection (and tunnel) per GET: per-request times
    download (url)                one GET of a large body: bytes per second
    upload (url, size)            one POST of `size` bytes: bytes per second
    sse (url)                     server-sent events carrying their send time: the delay of
                                  each, and the time to the first
    concurrent (url, clients, seconds)
                                  keep-alive clients GETting for a while: requests per
                                  second, errors, latencies
    idle (seconds)                nothing (the proxy's idle memory is read meanwhile)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import json
import os
import ssl
import time
from urllib.parse import urlsplit


def _proxy(arg: str | None, scheme: str) -> tuple[str, int] | None:
    if arg is None:
        return None
    if arg == "env":
        arg = os.environ["HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"]
    parts = urlsplit(arg)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


@functools.cache
def _context(cafile: str | None) -> ssl.SSLContext:
    # Made once: loading a CA bundle (httpjail's holds the system's CAs too) costs more
    # than a TLS handshake, and a client would not do it per connection.
    return ssl.create_default_context(cafile=cafile or os.environ.get("SSL_CERT_FILE"))


def connection(
    url: str, proxy: tuple[str, int] | None, cafile: str | None
) -> tuple[http.client.HTTPConnection, str]:
    """A connection for `url` (through `proxy`), and the request target to use on it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.scheme == "https":
        if proxy is None:
            return http.client.HTTPSConnection(host, port, context=_context(cafile), timeout=60), path
        conn = http.client.HTTPSConnection(*proxy, context=_context(cafile), timeout=60)
        conn.set_tunnel(host, port)
        return conn, path
    if proxy is None:
        return http.client.HTTPConnection(host, port, timeout=60), path
    return http.client.HTTPConnection(*proxy, timeout=60), url


def keepalive(url: str, proxy: tuple[str, int] | None, cafile: str | None, count: int) -> dict[str, object]:
    conn, target = connection(url, proxy, cafile)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", target)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1e6)
    conn.close()
    return {"times_us": times}


def newconn(url: str, proxy: tuple[str, int] | None, cafile: str | None, count: int) -> dict[str, object]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn, target = connection(url, proxy, cafile)
        conn.request("GET", target)
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200, response.status
        times.append((time.perf_counter() - start) * 1e6)
    return {"times_us": times}


def download(url: str, proxy: tuple[str, int] | None, cafile: str | None) -> dict[str, object]:
    conn, target = connection(url, proxy, cafile)
    start = time.perf_counter()
    conn.request("GET", target)
    response = conn.getresponse()
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
    elapsed = time.perf_counter() - start
    assert response.status == 200, response.status
    return {"bytes": total, "bytes_per_s": total / elapsed}


def upload(url: str, proxy: tuple[str, int] | None, cafile: str | None, size: int) -> dict[str, object]:
    conn, target = connection(url, proxy, cafile)
    block = b"x" * (1 << 20)

    def body():  # type: ignore[no-untyped-def]
        left = size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    start = time.perf_counter()
    conn.request("POST", target, body=body(), headers={"Content-Length": str(size)})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 200, response.status
    return {"bytes": size, "bytes_per_s": size / elapsed}


def sse(url: str, proxy: tuple[str, int] | None, cafile: str | None) -> dict[str, object]:
    conn, target = connection(url, proxy, cafile)
    start = time.time_ns()
    conn.request("GET", target, headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    delays, first = [], None
    buffer = b""
    while chunk := response.read1(65536):
        now = time.time_ns()
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            sent = int(event.split(b"data: ", 1)[1])
            delays.append((now - sent) / 1000)
            if first is None:
                first = (now - start) / 1000
    return {"delays_us": delays, "first_event_us": first}


async def _one_client(
    host: str,
    port: int,
    target: bytes,
    authority: bytes,
    stop: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        errors.append(str(e))
        return
    try:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - start) * 1e6)
    except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as e:
        errors.append(repr(e))
    finally:
        writer.close()


async def _concurrent(
    url: str, proxy: tuple[str, int] | None, clients: int, seconds: float
) -> dict[str, object]:
    parts = urlsplit(url)
    assert parts.scheme == "http", "the concurrent workload is plain HTTP"
    host, port = (parts.hostname or "", parts.port or 80) if proxy is None else proxy
    target = (parts.path if proxy is None else url).encode()
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    stop = start + seconds
    await asyncio.gather(
        *(
            _one_client(host, port, target, parts.netloc.encode(), stop, latencies, errors)
            for _ in range(clients)
        )
    )
    elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "errors": len(errors),
        "error_samples": errors[:5],
        "latencies_us": latencies,
    }


def run(spec: dict[str, object], proxy_arg: str | None, cafile: str | None) -> dict[str, object]:
    """One workload: `spec` has "workload", "url" and its options (count, size, ...)."""
    url = str(spec["url"])
    proxy = _proxy(proxy_arg, urlsplit(url).scheme)
    kind = spec["workload"]
    if kind == "keepalive":
        return keepalive(url, proxy, cafile, int(spec["count"]))  # type: ignore[call-overload]
    if kind == "newconn":
        return newconn(url, proxy, cafile, int(spec["count"]))  # type: ignore[call-overload]
    if kind == "download":
        return download(url, proxy, cafile)
    if kind == "upload":
        return upload(url, proxy, cafile, int(spec["size"]))  # type: ignore[call-overload]
    if kind == "sse":
        return sse(url, proxy, cafile)
    if kind == "concurrent":
        return asyncio.run(_concurrent(url, proxy, int(spec["clients"]), float(spec["seconds"])))  # type: ignore[call-overload,arg-type]
    if kind == "idle":
        time.sleep(float(spec["seconds"]))  # type: ignore[arg-type]
        return {}
    raise SystemExit(f"unknown workload {kind}")


def main() -> None:
    """client.py PLAN.json [--proxy ...] [--cafile ...]: runs each step of the plan (a JSON
    list of workload specs, each with a "name"), printing `start NAME` before each and one
    JSON line after it, flushed, so that the caller can tell which step is running."""
    p = argparse.ArgumentParser()
    p.add_argument("plan")
    p.add_argument("--proxy")
    p.add_argument("--cafile")
    a = p.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    for spec in plan:
        print(f"start {spec['name']}", flush=True)
        result = run(spec, a.proxy, a.cafile)
        print(json.dumps({"name": spec["name"], **result}), flush=True)


if __name__ == "__main__":
    main()
