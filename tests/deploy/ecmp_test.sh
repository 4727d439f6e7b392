#!/usr/bin/env bash
# Two kvsteer appliances behind a router namespace with an L4-hashed multipath route to the VIP.
# Proves what deploy/ECMP.md promises:
#  1. flows hashed to either appliance bind identically: the same prompt lands on the same
#     backend whichever appliance took the flow (seen from the backend's own response header),
#     and both appliances did bind flows;
#  2. a SYN-ACK cookie made by one appliance validates on the other: the handshake goes through
#     appliance 1, then the route moves to appliance 2 before the request is sent, and the
#     request still completes, bound by appliance 2.
# Usage: ecmp_test.sh BUILD_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=$(cd "${1:?build dir}" && pwd)
BIN=$BUILD/bin
source tests/lib/topology.sh
source tests/deploy/appliances_lib.sh

P=kvec$$; P=${P:0:8}
DIR=$(mktemp -d /tmp/kvs-ecmp.XXXXXX)
PIDS=()
log() { echo "[ecmp $(date +%T)] $*"; }
fail() {
    echo "FAIL: $*"
    for j in 1 2; do
        echo "---- appliance $j dataplane log (tail)"; tail -15 "$DIR/dp$j.log" 2>/dev/null
        echo "---- appliance $j kvsteerd log (tail)"; tail -8 "$DIR/kvsteerd$j.log" 2>/dev/null
    done
    echo "FAIL (again, after the logs): $*"
    exit 1
}
cleanup() {
    set +e
    apps_down 2
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    kvs_topo_down "$P"
    rm -rf "$DIR"
}
trap cleanup EXIT

for b in kvsteerd kvsteerctl kvsteer-dataplane kvsteer-gpu-emu; do [[ -x "$BIN/$b" ]] || fail "$BIN/$b missing"; done
export KVS_XDP_PASS_OBJ="$BUILD/bpf/xdp_pass.bpf.o"
NBE=3
KVS_N_APPLIANCES=2 kvs_topo_up "$P" "$NBE" || fail "topology"

for ((i = 1; i <= NBE; i++)); do
    ip netns exec "${KVS_BE_NS[$i]}" "$BIN/kvsteer-gpu-emu" --host 0.0.0.0 --port 8000 --server-id "be$i" \
        --time-scale 1000 --log-level warn >"$DIR/be$i.log" 2>&1 &
    PIDS+=("$!")
done

# Identical steering settings on both appliances (the ECMP.md table); each has its own SNAT address.
apps_up 2

binds() {  # binds J: flows appliance J has bound
    "$BIN/kvsteerctl" --bpffs "$DIR/bpf$1" --json counters dp 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["dataplane"]["dp_bind_ok"]))'
}
synacks() {
    "$BIN/kvsteerctl" --bpffs "$DIR/bpf$1" --json counters xdp 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["xdp"]["tx_synack"]))'
}
body() {  # body FILE PROMPT
    printf '{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"%s"},{"role":"user","content":"%s"}],"max_tokens":2}' \
        "$2 $(printf 'shared system prompt %.0s' $(seq 40))" "question $RANDOM" >"$1"
}
post() {  # post FILE -> prints the backend id that answered
    ip netns exec "$KVS_NS_CLIENT" curl -sS -m 10 -o /dev/null -D - -H 'content-type: application/json' -H 'Expect:' \
        --data-binary "@$1" "http://$KVS_VIP:$KVS_VIP_PORT/v1/chat/completions" |
        awk -F': ' 'tolower($1) == "x-kvsteer-backend" {gsub("\r", "", $2); print $2}'
}

log "1. same prompt, many flows, ECMP over two appliances"
b0_1=$(binds 1); b0_2=$(binds 2)
for p in alpha bravo charlie delta; do
    want=""
    for k in $(seq 1 8); do
        body "$DIR/req.json" "$p"
        got=$(post "$DIR/req.json") || fail "request for prompt $p failed"
        [[ -n "$got" ]] || fail "no answer for prompt $p (flow $k)"
        [[ -z "$want" ]] && want=$got
        [[ "$got" == "$want" ]] || fail "prompt $p: flow $k went to $got, earlier flows to $want"
    done
    log "prompt $p -> $want (8 flows)"
done
d1=$(( $(binds 1) - b0_1 )); d2=$(( $(binds 2) - b0_2 ))
log "appliance 1 bound $d1 flows, appliance 2 bound $d2"
(( d1 + d2 == 32 )) || fail "expected 32 bindings in all, got $((d1 + d2))"
(( d1 > 0 && d2 > 0 )) || fail "ECMP sent every flow to one appliance ($d1/$d2): the test proves nothing"

log "2. cookie from appliance 1, request bound by appliance 2"
s1=$(synacks 1); s2=$(synacks 2); b1=$(binds 1); b2=$(binds 2)
body "$DIR/req.json" echo
ip -n "$KVS_NS_ROUTER" route replace "$KVS_VIP/32" via "${KVS_APP_IPS[1]}" dev eth0 || fail "route"
ip netns exec "$KVS_NS_CLIENT" /usr/bin/python3 - "$KVS_VIP" "$KVS_VIP_PORT" "$DIR/req.json" "$KVS_NS_ROUTER" "${KVS_APP_IPS[2]}" \
    >"$DIR/switch.out" 2>&1 <<'PY' || { cat "$DIR/switch.out"; fail "request after the route change failed"; }
import socket, subprocess, sys
vip, port, path, router, app2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
body = open(path, "rb").read()
s = socket.create_connection((vip, port), timeout=5)       # SYN / SYN-ACK / ACK via appliance 1
# The path changes between the handshake and the first data segment.
subprocess.run(["ip", "-n", router, "route", "replace", vip + "/32", "via", app2, "dev", "eth0"], check=True)
req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {vip}\r\nContent-Type: application/json\r\n"
       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
s.sendall(req)
resp = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    resp += chunk
head = resp.split(b"\r\n", 1)[0]
print(head.decode(errors="replace"))
sys.exit(0 if head.startswith(b"HTTP/1.1 200") else 1)
PY
(( $(synacks 1) > s1 )) || fail "appliance 1 sent no SYN-ACK"
(( $(synacks 2) == s2 )) || fail "appliance 2 answered the SYN too (the route did not pin the handshake)"
(( $(binds 2) == b2 + 1 )) || fail "appliance 2 did not bind the flow (binds $b2 -> $(binds 2))"
(( $(binds 1) == b1 )) || fail "appliance 1 bound the flow although the data went to appliance 2"
log "handshake on appliance 1, bound on appliance 2: $(cat "$DIR/switch.out")"
echo "ecmp: ok"
