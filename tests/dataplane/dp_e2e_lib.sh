#!/usr/bin/env bash
# Shared setup of the dataplane end-to-end tests: the namespace topology, a bpffs for the maps,
# emulated GPU backends and kvsteer-dataplane (af_xdp, xdp mode) in the appliance namespace.
# Sourced by dp_e2e.sh; everything it starts is stopped by dpe_cleanup (trap EXIT).
# KVS_FAMILY=6: the IPv6 twin. The topology is dual stack, the tests' VIP, backends and clients
# are IPv6, and the appliance is configured with both VIPs and both SNAT addresses.

dpe_log() { echo "[dp-e2e $(date +%T.%3N)] $*"; }
dpe_fail() { echo "FAIL: $*"; dpe_dump; exit 1; }

dpe_dump() {
    [[ -n "${DPE_DIR:-}" ]] || return 0
    echo "---- dataplane log (tail)"; tail -40 "$DPE_DIR/dp.log" 2>/dev/null || true
    [[ -f "$DPE_DIR/kvsteerd.log" ]] && { echo "---- kvsteerd log (tail)"; tail -20 "$DPE_DIR/kvsteerd.log"; }
    echo "---- counters"; "$DPE_BIN/kvsteer-dp-fixture" counters --bpffs "$DPE_BPFFS" 2>/dev/null || true
}

dpe_cleanup() {
    set +e
    if [[ -n "${DPE_DP_PID:-}" ]]; then kill "$DPE_DP_PID" 2>/dev/null; wait "$DPE_DP_PID" 2>/dev/null; fi
    if [[ -n "${DPE_KVSTEERD_PID:-}" ]]; then kill "$DPE_KVSTEERD_PID" 2>/dev/null; wait "$DPE_KVSTEERD_PID" 2>/dev/null; fi
    for p in "${DPE_BE_PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done
    kvs_topo_down "$DPE_PREFIX"
    if [[ -n "${DPE_BPFFS:-}" ]] && mountpoint -q "$DPE_BPFFS"; then umount "$DPE_BPFFS"; fi
    [[ -n "${DPE_BPFFS:-}" ]] && rmdir "$DPE_BPFFS" 2>/dev/null
    [[ -n "${DPE_DIR:-}" && -z "${DPE_KEEP:-}" ]] && rm -rf "$DPE_DIR"
    return 0
}

# dpe_up PREFIX N_BACKENDS [dataplane options...]
dpe_up() {
    DPE_PREFIX=$1; local nbe=$2; shift 2
    DPE_BPFFS=/run/kvsteer-test-$DPE_PREFIX
    DPE_DIR=$(mktemp -d /tmp/kvdp-e2e.XXXXXX)
    DPE_BE_PIDS=()
    trap dpe_cleanup EXIT
    export KVS_XDP_PASS_OBJ="$DPE_BUILD/bpf/xdp_pass.bpf.o"
    kvs_topo_up "$DPE_PREFIX" "$nbe" || dpe_fail "topology"
    [[ "$KVS_VIP" == *:* ]] && dpe_log "IPv6 twin: VIP $KVS_VIP_EP, backends ${KVS_BE_IP[*]}, clients ${KVS_CLIENT_IP[*]}"
    mkdir -p "$DPE_BPFFS"
    mountpoint -q "$DPE_BPFFS" || mount -t bpf bpf "$DPE_BPFFS" || dpe_fail "mount bpffs"
    local i
    dpe_backend_args "$nbe"
    if [[ -n "${DPE_KVSTEERD:-}" ]]; then
        for ((i = 1; i <= nbe; i++)); do dpe_start_backend "$i"; done
        for ((i = 1; i <= nbe; i++)); do dpe_wait_backend "$i"; done
        dpe_start_kvsteerd "$nbe"
        dpe_start_dataplane "$@"
        return 0
    fi
    dpe_fill "${DPE_BE_ARGS[@]}" ${DPE_FILL_ARGS:-} || dpe_fail "filling maps"
    for ((i = 1; i <= nbe; i++)); do dpe_start_backend "$i"; done
    for ((i = 1; i <= nbe; i++)); do dpe_wait_backend "$i"; done
    dpe_start_dataplane "$@"
}

