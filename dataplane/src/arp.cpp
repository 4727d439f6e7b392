#include "arp.h"

#include <cstdint>
#include <cstring>

#include <rte_mbuf.h>

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
}  // namespace

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
