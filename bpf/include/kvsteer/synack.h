/* SYN-ACK builder: answers a parsed SYN in the same buffer with our cookie as ISN and the options
 * the client offered. */
#ifndef KVSTEER_SYNACK_H
#define KVSTEER_SYNACK_H

#include "kvsteer/abi.h"
#include "kvsteer/cookie.h"
#include "kvsteer/csum.h"
#include "kvsteer/parse.h"

#define KVS_SYNACK_DEFAULT_MSS 1460
#define KVS_SYNACK_DEFAULT_WINDOW 64240
#define KVS_SYNACK_TTL 64
#define KVS_SYNACK_MAX_OPTLEN 24

/* Everything the SYN-ACK needs, taken from the SYN before the buffer is resized. Option
 * layout (Linux's): MSS, then SACK-perm+TS | NOP NOP TS | NOP NOP SACK-perm, then NOP WS. */
struct kvs_synack {
    __u32 saddr[4];     /* ours = the SYN's destination (the VIP), network order */
    __u32 daddr[4];     /* the client */
    __u16 sport, dport; /* network order */
    __u32 client_isn;   /* host order */
    __u32 cookie;       /* our ISN, host order: filled by the caller (kvs_cookie_sign) */
    __u32 tsval;        /* our TSval, host order: filled by the caller (kvs_cookie_sign) */
    __u32 tsecr;        /* the client's TSval */
    __u16 mss;          /* advertised */
    __u16 window;       /* raw window field */
    __u8 wscale;        /* advertised shift, KVS_WSCALE_NONE = no WS option */
    __u8 sack_perm;
    __u8 ts; /* 1 = TS option */
    __u8 family;
    __u8 smac[6], dmac[6];
    __u16 l3_off;
    __u16 optlen;     /* TCP option bytes, multiple of 4 */
    __u32 frame_len;  /* whole frame, bytes */
    __u8 cookie_data; /* option byte to pack into the cookie (kvs_cookie_pack_opts) */
};

/* Fills `sa` for the SYN in `pkt`. Our MSS/window come from cfg (0 = defaults above), the
 * window scale is cfg->syn_wscale as is; WS and SACK-perm are offered only when the client
 * offered them, TS only when the client sent TS and cfg allows. */
KVS_INLINE void kvs_synack_plan(const struct kvs_pkt *pkt, const struct kvs_config *cfg,
                                struct kvs_synack *sa) {
    const struct kvs_tcp_opts *o = &pkt->opts;
    __u32 iplen;

    __builtin_memset(sa, 0, sizeof(*sa));
    if (pkt->ip4) {
        sa->saddr[0] = pkt->ip4->daddr;
        sa->daddr[0] = pkt->ip4->saddr;
        sa->family = 4;
        iplen = sizeof(struct kvs_iphdr);
    } else if (pkt->ip6) {
        kvs_copy_addr6(sa->saddr, pkt->ip6->daddr);
        kvs_copy_addr6(sa->daddr, pkt->ip6->saddr);
        sa->family = 6;
        iplen = sizeof(struct kvs_ipv6hdr);
    } else {
        return; /* not IP: frame_len stays 0 and kvs_synack_write refuses */
    }
    sa->sport = pkt->tcp->dest;
    sa->dport = pkt->tcp->source;
    sa->client_isn = kvs_ntohl(pkt->tcp->seq);
    __builtin_memcpy(sa->smac, pkt->eth->dst, KVS_ETH_ALEN);
    __builtin_memcpy(sa->dmac, pkt->eth->src, KVS_ETH_ALEN);
    sa->mss = cfg->syn_mss ? cfg->syn_mss : KVS_SYNACK_DEFAULT_MSS;
    sa->window = cfg->syn_window ? cfg->syn_window : KVS_SYNACK_DEFAULT_WINDOW;
    sa->wscale = o->wscale == KVS_WSCALE_NONE ? KVS_WSCALE_NONE
                                              : (cfg->syn_wscale > 14 ? 14 : cfg->syn_wscale);
    sa->sack_perm = o->sack_perm;
    sa->ts = (o->ts_off && (cfg->flags & KVS_CFG_SYN_TIMESTAMPS)) ? 1 : 0;
    sa->tsecr = o->tsval;
    sa->optlen = 4 + ((sa->ts || sa->sack_perm) ? (sa->ts ? 12 : 4) : 0) +
                 (sa->wscale != KVS_WSCALE_NONE ? 4 : 0);
    sa->l3_off = pkt->l3_off;
    sa->frame_len = pkt->l3_off + iplen + sizeof(struct kvs_tcphdr) + sa->optlen;
    sa->cookie_data = kvs_cookie_pack_opts(o->mss ? o->mss : 536, o->wscale, o->sack_perm);
}

/* Writes the SYN-ACK described by `sa` into the frame [data, data_end), which must already be
 * exactly sa->frame_len bytes and start with the SYN's L2 header. Returns 0, or -1 if the
 * frame has the wrong size. */
