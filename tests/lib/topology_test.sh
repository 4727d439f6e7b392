#!/usr/bin/env bash
# The topology library builds a working L2 segment and removes every namespace it made.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/topology.sh
P=kvtt$$; P=${P:0:8}
trap 'kvs_topo_down "$P"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

KVS_N_CLIENTS=2 kvs_topo_up "$P" 3 || fail "kvs_topo_up"
[[ $(ip netns list | grep -c "^$P-") == 7 ]] || fail "expected 7 namespaces"
for i in 1 2 3; do
    ip netns exec "$KVS_NS_CLIENT" ping -c1 -W2 "${KVS_BE_IP[$i]}" >/dev/null || fail "client -> backend $i"
done
ip netns exec "${KVS_BE_NS[2]}" ping -c1 -W2 "$KVS_APP_IP" >/dev/null || fail "backend -> appliance"
ip netns exec "${KVS_NS_CLIENTS[2]}" ping -c1 -W2 "${KVS_CLIENT_IP[1]}" >/dev/null || fail "client2 -> client1"
ip -n "$KVS_NS_CLIENT" route get "$KVS_VIP" | grep -q "via $KVS_APP_IP" || fail "VIP not routed via the appliance"
[[ "${KVS_BE_MAC[1]}" =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]] || fail "backend MAC"
kvs_topo_down "$P"
[[ $(ip netns list | grep -c "^$P-") == 0 ]] || fail "namespaces left behind"

# Two appliances behind a router with an L4-hashed multipath route to the VIP.
KVS_N_APPLIANCES=2 kvs_topo_up "$P" 2 || fail "kvs_topo_up with 2 appliances"
[[ $(ip netns list | grep -c "^$P-") == 7 ]] || fail "expected 7 namespaces (br rt app app2 cl1 be1 be2)"
ip netns exec "$KVS_NS_CLIENT" ping -c1 -W2 "${KVS_CLIENT_IP[1]%.2}.1" >/dev/null || fail "client -> router"
for j in 1 2; do
    ip netns exec "$KVS_NS_ROUTER" ping -c1 -W2 "${KVS_APP_IPS[$j]}" >/dev/null || fail "router -> appliance $j"
done
ip -n "$KVS_NS_ROUTER" route show "$KVS_VIP" | grep -c nexthop | grep -q '^2$' || fail "VIP is not multipath over 2 appliances"
[[ $(ip netns exec "$KVS_NS_ROUTER" sysctl -n net.ipv4.fib_multipath_hash_policy) == 1 ]] || fail "ECMP not L4-hashed"
kvs_topo_down "$P"
[[ $(ip netns list | grep -c "^$P-") == 0 ]] || fail "namespaces left behind (2 appliances)"
# Dual stack: IPv6 on every interface, usable at once (no DAD wait), the VIP routed via the
# appliance; the IPv4 addresses stay.
KVS_FAMILY=6 kvs_topo_up "$P" 2 || fail "kvs_topo_up with KVS_FAMILY=6"
[[ "$KVS_VIP" == *:* && "$KVS_VIP_HOST" == "[$KVS_VIP]" && "$KVS_VIP_EP" == "[$KVS_VIP]:$KVS_VIP_PORT" ]] \
    || fail "IPv6 VIP variables: $KVS_VIP $KVS_VIP_HOST $KVS_VIP_EP"
for i in 1 2; do
    ip netns exec "$KVS_NS_CLIENT" ping -6 -c1 -W2 "${KVS_BE_IP[$i]}" >/dev/null || fail "client -> backend $i (IPv6)"
    ip netns exec "$KVS_NS_CLIENT" ping -c1 -W2 "${KVS_BE_IP4[$i]}" >/dev/null || fail "client -> backend $i (IPv4)"
done
ip netns exec "${KVS_BE_NS[1]}" ping -6 -c1 -W2 "$KVS_APP_IP" >/dev/null || fail "backend -> appliance (IPv6)"
ip -n "$KVS_NS_CLIENT" -6 route get "$KVS_VIP" | grep -q "via $KVS_APP_IP" || fail "IPv6 VIP not routed via the appliance"
ip -n "$KVS_NS_CLIENT" route get "$KVS_VIP4" | grep -q "via $KVS_APP_IP4" || fail "IPv4 VIP not routed via the appliance"
kvs_topo_down "$P"
[[ $(ip netns list | grep -c "^$P-") == 0 ]] || fail "namespaces left behind (IPv6)"
echo "topology: ok"
