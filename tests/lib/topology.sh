#!/usr/bin/env bash
# One namespace topology for the end-to-end tests, the benchmarks and the demo.
#
#   client ns --veth--+
#   appliance ns -----+-- bridge (own ns) --+-- backend ns 1..N
#
# Usage (sourced):
#   source tests/lib/topology.sh
#   kvs_topo_up PREFIX N_BACKENDS      # builds it; exports the KVS_* variables below
#   kvs_topo_down PREFIX               # removes every namespace of PREFIX (idempotent)
# Parameters (environment, optional):
#   KVS_TOPO_NET     first three octets of the /24 everything sits on (default 10.77.0)
#   KVS_VIP          virtual IP the clients connect to (default 10.77.1.1; routed via the appliance)
#   KVS_VIP_PORT     (default 8000)
#   KVS_XDP_PASS_OBJ an XDP_PASS object attached to the bridge-side peer of the appliance's veth
#                    (XDP_TX into a veth needs an XDP program on its peer); default build/bpf/xdp_pass.bpf.o
#   KVS_N_CLIENTS    client namespaces (default 1)
# Exports: KVS_NS_BRIDGE KVS_NS_CLIENT (first client) KVS_NS_CLIENTS[i] KVS_CLIENT_IP[i]
#   KVS_NS_APP KVS_APP_IF KVS_APP_IP KVS_APP_MAC KVS_VIP KVS_VIP_PORT
#   KVS_BE_NS[i] KVS_BE_IP[i] KVS_BE_MAC[i] (i = 1..N)  KVS_N_BACKENDS
# Addresses live only inside the namespaces made here; nothing is sent from the root namespace.

kvs__die() { echo "topology: $*" >&2; return 1; }

kvs__ns_list() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-(br|app|cl[0-9]+|be[0-9]+)$" || true; }

kvs_topo_down() {
    local prefix=${1:?prefix}
    local ns
    for ns in $(kvs__ns_list "$prefix"); do
        # Killing what still runs inside lets the namespace disappear at once.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    return 0
}

# kvs__link NS_A IF_A NS_B IF_B: a veth pair created directly in both namespaces.
kvs__link() {
    ip link add name "$2" netns "$1" type veth peer name "$4" netns "$3" || return 1
    ip -n "$1" link set "$2" up && ip -n "$3" link set "$4" up
}

# Endpoints compute their own checksums: with TX offload on, frames through a forwarder carry
# partial checksums and TCP silently fails.
kvs__no_offload() { ip netns exec "$1" ethtool -K "$2" tx off >/dev/null 2>&1 || true; }

kvs_topo_up() {
    local prefix=${1:?prefix} nbe=${2:-8}
    local net=${KVS_TOPO_NET:-10.77.0}
    local ncl=${KVS_N_CLIENTS:-1}
    [[ "$prefix" =~ ^[a-z][a-z0-9]{0,7}$ ]] || { kvs__die "prefix must be 1-8 chars [a-z0-9]"; return 1; }
    (( nbe >= 1 && nbe <= 64 )) || { kvs__die "backends must be 1..64"; return 1; }
    (( ncl >= 1 && ncl <= 8 )) || { kvs__die "clients must be 1..8"; return 1; }
    kvs_topo_down "$prefix"

    export KVS_NS_BRIDGE="$prefix-br" KVS_NS_APP="$prefix-app"
    export KVS_VIP=${KVS_VIP:-10.77.1.1} KVS_VIP_PORT=${KVS_VIP_PORT:-8000}
    export KVS_APP_IF=app0 KVS_APP_IP="$net.2" KVS_N_BACKENDS=$nbe
    local pass_obj=${KVS_XDP_PASS_OBJ:-build/bpf/xdp_pass.bpf.o}

    ip netns add "$KVS_NS_BRIDGE" || return 1
    ip -n "$KVS_NS_BRIDGE" link add br0 type bridge forward_delay 0 stp_state 0 || return 1
    ip -n "$KVS_NS_BRIDGE" link set br0 up
    ip -n "$KVS_NS_BRIDGE" link set lo up

    # Appliance: one-armed, its kernel owns 10.x.2 (ARP, health checks); XDP owns VIP and SNAT ports.
    ip netns add "$KVS_NS_APP" || return 1
    ip -n "$KVS_NS_APP" link set lo up
    kvs__link "$KVS_NS_APP" app0 "$KVS_NS_BRIDGE" p-app || return 1
    ip -n "$KVS_NS_BRIDGE" link set p-app master br0
    ip -n "$KVS_NS_APP" addr add "$KVS_APP_IP/24" dev app0
    kvs__no_offload "$KVS_NS_APP" app0
    # The kernel's own ephemeral ports stay clear of the SNAT range the dataplane owns.
    ip netns exec "$KVS_NS_APP" sysctl -qw net.ipv4.ip_local_port_range="40000 60999"
    if [[ -f "$pass_obj" ]]; then
        ip -n "$KVS_NS_BRIDGE" link set dev p-app xdpdrv obj "$pass_obj" sec xdp \
            || { kvs__die "cannot attach $pass_obj to p-app"; return 1; }
    else
        echo "topology: warning: $pass_obj missing; XDP_TX from the appliance will be lost" >&2
    fi
    KVS_APP_MAC=$(ip netns exec "$KVS_NS_APP" cat /sys/class/net/app0/address); export KVS_APP_MAC

    local i ns
    KVS_NS_CLIENTS=(); KVS_CLIENT_IP=()
    for ((i = 1; i <= ncl; i++)); do
        ns="$prefix-cl$i"
        ip netns add "$ns" || return 1
        ip -n "$ns" link set lo up
        kvs__link "$ns" eth0 "$KVS_NS_BRIDGE" "p-cl$i" || return 1
        ip -n "$KVS_NS_BRIDGE" link set "p-cl$i" master br0
        ip -n "$ns" addr add "$net.$((9 + i))/24" dev eth0
        ip -n "$ns" route add "$KVS_VIP/32" via "$KVS_APP_IP"
        kvs__no_offload "$ns" eth0
        KVS_NS_CLIENTS[$i]=$ns; KVS_CLIENT_IP[$i]="$net.$((9 + i))"
    done
    export KVS_NS_CLIENT="${KVS_NS_CLIENTS[1]}"

    KVS_BE_NS=(); KVS_BE_IP=(); KVS_BE_MAC=()
    for ((i = 1; i <= nbe; i++)); do
        ns="$prefix-be$i"
        ip netns add "$ns" || return 1
        ip -n "$ns" link set lo up
        kvs__link "$ns" eth0 "$KVS_NS_BRIDGE" "p-be$i" || return 1
        ip -n "$KVS_NS_BRIDGE" link set "p-be$i" master br0
        ip -n "$ns" addr add "$net.$((100 + i))/24" dev eth0
        kvs__no_offload "$ns" eth0
        KVS_BE_NS[$i]=$ns; KVS_BE_IP[$i]="$net.$((100 + i))"
        KVS_BE_MAC[$i]=$(ip netns exec "$ns" cat /sys/class/net/eth0/address)
    done
    export KVS_NS_CLIENTS KVS_CLIENT_IP KVS_BE_NS KVS_BE_IP KVS_BE_MAC
    return 0
}

# kvs_topo_pids PREFIX: pids still running inside the topology (for diagnostics).
kvs_topo_pids() { local ns; for ns in $(kvs__ns_list "$1"); do ip netns pids "$ns"; done; }
