"""A bounded load test of a running page, loopback only:

    python -m edge_runtime.web.loadtest --url http://127.0.0.1:8080 --image chest.png --clients 8 --seconds 30

Each client posts the image to ``/api/v1/screenings`` in a loop (each request with its own reference) until the
time or the request budget is spent, then prints requests/s, latency percentiles and the status counts as JSON.
It refuses any address outside the loopback range: it is for checking a device, not for load on a network.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def multipart(fields: dict[str, str], file_field: str, file_name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_screening(url: str, data: bytes, name: str, reference: str, token: str | None = None,
                   timeout: float = 60) -> tuple[int, dict | None]:
    body, ctype = multipart({"reference": reference}, "file", name, data)
    req = urllib.request.Request(url.rstrip("/") + "/api/v1/screenings", data=body, method="POST",
                                 headers={"Content-Type": ctype})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _pct(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def run_load(url: str, images: list[tuple[str, bytes]], clients: int = 8, seconds: float = 30,
             max_requests: int = 10_000, token: str | None = None, stop: threading.Event | None = None) -> dict:
    """Returns counts, requests/s, p50/p95 latency and the acknowledged (201) screenings as {reference: id}."""
    if not _is_loopback_url(url):
        raise ValueError(f"{url}: the load test only targets loopback addresses")
    stop = stop or threading.Event()
    lock = threading.Lock()
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    acked: dict[str, str] = {}
    budget = [max_requests]
    deadline = time.monotonic() + seconds

    def client(n: int):
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            name, data = images[(n + i) % len(images)]
            ref = f"load-{n}-{i}-{uuid.uuid4().hex[:6]}"
            i += 1
            t0 = time.perf_counter()
            try:
                status, body = post_screening(url, data, name, ref, token)
                key = str(status)
            except (OSError, http.client.HTTPException, ValueError) as exc:  # no complete answer: not acknowledged
                status, body, key = 0, None, f"connection error ({type(exc).__name__})"
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                statuses[key] = statuses.get(key, 0) + 1
                if status == 201 and body:
                    latencies.append(ms)
                    acked[ref] = body["id"]
            if status == 0:
                time.sleep(0.05)

    t_start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = sorted(latencies)
    total = sum(statuses.values())
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": total, "statuses": statuses,
        "ok": len(acked), "server_errors": sum(v for k, v in statuses.items() if k.startswith("5")),
        "requests_per_s": round(len(acked) / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(_pct(lat, 0.5), 1) if lat else None, "p95_ms": round(_pct(lat, 0.95), 1) if lat else None,
        "acked": acked,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_runtime.web.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--image", action="append", required=True, help="image file to post (repeatable)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-requests", type=int, default=10_000)
    p.add_argument("--token", default=None, help="API token when the server needs a login")
    a = p.parse_args(argv)
    images = [(Path(f).name, Path(f).read_bytes()) for f in a.image]
    try:
        res = run_load(a.url, images, a.clients, a.seconds, a.max_requests, a.token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res.pop("acked")
    print(json.dumps(res, indent=2))
    return 0 if res["server_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
