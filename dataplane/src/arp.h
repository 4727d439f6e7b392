// ARP for the addresses the appliance owns, when the dataplane owns the port (dpdk mode).
#pragma once

#include "kvsteer/abi.h"

struct rte_mbuf;

namespace kvsteer::dp {

enum class ArpVerdict { Answered, NotArp, NotOurs };

// Turns an ARP request for the SNAT address or a VIP into its reply in place (Answered: send
// `m`); otherwise leaves it for the caller to count and free.
ArpVerdict answer_arp(rte_mbuf *m, const kvs_config &c);

}  // namespace kvsteer::dp
