#!/usr/bin/env bash
# Packet path: established-flow forwarding through the appliance's XDP program.
#  live:    kvsteer-xdp-live injects real frames (BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES)
#           as if received on a veth; XDP_TX sends them to the veth peer, where a counting XDP
#           program drops them. Frames/s forwarded per core, for 1..N cores (KVB_XDP_CORES).
#  testrun: kernel-timed ns/packet (BPF_PROG_TEST_RUN repeat) with 1 .. 1M flows in the LRU flow
#           map, the packet walking a random cycle through all of them; and the memory floor
#           under it (kvsteer-lookup-floor: one cache line read by index, a bare hash lookup).
# Usage: tools/bench/xdp_bench.sh full|smoke   (root; BUILD, KVS_BENCH_OUT from run.sh)
# Env: KVB_XDP_CORES ("1 2" on 2 CPUs: 1..nproc), KVB_XDP_REPS, KVB_XDP_SECONDS
set -uo pipefail
mode=${1:-full}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
BIN="$BUILD/bin"
FRAG=${KVS_BENCH_OUT:-$BUILD/bench/fragments/xdp_bench.json}
RAW="$BUILD/bench/xdp"
NS=kvbx-xdp
NCPU=$(nproc)
CORES=${KVB_XDP_CORES:-$(seq -s' ' 1 "$NCPU")}
if [[ "$mode" == smoke ]]; then
    REPS=${KVB_XDP_REPS:-1}; SECS=${KVB_XDP_SECONDS:-1}; TR_REPEAT=200000; TR_FLOWS="1 1000 100000"
    LIVE_FLOWS="1"
else
    REPS=${KVB_XDP_REPS:-3}; SECS=${KVB_XDP_SECONDS:-1.5}; TR_REPEAT=1000000; TR_FLOWS="1 1000 10000 100000 1000000"
    LIVE_FLOWS="1 100000"
fi

