#!/usr/bin/env bash
# make demo: the same trace through the real packet path, first with prefix steering off
# (round-robin), then on, then on with the client's connections kept alive (per-request
# steering), against 8 emulated GPU servers in network namespaces. Prints a
# side-by-side table of backend-counted hit rate, req/s, TTFT and per-server load, then the
# simulator's hit rates (kvsteer-sim) on the same requests, load, servers and kvsteerd settings
# beside the real path's, and writes the figures (JSON) and a plot (PNG) under $BUILD/demo/.
#
# Environment: BUILD (default build), DEMO_SCALE (default 1: the whole trace, ~4-5 minutes; 0.25 is a quick
# look), DEMO_SPEED (10: emulated GPUs run 10x faster than real time), DEMO_TRACE (a Mooncake-format file; default the
# trace shipped in tools/demo/traces, derived from the Mooncake synthetic trace; 'generated' for SGLang's
# generated-shared-prefix workload), DEMO_BACKENDS (8).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
BIN="$ROOT/$BUILD/bin"
OUT="$ROOT/$BUILD/demo"
SCALE=${DEMO_SCALE:-1}
NBE=${DEMO_BACKENDS:-8}
P=kvdemo
RUN=/run/kvsteer-demo
BPFFS=$RUN/bpf
SOCK=$RUN/kvsteerd.sock  # not the production default: a host's kvsteerd may be using it
TRACE=${DEMO_TRACE:-$ROOT/tools/demo/traces/mooncake-demo.jsonl}

