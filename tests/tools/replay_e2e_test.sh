#!/usr/bin/env bash
# kvsteer-replay against two kvsteer-gpu-emu instances on 127.0.0.1: every request lands, the
# summary's hit rate equals what the backends' own counters say, bodies arrive byte-identical,
# keep-alive works, and malformed traces are refused with line numbers.
# Usage: replay_e2e_test.sh path/to/kvsteer-gpu-emu path/to/kvsteer-replay
set -euo pipefail
EMU=${1:?usage: $0 kvsteer-gpu-emu kvsteer-replay}
REPLAY=${2:?usage: $0 kvsteer-gpu-emu kvsteer-replay}
tmp=$(mktemp -d /tmp/tools-replay-e2e.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
SCALE=50

for i in 1 2; do
    "$EMU" --port 0 --port-file "$tmp/port$i" --server-id "be$i" --time-scale $SCALE --log-level warn &
    pids+=($!)
done
for i in 1 2; do
    for _ in $(seq 100); do [[ -s "$tmp/port$i" ]] && break; sleep 0.05; done
    [[ -s "$tmp/port$i" ]] || fail "emulator $i did not start"
done
P1=$(cat "$tmp/port1"); P2=$(cat "$tmp/port2")
counters() {  # sum of queries and hits over both backends, straight from /metrics
    for p in "$P1" "$P2"; do curl -sf "http://127.0.0.1:$p/metrics"; done |
        awk '$1 ~ /^vllm:prefix_cache_queries_total/ {q+=$NF} $1 ~ /^vllm:prefix_cache_hits_total/ {h+=$NF} END {printf "%d %d\n", q, h}'
}

# --- shared-prefix workload, round-robin over both backends, metrics scraped by the replayer
read -r q0 h0 < <(counters)
"$REPLAY" --synthetic --groups 4 --prompts-per-group 8 --system-prompt-len 1024 --question-len 64 \
    --output-len 8 --qps 40 --time-scale $SCALE --target 127.0.0.1:$P1 --target 127.0.0.1:$P2 \
    --metrics http://127.0.0.1:$P1/metrics --metrics http://127.0.0.1:$P2/metrics \
    --out "$tmp/res.jsonl" --summary-json "$tmp/sum.json" --quiet >"$tmp/stdout" \
    || fail "replay exited non-zero: $(cat "$tmp/stdout")"
read -r q1 h1 < <(counters)
[[ $(jq_ "$tmp/sum.json" 'd["ok"], d["failed"], d["requests"]') == "(32, 0, 32)" ]] || fail "counts: $(cat "$tmp/sum.json")"
[[ $(jq_ "$tmp/sum.json" 'd["per_backend"]') == "{'be1': 16, 'be2': 16}" ]] || fail "per_backend"
[[ $(jq_ "$tmp/sum.json" 'd["body_digest_mismatch"] + d["response_digest_mismatch"]') == 0 ]] || fail "digest mismatch"
[[ $(jq_ "$tmp/sum.json" 'd["ttft_samples"]') == 32 ]] || fail "ttft samples"
[[ $(jq_ "$tmp/sum.json" 'd["ttft_p50_s"] > 0 and d["ttft_p99_s"] >= d["ttft_p50_s"]') == True ]] || fail "ttft percentiles"
[[ $(jq_ "$tmp/sum.json" 'int(d["prefix_cache_queries"])') == $((q1 - q0)) ]] || fail "queries differ from the backends'"
[[ $(jq_ "$tmp/sum.json" 'int(d["prefix_cache_hits"])') == $((h1 - h0)) ]] || fail "hits differ from the backends'"
(( h1 - h0 > 0 )) || fail "shared system prompts produced no hits"
[[ $(jq_ "$tmp/sum.json" 'abs(d["prefix_cache_hit_rate"] - '"$((h1 - h0))"' / '"$((q1 - q0))"') < 1e-9') == True ]] || fail "hit rate"
[[ $(wc -l <"$tmp/res.jsonl") == 32 ]] || fail "per-request lines"
python3 - "$tmp/res.jsonl" <<'PY' || fail "per-request results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    assert r["ok"] and r["status"] == 200 and r["body_sha_ok"] is True and r["response_sha_ok"] is True, r
    assert r["usage_completion_tokens"] == 8 and r["ttft_s"] > 0 and r["e2e_s"] >= r["ttft_s"], r
    assert r["usage_prompt_tokens"] > 1088, r   # 1088 tokens of text plus the chat JSON around it
assert {r["backend"] for r in rows} == {"be1", "be2"}
PY
pass "synthetic shared-prefix replay: hit rate $(jq_ "$tmp/sum.json" 'round(d["prefix_cache_hit_rate"], 3)') from backend counters"

# --- Mooncake-format trace (written here), completions API, keep-alive, concurrency cap
cat >"$tmp/trace.jsonl" <<'T'
{"timestamp": 0, "input_length": 1200, "output_length": 3, "hash_ids": [1, 2, 3]}
{"timestamp": 5, "input_length": 1100, "output_length": 3, "hash_ids": [1, 2, 4]}
{"timestamp": 10, "input_length": 600, "output_length": 3, "hash_ids": [1, 5]}
{"timestamp": 400, "input_length": 1200, "output_length": 3, "hash_ids": [1, 2, 3]}
T
read -r q0 h0 < <(counters)
"$REPLAY" --trace "$tmp/trace.jsonl" --api completions --keep-alive --max-concurrency 1 \
    --time-scale $SCALE --target 127.0.0.1:$P1 --metrics http://127.0.0.1:$P1/metrics \
    --summary-json "$tmp/sum2.json" --out "$tmp/res2.jsonl" --quiet >/dev/null || fail "trace replay failed"
[[ $(jq_ "$tmp/sum2.json" 'd["ok"]') == 4 ]] || fail "trace replay ok count"
# One backend, sequential: request 2 shares blocks 1,2 (1024 tokens = 64 of its blocks) with 1,
# request 3 shares block 1 (512 tokens), request 4 repeats 1 (1199 tokens = 74 blocks cached).
[[ $(jq_ "$tmp/sum2.json" 'int(d["prefix_cache_hits"])') == $((1024 + 512 + 1184)) ]] || fail "trace hits: $(jq_ "$tmp/sum2.json" 'd["prefix_cache_hits"]')"
[[ $(jq_ "$tmp/sum2.json" 'int(d["prefix_cache_queries"])') == $((1200 + 1100 + 600 + 1200)) ]] || fail "trace queries"
pass "Mooncake trace replay with keep-alive: exact backend-counted hits"

# --- a kept-alive connection the server closes as the next request arrives (an idle timeout
# crossing it): the request goes again on a new connection, counted as retried, not failed.
python3 -c '
import socket, sys, threading, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
open(sys.argv[1], "w").write(str(l.getsockname()[1]))
def serve(c):
    buf, n = b"", 0
    c.settimeout(10)
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d: return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            clen = next((int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")), 0)
            while len(buf) < clen:
                d = c.recv(65536)
                if not d: return
                buf += d
            buf = buf[clen:]
            n += 1
            if n == 2: return  # the second request of a connection: closed unanswered
            body = b"{\"choices\": [{\"text\": \"ok\"}]}"
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    except OSError: pass
    finally: c.close()
l.settimeout(1)
end = time.monotonic() + 30
while time.monotonic() < end:
    try: threading.Thread(target=serve, args=(l.accept()[0],), daemon=True).start()
    except socket.timeout: pass
' "$tmp/closer_port" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/closer_port" ]] && break; sleep 0.05; done
[[ -s "$tmp/closer_port" ]] || fail "the closing server did not start"
"$REPLAY" --synthetic --groups 1 --prompts-per-group 4 --system-prompt-len 64 --question-len 16 \
    --output-len 1 --qps 50 --keep-alive --max-concurrency 1 --no-verify --api completions \
    --target "127.0.0.1:$(cat "$tmp/closer_port")" --summary-json "$tmp/sum_rt.json" \
    --out "$tmp/res_rt.jsonl" --quiet >"$tmp/rt.out" 2>&1 || fail "retry run failed: $(tail -3 "$tmp/rt.out")"
[[ $(jq_ "$tmp/sum_rt.json" 'd["ok"], d["failed"], d["retried"]') == "(4, 0, 3)" ]] \
    || fail "requests on closed kept-alive connections: $(cat "$tmp/sum_rt.json")"
pass "a request crossing a kept-alive connection's close is sent again (3 of 4 retried, none failed)"

# --- malformed traces are refused, naming the line
printf '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 0}\n' >"$tmp/bad.jsonl"
set +e
"$REPLAY" --trace "$tmp/bad.jsonl" --target 127.0.0.1:$P1 --quiet >/dev/null 2>"$tmp/err"
rc=$?
set -e
[[ $rc == 2 ]] || fail "bad trace exit status $rc"
grep -q 'line 2: missing "input_length"' "$tmp/err" || fail "bad trace message: $(cat "$tmp/err")"
pass "malformed trace refused with its line number"

# --- a dead target is a failure, not a hang
set +e
"$REPLAY" --synthetic --groups 1 --prompts-per-group 2 --target 127.0.0.1:1 --timeout 5 \
    --summary-json "$tmp/sum3.json" --quiet >/dev/null 2>&1
rc=$?
set -e
[[ $rc == 1 ]] || fail "dead target exit status $rc"
[[ $(jq_ "$tmp/sum3.json" 'd["failed"]') == 2 ]] || fail "dead target failures"
pass "connection refused counted as failures"

# --- --duration ends the run at the duration, not at the next request's time (it spun a core
# until then: 20 s here)
printf '{"timestamp": 0, "input_length": 64, "output_length": 2, "hash_ids": [0]}\n{"timestamp": 20000, "input_length": 64, "output_length": 2, "hash_ids": [1]}\n' >"$tmp/gap.jsonl"
t0=$(date +%s.%N)
set +e
"$REPLAY" --trace "$tmp/gap.jsonl" --target 127.0.0.1:$P1 --duration 1 --summary-json "$tmp/sum4.json" \
    --quiet >/dev/null 2>&1
set -e
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 5 else 1)" "$took" || fail "--duration 1 ran $took s"
[[ $(jq_ "$tmp/sum4.json" 'd["ok"]') == 1 ]] || fail "--duration: $(cat "$tmp/sum4.json")"
pass "--duration 1 stops after ${took} s"

# --- a metrics endpoint that accepts and never answers: the scrape gives up (it hung for good)
python3 -c '
import socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
open(sys.argv[1], "w").write(str(l.getsockname()[1]))
conns = []
end = time.monotonic() + 30
l.settimeout(1)
while time.monotonic() < end:
    try: conns.append(l.accept()[0])
    except socket.timeout: pass
' "$tmp/bh_port" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/bh_port" ]] && break; sleep 0.05; done
set +e
timeout 25 "$REPLAY" --synthetic --groups 1 --prompts-per-group 1 --target 127.0.0.1:$P1 \
    --metrics "http://127.0.0.1:$(cat "$tmp/bh_port")/metrics" --quiet >"$tmp/bh.out" 2>&1
rc=$?
set -e
[[ $rc != 124 ]] || fail "the replayer hung on a metrics endpoint that never answers"
grep -q "no answer within" "$tmp/bh.out" || fail "no scrape timeout named: rc $rc: $(tail -3 "$tmp/bh.out")"
# A hit rate over fewer servers than were named is none: the run fails, naming why.
[[ $rc == 1 ]] || fail "a failed scrape still exited $rc"
grep -q "could not be read" "$tmp/bh.out" || fail "the failed scrape is not named: $(tail -3 "$tmp/bh.out")"
pass "a silent metrics endpoint times out (rc $rc), and the run fails without a hit rate"
echo "all replay checks passed"
