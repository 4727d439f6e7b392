#!/usr/bin/env python3
"""Bounded HTTP load for the dataplane e2e tests: N POSTs, each on a new TCP connection,
sequential or with C in parallel; with --source-port, sequential from one client port (each
asks `Connection: close`, so the server closes first and the port is free again at once). Checks every request body arrived byte-identical (the
backend's x-body-sha256) and every response body is intact (x-response-sha256).
Prints a JSON summary: ok, errors, backends (count per x-kvsteer-backend)."""
import argparse
import concurrent.futures as cf
import errno
import hashlib
import http.client
import json
import socket
import sys
import time


def check(i, status, headers, body, data):
    """(backend, None) if the exchange is intact, else (None, error)."""
    if status != 200:
        return (None, f"{i}: status {status}")
    if headers.get("x-body-sha256") != hashlib.sha256(body).hexdigest():
        return (None, f"{i}: request body digest mismatch")
    want = headers.get("x-response-sha256")
    if want and want != hashlib.sha256(data).hexdigest():
        return (None, f"{i}: response digest mismatch")
    return (headers.get("x-kvsteer-backend"), None)


def one(host, port, body, prefix, i, timeout):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        return check(i, r.status, {k.lower(): v for k, v in r.getheaders()}, body, data)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
        return (None, f"{i}: {type(e).__name__}: {e}")
    finally:
        conn.close()


def one_from_port(host, port, body, i, timeout, source_port):
    """One POST from source_port asking `Connection: close`, read until the server's FIN before
    closing, so the server closes first and the client keeps no TIME_WAIT on the port. Retries
    the bind (bounded) while the previous connection finishes closing (LAST_ACK)."""
    s = None
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.bind(("", source_port))
                break
            except OSError as e:
                s.close()
                s = None
                if e.errno != errno.EADDRINUSE:
                    raise
                time.sleep(0.02)
        if s is None:
            return (None, f"{i}: source port {source_port} still busy after 2 s")
        s.connect((host, port))
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                   f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                   "connection: close\r\n\r\n").encode() + body)
        buf = bytearray()
        while chunk := s.recv(65536):
            buf += chunk
        head, _, data = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out, rest = bytearray(), data
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size.split(b";")[0], 16)
                if n == 0:
                    break
                out += rest[:n]
                rest = rest[n + 2:]
            data = bytes(out)
        return check(i, status, headers, body, data)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
        return (None, f"{i}: {type(e).__name__}: {e}")
    finally:
        if s:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--prefixes", type=int, default=1, help="distinct system prompts, round robin")
    ap.add_argument("--size", type=int, default=1400, help="approximate body bytes")
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--source-port", type=int, default=0,
                    help="every connection from this client port (sequential; the server closes first); "
                         "the test topology reserves 45120-45129 for this")
    a = ap.parse_args()
    if a.source_port and a.concurrency > 1:
        ap.error("--source-port needs --concurrency 1")
    bodies = []
    for p in range(a.prefixes):
        system = f"system prompt {p:04d}: " + "".join(chr(97 + (p * 13 + k * 7) % 26) for k in range(400))
        user = "x" * max(1, a.size - 600)
        bodies.append(json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 4,
                                  "messages": [{"role": "system", "content": system},
                                               {"role": "user", "content": user}]}).encode())
    t0 = time.time()
    results = []
    lat = []
    if a.concurrency <= 1:
        for i in range(a.n):
            t = time.monotonic()
            if a.source_port:
                results.append(one_from_port(a.host, a.port, bodies[i % len(bodies)], i, a.timeout, a.source_port))
            else:
                results.append(one(a.host, a.port, bodies[i % len(bodies)], i % len(bodies), i, a.timeout))
            lat.append(time.monotonic() - t)
    else:
        with cf.ThreadPoolExecutor(a.concurrency) as ex:
            futs = [ex.submit(one, a.host, a.port, bodies[i % len(bodies)], i % len(bodies), i, a.timeout)
                    for i in range(a.n)]
            results = [f.result() for f in futs]
    backends = {}
    errors = [e for _, e in results if e]
    for b, e in results:
        if not e:
            backends[b] = backends.get(b, 0) + 1
    out = {"ok": a.n - len(errors), "errors": len(errors), "first_errors": errors[:5],
           "backends": backends, "seconds": round(time.time() - t0, 3)}
    if lat:  # sequential runs: each request's whole time, connection included
        lat.sort()
        out["latency_ms"] = {q: round(1000 * lat[min(len(lat) - 1, int(len(lat) * f))], 1)
                             for q, f in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}
    print(json.dumps(out))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
