#!/bin/bash
# Two kvsteerd sharing their fleet through etcd (fleet-etcd), in one network namespace of this
# test's own (etcd and both daemons on its loopback; no dataplane needed):
#   both watch the prefix (watch.active); a push through A is seen by B, and B's watch reported
#   it (watch.events grew); B killed (-9) is dead for A within ~5 s and out of its table;
#   a cookie rotation through A reaches both in two phases (accepted, then signing); etcd stopped: both keep
#   serving the last table, their watches down (logged once); etcd restarted: the watches open
#   again and a new push reaches both. Hot prefixes
#   (fleet-share-hot): each puts its list under its lease and reads the other's; a bad value is
#   ignored and counted; the list of a dead member is gone. (Empty lists: without a dataplane no
#   kvsteerd learns a prefix; what the lists hold is covered by the unit tests.)
# Processes are started with `ip netns exec` directly (never through a shell function), so $! is
# the daemon itself and kill -9 reaches it. Usage: fleet_etcd_test.sh BIN_DIR. Root; exit 77 (skip) without root or without etcd.
set -u
BIN=${1:?usage: fleet_etcd_test.sh BIN_DIR}
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (a network namespace, bpffs mounts)"; exit 77; }
ETCD=$(command -v etcd || true)
[[ -n $ETCD ]] || { echo "SKIP: etcd not installed (apt-get install etcd-server)"; exit 77; }
for b in kvsteerd kvsteerctl; do [[ -x $BIN/$b ]] || { echo "FAIL: $BIN/$b missing"; exit 1; }; done

