/* XDP verdict logic: classify each packet, answer SYNs, forward known flows, punt first flights. */
#ifndef KVSTEER_STEER_BPF_H
#define KVSTEER_STEER_BPF_H

#include "kvsteer/abi.h"
#include "kvsteer/cookie.h"
#include "kvsteer/parse.h"
#include "kvsteer/reasons.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synack.h"
#include "maps.bpf.h"

/* kvs_flow.state shares an aligned 32-bit word with win_shl/win_shr/dir; BPF atomics work on
 * words only, so state bits are or-ed into that word at the state byte's position. */
#define KVS_FLOW_STATE_WORD(f) ((__u32 *)&(f)->win_shl)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVS_FLOW_STATE_SHIFT 24
#else
#define KVS_FLOW_STATE_SHIFT 0
#endif

static __always_inline void kvs_count(__u32 reason)
{
    __u64 *v = bpf_map_lookup_elem(&kvs_stats, &reason);

    if (v)
        *v += 1;
}

static __always_inline int kvs_verdict(__u32 reason, int action)
{
    kvs_count(reason);
    return action;
}

static __always_inline int kvs_is_vip(const struct kvs_config *cfg, const struct kvs_pkt *pkt)
{
    __u32 n = cfg->n_vips;
    __u32 i;

    for (i = 0; i < KVS_MAX_VIPS; i++) {
        const struct kvs_vip *v = &cfg->vips[i];

        if (i >= n)
            break;
        if (v->port != pkt->tcp->dest || v->family != pkt->family)
            continue;
        if (pkt->ip4) {
            if (v->addr[0] == pkt->ip4->daddr)
                return 1;
        } else if (pkt->ip6) {
            if (v->addr[0] == pkt->ip6->daddr[0] && v->addr[1] == pkt->ip6->daddr[1] &&
                v->addr[2] == pkt->ip6->daddr[2] && v->addr[3] == pkt->ip6->daddr[3])
                return 1;
        }
    }
    return 0;
}

static __always_inline int kvs_is_snat(const struct kvs_config *cfg, const struct kvs_pkt *pkt)
{
    __u16 port = bpf_ntohs(pkt->tcp->dest);

    if (cfg->snat_family != pkt->family || port < cfg->snat_port_lo || port > cfg->snat_port_hi)
        return 0;
    if (pkt->ip4)
        return cfg->snat_addr[0] == pkt->ip4->daddr;
    if (pkt->ip6)
        return cfg->snat_addr[0] == pkt->ip6->daddr[0] && cfg->snat_addr[1] == pkt->ip6->daddr[1] &&
               cfg->snat_addr[2] == pkt->ip6->daddr[2] && cfg->snat_addr[3] == pkt->ip6->daddr[3];
    return 0;
}

/* Hands the frame to the AF_XDP socket of its RX queue (the dataplane); dropped and counted
 * as PUNT_NO_XSK when no socket is bound there. */
static __always_inline int kvs_punt(struct xdp_md *ctx, __u32 reason)
{
    long r = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_DROP);

    return kvs_verdict(r == XDP_REDIRECT ? reason : KVS_R_PUNT_NO_XSK, (int)r);
}

static __always_inline int kvs_syn(struct xdp_md *ctx, const struct kvs_config *cfg,
                                   const struct kvs_pkt *pkt)
{
    struct kvs_cookie_tuple t;
    struct kvs_synack sa;
    void *data, *data_end;
    __u64 now;
    int delta;

    if (!kvs_cookie_key_set(&cfg->cookie_key[0][0]))
        return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    kvs_synack_plan(pkt, cfg, &sa);
    kvs_cookie_tuple_of(pkt, &t);
    now = bpf_ktime_get_tai_ns();
    sa.cookie = kvs_cookie_make(&cfg->cookie_key[0][0], &t,
                                kvs_cookie_slot(now, cfg->cookie_period_s), sa.cookie_data);
    sa.tsval = (__u32)(now / 1000000); /* a millisecond TS clock */

    delta = (int)sa.frame_len - (int)pkt->frame_len;
    if (delta && bpf_xdp_adjust_tail(ctx, delta))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    /* The helper moved the frame end: the context is read afresh (a barrier keeps clang from
     * reusing an offset context pointer, which the verifier rejects). */
    barrier_var(ctx);
    data = (void *)(long)ctx->data;
    barrier_var(ctx);
    data_end = (void *)(long)ctx->data_end;
    if (kvs_synack_write(data, data_end, &sa))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_verdict(KVS_R_TX_SYNACK, XDP_TX);
}

