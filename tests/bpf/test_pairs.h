// The bound connections the BPF tests install (one IPv4, one IPv6) as kvs_flowpair_params, the
// MACs of the hosts around the appliance, its configuration and the client's segment.
#pragma once

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>

#include "kvsteer/flowpair.h"
#include "pktgen.h"

namespace kvstest {

inline constexpr std::uint8_t kApplMac[6] = {0x02, 0xaa, 0, 0, 0, 0x01};
inline constexpr std::uint8_t kClientMac[6] = {0x02, 0xcc, 0, 0, 0, 0x02};
inline constexpr std::uint8_t kBackendMac[6] = {0x02, 0xbb, 0, 0, 0, 0x07};

// What both connections share: ports client 40001 -> VIP 80, SNAT 20001 -> backend 8000;
// timestamps on both legs; the client's WS 7, ours 8; the three MACs.
inline kvs_flowpair_params pair_common(std::uint8_t family, std::uint8_t backend_ws) {
    kvs_flowpair_params p{};
    p.client_port = htons(40001);
    p.vip_port = htons(80);
    p.snat_port = htons(20001);
    p.backend_port = htons(8000);
    p.family = family;
    p.client_wscale = 7;
    p.synack_wscale = 8;
    p.backend_wscale = backend_ws;
    p.ts = 1;
    std::memcpy(p.appliance_mac, kApplMac, 6);
    std::memcpy(p.client_mac, kClientMac, 6);
    std::memcpy(p.backend_mac, kBackendMac, 6);
    return p;
}

// Client 10.1.0.2 -> VIP 10.9.0.1, SNAT 10.2.0.1 -> backend 10.2.0.7; our ISN 0x80001234, the
// backend's 0x7000aaaa; backend 3.
inline kvs_flowpair_params pair4_params(std::uint8_t backend_ws = 10) {
    kvs_flowpair_params p = pair_common(KVS_AF_INET, backend_ws);
    p.client_addr[0] = ip4("10.1.0.2");
    p.vip_addr[0] = ip4("10.9.0.1");
    p.snat_addr[0] = ip4("10.2.0.1");
    p.backend_addr[0] = ip4("10.2.0.7");
    p.cookie = 0x80001234;
    p.backend_isn = 0x7000aaaa;
    p.synack_tsval = 100000;
    p.backend_tsval = 5;
    p.backend_id = 3;
    return p;
}

// Client fd00::2 -> VIP fd00::9, SNAT fd02::1 -> backend fd02::7; our ISN 0x11112222, the
// backend's 0x99990000; backend 4.
inline kvs_flowpair_params pair6_params() {
    kvs_flowpair_params p = pair_common(KVS_AF_INET6, 7);
    ip6("fd00::2", p.client_addr);
    ip6("fd00::9", p.vip_addr);
    ip6("fd02::1", p.snat_addr);
    ip6("fd02::7", p.backend_addr);
    p.cookie = 0x11112222;
    p.backend_isn = 0x99990000;
    p.synack_tsval = 70;
    p.backend_tsval = 1234567;
    p.backend_id = 4;
    return p;
}

// The appliance the XDP program tests configure: VIPs 10.9.0.1:80 and [fd00::9]:80, SNAT
// 10.2.0.1 and (dual stack) fd02::1 ports 20000..29999, a cookie key, SYN timestamps.
inline kvs_config prog_config() {
    kvs_config c{};
    c.n_vips = 2;
    c.vips[0].addr[0] = ip4("10.9.0.1");
    c.vips[0].port = htons(80);
    c.vips[0].family = KVS_AF_INET;
    ip6("fd00::9", c.vips[1].addr);
    c.vips[1].port = htons(80);
    c.vips[1].family = KVS_AF_INET6;
    c.snat_addr[0] = ip4("10.2.0.1");
    c.snat_family = KVS_AF_INET;
    // Dual stack: the IPv6 backend leg leaves from (and comes back to) snat2_addr.
    ip6("fd02::1", c.snat2_addr);
    c.snat2_family = KVS_AF_INET6;
    c.snat_port_lo = 20000;
    c.snat_port_hi = 29999;
    std::memcpy(c.appliance_mac, kApplMac, 6);
    c.cookie_key[0][0] = 0x0123456789abcdefull;
    c.cookie_key[0][1] = 0x1122334455667788ull;
    c.cookie_period_s = 64;
    c.flags = KVS_CFG_SYN_TIMESTAMPS;
    c.syn_mss = 1400;
    c.syn_wscale = 8;
    return c;
}

// The client's segment to the VIP: 10.1.0.2:40001 -> 10.9.0.1:80, or [fd00::2]:40001 ->
// [fd00::9]:80, from the client's MAC to the appliance's.
inline TcpSpec client_segment(bool v6) {
    TcpSpec s;
    std::memcpy(s.smac, kClientMac, 6);
    std::memcpy(s.dmac, kApplMac, 6);
    s.v6 = v6;
    if (v6) {
        ip6("fd00::2", s.saddr);
        ip6("fd00::9", s.daddr);
    } else {
        s.saddr[0] = ip4("10.1.0.2");
        s.daddr[0] = ip4("10.9.0.1");
    }
    s.sport = 40001;
    s.dport = 80;
    return s;
}

}  // namespace kvstest