NS=kvet-$$-$RANDOM
DIR=$(mktemp -d /tmp/kvet-fleet.XXXXXX) || exit 1
PIDS=()
ETCD_PID=
cleanup() {
    local rc=$?
    # What this test started (ip netns exec execs them: $! is theirs), and anything still in its
    # namespace.
    for p in "${PIDS[@]}" $ETCD_PID $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    for p in "${PIDS[@]}" $ETCD_PID; do wait "$p" 2>/dev/null; done
    for j in a b; do umount "$DIR/bpf$j" 2>/dev/null || umount -l "$DIR/bpf$j" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    if ((rc != 0)); then
        for f in etcd kvsteerd_a kvsteerd_b; do
            echo "---- $f log (tail)"; tail -15 "$DIR/$f.log" 2>/dev/null
        done
    fi
    rm -rf "$DIR"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*"; exit 1; }
inns() { ip netns exec "$NS" "$@"; }
ctl() { local j=$1; shift; "$BIN/kvsteerctl" --socket "$DIR/kvsteerd_$j.sock" "$@"; }
fstatus() { ctl "$1" --json fleet status 2>/dev/null; }
field() { fstatus "$1" | python3 -c "import json,sys; f=json.load(sys.stdin)['fleet']; print($2)" 2>/dev/null; }
# until SECONDS CMD...: runs CMD every 0.1 s until it succeeds; false after SECONDS.
until_ok() {
    local deadline=$((SECONDS + $1)); shift
    while ((SECONDS <= deadline)); do "$@" && return 0; sleep 0.1; done
    return 1
}

ip netns add "$NS" || fail "ip netns add $NS"
inns ip link set lo up || fail "lo up"
PORT=23790
start_etcd() {
    ip netns exec "$NS" "$ETCD" --name kvet --data-dir "$DIR/etcd" \
        --listen-client-urls http://127.0.0.1:$PORT --advertise-client-urls http://127.0.0.1:$PORT \
        --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
        --initial-cluster kvet=http://127.0.0.1:23800 >>"$DIR/etcd.log" 2>&1 &
    ETCD_PID=$!
    until_ok 15 inns curl -sf -o /dev/null -X POST -d '{"key":"AA=="}' http://127.0.0.1:$PORT/v3/kv/range ||
        fail "etcd did not come up"
}
start_etcd

declare -A ID=([a]=0 [b]=1) MAC=([a]=02:00:00:00:00:0a [b]=02:00:00:00:00:0b) SNAT=([a]=127.0.0.2 [b]=127.0.0.3)
for j in a b; do
    mkdir -p "$DIR/bpf$j" && mount -t bpf bpf "$DIR/bpf$j" || fail "bpffs"
    {
        echo "vip = 127.0.0.100:80"
        echo "snat-addr = ${SNAT[$j]}"
        echo "appliance-mac = ${MAC[$j]}"
        echo "backend = 127.0.0.9:8000,mac=02:00:00:00:00:99"
        echo "health-interval = 1000"
        echo "telemetry-interval = 0"
        echo "metrics-listen ="
        echo "bpffs = $DIR/bpf$j"
        echo "api-socket = $DIR/kvsteerd_$j.sock"
        echo "fleet-self = ${ID[$j]}"
        echo "fleet-member = ${ID[$j]},${MAC[$j]}"
        echo "fleet-etcd = http://127.0.0.1:$PORT"
        echo "fleet-etcd-prefix = /kvet-test/"
        echo "cookie-period = 1"  # a second rotation waits two periods after the first signs
    } >"$DIR/kvsteerd_$j.conf"
    ip netns exec "$NS" "$BIN/kvsteerd" --config "$DIR/kvsteerd_$j.conf" >"$DIR/kvsteerd_$j.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$j=$!"
done
for j in a b; do until_ok 10 test -S "$DIR/kvsteerd_$j.sock" || fail "kvsteerd $j did not start"; done

alive_is() { [[ $(field "$1" "','.join(str(m['id']) for m in f['etcd']['alive'])") == "$2" ]]; }
until_ok 5 alive_is a 0,1 || fail "A does not list both members alive: $(fstatus a)"
until_ok 5 alive_is b 0,1 || fail "B does not list both members alive"
echo "ok: both members alive in etcd"

watch() { field "$1" "f['etcd']['watch']['$2']"; }
watch_is() { [[ $(watch "$1" active) == "$2" ]]; }
until_ok 5 watch_is a True || fail "A does not watch etcd: $(fstatus a)"
until_ok 5 watch_is b True || fail "B does not watch etcd: $(fstatus b)"
ctl a fleet status | grep -q "^etcd watch: active" || fail "kvsteerctl fleet status: $(ctl a fleet status)"
echo "ok: both appliances watch the prefix"

# 0. Hot prefixes: P fleet/hot/<id> of both, under a lease; each uses the other's list.
b64() { printf '%s' "$1" | base64 -w0; }
# etcdkey KEY: "VALUE LEASE" of KEY (nothing when missing).
etcdkey() {
    inns curl -sf -X POST -d "{\"key\":\"$(b64 "$1")\"}" http://127.0.0.1:$PORT/v3/kv/range |
        python3 -c "import json,sys,base64; kv=json.load(sys.stdin).get('kvs',[]); kv and print(base64.b64decode(kv[0]['value']).decode(), kv[0].get('lease','0'))"
}
hot() { field "$1" "f['etcd']['hot']['$2']"; }
hot_put() { local v; v=$(etcdkey "/kvet-test/fleet/hot/$1"); [[ ${v%% *} == "[]" && ${v##* } != 0 ]]; }
hot_from_is() { [[ $(hot "$1" from_members) == "$2" ]]; }
until_ok 3 hot_put 0 || fail "A's hot list is not in etcd under a lease: '$(etcdkey /kvet-test/fleet/hot/0)'"
until_ok 3 hot_put 1 || fail "B's hot list is not in etcd under a lease"
until_ok 3 hot_from_is a 1 || fail "A does not use B's hot list: $(fstatus a)"
until_ok 3 hot_from_is b 1 || fail "B does not use A's hot list"
inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(b64 /kvet-test/fleet/hot/5)\",\"value\":\"$(b64 '[{"key":1}')\"}" \
    http://127.0.0.1:$PORT/v3/kv/put || fail "put a bad hot list"
bad_is() { [[ $(hot "$1" bad_values) == "$2" ]]; }
until_ok 3 bad_is a 1 || fail "A did not count the bad hot list: $(fstatus a)"
until_ok 3 bad_is b 1 || fail "B did not count the bad hot list"
sleep 0.5
bad_is a 1 && hot_from_is a 1 && alive_is a 0,1 || fail "A after the bad hot list: $(fstatus a)"
[[ $(grep -c "fleet/hot/5" "$DIR/kvsteerd_a.log") == 1 ]] || fail "the bad hot list not logged exactly once by A"
inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(b64 /kvet-test/fleet/hot/5)\"}" \
    http://127.0.0.1:$PORT/v3/kv/deleterange || fail "delete the bad hot list"
ctl b fleet status | grep -q "^hot prefixes: 0 shared, 0 remote in use from 1 member" ||
    fail "kvsteerctl fleet status: $(ctl b fleet status)"
echo "ok: hot lists under the leases, each appliance uses the other's, a bad one ignored (logged once)"

digest() { field "$1" "f['digest']"; }
epochs() { field "$1" "f['epochs']"; }
same_digest() { local da db; da=$(digest a); db=$(digest b); [[ -n $da && $da == "$db" ]]; }
epochs_are() { [[ $(epochs a) == "$1" && $(epochs b) == "$1" ]]; }

# 1. A push through A reaches B (B's watch reports it).
EVB=$(watch b events)
ctl a fleet push 0,1 >/dev/null || fail "fleet push through A: $(ctl a fleet push 0,1 2>&1)"
events_grew() { local n; n=$(watch "$1" events); [[ -n $n && $n -gt $2 ]]; }
until_ok 3 events_grew b "$EVB" || fail "B's watch saw no event after the push ($EVB -> $(watch b events))"
# The same epochs on both, the newest 0,1 (the first is whichever appliance put its configured
# epochs first: [0] or [1]; or none left after compaction).
pushed() { [[ $(epochs a) == "$(epochs b)" && $(epochs a) =~ ^\[(\[[01]\],\ )?\[0,\ 1\]\]$ ]]; }
until_ok 2 pushed || fail "epochs after the push of 0,1: A $(epochs a) B $(epochs b) (want the same, ending in [0, 1])"
until_ok 2 same_digest || fail "digests differ after the push: A $(digest a) B $(digest b)"
[[ $(field b "f['members'][1]['state'] if len(f['members'])>1 else ''") == up ]] ||
    fail "B does not see member 1 up: $(fstatus b)"
D2=$(digest a)
echo "ok: a push through A is seen by B (digest $D2, epochs $(epochs b), B's watch events $EVB -> $(watch b events))"

# 1b. A malformed epochs value (a hand edit, another version's format): both keep the last good
#     epochs (the same table; before, each fell back to its configured epochs and owned every
#     bucket), fleet status says why, and a push writes a good value again. The key deleted: the
#     last epochs read are put back, not the configured ones.
etcdput() {
    inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}" \
        http://127.0.0.1:$PORT/v3/kv/put
}
epochs_bad() { [[ -n $(field "$1" "f['etcd']['epochs_error'] or ''") ]]; }
EP_GOOD=$(epochs a)
EP_ETCD=$(etcdkey /kvet-test/fleet/epochs)
EP_ETCD=${EP_ETCD%% *}
etcdput /kvet-test/fleet/epochs '[[0,1]' || fail "putting a malformed epochs value"
until_ok 3 epochs_bad a && until_ok 3 epochs_bad b ||
    fail "a malformed epochs value is not reported: $(field a "f['etcd']")"
[[ $(digest a) == "$D2" && $(digest b) == "$D2" && $(epochs a) == "$EP_GOOD" ]] ||
    fail "a malformed epochs value changed the table: A $(digest a) B $(digest b) (was $D2), epochs $(epochs a)"
grep -q "fleet/epochs: epochs: .*keeping the last good epochs" "$DIR/kvsteerd_a.log" ||
    fail "no warning about the malformed epochs in A's log"
ctl b fleet push 0,1 >/dev/null || fail "a push over a malformed epochs value: $(ctl b fleet push 0,1 2>&1)"
until_ok 3 eval '! epochs_bad a' || fail "the push did not replace the malformed value: $(etcdkey /kvet-test/fleet/epochs)"
inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(b64 /kvet-test/fleet/epochs)\"}" \
    http://127.0.0.1:$PORT/v3/kv/deleterange || fail "deleting the epochs key"
until_ok 3 eval '[[ -n $(etcdkey /kvet-test/fleet/epochs) ]]' || fail "the deleted epochs key was not put back"
[[ $(etcdkey /kvet-test/fleet/epochs) == "$EP_ETCD "* && $(digest a) == "$D2" && $(digest b) == "$D2" ]] ||
    fail "the epochs put back are not the last read: $(etcdkey /kvet-test/fleet/epochs), digests A $(digest a) B $(digest b)"
echo "ok: a malformed epochs value: the last good table kept on both, reported, replaced by a push; deleted: put back as last read"

# 2. A cookie rotation through A, two-phase: at once both still sign with the current key and
#    accept the new one; ~2 s later both sign with the new one and accept the old one.
keys() { field "$1" "f['cookie_keys']['current']+'/'+f['cookie_keys']['previous']"; }
same_keys() { local ka kb; ka=$(keys a); kb=$(keys b); [[ -n $ka && $ka == "$kb" ]]; }
keys_are() { [[ $(keys a) == "$1" && $(keys b) == "$1" ]]; }
# Neither configures cookie-key: the first up put its key into etcd and both sign with it (random
# keys of their own made the owner refuse the handshakes the other answered).
same_signing() { local a b; a=$(keys a); b=$(keys b); [[ -n $a && ${a%/*} == "${b%/*}" ]]; }
until_ok 3 same_signing || fail "A and B sign with different cookie keys: A $(keys a) B $(keys b)"
[[ -n $(etcdkey /kvet-test/config/cookie-key) ]] || fail "no cookie key was put into etcd"
# rotate: one rotation through A; t_rot is when the attempt began (the new key signs 2 s after).
rotate() { t_rot=$(date +%s%N); ctl a fleet rotate-cookie >/dev/null 2>&1; }
# rotated BEFORE: after a rotation from keys BEFORE (sign/accept), both appliances accept the
# new key and still sign with BEFORE's until 2 s have passed; then both sign with it and accept
# BEFORE's. A applies etcd's keys at its next tick: its keys are read once they changed (read at
# once, they could still be BEFORE on both and the key expected was BEFORE's previous one; two
# reads could straddle the switch). Under load the 2 s may be over by that read: already
# switched is right only if 2 s have passed since the rotation began.
rotated() {
    local before=$1 k="" t3=0 new
    until_ok 3 eval 'k=$(keys a); t3=$(date +%s%N); [[ -n $k && $k != "$before" ]]' ||
        fail "A's cookie keys did not change after a rotation ($before)"
    until_ok 2 same_keys || fail "cookie keys differ after a rotation: A $(keys a) B $(keys b)"
    if [[ $k == "${before%/*}/"* ]]; then
        new=${k#*/}
    elif [[ $k == *"/${before%/*}" ]] && ((t3 - t_rot >= 2000000000)); then
        new=${k%/*}
    else
        fail "the new key signs before every appliance accepts it ($before -> $k)"
    fi
    until_ok 5 keys_are "$new/${before%/*}" ||
        fail "the new key does not sign on both 2 s later: A $(keys a) B $(keys b) (want $new/${before%/*})"
}
K0=$(keys a)
rotate || fail "rotate-cookie: $(ctl a fleet rotate-cookie 2>&1)"
rotated "$K0"
K2=$(keys a)
ctl a fleet rotate-cookie >/dev/null 2>&1 && fail "a second rotation was accepted while the first is still under way"
until_ok 8 rotate || fail "second rotate-cookie: $(ctl a fleet rotate-cookie 2>&1)"
rotated "$K2"
echo "ok: cookie rotation through A: accepted by both first, then signing on both ($(keys a))"

# 3. B killed: A lists it dead within ~5 s and drops it from its table.
kill -9 "$PID_b"
wait "$PID_b" 2>/dev/null
t0=$SECONDS
until_ok 6 alive_is a 0 || fail "A still lists B alive 6 s after kill -9: $(fstatus a)"
until_ok 2 hot_from_is a 0 || fail "A still uses dead B's hot list"
[[ -z $(etcdkey /kvet-test/fleet/hot/1) ]] || fail "B's hot list outlived its lease"
owned() { field a "[m['buckets'] for m in f['members'] if m['id']==0][0]"; }
[[ $(owned) == 65536 ]] || fail "A does not own every bucket after B died: $(fstatus a)"
echo "ok: B dead for A after $((SECONDS - t0)) s, A owns every bucket and no longer uses its hot list"

# B back: its key was gone (A computed the table without it and bound its buckets' new flows),
# so before its key is put it leaves the owners by that epoch ([0]), and it re-enters by another
# once its dataplane beats: A stays a previous owner of its buckets. Here B has no dataplane: it
# stays out (before, its key alone made it the owner again, and A's flows of its buckets were
# reset as orphans).
ip netns exec "$NS" "$BIN/kvsteerd" --config "$DIR/kvsteerd_b.conf" >>"$DIR/kvsteerd_b.log" 2>&1 &
PID_b=$!
PIDS+=($!)
until_ok 10 test -S "$DIR/kvsteerd_b.sock" && until_ok 5 alive_is a 0,1 || fail "B did not rejoin"
until_ok 3 same_digest || fail "digests differ after B's restart"
grep -q "the maps hold this appliance's fleet (a restart): kept until etcd is read" "$DIR/kvsteerd_b.log" ||
    fail "B's restart wrote its configured fleet over the live maps before reading etcd"
[[ $(epochs a) == *", [0, 1], [0]]" ]] || fail "B's return left no epoch of its absence: $(epochs a)"
owned_by() { field "$1" "[m['buckets'] for m in f['members'] if m['id']==$2][0]"; }
[[ $(owned_by a 1) == 0 && $(owned_by b 1) == 0 ]] || fail "B owns buckets before its dataplane beats: $(fstatus a)"
grep -q "member 1 left the owners before its key is put" "$DIR/kvsteerd_b.log" || fail "B did not say it left"
# The leave is kept in etcd (fleet/returning/1), so a kvsteerd restarted before its dataplane beats
# still re-enters: B restarted again leaves nothing new and stays out, the marker still there.
returning() { field a "f['etcd']['returning'].get('1')"; }
[[ $(returning) == "0,1;0" ]] || fail "no returning marker for B: $(fstatus a)"
EP_LEFT=$(epochs a)
kill "$PID_b"; wait "$PID_b" 2>/dev/null
rm -f "$DIR/kvsteerd_b.sock"
ip netns exec "$NS" "$BIN/kvsteerd" --config "$DIR/kvsteerd_b.conf" >>"$DIR/kvsteerd_b.log" 2>&1 &
PID_b=$!
PIDS+=($!)
until_ok 10 test -S "$DIR/kvsteerd_b.sock" && until_ok 5 alive_is a 0,1 || fail "B did not come back"
sleep 1
[[ $(epochs a) == "$EP_LEFT" && $(returning) == "0,1;0" ]] || fail "B's second restart: epochs $(epochs a) (was $EP_LEFT), marker $(returning)"
# A drain decides instead: the marker goes (a drained appliance restarted must not re-enter by it).
ctl b drain --timeout 0 >/dev/null || fail "drain of B"
marker_gone() { [[ $(returning) == None ]]; }
until_ok 3 marker_gone || fail "B's drain left its returning marker: $(returning)"
ctl b drain --cancel >/dev/null || fail "drain --cancel of B"
# fleet forget of B's id deletes its marker too (a box later started under that id must not
# re-enter the owners by it without a push).
put_marker() {
    inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(printf %s /kvet-test/fleet/returning/1 | base64 -w0)\",\"value\":\"$(printf %s '0,1;0' | base64 -w0)\"}" \
        "http://127.0.0.1:$PORT/v3/kv/put"
}
put_marker || fail "putting a returning marker"
marker_back() { [[ $(returning) == "0,1;0" ]]; }
until_ok 3 marker_back || fail "A does not see the marker put: $(returning)"
ctl a fleet forget 1 >/dev/null || fail "fleet forget 1: $(ctl a fleet forget 1 2>&1)"
until_ok 3 marker_gone || fail "fleet forget left B's returning marker: $(returning)"
# Forgetting the newest epoch's only owner is refused through etcd as without it (before, the
# empty epoch every appliance refuses to read was written, and the answer said done).
EP_NOW=$(epochs a)
out=$(ctl a fleet forget 0 2>&1) && fail "fleet forget of the only owner succeeded: $out"
[[ $out == *"only owner in the newest epoch"* ]] || fail "fleet forget 0: $out"
[[ $(epochs a) == "$EP_NOW" ]] || fail "a refused forget changed the epochs: $EP_NOW -> $(epochs a)"
D2=$(digest a)
echo "ok: B restarted: back as a previous owner only, by an epoch of its absence (epochs $(epochs a))"

# 4. etcd stopped: both keep serving the last table.
kill -9 "$ETCD_PID"
wait "$ETCD_PID" 2>/dev/null
ETCD_PID=
unreachable() { [[ $(field "$1" "f['etcd']['reachable']") == False ]]; }
until_ok 3 unreachable a || fail "A does not notice etcd is gone"
until_ok 3 unreachable b || fail "B does not notice etcd is gone"
until_ok 3 watch_is a False || fail "A's watch still active without etcd: $(fstatus a)"
until_ok 3 watch_is b False || fail "B's watch still active without etcd"
sleep 4  # past the lease TTL: nothing may change without etcd
[[ $(digest a) == "$D2" && $(digest b) == "$D2" ]] || fail "the table changed without etcd"
out=$(ctl a fleet push 0 2>&1) && fail "a push without etcd succeeded"
[[ $out == *"etcd is unreachable"* ]] || fail "a push without etcd: $out"
n=$(grep -c "keeping the last fleet state" "$DIR/kvsteerd_a.log")
[[ $n == 1 ]] || fail "the outage was logged $n times by A (want once)"
n=$(grep -c "reopening the watch" "$DIR/kvsteerd_a.log")
[[ $n == 1 ]] || fail "the lost watch was logged $n times by A (want once)"
echo "ok: etcd down: both serve the last table ($D2), the watches down, the outage logged once"

# 5. etcd back: a new push reaches both.
start_etcd
until_ok 5 alive_is a 0,1 || fail "A did not catch up after etcd's restart: $(fstatus a)"
until_ok 5 watch_is a True || fail "A's watch did not open again after etcd's restart: $(fstatus a)"
until_ok 5 watch_is b True || fail "B's watch did not open again after etcd's restart: $(fstatus b)"
[[ $(watch a reopened) -ge 1 ]] || fail "A's watch.reopened is $(watch a reopened)"
EVB=$(watch b events)
ctl a fleet push 1 >/dev/null || fail "push after etcd's restart: $(ctl a fleet push 1 2>&1)"
until_ok 2 same_digest || fail "digests differ after the push following etcd's restart"
[[ $(digest b) != "$D2" ]] || fail "B's table did not change"
until_ok 3 events_grew b "$EVB" || fail "B's reopened watch saw no event after the push"
echo "ok: etcd back: a push through A is seen by B (digest $(digest b))"

# 6. A backend no appliance could add (its kv-events endpoint already another backend's, or no KV
# events support in this build) is refused before anything is written to etcd: its address stays
# free for a plain add. Before, its key was written anyway: every appliance failed to add it,
# a second add said "exists already" and a remove "no backend" (only etcdctl cleared it).
ctl a backends add 127.0.0.10:8000 --mac 02:00:00:00:00:9a --kv-events tcp://127.0.0.1:5999 >/dev/null 2>&1
out=$(ctl a backends add 127.0.0.11:8000 --mac 02:00:00:00:00:9b --kv-events tcp://127.0.0.1:5999 2>&1) &&
    fail "a backend with another's kv-events endpoint was added: $out"
[[ -z $(etcdkey /kvet-test/config/backends/127.0.0.11:8000) ]] || fail "the refused backend was written to etcd"
out=$(ctl a backends add 127.0.0.11:8000 --mac 02:00:00:00:00:9b 2>&1) || fail "a plain add after the refusal: $out"
ctl a backends remove 127.0.0.11:8000 >/dev/null || fail "removing 127.0.0.11:8000: $(ctl a backends remove 127.0.0.11:8000 2>&1)"
echo "ok: a backend no appliance could add is refused before etcd holds it"

# 7. tune through etcd: a shared tunable is written to etcd and reaches B; one fixed at start
# (table-algorithm) is refused in the local handler's words (it said "cannot be changed at run
# time" through etcd and "unknown tunable" without).
tunable() { ctl "$1" --json tune "$2" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
ctl a tune load-slack 7 >/dev/null || fail "tune load-slack through A: $(ctl a tune load-slack 7 2>&1)"
[[ $(etcdkey /kvet-test/config/tunables/load-slack) == "7 "* ]] ||
    fail "load-slack in etcd: '$(etcdkey /kvet-test/config/tunables/load-slack)'"
tunable_is() { [[ $(tunable "$1" "$2") == "$3" ]]; }
until_ok 3 tunable_is b load-slack 7 || fail "B's load-slack: $(tunable b load-slack)"
out=$(ctl a tune table-algorithm maglev 2>&1) && fail "table-algorithm changed through etcd: $out"
[[ $out == *"table-algorithm: set at start only"* ]] || fail "table-algorithm's refusal through etcd: $out"
echo "ok: tune through etcd reaches B; a start-only tunable is refused as without etcd"

# 8. A backend's weight changed through A, then its drain through B: both changes in etcd (each is
# written only while the key is as its appliance read it: before, each put the whole value read,
# and of two such changes one was lost). B retries while it has not read A's change yet (its
# answer is then "changed in etcd meanwhile ... try again", nothing written).
ctl a backends add 127.0.0.12:8000 --mac 02:00:00:00:00:9c >/dev/null || fail "adding 127.0.0.12:8000"
ctl a backends weight 127.0.0.12:8000 3 >/dev/null || fail "weight through A: $(ctl a backends weight 127.0.0.12:8000 3 2>&1)"
drain_b() { ctl b backends drain 127.0.0.12:8000 >/dev/null 2>&1; }
until_ok 3 drain_b || fail "drain through B: $(ctl b backends drain 127.0.0.12:8000 2>&1)"
v=$(etcdkey /kvet-test/config/backends/127.0.0.12:8000)
[[ $v == *"weight=3"* && $v == *'"drain":true'* ]] || fail "one of the two changes lost in etcd: $v"
out=$(ctl b backends add 127.0.0.12:8000 2>&1) && fail "a second add of the same backend: $out"
ctl b backends remove 127.0.0.12:8000 >/dev/null || fail "remove through B: $(ctl b backends remove 127.0.0.12:8000 2>&1)"
[[ -z $(etcdkey /kvet-test/config/backends/127.0.0.12:8000) ]] || fail "the removed backend is still in etcd"
echo "ok: a weight through A and a drain through B both kept in etcd; add refused when present, remove"

# 9. A backend's etcd value this kvsteerd cannot read (a newer version's option, a typo) leaves the
# backend as it is on every appliance (before, each removed it, and kvsteerctl could then neither
# add nor remove it); a good value again applies.
ctl a backends add 127.0.0.13:8000 --mac 02:00:00:00:00:9d >/dev/null || fail "adding 127.0.0.13:8000"
has_13() { ctl "$1" backends 2>/dev/null | grep -q "127.0.0.13:8000"; }
until_ok 3 has_13 b || fail "B did not add 127.0.0.13:8000"
etcdput /kvet-test/config/backends/127.0.0.13:8000 '{"spec":"127.0.0.13:8000,mac=02:00:00:00:00:9d,max-load=5"}' ||
    fail "putting an unreadable backend value"
sleep 2  # both have read it (they read etcd at least every second)
has_13 a || fail "A removed the backend whose etcd value it cannot read"
has_13 b || fail "B removed the backend whose etcd value it cannot read"
grep -q "127.0.0.13:8000 not applied" "$DIR/kvsteerd_a.log" || fail "A did not say why the value is not applied"
ctl a backends remove 127.0.0.13:8000 >/dev/null || fail "removing 127.0.0.13:8000: $(ctl a backends remove 127.0.0.13:8000 2>&1)"
gone_13() { ! has_13 "$1"; }
until_ok 3 gone_13 b || fail "B still lists the removed 127.0.0.13:8000"
echo "ok: an unreadable etcd value leaves its backend as it is; a remove still works"

# 10. Another appliance configured with A's fleet-self writes A's member key (its own MAC, its own
# lease or none): A says so (fleet status etcd.self_conflict, an error in its log); before,
# nothing did, and the fleet sent A's frames to whichever wrote last.
[[ $(field a "f['etcd']['self_conflict']") == None ]] || fail "A reports a conflict before any: $(field a "f['etcd']")"
etcdput "/kvet-test/fleet/members/${ID[a]}" '{"mac":"02:00:00:00:00:7e"}' || fail "putting A's member key from outside"
conflict() { [[ $(field a "f['etcd']['self_conflict'] or ''") == *"02:00:00:00:00:7e"* ]]; }
until_ok 3 conflict || fail "A does not report another writer of its member key: $(field a "f['etcd']")"
grep -q "another appliance wrote this appliance's member key" "$DIR/kvsteerd_a.log" || fail "no error in A's log"
[[ $(field b "f['etcd']['self_conflict']") == None ]] || fail "B reports a conflict over A's key"
ctl a fleet status | grep -q "MEMBER KEY WAS WRITTEN BY ANOTHER APPLIANCE" || fail "kvsteerctl fleet status does not show it"
echo "ok: a second writer of A's member key is reported by A"

# 11. A tunable that B refused from etcd (prefix-length above its max-held-bytes), deleted, then
# put again with the same value once max-held-bytes was raised: applied. Before, the name stayed
# "seen" with that value and was skipped without a word: B kept another prefix-length than etcd's.
MHB=$(tunable b max-held-bytes)
BIG=$((MHB * 2))
etcdput /kvet-test/config/tunables/prefix-length "$BIG" || fail "putting prefix-length $BIG"
refused_big() { grep -q "tunable prefix-length = '$BIG' not applied" "$DIR/kvsteerd_b.log"; }
until_ok 3 refused_big || fail "B did not refuse prefix-length $BIG above max-held-bytes $MHB"
inns curl -sf -o /dev/null -X POST -d "{\"key\":\"$(b64 /kvet-test/config/tunables/prefix-length)\"}" \
    http://127.0.0.1:$PORT/v3/kv/deleterange || fail "deleting prefix-length"
sleep 2  # both have read the deletion (they read etcd at least every second)
etcdput /kvet-test/config/tunables/max-held-bytes "$BIG" || fail "putting max-held-bytes $BIG"
until_ok 3 tunable_is b max-held-bytes "$BIG" || fail "B's max-held-bytes: $(tunable b max-held-bytes)"
etcdput /kvet-test/config/tunables/prefix-length "$BIG" || fail "putting prefix-length $BIG again"
until_ok 3 tunable_is b prefix-length "$BIG" ||
    fail "B skipped prefix-length $BIG put again after its refusal: $(tunable b prefix-length)"
echo "ok: a refused tunable, deleted and put again once its dependency changed, is applied"
echo "PASS"
