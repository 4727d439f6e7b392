#include "arp.h"

#include <cstdint>
#include <cstring>

#include <rte_mbuf.h>

#include "kvsteer/csum.h"
#include "kvsteer/parse.h"

namespace kvsteer::dp {

namespace {
struct Arp {
    std::uint16_t htype, ptype;
    std::uint8_t hlen, plen;
    std::uint16_t op;
    std::uint8_t sha[6];
    std::uint32_t spa;
    std::uint8_t tha[6];
    std::uint32_t tpa;
} __attribute__((packed));
// ICMPv6 Neighbor Solicitation / Advertisement with one link-layer address option.
struct Nd {
    std::uint8_t type, code;
    std::uint16_t check;
    std::uint32_t flags;  // NA: router, solicited, override (top 3 bits); NS: reserved
    std::uint32_t target[4];
    std::uint8_t opt_type, opt_len;  // 1: source (NS), 2: target (NA) link-layer address
    std::uint8_t mac[6];
} __attribute__((packed));

constexpr std::uint8_t kNeighborSolicit = 135, kNeighborAdvert = 136;

bool ours6(const kvs_config &c, const std::uint32_t *a) {
    if (const std::uint32_t *s = kvs_snat_addr(&c, KVS_AF_INET6); s && !std::memcmp(s, a, 16))
        return true;
    for (std::uint32_t i = 0; i < c.n_vips && i < KVS_MAX_VIPS; ++i)
        if (c.vips[i].family == KVS_AF_INET6 && !std::memcmp(c.vips[i].addr, a, 16)) return true;
    return false;
}
}  // namespace

ArpVerdict answer_nd(rte_mbuf *m, const kvs_config &c) {
    auto *eth = rte_pktmbuf_mtod(m, kvs_ethhdr *);
    const std::uint32_t have = rte_pktmbuf_data_len(m);
    constexpr std::uint32_t kMin = sizeof(kvs_ethhdr) + sizeof(kvs_ipv6hdr) + 24;  // to target
    if (eth->proto != kvs_htons(KVS_ETH_P_IPV6) || have < kMin) return ArpVerdict::NotArp;
    auto *ip6 = reinterpret_cast<kvs_ipv6hdr *>(eth + 1);
    auto *nd = reinterpret_cast<Nd *>(ip6 + 1);
    if (ip6->nexthdr != KVS_IPPROTO_ICMPV6 || nd->type != kNeighborSolicit || nd->code != 0 ||
        ip6->hop_limit != 255 || kvs_ntohs(ip6->payload_len) < 24)
        return ArpVerdict::NotArp;
    static constexpr std::uint32_t kUnspecified[4] = {};
    std::uint32_t target[4];
    std::memcpy(target, nd->target, 16);
    if (!ours6(c, target) || !std::memcmp(ip6->saddr, kUnspecified, 16)) return ArpVerdict::NotOurs;
    // The advertisement, from the target address to the soliciting node (RFC 4861 7.2.4).
    constexpr std::uint32_t kLen = sizeof(kvs_ethhdr) + sizeof(kvs_ipv6hdr) + sizeof(Nd);
    if (have > kLen)
        rte_pktmbuf_trim(m, static_cast<std::uint16_t>(have - kLen));
    else if (have < kLen && !rte_pktmbuf_append(m, static_cast<std::uint16_t>(kLen - have)))
        return ArpVerdict::NotOurs;
    std::memcpy(ip6->daddr, ip6->saddr, 16);
    std::memcpy(ip6->saddr, nd->target, 16);
    ip6->payload_len = kvs_htons(sizeof(Nd));
    ip6->hop_limit = 255;
    nd->type = kNeighborAdvert;
    nd->flags = kvs_htonl(0x60000000u);  // solicited, override
    nd->opt_type = 2;
    nd->opt_len = 1;
    std::memcpy(nd->mac, c.appliance_mac, 6);
    std::uint32_t sa[4], da[4];  // the headers are packed: aligned copies
    std::memcpy(sa, ip6->saddr, 16);
    std::memcpy(da, ip6->daddr, 16);
    nd->check = 0;
    nd->check = kvs_csum_finish(
        kvs_csum_partial(nd, sizeof(Nd), kvs_csum_pseudo6(sa, da, KVS_IPPROTO_ICMPV6, sizeof(Nd))));
    std::memcpy(eth->dst, eth->src, 6);
    std::memcpy(eth->src, c.appliance_mac, 6);
    return ArpVerdict::Answered;
}

ArpVerdict answer_arp(rte_mbuf *m, const kvs_config &c) {
    auto *eth = rte_pktmbuf_mtod(m, kvs_ethhdr *);
    if (eth->proto != kvs_htons(0x0806) ||
        rte_pktmbuf_data_len(m) < sizeof(kvs_ethhdr) + sizeof(Arp))
        return ArpVerdict::NotArp;
    auto *a = reinterpret_cast<Arp *>(eth + 1);
    bool ours = a->tpa == c.snat_addr[0];
    for (std::uint32_t i = 0; i < c.n_vips && i < KVS_MAX_VIPS; ++i)
        ours |= c.vips[i].addr[0] == a->tpa;
    if (a->op != kvs_htons(1) || !ours) return ArpVerdict::NotOurs;
    a->op = kvs_htons(2);
    std::memcpy(a->tha, a->sha, 6);
    const std::uint32_t spa = a->spa;
    a->spa = a->tpa;
    a->tpa = spa;
    std::memcpy(a->sha, c.appliance_mac, 6);
    std::memcpy(eth->dst, eth->src, 6);
    std::memcpy(eth->src, c.appliance_mac, 6);
    return ArpVerdict::Answered;
}

}  // namespace kvsteer::dp
