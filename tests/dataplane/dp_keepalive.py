#!/usr/bin/env python3
"""Kept-alive HTTP/1.1 through the appliance, as SDKs and gateways send it: for each of P
distinct prompt prefixes, first one request on a connection of its own (where the policy sends
that prefix: the reference), then R rounds over all the prefixes on ONE kept-alive connection
(Python's http.client), optionally streamed (SSE). Every exchange is checked byte for byte (the
backend's x-body-sha256 of the request, x-response-sha256 of a whole response; a stream must end
with its [DONE] event). Prints a JSON summary; exit 0 when every request arrived intact on one
connection, whatever backend it reached (the caller judges the placement from `mismatches`)."""
import argparse
import hashlib
import http.client
import json
import sys
import time


MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def body(prefix_idx, k, nbytes, stream):
    # The prompt begins with the prefix's own text, then a per-request tail.
    head = f"Kept-alive system prompt number {prefix_idx}. " * 40
    tail = f" Question {k}: tell me something new."
    msg = (head + tail)[: max(nbytes, len(tail) + 10)]
    return json.dumps({"model": MODEL, "stream": stream, "max_tokens": 8,
                       "messages": [{"role": "system", "content": msg},
                                    {"role": "user", "content": tail}]}).encode()


def exchange(conn, data, stream):
    conn.request("POST", "/v1/chat/completions", body=data,
                 headers={"content-type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    h = {k.lower(): v for k, v in r.getheaders()}
    if r.status != 200:
        return None, f"status {r.status}"
    if h.get("x-body-sha256") != hashlib.sha256(data).hexdigest():
        return None, "request body digest mismatch"
    want = h.get("x-response-sha256")
    if want and want != hashlib.sha256(payload).hexdigest():
        return None, "response digest mismatch"
    if stream and not payload.rstrip().endswith(b"data: [DONE]"):
        return None, "stream did not end with [DONE]"
    return h.get("x-kvsteer-backend"), None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--prefixes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bytes", type=int, default=1500, help="prompt bytes per request")
    ap.add_argument("--stream", action="store_true", help="ask for SSE streams")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between kept-alive requests")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--retry", action="store_true",
                    help="a connection the server closed (a clean close: EOF or reset) is opened "
                         "again and the request sent once more, as SDKs do; a timeout is a hang")
    a = ap.parse_args()

    errors, ref, got, mismatches, clean_closes, hangs = [], {}, [], 0, 0, 0
    for p in range(a.prefixes):  # where a fresh connection lands: the policy's choice
        c = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
        try:
            be, err = exchange(c, body(p, 0, a.bytes, a.stream), a.stream)
        except Exception as e:  # noqa: BLE001 - reported, counted
            be, err = None, f"{type(e).__name__}: {e}"
        finally:
            c.close()
        if err:
            errors.append(f"reference {p}: {err}")
        ref[p] = be

    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
    ports = set()
    t0 = time.monotonic()
    for rnd in range(a.rounds):
        for p in range(a.prefixes):
            data = body(p, rnd + 1, a.bytes, a.stream)
            try:
                be, err = exchange(conn, data, a.stream)
                ports.add(conn.sock.getsockname()[1] if conn.sock else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ConnectionAbortedError) as e:
                be, err = None, f"{type(e).__name__}: {e}"
                if a.retry:  # the server closed the idle connection: a clean close, retried
                    clean_closes += 1
                    conn.close()
                    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
                    try:
                        be, err = exchange(conn, data, a.stream)
                        ports.add(conn.sock.getsockname()[1] if conn.sock else None)
                    except Exception as e2:  # noqa: BLE001
                        be, err = None, f"retry: {type(e2).__name__}: {e2}"
            except TimeoutError as e:
                hangs += 1
                be, err = None, f"hang: {e}"
            except Exception as e:  # noqa: BLE001
                be, err = None, f"{type(e).__name__}: {e}"
            if err:
                errors.append(f"round {rnd} prefix {p}: {err}")
                conn.close()
                conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
                continue
            got.append({"round": rnd, "prefix": p, "backend": be, "reference": ref.get(p)})
            mismatches += be != ref.get(p)
            if a.pause:
                time.sleep(a.pause)
    conn.close()
    summary = {
        "ok": len(got), "errors": len(errors), "first_errors": errors[:5],
        "connections": len(ports), "backends_on_one_connection": len({g["backend"] for g in got}),
        "mismatches": mismatches, "missed": [g for g in got if g["backend"] != g["reference"]][:5],
        "reference": ref, "seconds": round(time.monotonic() - t0, 3),
        "clean_closes": clean_closes, "hangs": hangs,
    }
    print(json.dumps(summary))
    return 0 if not errors and (len(ports) == 1 or a.retry) else 1


if __name__ == "__main__":
    sys.exit(main())