/* First FIN or RST of a flow: state bits on this entry; CLOSED on both entries; the backend's
 * closes counter bumped exactly once, by whoever flips CLOSED on the arbiter entry (the
 * client->server one, or this one if that is gone). */
static __always_inline void kvs_flow_fin_rst(const struct kvs_flow_key *key, struct kvs_flow *f,
                                             __u8 flags)
{
    const __u32 closed = (__u32)KVS_FLOW_CLOSED << KVS_FLOW_STATE_SHIFT;
    struct kvs_flow_key rk;
    struct kvs_flow *rev, *arb, *other;
    __u32 bits = 0, old;

    if (flags & KVS_TCP_FIN) {
        bits |= KVS_FLOW_FIN_IN;
        kvs_count(KVS_R_FLOW_FIN);
    }
    if (flags & KVS_TCP_RST) {
        bits |= KVS_FLOW_RST;
        kvs_count(KVS_R_FLOW_RST);
    }
    old = __sync_fetch_and_or(KVS_FLOW_STATE_WORD(f), bits << KVS_FLOW_STATE_SHIFT);
    if (old & closed)
        return;
    kvs_flow_reverse_key(key, f, &rk);
    rev = bpf_map_lookup_elem(&kvs_flows, &rk);
    arb = f;
    other = rev;
    if (rev && f->dir != KVS_DIR_C2S) {
        arb = rev;
        other = f;
    }
    old = __sync_fetch_and_or(KVS_FLOW_STATE_WORD(arb), closed);
    if (other)
        __sync_fetch_and_or(KVS_FLOW_STATE_WORD(other), closed);
    if (!(old & closed)) {
        __u32 be = f->backend_id;
        struct kvs_backend_load *ld = bpf_map_lookup_elem(&kvs_be_load, &be);

        if (ld)
            __sync_fetch_and_add(&ld->closes, 1);
        kvs_count(KVS_R_FLOW_CLOSED);
    }
}

static __always_inline int kvs_forward(struct xdp_md *ctx, struct kvs_pkt *pkt,
                                       const struct kvs_flow_key *key, struct kvs_flow *f)
{
    void *data_end = (void *)(long)ctx->data_end;
    __u8 flags = pkt->tcp->flags;

    f->last_seen_ns = bpf_ktime_get_ns();
    f->packets += 1;
    f->bytes += pkt->frame_len;
    if (flags & (KVS_TCP_FIN | KVS_TCP_RST))
        kvs_flow_fin_rst(key, f, flags);
    if (kvs_flow_rewrite(data_end, pkt, f))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    if (f->tx_ifindex) {
        long r = bpf_redirect_map(&kvs_tx_ports, f->tx_ifindex, XDP_PASS);

        if (r != XDP_REDIRECT)
            r = bpf_redirect(f->tx_ifindex, 0);
        return kvs_verdict(r == XDP_REDIRECT ? KVS_R_REDIRECT_FWD : KVS_R_DROP_NO_TX_PORT, (int)r);
    }
    return kvs_verdict(f->dir == KVS_DIR_S2C ? KVS_R_TX_FWD_S2C : KVS_R_TX_FWD_C2S, XDP_TX);
}

/* A client segment to a VIP with no flow: only a valid cookie lets it through to the
 * dataplane (data or FIN), a valid pure ACK carries no state and is dropped. */
