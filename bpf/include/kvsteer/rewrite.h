/* Per-packet flow rewrite (full NAT + sequence/SACK/timestamp/window translation) with incremental
 * checksums. */
#ifndef KVSTEER_REWRITE_H
#define KVSTEER_REWRITE_H

#include "kvsteer/abi.h"
#include "kvsteer/csum.h"
#include "kvsteer/parse.h"

/* Window field translation: (win << shl) >> shr, saturated to 0xffff; a window that is open
 * stays open (at least 1: a small window rounded down to 0 sent the client into zero-window
 * probing while the receiver still had room). */
KVS_INLINE __u16 kvs_window_xlate(__u16 win_host, __u8 shl, __u8 shr) {
    __u64 w = ((__u64)win_host << (shl & 31)) >> (shr & 31);

    if (!w && win_host) return 1;
    return w > 0xffff ? (__u16)0xffff : (__u16)w;
}

/* Adds `delta` to the big-endian 32-bit field at p and accounts the change in `acc`; `odd`
 * when the field sits at an odd offset in the TCP header (options without NOP alignment). */
KVS_INLINE __u64 kvs_add32_be(__u8 *p, __u32 delta, __u64 acc, __u32 odd) {
    __u32 old_v = kvs_load32(p);
    __u32 new_v = kvs_htonl(kvs_ntohl(old_v) + delta);

    kvs_store32(p, new_v);
    return odd ? kvs_csum_diff32_odd(acc, old_v, new_v) : kvs_csum_diff32(acc, old_v, new_v);
}

/* Rewrites the TCP packet `pkt` (kvs_parse() returned OK on this very frame) as `f` says:
 * MACs, addresses, ports, seq += seq_delta, ack += ack_delta, each SACK edge += ack_delta,
 * TSval += tsval_delta, TSecr += tsecr_delta, window (win << win_shl) >> win_shr; IPv4 and TCP
 * checksums are updated incrementally. The frame keeps its length. Returns 0, or -1 when an
 * option recorded by the parser lies outside the frame (impossible after kvs_parse; the
 * checks are for the verifier). */
KVS_INLINE int kvs_flow_rewrite(void *data_end, struct kvs_pkt *pkt, const struct kvs_flow *f) {
    struct kvs_ethhdr *eth = pkt->eth;
    struct kvs_tcphdr *tcp = pkt->tcp;
    __u64 acc = 0; /* TCP checksum change, pseudo-header included */
    __u16 old16, new16;
    __u8 *p;
    __u32 off;
    int i;

    if (!eth || !tcp || (void *)(tcp + 1) > data_end || (void *)(eth + 1) > data_end) return -1;

    __builtin_memcpy(eth->dst, f->new_dmac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, f->new_smac, KVS_ETH_ALEN);

    if (pkt->ip4) {
        struct kvs_iphdr *ip = pkt->ip4;
        __u64 acc_ip = 0;

        if ((void *)(ip + 1) > data_end) return -1;
        acc_ip = kvs_csum_diff32(acc_ip, ip->saddr, f->new_saddr[0]);
        acc_ip = kvs_csum_diff32(acc_ip, ip->daddr, f->new_daddr[0]);
        ip->saddr = f->new_saddr[0];
        ip->daddr = f->new_daddr[0];
        ip->check = kvs_csum_apply(ip->check, acc_ip);
        acc = acc_ip; /* the pseudo-header carries the same addresses */
    } else if (pkt->ip6) {
        struct kvs_ipv6hdr *ip6 = pkt->ip6;

        if ((void *)(ip6 + 1) > data_end) return -1;
        for (i = 0; i < 4; i++) {
            acc = kvs_csum_diff32(acc, ip6->saddr[i], f->new_saddr[i]);
            acc = kvs_csum_diff32(acc, ip6->daddr[i], f->new_daddr[i]);
            ip6->saddr[i] = f->new_saddr[i];
            ip6->daddr[i] = f->new_daddr[i];
        }
    } else {
        return -1;
    }

    acc = kvs_csum_diff16(acc, tcp->source, f->new_sport);
    acc = kvs_csum_diff16(acc, tcp->dest, f->new_dport);
    tcp->source = f->new_sport;
    tcp->dest = f->new_dport;

    acc = kvs_add32_be((__u8 *)tcp + 4, f->seq_delta, acc, 0);
    acc = kvs_add32_be((__u8 *)tcp + 8, f->ack_delta, acc, 0);

    if (f->win_shl | f->win_shr) {
        old16 = tcp->window;
        new16 = kvs_htons(kvs_window_xlate(kvs_ntohs(old16), f->win_shl, f->win_shr));
        tcp->window = new16;
        acc = kvs_csum_diff16(acc, old16, new16);
    }

    off = pkt->opts.ts_off;
    if (off) {
        p = (__u8 *)tcp + (off & 63);
        if ((void *)(p + 8) > data_end) return -1;
        acc = kvs_add32_be(p, f->tsval_delta, acc, off & 1);
        acc = kvs_add32_be(p + 4, f->tsecr_delta, acc, off & 1);
    }

    off = pkt->opts.sack_off;
    if (off && f->ack_delta) {
        p = (__u8 *)tcp + (off & 63);
        for (i = 0; i < KVS_TCP_MAX_SACK; i++) {
            if (i >= pkt->opts.sack_n) break;
            if ((void *)(p + 8) > data_end) return -1;
            acc = kvs_add32_be(p, f->ack_delta, acc, off & 1);
            acc = kvs_add32_be(p + 4, f->ack_delta, acc, off & 1);
            p += 8;
        }
    }

    tcp->check = kvs_csum_apply(tcp->check, acc);
    return 0;
}

