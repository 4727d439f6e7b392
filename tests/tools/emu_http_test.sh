#!/usr/bin/env bash
# kvsteer-gpu-emu over real HTTP on 127.0.0.1: endpoints, SSE framing, vLLM error codes,
# keep-alive, body digests, large streamed responses, /metrics counters that move only when the
# cache really hits, and the raw HTTP/1.1 layer (pipelining, chunked bodies, 100-continue,
# malformed and oversized requests, half-close, client aborts).
# Usage: emu_http_test.sh path/to/kvsteer-gpu-emu
set -euo pipefail
EMU=${1:?usage: $0 kvsteer-gpu-emu}
tmp=$(mktemp -d /tmp/tools-emu-http.XXXXXX)
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

"$EMU" --port 0 --port-file "$tmp/port" --server-id t1 --time-scale 200 --model m-one --model m-two \
    --log-requests "$tmp/req.log" --max-body-bytes 65536 --log-level warn &
pid=$!
for _ in $(seq 100); do [[ -s "$tmp/port" ]] && break; sleep 0.05; done
[[ -s "$tmp/port" ]] || fail "emulator did not start"
U="http://127.0.0.1:$(cat "$tmp/port")"
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
metric() {  # metric NAME: value summed over label sets, from a fresh scrape
    curl -sf "$U/metrics" | awk -v n="$1" '$1 ~ "^"n"([{]|$)" {s+=$NF} END {printf "%d\n", s}'
}

# --- plain endpoints
[[ $(curl -s -o /dev/null -w '%{http_code}' "$U/health") == 200 ]] || fail "/health"
curl -sf "$U/v1/models" >"$tmp/models"
[[ $(jq_ "$tmp/models" '[m["id"] for m in d["data"]]') == "['m-one', 'm-two']" ]] || fail "/v1/models: $(cat "$tmp/models")"
pass "health, models"

# --- non-streaming completion: usage, backend header, body digest
printf '{"model":"m-two","prompt":"%s","max_tokens":5}' "$(head -c 3000 /dev/zero | tr '\0' 'q')" >"$tmp/c.json"
curl -sf -D "$tmp/h" -o "$tmp/out" -H 'content-type: application/json' --data-binary @"$tmp/c.json" "$U/v1/completions"
[[ $(jq_ "$tmp/out" 'd["usage"]["completion_tokens"]') == 5 ]] || fail "completion_tokens: $(cat "$tmp/out")"
[[ $(jq_ "$tmp/out" 'd["usage"]["prompt_tokens"]') == 750 ]] || fail "prompt_tokens (3000 bytes / 4)"
[[ $(jq_ "$tmp/out" 'd["object"]') == text_completion ]] || fail "object"
grep -qi '^x-kvsteer-backend: t1' "$tmp/h" || fail "x-kvsteer-backend header"
want=$(sha256sum <"$tmp/c.json" | cut -d' ' -f1)
grep -qi "^x-body-sha256: $want" "$tmp/h" || fail "x-body-sha256 != sha256sum of the body"
got=$(sha256sum <"$tmp/out" | cut -d' ' -f1)
grep -qi "^x-response-sha256: $got" "$tmp/h" || fail "x-response-sha256 != sha256sum of the response"
pass "completions JSON, usage, digests"

# --- streaming chat: chunked SSE, one event per token, [DONE] last
curl -sfN -D "$tmp/h" -o "$tmp/sse" "$U/v1/chat/completions" \
    -d '{"model":"m-one","messages":[{"role":"user","content":"hello"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}'
grep -qi '^transfer-encoding: chunked' "$tmp/h" || fail "not chunked"
grep -qi '^content-type: text/event-stream' "$tmp/h" || fail "content-type"
python3 - "$tmp/sse" <<'PY' || fail "SSE format"
import json, sys
raw = open(sys.argv[1]).read()
assert raw.endswith("data: [DONE]\n\n"), raw[-50:]
events = [e for e in raw.split("\n\n") if e]
assert all(e.startswith("data: ") for e in events), events
payloads = [json.loads(e[6:]) for e in events[:-1]]
assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
content = [p for p in payloads if p["choices"] and "content" in p["choices"][0]["delta"] and p["choices"][0]["delta"]["content"]]
assert len(content) == 4, len(content)   # one event per token
assert payloads[-1]["usage"]["completion_tokens"] == 4
assert all(p["object"] == "chat.completion.chunk" for p in payloads)
PY
pass "streaming chat SSE"

