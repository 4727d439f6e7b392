#include "packet.h"

#include <cstring>

#include <rte_mbuf.h>

#include "kvsteer/csum.h"

namespace kvsteer::dp {

int parse_mbuf(rte_mbuf *m, kvs_pkt *pkt) {
    auto *data = rte_pktmbuf_mtod(m, std::uint8_t *);
    return kvs_parse(data, data + rte_pktmbuf_data_len(m), pkt);
}

void fix_checksums(kvs_pkt *pkt) {
    std::uint64_t s;
    if (auto *ip = pkt->ip4) {
        ip->check = 0;
        ip->check = kvs_csum_finish(kvs_csum_partial(ip, (ip->ver_ihl & 0x0f) * 4u, 0));
        s = kvs_csum_pseudo4(ip->saddr, ip->daddr, KVS_IPPROTO_TCP, pkt->l4_len);
    } else {
        std::uint32_t sa[4], da[4];  // the header is packed: aligned copies
        std::memcpy(sa, pkt->ip6->saddr, 16);
        std::memcpy(da, pkt->ip6->daddr, 16);
        s = kvs_csum_pseudo6(sa, da, KVS_IPPROTO_TCP, pkt->l4_len);
    }
    pkt->tcp->check = 0;
    pkt->tcp->check = kvs_csum_finish(kvs_csum_partial(pkt->tcp, pkt->l4_len, s));
}

rte_mbuf *build_tcp(rte_mempool *pool, const TcpSpec &s) {
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
    const bool v6 = s.family == KVS_AF_INET6;
    const unsigned l3 = v6 ? sizeof(kvs_ipv6hdr) : sizeof(kvs_iphdr);
    const unsigned len = sizeof(kvs_ethhdr) + l3 + l4;
    auto *p = reinterpret_cast<std::uint8_t *>(rte_pktmbuf_append(m, len));
    if (!p) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    auto *eth = reinterpret_cast<kvs_ethhdr *>(p);
    std::memcpy(eth->dst, s.dmac, 6);
    std::memcpy(eth->src, s.smac, 6);
    kvs_pkt pkt{};
    if (v6) {
        eth->proto = kvs_htons(KVS_ETH_P_IPV6);
        auto *ip6 = reinterpret_cast<kvs_ipv6hdr *>(eth + 1);
        ip6->ver_tc_flow = kvs_htonl(0x60000000u);
        ip6->payload_len = kvs_htons(static_cast<std::uint16_t>(l4));
        ip6->nexthdr = KVS_IPPROTO_TCP;
        ip6->hop_limit = 64;
        std::memcpy(ip6->saddr, s.saddr, 16);
        std::memcpy(ip6->daddr, s.daddr, 16);
        pkt.ip6 = ip6;
    } else {
        eth->proto = kvs_htons(KVS_ETH_P_IP);
        auto *ip = reinterpret_cast<kvs_iphdr *>(eth + 1);
        ip->ver_ihl = 0x45;
        ip->tos = 0;
        ip->tot_len = kvs_htons(static_cast<std::uint16_t>(sizeof(kvs_iphdr) + l4));
        ip->id = 0;
        ip->frag_off = kvs_htons(0x4000);  // DF
        ip->ttl = 64;
        ip->protocol = KVS_IPPROTO_TCP;
        ip->saddr = s.saddr[0];
        ip->daddr = s.daddr[0];
        pkt.ip4 = ip;
    }
    auto *tcp = reinterpret_cast<kvs_tcphdr *>(p + sizeof(kvs_ethhdr) + l3);
    tcp->source = s.sport;
    tcp->dest = s.dport;
    tcp->seq = kvs_htonl(s.seq);
    tcp->ack_seq = kvs_htonl(s.ack);
    tcp->doff_res = static_cast<std::uint8_t>((l4 / 4) << 4);
    tcp->flags = s.flags;
    tcp->window = kvs_htons(s.window);
    tcp->urg_ptr = 0;
    std::memcpy(tcp + 1, opt, ol);
    pkt.tcp = tcp;
    pkt.l4_len = static_cast<std::uint16_t>(l4);
    fix_checksums(&pkt);
    return m;
}

}  // namespace kvsteer::dp
