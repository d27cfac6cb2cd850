#!/usr/bin/env python3
"""A bounded stream of HTTP requests through a load balancer.

  loadstream.py URL [--workers 8] [--pause 0.02] [--stop-file F] [--max-seconds 600]
                    [--max-requests 1000000] [--bodies]

Runs until the stop file exists, or the time or request bound is reached, then
prints JSON: {"requests", "ok", "failed", "statuses", "errors", "seconds",
"stopped_by", "latency": {"max", "p99", "p50"} (seconds, answered requests)},
and with --bodies "bodies": each distinct answer (its first 64 bytes) and how
many requests got it, and "last_body": the body of the last answer. Each worker pauses between requests, so a long stream stays
well inside the request bound.
Any answer other than HTTP 200, and any connection error, counts as failed.
Standard library only, so it runs on a bare Debian host.
"""

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--max-requests", type=int, default=1000000)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--bodies", action="store_true")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    path = url.path or "/"
    lock = threading.Lock()
    stats = {"requests": 0, "ok": 0, "failed": 0, "statuses": {}, "errors": {}}
    latencies, bodies = [], {}
    started = time.monotonic()
    deadline = started + min(args.max_seconds, 1800.0)
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            with lock:
                if stats["requests"] >= args.max_requests:
                    return
                stats["requests"] += 1
            try:
                began = time.monotonic()
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()[:64].decode("utf-8", "replace").strip()
                status = response.status
                conn.close()
                with lock:
                    latencies.append(time.monotonic() - began)
                    stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
                    stats["ok" if status == 200 else "failed"] += 1
                    if args.bodies:
                        bodies[body] = bodies.get(body, 0) + 1
                        stats["last_body"] = body
            except OSError as exc:
                with lock:
                    stats["failed"] += 1
                    name = type(exc).__name__
                    stats["errors"][name] = stats["errors"].get(name, 0) + 1
            stop.wait(args.pause)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    stats["stopped_by"] = "time"
    while time.monotonic() < deadline:
        if not any(t.is_alive() for t in threads):
            stats["stopped_by"] = "requests"
            break
        if args.stop_file and os.path.exists(args.stop_file):
            stats["stopped_by"] = "stop-file"
            break
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    stats["seconds"] = round(time.monotonic() - started, 2)
    ordered = sorted(latencies)
    stats["latency"] = {name: round(ordered[min(int(len(ordered) * q), len(ordered) - 1)], 4) if ordered else None
                        for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}
    if args.bodies:
        stats["bodies"] = bodies
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
