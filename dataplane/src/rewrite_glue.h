// The shared C codecs (bpf/include/kvsteer/{rewrite,synack,cookie}.h) applied to mbufs.
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"

struct rte_mbuf;
struct rte_mempool;

namespace kvsteer::dp {

// The XDP program's own rewrite (kvs_flow_rewrite), so both paths give the same bytes.
void rewrite_packet(kvs_pkt *pkt, void *data_end, const kvs_flow &f);

// dpdk mode: turns the SYN in `syn` (parsed into pkt) into our SYN-cookie SYN-ACK, in place
// (the SYN's mbuf is reused; the parse refused a chained one: a packet runs past its first
// segment). nullptr, the mbuf freed and `*why` the reason, when no cookie key is configured
// (KVS_R_DROP_NO_CONFIG) or the SYN-ACK does not fit the buffer (KVS_R_DROP_SYNACK_NO_ROOM).
rte_mbuf *build_cookie_synack(rte_mbuf *syn, const kvs_config &cfg, const kvs_pkt &pkt,
                              std::uint64_t tai_ns, unsigned *why);

}  // namespace kvsteer::dp