# --- errors as vLLM sends them
code() { curl -s -o "$tmp/e" -w '%{http_code}' "$@"; }
[[ $(code "$U/v1/completions" -d '{bad json') == 400 ]] || fail "bad JSON -> 400"
[[ $(jq_ "$tmp/e" 'd["object"], d["type"], d["code"], d["param"]') == "('error', 'BadRequestError', 400, None)" ]] || fail "error body: $(cat "$tmp/e")"
[[ $(code "$U/v1/completions" -d '{"model":"m-one"}') == 400 ]] || fail "missing prompt -> 400"
[[ $(code "$U/v1/chat/completions" -d '{"model":"m-one"}') == 400 ]] || fail "missing messages -> 400"
[[ $(code "$U/v1/completions" -d '{"model":"nope","prompt":"x"}') == 404 ]] || fail "unknown model -> 404"
[[ $(jq_ "$tmp/e" 'd["type"]') == NotFoundError ]] || fail "404 type"
[[ $(code "$U/v1/completions") == 405 ]] || fail "GET completions -> 405"
[[ $(code -X POST "$U/metrics") == 405 ]] || fail "POST /metrics -> 405"
[[ $(code "$U/v2/nothing") == 404 ]] || fail "unknown path -> 404"
[[ $(jq_ "$tmp/e" 'd["detail"]') == "Not Found" ]] || fail "404 body"
# A broken request line gets a 400 and a closed connection.
reply=$(printf 'BLAH\r\n\r\n' | timeout 5 python3 -c "
import socket,sys; s=socket.create_connection(('127.0.0.1', $(cat "$tmp/port"))); s.sendall(sys.stdin.buffer.read())
print(s.recv(4096).decode().split('\r\n')[0])")
[[ "$reply" == "HTTP/1.1 400 Bad Request" ]] || fail "malformed request -> '$reply'"
pass "error codes"

# --- the HTTP/1.1 layer byte by byte, on raw sockets
python3 - "$(cat "$tmp/port")" <<'PY' || fail "raw HTTP/1.1"
import hashlib, json, re, socket, sys, time
port = int(sys.argv[1])

def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s

def until_close(s):  # everything the server sends until it closes (a hang times out)
    out = b""
    while True:
        b = s.recv(1 << 16)
        if not b:
            return out
        out += b

def exchange(data, half_close=False):
    s = conn()
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    try:
        return until_close(s)
    finally:
        s.close()

def parse(raw):
    """Splits a byte stream into responses: (status, headers, de-chunked body, raw body)."""
    out = []
    while raw:
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep, "truncated head: %r" % head[:200]
        lines = head.decode().split("\r\n")
        m = re.fullmatch(r"HTTP/1\.1 (\d{3}) [A-Za-z -]+", lines[0])
        assert m, "status line %r" % lines[0]
        status = int(m.group(1))
        hdrs = {}
        for l in lines[1:]:
            k, v = l.split(": ", 1)
            assert k == k.lower(), "header names are lower case (as uvicorn sends them): " + k
            hdrs[k] = v
        if status == 100:
            out.append((status, hdrs, b"", b""))
            continue
        if hdrs.get("transfer-encoding") == "chunked":
            body, start = b"", raw
            while True:
                size, _, raw = raw.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    assert raw.startswith(b"\r\n"), "last chunk"
                    raw = raw[2:]
                    break
                body += raw[:n]
                assert raw[n:n + 2] == b"\r\n", "chunk framing"
                raw = raw[n + 2:]
            out.append((status, hdrs, body, start[:len(start) - len(raw)]))
        else:
            n = int(hdrs["content-length"])
            assert len(raw) >= n, "body shorter than content-length: %d < %d" % (len(raw), n)
            out.append((status, hdrs, raw[:n], raw[:n]))
            raw = raw[n:]
    return out

def req(method, path, body=b"", extra=""):
    h = "%s %s HTTP/1.1\r\nhost: t\r\n%s" % (method, path, extra)
    if body:
        h += "content-length: %d\r\n" % len(body)
    return h.encode() + b"\r\n" + body

def health_ok():
    r = parse(exchange(req("GET", "/health", extra="connection: close\r\n")))
    assert [x[0] for x in r] == [200], r

# Date as RFC 9110 IMF-fixdate, the backend header, and close on request.
(st, h, body, _), = parse(exchange(req("GET", "/health", extra="connection: close\r\n")))
assert st == 200 and body == b"" and h["content-length"] == "0", (st, h)
imf_fixdate = (r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
               r"\d{4} \d\d:\d\d:\d\d GMT")
assert re.fullmatch(imf_fixdate, h["date"]), h["date"]
assert h["server"] == "uvicorn" and h["x-kvsteer-backend"] == "t1" and h["connection"] == "close", h
print("ok - date, server, connection: close")

# Pipelining: four requests in one write, a streamed one among them; answers in order.
comp = json.dumps({"prompt": "pipelined", "max_tokens": 3}).encode()
sse = json.dumps({"prompt": "pipelined too", "max_tokens": 2, "stream": True}).encode()
rs = parse(exchange(req("GET", "/health") + req("POST", "/v1/completions", comp) +
                    req("POST", "/v1/completions", sse) +
                    req("GET", "/v1/models", extra="connection: close\r\n")))
assert [r[0] for r in rs] == [200, 200, 200, 200], [r[0] for r in rs]
assert json.loads(rs[1][2])["usage"]["completion_tokens"] == 3
assert rs[2][1]["content-type"].startswith("text/event-stream") and rs[2][2].endswith(b"data: [DONE]\n\n")
assert hashlib.sha256(rs[2][2]).hexdigest() == rs[2][1]["x-response-sha256"]
assert json.loads(rs[3][2])["object"] == "list" and rs[3][1]["connection"] == "close"
print("ok - pipelined requests answered in order, then closed")

# A chunked request body is de-chunked before it is parsed and digested.
body = b'{"prompt":"chunked body","max_tokens":2}'
wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
chunked = "transfer-encoding: chunked\r\n"
(st, h, out, _), = parse(exchange(req("POST", "/v1/completions", extra=chunked + "connection: close\r\n") +
                                  wire + b"0\r\n\r\n"))
assert st == 200 and h["x-body-sha256"] == hashlib.sha256(body).hexdigest() and h["x-body-bytes"] == str(len(body)), h
print("ok - chunked request body")

# Expect: 100-continue gets an interim 100 before the answer.
s = conn()
s.sendall(req("POST", "/v1/completions",
              extra="expect: 100-continue\r\nconnection: close\r\ncontent-length: %d\r\n" % len(comp)))
assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
s.sendall(comp)
rs = parse(until_close(s))
assert [r[0] for r in rs] == [200], rs
print("ok - 100-continue")

# Malformed or oversized requests: a clear answer, the connection closed (no hang), and the
# server keeps serving.
bad_text = b"Invalid HTTP request received."
for name, data in [
        ("broken request line", b"BLAH\r\n\r\n"),
        ("bad header line", b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n"),
        ("bad content-length", b"POST /v1/completions HTTP/1.1\r\ncontent-length: zz\r\n\r\n"),
        ("bad chunk size", b"POST /v1/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
        ("header over 64 KiB", b"GET /health HTTP/1.1\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n")]:
    rs = parse(exchange(data))
    assert [(r[0], r[2]) for r in rs] == [(400, bad_text)], (name, rs)
    assert rs[0][1]["connection"] == "close", name
    health_ok()
for name, data in [
        ("content-length over --max-body-bytes", req("POST", "/v1/completions", b"x" * 70000)),
        ("chunked body over --max-body-bytes", req("POST", "/v1/completions", extra=chunked) +
         b"".join(b"4000\r\n" + b"y" * 0x4000 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n")]:
    rs = parse(exchange(data))
    assert [(r[0], json.loads(r[2])) for r in rs] == [(413, {"detail": "Request body too large"})], (name, rs)
    health_ok()
# A request cut off (the client half-closes mid-body or mid-head) is a bad request too; one
# that came complete before it on the same connection is answered first.
rs = parse(exchange(req("POST", "/v1/completions", b'{"prompt":')[:-3], half_close=True))
assert [(r[0], r[2]) for r in rs] == [(400, bad_text)], rs
rs = parse(exchange(req("GET", "/health") + b"GET /heal", half_close=True))
assert [(r[0], r[2]) for r in rs] == [(200, b""), (400, bad_text)], rs
health_ok()
# Padding too large to build is refused with vLLM's 400, not a crash.
for v in ["18446744073709551615", "-1", "12abc"]:
    extra = "x-kvsteer-echo-bytes: %s\r\nconnection: close\r\n" % v
    (st, h, out, _), = parse(exchange(req("POST", "/v1/completions", comp, extra=extra)))
    assert st == 400 and json.loads(out)["type"] == "BadRequestError", (v, st, out)
health_ok()
print("ok - malformed, oversized and truncated requests")

# A client that sends its request and half-closes still gets the whole (large) response.
rq = req("POST", "/v1/completions", comp, extra="x-kvsteer-echo-bytes: 3000000\r\n")
(st, h, out, _), = parse(exchange(rq, half_close=True))
assert st == 200 and len(out) > 3000000 and hashlib.sha256(out).hexdigest() == h["x-response-sha256"], (st, len(out))
print("ok - half-close: the response is written in full before closing")

# An HTTP/1.0 client's stream is not chunked (1.0 has no chunked coding): the body ends at the
# close, the head says so, and it is the same SSE body the digest header names.
sbody = json.dumps({"prompt": "old client", "max_tokens": 5, "stream": True}).encode()
raw = exchange(b"POST /v1/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n" % len(sbody) + sbody)
head, sep, out = raw.partition(b"\r\n\r\n")
hs = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:])
assert sep and head.startswith(b"HTTP/1.1 200 "), head
assert "transfer-encoding" not in hs and "content-length" not in hs and hs["connection"] == "close", hs
assert out.startswith(b"data: ") and out.endswith(b"data: [DONE]\n\n"), out[-200:]
assert hashlib.sha256(out).hexdigest() == hs["x-response-sha256"], hs
print("ok - HTTP/1.0 stream: unframed, ended by the close")
# The same with bytes the client sent after its request (never read by the server): the close is
# still a FIN after the whole body, not a reset (a close with unread bytes sends RST, which
# dropped the response's unsent tail and ended the client's read with ECONNRESET).
s = conn()
s.sendall(b"POST /v1/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
          b"x-kvsteer-echo-bytes: 3000000\r\n"
          b"content-length: %d\r\n\r\n" % len(sbody) + sbody)
time.sleep(0.2)  # after the server read the request: these stay unread in its socket
s.sendall(b"more bytes after the request")
# Not read for 0.5 s: the stream is written (most of its 3 MB still in the server's socket) and
# closed before the first read.
time.sleep(0.5)
try:
    raw = until_close(s)
finally:
    s.close()
head, sep, out = raw.partition(b"\r\n\r\n")
hs = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:])
assert sep and head.startswith(b"HTTP/1.1 200 ") and out.endswith(b"data: [DONE]\n\n"), raw[-200:]
assert len(out) > 3000000 and hashlib.sha256(out).hexdigest() == hs["x-response-sha256"], len(out)
print("ok - HTTP/1.0 stream with bytes after the request: ended by a FIN, not a reset")
# A 1.1 stream with an HTTP/1.0 request pipelined behind it: the stream keeps its chunk framing
# (the framing is the response's own, not the connection's latest request's), then the 1.0
# answer, then the close.
st11 = json.dumps({"prompt": "first", "max_tokens": 40, "stream": True}).encode()
raw = exchange(req("POST", "/v1/completions", st11) + b"GET /health HTTP/1.0\r\n\r\n")
rs = parse(raw)
assert [r[0] for r in rs] == [200, 200], [r[0] for r in rs]
assert rs[0][1].get("transfer-encoding") == "chunked" and rs[0][2].endswith(b"data: [DONE]\n\n"), rs[0][1]
assert hashlib.sha256(rs[0][2]).hexdigest() == rs[0][1]["x-response-sha256"]
assert rs[1][1]["connection"] == "close", rs[1][1]
print("ok - a 1.0 request pipelined behind a 1.1 stream leaves its framing alone")

# A client that closes mid-stream aborts its request in the scheduler.
def metric(name):
    (st, h, out, _), = parse(exchange(req("GET", "/metrics", extra="connection: close\r\n")))
    return sum(float(l.split()[-1]) for l in out.decode().splitlines() if l.startswith(name + "{"))
a0 = metric("kvsteer_emu:aborted_requests_total")
s = conn()
long_stream = {"prompt": "walk away", "max_tokens": 60000, "stream": True}
s.sendall(req("POST", "/v1/completions", json.dumps(long_stream).encode()))
got = b""
while b"data: " not in got:
    b = s.recv(4096)
    assert b, "closed before the first token: %r" % got
    got += b
s.close()
for _ in range(100):
    if metric("kvsteer_emu:aborted_requests_total") == a0 + 1 and metric("vllm:num_requests_running") == 0:
        break
    time.sleep(0.05)
else:
    raise AssertionError("abort not seen: aborted %s -> %s, running %s" % (
        a0, metric("kvsteer_emu:aborted_requests_total"), metric("vllm:num_requests_running")))
print("ok - client abort mid-stream frees the request")
PY
grep -q '"status":"aborted"' "$tmp/req.log" || fail "request log lacks the aborted request"
pass "raw HTTP/1.1: pipelining, chunked bodies, 100-continue, bad requests, half-close, HTTP/1.0 stream, abort"

# --- keep-alive: two requests, one connection
curl -sv -o /dev/null -o /dev/null "$U/health" "$U/v1/models" 2>"$tmp/v"
grep -q 'Re-using existing connection' "$tmp/v" || fail "keep-alive: connection not reused"
[[ $(grep -c '^< HTTP/1.1 200' "$tmp/v") == 2 ]] || fail "keep-alive: two 200s"
pass "keep-alive"

# --- the cache counts what it holds: a repeated prompt hits, a different one does not
q0=$(metric vllm:prefix_cache_queries_total); h0=$(metric vllm:prefix_cache_hits_total)
p=$(head -c 4000 /dev/zero | tr '\0' 'r')  # 1000 tokens = 62 full blocks + 8 tokens
curl -sf -o /dev/null "$U/v1/completions" -d "{\"prompt\":\"$p\",\"max_tokens\":2}"
q1=$(metric vllm:prefix_cache_queries_total); h1=$(metric vllm:prefix_cache_hits_total)
[[ $((q1 - q0)) == 1000 && $((h1 - h0)) == 0 ]] || fail "first prompt: queries +$((q1 - q0)) hits +$((h1 - h0))"
curl -sf -o /dev/null "$U/v1/completions" -d "{\"prompt\":\"$p\",\"max_tokens\":2}"
q2=$(metric vllm:prefix_cache_queries_total); h2=$(metric vllm:prefix_cache_hits_total)
[[ $((q2 - q1)) == 1000 && $((h2 - h1)) == 992 ]] || fail "repeat: queries +$((q2 - q1)) hits +$((h2 - h1)) (want 1000, 992)"
p2="s${p:1}"  # differs in the first byte: no hit at all
curl -sf -o /dev/null "$U/v1/completions" -d "{\"prompt\":\"$p2\",\"max_tokens\":2}"
h3=$(metric vllm:prefix_cache_hits_total)
[[ $h3 == "$h2" ]] || fail "a different prompt hit the cache"
[[ $(metric vllm:request_success_total) -ge 5 ]] || fail "request_success_total"
[[ $(metric vllm:time_to_first_token_seconds_count) -ge 5 ]] || fail "ttft histogram count"
[[ $(metric vllm:num_requests_running) == 0 ]] || fail "running should be 0 when idle"
grep -q '"cached_tokens":992' "$tmp/req.log" || fail "request log lacks the hit"
grep -q '"server":"t1"' "$tmp/req.log" || fail "request log lacks the server id"
pass "prefix cache counters move honestly"

# --- /metrics is well-formed Prometheus text (HELP/TYPE before samples, cumulative buckets)
curl -sf "$U/metrics" >"$tmp/metrics"
python3 - "$tmp/metrics" <<'PY' || fail "/metrics format"
import re, sys
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|[+-]Inf|NaN)$')
typed, buckets = {}, {}
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ")
        typed[name] = kind
        continue
    if line.startswith("#"):
        continue
    m = sample.match(line)
    assert m, "bad sample line: " + line
    name = m.group(1)
    base = re.sub(r'_(bucket|count|sum)$', '', name)
    assert name in typed or base in typed, "sample before its # TYPE: " + line
    if name.endswith("_bucket"):
        v = float(m.group(4))
        assert v >= buckets.get(base, 0), "buckets not cumulative: " + line
        buckets[base] = v
for need in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
             "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
             "vllm:request_success_total", "vllm:time_to_first_token_seconds"]:
    assert need in typed, "missing " + need
