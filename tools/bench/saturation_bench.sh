#!/usr/bin/env bash
# The founding experiment on the real packet path, closed loop: a fixed number of requests in
# flight (each finished request is replaced at once by the next), so the servers run saturated
# and req/s is what the routing lets them do, not the arrival rate. 8 emulated GPU servers
# (kvsteer-gpu-emu), every arm on fresh servers (empty caches), side by side in the same run:
#   rr        kvsteer in round-robin steering mode (what prefix-blind balancing gets)
#   kvsteer   kvsteer's prefix steering (affinity table, then weighted Maglev, bounded load)
#   kvsteer-keepalive  the same, the client keeps its connections alive (every request steered)
#   haproxy   HAProxy 2.6 as the L7 peer: buffers the body and hashes its first KVB_HASH_BYTES
#             bytes (balance hash req.body, consistent hashing), as an HTTP proxy would
# Workloads:
#   shared    the generated shared-prefix shape (SGLang's bench_serving): groups of requests that
#             share a long system prompt, shuffled. Sized so the prefixes of all groups do not
#             fit one server's cache but do fit the fleet's: round-robin makes every server
#             cache every group and evict, prefix steering gives each group a home.
#   mooncake  the Mooncake trace shipped for the demo, its timestamps ignored (closed loop).
# Hit rate is counted by the servers' own cache counters (/metrics deltas); req/s, TTFT and
# hit rate read in model time (the servers run KVB_SAT_SCALE times faster than a real GPU).
#
# Usage: tools/bench/saturation_bench.sh full|smoke   (root; BUILD, KVS_BENCH_OUT from run.sh)
# Env: KVB_SAT_REPS (full 3, smoke 1), KVB_SAT_CONCURRENCY (64), KVB_SAT_SCALE (full 2, smoke 10:
#      the rig shares its CPUs with the emulated servers, whose timers run late under load, and
#      every wall-clock ms late counts SCALE ms of model time; 2 keeps that small),
#      KVB_SAT_BACKENDS (8), KVB_SAT_ARMS ("rr kvsteer kvsteer-keepalive haproxy"),
#      KVB_SAT_WORKLOADS ("shared mooncake"), KVB_SAT_GROUPS (full 128, smoke 32),
#      KVB_SAT_PER_GROUP (full 8, smoke 4), KVB_SAT_SYSTEM_LEN (4096), KVB_SAT_QUESTION_LEN (128),
#      KVB_SAT_OUTPUT_LEN (64), KVB_SAT_MOONCAKE_LIMIT (full 600, smoke 150),
#      KVB_SAT_TRACE (tools/demo/traces/mooncake-demo.jsonl), KVB_HASH_BYTES (256)
set -uo pipefail
mode=${1:-full}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
BIN="$BUILD/bin"
FRAG=${KVS_BENCH_OUT:-$BUILD/bench/fragments/saturation_bench.json}
RAW="$BUILD/bench/saturation"
P=kvbs
RUN=/run/kvsteer-bench-sat
BPFFS=$RUN/bpf
SOCK=$RUN/kvsteerd.sock
NBE=${KVB_SAT_BACKENDS:-8}
SCALE=${KVB_SAT_SCALE:-$([[ ${1:-full} == smoke ]] && echo 10 || echo 2)}
CONC=${KVB_SAT_CONCURRENCY:-64}
HASH_BYTES=${KVB_HASH_BYTES:-256}
ARMS=${KVB_SAT_ARMS:-rr kvsteer kvsteer-keepalive haproxy}
WORKLOADS=${KVB_SAT_WORKLOADS:-shared mooncake}
TRACE=${KVB_SAT_TRACE:-$ROOT/tools/demo/traces/mooncake-demo.jsonl}
SYS_LEN=${KVB_SAT_SYSTEM_LEN:-4096}
Q_LEN=${KVB_SAT_QUESTION_LEN:-128}
OUT_LEN=${KVB_SAT_OUTPUT_LEN:-64}
NCPU=$(nproc)
LB_CPU=${KVB_LB_CPU:-$((NCPU - 1))}
if [[ "$mode" == smoke ]]; then
    REPS=${KVB_SAT_REPS:-1}; GROUPS_N=${KVB_SAT_GROUPS:-32}; PER_GROUP=${KVB_SAT_PER_GROUP:-4}
    MC_LIMIT=${KVB_SAT_MOONCAKE_LIMIT:-150}
