#!/usr/bin/env python3
"""HTTP/2 cleartext (h2c, prior knowledge) app for the conntracer lab.

The same poll-driven idle close as app.py: every tick it first closes
connections that carried no request for --idle-timeout (PINGs and other
control frames do not count, as in most servers), without GOAWAY, then reads
what arrived; a frame that lands in the last tick is closed unread (reset).

Frames are handled byte for byte (RFC 9113): the server's SETTINGS and
acks, PING acks, and for each request (HEADERS with END_STREAM) a response
HEADERS `:status 200` (static HPACK index 8) and DATA. Request header blocks
are not decoded (nothing here depends on them). Runs at most --max-seconds.
"""
import argparse
import select
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
ACK = END_STREAM = 0x1
END_HEADERS = 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def handle(conn, st, now):
    """Consumes whole frames from st["buf"]; returns False to close."""
    buf = st["buf"]
    if not st["preface"]:
        if len(buf) < len(PREFACE):
            return True
        if buf[: len(PREFACE)] != PREFACE:
            return False
        buf = buf[len(PREFACE):]
        st["preface"] = True
        conn.sendall(frame(SETTINGS, 0, 0))
    out = b""
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        kind, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload = buf[9 : 9 + length]
        buf = buf[9 + length :]
        if kind == SETTINGS and not flags & ACK:
            out += frame(SETTINGS, ACK, 0)
        elif kind == PING and not flags & ACK:
            out += frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            return False
        elif kind in (HEADERS, CONTINUATION, DATA) and flags & END_STREAM and stream:
            st["last"] = now
            body = b"ok\n"
            out += frame(HEADERS, END_HEADERS, stream, b"\x88")
            out += frame(DATA, END_STREAM, stream, body)
        elif kind == HEADERS:
            st["last"] = now
    st["buf"] = buf
    if out:
        conn.sendall(out)
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--idle-timeout", type=float, default=1.0)
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--max-seconds", type=float, default=300)
    a = p.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((a.bind, a.port))
    listener.listen(128)
    listener.setblocking(False)
    conns = {}
    closed = 0
    print(f"h2c app listening on {a.bind}:{a.port} idle-timeout={a.idle_timeout}s", flush=True)
    deadline = time.monotonic() + a.max_seconds
    while time.monotonic() < deadline:
        time.sleep(a.tick)
        now = time.monotonic()
        for c in [c for c, s in conns.items() if now - s["last"] >= a.idle_timeout]:
            c.close()
            del conns[c]
            closed += 1
        readable, _, _ = select.select(list(conns) + [listener], [], [], 0)
        for s in readable:
            if s is listener:
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c] = {"last": now, "buf": b"", "preface": False}
                continue
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            st = conns[s]
            st["buf"] += data
            if not data or not handle(s, st, now):
                s.close()
                del conns[s]
    print(f"h2c app exiting; {closed} idle closes", flush=True)


if __name__ == "__main__":
    main()
