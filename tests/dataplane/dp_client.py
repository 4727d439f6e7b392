#!/usr/bin/env python3
"""Bounded HTTP load for the dataplane e2e tests: N POSTs, each on a new TCP connection,
sequential or with C in parallel; with --source-port, sequential from one client port (each
asks `Connection: close`, so the server closes first and the port is free again at once). Checks every request body arrived byte-identical (the
backend's x-body-sha256) and every response body is intact (x-response-sha256).
Prints a JSON summary: ok, errors, backends (count per x-kvsteer-backend)."""
import argparse
import concurrent.futures as cf
import hashlib
import http.client
import errno
import json
import sys
import time


def connect(host, port, timeout, source_port):
    """A connected HTTPConnection; from source_port if given, retrying (bounded) while the
    previous connection on that port finishes closing (LAST_ACK)."""
    for _ in range(100):
        conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                          source_address=("", source_port) if source_port else None)
        try:
            conn.connect()
            return conn
        except OSError as e:
            conn.close()
            if not source_port or e.errno != errno.EADDRINUSE:
                raise
            time.sleep(0.02)
    raise OSError(errno.EADDRINUSE, f"source port {source_port} still busy after 2 s")


def one(host, port, body, prefix, i, timeout, source_port=0):
    conn = None
    try:
        conn = connect(host, port, timeout, source_port)
        headers = {"content-type": "application/json"}
        if source_port:
            headers["connection"] = "close"
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            return (None, f"{i}: status {r.status}")
        if r.getheader("x-body-sha256") != hashlib.sha256(body).hexdigest():
            return (None, f"{i}: request body digest mismatch")
        want = r.getheader("x-response-sha256")
        if want and want != hashlib.sha256(data).hexdigest():
            return (None, f"{i}: response digest mismatch")
        return (r.getheader("x-kvsteer-backend"), None)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
        return (None, f"{i}: {type(e).__name__}: {e}")
    finally:
        if conn:
            conn.close()


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
                    help="every connection from this client port (sequential; the server closes first)")
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
    if a.concurrency <= 1:
        for i in range(a.n):
            results.append(one(a.host, a.port, bodies[i % len(bodies)], i % len(bodies), i, a.timeout,
                               a.source_port))
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
    print(json.dumps(out))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
