#!/usr/bin/env bash
# End-to-end requests through the appliance, side by side with HAProxy 2.6 as the L7 peer a user
# would pick today (HTTP mode, option http-buffer-request, balance hash req.body,bytes(0,N),
# hash-type consistent), against the same emulated backends, from the same client, with the
# balancer pinned to the same CPU (KVB_LB_CPU) and the client + backends on the others.
#
# Arms, alternated in blocks inside each repetition (the starting arm rotates): direct (client ->
# the backends themselves, one wrk thread per backend: the baseline for added latency and CPU), kvsteer (client -> VIP: XDP + DPDK dataplane
# with --idle adaptive + kvsteerd), kvsteer_busy (the same, dataplane --idle busy: a dedicated
# polling core), kvsteer_sleep (full mode: --idle adaptive with --idle-wake false, the plain
# sleeps the adaptive mode had before it slept on the AF_XDP socket), kvsteer_pool (kvsteer with
# --backend-pool 4: new flows take a backend connection opened ahead, as many per backend as
# recent flows asked for), haproxy (client -> HAProxy,
# nbthread 1), kvsteer_spin (kvsteer with --idle-spin-us KVB_SPIN_US, 100: the dataplane keeps
# polling that long after its last packet before it sleeps). Workloads (wrk + tools/bench/wrk_post.lua):
#   close      small chat bodies (512 B), one request per connection: new connections/s
#   keepalive  the same bodies on kept-alive connections: requests/s
#   latency    one connection at a time, one request per connection: added latency
#   large      16 KB bodies, streamed 2 MB responses (x-kvsteer-echo-bytes), one per connection
# CPU, per run: utime+stime of the balancer's processes from /proc/PID/stat (kvsteer:
# kvsteer-dataplane + kvsteerd; haproxy: haproxy); everything that ran on the balancer's CPU
# (elapsed minus its /proc/stat idle time: the like-for-like figure, tools/bench/README.md "CPU
# accounting"); and machine-wide busy time (elapsed x CPUs minus idle), from which the direct
# arm's is subtracted per request: the "marginal" CPU that catches XDP and kernel TCP work
# wherever it runs.
#
# kvsteerd runs with syn-rate-per-prefix = 0 (the one client address would hit the per-/24
# SYN-flood limit); drop_syn_rate_per_prefix is in the raw counters.
# Usage: tools/bench/e2e_bench.sh full|smoke   (root; BUILD, KVS_BENCH_OUT from run.sh)
# Env: KVB_E2E_BACKENDS (4), KVB_LB_CPU (last CPU), KVB_LOAD_CPUS (the other CPUs), KVB_E2E_REPS,
#      KVB_NAPI_CPU (the appliance veth peer's NAPI thread: KVB_LB_CPU; any), KVB_RPS, KVB_E2E_DIAG, KVB_E2E_PERF,
#      KVB_E2E_SECONDS, KVB_HASH_BYTES (HAProxy's hashed body bytes, 256), KVB_E2E_ARMS (subset/order),
#      KVB_E2E_WORKLOADS (subset/order of close keepalive latency large)
set -uo pipefail
mode=${1:-full}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
BIN="$BUILD/bin"
FRAG=${KVS_BENCH_OUT:-$BUILD/bench/fragments/e2e_bench.json}
RAW="$BUILD/bench/e2e"
P=kvbe
RUN=/run/kvsteer-bench-e2e
BPFFS=$RUN/bpf
SOCK=$RUN/kvsteerd.sock
NBE=${KVB_E2E_BACKENDS:-4}
NCPU=$(nproc)
LB_CPU=${KVB_LB_CPU:-$((NCPU - 1))}
LOAD_CPUS=${KVB_LOAD_CPUS:-$( ((NCPU > 1)) && seq -s, 0 $((NCPU - 2)) || echo 0)}
HASH_BYTES=${KVB_HASH_BYTES:-256}
if [[ "$mode" == smoke ]]; then REPS=${KVB_E2E_REPS:-1}; SECS=${KVB_E2E_SECONDS:-2}
else REPS=${KVB_E2E_REPS:-3}; SECS=${KVB_E2E_SECONDS:-5}; fi

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces, XDP)"
for b in kvsteerd kvsteer-dataplane kvsteer-gpu-emu; do [[ -x "$BIN/$b" ]] || die "$BIN/$b missing"; done
[[ -f "$BUILD/bpf/kvsteer.bpf.o" ]] || die "$BUILD/bpf/kvsteer.bpf.o missing"
command -v haproxy >/dev/null || die "haproxy not installed (Debian package haproxy)"
command -v wrk >/dev/null || die "wrk not installed (Debian package wrk)"

