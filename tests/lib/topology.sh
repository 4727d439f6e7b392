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
#   KVS_N_APPLIANCES appliances (default 1). With more than one, a router namespace sits between
#                    the clients and the bridge and spreads flows to the VIP over the appliances
#                    with an L4-hashed multipath route (ECMP), as an upstream router would:
#     client i (10.78.i.2/24) -- router (10.78.i.1, and .254 on the bridge) -- bridge
#   KVS_ROUTER=1     the router namespace even with one appliance
#   KVS_APP_MTU      MTU of each appliance's link and its bridge port (default 1500): a fleet
#                    sends frames on between appliances with 10 bytes more (struct kvs_fleet_hdr)
#   KVS_FAMILY=6     dual stack: every interface also gets an IPv6 address on KVS_TOPO_NET6::/64
#                    (default fd77), the VIP is KVS_VIP6 (default fd77:1::1), and the exported
#                    addresses below (VIP, appliance, clients, backends) are the IPv6 ones; the
#                    IPv4 ones stay in KVS_VIP4 KVS_APP_IP4 KVS_CLIENT_IP4[i] KVS_BE_IP4[i].
#                    Not with a router (one appliance only).
# Exports: KVS_NS_BRIDGE KVS_NS_CLIENT (first client) KVS_NS_CLIENTS[i] KVS_CLIENT_IP[i]
#   KVS_NS_APP KVS_APP_IF KVS_APP_IP KVS_APP_MAC KVS_VIP KVS_VIP_PORT
#   KVS_BE_NS[i] KVS_BE_IP[i] KVS_BE_MAC[i] (i = 1..N)  KVS_N_BACKENDS
#   KVS_APP_NS[j] KVS_APP_IPS[j] KVS_APP_MACS[j] (j = 1..M; j = 1 is KVS_NS_APP)  KVS_NS_ROUTER
#   KVS_VIP_HOST (the VIP as a URL host: [addr] for IPv6)  KVS_VIP_EP ([addr]:port or addr:port)
#   kvs_ep ADDR PORT prints ADDR:PORT, bracketing an IPv6 ADDR.
# Addresses live only inside the namespaces made here; nothing is sent from the root namespace.

kvs__die() { echo "topology: $*" >&2; return 1; }

kvs_ep() { if [[ "$1" == *:* ]]; then echo "[$1]:$2"; else echo "$1:$2"; fi; }

# kvs__addr6 NS IF ADDR: an IPv6 address usable at once (no duplicate address detection).
kvs__addr6() {
    ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=0" || return 1
    ip -n "$1" -6 addr add "$3/64" dev "$2" nodad
}