/* Key of the packet as it arrives (what kvs_flows is looked up with). */
KVS_INLINE void kvs_flow_key_of(const struct kvs_pkt *pkt, struct kvs_flow_key *k) {
    __builtin_memset(k, 0, sizeof(*k));
    if (pkt->ip4) {
        k->saddr[0] = pkt->ip4->saddr;
        k->daddr[0] = pkt->ip4->daddr;
        k->family = KVS_AF_INET;
    } else if (pkt->ip6) {
        kvs_copy_addr6(k->saddr, pkt->ip6->saddr);
        kvs_copy_addr6(k->daddr, pkt->ip6->daddr);
        k->family = KVS_AF_INET6;
    }
    k->sport = pkt->tcp->source;
    k->dport = pkt->tcp->dest;
    k->proto = KVS_IPPROTO_TCP;
}

/* Whether a key's source address is no unicast host's (a SYN from it is answered by neither XDP
 * nor the dataplane: Linux drops such martians before TCP sees them): IPv4 0/8, 127/8, 224/4 and
 * above (multicast, reserved, broadcast); IPv6 multicast, :: and ::1. */
KVS_INLINE int kvs_src_not_unicast(const struct kvs_flow_key *k) {
    __u32 a0 = kvs_ntohl(k->saddr[0]);

    if (k->family == KVS_AF_INET) return (a0 >> 24) == 0 || (a0 >> 24) == 127 || a0 >= 0xe0000000u;
    if ((a0 >> 24) == 0xff) return 1;
    return !a0 && !k->saddr[1] && !k->saddr[2] && kvs_ntohl(k->saddr[3]) <= 1;
}

/* Key of the opposite direction's entry: what a packet rewritten by `f` is answered with. `rk`
 * may be `k` (turned around in place, one key less on a BPF stack). */
KVS_INLINE void kvs_flow_reverse_key(const struct kvs_flow_key *k, const struct kvs_flow *f,
                                     struct kvs_flow_key *rk) {
    __u8 family = k->family, proto = k->proto;

    __builtin_memset(rk, 0, sizeof(*rk));
    __builtin_memcpy(rk->saddr, f->new_daddr, 16);
    __builtin_memcpy(rk->daddr, f->new_saddr, 16);
    rk->sport = f->new_dport;
    rk->dport = f->new_sport;
    rk->family = family;
    rk->proto = proto;
}

#endif /* KVSTEER_REWRITE_H */