source "$ROOT/tests/lib/topology.sh"
source "$ROOT/tests/lib/appliance.sh"
KVS_BIN=$BIN KVS_BPF_DIR=$BUILD/bpf KVS_BPFFS=$BPFFS KVS_API_SOCK=$SOCK KVS_APP_BACKENDS=$NBE
PIDS=()
cleanup() {
    set +e
    trap - EXIT INT TERM
    [[ -n "${DP_PID:-}" ]] && kill -TERM "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    kvs_topo_down "$P"
    mountpoint -q "$BPFFS" 2>/dev/null && umount "$BPFFS"
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

mkdir -p "$RAW" "$RUN" "$(dirname "$FRAG")"
rm -f "$RAW"/*
log "mode $mode: $REPS repetition(s) x ${SECS}s per arm and workload; balancer on CPU $LB_CPU, client + backends on CPU(s) $LOAD_CPUS"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- topology: client, appliance, NBE backends, and one more namespace for HAProxy ------------
export KVS_XDP_PASS_OBJ="$BUILD/bpf/xdp_pass.bpf.o"
kvs_topo_up "$P" $((NBE + 1)) || die "topology"
# The appliance veth's peer has an XDP program (XDP_TX into a veth needs one), so every frame the
# appliance sends (XDP_TX and its AF_XDP socket's) is passed on by that peer's NAPI, in a thread
# (tests/lib/topology.sh): the bridge, and the receiving namespace's TCP stack, run there. Left to
# the scheduler, that thread settled on one CPU or the other for a whole run: on the balancer's
# CPU, kvsteer served ~6,500-7,100 req/s with ~0.5 s of its own CPU per 3 s; on the load CPU, which
# the client and backends already fill, ~3,600-4,100 req/s with ~1.0 s (tools/bench/README.md).
# It is pinned to the balancer's CPU (KVB_NAPI_CPU; "any" leaves it free): what HAProxy sends is
# passed on in its own system calls, on that CPU too, so both balancers' CPUs carry the transmit
# half of what they send, and the balancer-CPU figures count it (lb_cpu_busy_s).
# KVB_RPS=1: the client's and backends' receive (their TCP stacks) steered to the load CPUs
# (RPS on their eth0), wherever the frame was sent from: off the balancer's CPU for both
# balancers, so its CPU carries the balancer's own work and the bridge, not the receivers'.
if [[ "${KVB_RPS:-0}" == 1 ]]; then
    mask=0
    for c in ${LOAD_CPUS//,/ }; do mask=$((mask | (1 << c))); done
    for ns in "$KVS_NS_CLIENT" "${KVS_BE_NS[@]:0:NBE}"; do
        ip netns exec "$ns" sh -c "printf '%x' $mask > /sys/class/net/eth0/queues/rx-0/rps_cpus" \
            || die "cannot set RPS in $ns"
    done
    log "RPS: the client's and backends' receive on CPU(s) $LOAD_CPUS (mask $(printf '%x' $mask))"
fi
NAPI_CPU=${KVB_NAPI_CPU:-$LB_CPU}
if [[ "$NAPI_CPU" != any ]]; then
    napi=$(pgrep '^napi/p-app-' || true)
    [[ -n "$napi" ]] || log "WARNING: no NAPI thread for the appliance veth's peer (threaded NAPI: Linux 5.12+); not pinned"
    for t in $napi; do taskset -p -c "$NAPI_CPU" "$t" >/dev/null || die "cannot pin NAPI thread $t to CPU $NAPI_CPU"; done
    [[ -n "$napi" ]] && log "NAPI thread(s) of the appliance veth's peer ($(tr '\n' ' ' <<<"$napi")) pinned to CPU $NAPI_CPU"
fi
HAP_NS=${KVS_BE_NS[$((NBE + 1))]}
HAP_IP=${KVS_BE_IP[$((NBE + 1))]}
mkdir -p "$BPFFS"
mountpoint -q "$BPFFS" || mount -t bpf bpf "$BPFFS" || die "cannot mount bpffs at $BPFFS"

kvs_emulators_up be 1000 "$RAW/be" "$LOAD_CPUS" || die "emulated backends did not start"
PIDS+=("${KVS_EMU_PIDS[@]}")

# ---- kvsteer: kvsteerd + kvsteer-dataplane (af_xdp, our XDP program), pinned to LB_CPU --------
CONF="$RUN/kvsteerd.conf"
kvs_kvsteerd_conf prefix >"$CONF"
# The SYN-flood limit is per client /24 (2,000 SYN-ACKs a second by default): this bench's one
# client address would be held to it (dropped SYNs, retransmitted a second later) and measure
# the limiter, not the data path. HAProxy has no such limit here either.
echo "syn-rate-per-prefix = 0" >>"$CONF"
kvs_kvsteerd_up "$CONF" "$RAW/kvsteerd.log" "$LB_CPU" || die "kvsteerd did not start"
KVSTEERD_PID=$KVS_KVSTEERD_PID
PIDS+=("$KVSTEERD_PID")
# The dataplane runs with --idle adaptive (backs off to sleeps of up to 200 us when idle, so it
# leaves the CPU to others) except during the kvsteer_busy arm (--idle busy: polls all the time,
# a dedicated core as DPDK is usually run). It is restarted only when the idle mode changes, so
# a busy poller never shares the balancer CPU with HAProxy's runs.
DP_IDLE=""
start_dataplane() {  # start_dataplane adaptive|busy|sleep|pool (sleep: adaptive, plain sleeps)
    local idle=$1 t
    local -a args=(--idle "$idle")
    [[ "$idle" == sleep ]] && args=(--idle adaptive --idle-wake false)
    [[ "$idle" == pool ]] && args=(--idle adaptive --backend-pool 4)
    [[ "$idle" == spin ]] && args=(--idle adaptive --idle-spin-us "${KVB_SPIN_US:-100}")
    kvs_dataplane_up "$RAW/dataplane.$idle.log" "$LB_CPU" "${args[@]}" || die "dataplane (${args[*]}) did not start"
    DP_PID=$KVS_DP_PID
    DP_IDLE=$idle
    # Ready when a request goes through the VIP.
    for t in $(seq 50); do
        [[ "$(ip netns exec "$KVS_NS_CLIENT" curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            --data '{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":1,"messages":[{"role":"user","content":"warm"}]}' \
            "http://$KVS_VIP:$KVS_VIP_PORT/v1/chat/completions" || true)" == 200 ]] && return 0
        sleep 0.2
    done
    tail "$RAW/dataplane.$idle.log" "$RAW/kvsteerd.log" >&2
    die "no answer through kvsteer (dataplane --idle $idle)"
}
stop_dataplane() {
    [[ -n "${DP_PID:-}" ]] || return 0
    kvsteer_counters "$DP_IDLE"
    kill -TERM "$DP_PID" 2>/dev/null; wait "$DP_PID" 2>/dev/null
    # What the port received (the AF_XDP socket's count), logged by the dataplane as it stopped.
    grep -h "port [0-9]*: rx" "$RAW/dataplane.$DP_IDLE.log" | tail -1 | sed 's/^.*\] port/== dataplane port/' >>"$RAW/counters.txt"
    DP_PID=""; DP_IDLE=""
    ip -n "$KVS_NS_APP" link set dev "$KVS_APP_IF" xdp off 2>/dev/null || true
    # A new dataplane may reuse SNAT 4-tuples the backends still hold in TIME_WAIT from the
    # previous instance (their challenge ACKs used to cost a 300 ms SYN timeout each). Clear
    # them, so every arm starts from the same state.
    local i n=0
    for ((i = 1; i <= NBE; i++)); do
        n=$((n + $(ip netns exec "${KVS_BE_NS[$i]}" ss -tanH state time-wait dst "$KVS_APP_IP" | wc -l)))
        ip netns exec "${KVS_BE_NS[$i]}" ss -K state time-wait dst "$KVS_APP_IP" >/dev/null 2>&1 || true
    done
    log "dataplane restart: cleared $n backend TIME_WAIT entries towards $KVS_APP_IP"
}
# "boundaries moved same-backend timed hold handshake install": per-request steering and where
# the bindings' time went (the dataplane's sums, ns), so far (cumulative)
request_counters() {
    "$BIN/kvsteerctl" --socket "$SOCK" --bpffs "$BPFFS" counters all --all-reasons 2>/dev/null | awk '
        $1 == "punt_request_boundary" {b += $2} $1 == "dp_request_moved" {m += $2}
        $1 == "dp_request_same_backend" {s += $2} $1 == "dp_bind_timed" {t += $2}
        $1 == "dp_bind_hold_ns" {h += $2} $1 == "dp_bind_handshake_ns" {k += $2}
        $1 == "dp_bind_install_ns" {i += $2}
        END {printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", b, m, s, t, h, k, i}'
}
kvsteer_counters() {  # appends the appliance's counters (XDP, dataplane, backends) to the raw folder
    { echo "== after dataplane --idle $1 ($(date +%T))"
      "$BIN/kvsteerctl" --socket "$SOCK" --bpffs "$BPFFS" counters all 2>&1
      echo "== AF_XDP sockets in the appliance namespace (ss --xdp -e)"
      ip netns exec "$KVS_NS_APP" ss --xdp -e 2>&1; } >>"$RAW/counters.txt" || true
}
ensure_dataplane() {  # ensure_dataplane ARM
    local want=adaptive
    [[ "$1" == kvsteer_busy ]] && want=busy
    [[ "$1" == kvsteer_sleep ]] && want=sleep
    [[ "$1" == kvsteer_pool ]] && want=pool
    [[ "$1" == kvsteer_spin ]] && want=spin
    [[ "$DP_IDLE" == "$want" ]] && return 0
    stop_dataplane
    start_dataplane "$want"
}
start_dataplane adaptive

# ---- HAProxy 2.6: the L7 peer ---------------------------------------------------------------
kvs_haproxy_up "$HAP_NS" "$HAP_IP" "$HASH_BYTES" 30 "$LB_CPU" "$RAW" "$NBE" || die "haproxy did not start"
HAP_PID=$KVS_HAPROXY_PID
PIDS+=("$HAP_PID")
HAP_VER=$(haproxy -v | head -1 | awk '{print $3}')
log "HAProxy $HAP_VER on $HAP_IP:8000 (pid $HAP_PID); kvsteer on $KVS_VIP:$KVS_VIP_PORT (dataplane $DP_PID, kvsteerd $KVSTEERD_PID)"

# kvsteerd's health checks see every backend after a round or two (complete Maglev table).
sleep 1

# ---- affinity check: same body prefix -> same server, for both balancers ----------------------
# body PREFIX_ID TAIL: a chat body whose first HASH_BYTES+ bytes depend only on PREFIX_ID.
body() {
    printf '{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":1,"messages":[{"role":"user","content":"System prompt %04d. %s %s"}]}' \
        "$1" "$(printf 'p%.0s' $(seq 400))" "$2"
}
backend_of() {  # backend_of URL PREFIX_ID TAIL -> x-kvsteer-backend
    ip netns exec "$KVS_NS_CLIENT" curl -s -m 5 -o /dev/null -D - -H 'content-type: application/json' -H 'Expect:' \
        --data "$(body "$2" "$3")" "$1/v1/chat/completions" | awk -F': ' 'tolower($1)=="x-kvsteer-backend" {print $2}' | tr -d '\r'
}
affinity_check() {  # affinity_check URL -> "consistent distinct" over 8 prefixes x 3 tails
    local url=$1 p t first b consistent=1 seen=""
    for p in $(seq 1 8); do
        first=""
        for t in tailA tailB tailC; do
            b=$(backend_of "$url" "$p" "$t-$RANDOM")
            [[ -z "$b" ]] && { consistent=0; continue; }
            [[ -z "$first" ]] && first=$b
            [[ "$b" == "$first" ]] || consistent=0
        done
        seen+="$first "
    done
    echo "$consistent $(tr ' ' '\n' <<<"$seen" | sort -u | grep -c .)"
}
read -r HAP_CONSISTENT HAP_DISTINCT <<<"$(affinity_check "http://$HAP_IP:8000")"
read -r KVS_CONSISTENT KVS_DISTINCT <<<"$(affinity_check "http://$KVS_VIP:$KVS_VIP_PORT")"
log "affinity: haproxy same-prefix->same-server=$HAP_CONSISTENT ($HAP_DISTINCT of $NBE servers used by 8 prefixes); kvsteer=$KVS_CONSISTENT ($KVS_DISTINCT)"

# ---- measurement -----------------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
proc_ticks() {  # user and system ticks of the given processes
    local u=0 s=0 p f
    for p in "$@"; do read -r -a f <"/proc/$p/stat" || return 1; u=$((u + f[13])); s=$((s + f[14])); done
    echo "$u $s"
}
# CPU time from /proc/stat's idle counters, which the kernel keeps exactly (its busy counters are
# sampled at the scheduler tick, and a task that sleeps and wakes thousands of times a second is
# often asleep when the tick comes): busy = elapsed - idle - iowait.
# sys_ticks -> "NOW_NS IDLE_ALL SOFTIRQ_ALL IDLE_LB" (idle: idle + iowait ticks; LB: the balancer's CPU)
sys_ticks() {
    local now cpu u n s idle io irq sirq rest all sirq_all lb=0
    now=$(date +%s%N)
    while read -r cpu u n s idle io irq sirq rest; do
        case $cpu in
            cpu) all=$((idle + io)); sirq_all=$sirq ;;
            "cpu$LB_CPU") lb=$((idle + io)) ;;
        esac
    done < <(grep '^cpu' /proc/stat)
    echo "$now $all $sirq_all $lb"
}
url_of() {
    case $1 in
        direct) echo "http://${KVS_BE_IP[1]}:8000/" ;;
        kvsteer|kvsteer_busy|kvsteer_sleep|kvsteer_pool|kvsteer_spin) echo "http://$KVS_VIP:$KVS_VIP_PORT/" ;;
        haproxy) echo "http://$HAP_IP:8000/" ;;
    esac
}
pids_of() {
    case $1 in
        direct) echo "" ;;
        kvsteer|kvsteer_busy|kvsteer_sleep|kvsteer_pool|kvsteer_spin) echo "$DP_PID $KVSTEERD_PID" ;;
        haproxy) echo "$HAP_PID" ;;
    esac
}
# Workload table: name connections env...
# (ka1, one kept-alive connection whose requests take turns, runs only in the on-the-wire pass)
declare -A WL_CONN=([close]=16 [keepalive]=16 [latency]=1 [large]=4 [ka1]=1)
declare -A WL_ENV=(
    [close]="KVB_BODY_BYTES=512 KVB_CLOSE=1"
    [keepalive]="KVB_BODY_BYTES=512 KVB_CLOSE=0"
    [ka1]="KVB_BODY_BYTES=512 KVB_CLOSE=0"
    [latency]="KVB_BODY_BYTES=512 KVB_CLOSE=1"
    [large]="KVB_BODY_BYTES=16384 KVB_CLOSE=1 KVB_STREAM=1 KVB_MAX_TOKENS=8 KVB_ECHO_BYTES=2097152")
read -r -a WORKLOADS <<<"${KVB_E2E_WORKLOADS:-close keepalive latency large}"
# Smoke (CI) leaves the busy-poll arm out: it needs two dataplane restarts.
if [[ "$mode" == smoke ]]; then default_arms="direct kvsteer haproxy"; else default_arms="direct kvsteer kvsteer_pool kvsteer_spin kvsteer_sleep kvsteer_busy haproxy"; fi
read -r -a ARMS <<<"${KVB_E2E_ARMS:-$default_arms}"

# XDP_TX frames the appliance veth's peer had no room for (its ring holds 256): dropped by the
# veth, after our program counted them forwarded. The rig's, not a NIC's (tools/bench/README.md).
veth_tx_errors() {
    ip netns exec "$KVS_NS_APP" ethtool -S app0 2>/dev/null | awk '$1 ~ /xdp_tx_errors:$/ {n += $2} END {print n + 0}'
}

# KVB_E2E_DIAG=1: per-CPU time, softirqs, IPIs and the balancer threads' context switches and
# CPUs, before and after each recorded run, into $RAW/diag.WORKLOAD.ARM.REP.{0,1}
diag_snapshot() {  # diag_snapshot FILE PIDS...
    local f=$1 p t; shift
    { grep '^cpu[0-9]' /proc/stat
      grep -E 'NET_RX|NET_TX|TIMER|SCHED' /proc/softirqs
      grep -E '^ *(RES|CAL|LOC|TLB|IWI):' /proc/interrupts
      # veth drops (an XDP_TX or AF_XDP frame the peer's ring had no room for) and retransmissions
      ip netns exec "$KVS_NS_BRIDGE" ethtool -S p-app | sed 's/^/p-app /'
      ip netns exec "$KVS_NS_APP" ethtool -S app0 | sed 's/^/app0 /'
      ip netns exec "$KVS_NS_CLIENT" nstat -az TcpRetransSegs TcpExtTCPTimeouts | sed 's/^/client /'
      ip netns exec "${KVS_BE_NS[1]}" nstat -az TcpRetransSegs TcpExtTCPTimeouts | sed 's/^/backend1 /'
      for p in "$@"; do
          for t in /proc/$p/task/*; do
              printf 'task %s %s cpu %s ticks %s vol %s invol %s\n' "${t##*/}" "$(cat "$t/comm")" \
                  "$(awk '{print $39}' "$t/stat")" "$(awk '{print $14 + $15}' "$t/stat")" \
                  "$(awk '/^voluntary_ctxt/ {print $2}' "$t/status")" "$(awk '/^nonvoluntary_ctxt/ {print $2}' "$t/status")"
          done
      done
      for p in $(pgrep -x 'ksoftirqd/[0-9]+') $(pgrep -f kvsteer-gpu-emu); do
          printf 'task %s %s cpu %s ticks %s\n' "$p" "$(cat /proc/$p/comm)" "$(awk '{print $39}' /proc/$p/stat)" "$(awk '{print $14 + $15}' /proc/$p/stat)"
      done; } >"$f" 2>/dev/null
}

