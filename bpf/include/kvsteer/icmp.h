/* ICMP and ICMPv6 errors about a bound flow's packets: recognised and rewritten for the other leg.
 *
 * A router on one leg that cannot deliver a packet the appliance sent answers the appliance: a
 * backend-side router's "fragmentation needed" (ICMPv4 3/4) or "Packet Too Big" (ICMPv6 2)
 * about a client segment we forwarded SNAT -> backend reaches us, not the client, whose path
 * MTU discovery then stalls. So these errors are sent on to the host that sent the packet
 * before we rewrote it, looking as if they were about the packet it sent.
 *
 * Which errors: ICMPv4 destination unreachable (3, every code) and time exceeded (11) quoting
 * IPv4; ICMPv6 destination unreachable (1), Packet Too Big (2) and time exceeded (3) quoting
 * IPv6; the quoted packet TCP (IPv4: not a non-first fragment; IPv6: TCP right after the fixed
 * header), quoted with at least its IP header and 8 TCP bytes (ports and seq, all RFC 792
 * guarantees), all inside the outer IP length. Anything else is not ours to rewrite.
 *
 * The mapping. The quote Q is a packet as the appliance SENT it: entry R rewrote some packet P
 * into Q. R's key (P's tuple) cannot be found from Q; but the opposite entry F, whose key is a
 * packet answering Q, can: kvs_icmp_flow_key() is Q's tuple reversed. F's rewrite goes the
 * other way (towards P's sender), and R is kvs_flow_reverse_key() of F. With F and R:
 *   backend leg: Q = SNAT:sp -> BE:bp; F = the S2C entry {BE:bp -> SNAT:sp} -> VIP:vp -> C:cp;
 *     R = the C2S entry {C:cp -> VIP:vp}. Out: outer VIP -> C, quote C:cp -> VIP:vp.
 *   client leg: Q = VIP:vp -> C:cp; F = the C2S entry {C:cp -> VIP:vp} -> SNAT:sp -> BE:bp;
 *     R = the S2C entry. Out: outer SNAT -> BE, quote BE:bp -> SNAT:sp.
 * That is, with F's new_* fields:
 *   outer   src = F.new_saddr, dst = F.new_daddr; MACs F.new_smac/new_dmac; egress as F's.
 *   quote   src = F.new_daddr, dst = F.new_saddr, sport = F.new_dport, dport = F.new_sport
 *           (P's tuple, R's key); seq -= R.seq_delta (R added it to P's seq), so the seq lies
 *           in the space of P's sender, which checks it against its send window.
 * Checksums are updated incrementally: the outer IPv4 header; the quoted IPv4 header; the ICMP
 * checksum over every changed quoted byte (ICMPv6's also over its pseudo-header, the outer
 * addresses). Bytes past the quote's first 8 TCP bytes (ack, flags, window, the TCP checksum,
 * options, payload) stay as sent: not every error quotes them, and neither Linux nor the BSDs
 * read them (tcp_v4_err/tcp_v6_err find the socket by the quoted addresses and ports and check
 * only the seq). The quoted TCP checksum therefore no longer matches; nothing checks it.
 *
 * Outer source: our address on the receiver's leg (the VIP towards a client, the SNAT address
 * towards a backend), not the router's. The router sits on the other leg's network, often
 * private or unroutable from the receiver, and reverse-path filters (rp_filter, uRPF, cloud
 * anti-spoofing) drop a packet whose source the receiving side cannot route back through us;
 * it would also expose the other leg's topology that the full NAT hides for data. TCP stacks
 * match the error by the quote alone, never by the outer source. The cost: a time exceeded
 * seen by a traceroute names the VIP as the hop. TTL / hop limit stay as the router set them.
 *
 * The MTU of "fragmentation needed" / Packet Too Big is forwarded unchanged. It is the MTU of
 * the leg the error came from; segments cross the appliance with their size unchanged (same
 * family, same IP and TCP headers), so a sender that lowers its path MTU to that value sends
 * segments that fit the other leg exactly. Nothing is ever fragmented or resized here. A
 * client's error below KVS_ICMP_RELAY_MTU_FLOOR is not relayed (below).
 *
 * A forged error must match a live flow's 4-tuple, SNAT port included, and its seq must fall
 * inside the receiver's send window (checked by the receiver's TCP, which sees the translated
 * seq): the same bar as an error sent to that host directly. */
#ifndef KVSTEER_ICMP_H
#define KVSTEER_ICMP_H

#include "kvsteer/abi.h"
#include "kvsteer/csum.h"
#include "kvsteer/parse.h"
#include "kvsteer/rewrite.h"

