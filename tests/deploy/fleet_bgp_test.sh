#!/usr/bin/env bash
# A fleet of three appliances as it runs in production (issue #19's proof through BGP and etcd):
# the router namespace runs BIRD 2 and learns the VIP over BGP (+ BFD) from each appliance's
# BIRD, which announces it only while kvsteerd sees that appliance's dataplane healthy; the
# router installs plain hash-threshold multipath over the appliances announcing. The fleet's
# membership, epochs and cookie keys live in etcd (in the router namespace): one kvsteerctl
# command changes every appliance.
#  1. 60 long streams on appliance 1; appliances 2 and 3 start (not announced while they are no
#     owners), are pushed into the owners through etcd by one command each, then announce
#     themselves (the router's route grows by itself).
#     A backend's weight and a tunable changed through one appliance reach all (and the joiner).
#  2. The cookie key is rotated through etcd while clients connect: no handshake fails.
#  3. etcd stopped: the appliances serve on with the last state; it returns: they catch up.
#  4. `kvsteerctl drain` on appliance 3: withdrawn over BGP, out of the owners (etcd), waits for
#     its flows, exits 0; then it is stopped. The 60 streams: none broken, byte-identical.
#     Hot prefixes: both owners put what they learned into etcd and use each other's.
#  5. Appliance 2's dataplane killed (kvsteerd alive): kvsteerd withdraws the VIP within ~1 s and
#     leaves the owners through etcd (an epoch without it), so the others take its buckets (new
#     connections succeed); kvsteerd and the dataplane restarted: announced again, an owner again
#     by another epoch (the leave kept in etcd), the fleet agrees; streams bound by the interim
#     owner meanwhile survive its return.
#  6. Appliance 2 crashes mid-stream (kill -9 of its processes, its link cut): BFD takes it out
#     of the router's route within ~1 s; appliance 1's pings go unanswered and it leaves it out of
#     its owner table before its etcd lease runs out; each of its clients gets a RST at its first
#     keepalive probe; appliance 1's streams complete intact.
#  7. Appliance 2 back after its etcd lease ran out (settled first: appliance 1 is no previous
#     owner of its buckets by an older epoch): before its key is put it leaves the owners by the
#     epoch of its absence, and re-enters by another once its dataplane beats, so the streams
#     appliance 1 bound for its buckets meanwhile survive the router moving them onto it.
# Usage: fleet_bgp_test.sh BUILD_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=$(cd "${1:?build dir}" && pwd)
BIN=$BUILD/bin
source tests/lib/topology.sh
source tests/deploy/appliances_lib.sh