# Every recorded run starts with no TIME_WAIT entries in the backends, HAProxy and the client:
# a close run leaves ~25,000 on the backend (it closes first), and a later run whose client port
# meets one of them waits for a SYN retransmission (a direct run once fell from ~6,000 to 249
# req/s that way). ss -K needs CONFIG_INET_DIAG_DESTROY; what it could not clear is logged.
clear_time_wait() {
    local ns left=0
    for ns in "${KVS_BE_NS[@]}" "$KVS_NS_CLIENT"; do
        ip netns exec "$ns" ss -K -t state time-wait >/dev/null 2>&1 || true
        left=$((left + $(ip netns exec "$ns" ss -tanH state time-wait | wc -l)))
    done
    # A few closing in the meantime are normal; thousands mean ss -K cannot clear them here.
    (( left < 100 )) || log "  $left TIME_WAIT entries could not be cleared (ss -K)"
}

# run_one WORKLOAD ARM REP SECONDS [record]
run_one() {
    local wl=$1 arm=$2 rep=$3 secs=$4 record=${5:-1}
    local pids url au0 as0 au1 as1 t0 t1 i0 i1 q0 q1 l0 l1 v0 v1 out json
    pids=$(pids_of "$arm")
    url=$(url_of "$arm")
    local r0="0 0 0 0 0 0 0" r1="0 0 0 0 0 0 0"
    [[ "$record" == 1 ]] && clear_time_wait
    [[ "$arm" == kvsteer* ]] && r0=$(request_counters)
    v0=$(veth_tx_errors)
    [[ "${KVB_E2E_DIAG:-0}" == 1 && "$record" == 1 ]] && diag_snapshot "$RAW/diag.$wl.$arm.$rep.0" $pids
    read -r au0 as0 <<<"$(proc_ticks $pids)"; read -r t0 i0 q0 l0 <<<"$(sys_ticks)"
    local perf_pid=""
    if [[ -n "${KVB_E2E_PERF:-}" && "$record" == 1 && -n "$pids" ]] && command -v perf >/dev/null; then
        # KVB_E2E_PERF=1: a profile of the balancer's processes (their CPU: -p) through the run;
        # KVB_E2E_PERF=cpu: of everything on the balancer's CPU (softirqs, NAPI thread included)
        local -a target=(-p "$(tr ' ' ',' <<<"$pids")")
        [[ "$KVB_E2E_PERF" == cpu ]] && target=(-a -C "$LB_CPU")
        perf record -q -g "${target[@]}" -o "$RAW/perf.$wl.$arm.$rep.data" -- sleep "$secs" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    # One wrk thread per backend (at most one per connection), in every arm: the direct arm's
    # threads each go to their own backend (KVB_THREAD_ADDRS), so it spreads over the same
    # backends as the balancers do (before, all of it went to backend 1, which then queued: the
    # balancers' "added latency" came out negative where connections > 1).
    local conns=${WL_CONN[$wl]} threads addrs="" k
    # wrk gives each thread conns / threads connections (rounded down): a divisor of conns.
    threads=$(( conns < NBE ? conns : NBE ))
    while (( conns % threads )); do threads=$((threads - 1)); done
    if [[ "$arm" == direct ]]; then
        for ((k = 1; k <= threads; k++)); do addrs+="${KVS_BE_IP[$k]}:8000 "; done
    fi
    out=$(ip netns exec "$KVS_NS_CLIENT" env ${WL_ENV[$wl]} KVB_THREAD_ADDRS="$addrs" KVB_THREADS="$threads" taskset -c "$LOAD_CPUS" \
        wrk -t"$threads" -c"${WL_CONN[$wl]}" -d"${secs}s" --timeout 10s -s "$ROOT/tools/bench/wrk_post.lua" "$url" 2>&1)
    read -r au1 as1 <<<"$(proc_ticks $pids)"; read -r t1 i1 q1 l1 <<<"$(sys_ticks)"
    [[ -n "$perf_pid" ]] && wait "$perf_pid"
    [[ "${KVB_E2E_DIAG:-0}" == 1 && "$record" == 1 ]] && diag_snapshot "$RAW/diag.$wl.$arm.$rep.1" $pids
    [[ "$arm" == kvsteer* ]] && r1=$(request_counters)
    v1=$(veth_tx_errors)
    json=$(grep '^KVB_JSON ' <<<"$out" | cut -d' ' -f2-)
    if [[ -z "$json" ]]; then
        log "  $wl/$arm: wrk gave no summary: $(tail -3 <<<"$out" | tr '\n' ' ')"
        return 0
    fi
    [[ "$record" == 1 ]] || return 0
    python3 - "$json" "$wl" "$arm" "$rep" "$(( au1 + as1 - au0 - as0 ))" \
        "$(( (t1 - t0) * NCPU * TCK / 1000000000 - (i1 - i0) ))" "$(( q1 - q0 ))" "$TCK" "$r0" "$r1" \
        "$(( as1 - as0 ))" "$(( (t1 - t0) * TCK / 1000000000 - (l1 - l0) ))" "$(( v1 - v0 ))" >>"$RAW/runs.jsonl" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
# Per-request steering on kept-alive connections: boundaries seen, requests moved, kept in place;
# bindings timed and their summed phases (ns).
c0 = list(map(int, sys.argv[9].split()))
c1 = list(map(int, sys.argv[10].split()))
d.update(zip(("boundaries", "moved", "same_backend", "binds_timed", "bind_hold_ns", "bind_handshake_ns",
              "bind_install_ns"), (b - a for a, b in zip(c0, c1))))
wl, arm, rep, app, sysb, sirq, tck = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
d.update(workload=wl, arm=arm, rep=rep, app_cpu_s=app / tck, sys_cpu_s=sysb / tck, softirq_s=sirq / tck)
# The balancer's CPU in the kernel (system calls, and the receive work a veth transmit runs in them)
d["app_kernel_s"] = int(sys.argv[11]) / tck
# Everything that ran on the balancer's CPU: its processes, and the kernel's work there (softirqs,
# the NAPI thread of the appliance veth's peer, pinned there: the transmit half of what it sends).
d["lb_cpu_busy_s"] = max(0, int(sys.argv[12])) / tck
d["veth_xdp_tx_errors"] = int(sys.argv[13])
d["req_per_s"] = d["requests"] / (d["duration_us"] / 1e6)
d["errors"] = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_status"] + d["err_timeout"]
print(json.dumps(d))
PY
    tail -1 "$RAW/runs.jsonl" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print("[e2e] %-9s %-12s rep %d: %8.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d  balancer CPU %.2f s (kernel %.2f; its CPU busy %.2f s)  machine CPU %.2f s%s" % (
    d["workload"], d["arm"], d["rep"], d["req_per_s"], d["lat_p50_us"], d["lat_p99_us"], d["errors"], d["app_cpu_s"],
    d["app_kernel_s"], d["lb_cpu_busy_s"], d["sys_cpu_s"],
    "  veth XDP_TX drops %d" % d["veth_xdp_tx_errors"] if d["veth_xdp_tx_errors"] else ""))' >&2
}