kvs__ns_list() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-(br|rt|app[0-9]*|cl[0-9]+|be[0-9]+)$" || true; }

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
kvs__link() {  # kvs__link NS1 IF1 NS2 IF2 [QUEUES]
    local -a q=()
    [[ -n "${5:-}" ]] && q=(numtxqueues "$5" numrxqueues "$5")
    ip link add name "$2" netns "$1" "${q[@]}" type veth peer name "$4" netns "$3" "${q[@]}" || return 1
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

    local napp=${KVS_N_APPLIANCES:-1} router=${KVS_ROUTER:-0} j ns_app ifp
    local fam=${KVS_FAMILY:-4} net6=${KVS_TOPO_NET6:-fd77}
    (( napp >= 1 && napp <= 4 )) || { kvs__die "appliances must be 1..4"; return 1; }
    (( napp > 1 )) && router=1
    [[ "$fam" == 4 || "$fam" == 6 ]] || { kvs__die "KVS_FAMILY must be 4 or 6"; return 1; }
    (( fam == 6 && router )) && { kvs__die "KVS_FAMILY=6 has no router topology"; return 1; }
    [[ "$KVS_VIP" == *:* ]] && KVS_VIP=${KVS_VIP4:-10.77.1.1}  # an earlier KVS_FAMILY=6 run's
    export KVS_VIP4=$KVS_VIP KVS_VIP6=${KVS_VIP6:-$net6:1::1}
    # Appliances: one-armed; each kernel owns its address (ARP, health checks), XDP owns the VIP
    # and that appliance's SNAT ports.
    KVS_APP_NS=(); KVS_APP_IPS=(); KVS_APP_MACS=()
    for ((j = 1; j <= napp; j++)); do
        ns_app="$prefix-app"; ifp=p-app
        (( j > 1 )) && { ns_app="$prefix-app$j"; ifp="p-app$j"; }
        ip netns add "$ns_app" || return 1
        ip -n "$ns_app" link set lo up
        kvs__link "$ns_app" app0 "$KVS_NS_BRIDGE" "$ifp" ${KVS_APP_QUEUES:-1} || return 1
        if [[ -n "${KVS_APP_MTU:-}" ]]; then
            ip -n "$ns_app" link set app0 mtu "$KVS_APP_MTU" && ip -n "$KVS_NS_BRIDGE" link set "$ifp" mtu "$KVS_APP_MTU" \
                || { kvs__die "cannot set MTU $KVS_APP_MTU"; return 1; }
        fi
        ip -n "$KVS_NS_BRIDGE" link set "$ifp" master br0
        ip -n "$ns_app" addr add "$net.$((1 + j))/24" dev app0
        if (( fam == 6 )); then kvs__addr6 "$ns_app" app0 "$net6::$((1 + j))" || return 1; fi
        kvs__no_offload "$ns_app" app0
        # The kernel's own ephemeral ports stay clear of the SNAT range the dataplane owns.
        ip netns exec "$ns_app" sysctl -qw net.ipv4.ip_local_port_range="40000 60999"
        if [[ -f "$pass_obj" ]]; then
            ip -n "$KVS_NS_BRIDGE" link set dev "$ifp" xdpdrv obj "$pass_obj" sec xdp \
                || { kvs__die "cannot attach $pass_obj to $ifp"; return 1; }
        else
            echo "topology: warning: $pass_obj missing; XDP_TX from the appliance will be lost" >&2
        fi
        # With an XDP program there, everything the appliance sends waits in the peer's NAPI
        # ring, frames from its AF_XDP socket too. In softirq mode that NAPI runs on whichever CPU
        # scheduled it first (most often the one receiving the appliance's XDP_TX), so a burst
        # the dataplane sends could wait 0.5-10 ms behind that CPU's load and arrive after
        # segments XDP forwarded later (dataplane/README.md, "Late AF_XDP transmits on veth").
        # A NAPI thread is scheduled like any task: closer to a NIC, which sends from its own ring.
        if ip netns exec "$KVS_NS_BRIDGE" sh -c "echo 1 > /sys/class/net/$ifp/threaded" 2>/dev/null; then
            local pid
            for pid in $(pgrep "^napi/$ifp-"); do chrt -f -p 50 "$pid" >/dev/null 2>&1; done
        else
            echo "topology: warning: no threaded NAPI on $ifp; AF_XDP transmits may leave late" >&2
        fi
        KVS_APP_NS[$j]=$ns_app; KVS_APP_IPS[$j]="$net.$((1 + j))"
        KVS_APP_MACS[$j]=$(ip netns exec "$ns_app" cat /sys/class/net/app0/address)
    done
    KVS_APP_MAC=${KVS_APP_MACS[1]}
    export KVS_APP_MAC KVS_APP_NS KVS_APP_IPS KVS_APP_MACS

    KVS_NS_ROUTER=""
    if (( router )); then
        KVS_NS_ROUTER="$prefix-rt"
        ip netns add "$KVS_NS_ROUTER" || return 1
        ip -n "$KVS_NS_ROUTER" link set lo up
        kvs__link "$KVS_NS_ROUTER" eth0 "$KVS_NS_BRIDGE" p-rt || return 1
        ip -n "$KVS_NS_BRIDGE" link set p-rt master br0
        ip -n "$KVS_NS_ROUTER" addr add "$net.254/24" dev eth0
        kvs__no_offload "$KVS_NS_ROUTER" eth0
        ip netns exec "$KVS_NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1 \
            net.ipv4.fib_multipath_hash_policy=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
        local hops=()
        for ((j = 1; j <= napp; j++)); do hops+=(nexthop via "${KVS_APP_IPS[$j]}" dev eth0 weight 1); done
        if (( napp > 1 )); then
            ip -n "$KVS_NS_ROUTER" route add "$KVS_VIP/32" "${hops[@]}" || return 1
        else
            ip -n "$KVS_NS_ROUTER" route add "$KVS_VIP/32" via "$KVS_APP_IP" || return 1
        fi
    fi
    export KVS_NS_ROUTER

    local i ns
    KVS_NS_CLIENTS=(); KVS_CLIENT_IP=()
    for ((i = 1; i <= ncl; i++)); do
        ns="$prefix-cl$i"
        ip netns add "$ns" || return 1
        ip -n "$ns" link set lo up
        # Ports the tests connect from by number (dp_client.py --source-port): never handed out
        # as ephemeral, so an earlier test's connection in TIME_WAIT cannot hold one (seen in CI).
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_reserved_ports=45120-45129 || return 1
        if [[ -n "$KVS_NS_ROUTER" ]]; then
            local cnet="${KVS_TOPO_CNET:-10.78}.$i"
            kvs__link "$ns" eth0 "$KVS_NS_ROUTER" "cl$i" || return 1
            ip -n "$ns" addr add "$cnet.2/24" dev eth0
            ip -n "$KVS_NS_ROUTER" addr add "$cnet.1/24" dev "cl$i"
            ip -n "$ns" route add "$KVS_VIP/32" via "$cnet.1"
            kvs__no_offload "$ns" eth0
            kvs__no_offload "$KVS_NS_ROUTER" "cl$i"
            KVS_NS_CLIENTS[$i]=$ns; KVS_CLIENT_IP[$i]="$cnet.2"
            continue
        fi
        kvs__link "$ns" eth0 "$KVS_NS_BRIDGE" "p-cl$i" || return 1
        ip -n "$KVS_NS_BRIDGE" link set "p-cl$i" master br0
        ip -n "$ns" addr add "$net.$((9 + i))/24" dev eth0
        ip -n "$ns" route add "$KVS_VIP/32" via "$KVS_APP_IP"
        kvs__no_offload "$ns" eth0
        KVS_NS_CLIENTS[$i]=$ns; KVS_CLIENT_IP[$i]="$net.$((9 + i))"
        if (( fam == 6 )); then
            kvs__addr6 "$ns" eth0 "$net6::$((9 + i))" || return 1
            ip -n "$ns" -6 route add "$KVS_VIP6/128" via "$net6::2" || return 1
        fi
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
        if (( fam == 6 )); then kvs__addr6 "$ns" eth0 "$net6::$((100 + i))" || return 1; fi
    done
    KVS_APP_IP4=$KVS_APP_IP
    if (( fam == 6 )); then
        # The IPv6 addresses are the ones the tests use (the index bases match the IPv4 arrays).
        KVS_VIP=$KVS_VIP6 KVS_APP_IP="$net6::2" KVS_APP_IPS[1]="$net6::2"
        for ((i = 1; i <= ncl; i++)); do KVS_CLIENT_IP[$i]="$net6::$((9 + i))"; done
        for ((i = 1; i <= nbe; i++)); do KVS_BE_IP[$i]="$net6::$((100 + i))"; done
    fi
    KVS_CLIENT_IP4=(); KVS_BE_IP4=()
    for ((i = 1; i <= ncl; i++)); do KVS_CLIENT_IP4[$i]="$net.$((9 + i))"; done
    for ((i = 1; i <= nbe; i++)); do KVS_BE_IP4[$i]="$net.$((100 + i))"; done
    KVS_VIP_HOST=$KVS_VIP; [[ "$KVS_VIP" == *:* ]] && KVS_VIP_HOST="[$KVS_VIP]"
    KVS_VIP_EP=$(kvs_ep "$KVS_VIP" "$KVS_VIP_PORT")
    export KVS_NS_CLIENTS KVS_CLIENT_IP KVS_BE_NS KVS_BE_IP KVS_BE_MAC KVS_VIP KVS_APP_IP KVS_APP_IPS
    export KVS_APP_IP4 KVS_CLIENT_IP4 KVS_BE_IP4 KVS_VIP_HOST KVS_VIP_EP
    return 0
}

# kvs_topo_pids PREFIX: pids still running inside the topology (for diagnostics).
kvs_topo_pids() { local ns; for ns in $(kvs__ns_list "$1"); do ip netns pids "$ns"; done; }