# dpe_backend_args N [MAC_PREFIX]: DPE_BE_ARGS, the --backend options of backends 1..N (the
# topology's family first, ids 0..N-1; in the IPv6 twin then their IPv4 addresses, N..2N-1).
dpe_backend_args() {
    local n=$1 pre=${2:-} i
    DPE_BE_ARGS=()
    for ((i = 1; i <= n; i++)); do DPE_BE_ARGS+=(--backend "$(kvs_ep "${KVS_BE_IP[$i]}" 8000),$pre${KVS_BE_MAC[$i]}"); done
    [[ "$KVS_VIP" == *:* ]] || return 0
    for ((i = 1; i <= n; i++)); do DPE_BE_ARGS+=(--backend "$(kvs_ep "${KVS_BE_IP4[$i]}" 8000),$pre${KVS_BE_MAC[$i]}"); done
}

# dpe_fill [fixture options...]: the fixture writes the config (the VIPs and SNAT addresses of the
# topology's families: both in the IPv6 twin) and the options given (backends, flags).
dpe_fill() {
    local fam=()
    [[ "$KVS_VIP" == *:* ]] && fam=(--vip "$(kvs_ep "$KVS_VIP4" "$KVS_VIP_PORT")" --snat "$KVS_APP_IP4")
    "$DPE_BIN/kvsteer-dp-fixture" fill --bpffs "$DPE_BPFFS" --vip "$KVS_VIP_EP" --snat "$KVS_APP_IP" "${fam[@]}" \
        --snat-ports "${DPE_SNAT_PORTS:-10000-39999}" --app-mac "$KVS_APP_MAC" "$@" >/dev/null
}

# The control daemon fills the maps (config, backends, Maglev, affinity) and consumes the
# dataplane's binding reports.
dpe_start_kvsteerd() {
    local nbe=$1 args=()
    dpe_backend_args "$nbe" mac=
    args=("${DPE_BE_ARGS[@]}")
    [[ "$KVS_VIP" == *:* ]] && args+=(--vip "$(kvs_ep "$KVS_VIP4" "$KVS_VIP_PORT")" --snat-addr "$KVS_APP_IP4")
    DPE_KVSTEERD_CMD=(ip netns exec "$KVS_NS_APP" "$DPE_BIN/kvsteerd" --bpffs "$DPE_BPFFS" --vip "$KVS_VIP_EP"
        --snat-addr "$KVS_APP_IP" --snat-ports 10000-39999 --interface "$KVS_APP_IF" "${args[@]}"
        --api-socket "$DPE_DIR/kvsteerd.sock" --health-interval 200 --health-timeout 150 --report-interval 100)
    dpe_log "${DPE_KVSTEERD_CMD[*]}"
    "${DPE_KVSTEERD_CMD[@]}" >>"$DPE_DIR/kvsteerd.log" 2>&1 &
    DPE_KVSTEERD_PID=$!
    local t
    for t in $(seq 1 100); do
        [[ -e "$DPE_BPFFS/kvs_config" ]] && "$DPE_BIN/kvsteer-dp-fixture" counters --bpffs "$DPE_BPFFS" >/dev/null 2>&1 \
            && [[ -S "$DPE_DIR/kvsteerd.sock" ]] && { sleep 1; return 0; }
        kill -0 "$DPE_KVSTEERD_PID" 2>/dev/null || { tail -20 "$DPE_DIR/kvsteerd.log"; dpe_fail "kvsteerd exited"; }
        sleep 0.1
    done
    tail -20 "$DPE_DIR/kvsteerd.log"
    dpe_fail "kvsteerd did not come up"
}

