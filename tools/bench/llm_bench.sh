#!/usr/bin/env bash
# LLM-level benchmark through the real packet path: 8 emulated GPU servers (kvsteer-gpu-emu), a
# Mooncake trace replayed (kvsteer-replay) through the appliance with (a) prefix steering, one
# connection per request, (b) round-robin (kvsteer's own steering-mode round-robin), (c) prefix
# steering with the client's connections kept alive (per-request steering), rotated over
# repetitions. Each arm
# gets fresh servers (empty caches) and a fresh appliance (kvsteerd + dataplane, empty affinity).
# Hit rate is counted by the servers' own cache counters (/metrics deltas, see tools/replay).
#
# Usage: tools/bench/llm_bench.sh full|smoke   (root; BUILD, KVS_BENCH_OUT from run.sh)
# Env: KVB_LLM_TRACE (default tools/demo/traces/mooncake-demo.jsonl, shipped), KVB_LLM_LIMIT
#      (requests per arm: smoke 100, full 800), KVB_LLM_REPS (smoke 1, full 3), KVB_LLM_SCALE
#      (time scale of emulators and replayer alike, 10), KVB_LLM_BACKENDS (8)
set -uo pipefail
mode=${1:-full}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
BIN="$BUILD/bin"
FRAG=${KVS_BENCH_OUT:-$BUILD/bench/fragments/llm_bench.json}
RAW="$BUILD/bench/llm"
P=kvbl
RUN=/run/kvsteer-bench-llm
BPFFS=$RUN/bpf
SOCK=$RUN/kvsteerd.sock
NBE=${KVB_LLM_BACKENDS:-8}
SCALE=${KVB_LLM_SCALE:-10}
TRACE=${KVB_LLM_TRACE:-$ROOT/tools/demo/traces/mooncake-demo.jsonl}
NCPU=$(nproc)
LB_CPU=${KVB_LB_CPU:-$((NCPU - 1))}
if [[ "$mode" == smoke ]]; then LIMIT=${KVB_LLM_LIMIT:-100}; REPS=${KVB_LLM_REPS:-1}
else LIMIT=${KVB_LLM_LIMIT:-800}; REPS=${KVB_LLM_REPS:-3}; fi

