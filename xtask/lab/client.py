#!/usr/bin/env python3
"""Bounded HTTP/1.1 load for the conntracer lab: one request per connection,
sent after each gap of --gaps (cycled) until --count requests or
--max-seconds. Prints one JSON summary line: status counts."""
import argparse
import json
import socket
import time


def request(host, port, path, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].split(b" ")
            return int(line[1]) if len(line) > 1 and line[1].isdigit() else "no-response"
    except OSError as e:
        return type(e).__name__


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--gaps", default="0.1", help="comma-separated seconds between requests, cycled")
    p.add_argument("--paths", default="/", help="comma-separated paths, cycled")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--timeout", type=float, default=5)
    a = p.parse_args()
    gaps = [float(g) for g in a.gaps.split(",")]
    paths = a.paths.split(",")
    counts = {}
    deadline = time.monotonic() + a.max_seconds
    for i in range(a.count):
        if time.monotonic() >= deadline:
            break
        if i:
            time.sleep(gaps[(i - 1) % len(gaps)])
        status = request(a.host, a.port, paths[i % len(paths)], a.timeout)
        counts[str(status)] = counts.get(str(status), 0) + 1
    print(json.dumps({"requests": sum(counts.values()), "status": counts}), flush=True)


if __name__ == "__main__":
    main()
