# Bringing up kvsteer on a topology from topology.sh: emulated GPU servers in the backend
# namespaces, kvsteerd and kvsteer-dataplane (af_xdp + our XDP program) in the appliance
# namespace. Shared by the demo and the benchmarks; source topology.sh first.
#
# The caller sets (plain shell variables):
#   KVS_BIN       directory of the built binaries
#   KVS_BPF_DIR   directory of the built BPF objects (kvsteer.bpf.o)
#   KVS_BPFFS     the bpffs directory the pinned maps live in (mounted by the caller)
#   KVS_API_SOCK  kvsteerd's API socket
#   KVS_APP_BACKENDS  how many of the backend namespaces (1..) run a GPU server behind kvsteer
#                 (default all KVS_N_BACKENDS; the benchmark keeps one for HAProxy)
# Functions return non-zero with a message on stderr when something does not come up; the
# caller decides to die. Every process started is recorded (KVS_EMU_PIDS[i], KVS_KVSTEERD_PID,
# KVS_DP_PID) so the caller's cleanup can stop it.

# kvs_emulators_up ID_PREFIX TIME_SCALE LOG_PREFIX [CPUS]: one kvsteer-gpu-emu per backend
# namespace (server ids ID_PREFIX1..N), logs appended to LOG_PREFIX<i>.log, pinned to CPUS if
# given; waits (bounded) until each answers /health.
kvs_emulators_up() {
    local id=$1 scale=$2 logp=$3 cpus=${4:-} i
    local -a pin=()
    [[ -n "$cpus" ]] && pin=(taskset -c "$cpus")
    KVS_EMU_PIDS=()
    for ((i = 1; i <= ${KVS_APP_BACKENDS:-$KVS_N_BACKENDS}; i++)); do
        ip netns exec "${KVS_BE_NS[$i]}" "${pin[@]}" "$KVS_BIN/kvsteer-gpu-emu" --host 0.0.0.0 --port 8000 \
            --server-id "$id$i" --time-scale "$scale" --log-level warn >>"$logp$i.log" 2>&1 &
        KVS_EMU_PIDS[$i]=$!
    done
    for ((i = 1; i <= ${KVS_APP_BACKENDS:-$KVS_N_BACKENDS}; i++)); do
        local t ok=0
        for t in $(seq 100); do
            ip netns exec "${KVS_BE_NS[$i]}" curl -s -o /dev/null -m 1 http://127.0.0.1:8000/health && { ok=1; break; }
            sleep 0.05
        done
        (( ok )) || { echo "emulator $id$i did not answer /health (log $logp$i.log)" >&2; return 1; }
    done
}

# kvs_emulators_down: stops the emulators kvs_emulators_up started.
kvs_emulators_down() {
    local i
    for ((i = 1; i <= ${KVS_APP_BACKENDS:-$KVS_N_BACKENDS}; i++)); do
        [[ -n "${KVS_EMU_PIDS[$i]:-}" ]] || continue
        kill "${KVS_EMU_PIDS[$i]}" 2>/dev/null
        wait "${KVS_EMU_PIDS[$i]}" 2>/dev/null
        KVS_EMU_PIDS[$i]=""
    done
}

# kvs_kvsteerd_conf STEERING_MODE: prints a kvsteerd configuration with deploy/demo.conf's
# tunables and this topology's VIP, SNAT address, interface and backends. SNAT ports are every
# port below the appliance kernel's own ephemeral range (40000-60999, see topology.sh), so SNAT
# 4-tuples are reused as late as possible.
kvs_kvsteerd_conf() {
    local steer=$1 root i
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    sed -e '/^vip *=/d' -e '/^snat-addr *=/d' -e '/^interface *=/d' -e '/^backend *=/d' -e '/^log-level/d' \
        -e '/^bpffs *=/d' -e '/^api-socket *=/d' -e '/^steering-mode *=/d' -e '/^snat-ports *=/d' \
        "$root/deploy/demo.conf"
    echo "snat-ports = 10000-39999"
    echo "vip = $(kvs_ep "$KVS_VIP" "$KVS_VIP_PORT")"
    echo "snat-addr = $KVS_APP_IP"
    echo "interface = $KVS_APP_IF"
    echo "bpffs = $KVS_BPFFS"
    echo "api-socket = $KVS_API_SOCK"
    echo "steering-mode = $steer"
    echo "log-level = warn"
    for ((i = 1; i <= ${KVS_APP_BACKENDS:-$KVS_N_BACKENDS}; i++)); do
        echo "backend = $(kvs_ep "${KVS_BE_IP[$i]}" 8000),weight=1,mac=${KVS_BE_MAC[$i]}"
    done
}

# kvs_kvsteerd_up CONF LOG [CPU]: starts kvsteerd in the appliance namespace (log appended to
# LOG); waits (bounded) for its API socket.
kvs_kvsteerd_up() {
    local conf=$1 logf=$2 cpu=${3:-}
    local -a pin=()
    [[ -n "$cpu" ]] && pin=(taskset -c "$cpu")
    ip netns exec "$KVS_NS_APP" "${pin[@]}" "$KVS_BIN/kvsteerd" --config "$conf" >>"$logf" 2>&1 &
    KVS_KVSTEERD_PID=$!
    local t
    for t in $(seq 300); do [[ -S "$KVS_API_SOCK" ]] && return 0; sleep 0.1; done  # creating the maps can take seconds
    tail "$logf" >&2
    echo "kvsteerd did not open $KVS_API_SOCK" >&2
    return 1
}