assert typed["vllm:prefix_cache_hits_total"] == "counter"
assert typed["vllm:time_to_first_token_seconds"] == "histogram"
PY
pass "/metrics is valid exposition text"

# --- large streamed response, byte-exact
curl -sfN -D "$tmp/h" -o "$tmp/big" -H 'x-kvsteer-echo-bytes: 5000000' "$U/v1/completions" \
    -d '{"prompt":"big","max_tokens":8,"stream":true}'
size=$(stat -c %s "$tmp/big")
(( size > 5000000 )) || fail "large response only $size bytes"
got=$(sha256sum <"$tmp/big" | cut -d' ' -f1)
grep -qi "^x-response-sha256: $got" "$tmp/h" || fail "large response digest"
tail -c 14 "$tmp/big" | grep -q 'data: \[DONE\]' || fail "large response does not end with [DONE]"
pass "large streamed response ($size bytes)"

# --- many concurrent connections
pids=()
for i in $(seq 40); do
    curl -sf -o "$tmp/cc.$i" "$U/v1/completions" -d "{\"prompt\":\"c$i\",\"max_tokens\":20,\"stream\":true}" &
    pids+=($!)
done
wait_ok=0
for j in "${pids[@]}"; do wait "$j" && wait_ok=$((wait_ok + 1)); done
[[ $wait_ok == 40 ]] || fail "concurrent: only $wait_ok of 40 succeeded"
for i in $(seq 40); do tail -c 14 "$tmp/cc.$i" | grep -q 'DONE' || fail "concurrent response $i incomplete"; done
pass "40 concurrent streams"