log() { printf '[llm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces, XDP)"
for b in kvsteerd kvsteerctl kvsteer-dataplane kvsteer-gpu-emu kvsteer-replay; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b missing"
done
# Without a trace at KVB_LLM_TRACE (default: the Mooncake trace the repository ships), SGLang's
# generated-shared-prefix shape stands in.
if [[ -f "$TRACE" ]]; then
    WORKLOAD=(--trace "$TRACE" --limit "$LIMIT" --speed 1 --max-input-tokens 120000)
else
    log "trace $TRACE not found (set KVB_LLM_TRACE): using the generated shared-prefix workload"
    WORKLOAD=(--synthetic --groups 16 --prompts-per-group 16 --system-prompt-len 2048 --question-len 128
              --output-len 32 --qps 8 --limit "$LIMIT")
    TRACE=""
fi

source "$ROOT/tests/lib/topology.sh"
source "$ROOT/tests/lib/appliance.sh"
KVS_BIN=$BIN KVS_BPF_DIR=$BUILD/bpf KVS_BPFFS=$BPFFS KVS_API_SOCK=$SOCK
cleanup() {
    set +e
    trap - EXIT INT TERM
    stop_appliance
    stop_backends
    wait 2>/dev/null
    kvs_topo_down "$P"
    mountpoint -q "$BPFFS" 2>/dev/null && umount "$BPFFS"
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

mkdir -p "$RAW" "$RUN" "$(dirname "$FRAG")"
rm -f "$RAW"/*
log "mode $mode: trace $(basename "${TRACE:-generated-shared-prefix}"), first $LIMIT requests per arm at recorded load (--speed 1), time scale $SCALE, $REPS repetition(s), $NBE servers"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

export KVS_XDP_PASS_OBJ="$BUILD/bpf/xdp_pass.bpf.o"
kvs_topo_up "$P" "$NBE" || die "topology"
mkdir -p "$BPFFS"

start_backends() {  # fresh emulated GPUs: empty caches
    kvs_emulators_up gpu "$SCALE" "$RAW/gpu" || die "emulated GPU servers did not start"
}
stop_backends() { kvs_emulators_down; }

start_appliance() {  # start_appliance STEERING_MODE: fresh maps, daemon and dataplane
    kvs_appliance_up "$1" "$RUN/kvsteerd.conf" "$RAW" "$LB_CPU" "$NBE" || die "the appliance did not come up"
}
stop_appliance() { kvs_appliance_down; }

# Wall-clock cap of one replay: the trace span of LIMIT requests at this time scale, plus margin.
REPLAY_LIMIT_S=$(python3 - "$TRACE" "$LIMIT" "$SCALE" <<'PY'
import json, sys
if not sys.argv[1]:  # generated workload: LIMIT requests at 8 req/s of model time
    print(int(int(sys.argv[2]) / 8 / float(sys.argv[3]) * 3 + 180))
    sys.exit(0)
ts = []
with open(sys.argv[1]) as fh:
    for i, line in enumerate(fh):
        if i >= int(sys.argv[2]):
            break
        ts.append(json.loads(line)["timestamp"])
print(int((max(ts) - min(ts)) / 1000 / float(sys.argv[3]) * 3 + 180))
PY
)
METRICS=()
for ((i = 1; i <= NBE; i++)); do METRICS+=(--metrics "http://${KVS_BE_IP[$i]}:8000/metrics"); done

run_arm() {  # run_arm ARM(prefix|round-robin|prefix-keepalive) REP
    local arm=$1 rep=$2 name ka=()
    name="$arm.$rep"
    # prefix-keepalive: the same steering, the client keeps its connections alive (a pool, as
    # the OpenAI SDKs, LiteLLM and gateways do): every request is steered, not only the first.
    [[ "$arm" == *-keepalive ]] && ka=(--keep-alive)
    start_backends
    start_appliance "${arm%-keepalive}"
    log "rep $rep, arm $arm: replaying $LIMIT requests through the appliance"
    # Bounded: a request stuck in the appliance must not hang the benchmark.
    timeout "$REPLAY_LIMIT_S" ip netns exec "$KVS_NS_CLIENT" "$BIN/kvsteer-replay" --timeout 120 "${WORKLOAD[@]}" \
        --target "$KVS_VIP:$KVS_VIP_PORT" --time-scale "$SCALE" --max-concurrency 128 "${ka[@]}" \
        "${METRICS[@]}" --out "$RAW/$name.requests.jsonl" --summary-json "$RAW/$name.summary.json" \
        >"$RAW/$name.replay.out" 2>"$RAW/$name.replay.log" || log "  replay reported failures (see $RAW/$name.replay.log)"
    "$BIN/kvsteerctl" --socket "$SOCK" --bpffs "$BPFFS" counters all >"$RAW/$name.counters.txt" 2>&1 || true
    stop_appliance
    stop_backends
    [[ -f "$RAW/$name.summary.json" ]] || { log "  no summary for $name"; return 0; }
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
hr = d.get("prefix_cache_hit_rate")
print("[llm] rep %s %-11s: ok %d/%d  hit rate %s  %.2f req/s  TTFT p50 %.3f s p99 %.3f s" % (sys.argv[2], sys.argv[3],
      d["ok"], d["requests"], "n/a" if hr is None else "%.3f" % hr, d["req_per_s"], d["ttft_p50_s"], d["ttft_p99_s"]))' \
        "$RAW/$name.summary.json" "$rep" "$arm" >&2
}

for ((rep = 1; rep <= REPS; rep++)); do
    case $((rep % 3)) in
        1) order=(round-robin prefix prefix-keepalive) ;;
        2) order=(prefix prefix-keepalive round-robin) ;;
        *) order=(prefix-keepalive round-robin prefix) ;;
    esac
    for arm in "${order[@]}"; do run_arm "$arm" "$rep"; done
done

KVB_TRACE_PATH="$TRACE" python3 - "$RAW" "$FRAG" "$REPS" "$LIMIT" "$SCALE" "$NBE" <<'PY' || die "the figures step failed (see above)"
import glob, json, os, statistics, sys
raw, frag, reps, limit, scale, nbe = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
f = {"llm_requests_per_arm": limit, "llm_time_scale": scale, "llm_backends": nbe, "llm_reps": reps,
     "llm_trace_workload": 1 if os.environ.get("KVB_TRACE_PATH") else 0}
summary = {}
for arm, p in (("prefix", "llm_prefix"), ("round-robin", "llm_rr"),
               ("prefix-keepalive", "llm_prefix_keepalive")):
    ds = []
    for path in sorted(glob.glob(os.path.join(raw, f"{arm}.*.summary.json"))):
        ds.append(json.load(open(path)))
    if len(ds) != reps:  # a run without its summary: the arms' medians would be over unequal sets
        sys.exit(f"[llm] {arm}: {len(ds)} of {reps} runs left a summary (see {raw})")
    def col(k):
        return [d[k] for d in ds if d.get(k) is not None and d.get(k) != -1]
    summary[arm] = ds
    for k, name in (("prefix_cache_hit_rate", "hit_rate"), ("req_per_s", "req_per_s"), ("ttft_p50_s", "ttft_p50_s"),
                    ("ttft_p99_s", "ttft_p99_s"), ("e2e_p50_s", "e2e_p50_s"), ("output_tokens_per_s", "output_tok_per_s")):
        xs = col(k)
        if xs:
            f[f"{p}_{name}"] = round(statistics.median(xs), 5)
            if len(xs) > 1:
                f[f"{p}_{name}_min"] = round(min(xs), 5)
                f[f"{p}_{name}_max"] = round(max(xs), 5)
    f[f"{p}_failed"] = sum(d.get("failed", 0) for d in ds)
# Upper bound for context: the hit rate one unlimited cache would reach on the same requests
# (longest prefix of 512-token blocks already seen, capped at prompt - 1 token, like the servers).
trace = os.environ.get("KVB_TRACE_PATH")
if trace:
    seen, hit, tot, used = set(), 0, 0, 0
    with open(trace) as fh:
        for line in fh:
            if used >= limit:
                break
            d = json.loads(line)
            n = d["input_length"]
            if n > 120000:  # the replayer's --max-input-tokens skips these (not counted in --limit)
                continue
            used += 1
            k, chain = 0, ()
            ids = []  # the shipped trace writes runs of ids as inclusive [first, last] ranges
            for x in d["hash_ids"]:
                ids.extend(range(x[0], x[1] + 1) if isinstance(x, list) else (x,))
            for x in ids:
                chain += (x,)
                if chain in seen and k == len(chain) - 1:
                    k += 1
                seen.add(chain)
            hit += min(k * 512, n - 1)
            tot += n
    if tot:
        f["llm_oracle_hit_rate_bound"] = round(hit / tot, 5)
if "llm_prefix_hit_rate" in f and "llm_rr_hit_rate" in f:
    f["llm_hit_rate_gain_pts"] = round(100 * (f["llm_prefix_hit_rate"] - f["llm_rr_hit_rate"]), 3)
# Per-request steering: the kept-alive arm against one connection per request (target >= 0.95).
if f.get("llm_prefix_hit_rate") and "llm_prefix_keepalive_hit_rate" in f:
    f["llm_keepalive_over_prefix_hit_rate_ratio"] = round(
        f["llm_prefix_keepalive_hit_rate"] / f["llm_prefix_hit_rate"], 4)
if "llm_prefix_ttft_p50_s" in f and f.get("llm_rr_ttft_p50_s"):
    f["llm_ttft_p50_ratio_prefix_over_rr"] = round(f["llm_prefix_ttft_p50_s"] / f["llm_rr_ttft_p50_s"], 4)
json.dump(summary, open(os.path.join(raw, "summary.json"), "w"), indent=1)
json.dump(f, open(frag, "w"), indent=1, sort_keys=True)
print(f"[llm] {len(f)} figures -> {frag}", file=sys.stderr)
PY
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