dpe_start_backend() {
    local i=$1
    ip netns exec "${KVS_BE_NS[$i]}" "$DPE_BIN/kvsteer-gpu-emu" --host :: --port 8000 --server-id "be$i" \
        --time-scale "${DPE_TIME_SCALE:-1000}" ${DPE_EMU_ARGS:-} >"$DPE_DIR/be$i.log" 2>&1 &
    DPE_BE_PIDS[$i]=$!
}

dpe_wait_backend() {
    local i=$1 t
    for t in $(seq 1 100); do
        ip netns exec "${KVS_BE_NS[$i]}" curl -s -o /dev/null -m 1 "http://127.0.0.1:8000/health" && return 0
        sleep 0.05
    done
    dpe_fail "backend $i did not come up"
}

# dpe_dataplane_cmd ARGS...: the dataplane's command line in DPE_DP_CMD (ARGS its own options).
# Test runs: no PCI, no hugepages, private runtime state; one lcore shared with everything
# (DPE_DP_LCORES overrides the EAL lcore option). DPE_DP_VDEV overrides the port (pure-DPDK mode
# runs on net_af_packet). DPE_DP_XDP_EXTRA: options added to every xdp-mode start (e.g.
# "--backend-pool 4": the suite with the pool on).
dpe_dataplane_cmd() {
    local vdev=${DPE_DP_VDEV:-"net_af_xdp0,iface=$KVS_APP_IF,xdp_prog=$DPE_BUILD/bpf/kvsteer.bpf.o,busy_budget=0"}
    local -a extra=() given=() kept=()
    [[ "${DPE_DP_MODE:-xdp}" == xdp ]] && read -r -a given <<<"${DPE_DP_XDP_EXTRA:-}"
    # An option the scenario names itself wins (the dataplane refuses one named twice): the
    # extra one is dropped with its value.
    local i=0 opt a
    while (( i < ${#given[@]} )); do
        opt=${given[$i]} kept=("$opt")
        if (( i + 1 < ${#given[@]} )) && [[ ${given[$((i + 1))]} != --* ]]; then
            kept+=("${given[$((i + 1))]}")
        fi
        i=$((i + ${#kept[@]}))
        for a in "$@"; do [[ "$a" == "$opt" ]] && { kept=(); break; }; done
        extra+=("${kept[@]}")
    done
    local -a lcores
    read -r -a lcores <<<"${DPE_DP_LCORES:--l 0}"
    DPE_DP_CMD=(ip netns exec "$KVS_NS_APP" "$DPE_BIN/kvsteer-dataplane" --no-pci --no-huge -m 512 --no-shconf
        "${lcores[@]}" --log-level=lib.eal:error --vdev "$vdev"
        -- --bpffs "$DPE_BPFFS" --mode "${DPE_DP_MODE:-xdp}" --idle adaptive "${extra[@]}" "$@")
}

# dpe_start_dataplane ARGS...: starts the dataplane (dpe_dataplane_cmd) and waits for its worker.
dpe_start_dataplane() {
    dpe_dataplane_cmd "$@"
    dpe_log "${DPE_DP_CMD[*]}"
    # This run's lines only: the log is appended to, and an earlier run's "worker 0: queue" made
    # a restart look done at once (a chaos scenario then SIGKILLed the new dataplane in the
    # middle of its XDP program swap, which left no program at all).
    local from
    from=$(stat -c %s "$DPE_DIR/dp.log" 2>/dev/null || echo 0)
    "${DPE_DP_CMD[@]}" >>"$DPE_DIR/dp.log" 2>&1 &
    DPE_DP_PID=$!
    local t
    for t in $(seq 1 300); do
        tail -c "+$((from + 1))" "$DPE_DIR/dp.log" 2>/dev/null | grep -q "worker 0: queue" &&
            { sleep 0.2; return 0; }
        kill -0 "$DPE_DP_PID" 2>/dev/null || dpe_fail "dataplane exited at startup"
        sleep 0.1
    done
    dpe_fail "dataplane did not start"
}

# dpe_stream_then_stop MAX_TOKENS: starts a long streamed chat completion through the VIP in
# the background (its pid in DPE_STREAM, output $DPE_DIR/long.{h,b}), lets it run 0.6 s, then
# SIGTERMs the dataplane under it and checks that the dataplane exited cleanly.
dpe_stream_then_stop() {
    python3 - "$DPE_DIR/long.json" "$1" <<'PY'
import json, sys
json.dump({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": int(sys.argv[2]), "stream": True,
           "messages": [{"role": "user", "content": "tell me a long story " * 20}]}, open(sys.argv[1], "w"))
PY
    dpe_post "$DPE_DIR/long.json" "$DPE_DIR/long" & DPE_STREAM=$!
    sleep 0.6
    local rc
    kill -TERM "$DPE_DP_PID"; wait "$DPE_DP_PID"; rc=$?; DPE_DP_PID=""
    (( rc == 0 )) || dpe_fail "dataplane exit status $rc after SIGTERM"
}

# dpe_stream_intact WHAT: waits for the stream dpe_stream_then_stop started; it must end
# successfully, byte-identical and complete ([DONE]). WHAT names the event it survived.
dpe_stream_intact() {
    wait "$DPE_STREAM" || dpe_fail "stream broken by $1"
    dpe_check_digests "$DPE_DIR/long" "$DPE_DIR/long.json"
    grep -q 'data: \[DONE\]' "$DPE_DIR/long.b" || dpe_fail "stream incomplete after $1"
}

# dpe_post FILE OUT_PREFIX [curl args...]: POSTs FILE to /v1/chat/completions through the VIP.
# Writes OUT_PREFIX.h (headers) and OUT_PREFIX.b (body). Returns curl's status.
dpe_post() {
    local file=$1 out=$2; shift 2
    ip netns exec "$KVS_NS_CLIENT" curl -sS -m 20 -o "$out.b" -D "$out.h" -H 'content-type: application/json' -H 'Expect:' \
        --data-binary "@$file" "$@" "http://$KVS_VIP_HOST:$KVS_VIP_PORT/v1/chat/completions"
}

dpe_header() { grep -i "^$2:" "$1" | tail -1 | cut -d' ' -f2 | tr -d '\r'; }

# dpe_check_digests OUT_PREFIX FILE: a 200, the backend saw FILE byte-identical and we got its body
# intact (the emulator digests every 200 it sends; an error answer carries the request's digest
# alone, and passed here when the response digest was optional).
dpe_check_digests() {
    local out=$1 file=$2
    local want got resp_want resp_got status
    status=$(grep -m1 -oE '^HTTP/[0-9.]+ [0-9]+' "$out.h" | cut -d' ' -f2)
    [[ "$status" == 200 ]] || dpe_fail "HTTP status '${status}', not 200 ($out: $(head -c 300 "$out.b"))"
    want=$(sha256sum "$file" | cut -d' ' -f1)
    got=$(dpe_header "$out.h" x-body-sha256)
    [[ "$want" == "$got" ]] || dpe_fail "request body digest: sent $want, backend saw '$got' ($out)"
    resp_want=$(dpe_header "$out.h" x-response-sha256)
    resp_got=$(sha256sum "$out.b" | cut -d' ' -f1)
    [[ -n "$resp_want" ]] || dpe_fail "no response digest from the backend ($out)"
    [[ "$resp_want" == "$resp_got" ]] || dpe_fail "response digest: backend sent $resp_want, got $resp_got ($out)"
}

# dpe_chat_body FILE PREFIX_TEXT SIZE [stream]: a chat request whose first message starts with
# PREFIX_TEXT, padded to about SIZE bytes.
dpe_chat_body() {
    python3 - "$@" <<'PY'
import json, sys
path, prefix, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
stream = len(sys.argv) > 4 and sys.argv[4] == "stream"
filler = "".join(chr(97 + (i * 7) % 26) for i in range(max(0, size)))
body = {"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 4, "stream": stream,
        "messages": [{"role": "system", "content": prefix},
                     {"role": "user", "content": filler}]}
s = json.dumps(body)
if len(s) > size:  # trim the filler so the body is about SIZE bytes
    body["messages"][1]["content"] = filler[: max(1, len(filler) - (len(s) - size))]
    s = json.dumps(body)
open(path, "w").write(s)
PY
}

# dpe_flows: the number of flow entries ("?" when the maps cannot be read: no count to pass on).
dpe_flows() { "$DPE_BIN/kvsteer-dp-fixture" flows --bpffs "$DPE_BPFFS" || echo "?"; }
# dpe_counter NAME: a counter's value (0 included). A name that is not a counter, or counters that
# cannot be read, print nothing and are written to missing_counters, which fails the scenario at
# its end (dpe_check_counters_read): a check reading an unknown name compared 0 with 0.
dpe_counter() {
    "$DPE_BIN/kvsteer-dp-fixture" counters --all --bpffs "$DPE_BPFFS" |
        awk -v k="$1" '$1 == k {print $2; found = 1} END {exit !found}' ||
        echo "$1" >>"$DPE_DIR/missing_counters"
}
dpe_check_counters_read() {
    [[ -s "$DPE_DIR/missing_counters" ]] &&
        dpe_fail "counters read that the maps do not have: $(sort -u "$DPE_DIR/missing_counters" | tr '\n' ' ')"
    return 0
}
# dpe_retry_if COUNTER WHAT HOOK CMD...: runs CMD, its output in $out, at most 3 times. A run that
# fails is tried again (after HOOK; `:` for none) only when COUNTER grew during it: a disturbance
# the test expects and counts. Any other failure, or a third, fails the test naming WHAT.
dpe_retry_if() {
    local counter=$1 what=$2 hook=$3 attempt c0 c1
    shift 3
    for attempt in 1 2 3; do
        c0=$(dpe_counter "$counter")
        out=$("$@") && return 0
        c1=$(dpe_counter "$counter")
        (( ${c1:-0} > ${c0:-0} && attempt < 3 )) || dpe_fail "$what (run $attempt): $out"
        dpe_log "run $attempt of $what met $counter $c0 -> $c1: $out"
        "$hook"
    done
}
# dpe_n NAME: the same, 0 when nothing could be read (recorded as missing, as above).
dpe_n() { local v; v=$(dpe_counter "$1"); echo "${v:-0}"; }

# dpe_restart_if_stalled [dataplane options...]: the receive-path watchdog's contract. Waits up
# to 3 s for the dataplane to exit (the watchdog fires while traffic still arrives); if it did,
# it must have been the watchdog (status 75, its message, dp_rx_stall counted), and the
# dataplane is started again with the options given, as its supervisor (systemd:
# Restart=always) would. Returns 1 when the dataplane kept running.
dpe_restart_if_stalled() {
    local t rc
    for t in $(seq 12); do kill -0 "$DPE_DP_PID" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$DPE_DP_PID" 2>/dev/null && return 1
    wait "$DPE_DP_PID"; rc=$?; DPE_DP_PID=""
    (( rc == 75 )) || dpe_fail "dataplane exited with status $rc (not the watchdog's 75)"
    grep -q "receive path stalled" "$DPE_DIR/dp.log" || dpe_fail "exit 75 without the watchdog's message"
    (( $(dpe_counter dp_rx_stall) >= 1 )) || dpe_fail "watchdog exit without dp_rx_stall counted"
    dpe_log "receive path stalled; the watchdog exited 75: restarting the dataplane as systemd would"
    dpe_start_dataplane "$@"
}
