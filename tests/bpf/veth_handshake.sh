#!/usr/bin/env bash
# A real client's connect() to a VIP completes its handshake against the XDP program on a veth:
# client namespace <-veth-> appliance namespace (kvsteer.bpf.o attached, SYN cookies).
# Usage: veth_handshake.sh BIN_DIR BPF_OBJ_DIR
set -euo pipefail
BIN=${1:?bin dir}
OBJ=${2:?bpf object dir}
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, XDP)"; exit 1; }

ID=$$
NS_C=kvx-c-$ID
NS_A=kvx-a-$ID
IF_C=kvx-c$ID
IF_A=kvx-a$ID
PIN=/run/kvx-veth-$ID
VIP=10.201.77.100
PORT=8080

cleanup() {
    ip netns del "$NS_C" 2>/dev/null || true
    ip netns del "$NS_A" 2>/dev/null || true
    umount "$PIN" 2>/dev/null || true
    rmdir "$PIN" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NS_C"
ip netns add "$NS_A"
ip link add "$IF_C" type veth peer name "$IF_A"
ip link set "$IF_C" netns "$NS_C"
ip link set "$IF_A" netns "$NS_A"
ip -n "$NS_C" addr add 10.201.77.2/24 dev "$IF_C"
ip -n "$NS_A" addr add 10.201.77.1/24 dev "$IF_A"
# The VIP lives on the appliance so its kernel answers ARP for it; TCP to it never reaches
# that kernel (XDP answers SYNs and drops or punts the rest).
ip -n "$NS_A" addr add "$VIP"/32 dev "$IF_A"
for ns_if in "$NS_C:$IF_C" "$NS_A:$IF_A"; do
    ns=${ns_if%%:*}; ifc=${ns_if##*:}
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$ifc" up
    ip netns exec "$ns" ethtool -K "$ifc" tx off >/dev/null
done
# XDP_TX into a veth is delivered only if the peer runs an XDP program.
ip -n "$NS_C" link set dev "$IF_C" xdpdrv obj "$OBJ/xdp_pass.bpf.o" sec xdp

mkdir -p "$PIN"
mount -t bpf bpf "$PIN"
ip netns exec "$NS_A" "$BIN/kvsteer-xdp" attach --iface "$IF_A" --mode native --bpffs "$PIN/kvsteer"
"$BIN/kvsteer-xdp" config --bpffs "$PIN/kvsteer" --vip "$VIP:$PORT" --syn-timestamps

# connect() returns only after the SYN-ACK arrived and was valid; then send a request.
ip netns exec "$NS_C" timeout 10 python3 - "$VIP" "$PORT" <<'PY'
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
print(f"connected, negotiated MSS {mss}")
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
time.sleep(0.5)
s.close()
PY

stats=$("$BIN/kvsteer-xdp" stats --bpffs "$PIN/kvsteer" --json --all)
echo "counters: $stats"
get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$stats" "$1"; }
fail=0
[ "$(get tx_synack)" -ge 1 ] || { echo "FAIL: no SYN-ACK sent"; fail=1; }
[ "$(get drop_pure_ack_no_state)" -ge 1 ] || { echo "FAIL: the handshake's ACK did not validate"; fail=1; }
[ "$(get punt_no_xsk)" -ge 1 ] || { echo "FAIL: the request was not punted (valid cookie)"; fail=1; }
[ "$(get drop_bad_cookie)" -eq 0 ] || { echo "FAIL: a client segment failed the cookie check"; fail=1; }
[ $fail = 0 ] && echo "PASS: handshake completed against XDP"
exit $fail