log() { printf '[xdp %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (XDP, BPF_PROG_TEST_RUN)"
[[ -x "$BIN/kvsteer-xdp-live" ]] || die "$BIN/kvsteer-xdp-live missing"

cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
mkdir -p "$RAW" "$(dirname "$FRAG")"
rm -f "$RAW"/*

# One namespace, one veth pair: frames "arrive" on a0 and leave by XDP_TX to b0. One queue per
# CPU, so that injecting cores do not share the peer's receive ring (veth picks it by CPU).
cleanup
ip netns add "$NS" || die "cannot create namespace $NS"
ip -n "$NS" link add a0 numtxqueues "$NCPU" numrxqueues "$NCPU" type veth \
    peer name b0 numtxqueues "$NCPU" numrxqueues "$NCPU" || die "veth"
ip -n "$NS" link set a0 up
ip -n "$NS" link set b0 up
ip -n "$NS" link set lo up
log "load before: $(cut -d' ' -f1-3 /proc/loadavg); cores $CORES; $REPS rep(s) x ${SECS}s"

cpus_for() { seq -s, 0 $(($1 - 1)); }

nfail=0  # measurements that failed: logged and left out; a smoke run (CI) fails on any
# Live injection: (dir, frame size) x cores x flows, repetitions alternating the configurations.
for ((rep = 1; rep <= REPS; rep++)); do
    for flows in $LIVE_FLOWS; do
        for cfg in "s2c 1514" "c2s 66" "c2s 1514" "s2c 66"; do
            read -r dir size <<<"$cfg"
            # Beyond one flow, only the two directions real traffic stresses (data down, ACKs up).
            [[ "$flows" != 1 && "$cfg" != "s2c 1514" && "$cfg" != "c2s 66" ]] && continue
            for n in $CORES; do
                out=$(ip netns exec "$NS" "$BIN/kvsteer-xdp-live" --mode live --iface a0 --peer b0 \
                    --cpus "$(cpus_for "$n")" --seconds "$SECS" --flows "$flows" --dir "$dir" --size "$size" 2>"$RAW/live.err") \
                    || { log "live $dir ${size}B ${n}c failed: $(tail -2 "$RAW/live.err") ${out:0:300}"; nfail=$((nfail + 1)); continue; }
                echo "{\"rep\": $rep, \"r\": $out}" >>"$RAW/live.jsonl"
                python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("[xdp] live %s %4dB %d core(s) %7d flows rep %s: %6.2f Mpps received (%5.2f per core), %6.2f forwarded by XDP, %6.2f injected" % (
    d["dir"], d["size"], d["cpus"], d["flows"], sys.argv[2], d["mpps_received"], d["mpps_received"] / d["cpus"], d["mpps_forwarded"], d["mpps_injected"]))' "$out" "$rep" >&2
            done
        done
    done
done

# The rig's floor: the same injection through a do-nothing XDP_TX program.
for ((rep = 1; rep <= REPS; rep++)); do
    for cfg in "s2c 1514" "c2s 66"; do
        read -r dir size <<<"$cfg"
        for n in $CORES; do
            out=$(ip netns exec "$NS" "$BIN/kvsteer-xdp-live" --mode live --floor --iface a0 --peer b0 \
                --cpus "$(cpus_for "$n")" --seconds "$SECS" --dir "$dir" --size "$size" 2>"$RAW/live.err") \
                || { log "floor $dir ${size}B ${n}c failed: $(tail -2 "$RAW/live.err") ${out:0:300}"; nfail=$((nfail + 1)); continue; }
            echo "{\"rep\": $rep, \"r\": $out}" >>"$RAW/live.jsonl"
            python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("[xdp] floor (XDP_TX only) %s %4dB %d core(s) rep %s: %6.2f Mpps received (%5.2f per core)" % (
    d["dir"], d["size"], d["cpus"], sys.argv[2], d["mpps_received"], d["mpps_received"] / d["cpus"]))' "$out" "$rep" >&2
        done
    done
done

# Flows in the table: kernel-timed ns/packet while walking N flows, IPv4 and IPv6 (the same
# flows through the dual-stack configuration; figures with "_v6" after the direction).
for flows in $TR_FLOWS; do
    for family in 4 6; do
    for dir in c2s s2c; do
        out=$("$BIN/kvsteer-xdp-live" --mode testrun --cpus 0 --flows "$flows" --dir "$dir" --size 66 \
            --family "$family" --repeat "$TR_REPEAT" --reps "$REPS" 2>"$RAW/testrun.err") \
            || { log "testrun IPv$family $flows flows failed: $(tail -2 "$RAW/testrun.err")"; nfail=$((nfail + 1)); continue; }
        echo "$out" >>"$RAW/testrun.jsonl"
        python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("[xdp] test-run %s IPv%d %8d flows: %6.1f ns/packet (min %.1f max %.1f)%s, table filled in %.2f s" % (
    d["dir"], d.get("family", 4), d["flows"], d["ns_per_pkt"], d["ns_min"], d["ns_max"], "" if d["all_forwarded"] else " NOT ALL FORWARDED", d["fill_s"]))' "$out" >&2
    done
    done
done

# The memory floor under those lookups, same flow counts: one cache line read by index (what a
# flow table read by index would cost at best) and a bare LRU hash lookup sized like kvs_flows.
if [[ -x "$BIN/kvsteer-lookup-floor" ]]; then
    for flows in $TR_FLOWS; do
        out=$("$BIN/kvsteer-lookup-floor" --entries "$flows" --repeat "$TR_REPEAT" --reps "$REPS" 2>"$RAW/floor.err") \
            || { log "lookup floor $flows entries failed: $(tail -2 "$RAW/floor.err")"; nfail=$((nfail + 1)); continue; }
        echo "$out" >>"$RAW/floor.jsonl"
        log "lookup floor $flows entries: $out"
    done
fi

python3 - "$RAW" "$FRAG" <<'PY' || die "the figures step failed (see above)"
import json, os, statistics, sys
raw, frag = sys.argv[1], sys.argv[2]
f = {}
cells = {}
if os.path.exists(os.path.join(raw, "live.jsonl")):
    for line in open(os.path.join(raw, "live.jsonl")):
        r = json.loads(line)["r"]
        cells.setdefault((r["mode"], r["dir"], r["size"], r["cpus"], r["flows"]), []).append(r)
for (mode, d, size, n, flows), rs in sorted(cells.items()):
    tag = ("xdp_floor" if mode == "live-floor" else "xdp_live") + f"_{d}_{size}B_{n}c" + ("" if flows == 1 else f"_{flows}flows")
    rx = [r["mpps_received"] for r in rs]
    f[tag + "_mpps"] = round(statistics.median(rx), 4)
    f[tag + "_mpps_per_core"] = round(statistics.median(rx) / n, 4)
    f[tag + "_mpps_xdp_fwd"] = round(statistics.median([r["mpps_forwarded"] for r in rs]), 4)
    if len(rx) > 1:
        f[tag + "_mpps_spread_pct"] = round(100 * (max(rx) - min(rx)) / statistics.median(rx), 2)
    lost = sum(r["forwarded_xdp"] - r["received_peer"] for r in rs)
    f[tag + "_lost_frames"] = lost
if os.path.exists(os.path.join(raw, "testrun.jsonl")):
    for line in open(os.path.join(raw, "testrun.jsonl")):
        r = json.loads(line)
        if r["all_forwarded"]:
            v6 = "_v6" if r.get("family", 4) == 6 else ""
            f[f"xdp_testrun_{r['dir']}{v6}_ns_{r['flows']}flows"] = round(r["ns_per_pkt"], 2)
if os.path.exists(os.path.join(raw, "floor.jsonl")):
    for line in open(os.path.join(raw, "floor.jsonl")):
        r = json.loads(line)
        f[f"xdp_testrun_floor_array_ns_{r['entries']}flows"] = r["array_ns_per_pkt"]
        f[f"xdp_testrun_floor_hash_ns_{r['entries']}flows"] = r["hash_ns_per_pkt"]
json.dump(f, open(frag, "w"), indent=1, sort_keys=True)
print(f"[xdp] {len(f)} figures -> {frag}", file=sys.stderr)
PY
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((nfail)); then
    [[ "${KVS_BENCH_SMOKE:-0}" == 1 ]] && die "$nfail measurement(s) failed (see above)"
    log "$nfail measurement(s) failed and are left out of the figures (see above)"
fi
