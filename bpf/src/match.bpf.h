/* What every kvsteer BPF program asks of a packet's key: is it for a VIP, for the SNAT range;
 * and the per-reason counter. Needs config_map.bpf.h. */
#ifndef KVSTEER_MATCH_BPF_H
#define KVSTEER_MATCH_BPF_H

#include "config_map.bpf.h"

static __always_inline void kvs_count(__u32 reason) {
    __u64 *v = bpf_map_lookup_elem(&kvs_stats, &reason);

    if (v) *v += 1;
}

/* Whether the key's destination is a configured VIP / the SNAT range. Global functions: the
 * verifier checks the loops once instead of once per caller state. */
__attribute__((noinline)) int kvs_xdp_is_vip(const struct kvs_flow_key *k) {
    __u32 zero = 0, i, n;
    struct kvs_config *cfg = bpf_map_lookup_elem(&kvs_config, &zero);

    if (!cfg || !k) return 0;
    n = cfg->n_vips;
    for (i = 0; i < KVS_MAX_VIPS; i++) {
        const struct kvs_vip *v = &cfg->vips[i];

        if (i >= n) break;
        if (v->port == k->dport && v->family == k->family && v->addr[0] == k->daddr[0] &&
            v->addr[1] == k->daddr[1] && v->addr[2] == k->daddr[2] && v->addr[3] == k->daddr[3])
            return 1;
    }
    return 0;
}

__attribute__((noinline)) int kvs_xdp_is_snat(const struct kvs_flow_key *k) {
    __u32 zero = 0;
    struct kvs_config *cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    __u16 port;

    if (!cfg || !k) return 0;
    port = bpf_ntohs(k->dport);
    if (port < cfg->snat_port_lo || port > cfg->snat_port_hi) return 0;
    /* Either SNAT address (dual stack: one per family). */
    return (cfg->snat_family == k->family && cfg->snat_addr[0] == k->daddr[0] &&
            cfg->snat_addr[1] == k->daddr[1] && cfg->snat_addr[2] == k->daddr[2] &&
            cfg->snat_addr[3] == k->daddr[3]) ||
           (cfg->snat2_family == k->family && cfg->snat2_addr[0] == k->daddr[0] &&
            cfg->snat2_addr[1] == k->daddr[1] && cfg->snat2_addr[2] == k->daddr[2] &&
            cfg->snat2_addr[3] == k->daddr[3]);
}

#endif /* KVSTEER_MATCH_BPF_H */
