#!/usr/bin/env python3
"""Keep-alive HTTP/1.1 app for the conntracer lab.

A poll-driven server, as many are: every tick it first closes connections
that have been idle for --idle-timeout, then reads what arrived. A request
that lands in the last tick before the timeout is therefore still unread when
its connection is closed, and the kernel answers it with a reset: the
idle-timeout race that turns into Envoy's 503 UC, made frequent.

GET /reset closes the connection with SO_LINGER 0 instead of answering.
GET /flaky does that to every other /flaky (the first, third, ...): a retry
on a new connection gets a 200. GET /503 answers 503 itself.
SIGTERM: stop listening, close idle connections, drain for --drain seconds, exit.
Runs for at most --max-seconds.
"""
import argparse
import select
import signal
import socket
import struct
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--idle-timeout", type=float, default=1.0)
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--drain", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=300)
    a = p.parse_args()

    family = socket.AF_INET6 if ":" in a.bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((a.bind, a.port))
    listener.listen(128)
    listener.setblocking(False)
    conns = {}  # socket -> {"last": t, "buf": bytes}
    state = {"stopping_at": None, "flaky": 0}

    def on_term(*_):
        if state["stopping_at"] is None:
            state["stopping_at"] = time.monotonic()

    signal.signal(signal.SIGTERM, on_term)
    print(f"app listening on {a.bind}:{a.port} idle-timeout={a.idle_timeout}s", flush=True)
    deadline = time.monotonic() + a.max_seconds
    while time.monotonic() < deadline:
        time.sleep(a.tick)
        now = time.monotonic()
        if state["stopping_at"] is not None:
            if listener is not None:
                listener.close()
                listener = None
                for c in [c for c, s in conns.items() if not s["buf"]]:
                    c.close()
                    del conns[c]
            if now - state["stopping_at"] >= a.drain:
                break
        # Reap idle connections before reading: a request that just arrived
        # on one of them is closed unread.
        for c in [c for c, s in conns.items() if now - s["last"] >= a.idle_timeout]:
            c.close()
            del conns[c]
        watched = list(conns) + ([listener] if listener is not None else [])
        readable, _, _ = select.select(watched, [], [], 0)
        for s in readable:
            if s is listener:
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c] = {"last": now, "buf": b""}
                continue
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                s.close()
                del conns[s]
                continue
            st = conns[s]
            st["buf"] += data
            st["last"] = now
            while b"\r\n\r\n" in st["buf"]:
                head, st["buf"] = st["buf"].split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1] if b" " in head else b"/"
                if path == b"/flaky":
                    state["flaky"] += 1
                    path = b"/reset" if state["flaky"] % 2 == 1 else b"/"
                if path == b"/reset":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                    del conns[s]
                    break
                status, body = (b"503 Service Unavailable", b"unavailable\n") if path == b"/503" else (b"200 OK", b"ok\n")
                s.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (status, len(body), body))
    print("app exiting", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
