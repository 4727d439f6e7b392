#!/usr/bin/env python3
"""Legitimate client of the chaos suite: POSTs to /v1/chat/completions, each on a new TCP
connection, C in parallel, until --n requests are done or --seconds have passed (both bounded).
Every exchange is checked end to end: the backend's digest of the request body it received
(x-body-sha256) against what was sent, and the backend's digest of the response it sent
(x-response-sha256) against what arrived (after de-chunking; streams included).

Outcomes: ok; error (connect failure, reset, timeout, truncated response, non-200: the fault
was visible but nothing wrong was delivered); corrupted (a complete 200 response whose request
or response digest does not match: wrong bytes delivered as if right, must never happen).
Prints one JSON object: sent, ok, errors, corrupted, success (ok / sent), p50_ms, p99_ms,
max_ms (latency of successful requests, connection included), rps, first_errors; with --rounds R,
the run is repeated R times and per-round figures are added (rounds: [...]). error_times: when each
error was seen (seconds since the round started, at the wall-clock time started_at), ok_times when
each successful exchange ended (its last byte read); with --keepalive-s the connections send TCP
keepalive probes once idle that long (a client waiting on a stream whose appliance died learns
only when it next sends something)."""
import argparse
import concurrent.futures as cf
import hashlib
import http.client
import json
import socket
import sys
import threading
import time

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def make_bodies(prefixes, size, stream, max_tokens):
    out = []
    for p in range(prefixes):
        system = f"chaos system prompt {p:04d}: " + "".join(chr(97 + (p * 13 + k * 7) % 26) for k in range(400))
        user = "".join(chr(97 + (k * 11 + p) % 26) for k in range(max(1, size - 700)))
        out.append(json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                               "messages": [{"role": "system", "content": system},
                                            {"role": "user", "content": user}]}).encode())
    return out


def one(a, body):
    """('ok'|'error'|'corrupted', latency_s, detail)."""
    t = time.monotonic()
    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
    try:
        if a.keepalive_s:
            conn.connect()
            k = max(1, int(a.keepalive_s))
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, k)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, k)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        hdrs = {"content-type": "application/json"}
        if a.echo_bytes:
            hdrs["x-kvsteer-echo-bytes"] = str(a.echo_bytes)
        conn.request("POST", "/v1/chat/completions", body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()  # raises IncompleteRead on a truncated body or chunk stream
        h = {k.lower(): v for k, v in r.getheaders()}
        if r.status != 200:
            return ("error", 0, f"status {r.status}")
        if h.get("x-body-sha256") != hashlib.sha256(body).hexdigest():
            return ("corrupted", 0, "request body digest mismatch at the backend")
        want = h.get("x-response-sha256")
        if not want:
            return ("corrupted", 0, "no x-response-sha256 (not our backend?)")
        if want != hashlib.sha256(data).hexdigest():
            return ("corrupted", 0, f"response digest mismatch ({len(data)} bytes)")
        if a.stream and b"data: [DONE]" not in data:
            return ("corrupted", 0, "stream without [DONE] but digest matched")
        return ("ok", time.monotonic() - t, h.get("x-kvsteer-backend", ""))
    except Exception as e:  # noqa: BLE001 - every failure is an outcome, none is fatal here
        return ("error", 0, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def pct(xs, q):
    return round(1000 * xs[min(len(xs) - 1, int(len(xs) * q))], 1) if xs else None


def run_round(a, bodies):
    res = {"ok": 0, "error": 0, "corrupted": 0}
    lat, errs, backends, err_t, ok_t = [], [], {}, [], []
    lock = threading.Lock()
    nxt = [0]
    t0 = time.monotonic()
    t0_wall = time.time()
    deadline = t0 + a.seconds

    def worker():
        while True:
            with lock:
                i = nxt[0]
                if i >= a.n or time.monotonic() >= deadline:
                    return
                nxt[0] += 1
            kind, dt, detail = one(a, bodies[i % len(bodies)])
            with lock:
                res[kind] += 1
                if kind == "ok":
                    lat.append(dt)
                    ok_t.append(round(time.monotonic() - t0, 3))
                    backends[detail] = backends.get(detail, 0) + 1
                else:
                    err_t.append(round(time.monotonic() - t0, 2))
                    if len(errs) < 5:
                        errs.append(f"{i}: {kind}: {detail}")

    threads = [threading.Thread(target=worker) for _ in range(max(1, a.concurrency))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    el = time.monotonic() - t0
    lat.sort()
    sent = res["ok"] + res["error"] + res["corrupted"]
    return {"sent": sent, "ok": res["ok"], "errors": res["error"], "corrupted": res["corrupted"],
            "success": round(res["ok"] / sent, 4) if sent else 0.0,
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0),
            "rps": round(res["ok"] / el, 1) if el > 0 else 0.0, "seconds": round(el, 2),
            "backends": len(backends), "first_errors": errs, "error_times": sorted(err_t),
            "ok_times": sorted(ok_t),
            "started_at": round(t0_wall, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--n", type=int, default=100, help="requests at most (per round)")
    ap.add_argument("--seconds", type=float, default=30, help="time at most (per round)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--prefixes", type=int, default=8, help="distinct system prompts, round robin")
    ap.add_argument("--size", type=int, default=1400, help="approximate request body bytes")
    ap.add_argument("--stream", action="store_true", help="SSE responses")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--echo-bytes", type=int, default=0, help="response padding asked of the backend")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keepalive-s", type=float, default=0,
                    help="TCP keepalive: probe after this many idle seconds, then as often")
    a = ap.parse_args()
    if a.n > 200000 or a.seconds > 600 or a.concurrency > 256 or a.rounds > 10:
        ap.error("refusing: at most 200000 requests, 600 s, 256 in parallel, 10 rounds")
    bodies = make_bodies(a.prefixes, a.size, a.stream, a.max_tokens)
    rounds = [run_round(a, bodies) for _ in range(a.rounds)]
    if len(rounds) == 1:
        out = rounds[0]
    else:
        out = {k: sum(r[k] for r in rounds) for k in ("sent", "ok", "errors", "corrupted")}
        out["success"] = round(out["ok"] / out["sent"], 4) if out["sent"] else 0.0
        out["rounds"] = rounds
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
