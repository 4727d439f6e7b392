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
    local n=$1 extra=${2:-} j
    for ((j = 1; j <= n; j++)); do app__kvsteerd "$j" "$extra"; done
    for ((j = 1; j <= n; j++)); do app__dataplane "$j"; done
    for ((j = 1; j <= n; j++)); do app__wait "$j"; done
}

# app_up J EXTRA_FN: the same for appliance J alone (one joining a running fleet).
app_up() { app__kvsteerd "$1" "${2:-}" && app__dataplane "$1" && app__wait "$1"; }

app__kvsteerd() {
    local j=$1 extra=${2:-} i
    mkdir -p "$DIR/bpf$j" && { mountpoint -q "$DIR/bpf$j" || mount -t bpf bpf "$DIR/bpf$j"; } || fail "bpffs"
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
    ip netns exec "${KVS_APP_NS[$j]}" "$BIN/kvsteerd" --config "$DIR/kvsteerd$j.conf" >>"$DIR/kvsteerd$j.log" 2>&1 &
    KD_PID[$j]=$!
}

app__dataplane() {
    local j=$1
    # Up to 30 s: creating the pinned maps (the flow map preallocates its million entries) took
    # over 10 s once on a loaded CI machine.
    for _ in $(seq 300); do [[ -S "$DIR/kvsteerd$j.sock" ]] && break; sleep 0.1; done
    [[ -S "$DIR/kvsteerd$j.sock" ]] || fail "kvsteerd $j did not start within 30 s"
    : >"$DIR/dp$j.log"
    ip netns exec "${KVS_APP_NS[$j]}" "$BIN/kvsteer-dataplane" --no-pci --no-huge -m 512 --no-shconf -l 0 \
        --file-prefix "kvap$j" --log-level=lib.eal:error \
        --vdev "net_af_xdp$j,iface=app0,xdp_prog=$BUILD/bpf/kvsteer.bpf.o,busy_budget=0" \
        -- --bpffs "$DIR/bpf$j" --mode xdp --idle adaptive >"$DIR/dp$j.log" 2>&1 &
    DP_PID[$j]=$!
}

app__wait() {
    local j=$1 up
    for _ in $(seq 300); do grep -q "worker 0: queue" "$DIR/dp$j.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "worker 0: queue" "$DIR/dp$j.log" || fail "dataplane $j did not start"
    for _ in $(seq 100); do
        up=$("$BIN/kvsteerctl" --socket "$DIR/kvsteerd$j.sock" --json backends 2>/dev/null |
            /usr/bin/python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin)["backends"] if b.get("state")=="up"))' 2>/dev/null)
        [[ "$up" == "$NBE" ]] && break
        sleep 0.1
    done
    [[ "$up" == "$NBE" ]] || fail "appliance $j sees ${up:-0}/$NBE backends up"
}