log "warm-up"
for arm in "${ARMS[@]}"; do ensure_dataplane "$arm"; run_one close "$arm" 0 1 0; done
NA=${#ARMS[@]}
for ((rep = 1; rep <= REPS; rep++)); do
    # Arms alternate in blocks (every workload per arm); the first arm rotates with each
    # repetition so slow drifts of the machine do not favour one arm.
    for ((k = 0; k < NA; k++)); do
        arm=${ARMS[$(((k + rep - 1) % NA))]}
        ensure_dataplane "$arm"
        [[ "$mode" == smoke ]] || run_one close "$arm" "$rep" 1 0
        for wl in "${WORKLOADS[@]}"; do run_one "$wl" "$arm" "$rep" "$SECS"; done
    done
done
# On the wire (full mode, with the latency workload): a capture on the bridge that every
# namespace hangs off while each balancer arm runs, once more (not recorded above), the
# one-connection workload (latency: a connection per request) and one kept-alive connection
# whose requests take turns (ka1: every request after the first is steered at its request
# boundary), read by wire_latency.py: the balancer's own request and response paths per request,
# from one clock, with no direct run subtracted.
if [[ "$mode" == full && " ${WORKLOADS[*]} " == *" latency "* ]] && command -v tcpdump >/dev/null; then
    for arm in "${ARMS[@]}"; do
        [[ "$arm" == direct ]] && continue
        front="$KVS_VIP.$KVS_VIP_PORT" bal="$KVS_APP_IP"
        [[ "$arm" == haproxy ]] && front="$HAP_IP.8000" bal="$HAP_IP"
        [[ "$arm" == kvsteer* ]] && ensure_dataplane "$arm"
        for wl in latency ka1; do
            cap="$RAW/wire.$arm.$wl"
            rm -f "$cap.pcap"
            ip netns exec "$KVS_NS_BRIDGE" tcpdump -Z root -i br0 -nn --immediate-mode -s 96 -c 400000 \
                -w "$cap.pcap" tcp >/dev/null 2>&1 &
            tpid=$!
            sleep 0.5
            run_one "$wl" "$arm" 0 "${KVB_WIRE_SECONDS:-3}" 0
            sleep 0.2
            kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
            tcpdump -r "$cap.pcap" -tt -nn -S 2>/dev/null >"$cap.txt"
            if w=$(python3 "$ROOT/tools/bench/wire_latency.py" "$cap.txt" "$front" "$bal"); then
                echo "{\"arm\": \"$arm\", \"workload\": \"$wl\", \"r\": $w}" >>"$RAW/wire.jsonl"
                log "on the wire, $arm, $wl: $w"
            fi
            rm -f "$cap.pcap"
        done
    done
fi
kill -0 "$DP_PID" 2>/dev/null || log "WARNING: the dataplane died during the run"
stop_dataplane

# ---- figures ---------------------------------------------------------------------------------
python3 - "$RAW/runs.jsonl" "$FRAG" "$RAW/summary.json" "$HAP_CONSISTENT" "$HAP_DISTINCT" "$KVS_CONSISTENT" "$KVS_DISTINCT" \
    "$NBE" "$LB_CPU" "$LOAD_CPUS" "$HAP_VER" "$HASH_BYTES" "$RAW/counters.txt" <<'PY' || die "the figures step failed (see above)"
import json, statistics, sys
runs_path, frag_path, summ_path = sys.argv[1:4]
hap_cons, hap_dist, kvs_cons, kvs_dist, nbe = map(int, sys.argv[4:9])
lb_cpu, load_cpus, hap_ver, hash_bytes = sys.argv[9], sys.argv[10], sys.argv[11], int(sys.argv[12])
runs = [json.loads(l) for l in open(runs_path)]
def sel(wl, arm):
    return [r for r in runs if r["workload"] == wl and r["arm"] == arm]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
summary = {"balancer_cpu": lb_cpu, "load_cpus": load_cpus, "haproxy_version": hap_ver, "backends": nbe,
           "haproxy_hash_bytes": hash_bytes, "cells": {}}
cell = {}
for wl in ("close", "keepalive", "latency", "large"):
    for arm in ("direct", "kvsteer", "kvsteer_pool", "kvsteer_spin", "kvsteer_sleep", "kvsteer_busy", "haproxy"):
        rs = sel(wl, arm)
        if not rs:
            continue
        rps = [r["req_per_s"] for r in rs]
        reqs = sum(r["requests"] for r in rs)
        c = {
            "n": len(rs), "req_per_s": med(rps), "req_per_s_min": min(rps), "req_per_s_max": max(rps),
            "lat_p50_us": med([r["lat_p50_us"] for r in rs]), "lat_p99_us": med([r["lat_p99_us"] for r in rs]),
            "errors": sum(r["errors"] for r in rs), "requests": reqs,
            "veth_xdp_tx_errors": sum(r.get("veth_xdp_tx_errors", 0) for r in rs),
            "app_cpu_s_per_1k": 1000 * sum(r["app_cpu_s"] for r in rs) / max(1, reqs),
            "sys_cpu_s_per_1k": 1000 * sum(r["sys_cpu_s"] for r in rs) / max(1, reqs),
            # Everything that ran on the balancer's CPU (runs before this field: none)
            "lb_busy_s_per_1k": (1000 * sum(r["lb_cpu_busy_s"] for r in rs) / max(1, reqs)
                                 if all("lb_cpu_busy_s" in r for r in rs) else float("nan")),
            "gbit_per_s": med([r["bytes"] * 8 / (r["duration_us"] / 1e6) / 1e9 for r in rs]),
            # Per connection of the one-connection workload: connect + request + close, which wrk's
            # latency (request written -> response read) leaves out.
            "cycle_us": med([1e6 / r["req_per_s"] for r in rs if r["req_per_s"] > 0]) if wl == "latency" else None,
        }
        # Where kvsteer's bindings spent their time (the dataplane's own clock, means per binding):
        # holding the first flight until the first backend SYN, that SYN to the SYN-ACK taken (the
        # backend round trip a pool of open backend connections would save), then the install.
        timed = sum(r.get("binds_timed", 0) for r in rs)
        if timed:
            for ph in ("hold", "handshake", "install"):
                c[f"bind_{ph}_us"] = sum(r.get(f"bind_{ph}_ns", 0) for r in rs) / timed / 1000
        cell[(wl, arm)] = c
        summary["cells"][f"{wl}/{arm}"] = c
for (wl, arm), c in cell.items():
    d = cell.get((wl, "direct"))
    if d and arm != "direct":
        c["added_p50_us"] = c["lat_p50_us"] - d["lat_p50_us"]
        c["added_p99_us"] = c["lat_p99_us"] - d["lat_p99_us"]
        c["marginal_cpu_s_per_1k"] = c["sys_cpu_s_per_1k"] - d["sys_cpu_s_per_1k"]
        if wl == "latency":
            c["added_cycle_us"] = c["cycle_us"] - d["cycle_us"]
# The appliance's counters are cumulative (pinned maps): the last block has the totals.
counters = {}
try:
    block = open(sys.argv[13]).read().split("== after dataplane")[-1]
    for line in block.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
except OSError:
    pass
summary["kvsteer_counters"] = counters
json.dump(summary, open(summ_path, "w"), indent=1)

f = {"e2e_backends": nbe, "haproxy_hash_same_prefix_same_server": hap_cons, "haproxy_hash_servers_used_by_8_prefixes": hap_dist,
     "e2e_same_prefix_same_server": kvs_cons, "e2e_servers_used_by_8_prefixes": kvs_dist}
def put(name, v):
    if v == v:  # not NaN
        f[name] = round(v, 4)
for k, name in (("dp_bind_ok", "binds"), ("dp_backend_timeout", "backend_syn_timeouts"),
                ("punt_backend_other", "backend_non_synack_answers"), ("dp_bind_retry", "bind_retries"),
                ("dp_dup_segment", "dup_first_segments"), ("dp_snat_ports_exhausted", "snat_ports_exhausted"),
                ("dp_client_idle_drop", "client_idle_drops"), ("drop_syn_rate_per_prefix", "syn_rate_drops")):
    f[f"e2e_kvsteer_{name}"] = counters.get(k, 0)
names = {"kvsteer": "e2e", "kvsteer_pool": "e2e_pool", "kvsteer_spin": "e2e_spin", "kvsteer_sleep": "e2e_sleep", "kvsteer_busy": "e2e_busy",
         "haproxy": "haproxy",
         "direct": "direct"}
for (wl, arm), c in cell.items():
    p = names[arm]
    put(f"{p}_{wl}_req_per_s", c["req_per_s"])
    put(f"{p}_{wl}_req_per_s_spread_pct", 100 * (c["req_per_s_max"] - c["req_per_s_min"]) / c["req_per_s"] if c["req_per_s"] else 0)
    put(f"{p}_{wl}_lat_p50_us", c["lat_p50_us"])
    put(f"{p}_{wl}_lat_p99_us", c["lat_p99_us"])
    put(f"{p}_{wl}_errors", c["errors"])
    put(f"{p}_{wl}_machine_cpu_s_per_1k_req", c["sys_cpu_s_per_1k"])
    if arm != "direct":
        put(f"{p}_{wl}_cpu_s_per_1k_req", c["app_cpu_s_per_1k"])
        put(f"{p}_{wl}_balancer_cpu_busy_s_per_1k_req", c["lb_busy_s_per_1k"])
        if arm.startswith("kvsteer"):
            put(f"{p}_{wl}_veth_xdp_tx_errors", c["veth_xdp_tx_errors"])
        put(f"{p}_{wl}_marginal_cpu_s_per_1k_req", c.get("marginal_cpu_s_per_1k", float("nan")))
        put(f"{p}_{wl}_added_lat_p50_us", c.get("added_p50_us", float("nan")))
        put(f"{p}_{wl}_added_lat_p99_us", c.get("added_p99_us", float("nan")))
    if wl == "large":
        put(f"{p}_large_gbit_per_s", c["gbit_per_s"])
    for ph in ("hold", "handshake", "install"):
        if f"bind_{ph}_us" in c:
            put(f"{p}_{wl}_bind_{ph}_us", c[f"bind_{ph}_us"])
# Headline names.
def g(wl, arm, k):
    c = cell.get((wl, arm))
    return c.get(k, float("nan")) if c else float("nan")
# Per-request steering on the kept-alive workload (HAProxy chooses per request too): the share of
# requests that reached a request boundary and of those moved to another backend.
for p, arm in (("e2e", "kvsteer"), ("e2e_pool", "kvsteer_pool"), ("e2e_spin", "kvsteer_spin"),
               ("e2e_sleep", "kvsteer_sleep"), ("e2e_busy", "kvsteer_busy")):
    rs = sel("keepalive", arm)
    reqs = sum(r["requests"] for r in rs)
    if reqs and any("boundaries" in r for r in rs):
        bnd = sum(r.get("boundaries", 0) for r in rs)
        f[f"{p}_keepalive_boundaries_per_request"] = round(bnd / reqs, 4)
        if bnd:
            f[f"{p}_keepalive_moved_fraction"] = round(sum(r.get("moved", 0) for r in rs) / bnd, 4)
for p, arm in (("e2e", "kvsteer"), ("e2e_pool", "kvsteer_pool"), ("e2e_spin", "kvsteer_spin"),
               ("e2e_sleep", "kvsteer_sleep"), ("e2e_busy", "kvsteer_busy"), ("haproxy", "haproxy")):
    put(f"{p}_conn_per_s", g("close", arm, "req_per_s"))
    put(f"{p}_req_per_s", g("keepalive", arm, "req_per_s"))
    put(f"{p}_added_latency_p50_us", g("latency", arm, "added_p50_us"))
    put(f"{p}_added_latency_p99_us", g("latency", arm, "added_p99_us"))
    put(f"{p}_added_conn_cycle_us", g("latency", arm, "added_cycle_us"))
    # The backend handshake's share of the added latency (one connection per request, in turn).
    hs, added = g("latency", arm, "bind_handshake_us"), g("latency", arm, "added_p50_us")
    if hs == hs and added == added and added > 0:
        put(f"{p}_bind_handshake_share_of_added_p50", hs / added)
    put(f"{p}_cpu_s_per_1k_req", g("close", arm, "app_cpu_s_per_1k"))
    put(f"{p}_marginal_cpu_s_per_1k_req", g("close", arm, "marginal_cpu_s_per_1k"))
    cpu = g("close", arm, "app_cpu_s_per_1k")
    if cpu == cpu and cpu > 0:
        put(f"{p}_req_per_balancer_cpu_s", 1000 / cpu)
    m = g("close", arm, "marginal_cpu_s_per_1k")
    if m == m and m > 0:
        put(f"{p}_req_per_marginal_cpu_s", 1000 / m)
    b = g("close", arm, "lb_busy_s_per_1k")
    if b == b and b > 0:
        put(f"{p}_req_per_balancer_cpu_busy_s", 1000 / b)
for p in ("e2e", "e2e_pool", "e2e_spin", "e2e_sleep", "e2e_busy"):
    for k in ("req_per_balancer_cpu_s", "req_per_balancer_cpu_busy_s", "req_per_marginal_cpu_s"):
        if f"{p}_{k}" in f and f"haproxy_{k}" in f:
            put(f"{p}_vs_haproxy_{k}_ratio", f[f"{p}_{k}"] / f[f"haproxy_{k}"])
    for k in ("conn_per_s", "req_per_s"):
        if f.get(f"haproxy_{k}") and f"{p}_{k}" in f:
            put(f"{p}_vs_haproxy_{k}_ratio", f[f"{p}_{k}"] / f[f"haproxy_{k}"])
    if f.get("haproxy_added_latency_p50_us") and f"{p}_added_latency_p50_us" in f:
        put(f"{p}_vs_haproxy_added_latency_p50_ratio", f[f"{p}_added_latency_p50_us"] / f["haproxy_added_latency_p50_us"])
# The backend pool against the same dataplane without it, same run: added latency and the
# binding's wait for its backend (a drawn leg: none).
for wl in ("latency", "close"):
    a, b = cell.get((wl, "kvsteer_pool")), cell.get((wl, "kvsteer"))
    if a and b and "added_p50_us" in a and "added_p50_us" in b:
        put(f"e2e_pool_{wl}_added_lat_p50_minus_no_pool_us", a["added_p50_us"] - b["added_p50_us"])
f["e2e_pool_legs_drawn"] = counters.get("dp_pool_drawn", 0)
f["e2e_pool_empty"] = counters.get("dp_pool_empty", 0)
# On the wire: per request, the balancer's request path + response path (wire_latency.py).
# (latency workload: {p}_wire_*; one kept-alive connection, requests in turn: {p}_wire_ka_*)
try:
    wire = [json.loads(l) for l in open(runs_path.replace("runs.jsonl", "wire.jsonl"))]
except OSError:
    wire = []
for rec in wire:
    arm, wl, w = rec["arm"], rec["workload"], rec["r"]
    if not w.get("matched"):
        continue
    p = names[arm] + ("_wire" if wl == "latency" else "_wire_ka")
    for k in ("added_p50_us", "added_p90_us", "added_p99_us", "req_path_p50_us", "req_path_p90_us", "resp_path_p50_us"):
        if k in w:
            put(f"{p}_{k}", w[k])
    summary["cells"][f"wire-{wl}/{arm}"] = w
for p in ("e2e", "e2e_pool", "e2e_spin", "e2e_sleep", "e2e_busy"):
    for w in ("wire", "wire_ka"):
        if f.get(f"haproxy_{w}_added_p50_us") and f"{p}_{w}_added_p50_us" in f:
            put(f"{p}_vs_haproxy_{w}_added_p50_ratio", f[f"{p}_{w}_added_p50_us"] / f[f"haproxy_{w}_added_p50_us"])
json.dump(summary, open(summ_path, "w"), indent=1)
json.dump(f, open(frag_path, "w"), indent=1, sort_keys=True)
print(f"[e2e] {len(f)} figures -> {frag_path}", file=sys.stderr)
PY
log "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
