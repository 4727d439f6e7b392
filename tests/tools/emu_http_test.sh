#!/usr/bin/env bash
# kvsteer-gpu-emu over real HTTP on 127.0.0.1: endpoints, SSE framing, vLLM error codes,
# keep-alive, body digests, large streamed responses, and /metrics counters that move only
# when the cache really hits.
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
    --log-requests "$tmp/req.log" --log-level warn &
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
echo "all emulator HTTP checks passed"