log() { printf '[demo %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it creates network namespaces and loads XDP programs)"
[[ "$SCALE" =~ ^[0-9]*\.?[0-9]+$ ]] || die "DEMO_SCALE must be a positive number, got '$SCALE'"
for b in kvsteerd kvsteerctl kvsteer-dataplane kvsteer-gpu-emu kvsteer-replay; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing: run 'make' first"
done
[[ -f "$BUILD/bpf/kvsteer.bpf.o" ]] || die "$BUILD/bpf/kvsteer.bpf.o is missing: run 'make' first"

source "$ROOT/tests/lib/topology.sh"
source "$ROOT/tests/lib/appliance.sh"
KVS_BIN=$BIN KVS_BPF_DIR=$ROOT/$BUILD/bpf KVS_BPFFS=$BPFFS KVS_API_SOCK=$SOCK
PIDS=()
cleanup() {
    set +e
    trap - EXIT INT TERM
    log "cleaning up"
    [[ -n "${DP_PID:-}" ]] && kill -TERM "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    kvs_topo_down "$P"
    mountpoint -q "$BPFFS" && umount "$BPFFS"
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

mkdir -p "$OUT" "$RUN"
rm -f "$SOCK"  # one a killed demo left would pass for a started kvsteerd
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.jsonl "$OUT"/*.txt

# ---- workload ---------------------------------------------------------------------------------
# The emulated GPUs and the replayer's clock both run SPEED times faster than model time, so the
# servers see the trace's recorded load in 1/SPEED of its duration; DEMO_SCALE sets how much of
# the trace is replayed.
SPEED=${DEMO_SPEED:-10}    # emulated-GPU speed-up (wall clock runs SPEED times faster than model time)
# SIM_WORKLOAD: the same requests at the same model-time load for kvsteer-sim (it reads the trace
# with the replayer's own parser and request bodies; --max-input-tokens skips the same requests).
if [[ "$TRACE" != generated ]]; then
    [[ -f "$TRACE" ]] || die "no trace at $TRACE (DEMO_TRACE=generated runs the generated workload)"
    total=$(wc -l <"$TRACE")
    LIMIT=$(python3 -c "print(max(50, min($total, int($total * $SCALE))))")
    WORKLOAD=(--trace "$TRACE" --limit "$LIMIT" --speed 1 --max-input-tokens 120000)
    SIM_WORKLOAD=(--workload mooncake --trace "$TRACE" --limit "$LIMIT" --speed 1 --max-input-tokens 120000)
    WDESC="Mooncake trace $(basename "$TRACE"), first $LIMIT of $total requests at recorded load"
    # Seconds of model time the replayed requests span (their arrivals, in trace order).
    SPAN_S=$(python3 -c "import json,sys; t=[json.loads(l)['timestamp'] for l in open(sys.argv[1]) if l.strip()]; t.sort(); print(t[min(len(t), $LIMIT) - 1] / 1000)" "$TRACE") \
        || die "cannot read the trace's timestamps in $TRACE"
else
    groups=$(python3 -c "print(max(4, int(32 * $SCALE)))")
    WORKLOAD=(--synthetic --groups "$groups" --prompts-per-group 16 --system-prompt-len 2048
              --question-len 128 --output-len 64 --qps 40)
    SIM_WORKLOAD=(--workload shared-prefix --groups "$groups" --prompts-per-group 16 --system-prompt-len 2048
                  --question-len 128 --output-len 64 --qps 40)
    WDESC="generated shared prefix: $groups groups x 16 prompts"
    SPAN_S=$(python3 -c "print($groups * 16 / 40)")
fi
log "workload: $WDESC"
# Each arm's bound: three times its replay at the speed-up, plus 5 minutes; a request gets 120 s
# (the replayer's own default, 600 s with 128 in flight, let a wedged path run for hours).
REPLAY_LIMIT_S=$(python3 -c "print(int($SPAN_S / $SPEED * 3 + 300))")

# ---- topology, maps, daemon ------------------------------------------------------------------
export KVS_XDP_PASS_OBJ="$ROOT/$BUILD/bpf/xdp_pass.bpf.o"
log "building the namespace topology: client, appliance, $NBE GPU servers"
kvs_topo_up "$P" "$NBE" || die "topology"
mkdir -p "$BPFFS"
mountpoint -q "$BPFFS" || mount -t bpf bpf "$BPFFS" || die "cannot mount a bpffs at $BPFFS"

CONF="$RUN/kvsteerd.conf"
kvs_kvsteerd_conf round-robin >"$CONF"

start_backends() {  # fresh emulated GPUs: empty caches for each arm
    kvs_emulators_up gpu "$SPEED" "$OUT/gpu.$1." || die "emulated GPU servers did not start"
    PIDS+=("${KVS_EMU_PIDS[@]}")
}
stop_backends() { kvs_emulators_down; }

start_backends rr
log "starting kvsteerd (config: deploy/demo.conf) and kvsteer-dataplane (af_xdp) in the appliance namespace"
kvs_kvsteerd_up "$CONF" "$OUT/kvsteerd.log" || die "kvsteerd did not start"
PIDS+=("$KVS_KVSTEERD_PID")
kvs_dataplane_up "$OUT/dataplane.log" 0 --idle adaptive || die "the dataplane did not start"
DP_PID=$KVS_DP_PID
# Wait until the daemon sees every backend up (health checks through the appliance's kernel).
kvs_backends_up_wait "$NBE" || die "backends not up; see $OUT/kvsteerd.log"
log "live state meanwhile, from another terminal: $BIN/kvsteerctl --socket $SOCK status; $BIN/kvsteerctl --bpffs $BPFFS counters"

METRICS=()
for ((i = 1; i <= NBE; i++)); do METRICS+=(--metrics "http://${KVS_BE_IP[$i]}:8000/metrics"); done

run_arm() {  # run_arm NAME [REPLAY OPTIONS]: replays the workload through the VIP (progress on stderr)
    local name=$1
    shift
    log "arm '$name': replaying through the appliance ($WDESC)"
    ip netns exec "$KVS_NS_CLIENT" timeout "$REPLAY_LIMIT_S" "$BIN/kvsteer-replay" "${WORKLOAD[@]}" "$@" \
        --target "$KVS_VIP:$KVS_VIP_PORT" --time-scale "$SPEED" --max-concurrency 128 --timeout 120 \
        "${METRICS[@]}" --out "$OUT/$name.requests.jsonl" --summary-json "$OUT/$name.summary.json" \
        2> >(tee "$OUT/$name.replay.log" >&2) >/dev/null \
        || die "replay of arm '$name' failed or ran past ${REPLAY_LIMIT_S} s (see $OUT/$name.replay.log)"
}

run_arm round-robin
stop_backends
start_backends prefix
"$BIN/kvsteerctl" --socket "$SOCK" tune steering-mode prefix >/dev/null || die "cannot switch steering mode"
sleep 1.5   # kvsteerd sees the restart (its checks fail), then every backend passes again
kvs_backends_up_wait "$NBE" || die "backends not up after their restart; see $OUT/kvsteerd.log"
run_arm kvsteer
# Third arm: the same steering, the client's connections kept alive (a pool, as the OpenAI SDKs
# and gateways keep them): every request is steered at its boundary, not only the first.
stop_backends
start_backends prefix
sleep 1.5
kvs_backends_up_wait "$NBE" || die "backends not up after their restart; see $OUT/kvsteerd.log"
run_arm kvsteer-keep-alive --keep-alive

"$BIN/kvsteerctl" --socket "$SOCK" --bpffs "$BPFFS" counters all >"$OUT/counters.txt" 2>&1 || true

# ---- the simulator on the same workload --------------------------------------------------------
# kvsteer-sim with the servers the emulators model (same defaults), $NBE of them, and kvsteerd's
# settings read back from this run's configuration (each key the simulator has). kvsteerd runs on
# the wall clock while the emulated GPUs run SPEED times faster, so its intervals, TTLs and rates
# last SPEED times longer in model time: --daemon-time-scale gives the simulated daemon the same
# clock. A simulator that is missing or fails leaves the real-path figures alone: the report says
# why there is no comparison.
SIM_ARGS=()
sim_conf_opts() {  # appends to SIM_ARGS the simulator option of each kvsteerd key set in $CONF
    local key opt v
    local -A opts=([prefix-length]=--prefix-len [block-size]=--block-size [max-blocks]=--max-blocks
                   [max-held-bytes]=--first-flight [load-factor]=--load-factor [load-slack]=--load-slack
                   [replication]=--replication [hot-threshold]=--hot-rps
                   [report-interval]=--report-interval-ms [telemetry-interval]=--telemetry-interval-ms)
    for key in "${!opts[@]}"; do
        v=$(sed -n "s/^$key *= *//p" "$CONF" | tail -n 1)
        [[ -n "$v" ]] && SIM_ARGS+=("${opts[$key]}" "$v")
    done
    v=$(sed -n 's/^affinity-min-hot *= *//p' "$CONF" | tail -n 1)   # ms; the simulator takes s
    [[ -n "$v" ]] && SIM_ARGS+=(--min-hot-s "$(python3 -c "print($v / 1000)")")
    return 0
}
SIM_REPORT=()
if [[ ! -x "$BIN/kvsteer-sim" ]]; then
    SIM_REPORT=(--sim-error "$BIN/kvsteer-sim is missing (build the kvsteer-sim target)")
else
    sim_conf_opts
    SIM_ARGS=("${SIM_WORKLOAD[@]}" --servers "$NBE" --policies rr,kvsteer "${SIM_ARGS[@]}"
              --daemon-time-scale "$SPEED" --json "$OUT/sim.json")
    log "simulator: kvsteer-sim ${SIM_ARGS[*]}"
    if "$BIN/kvsteer-sim" "${SIM_ARGS[@]}" >"$OUT/sim.txt" 2>"$OUT/sim.log"; then
        SIM_REPORT=(--sim "$OUT/sim.json")
    else
        rc=$?
        SIM_REPORT=(--sim-error "kvsteer-sim exited with status $rc: $(tail -n 1 "$OUT/sim.log")")
    fi
fi

/usr/bin/python3 "$ROOT/tools/demo/report.py" "$OUT/round-robin.summary.json" "$OUT/kvsteer.summary.json" \
    --keep-alive "$OUT/kvsteer-keep-alive.summary.json" "${SIM_REPORT[@]}" \
    --plot "$OUT/demo.png" --json "$OUT/demo.json" --workload "$WDESC" || die "report failed"
log "figures: $OUT/demo.json, plot: $OUT/demo.png, logs: $OUT/"
