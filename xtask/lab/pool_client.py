#!/usr/bin/env python3
"""A plain keep-alive client with its own pool, as many apps have: it
resolves the name once per new connection and keeps connections open, so a
DNS change does not move them. Bounded in count and time; prints a JSON summary."""
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
    p.add_argument("--count", type=int, default=40)
    a = p.parse_args()
    pool = [None] * a.pool
    counts = {}
    for i in range(a.count):
        slot = i % a.pool
        try:
            if pool[slot] is None:
                ip = socket.getaddrinfo(a.name, a.port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
                pool[slot] = http.client.HTTPConnection(ip, a.port, timeout=2)
            pool[slot].request("GET", "/", headers={"Host": a.name})
            status = str(pool[slot].getresponse().read() and 200)
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
            pool[slot].close() if pool[slot] else None
            pool[slot] = None
        counts[status] = counts.get(status, 0) + 1
        time.sleep(a.gap)
    print(json.dumps({"requests": a.count, "status": counts}), flush=True)


if __name__ == "__main__":
    main()
