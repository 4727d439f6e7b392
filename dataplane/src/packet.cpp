#include "packet.h"

#include <cstring>

#include <rte_mbuf.h>

#include "kvsteer/csum.h"

namespace kvsteer::dp {

int parse_mbuf(rte_mbuf *m, kvs_pkt *pkt) {
    auto *data = rte_pktmbuf_mtod(m, std::uint8_t *);
    return kvs_parse(data, data + rte_pktmbuf_data_len(m), pkt);
}

void fix_checksums4(kvs_pkt *pkt) {
    auto *ip = pkt->ip4;
    ip->check = 0;
    ip->check = kvs_csum_finish(kvs_csum_partial(ip, (ip->ver_ihl & 0x0f) * 4u, 0));
    pkt->tcp->check = 0;
    std::uint64_t s = kvs_csum_pseudo4(ip->saddr, ip->daddr, KVS_IPPROTO_TCP, pkt->l4_len);
    pkt->tcp->check = kvs_csum_finish(kvs_csum_partial(pkt->tcp, pkt->l4_len, s));
}

rte_mbuf *build_tcp4(rte_mempool *pool, const TcpSpec &s) {
    std::uint8_t opt[40];
    unsigned ol = 0;
    if (s.mss) {
        opt[ol++] = KVS_TCPOPT_MSS;
        opt[ol++] = KVS_TCPOLEN_MSS;
        opt[ol++] = s.mss >> 8;
        opt[ol++] = s.mss & 0xff;
    }
    if (s.sack_perm && s.ts) {
        opt[ol++] = KVS_TCPOPT_SACK_PERM;
        opt[ol++] = KVS_TCPOLEN_SACK_PERM;
    } else if (s.ts) {
        opt[ol++] = KVS_TCPOPT_NOP;
        opt[ol++] = KVS_TCPOPT_NOP;
    } else if (s.sack_perm) {
        opt[ol++] = KVS_TCPOPT_NOP;
        opt[ol++] = KVS_TCPOPT_NOP;
        opt[ol++] = KVS_TCPOPT_SACK_PERM;
        opt[ol++] = KVS_TCPOLEN_SACK_PERM;
    }
    if (s.ts) {
        opt[ol++] = KVS_TCPOPT_TS;
        opt[ol++] = KVS_TCPOLEN_TS;
        kvs_store32(opt + ol, kvs_htonl(s.tsval));
        ol += 4;
        kvs_store32(opt + ol, kvs_htonl(s.tsecr));
        ol += 4;
    }
    if (s.wscale != KVS_WSCALE_NONE) {
        opt[ol++] = KVS_TCPOPT_NOP;
        opt[ol++] = KVS_TCPOPT_WS;
        opt[ol++] = KVS_TCPOLEN_WS;
        opt[ol++] = s.wscale;
    }
    while (ol & 3) opt[ol++] = KVS_TCPOPT_NOP;

    rte_mbuf *m = rte_pktmbuf_alloc(pool);
    if (!m) return nullptr;
    const unsigned l4 = sizeof(kvs_tcphdr) + ol;
    const unsigned len = sizeof(kvs_ethhdr) + sizeof(kvs_iphdr) + l4;
    auto *p = reinterpret_cast<std::uint8_t *>(rte_pktmbuf_append(m, len));
    if (!p) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    auto *eth = reinterpret_cast<kvs_ethhdr *>(p);
    std::memcpy(eth->dst, s.dmac, 6);
    std::memcpy(eth->src, s.smac, 6);
    eth->proto = kvs_htons(KVS_ETH_P_IP);
    auto *ip = reinterpret_cast<kvs_iphdr *>(eth + 1);
    ip->ver_ihl = 0x45;
    ip->tos = 0;
    ip->tot_len = kvs_htons(static_cast<std::uint16_t>(sizeof(kvs_iphdr) + l4));
    ip->id = 0;
    ip->frag_off = kvs_htons(0x4000);  // DF
    ip->ttl = 64;
    ip->protocol = KVS_IPPROTO_TCP;
    ip->saddr = s.saddr;
    ip->daddr = s.daddr;
    auto *tcp = reinterpret_cast<kvs_tcphdr *>(ip + 1);
    tcp->source = s.sport;
    tcp->dest = s.dport;
    tcp->seq = kvs_htonl(s.seq);
    tcp->ack_seq = kvs_htonl(s.ack);
    tcp->doff_res = static_cast<std::uint8_t>((l4 / 4) << 4);
    tcp->flags = s.flags;
    tcp->window = kvs_htons(s.window);
    tcp->urg_ptr = 0;
    std::memcpy(tcp + 1, opt, ol);
    kvs_pkt pkt{};
    pkt.ip4 = ip;
    pkt.tcp = tcp;
    pkt.l4_len = static_cast<std::uint16_t>(l4);
    fix_checksums4(&pkt);
    return m;
}

}  // namespace kvsteer::dp