KVS_INLINE int kvs_synack_write(void *data, void *data_end, const struct kvs_synack *sa) {
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)data;
    struct kvs_tcphdr *th;
    __u8 *l3, *opt;
    __u32 tcplen = sizeof(struct kvs_tcphdr) + sa->optlen;
    __u32 n = 4, i;
    __u64 sum;

    if (!sa->frame_len || (__u8 *)data + sa->frame_len != (__u8 *)data_end ||
        (void *)(eth + 1) > data_end)
        return -1;
    __builtin_memcpy(eth->dst, sa->dmac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, sa->smac, KVS_ETH_ALEN);

    l3 = (__u8 *)data + (sa->l3_off & 0x1f);
    if (sa->family == 4) {
        struct kvs_iphdr *ip = (struct kvs_iphdr *)l3;

        if ((void *)(ip + 1) > data_end) return -1;
        ip->ver_ihl = 0x45;
        ip->tos = 0;
        ip->tot_len = kvs_htons((__u16)(sizeof(*ip) + tcplen));
        ip->id = 0;
        ip->frag_off = kvs_htons(0x4000); /* DF */
        ip->ttl = KVS_SYNACK_TTL;
        ip->protocol = KVS_IPPROTO_TCP;
        ip->check = 0;
        ip->saddr = sa->saddr[0];
        ip->daddr = sa->daddr[0];
        ip->check = kvs_csum_finish(kvs_csum_partial(ip, sizeof(*ip), 0));
        sum = kvs_csum_pseudo4(sa->saddr[0], sa->daddr[0], KVS_IPPROTO_TCP, tcplen);
        th = (struct kvs_tcphdr *)(ip + 1);
    } else {
        struct kvs_ipv6hdr *ip6 = (struct kvs_ipv6hdr *)l3;

        if ((void *)(ip6 + 1) > data_end) return -1;
        ip6->ver_tc_flow = kvs_htonl(0x60000000u);
        ip6->payload_len = kvs_htons((__u16)tcplen);
        ip6->nexthdr = KVS_IPPROTO_TCP;
        ip6->hop_limit = KVS_SYNACK_TTL;
        kvs_copy_addr6(ip6->saddr, sa->saddr);
        kvs_copy_addr6(ip6->daddr, sa->daddr);
        sum = kvs_csum_pseudo6(sa->saddr, sa->daddr, KVS_IPPROTO_TCP, tcplen);
        th = (struct kvs_tcphdr *)(ip6 + 1);
    }
    /* The frame ends exactly after the options (checked above); re-checked for the verifier. */
    opt = (__u8 *)(th + 1);
    if ((void *)(opt + 4) > data_end) return -1;
    th->source = sa->sport;
    th->dest = sa->dport;
    th->seq = kvs_htonl(sa->cookie);
    th->ack_seq = kvs_htonl(sa->client_isn + 1);
    th->doff_res = (__u8)((tcplen / 4) << 4);
    th->flags = KVS_TCP_SYN | KVS_TCP_ACK;
    th->window = kvs_htons(sa->window);
    th->check = 0;
    th->urg_ptr = 0;
    opt[0] = KVS_TCPOPT_MSS;
    opt[1] = KVS_TCPOLEN_MSS;
    opt[2] = (__u8)(sa->mss >> 8);
    opt[3] = (__u8)sa->mss;
    if (sa->ts) {
        if ((void *)(opt + 16) > data_end) return -1;
        if (sa->sack_perm) {
            opt[4] = KVS_TCPOPT_SACK_PERM;
            opt[5] = KVS_TCPOLEN_SACK_PERM;
        } else {
            opt[4] = KVS_TCPOPT_NOP;
            opt[5] = KVS_TCPOPT_NOP;
        }
        opt[6] = KVS_TCPOPT_TS;
        opt[7] = KVS_TCPOLEN_TS;
        kvs_store32(opt + 8, kvs_htonl(sa->tsval));
        kvs_store32(opt + 12, kvs_htonl(sa->tsecr));
        n = 16;
    } else if (sa->sack_perm) {
        if ((void *)(opt + 8) > data_end) return -1;
        opt[4] = KVS_TCPOPT_NOP;
        opt[5] = KVS_TCPOPT_NOP;
        opt[6] = KVS_TCPOPT_SACK_PERM;
        opt[7] = KVS_TCPOLEN_SACK_PERM;
        n = 8;
    }
    if (sa->wscale != KVS_WSCALE_NONE) {
        __u8 *w = opt + (n & 0x1c);

        if ((void *)(w + 4) > data_end) return -1;
        w[0] = KVS_TCPOPT_NOP;
        w[1] = KVS_TCPOPT_WS;
        w[2] = KVS_TCPOLEN_WS;
        w[3] = sa->wscale;
    }
    /* TCP checksum over the header just written, 4 bytes at a time (fixed bound for BPF). */
    for (i = 0; i < (sizeof(struct kvs_tcphdr) + KVS_SYNACK_MAX_OPTLEN) / 4; i++) {
        __u8 *q = (__u8 *)th + i * 4;

        if (i * 4 >= tcplen) break;
        if ((void *)(q + 4) > data_end) return -1;
        sum += kvs_load32(q);
    }
    th->check = kvs_csum_finish(sum);
    return 0;
}

#endif /* KVSTEER_SYNACK_H */