[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (namespaces, XDP)"; exit 77; }
ETCD=$(command -v etcd || true) BIRD=$(command -v bird || true)
[[ -n $ETCD ]] || { echo "SKIP: etcd not installed (apt-get install etcd-server)"; exit 77; }
[[ -n $BIRD ]] || { echo "SKIP: BIRD 2 not installed (apt-get install bird2)"; exit 77; }
P=kvbg$$; P=${P:0:8}
DIR=$(mktemp -d /tmp/kvs-bgp.XXXXXX)
# etcd's data on tmpfs: every write waits for an fsync, and a call over kvsteerd's 500 ms limit
# takes etcd for unreachable (nothing here depends on etcd's durability).
ETCD_DATA=$(mktemp -d /dev/shm/kvs-etcd.XXXXXX 2>/dev/null || mktemp -d /tmp/kvs-etcd.XXXXXX)
NAPP=3 NBE=3
PIDS=() ETCD_PID=""
declare -A BIRD_PID
log() { echo "[fleet-bgp $(date +%T)] $*"; }
fail() {
    echo "FAIL: $*"
    echo "---- router: route to the VIP"; ip -n "$KVS_NS_ROUTER" route show "$KVS_VIP" 2>/dev/null
    echo "---- router BIRD"; birdc_rt show protocols 2>/dev/null
    for ((j = 1; j <= NAPP; j++)); do
        echo "---- appliance $j dataplane log (tail)"; tail -5 "$DIR/dp$j.log" 2>/dev/null
        echo "---- appliance $j kvsteerd log (tail)"; tail -8 "$DIR/kvsteerd$j.log" 2>/dev/null
        echo "---- appliance $j counters (fleet, drops)"
        counters "$j" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: v for s in ("xdp", "dataplane") for k, v in d.get(s, {}).items() if v and ("fleet" in k or "drop" in k or "rst" in k)})' 2>/dev/null
    done
    echo "---- etcd log (tail)"; tail -3 "$DIR/etcd.log" 2>/dev/null
    echo "FAIL (again, after the logs): $*"
    exit 1
}
cleanup() {
    set +e
    apps_down "$NAPP"
    for p in "${BIRD_PID[@]:-}" "$ETCD_PID" "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    kvs_topo_down "$P"
    rm -rf "$ETCD_DATA"
    [[ -n ${KVS_KEEP_DIR:-} ]] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT

fjson() {  # fjson J EXPR: EXPR over appliance J's fleet status (f)
    ctl "$1" --json fleet status 2>/dev/null | /usr/bin/python3 -c "import json,sys; f=json.load(sys.stdin)['fleet']; print($2)" 2>/dev/null
}
until_ok() {  # until_ok SECONDS CMD...: CMD every 0.1 s until it succeeds
    local deadline=$((SECONDS + $1)); shift
    while ((SECONDS <= deadline)); do "$@" && return 0; sleep 0.1; done
    return 1
}
birdc_rt() { birdc -s "$DIR/bird-rt.ctl" "$@"; }

# The router's next hops for the VIP, as appliance numbers ("1 2"), from its kernel route.
hops() {
    local r j out=""
    r=$(ip -n "$KVS_NS_ROUTER" route show "$KVS_VIP/32" 2>/dev/null)
    for ((j = 1; j <= NAPP; j++)); do grep -qw "via ${KVS_APP_IPS[$j]}" <<<"$r" && out+="$j "; done
    echo "${out% }"
}
hops_are() { [[ "$(hops)" == "$*" ]]; }
hops_have() { [[ " $(hops) " == *" $1 "* ]]; }
digests_agree() {
    local j d first=""
    for j in "$@"; do
        d=$(fjson "$j" "f['digest']") || return 1
        [[ -n "$d" ]] || return 1
        [[ -z "$first" ]] && first=$d
        [[ "$d" == "$first" ]] || return 1
    done
}
owners_are() {  # owners_are IDS J...: the newest epoch is IDS on every appliance J
    local want=$1 j; shift
    for j in "$@"; do [[ "$(fjson "$j" "','.join(map(str, f['epochs'][-1]))")" == "$want" ]] || return 1; done
}

for b in kvsteerd kvsteerctl kvsteer-dataplane kvsteer-gpu-emu; do [[ -x "$BIN/$b" ]] || fail "$BIN/$b missing"; done
export KVS_XDP_PASS_OBJ="$BUILD/bpf/xdp_pass.bpf.o"
KVS_N_APPLIANCES=$NAPP KVS_APP_MTU=1600 kvs_topo_up "$P" "$NBE" || fail "topology"
# BGP installs the route now, not the topology.
ip -n "$KVS_NS_ROUTER" route del "$KVS_VIP/32" || fail "removing the topology's static route"
RT=${KVS_TOPO_NET:-10.77.0}.254

# etcd in the router namespace, on the appliances' segment.
ip netns exec "$KVS_NS_ROUTER" "$ETCD" --name kvbgp --data-dir "$ETCD_DATA/etcd" \
    --listen-client-urls "http://$RT:2379" --advertise-client-urls "http://$RT:2379" \
    --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
    --initial-cluster kvbgp=http://127.0.0.1:23801 >>"$DIR/etcd.log" 2>&1 &
ETCD_PID=$!
etcd_up() { ip netns exec "$KVS_NS_ROUTER" curl -sf -o /dev/null -X POST -d '{"key":"AA=="}' "http://$RT:2379/v3/kv/range"; }
until_ok 15 etcd_up || fail "etcd did not come up"

# BIRD on the router: a BGP session (with BFD) to each appliance, multipath into the kernel.
{
    echo "router id $RT;"
    echo "protocol device { }"
    echo "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }"
    # BFD: 100 ms x 5 here (the example's 3 flapped sessions under a loaded CI machine: a BIRD
    # not scheduled for 0.3 s); a crash is still withdrawn in about 0.5 s (step 6 wants < 1.5 s).
    echo "protocol bfd { interface \"eth0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; }; }"
    for ((j = 1; j <= NAPP; j++)); do
        echo "protocol bgp app$j { local $RT as 65000; neighbor ${KVS_APP_IPS[$j]} as 65010;"
        echo "  ipv4 { import all; export none; }; bfd on; hold time 6; connect retry time 1; error wait time 1, 2; }"
    done
} >"$DIR/bird-rt.conf"
ip netns exec "$KVS_NS_ROUTER" "$BIRD" -f -c "$DIR/bird-rt.conf" -s "$DIR/bird-rt.ctl" >"$DIR/bird-rt.log" 2>&1 &
BIRD_PID[rt]=$!
# BIRD on each appliance: the VIP in a static protocol kvsteerd enables (deploy/bird).
bird_app() {
    local j=$1 ip=${KVS_APP_IPS[$1]}
    sed -e "s/192.0.2.11/$ip/g" -e "s/neighbor 192.0.2.1 /neighbor $RT /" -e "s#192.0.2.10/32#$KVS_VIP/32#g" \
        -e 's/interface "eth0"/interface "app0"/' -e 's/multiplier 3;/multiplier 5;/' \
        deploy/bird/bird.conf.example >"$DIR/bird$j.conf"
    grep -q "multiplier 5;" "$DIR/bird$j.conf" || fail "deploy/bird/bird.conf.example: no BFD multiplier 3 to widen"
    ip netns exec "${KVS_APP_NS[$j]}" "$BIRD" -f -c "$DIR/bird$j.conf" -s "$DIR/bird$j.ctl" >"$DIR/bird$j.log" 2>&1 &
    BIRD_PID[$j]=$!
}
for ((j = 1; j <= NAPP; j++)); do bird_app "$j"; done
sessions_up() { (( $(birdc_rt show protocols 2>/dev/null | grep -c "Established") == NAPP )); }
until_ok 20 sessions_up || fail "BGP sessions did not come up: $(birdc_rt show protocols 2>&1)"
hops_are "" || fail "a route to the VIP before any appliance runs: $(hops)"
log "router: BGP up with $NAPP appliances, nothing announced yet"

backends_up
fleet_conf() {
    fleet_members "$1"
    echo "fleet-etcd = http://$RT:2379"
    echo "announce-bird-socket = $DIR/bird$1.ctl"
    echo "dataplane-stale = 500"
}
app_up 1 fleet_conf
until_ok 5 hops_are 1 || fail "appliance 1 is not announced: route over '$(hops)'"
log "appliance 1 up and announced"

log "1. 60 long streams on appliance 1; appliances 2 and 3 join"
# About 62 s (the emulator paces tokens, ~9.6 ms each): they must outlive steps 1-4, which took
# 35-40 s here and more on a slower machine (etcd's fsyncs, DPDK starts).
STREAM_TOKENS=${STREAM_TOKENS:-6500} STREAM_TIMEOUT=120 streams 60 "$DIR/s1.json"
t_s1=$STREAMS_AT
t0=$SECONDS
sleep 2
app_up 2 fleet_conf
# Not an owner yet: not announced (its XDP runs with the fleet off, so connections the router
# moved onto it would be dropped), however healthy.
until_ok 10 eval '[[ $(ctl 2 --json status 2>/dev/null | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[\"dataplane\"][\"healthy\"])" 2>/dev/null) == True ]]' ||
    fail "appliance 2's dataplane is not healthy"
sleep 2
hops_are 1 || fail "appliance 2 is announced before it is an owner: route over '$(hops)'"
ctl 1 fleet push 0,1 >/dev/null || fail "fleet push 0,1 through appliance 1"
until_ok 5 hops_are 1 2 || fail "appliance 2 pushed in but the route is over '$(hops)'"
until_ok 3 owners_are 0,1 1 2 || fail "the push did not reach both appliances"
until_ok 3 digests_agree 1 2 || fail "digests disagree after the push"
log "2 appliances: owners through etcd, then announced by BGP (t=$((SECONDS - t0)) s)"
short_requests 20
# The shared configuration: one command on one appliance changes every appliance's.
BE1="${KVS_BE_IP[1]}:8000"
weight_is() {  # weight_is W J...: backend 1's weight on appliances J...
    local w=$1 j; shift
    for j in "$@"; do
        [[ "$(ctl "$j" --json backends | /usr/bin/python3 -c 'import json,sys; print([b["weight"] for b in json.load(sys.stdin)["backends"] if b["addr"] == sys.argv[1]])' "$BE1")" == "[$w]" ]] || return 1
    done
}
factor_is() {  # factor_is F J...: load-factor on appliances J...
    local f=$1 j; shift
    for j in "$@"; do [[ "$(ctl "$j" --json tune | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["load-factor"])')" == "$f" ]] || return 1; done
}
ctl 1 backends weight "$BE1" 3 >/dev/null || fail "backends weight through appliance 1"
ctl 2 tune load-factor 1.5 >/dev/null || fail "tune load-factor through appliance 2"
until_ok 3 weight_is 3 1 2 || fail "the weight written through appliance 1 did not reach both"
until_ok 3 factor_is 1.5 1 2 || fail "the load-factor written through appliance 2 did not reach both"
app_up 3 fleet_conf
ctl 3 fleet push 0,1,2 >/dev/null || fail "fleet push 0,1,2 through appliance 3"
until_ok 5 hops_are 1 2 3 || fail "appliance 3 pushed in but the route is over '$(hops)'"
until_ok 3 owners_are 0,1,2 1 2 3 || fail "the push did not reach every appliance"
until_ok 3 digests_agree 1 2 3 || fail "digests disagree after the second push"
until_ok 3 weight_is 3 3 && until_ok 3 factor_is 1.5 3 || fail "appliance 3 did not take the fleet's configuration from etcd"
# The configuration's generation (two changes since the seed) and the lookup table itself (its
# digest by backend address, whatever the local ids) are the same on all three, and each says so.
same_tables() {
    local j g l g1 l1
    g1=$(fjson 1 "f['config_generation']") l1=$(fjson 1 "f['lookup_digest']")
    (( g1 >= 2 )) || return 1
    for j in 2 3; do
        g=$(fjson "$j" "f['config_generation']") l=$(fjson "$j" "f['lookup_digest']")
        [[ "$g" == "$g1" && "$l" == "$l1" ]] || return 1
    done
    [[ "$(fjson 3 "f['etcd']['reported']['agree']")" == True ]]
}
until_ok 5 same_tables || fail "config generation / lookup digest differ: $(for j in 1 2 3; do fjson "$j" "(f['config_generation'], f['lookup_digest'])"; done) $(fjson 3 "f['etcd']['reported']")"
log "3 appliances (t=$((SECONDS - t0)) s); a weight and a tunable set by one command reached all three" \
    "(config generation $(fjson 1 "f['config_generation']"), lookup table $(fjson 1 "f['lookup_digest']") on each)"

log "2. cookie key rotated through etcd while clients connect"
# ACKs whose cookie no appliance accepted (in a fleet: chased, then a RST)
count ck0 xdp fleet_rst_orphan 1 2 3
key0=$(fjson 1 "f['cookie_keys']['current']")
ip netns exec "$KVS_NS_CLIENT" /usr/bin/python3 "$ROOT/tests/chaos/chaos_client.py" --host "$KVS_VIP" \
    --port "$KVS_VIP_PORT" --n 300 --concurrency 6 --prefixes 16 --max-tokens 2 --timeout 10 >"$DIR/rot.json" 2>&1 &
ROT=$!
sleep 0.5
ctl 2 fleet rotate-cookie >/dev/null || fail "fleet rotate-cookie"
rotated() { local j; for j in 1 2 3; do [[ "$(fjson "$j" "f['cookie_keys']['previous']")" == "$key0" ]] || return 1; done; }
until_ok 6 rotated || fail "the rotation did not reach every appliance"
wait "$ROT"
[[ "$(field "$DIR/rot.json" ok)" == 300 ]] || fail "connections failed across the rotation: $(cat "$DIR/rot.json")"
count ck xdp fleet_rst_orphan 1 2 3
ck=$((ck - ck0))
(( ck == 0 )) || fail "$ck ACKs with a cookie no appliance accepted across the rotation"
log "300/300 connections across the rotation, every appliance on the new key, no bad cookie"

log "3. etcd stopped while serving"
kill "$ETCD_PID"; wait "$ETCD_PID" 2>/dev/null
d_before=$(fjson 1 "f['digest']")
unreachable() { local j; for j in 1 2 3; do [[ "$(fjson "$j" "f['etcd']['reachable']")" == False ]] || return 1; done; }
until_ok 3 unreachable || fail "the appliances did not notice etcd is gone"
short_requests 30
sleep 3  # past the member leases' TTL: nothing may change without etcd
digests_agree 1 2 3 && [[ "$(fjson 1 "f['digest']")" == "$d_before" ]] || fail "the tables changed without etcd"
ip netns exec "$KVS_NS_ROUTER" "$ETCD" --name kvbgp --data-dir "$ETCD_DATA/etcd" \
    --listen-client-urls "http://$RT:2379" --advertise-client-urls "http://$RT:2379" \
    --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
    --initial-cluster kvbgp=http://127.0.0.1:23801 >>"$DIR/etcd.log" 2>&1 &
ETCD_PID=$!
reachable() { local j; for j in 1 2 3; do [[ "$(fjson "$j" "f['etcd']['reachable']")" == True ]] || return 1; done; }
until_ok 15 reachable || fail "the appliances did not reach etcd again"
until_ok 5 owners_are 0,1,2 1 2 3 || fail "the owners changed across the outage"
until_ok 5 digests_agree 1 2 3 || fail "digests disagree after etcd's return"
log "etcd down: 30/30 requests served on the last state; back: every appliance reads it again"

log "4. appliance 3 drained while it carries streams of its own"
binds_mark 1 2 3
STREAMS1=$STREAMS
STREAM_TOKENS=700 streams 30 "$DIR/s2.json"
STREAMS2=$STREAMS STREAMS=$STREAMS1
binds_await 30
mine=${BOUND[3]}
(( mine > 0 )) || fail "appliance 3 bound none of the 30 new streams: the drain would prove nothing"
t_ds=$(date +%s.%N)
ctl 3 drain --timeout 30 >"$DIR/drain.out" 2>&1 || fail "drain: $(cat "$DIR/drain.out")"
t_de=$(date +%s.%N)
grep -q "^drained" "$DIR/drain.out" || fail "drain did not finish: $(cat "$DIR/drain.out")"
waited=$(grep -m1 -o "waiting: [0-9]* flow" "$DIR/drain.out" | grep -o "[0-9]*")
(( ${waited:-0} > 0 )) || fail "the drain did not wait for appliance 3's flows: $(cat "$DIR/drain.out")"
wait "$STREAMS2"
[[ "$(field "$DIR/s2.json" ok)" == 30 && "$(field "$DIR/s2.json" corrupted)" == 0 ]] \
    || fail "streams broken by the drain: $(cat "$DIR/s2.json")"
# Each of appliance 3's streams ended at its client (last byte read, then the close the appliance
# counts) before the drain saw its flow end: at least the $waited it waited for ended while it ran
# (a drain that returned early saw none end: the 30 are of one length and began together). The
# streams process itself may outlive the drain (those of appliances 1 and 2 end a little later).
ended=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t0=d["started_at"]
print(sum(1 for t in d["ok_times"] if float(sys.argv[2]) < t0 + t <= float(sys.argv[3])))' "$DIR/s2.json" "$t_ds" "$t_de")
(( ended >= waited )) || fail "the drain ended before appliance 3's streams: $ended stream(s) ended while it ran, it waited for $waited"
log "the drain waited for $waited flow(s) of appliance 3 ($mine of 30 streams bound there; $ended ended while it ran): 30/30 intact"
hops_have 3 && fail "appliance 3 drained but still announced: route over '$(hops)'"
# 1 and 2 stay (a session that flapped meanwhile, BFD on a starved machine, comes back).
until_ok 10 hops_are 1 2 || fail "appliances 1 and 2 not both announced after appliance 3's drain: route over '$(hops)'"
until_ok 3 owners_are 0,1 1 2 || fail "appliance 3 is still an owner after its drain"
kill -TERM "${DP_PID[3]}"; wait "${DP_PID[3]}" 2>/dev/null; DP_PID[3]=""
kill "${KD_PID[3]}"; wait "${KD_PID[3]}" 2>/dev/null; KD_PID[3]=""
log "drained and stopped: $(tr '\n' ' ' <"$DIR/drain.out")"
kill -0 "$STREAMS" 2>/dev/null || { wait "$STREAMS"; fail "the streams ended before the drain, $((SECONDS - t_s1)) s after they started (make them longer: STREAM_TOKENS): $(cat "$DIR/s1.json")"; }
log "the 60 streams still run $((SECONDS - t_s1)) s after they started"
wait "$STREAMS"
log "streams: $(cat "$DIR/s1.json")"
[[ "$(field "$DIR/s1.json" sent)" == 60 && "$(field "$DIR/s1.json" ok)" == 60 && "$(field "$DIR/s1.json" corrupted)" == 0 ]] \
    || fail "streams broken across the membership changes: $(cat "$DIR/s1.json")"
count to_owner xdp fleet_redirect_owner 1 2
count to_prev xdp fleet_redirect_prev 1 2
redirects=$((to_owner + to_prev))
(( redirects > 0 )) || fail "no packet was sent on between appliances: the router never moved a stream (nothing proven)"
log "60/60 streams intact across 1 -> 2 -> 3 -> 2 driven by BGP and etcd ($redirects packets sent on)"

log "hot prefixes: the owners' learned prefixes shared through etcd"
# Each owner learns the prefix from its own bindings (about half of them: a rate above
# hot-threshold / 4), puts it in etcd, and uses the other's (remote keys in its table). Checked
# while the requests run: the rate decays once they stop (5 s time constant), and a burst that
# had ended first gave a slower machine a window of a second or none.
ip netns exec "$KVS_NS_CLIENT" /usr/bin/python3 "$ROOT/tests/chaos/chaos_client.py" --host "$KVS_VIP" \
    --port "$KVS_VIP_PORT" --n 2000 --seconds 8 --concurrency 4 --prefixes 1 --max-tokens 2 --timeout 10 \
    >"$DIR/hot.json" 2>&1 &
HOT=$!
hot_shared() {
    local j
    for j in 1 2; do
        (( $(fjson "$j" "f['etcd']['hot']['shared']") > 0 && $(fjson "$j" "f['etcd']['hot']['remote_keys']") > 0 )) || return 1
    done
}
until_ok 8 hot_shared || { wait "$HOT"; fail "hot prefixes not shared: $(fjson 1 "f['etcd']['hot']") / $(fjson 2 "f['etcd']['hot']"); requests: $(cat "$DIR/hot.json")"; }
log "appliance 1 shares $(fjson 1 "f['etcd']['hot']['shared']") and uses $(fjson 1 "f['etcd']['hot']['remote_keys']") remote keys; appliance 2: $(fjson 2 "f['etcd']['hot']['shared']") / $(fjson 2 "f['etcd']['hot']['remote_keys']")"
wait "$HOT" || fail "requests of one prefix: $(cat "$DIR/hot.json")"
sent=$(field "$DIR/hot.json" sent)
(( sent > 0 )) && [[ "$(field "$DIR/hot.json" ok)" == "$sent" ]] || fail "requests of one prefix failed: $(cat "$DIR/hot.json")"

# sent_on_by_2: packets appliance 2 sent on to appliance 1 (the only other member), as the bucket's
# owner (hop 1) or as a previous owner.
sent_on_by_2() {  # into SENT_ON_BY_2
    local to_owner to_prev
    count to_owner xdp fleet_redirect_owner 2
    count to_prev xdp fleet_redirect_prev 2
    SENT_ON_BY_2=$((to_owner + to_prev))
}

# streams_survived OUT SENT_BEFORE WHEN: the 20 streams of OUT (pid STREAMS), bound by appliance 1
# while appliance 2 was out, outlived its return intact, and appliance 2 sent some on to appliance
# 1 (sent_on_by_2 was SENT_BEFORE): else the router moved none, nothing proven. Both hops count: a
# stream the router moves to appliance 2 lands in a bucket appliance 1 owns (sent on as to the
# owner) or in one of appliance 2's (sent on as to the previous owner), about half each; counting
# the second only failed once the router had moved no stream of the 20 into appliance 2's
# buckets, (3/4)^20 = 0.3% a step.
streams_survived() {
    local out=$1 before=$2 when=$3 sent
    kill -0 "$STREAMS" 2>/dev/null || { wait "$STREAMS"; fail "the streams ended before appliance 2's return, $((SECONDS - STREAMS_AT)) s after they started (make them longer): $(cat "$out")"; }
    log "the 20 streams still run $((SECONDS - STREAMS_AT)) s after they started"
    wait "$STREAMS"
    [[ "$(field "$out" ok)" == 20 && "$(field "$out" corrupted)" == 0 ]] \
        || fail "streams bound $when broke at appliance 2's return: $(cat "$out")"
    sent_on_by_2
    sent=$((SENT_ON_BY_2 - before))
    (( sent > 0 )) || fail "appliance 2 sent nothing on to appliance 1 after its return: the router moved no stream (nothing proven)"
    log "20/20 streams bound $when intact after appliance 2's return ($sent packets sent on to their binder)"
}

log "5. appliance 2's dataplane dies; kvsteerd withdraws the VIP"
# Settled first: no older epoch makes appliance 1 a previous owner of appliance 2's buckets.
ctl 1 fleet settle >/dev/null || fail "fleet settle"
until_ok 3 owners_are 0,1 1 2 && [[ "$(fjson 1 "len(f['epochs'])")" == 1 ]] || fail "not settled: $(fjson 1 "f['epochs']")"
t_kill=$(date +%s.%N)
kill -9 "${DP_PID[2]}"; wait "${DP_PID[2]}" 2>/dev/null; DP_PID[2]=""
until_ok 5 hops_are 1 || fail "appliance 2's dataplane is dead but it is still announced: route over '$(hops)'"
t_gone=$(date +%s.%N)
[[ "$(ctl 2 --json status | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dataplane"]["healthy"])')" == False ]] \
    || fail "kvsteerd 2 does not report its dataplane unhealthy"
# Its kvsteerd left the owners through etcd (an epoch without it; it stays a previous owner).
until_ok 3 owners_are 0 1 2 || fail "appliance 2 (dataplane dead) still owns buckets: $(fjson 1 "f['epochs']")"
short_requests 20
# Streams bound meanwhile by appliance 1, the interim owner of every bucket.
# About 23 s: they must outlive kvsteerd's and the dataplane's restart below (~8 s here).
STREAM_TOKENS=2400 streams 20 "$DIR/s4.json"
sleep 1
sent_on_by_2
sent_on=$SENT_ON_BY_2
# Its kvsteerd restarted meanwhile too: the leave is kept in etcd (fleet/returning/1), so the new
# process still re-enters (before, that state was the process's only, and it stayed out).
# (retried: a leave whose etcd call timed out is written again a second later)
returning() { [[ "$(fjson 1 "f['etcd']['returning'].get('1')")" == "0,1;0" ]]; }
until_ok 3 returning || fail "no returning marker: $(fjson 1 "f['etcd']['returning']")"
kill "${KD_PID[2]}"; wait "${KD_PID[2]}" 2>/dev/null
rm -f "$DIR/kvsteerd2.sock"
app__kvsteerd 2 fleet_conf
app__dataplane 2; app__wait 2
until_ok 10 hops_are 1 2 || fail "appliance 2's dataplane is back but it is not announced: route over '$(hops)'"
until_ok 3 owners_are 0,1 1 2 || fail "appliance 2 does not own buckets again: $(fjson 1 "f['epochs']")"
[[ "$(fjson 1 "f['etcd']['returning']")" == "{}" ]] || fail "the returning marker outlived the re-entry: $(fjson 1 "f['etcd']['returning']")"
# Back by another epoch: the spell's epoch stays, appliance 1 a previous owner of its buckets.
[[ "$(fjson 1 "f['epochs']")" == "[[0, 1], [0], [0, 1]]" ]] || fail "epochs after the return: $(fjson 1 "f['epochs']")"
# Its healthy report was put before the re-entry's epoch: at the revision before the epoch's write
# its member key already said healthy (put after, every member computed an epoch without it for up
# to a report round, its buckets' owner changing twice).
etcd_range() {  # KEY [REVISION]: etcd's range reply
    local body="{\"key\":\"$(printf %s "$1" | base64 -w0)\"${2:+,\"revision\":\"$2\"}}"
    ip netns exec "$KVS_NS_ROUTER" curl -sf -X POST -d "$body" "http://$RT:2379/v3/kv/range"
}
rev=$(etcd_range /kvsteer/fleet/epochs | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
said=$(etcd_range /kvsteer/fleet/members/1 $((rev - 1)) \
    | /usr/bin/python3 -c 'import base64,json,sys; print(json.loads(base64.b64decode(json.load(sys.stdin)["kvs"][0]["value"])).get("healthy"))')
[[ $said == True ]] || fail "appliance 2's report before its re-entry's epoch (revision $rev) said healthy: $said"
streams_survived "$DIR/s4.json" "$sent_on" "during the outage"
until_ok 3 digests_agree 1 2 || fail "digests disagree after appliance 2's return"
agrees() { [[ "$(fjson 1 "f['etcd']['reported']['agree']")" == True ]]; }
until_ok 3 agrees || fail "fleet status says the fleet disagrees: $(fjson 1 "f['etcd']['reported']")"
log "withdrawn $(/usr/bin/python3 -c "print(f'{$t_gone - $t_kill:.2f}')") s after the kill; announced again once it restarted"

log "6. appliance 2 crashes mid-stream (kill -9, link cut): BFD withdraws it, appliance 1's pings notice"
binds_mark 1 2
# Keepalive 2 s: the first probe must find appliance 1 past its settle window (0.5 s from the
# silence it notices ~0.25 s after the cut) and the route withdrawn; at 1 s the margin was 0.25 s.
streams 30 "$DIR/s3.json" --keepalive-s 2
binds_await 30; sleep 1  # mid-stream: tokens flowing
mine=${BOUND[2]}
(( mine > 0 && mine < 30 )) || fail "appliance 2 bound $mine of the 30 streams (need some, not all)"
kill -0 "$STREAMS" 2>/dev/null || { wait "$STREAMS"; fail "the streams ended before the crash: $(cat "$DIR/s3.json")"; }
t_cut=$(date +%s.%N)
kill -9 "${DP_PID[2]}" "${KD_PID[2]}" 2>/dev/null; DP_PID[2]=""; KD_PID[2]=""
ip -n "${KVS_APP_NS[2]}" link set app0 down
# The route first (no python in its poll: the time is BFD's, not the checks'), then the silence.
until_ok 3 hops_are 1 || fail "appliance 2's link is down but the router still routes to it: '$(hops)'"
t_gone=$(date +%s.%N)
silent1() { [[ "$(fjson 1 "[m['silent'] for m in f['members'] if m['id'] == 1][0]")" == True ]]; }
until_ok 3 silent1 || fail "appliance 1 did not notice appliance 2's silence: $(fjson 1 "f['members']")"
t_silent=$(date +%s.%N)
lease=$(fjson 1 "any(m['id'] == 1 for m in f['etcd']['alive'])")
dt=$(/usr/bin/python3 -c "print(f'{$t_gone - $t_cut:.2f}')")
/usr/bin/python3 -c "import sys; sys.exit(0 if $dt < 1.5 else 1)" || fail "BFD took $dt s to withdraw appliance 2 (want < 1.5 s)"
log "the router dropped appliance 2 $dt s after the crash; appliance 1 left it out of its owner table" \
    "at most $(/usr/bin/python3 -c "print(f'{$t_silent - $t_cut:.2f}')") s after (its etcd key still there then: $lease)"
wait "$STREAMS"
log "streams: $(cat "$DIR/s3.json")"
crash_streams_check "$DIR/s3.json" "$t_cut" "$mine" 30 2
count rst xdp fleet_rst_orphan 1
(( rst > 0 )) || fail "no RST sent to a client whose appliance crashed"
short_requests 10
log "crash: appliance 2's $mine streams reset, the latest $CRASH_LATEST s after the crash; the other $CRASH_OK intact"

log "7. appliance 2 back after its lease ran out: streams bound meanwhile by appliance 1 survive its return"
dead2() { [[ "$(fjson 1 "any(m['id'] == 1 for m in f['etcd']['alive'])")" == False ]]; }
until_ok 6 dead2 || fail "appliance 2's etcd key outlived its lease: $(fjson 1 "f['etcd']['alive']")"
# Settled: etcd's epochs are [[0, 1]] alone (appliance 1 computes [[0]] while 2 is dead), so only
# the return's own epoch can make appliance 1 a previous owner of appliance 2's buckets.
ctl 1 fleet settle >/dev/null || fail "fleet settle"
settled() { [[ "$(fjson 1 "len(f['epochs'])")" == 1 ]]; }
until_ok 3 settled || fail "not settled: $(fjson 1 "f['epochs']")"
# About 38 s: they must outlive appliance 2's return below (processes, BGP after the link cut).
STREAM_TOKENS=4000 streams 20 "$DIR/s5.json"
sleep 1
sent_on_by_2
sent_on=$SENT_ON_BY_2
ip -n "${KVS_APP_NS[2]}" link set app0 up
app__kvsteerd 2 fleet_conf; app__dataplane 2; app__wait 2
until_ok 10 hops_are 1 2 || fail "appliance 2 is back but not announced: route over '$(hops)'"
until_ok 3 owners_are 0,1 1 2 || fail "appliance 2 does not own buckets again: $(fjson 1 "f['epochs']")"
streams_survived "$DIR/s5.json" "$sent_on" "while appliance 2 was away"
grep -q "member 1 left the owners before its key is put" "$DIR/kvsteerd2.log" || fail "appliance 2 did not leave before its key was put"
[[ "$(fjson 1 "f['epochs']")" == "[[0, 1], [0], [0, 1]]" ]] || fail "epochs after the return: $(fjson 1 "f['epochs']")"
[[ "$(fjson 1 "f['etcd']['returning']")" == "{}" ]] || fail "the returning marker outlived the re-entry: $(fjson 1 "f['etcd']['returning']")"
echo "fleet-bgp: ok"
