/* Bounds-checked cursor parsing of Ethernet (+1 VLAN tag), IPv4/IPv6 and TCP with its options. */
#ifndef KVSTEER_PARSE_H
#define KVSTEER_PARSE_H

#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

/* Outcome of kvs_parse(). Every failure has a name; the caller maps it to a counted reason
 * with kvs_parse_reason(). */
enum kvs_parse_status {
    KVS_PARSE_OK = 0,
    KVS_PARSE_NOT_IP,     /* ethertype is neither IPv4 nor IPv6 (ARP, LLDP, ...) */
    KVS_PARSE_NOT_TCP,    /* IP but not TCP; pkt->l4proto says what */
    KVS_PARSE_IPV6_EXT,   /* IPv6 with an extension header: not handled in the fast path */
    KVS_PARSE_FRAGMENT,   /* IPv4 fragment */
    KVS_PARSE_TRUNCATED,  /* a header or its options run past the end of the frame */
    KVS_PARSE_BAD_IP,     /* IP version/IHL/total length inconsistent */
    KVS_PARSE_BAD_DOFF,   /* TCP data offset < 5 or beyond the IP payload */
    KVS_PARSE_BAD_OPTION, /* TCP option space over 40 bytes (odd options are ignored, not bad) */
};

#define KVS_WSCALE_NONE 0xff

/* In BPF the general option walk is left to the caller (kvs_parse sets opts_pending), which
 * runs kvs_parse_tcp_opts in a separately verified global function: inlined, the verifier
 * would re-walk the whole program for every option layout. */
#if defined(__bpf__) && !defined(KVS_PARSE_INLINE_OPTS)
#define KVS_PARSE_DEFER_OPTS 1
#endif

/* TCP options the appliance reads or rewrites. Offsets are from the start of the TCP header
 * (always >= 20 when set; 0 means absent) so the rewrite can find the fields again. */
struct kvs_tcp_opts {
    __u16 mss;      /* 0 = absent */
    __u8 wscale;    /* KVS_WSCALE_NONE = absent */
    __u8 sack_perm; /* 1 = SACK-permitted present */
    __u8 sack_n;    /* SACK blocks present, 0..4 */
    __u8 sack_off;  /* offset of the first SACK block's left edge */
    __u8 ts_off;    /* offset of TSval (TSecr follows) */
    /* 1: options Linux's tcp_parse_options also leaves unread: a known kind of the wrong length
     * (skipped by its length), or a length below 2 or past the option space (the walk stops
     * there). The segment is otherwise valid (XDP counts tcp_options_ignored). */
    __u8 ignored;
    __u32 tsval; /* host order; valid when ts_off != 0 */
    __u32 tsecr;
};

struct kvs_pkt {
    struct kvs_ethhdr *eth;
    struct kvs_iphdr *ip4;   /* set for IPv4, else NULL */
    struct kvs_ipv6hdr *ip6; /* set for IPv6, else NULL */
    struct kvs_tcphdr *tcp;  /* set when status is OK */
    __u16 l3_off;            /* 14 or 18 (one VLAN tag) */
    __u16 l4_off;
    __u16 l4_len;      /* TCP header + payload, from the IP length (not the frame) */
    __u16 payload_len; /* TCP payload bytes */
    __u8 family;       /* 4 or 6 */
    __u8 l4proto;
    __u8 tcp_hlen;     /* doff * 4 */
    __u8 vlan;         /* 1 if one 802.1Q/802.1ad tag precedes IP */
    __u8 opts_pending; /* BPF only: options not walked yet (see KVS_PARSE_DEFER_OPTS) */
    __u8 pad[3];
    __u32 frame_len; /* data_end - data */
    struct kvs_tcp_opts opts;
};

