#!/usr/bin/env python3
"""A plain keep-alive client with its own pool, as many apps have: it
resolves the name once per new connection and keeps connections open, so a
DNS change does not move them. Bounded in count and time; prints a JSON summary.
With --log-requests, first one JSON line per request: wall time, local port,
status, whether the connection was reused (to join with conntracer's failures)."""
import argparse
import http.client
import json
import socket
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--pool", type=int, default=2)
    p.add_argument("--gap", type=float, default=0.2)
    p.add_argument("--gaps", help="comma-separated seconds between requests, cycled (instead of --gap)")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--log-requests", action="store_true")
    a = p.parse_args()
    gaps = [float(g) for g in a.gaps.split(",")] if a.gaps else [a.gap]
    pool = [None] * a.pool
    used = [0] * a.pool
    counts = {}
    for i in range(a.count):
        slot = i % a.pool
        started, port = time.time(), None
        try:
            if pool[slot] is None:
                ip = socket.getaddrinfo(a.name, a.port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
                pool[slot] = http.client.HTTPConnection(ip, a.port, timeout=2)
                pool[slot].connect()
                used[slot] = 0
            port = pool[slot].sock.getsockname()[1]
            started = time.time()
            used[slot] += 1
            pool[slot].request("GET", "/", headers={"Host": a.name})
            status = str(pool[slot].getresponse().read() and 200)
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
            pool[slot].close() if pool[slot] else None
            pool[slot] = None
        counts[status] = counts.get(status, 0) + 1
        if a.log_requests:
            line = {"time": started, "port": port, "status": status, "reused": used[slot] > 1}
            print(json.dumps(line), flush=True)
        time.sleep(gaps[i % len(gaps)])
    print(json.dumps({"requests": a.count, "status": counts}), flush=True)


if __name__ == "__main__":
    main()