# kvs_dataplane_up LOG CPU [dataplane options...]: starts kvsteer-dataplane (net_af_xdp with our
# XDP program, one lcore on CPU, no hugepages) in the appliance namespace, log written to LOG;
# waits (bounded) until its worker runs.
kvs_dataplane_up() {
    local logf=$1 cpu=$2
    shift 2
    ip netns exec "$KVS_NS_APP" taskset -c "$cpu" "$KVS_BIN/kvsteer-dataplane" --no-pci --no-huge -m 512 \
        --no-shconf -l "$cpu" --log-level=lib.eal:error \
        --vdev "net_af_xdp0,iface=$KVS_APP_IF,xdp_prog=$KVS_BPF_DIR/kvsteer.bpf.o,busy_budget=0" \
        -- --bpffs "$KVS_BPFFS" --mode xdp "$@" >"$logf" 2>&1 &
    KVS_DP_PID=$!
    local t
    for t in $(seq 100); do
        grep -q "worker 0: queue" "$logf" 2>/dev/null && return 0
        kill -0 "$KVS_DP_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail "$logf" >&2
    echo "kvsteer-dataplane did not start (log $logf)" >&2
    return 1
}

# kvs_backends_up_wait N: waits (bounded, 20 s) until kvsteerd's health checks see N backends up.
kvs_backends_up_wait() {
    local want=$1 up=0 t
    for t in $(seq 100); do
        up=$("$KVS_BIN/kvsteerctl" --socket "$KVS_API_SOCK" --json backends 2>/dev/null |
            python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin)["backends"] if b.get("state")=="up"))' \
            2>/dev/null || echo 0)
        [[ "$up" == "$want" ]] && return 0
        [[ -n "${KVS_DP_PID:-}" ]] && ! kill -0 "$KVS_DP_PID" 2>/dev/null && { echo "the dataplane exited" >&2; return 1; }
        sleep 0.2
    done
    echo "only $up/$want backends up" >&2
    return 1
}

# kvs_haproxy_up NS IP HASH_BYTES TIMEOUT_S CPU DIR N: HAProxy (the L7 peer the benchmarks
# compare with) in namespace NS on IP:8000, HTTP mode, body buffered, consistent hashing of the
# body's first HASH_BYTES bytes over the first N backend namespaces' servers (KVS_BE_IP[1..N]),
# client/server timeouts TIMEOUT_S, one thread pinned to CPU; config and log in DIR. Sets
# KVS_HAPROXY_PID; non-zero with a message when it does not come up.
kvs_haproxy_up() {
    local ns=$1 ip=$2 hash_bytes=$3 tmo=$4 cpu=$5 dir=$6 n=$7 i
    {
        cat <<CFG
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client ${tmo}s
    timeout server ${tmo}s
    option http-buffer-request
frontend fe
    bind $ip:8000
    default_backend gpus
backend gpus
    balance hash req.body,bytes(0,$hash_bytes)
    hash-type consistent
CFG
        for ((i = 1; i <= n; i++)); do echo "    server be$i ${KVS_BE_IP[$i]}:8000"; done
    } >"$dir/haproxy.cfg"
    haproxy -c -f "$dir/haproxy.cfg" >"$dir/haproxy-check.log" 2>&1 ||
        { cat "$dir/haproxy-check.log" >&2; echo "haproxy rejects its config" >&2; return 1; }
    ip netns exec "$ns" taskset -c "$cpu" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    KVS_HAPROXY_PID=$!
    sleep 0.5
    kill -0 "$KVS_HAPROXY_PID" 2>/dev/null || { cat "$dir/haproxy.log" >&2; echo "haproxy exited" >&2; return 1; }
}

# kvs_appliance_up STEERING_MODE CONF LOGDIR CPU N: a fresh appliance for one benchmark arm:
# the bpffs (KVS_BPFFS) mounted, kvsteerd with kvs_kvsteerd_conf STEERING_MODE written to CONF,
# the dataplane (--idle adaptive) on CPU, logs in LOGDIR; waits until N backends are up.
# Non-zero with a message when something does not come up. kvs_appliance_down stops it.
kvs_appliance_up() {
    local steer=$1 conf=$2 dir=$3 cpu=$4 n=$5
    mountpoint -q "$KVS_BPFFS" || mount -t bpf bpf "$KVS_BPFFS" || { echo "cannot mount bpffs at $KVS_BPFFS" >&2; return 1; }
    kvs_kvsteerd_conf "$steer" >"$conf"
    kvs_kvsteerd_up "$conf" "$dir/kvsteerd.log" || { echo "kvsteerd did not start" >&2; return 1; }
    kvs_dataplane_up "$dir/dataplane.$steer.log" "$cpu" --idle adaptive || { echo "dataplane did not start" >&2; return 1; }
    kvs_backends_up_wait "$n" || { echo "backends not up (see $dir/kvsteerd.log)" >&2; return 1; }
    sleep 1
}

# kvs_appliance_down: stops what kvs_appliance_up started; the next one gets fresh maps (flows,
# affinity) and attaches its own XDP program.
kvs_appliance_down() {
    [[ -n "${KVS_DP_PID:-}" ]] && { kill -TERM "$KVS_DP_PID" 2>/dev/null; wait "$KVS_DP_PID" 2>/dev/null; KVS_DP_PID=""; }
    [[ -n "${KVS_KVSTEERD_PID:-}" ]] && { kill "$KVS_KVSTEERD_PID" 2>/dev/null; wait "$KVS_KVSTEERD_PID" 2>/dev/null; KVS_KVSTEERD_PID=""; }
    [[ -n "${KVS_NS_APP:-}" ]] && ip -n "$KVS_NS_APP" link set dev "$KVS_APP_IF" xdp off 2>/dev/null
    mountpoint -q "$KVS_BPFFS" 2>/dev/null && umount "$KVS_BPFFS"
    rm -f "$KVS_API_SOCK"
    return 0
}
