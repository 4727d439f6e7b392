// Neighbour resolution for the addresses the appliance owns (its SNAT addresses and VIPs), when
// the dataplane owns the port (dpdk mode): ARP for IPv4, neighbour discovery for IPv6.
#pragma once

#include "kvsteer/abi.h"

struct rte_mbuf;

namespace kvsteer::dp {

enum class ArpVerdict { Answered, NotArp, NotOurs };

// Turns an ARP request for the SNAT address or a VIP into its reply in place (Answered: send
// `m`); otherwise leaves it for the caller to count and free.
ArpVerdict answer_arp(rte_mbuf *m, const kvs_config &c);

// The same for IPv6 (RFC 4861): a Neighbor Solicitation for one of our IPv6 addresses becomes
// the solicited Neighbor Advertisement (our MAC as target link-layer address) in place
// (Answered: send `m`). NotArp: not a Neighbor Solicitation (or malformed: hop limit not 255,
// too short); NotOurs: for another address, or duplicate address detection (source ::).
ArpVerdict answer_nd(rte_mbuf *m, const kvs_config &c);

}  // namespace kvsteer::dp
