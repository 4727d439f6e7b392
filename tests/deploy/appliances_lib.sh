#!/usr/bin/env bash
# Several kvsteer appliances on a topology from tests/lib/topology.sh (KVS_N_APPLIANCES > 1), as
# the deployment tests bring them up: identical steering settings and cookie key (the
# deploy/ECMP.md table), each appliance its own SNAT address, bpffs and API socket under $DIR.
# Sourced after topology.sh; the caller defines DIR, BIN, BUILD, NBE and fail(), and owns cleanup
# (the pids are in KD_PID[j] and DP_PID[j], the bpffs mounts at $DIR/bpfJ).
declare -A KD_PID DP_PID

# apps_up N EXTRA_FN: kvsteerd and kvsteer-dataplane on appliances 1..N, waits until every
# kvsteerd sees all NBE backends up. EXTRA_FN J, if given, prints more config lines for appliance J.
apps_up() {
    local n=$1 extra=${2:-} j i up
    for ((j = 1; j <= n; j++)); do
        mkdir -p "$DIR/bpf$j" && mount -t bpf bpf "$DIR/bpf$j" || fail "bpffs"
        {
            echo "vip = $KVS_VIP:$KVS_VIP_PORT"
            echo "snat-addr = ${KVS_APP_IPS[$j]}"
            echo "snat-ports = 20000-29999"
            echo "interface = app0"
            echo "steering-mode = prefix"
            echo "cookie-key = 00112233445566778899aabbccddeeff"
            echo "hash-seed = 0x1234"
            echo "health-interval = 200"
            echo "health-timeout = 150"
            echo "health-rise = 1"
            echo "telemetry-interval = 0"
            echo "metrics-listen ="
            echo "bpffs = $DIR/bpf$j"
            echo "api-socket = $DIR/kvsteerd$j.sock"
            [[ -n "$extra" ]] && "$extra" "$j"
            for ((i = 1; i <= NBE; i++)); do echo "backend = ${KVS_BE_IP[$i]}:8000,weight=1,mac=${KVS_BE_MAC[$i]}"; done
        } >"$DIR/kvsteerd$j.conf"
        ip netns exec "${KVS_APP_NS[$j]}" "$BIN/kvsteerd" --config "$DIR/kvsteerd$j.conf" >"$DIR/kvsteerd$j.log" 2>&1 &
        KD_PID[$j]=$!
    done
    for ((j = 1; j <= n; j++)); do
        for _ in $(seq 100); do [[ -S "$DIR/kvsteerd$j.sock" ]] && break; sleep 0.1; done
        [[ -S "$DIR/kvsteerd$j.sock" ]] || fail "kvsteerd $j did not start"
        ip netns exec "${KVS_APP_NS[$j]}" "$BIN/kvsteer-dataplane" --no-pci --no-huge -m 512 --no-shconf -l 0 \
            --file-prefix "kvap$j" --log-level=lib.eal:error \
            --vdev "net_af_xdp$j,iface=app0,xdp_prog=$BUILD/bpf/kvsteer.bpf.o,busy_budget=0" \
            -- --bpffs "$DIR/bpf$j" --mode xdp --idle adaptive >"$DIR/dp$j.log" 2>&1 &
        DP_PID[$j]=$!
    done
    for ((j = 1; j <= n; j++)); do
        for _ in $(seq 100); do grep -q "worker 0: queue" "$DIR/dp$j.log" 2>/dev/null && break; sleep 0.1; done
        grep -q "worker 0: queue" "$DIR/dp$j.log" || fail "dataplane $j did not start"
        for _ in $(seq 100); do
            up=$("$BIN/kvsteerctl" --socket "$DIR/kvsteerd$j.sock" --json backends 2>/dev/null |
                /usr/bin/python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin)["backends"] if b.get("state")=="up"))' 2>/dev/null)
            [[ "$up" == "$NBE" ]] && break
            sleep 0.1
        done
        [[ "$up" == "$NBE" ]] || fail "appliance $j sees ${up:-0}/$NBE backends up"
    done
}

# apps_down N: stops what apps_up started (dataplanes first: SIGTERM detaches XDP) and unmounts.
apps_down() {
    local j p
    for p in "${DP_PID[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for p in "${KD_PID[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for ((j = 1; j <= $1; j++)); do mountpoint -q "$DIR/bpf$j" && umount "$DIR/bpf$j"; done
    return 0
}
