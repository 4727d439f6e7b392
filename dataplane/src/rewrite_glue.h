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
// (the SYN's mbuf is reused). nullptr (and the mbuf freed) when no cookie key is configured.
rte_mbuf *build_cookie_synack(rte_mbuf *syn, const kvs_config &cfg, const kvs_pkt &pkt,
                              std::uint64_t tai_ns);

}  // namespace kvsteer::dp