else
    REPS=${KVB_SAT_REPS:-3}; GROUPS_N=${KVB_SAT_GROUPS:-128}; PER_GROUP=${KVB_SAT_PER_GROUP:-8}
    MC_LIMIT=${KVB_SAT_MOONCAKE_LIMIT:-600}
fi

log() { printf '[sat %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces, XDP)"
for b in kvsteerd kvsteerctl kvsteer-dataplane kvsteer-gpu-emu kvsteer-replay; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b missing"
done
for n in "$NBE" "$SCALE" "$CONC" "$HASH_BYTES" "$REPS" "$GROUPS_N" "$PER_GROUP" "$MC_LIMIT" \
    "$SYS_LEN" "$Q_LEN" "$OUT_LEN"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "every KVB_SAT_* count must be a positive integer, got '$n'"
done
for a in $ARMS; do
    [[ "$a" =~ ^(rr|kvsteer|kvsteer-keepalive|haproxy)$ ]] || die "unknown arm '$a' in KVB_SAT_ARMS"
done
for w in $WORKLOADS; do
    [[ "$w" =~ ^(shared|mooncake)$ ]] || die "unknown workload '$w' in KVB_SAT_WORKLOADS"
done
if [[ " $WORKLOADS " == *" mooncake "* ]] && [[ ! -f "$TRACE" ]]; then
    die "no trace at $TRACE (KVB_SAT_TRACE)"
fi
HAVE_HAPROXY=1
if [[ " $ARMS " == *" haproxy "* ]] && ! command -v haproxy >/dev/null; then
    log "haproxy not installed (Debian package haproxy): the haproxy arm is skipped"
    HAVE_HAPROXY=0
fi

source "$ROOT/tests/lib/topology.sh"
source "$ROOT/tests/lib/appliance.sh"
KVS_BIN=$BIN KVS_BPF_DIR=$BUILD/bpf KVS_BPFFS=$BPFFS KVS_API_SOCK=$SOCK KVS_APP_BACKENDS=$NBE
HAP_PID=""
cleanup() {
    set +e
    trap - EXIT INT TERM
    stop_appliance
    kvs_emulators_down
    [[ -n "$HAP_PID" ]] && { kill "$HAP_PID" 2>/dev/null; wait "$HAP_PID" 2>/dev/null; }
    wait 2>/dev/null
    kvs_topo_down "$P"
    mountpoint -q "$BPFFS" 2>/dev/null && umount "$BPFFS"
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

mkdir -p "$RAW" "$RUN" "$(dirname "$FRAG")"
rm -f "$RAW"/*
log "mode $mode: closed loop, $CONC requests in flight, $NBE servers at time scale $SCALE, $REPS repetition(s); arms: $ARMS; workloads: $WORKLOADS"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

export KVS_XDP_PASS_OBJ="$BUILD/bpf/xdp_pass.bpf.o"
kvs_topo_up "$P" $((NBE + 1)) || die "topology"
HAP_NS=${KVS_BE_NS[$((NBE + 1))]}
HAP_IP=${KVS_BE_IP[$((NBE + 1))]}
mkdir -p "$BPFFS"

# ---- HAProxy: the L7 peer, hashing the body's first HASH_BYTES bytes --------------------------
if [[ " $ARMS " == *" haproxy "* ]] && ((HAVE_HAPROXY)); then
    kvs_haproxy_up "$HAP_NS" "$HAP_IP" "$HASH_BYTES" 300 "$LB_CPU" "$RAW" "$NBE" || die "haproxy did not start"
    HAP_PID=$KVS_HAPROXY_PID
    log "HAProxy $(haproxy -v | head -1 | awk '{print $3}') on $HAP_IP:8000, balance hash req.body,bytes(0,$HASH_BYTES)"
fi

start_appliance() {  # start_appliance STEERING_MODE: fresh maps, daemon and dataplane
    kvs_appliance_up "$1" "$RUN/kvsteerd.conf" "$RAW" "$LB_CPU" "$NBE" || die "the appliance did not come up"
}
stop_appliance() {
    kvs_appliance_down
    # The next arm's dataplane may reuse SNAT 4-tuples the servers still hold in TIME_WAIT.
    local i
    for ((i = 1; i <= NBE; i++)); do
        ip netns exec "${KVS_BE_NS[$i]}" ss -K state time-wait >/dev/null 2>&1 || true
    done
}

METRICS=()
for ((i = 1; i <= NBE; i++)); do METRICS+=(--metrics "http://${KVS_BE_IP[$i]}:8000/metrics"); done

workload_args() {  # workload_args WORKLOAD: sets WARGS, the replayer's workload options
    case $1 in
        # --qps far above what the servers can take: every request is due at once, the cap on
        # requests in flight is what paces the sending (closed loop).
        shared) WARGS=(--synthetic --groups "$GROUPS_N" --prompts-per-group "$PER_GROUP"
            --system-prompt-len "$SYS_LEN" --question-len "$Q_LEN" --output-len "$OUT_LEN" --qps 1000000) ;;
        mooncake) WARGS=(--trace "$TRACE" --limit "$MC_LIMIT" --speed 1000000000 --max-input-tokens 120000) ;;
    esac
}

run_arm() {  # run_arm WORKLOAD ARM REP
    local wl=$1 arm=$2 rep=$3 name target ka=()
    name="$wl.$arm.$rep"
    if [[ "$arm" == haproxy ]]; then
        ((HAVE_HAPROXY)) || return 0
        target="$HAP_IP:8000"
    else
        target="$KVS_VIP:$KVS_VIP_PORT"
    fi
    [[ "$arm" == *-keepalive ]] && ka=(--keep-alive)
    kvs_emulators_up gpu "$SCALE" "$RAW/gpu." || die "emulated GPU servers did not start"
    case $arm in
        rr) start_appliance round-robin ;;
        kvsteer*) start_appliance prefix ;;
    esac
    log "rep $rep, $wl, arm $arm: closed loop, $CONC in flight"
    # Bounded: 600 s of wall time covers the full-size run many times over.
    workload_args "$wl"
    timeout 600 ip netns exec "$KVS_NS_CLIENT" "$BIN/kvsteer-replay" --timeout 120 "${WARGS[@]}" \
        --target "$target" --time-scale "$SCALE" --max-concurrency "$CONC" "${ka[@]}" -q \
        "${METRICS[@]}" --out "$RAW/$name.requests.jsonl" --summary-json "$RAW/$name.summary.json" \
        >"$RAW/$name.replay.out" 2>"$RAW/$name.replay.log" || log "  replay reported failures (see $RAW/$name.replay.log)"
    if [[ "$arm" != haproxy ]]; then
        "$BIN/kvsteerctl" --socket "$SOCK" --bpffs "$BPFFS" counters all >"$RAW/$name.counters.txt" 2>&1 || true
        stop_appliance
    fi
    kvs_emulators_down
    [[ -f "$RAW/$name.summary.json" ]] || { log "  no summary for $name"; return 0; }
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
hr = d.get("prefix_cache_hit_rate")
print("[sat] rep %s %-8s %-17s: ok %d/%d  hit rate %s  %.2f req/s  TTFT p50 %.3f s p99 %.3f s" % (sys.argv[2], sys.argv[3],
      sys.argv[4], d["ok"], d["requests"], "n/a" if hr is None else "%.3f" % hr, d["req_per_s"], d["ttft_p50_s"], d["ttft_p99_s"]))' \
        "$RAW/$name.summary.json" "$rep" "$wl" "$arm" >&2
}

read -r -a arms <<<"$ARMS"
for wl in $WORKLOADS; do
    for ((rep = 1; rep <= REPS; rep++)); do
        # Rotate the arms' order over repetitions: no arm always runs first or last.
        n=${#arms[@]}
        for ((k = 0; k < n; k++)); do run_arm "$wl" "${arms[$(((k + rep - 1) % n))]}" "$rep"; done
    done
done

KVB_SHAPE="$GROUPS_N $PER_GROUP $SYS_LEN $MC_LIMIT" \
python3 - "$RAW" "$FRAG" "$REPS" "$CONC" "$SCALE" "$NBE" "$WORKLOADS" "$ARMS" <<'PY'
import glob, json, os, statistics, sys
raw, frag, reps, conc, scale, nbe = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
workloads, arms = sys.argv[7].split(), sys.argv[8].split()
f = {"sat_concurrency": conc, "sat_time_scale": scale, "sat_backends": nbe, "sat_reps": reps}
# The workloads' shape, for the report's prose (smoke and KVB_SAT_* runs differ from full).
for k, v in zip(("sat_shared_groups", "sat_shared_per_group", "sat_shared_system_tokens",
                 "sat_mooncake_requests"), os.environ["KVB_SHAPE"].split()):
    f[k] = int(v)
short = {"rr": "rr", "kvsteer": "kvsteer", "kvsteer-keepalive": "kvsteer_keepalive", "haproxy": "haproxy"}
ok = True
for wl in workloads:
    for arm in arms:
        ds = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(raw, f"{wl}.{arm}.*.summary.json")))]
        if len(ds) != reps:  # a run without its summary (timed out, crashed): the arms compare unequal sets
            print(f"[sat] ERROR: {wl} {arm}: {len(ds)} of {reps} runs left a summary", file=sys.stderr)
            ok = False
        if not ds:
            continue
        p = f"sat_{wl}_{short[arm]}"
        for k, name in (("prefix_cache_hit_rate", "hit_rate"), ("req_per_s", "req_per_s"),
                        ("ttft_p50_s", "ttft_p50_s"), ("ttft_p99_s", "ttft_p99_s"),
                        ("output_tokens_per_s", "output_tok_per_s")):
            xs = [d[k] for d in ds if d.get(k) is not None and d.get(k) != -1]
            if xs:
                f[f"{p}_{name}"] = round(statistics.median(xs), 5)
                if len(xs) > 1:
                    f[f"{p}_{name}_min"] = round(min(xs), 5)
                    f[f"{p}_{name}_max"] = round(max(xs), 5)
        f[f"{p}_failed"] = sum(d.get("failed", 0) + d.get("not_sent", 0) for d in ds)
        ok = ok and f[f"{p}_failed"] == 0
    rr = f.get(f"sat_{wl}_rr_req_per_s")
    for arm in ("kvsteer", "kvsteer_keepalive", "haproxy"):
        x = f.get(f"sat_{wl}_{arm}_req_per_s")
        if rr and x:
            f[f"sat_{wl}_{arm}_req_gain_over_rr"] = round(x / rr - 1, 4)
    hap = f.get(f"sat_{wl}_haproxy_req_per_s")
    for arm in ("kvsteer", "kvsteer_keepalive"):
        x = f.get(f"sat_{wl}_{arm}_req_per_s")
        if hap and x:
            f[f"sat_{wl}_{arm}_over_haproxy_req_ratio"] = round(x / hap, 4)
json.dump(f, open(frag, "w"), indent=1, sort_keys=True)
for wl in workloads:
    print(f"[sat] {wl}: " + ", ".join(
        f"{arm} {f[f'sat_{wl}_{short[arm]}_req_per_s']:.2f} req/s hit {f.get(f'sat_{wl}_{short[arm]}_hit_rate', float('nan')):.3f}"
        for arm in arms if f"sat_{wl}_{short[arm]}_req_per_s" in f), file=sys.stderr)
    for arm in ("kvsteer", "kvsteer_keepalive"):
        g = f.get(f"sat_{wl}_{arm}_req_gain_over_rr")
        h = f.get(f"sat_{wl}_{arm}_over_haproxy_req_ratio")
        if g is not None:
            print(f"[sat] {wl}: {arm} req/s {100 * g:+.1f}% over round-robin"
                  + (f", {h:.3f}x HAProxy's" if h is not None else ""), file=sys.stderr)
print(f"[sat] {len(f)} figures -> {frag}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
rc=$?
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
((rc == 0)) || die "some requests failed or were not sent, or a run left no summary (see above and $RAW)"