static __always_inline int kvs_vip_no_flow(struct xdp_md *ctx, const struct kvs_config *cfg,
                                           const struct kvs_pkt *pkt)
{
    struct kvs_cookie_tuple t;
    struct kvs_cookie_opts co;
    __u8 flags = pkt->tcp->flags;
    __u64 slot;

    if (flags & KVS_TCP_RST)
        return kvs_verdict(KVS_R_DROP_RST_NO_FLOW, XDP_DROP);
    if ((flags & KVS_TCP_SYN) || !(flags & KVS_TCP_ACK))
        return kvs_verdict(KVS_R_DROP_BAD_COOKIE, XDP_DROP);
    if (!kvs_cookie_key_set(&cfg->cookie_key[0][0]))
        return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    kvs_cookie_tuple_of(pkt, &t);
    slot = kvs_cookie_slot(bpf_ktime_get_tai_ns(), cfg->cookie_period_s);
    if (!kvs_cookie_check(&cfg->cookie_key[0][0], &t, bpf_ntohl(pkt->tcp->ack_seq) - 1, slot, &co))
        return kvs_verdict(KVS_R_DROP_BAD_COOKIE, XDP_DROP);
    if (pkt->payload_len == 0 && !(flags & KVS_TCP_FIN))
        return kvs_verdict(KVS_R_DROP_PURE_ACK, XDP_DROP);
    return kvs_punt(ctx, KVS_R_PUNT_FIRST_FLIGHT);
}

/* The general TCP option walk, verified once on its own (a global function): the caller sees
 * only "some options were written", so its own states do not multiply per layout. */
__attribute__((noinline)) int kvs_xdp_parse_opts(struct xdp_md *ctx, __u32 opt_off, __u32 optlen,
                                                 struct kvs_tcp_opts *o)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    const __u8 *opt = (const __u8 *)data + (opt_off & 0x7f);

    if (!o)
        return KVS_PARSE_BAD_OPTION;
    if (optlen > KVS_TCP_MAX_OPTLEN)
        return KVS_PARSE_BAD_OPTION;
    return kvs_parse_tcp_opts(opt, data_end, optlen, o);
}

static __always_inline int kvs_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_flow_key key;
    struct kvs_config *cfg;
    struct kvs_flow *f;
    struct kvs_pkt pkt;
    __u32 zero = 0;
    __u8 flags;
    int st;

    st = kvs_parse(data, data_end, &pkt);
    if (st == KVS_PARSE_OK && pkt.opts_pending)
        st = kvs_xdp_parse_opts(ctx, pkt.l4_off + sizeof(struct kvs_tcphdr),
                                pkt.tcp_hlen - sizeof(struct kvs_tcphdr), &pkt.opts);
    if (st != KVS_PARSE_OK) {
        __u32 r = kvs_parse_reason(st, pkt.l4proto);

        return kvs_verdict(r, (r == KVS_R_DROP_TRUNCATED || r == KVS_R_DROP_MALFORMED) ? XDP_DROP
                                                                                        : XDP_PASS);
    }
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg)
        return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
    flags = pkt.tcp->flags;

    if ((flags & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN) {
        if (kvs_is_vip(cfg, &pkt))
            return kvs_syn(ctx, cfg, &pkt);
        return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
    }
    /* Backend SYN-ACKs (first or retransmitted) always go to the dataplane, which must
     * (re-)ACK them. */
    if ((flags & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK) && kvs_is_snat(cfg, &pkt))
        return kvs_punt(ctx, KVS_R_PUNT_BACKEND_SYNACK);

    kvs_flow_key_of(&pkt, &key);
    f = bpf_map_lookup_elem(&kvs_flows, &key);
    if (f)
        return kvs_forward(ctx, &pkt, &key, f);
    if (kvs_is_vip(cfg, &pkt))
        return kvs_vip_no_flow(ctx, cfg, &pkt);
    if (kvs_is_snat(cfg, &pkt))
        return kvs_punt(ctx, KVS_R_PUNT_BACKEND_OTHER);
    return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
}

#endif /* KVSTEER_STEER_BPF_H */