KVS_INLINE unsigned kvs_parse_reason(int status, __u8 l4proto) {
    switch (status) {
        case KVS_PARSE_NOT_IP:
            return KVS_R_PASS_NOT_IP;
        case KVS_PARSE_NOT_TCP:
            return (l4proto == KVS_IPPROTO_ICMP || l4proto == KVS_IPPROTO_ICMPV6)
                       ? KVS_R_PASS_ICMP
                       : KVS_R_PASS_NOT_TCP;
        case KVS_PARSE_IPV6_EXT:
            return KVS_R_PASS_IPV6_EXT;
        case KVS_PARSE_FRAGMENT:
            return KVS_R_PASS_FRAGMENT;
        case KVS_PARSE_TRUNCATED:
            return KVS_R_DROP_TRUNCATED;
        default:
            return KVS_R_DROP_MALFORMED;
    }
}

#define KVS_OPT_MORE (-1)

/* One step of the option walk: parses the option at *offp (options span [opt, opt + optlen),
 * optlen <= 40, bounds re-checked against data_end) and advances *offp. Returns KVS_OPT_MORE
 * to continue, else the final status. Split out so BPF can drive it with an open-coded
 * iterator (verified by convergence) and userspace with a plain loop. */
KVS_INLINE int kvs_tcp_opt_step(const __u8 *opt, const void *data_end, __u32 optlen, __u32 *offp,
                                struct kvs_tcp_opts *o) {
    __u32 off = *offp;
    const __u8 *p;
    __u32 len;
    __u8 kind;

    if (off >= optlen || off >= KVS_TCP_MAX_OPTLEN) return KVS_PARSE_OK;
    p = opt + off;
    if ((const void *)(p + 1) > data_end) return KVS_PARSE_TRUNCATED;
    kind = p[0];
    if (kind == KVS_TCPOPT_EOL) return KVS_PARSE_OK;
    if (kind == KVS_TCPOPT_NOP) {
        *offp = off + 1;
        return KVS_OPT_MORE;
    }
    /* As Linux's tcp_parse_options: no room for a length, a length below 2 or past the option
     * space ends the walk (what was read stands); a known kind of the wrong length is skipped.
     * The endpoint then reads the same options we rewrite (before, such a segment was dropped
     * as malformed, where Linux accepts it). */
    if (off + 2 > optlen) {
        o->ignored = 1;
        return KVS_PARSE_OK;
    }
    if ((const void *)(p + 2) > data_end) return KVS_PARSE_TRUNCATED;
    len = p[1];
    if (len < 2 || off + len > optlen) {
        o->ignored = 1;
        return KVS_PARSE_OK;
    }
    switch (kind) {
        case KVS_TCPOPT_MSS:
            if (len != KVS_TCPOLEN_MSS) goto ignored;
            if ((const void *)(p + KVS_TCPOLEN_MSS) > data_end) return KVS_PARSE_TRUNCATED;
            o->mss = kvs_ntohs(kvs_load16(p + 2));
            break;
        case KVS_TCPOPT_WS:
            if (len != KVS_TCPOLEN_WS) goto ignored;
            if ((const void *)(p + KVS_TCPOLEN_WS) > data_end) return KVS_PARSE_TRUNCATED;
            o->wscale = p[2];
            break;
        case KVS_TCPOPT_SACK_PERM:
            if (len != KVS_TCPOLEN_SACK_PERM) goto ignored;
            o->sack_perm = 1;
            break;
        case KVS_TCPOPT_SACK:
            if (len < 10 || len > 34 || ((len - 2) & 7) != 0) goto ignored;
            o->sack_n = (__u8)((len - 2) >> 3);
            o->sack_off = (__u8)(sizeof(struct kvs_tcphdr) + off + 2);
            break;
        case KVS_TCPOPT_TS:
            if (len != KVS_TCPOLEN_TS) goto ignored;
            if ((const void *)(p + KVS_TCPOLEN_TS) > data_end) return KVS_PARSE_TRUNCATED;
            o->tsval = kvs_ntohl(kvs_load32(p + 2));
            o->tsecr = kvs_ntohl(kvs_load32(p + 6));
            o->ts_off = (__u8)(sizeof(struct kvs_tcphdr) + off + 2);
            break;
        default:
            break; /* unknown kinds are skipped by their length */
    }
    *offp = off + len;
    return KVS_OPT_MORE;
ignored:
    o->ignored = 1;
    *offp = off + len;
    return KVS_OPT_MORE;
}