#define KVS_ICMP_DEST_UNREACH 3
#define KVS_ICMP_FRAG_NEEDED 4 /* code of KVS_ICMP_DEST_UNREACH; MTU in the low 16 bits of rest */
#define KVS_ICMP_TIME_EXCEEDED 11
#define KVS_ICMPV6_DEST_UNREACH 1
#define KVS_ICMPV6_PKT_TOOBIG 2 /* MTU in rest */
#define KVS_ICMPV6_TIME_EXCEED 3
#define KVS_ICMP_QUOTE_L4 8 /* quoted TCP bytes an error must carry: ports and seq */

/* Makes the sum so far a value at this point: clang would otherwise load all 32 IPv6 address
 * words before adding any, and the spills overflow the BPF stack of the caller chain. */
#if defined(__bpf__)
#define KVS_ICMP_SEQ(v) __asm__ volatile("" : "+r"(v))
#else
#define KVS_ICMP_SEQ(v) ((void)0)
#endif

/* Outcome of kvs_icmp_parse(). */
enum kvs_icmp_status {
    KVS_ICMP_OK = 0,
    KVS_ICMP_NOT_ERROR, /* not ICMP of the outer family, or a type other than the errors above */
    KVS_ICMP_NOT_TCP,   /* the quote is not TCP (or a non-first IPv4 fragment, or IPv6 with an
                           extension header before TCP) */
    KVS_ICMP_BAD_QUOTE, /* message shorter than its header, the quoted IP header and 8 TCP bytes,
                           or the quote is not an IP header of the outer family */
};

/* An error's parts in the frame; every pointer bounds-checked by kvs_icmp_parse(). */
struct kvs_icmp_err {
    struct kvs_icmphdr *icmp; /* outer ICMP / ICMPv6 header */
    struct kvs_iphdr *ip4;    /* quoted IPv4 header, else NULL */
    struct kvs_ipv6hdr *ip6;  /* quoted IPv6 header, else NULL */
    __u8 *tcp;                /* quoted TCP header: its first KVS_ICMP_QUOTE_L4 bytes */
    __u32 icmp_len;           /* ICMP message bytes (header + quote), from the outer IP length */
};

/* A path-MTU error ("fragmentation needed", Packet Too Big) below this is not relayed from a
 * client to its backend (counted drop_icmp_mtu_below_floor): the backend keeps a path MTU per
 * destination, and the destination is the SNAT address every client shares, so one client's
 * error with MTU 68 made the backend send small segments to all of them for ten minutes. 1280 is
 * IPv6's minimum link MTU; an IPv4 path narrower than that is rare enough to leave to the client's
 * MSS. Errors from the backend's side go to their one client unchanged. */
#define KVS_ICMP_RELAY_MTU_FLOOR 1280u

/* Whether `icmp` is a path-MTU error ("fragmentation needed", Packet Too Big). */
KVS_INLINE int kvs_icmp_is_pmtu(const struct kvs_icmphdr *icmp, int v6) {
    if (v6) return icmp->type == KVS_ICMPV6_PKT_TOOBIG;
    return icmp->type == KVS_ICMP_DEST_UNREACH && icmp->code == KVS_ICMP_FRAG_NEEDED;
}

/* The MTU a path-MTU error reports (0 is a value: an IPv4 "fragmentation needed" with its MTU
 * field 0, which Linux applies as its minimum, 552). Only for kvs_icmp_is_pmtu's errors. */
KVS_INLINE __u32 kvs_icmp_pmtu(const struct kvs_icmphdr *icmp, int v6) {
    return v6 ? kvs_ntohl(icmp->rest) : kvs_ntohl(icmp->rest) & 0xffff;
}

/* Whether an error from a client's side is a path-MTU error below KVS_ICMP_RELAY_MTU_FLOOR (0
 * included), not to be relayed to its backend (XDP and the dataplane's dpdk mode). */
KVS_INLINE int kvs_icmp_below_relay_floor(const struct kvs_icmphdr *icmp, int v6) {
    return kvs_icmp_is_pmtu(icmp, v6) && kvs_icmp_pmtu(icmp, v6) < KVS_ICMP_RELAY_MTU_FLOOR;
}

/* Whether `type` of the outer protocol is an error handled here. */
KVS_INLINE int kvs_icmp_is_error(__u8 l4proto, __u8 type) {
    if (l4proto == KVS_IPPROTO_ICMP)
        return type == KVS_ICMP_DEST_UNREACH || type == KVS_ICMP_TIME_EXCEEDED;
    if (l4proto == KVS_IPPROTO_ICMPV6)
        return type == KVS_ICMPV6_DEST_UNREACH || type == KVS_ICMPV6_PKT_TOOBIG ||
               type == KVS_ICMPV6_TIME_EXCEED;
    return 0;
}