# --- stalled requests (--request-timeout-ms) and an endless chunk-size line: the connection is
# closed (each held its connection, and its bytes, for good); an idle connection is not.
"$EMU" --port 0 --port-file "$tmp/port2" --server-id t2 --time-scale 200 --request-timeout-ms 600 \
    --log-level error &
pid2=$!
for _ in $(seq 100); do [[ -s "$tmp/port2" ]] && break; sleep 0.05; done
[[ -s "$tmp/port2" ]] || fail "second emulator did not start"
python3 - "$(cat "$tmp/port2")" <<'PY' || { kill "$pid2"; fail "stalled requests"; }
import socket, sys, time
port = int(sys.argv[1])
def closed_within(s, seconds):
    """True when the server closes (or answers 4xx and closes) within `seconds`."""
    s.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            d = s.recv(65536)
            if not d:
                return True
            if not d.startswith(b"HTTP/1.1 4"):
                return False
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    return False
s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"GET /he")
assert closed_within(s, 3), "a partial head stayed open"
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
assert closed_within(s, 3), "a stalled body stayed open"
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;")
sent = 0
try:
    for _ in range(64):  # 4 MiB at most, of one endless chunk extension
        s.sendall(b"ab=cd;" * 10923)
        sent += 65538
except (BrokenPipeError, ConnectionResetError):
    pass
assert closed_within(s, 3), "an endless chunk-size line was read on (%d bytes sent)" % sent
# Idle between requests (no keep-alive timeout set): kept, and served after the deadline.
s = socket.create_connection(("127.0.0.1", port)); time.sleep(1.5)
s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(3)
assert s.recv(100).startswith(b"HTTP/1.1 200"), "an idle connection was closed"
PY
kill "$pid2"
pass "stalled requests closed after --request-timeout-ms, an endless chunk-size line refused"
echo "all emulator HTTP checks passed"
