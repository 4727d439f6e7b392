// Building the few TCP segments the dataplane originates (SYN and ACK to a backend, RST).
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"

struct rte_mbuf;
struct rte_mempool;

namespace kvsteer::dp {

// Addresses and ports in network order, seq/ack/window in host order. Addresses are 16 bytes
// (kvs_flow_key's layout: an IPv4 address in [0]) of `family`.
struct TcpSpec {
    const std::uint8_t *smac, *dmac;
    const std::uint32_t *saddr, *daddr;
    std::uint8_t family = KVS_AF_INET;  // enum kvs_family
    std::uint16_t sport, dport;
    std::uint32_t seq, ack;
    std::uint8_t flags;    // KVS_TCP_*
    std::uint16_t window;  // raw field value
    // Options (emitted in Linux's SYN order: MSS, SACK-perm+TS or NOPs, WS).
    std::uint16_t mss = 0;  // 0 = none
    std::uint8_t wscale = KVS_WSCALE_NONE;
    bool sack_perm = false;
    bool ts = false;
    std::uint32_t tsval = 0, tsecr = 0;
};

// An IPv4/TCP or IPv6/TCP frame with correct checksums, or nullptr when the pool is empty.
rte_mbuf *build_tcp(rte_mempool *pool, const TcpSpec &s);

// Parses an mbuf's (single-segment) frame. Returns kvs_parse's status.
int parse_mbuf(rte_mbuf *m, kvs_pkt *pkt);

// Recomputes the IPv4 header checksum (IPv4) and the full TCP checksum of a parsed frame.
void fix_checksums(kvs_pkt *pkt);

}  // namespace kvsteer::dp