/* Finds the error's parts. `pkt` is what kvs_parse() filled for this frame when it returned
 * KVS_PARSE_NOT_TCP (so the outer IP length lies inside the frame). */
KVS_INLINE int kvs_icmp_parse(void *data_end, const struct kvs_pkt *pkt, struct kvs_icmp_err *e) {
    struct kvs_icmphdr *icmp;
    __u32 len, ihl;
    __u8 *l4;

    __builtin_memset(e, 0, sizeof(*e));
    if (pkt->ip4 && pkt->l4proto == KVS_IPPROTO_ICMP) {
        struct kvs_iphdr *ip = pkt->ip4;

        if ((void *)(ip + 1) > data_end) return KVS_ICMP_BAD_QUOTE;
        ihl = (__u32)(ip->ver_ihl & 0x0f) * 4;
        len = kvs_ntohs(ip->tot_len);
        if (ihl < sizeof(*ip) || len < ihl) return KVS_ICMP_BAD_QUOTE;
        len -= ihl;
        l4 = (__u8 *)ip + ihl;
    } else if (pkt->ip6 && pkt->l4proto == KVS_IPPROTO_ICMPV6) {
        struct kvs_ipv6hdr *ip6 = pkt->ip6;

        if ((void *)(ip6 + 1) > data_end) return KVS_ICMP_BAD_QUOTE;
        len = kvs_ntohs(ip6->payload_len);
        l4 = (__u8 *)(ip6 + 1);
    } else {
        return KVS_ICMP_NOT_ERROR;
    }
    icmp = (struct kvs_icmphdr *)l4;
    if ((void *)(icmp + 1) > data_end || len < sizeof(*icmp)) return KVS_ICMP_BAD_QUOTE;
    if (!kvs_icmp_is_error(pkt->l4proto, icmp->type)) return KVS_ICMP_NOT_ERROR;
    e->icmp = icmp;
    e->icmp_len = len;
    len -= sizeof(*icmp); /* quoted bytes */

    if (pkt->ip4) {
        struct kvs_iphdr *in = (struct kvs_iphdr *)(icmp + 1);

        if ((void *)(in + 1) > data_end || len < sizeof(*in)) return KVS_ICMP_BAD_QUOTE;
        ihl = (__u32)(in->ver_ihl & 0x0f) * 4;
        if ((in->ver_ihl >> 4) != 4 || ihl < sizeof(*in)) return KVS_ICMP_BAD_QUOTE;
        if (in->protocol != KVS_IPPROTO_TCP || (in->frag_off & kvs_htons(KVS_IP_OFFMASK)))
            return KVS_ICMP_NOT_TCP;
        l4 = (__u8 *)in + ihl;
        if ((void *)(l4 + KVS_ICMP_QUOTE_L4) > data_end || len < ihl + KVS_ICMP_QUOTE_L4)
            return KVS_ICMP_BAD_QUOTE;
        e->ip4 = in;
    } else {
        struct kvs_ipv6hdr *in6 = (struct kvs_ipv6hdr *)(icmp + 1);

        if ((void *)(in6 + 1) > data_end || len < sizeof(*in6)) return KVS_ICMP_BAD_QUOTE;
        if ((kvs_ntohl(in6->ver_tc_flow) >> 28) != 6) return KVS_ICMP_BAD_QUOTE;
        if (in6->nexthdr != KVS_IPPROTO_TCP) return KVS_ICMP_NOT_TCP;
        l4 = (__u8 *)(in6 + 1);
        if ((void *)(l4 + KVS_ICMP_QUOTE_L4) > data_end || len < sizeof(*in6) + KVS_ICMP_QUOTE_L4)
            return KVS_ICMP_BAD_QUOTE;
        e->ip6 = in6;
    }
    e->tcp = l4;
    return KVS_ICMP_OK;
}

/* Key of the entry that answers the quoted packet (its tuple reversed; F in the header
 * comment). Returns -1 when the error is not addressed to the quoted packet's source: then it
 * is not about a packet the appliance sent from there. */
KVS_INLINE int kvs_icmp_flow_key(void *data_end, const struct kvs_pkt *pkt,
                                 const struct kvs_icmp_err *e, struct kvs_flow_key *k) {
    __u8 *tcp = e->tcp;

    __builtin_memset(k, 0, sizeof(*k));
    if (!tcp || (void *)(tcp + KVS_ICMP_QUOTE_L4) > data_end) return -1;
    if (pkt->ip4 && e->ip4) {
        if ((void *)(pkt->ip4 + 1) > data_end || (void *)(e->ip4 + 1) > data_end) return -1;
        if (pkt->ip4->daddr != e->ip4->saddr) return -1;
        k->saddr[0] = e->ip4->daddr;
        k->daddr[0] = e->ip4->saddr;
        k->family = KVS_AF_INET;
    } else if (pkt->ip6 && e->ip6) {
        int i;

        if ((void *)(pkt->ip6 + 1) > data_end || (void *)(e->ip6 + 1) > data_end) return -1;
        for (i = 0; i < 4; i++)
            if (pkt->ip6->daddr[i] != e->ip6->saddr[i]) return -1;
        __builtin_memcpy(k->saddr, e->ip6->daddr, 16);
        __builtin_memcpy(k->daddr, e->ip6->saddr, 16);
        k->family = KVS_AF_INET6;
    } else {
        return -1;
    }
    k->sport = kvs_load16(tcp + 2);
    k->dport = kvs_load16(tcp);
    k->proto = KVS_IPPROTO_TCP;
    return 0;
}