# apps_down N: stops what apps_up started (dataplanes first: SIGTERM detaches XDP) and unmounts.
apps_down() {
    local j p
    for p in "${DP_PID[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for p in "${KD_PID[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for ((j = 1; j <= $1; j++)); do mountpoint -q "$DIR/bpf$j" && umount "$DIR/bpf$j"; done
    return 0
}

# Helpers of the fleet tests (tests/deploy/fleet*_test.sh); they also need ROOT.
ctl() { local j=$1; shift; "$BIN/kvsteerctl" --socket "$DIR/kvsteerd$j.sock" "$@"; }
counters() { "$BIN/kvsteerctl" --bpffs "$DIR/bpf$1" --json counters 2>/dev/null; }
# count VAR SECTION NAME J...: VAR = counter NAME of SECTION summed over appliances J..., read in
# the caller's shell (never inside $(...)). Counters that cannot be read, or a name not among them
# (every counter is listed, zero or not), fail the test: before, both read as 0, and a check that
# a counter did not move could not fail.
count() {
    local -n __count_var=$1
    local __count_section=$2 __count_name=$3 __count_j __count_out __count_sum=0
    shift 3
    for __count_j in "$@"; do
        __count_out=$(counters "$__count_j" | /usr/bin/python3 -c 'import json,sys
d = json.load(sys.stdin)[sys.argv[1]]
if sys.argv[2] not in d: sys.exit("no counter named " + sys.argv[2])
print(int(d[sys.argv[2]]))' "$__count_section" "$__count_name" 2>&1)
        [[ $? == 0 && "$__count_out" =~ ^[0-9]+$ ]] ||
            fail "appliance $__count_j, $__count_section counter $__count_name: $(tail -3 <<<"${__count_out:-kvsteerctl counters printed nothing}")"
        __count_sum=$((__count_sum + __count_out))
    done
    __count_var=$__count_sum
}
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# backends_up: an emulated GPU server on every backend (pids in PIDS).
backends_up() {
    local i
    for ((i = 1; i <= NBE; i++)); do
        ip netns exec "${KVS_BE_NS[$i]}" "$BIN/kvsteer-gpu-emu" --host 0.0.0.0 --port 8000 --server-id "be$i" \
            --time-scale 1 --max-batch 256 --log-level warn >"$DIR/be$i.log" 2>&1 &
        PIDS+=("$!")
    done
}

# fleet_members J: the fleet's config lines for appliance J (ids 0..NAPP-1 = appliances 1..NAPP),
# the first epoch appliance 1 alone.
fleet_members() {
    local k
    echo "fleet-self = $(($1 - 1))"
    for ((k = 1; k <= NAPP; k++)); do echo "fleet-member = $((k - 1)),${KVS_APP_MACS[$k]}"; done
    echo "fleet-epoch = 0"
}

# streams N OUT [client options]: N long SSE streams at once, in the background (pid: STREAMS).
streams() {
    local n=$1 out=$2; shift 2
    ip netns exec "$KVS_NS_CLIENT" /usr/bin/python3 "$ROOT/tests/chaos/chaos_client.py" --host "$KVS_VIP" \
        --port "$KVS_VIP_PORT" --n "$n" --concurrency "$n" --prefixes "$n" --stream --max-tokens "${STREAM_TOKENS:-2500}" \
        --timeout "${STREAM_TIMEOUT:-60}" --seconds "${STREAM_TIMEOUT:-60}" "$@" >"$out" 2>&1 &
    STREAMS=$! STREAMS_AT=$SECONDS
}

# binds_mark J...: appliances J's dp_bind_ok noted before streams start. binds_await N: until
# they bound N flows in all since (10 s at most: a slower machine binds the last streams seconds
# after they start, and a count taken after a fixed sleep missed them), then BOUND[J] = what each
# one bound.
declare -gA BIND_BASE=() BOUND=()
binds_mark() {
    local j n
    BIND_BASE=() BOUND=()
    for j in "$@"; do count n dataplane dp_bind_ok "$j"; BIND_BASE[$j]=$n; done
}
binds_await() {
    local n=$1 deadline=$((SECONDS + 10)) j sum now
    while :; do
        sum=0
        for j in "${!BIND_BASE[@]}"; do
            count now dataplane dp_bind_ok "$j"
            BOUND[$j]=$((now - BIND_BASE[$j]))
            sum=$((sum + BOUND[$j]))
        done
        ((sum >= n)) && return 0
        ((SECONDS > deadline)) && fail "$sum of $n streams bound 10 s after they started"
        sleep 0.2
    done
}

# short_requests N [CONCURRENCY]: N one-request connections; all must succeed.
short_requests() {
    local out
    out=$(ip netns exec "$KVS_NS_CLIENT" /usr/bin/python3 "$ROOT/tests/chaos/chaos_client.py" --host "$KVS_VIP" \
        --port "$KVS_VIP_PORT" --n "$1" --concurrency "${2:-4}" --prefixes 16 --max-tokens 2 --timeout 10) || fail "short requests: $out"
    [[ $(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["ok"] == d["sent"])' "$out") == True ]] \
        || fail "short requests failed: $out"
}

# crash_streams_check OUT T_CRASH MINE N: after a crash at T_CRASH (date +%s.%N) under the N
# streams of OUT (started with --keepalive-s 1), of which the crashed appliance had bound MINE:
# exactly its MINE broke, none corrupted, and each of its clients learned at its first packet
# after the crash (the keepalive probe after 1 s of silence), answered with a RST. A probe
# answered later (the next one is 1 s after) or not at all (a hang until the 60 s timeout) fails.
# Sets CRASH_LATEST (s after the crash, the latest reset) and CRASH_OK.
crash_streams_check() {  # OUT T_CRASH MINE N [KEEPALIVE_S]: the streams' first probe is KEEPALIVE_S (1) after
    local out=$1 t_crash=$2 mine=$3 n=$4 ka=${5:-1} ok err bad late
    ok=$(field "$out" ok) err=$(field "$out" errors) bad=$(field "$out" corrupted)
    (( bad == 0 )) || fail "corrupted streams after the crash: $(cat "$out")"
    (( err == mine && ok == n - mine )) || fail "the crashed appliance had $mine streams; $err broke, $ok completed"
    late=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); at=float(sys.argv[2])-d["started_at"]
t=[x - at for x in d["error_times"]]; print(sum(1 for x in t if x > float(sys.argv[3]) + 0.6), f"{max(t, default=0):.2f}")' "$out" "$t_crash" "$ka")
    CRASH_LATEST=${late#* } CRASH_OK=$ok
    (( ${late% *} == 0 )) || fail "${late% *} broken clients learned later than their first probe after the crash (latest $CRASH_LATEST s): $(cat "$out")"
}
