#!/usr/bin/env python3
"""Malformed first flights for the chaos suite: each case on a new connection to VIP:PORT,
--repeat times (bounded). Cases: non-HTTP garbage, HTTP/0.9, a GET, negative and overflowing
Content-Length, an unterminated 70 KB head, truncated JSON, a bad chunk size, NUL bytes in the
head, an empty connection closed at once, a connection reset at once (SO_LINGER 0), a head
sent one byte per segment, a 1 MB prompt, two pipelined requests. The far end may answer
(any status), close or reset: all are fine; what the suite checks is that legitimate traffic
is unaffected and no state is left. Prints JSON: cases, answered (by status class), closed,
reset, timeouts."""
import argparse
import json
import random
import socket
import struct
import time

BODY = b'{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}'


def post(body, extra=b""):
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: kvsteer\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def cases():
    rnd = random.Random(5)
    big = b'{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":2,"messages":[{"role":"user","content":"' + \
        b"y" * 1000000 + b'"}]}'
    return {
        "garbage": [bytes(rnd.getrandbits(8) for _ in range(2000))],
        "http09": [b"GET /\r\n"],
        "get": [b"GET /v1/models HTTP/1.1\r\nHost: kvsteer\r\n\r\n"],
        "cl_negative": [b"POST /v1/chat/completions HTTP/1.1\r\nHost: k\r\nContent-Length: -5\r\n\r\n" + BODY],
        "cl_overflow": [b"POST /v1/chat/completions HTTP/1.1\r\nHost: k\r\nContent-Length: 99999999999999999999999\r\n\r\n" + BODY],
        "head_70k": [b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 70000 + b"\r\n"],
        "json_truncated": [post(BODY[:40])],
        "bad_chunk": [b"POST /v1/chat/completions HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY],
        "nul_head": [b"POST /v1/chat\x00/completions HTTP/1.1\r\nHost: \x00\x00\r\nContent-Length: 3\r\n\r\nabc"],
        "empty_close": [],
        "reset": None,
        "one_byte_segments": [bytes([c]) for c in post(BODY)[:200]] + [post(BODY)[200:]],
        "prompt_1mb": [post(big)],
        "pipelined": [post(BODY) + post(BODY)],
    }


def run_case(host, port, parts, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if parts is None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset_sent"
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for p in parts:
            s.sendall(p)
            if len(parts) > 1:
                time.sleep(0.002)
        if not parts:
            s.shutdown(socket.SHUT_WR)
        try:
            data = s.recv(64)
        except socket.timeout:
            return "timeout"
        if not data:
            return "closed"
        if data.startswith(b"HTTP/1.") and len(data) >= 12:
            return "status_" + chr(data[9]) + "xx"
        return "other_bytes"
    except ConnectionResetError:
        return "reset"
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3)
    a = ap.parse_args()
    out = {"cases": 0}
    by_case = {}
    for _ in range(min(a.repeat, 50)):
        for name, parts in cases().items():
            try:
                r = run_case(a.host, a.port, parts, a.timeout)
            except OSError as e:
                r = "connect_" + type(e).__name__
            out["cases"] += 1
            out[r] = out.get(r, 0) + 1
            by_case.setdefault(name, {}).setdefault(r, 0)
            by_case[name][r] += 1
    out["by_case"] = by_case
    print(json.dumps(out))


if __name__ == "__main__":
    main()