/* Walks all options (userspace; BPF uses kvs_tcp_opt_step under an iterator). The loop is
 * bounded by the option space: each step consumes at least one byte. */
KVS_INLINE int kvs_parse_tcp_opts(const __u8 *opt, const void *data_end, __u32 optlen,
                                  struct kvs_tcp_opts *o) {
    __u32 off = 0;
    int i, r;

    for (i = 0; i < KVS_TCP_MAX_OPTLEN; i++) {
        r = kvs_tcp_opt_step(opt, data_end, optlen, &off, o);
        if (r != KVS_OPT_MORE) return r;
    }
    return KVS_PARSE_OK;
}

/* Parses one frame. On OK every header pointer in `pkt` is bounds-checked, the TCP header and
 * all of its options lie inside the frame, and `pkt->opts` is filled. */
KVS_INLINE int kvs_parse(void *data, void *data_end, struct kvs_pkt *pkt) {
    __u8 *cur = (__u8 *)data;
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)cur;
    struct kvs_tcphdr *tcp;
    __u16 proto;
    __u32 l4_len, hlen, optlen;

    __builtin_memset(pkt, 0, sizeof(*pkt));
    pkt->opts.wscale = KVS_WSCALE_NONE;
    pkt->frame_len = (__u32)((__u8 *)data_end - (__u8 *)data);

    if ((void *)(eth + 1) > data_end) return KVS_PARSE_TRUNCATED;
    pkt->eth = eth;
    cur = (__u8 *)(eth + 1);
    proto = eth->proto;
    if (proto == kvs_htons(KVS_ETH_P_8021Q) || proto == kvs_htons(KVS_ETH_P_8021AD)) {
        struct kvs_vlanhdr *vh = (struct kvs_vlanhdr *)cur;

        if ((void *)(vh + 1) > data_end) return KVS_PARSE_TRUNCATED;
        proto = vh->proto;
        cur = (__u8 *)(vh + 1);
        pkt->vlan = 1;
    }
    pkt->l3_off = (__u16)(cur - (__u8 *)data);

    if (proto == kvs_htons(KVS_ETH_P_IP)) {
        struct kvs_iphdr *ip = (struct kvs_iphdr *)cur;
        __u32 ihl, tot;

        if ((void *)(ip + 1) > data_end) return KVS_PARSE_TRUNCATED;
        ihl = (__u32)(ip->ver_ihl & 0x0f) * 4;
        if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip)) return KVS_PARSE_BAD_IP;
        tot = kvs_ntohs(ip->tot_len);
        if (tot < ihl) return KVS_PARSE_BAD_IP;
        if ((void *)(cur + tot) > data_end) return KVS_PARSE_TRUNCATED;
        pkt->ip4 = ip;
        pkt->family = 4;
        pkt->l4proto = ip->protocol;
        if (ip->frag_off & kvs_htons(KVS_IP_MF | KVS_IP_OFFMASK)) return KVS_PARSE_FRAGMENT;
        if (ip->protocol != KVS_IPPROTO_TCP) return KVS_PARSE_NOT_TCP;
        cur += ihl;
        l4_len = tot - ihl;
    } else if (proto == kvs_htons(KVS_ETH_P_IPV6)) {
        struct kvs_ipv6hdr *ip6 = (struct kvs_ipv6hdr *)cur;
        __u32 plen;

        if ((void *)(ip6 + 1) > data_end) return KVS_PARSE_TRUNCATED;
        if ((kvs_ntohl(ip6->ver_tc_flow) >> 28) != 6) return KVS_PARSE_BAD_IP;
        plen = kvs_ntohs(ip6->payload_len);
        cur = (__u8 *)(ip6 + 1);
        if ((void *)(cur + plen) > data_end) return KVS_PARSE_TRUNCATED;
        pkt->ip6 = ip6;
        pkt->family = 6;
        pkt->l4proto = ip6->nexthdr;
        if (ip6->nexthdr != KVS_IPPROTO_TCP) {
            /* Extension headers (hop-by-hop, routing, fragment, ESP, AH, destination options,
             * mobility, HIP, shim6) are left to the kernel; anything else is simply not TCP. */
            switch (ip6->nexthdr) {
                case 0:
                case 43:
                case 44:
                case 50:
                case 51:
                case 60:
                case 135:
                case 139:
                case 140:
                    return KVS_PARSE_IPV6_EXT;
                default:
                    return KVS_PARSE_NOT_TCP;
            }
        }
        l4_len = plen;
    } else {
        return KVS_PARSE_NOT_IP;
    }

    pkt->l4_off = (__u16)(cur - (__u8 *)data);
    tcp = (struct kvs_tcphdr *)cur;
    if ((void *)(tcp + 1) > data_end) return KVS_PARSE_TRUNCATED;
    hlen = (__u32)(tcp->doff_res >> 4) * 4;
    if (hlen < sizeof(*tcp) || hlen > l4_len) return KVS_PARSE_BAD_DOFF;
    if ((void *)(cur + hlen) > data_end) return KVS_PARSE_TRUNCATED;
    pkt->tcp = tcp;
    pkt->tcp_hlen = (__u8)hlen;
    pkt->l4_len = (__u16)l4_len;
    pkt->payload_len = (__u16)(l4_len - hlen);
    optlen = hlen - sizeof(*tcp);
    if (optlen == 0) return KVS_PARSE_OK;
    /* Fast path: the layouts established Linux/BSD segments use: [NOP NOP TS] followed by
     * nothing or [NOP NOP SACK(n)]. Anything else takes the general walk. */
    {
        const __u8 *o = (const __u8 *)(tcp + 1);
        __u32 rest = optlen, at = 0;

        if ((const void *)(o + optlen) > data_end || (const void *)(o + 4) > data_end)
            return KVS_PARSE_TRUNCATED;
        if (optlen >= 12 && o[0] == KVS_TCPOPT_NOP && o[1] == KVS_TCPOPT_NOP &&
            o[2] == KVS_TCPOPT_TS && o[3] == KVS_TCPOLEN_TS) {
            if ((const void *)(o + 12) > data_end) return KVS_PARSE_TRUNCATED;
            pkt->opts.tsval = kvs_ntohl(kvs_load32(o + 4));
            pkt->opts.tsecr = kvs_ntohl(kvs_load32(o + 8));
            pkt->opts.ts_off = (__u8)(sizeof(*tcp) + 4);
            if (optlen == 12) return KVS_PARSE_OK;
            rest = optlen - 12;
            at = 12;
        }
        if (rest >= 12 && ((rest - 4) & 7) == 0) {
            const __u8 *q = o + (at & 12);

            if ((const void *)(q + 4) > data_end) return KVS_PARSE_TRUNCATED;
            if (q[0] == KVS_TCPOPT_NOP && q[1] == KVS_TCPOPT_NOP && q[2] == KVS_TCPOPT_SACK &&
                q[3] == rest - 2) {
                pkt->opts.sack_n = (__u8)((rest - 4) >> 3);
                pkt->opts.sack_off = (__u8)(sizeof(*tcp) + (at & 12) + 4);
                return KVS_PARSE_OK;
            }
        }
        /* Not a fast layout: the general walk starts over. */
        pkt->opts.ts_off = 0;
        pkt->opts.tsval = 0;
        pkt->opts.tsecr = 0;
    }
#ifdef KVS_PARSE_DEFER_OPTS
    pkt->opts_pending = 1;
    return KVS_PARSE_OK;
#else
    return kvs_parse_tcp_opts((const __u8 *)(tcp + 1), data_end, optlen, &pkt->opts);
#endif
}

#endif /* KVSTEER_PARSE_H */