/* Rewrites the error for the receiver on F's side (see the header comment): `f` is the entry
 * found with kvs_icmp_flow_key(), `seq_delta` that of its reverse entry R. The frame keeps its
 * length. Returns 0, or -1 when a part lies outside the frame (impossible after
 * kvs_icmp_parse(); the checks are for the verifier). */
KVS_INLINE int kvs_icmp_rewrite(void *data_end, struct kvs_pkt *pkt, const struct kvs_icmp_err *e,
                                const struct kvs_flow *f, __u32 seq_delta) {
    struct kvs_ethhdr *eth = pkt->eth;
    struct kvs_icmphdr *icmp = e->icmp;
    __u8 *tcp = e->tcp;
    __u64 acc = 0; /* ICMP checksum change (ICMPv6: pseudo-header included) */
    __u16 v16;
    int i;

    if (!eth || !icmp || !tcp || (void *)(eth + 1) > data_end || (void *)(icmp + 1) > data_end ||
        (void *)(tcp + KVS_ICMP_QUOTE_L4) > data_end)
        return -1;

    __builtin_memcpy(eth->dst, f->new_dmac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, f->new_smac, KVS_ETH_ALEN);

    if (pkt->ip4 && e->ip4) {
        struct kvs_iphdr *ip = pkt->ip4, *in = e->ip4;
        __u64 acc_ip = 0, acc_in = 0;
        __u16 check;

        if ((void *)(ip + 1) > data_end || (void *)(in + 1) > data_end) return -1;
        acc_ip = kvs_csum_diff32(acc_ip, ip->saddr, f->new_saddr[0]);
        acc_ip = kvs_csum_diff32(acc_ip, ip->daddr, f->new_daddr[0]);
        ip->saddr = f->new_saddr[0];
        ip->daddr = f->new_daddr[0];
        ip->check = kvs_csum_apply(ip->check, acc_ip);

        acc_in = kvs_csum_diff32(acc_in, in->saddr, f->new_daddr[0]);
        acc_in = kvs_csum_diff32(acc_in, in->daddr, f->new_saddr[0]);
        in->saddr = f->new_daddr[0];
        in->daddr = f->new_saddr[0];
        check = kvs_csum_apply(in->check, acc_in);
        acc = kvs_csum_diff16(acc_in, in->check, check);
        in->check = check;
    } else if (pkt->ip6 && e->ip6) {
        struct kvs_ipv6hdr *ip6 = pkt->ip6, *in6 = e->ip6;

        if ((void *)(ip6 + 1) > data_end || (void *)(in6 + 1) > data_end) return -1;
        for (i = 0; i < 4; i++) {
            acc = kvs_csum_diff32(acc, ip6->saddr[i], f->new_saddr[i]);
            acc = kvs_csum_diff32(acc, ip6->daddr[i], f->new_daddr[i]);
            ip6->saddr[i] = f->new_saddr[i];
            ip6->daddr[i] = f->new_daddr[i];
            acc = kvs_csum_diff32(acc, in6->saddr[i], f->new_daddr[i]);
            acc = kvs_csum_diff32(acc, in6->daddr[i], f->new_saddr[i]);
            in6->saddr[i] = f->new_daddr[i];
            in6->daddr[i] = f->new_saddr[i];
            KVS_ICMP_SEQ(acc);
        }
    } else {
        return -1;
    }

    /* The quoted TCP header starts at an even offset of the ICMP message (8 + IHL or 8 + 40). */
    v16 = kvs_load16(tcp);
    acc = kvs_csum_diff16(acc, v16, f->new_dport);
    kvs_store16(tcp, f->new_dport);
    v16 = kvs_load16(tcp + 2);
    acc = kvs_csum_diff16(acc, v16, f->new_sport);
    kvs_store16(tcp + 2, f->new_sport);
    acc = kvs_add32_be(tcp + 4, 0u - seq_delta, acc, 0);

    icmp->check = kvs_csum_apply(icmp->check, acc);
    return 0;
}

#endif /* KVSTEER_ICMP_H */
