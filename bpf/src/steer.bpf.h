/* XDP verdict logic: classify each packet, answer SYNs, forward known flows, punt first flights. */
#ifndef KVSTEER_STEER_BPF_H
#define KVSTEER_STEER_BPF_H

#include "kvsteer/abi.h"

/* SipHash runs in its own global function: verified once, and its register spills do not
 * count against the stack of every caller chain (512 bytes for all frames). */
struct kvs_cookie_tuple;
struct kvs_sip_key {
    __u64 k[2];
};
__attribute__((noinline)) __u64 kvs_xdp_cookie_hash(const struct kvs_sip_key *key,
                                                    const struct kvs_cookie_tuple *t, __u64 slot);
#define KVS_COOKIE_HASH(key, t, slot) \
    kvs_xdp_cookie_hash((const struct kvs_sip_key *)(const void *)(key), (t), (slot))

#include "kvsteer/cookie.h"
#include "kvsteer/parse.h"
#include "kvsteer/reasons.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synack.h"
#include "maps.bpf.h"
#include "match.bpf.h"

/* kvs_flow.state shares an aligned 32-bit word with win_shl/win_shr/dir; BPF atomics work on
 * words only, so state bits are or-ed into that word at the state byte's position. */
#define KVS_FLOW_STATE_WORD(f) ((__u32 *)&(f)->win_shl)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVS_FLOW_STATE_SHIFT 24
#else
#define KVS_FLOW_STATE_SHIFT 0
#endif

__attribute__((noinline)) __u64 kvs_xdp_cookie_hash(const struct kvs_sip_key *key,
                                                    const struct kvs_cookie_tuple *t, __u64 slot) {
    if (!key || !t) return 0;
    return kvs_cookie_hash(key->k, t, slot);
}

static __always_inline int kvs_verdict(__u32 reason, int action) {
    kvs_count(reason);
    return action;
}

/* Hands the frame to the AF_XDP socket of its RX queue (the dataplane); dropped and counted
 * as PUNT_NO_XSK when no socket is bound there. */
static __always_inline int kvs_punt(struct xdp_md *ctx, __u32 reason) {
    long r = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_DROP);

    return kvs_verdict(r == XDP_REDIRECT ? reason : KVS_R_PUNT_NO_XSK, (int)r);
}

__attribute__((noinline)) int kvs_xdp_parse_opts(struct xdp_md *ctx, __u32 opt_off, __u32 optlen,
                                                 struct kvs_tcp_opts *o);

/* SYN-path working memory, per CPU: kept off the 512-byte stack that the main program shares
 * with the functions it calls. */
struct kvs_syn_scratch {
    struct kvs_synack sa;
    struct kvs_cookie_tuple t;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvs_syn_scratch);
} kvs_syn_scratch SEC(".maps");

/* A SYN to a VIP: answered in place with a cookie SYN-ACK (the SipHash runs in its own
 * function; the rest is straight-line code). */
static __always_inline int kvs_syn(struct xdp_md *ctx, const struct kvs_pkt *pkt) {
    struct kvs_syn_scratch *sc;
    struct kvs_config *cfg;
    void *data, *data_end;
    __u32 zero = 0;
    __u64 now;
    int delta;

    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg || !kvs_cookie_key_set(&cfg->cookie_key[0][0]))
        return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    sc = bpf_map_lookup_elem(&kvs_syn_scratch, &zero);
    if (!sc) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    kvs_synack_plan(pkt, cfg, &sc->sa);
    kvs_cookie_tuple_of(pkt, &sc->t);
    now = bpf_ktime_get_tai_ns();
    /* The TSval carries the client's ISN under the cookie's hash (see cookie.h). */
    kvs_cookie_sign(&cfg->cookie_key[0][0], &sc->t, kvs_cookie_slot(now, cfg->cookie_period_s),
                    sc->sa.cookie_data, sc->sa.client_isn, &sc->sa.cookie, &sc->sa.tsval);

    delta = (int)sc->sa.frame_len - (int)pkt->frame_len;
    if (delta && bpf_xdp_adjust_tail(ctx, delta))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    /* The helper moved the frame end: the context is read afresh (a barrier keeps clang from
     * reusing an offset context pointer, which the verifier rejects). */
    barrier_var(ctx);
    data = (void *)(long)ctx->data;
    barrier_var(ctx);
    data_end = (void *)(long)ctx->data_end;
    if (kvs_synack_write(data, data_end, &sc->sa))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_verdict(KVS_R_TX_SYNACK, XDP_TX);
}

/* First FIN or RST of a flow: state bits on this entry; CLOSED on both entries; the backend's
 * closes counter bumped exactly once, by whoever flips CLOSED on the arbiter entry (the
 * client->server one, or this one if that is gone). Global: rare, and off the fast path's
 * stack. */
__attribute__((noinline)) int kvs_xdp_fin_rst(const struct kvs_flow_key *key, __u32 flags) {
    const __u32 closed = (__u32)KVS_FLOW_CLOSED << KVS_FLOW_STATE_SHIFT;
    struct kvs_flow_key rk;
    struct kvs_flow *f, *rev, *arb, *other;
    __u32 bits = 0, old;

    if (!key) return 0;
    f = bpf_map_lookup_elem(&kvs_flows, key);
    if (!f) return 0;
    if (flags & KVS_TCP_FIN) {
        bits |= KVS_FLOW_FIN_IN;
        kvs_count(KVS_R_FLOW_FIN);
    }
    if (flags & KVS_TCP_RST) {
        bits |= KVS_FLOW_RST;
        kvs_count(KVS_R_FLOW_RST);
    }
    old = __sync_fetch_and_or(KVS_FLOW_STATE_WORD(f), bits << KVS_FLOW_STATE_SHIFT);
    if (old & closed) return 0;
    kvs_flow_reverse_key(key, f, &rk);
    rev = bpf_map_lookup_elem(&kvs_flows, &rk);
    arb = f;
    other = rev;
    if (rev && f->dir != KVS_DIR_C2S) {
        arb = rev;
        other = f;
    }
    old = __sync_fetch_and_or(KVS_FLOW_STATE_WORD(arb), closed);
    if (other) __sync_fetch_and_or(KVS_FLOW_STATE_WORD(other), closed);
    if (!(old & closed)) {
        __u32 be = f->backend_id;
        struct kvs_backend_load *ld = bpf_map_lookup_elem(&kvs_be_load, &be);

        if (ld) __sync_fetch_and_add(&ld->closes, 1);
        kvs_count(KVS_R_FLOW_CLOSED);
    }
    return 0;
}

static __always_inline int kvs_forward(struct xdp_md *ctx, struct kvs_pkt *pkt,
                                       const struct kvs_flow_key *key, struct kvs_flow *f) {
    void *data_end = (void *)(long)ctx->data_end;
    __u8 flags = pkt->tcp->flags;

    /* CLOCK_MONOTONIC at tick resolution: the precise clock costs ~30 ns a packet here, and
     * idle expiry needs no better than milliseconds. */
    f->last_seen_ns = bpf_ktime_get_coarse_ns();
    f->packets += 1;
    f->bytes += pkt->frame_len;
    if (flags & (KVS_TCP_FIN | KVS_TCP_RST)) kvs_xdp_fin_rst(key, flags);
    if (kvs_flow_rewrite(data_end, pkt, f)) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    if (f->tx_ifindex) {
        long r = bpf_redirect_map(&kvs_tx_ports, f->tx_ifindex, XDP_PASS);

        if (r != XDP_REDIRECT) r = bpf_redirect(f->tx_ifindex, 0);
        return kvs_verdict(r == XDP_REDIRECT ? KVS_R_REDIRECT_FWD : KVS_R_DROP_NO_TX_PORT, (int)r);
    }
    return kvs_verdict(f->dir == KVS_DIR_S2C ? KVS_R_TX_FWD_S2C : KVS_R_TX_FWD_C2S, XDP_TX);
}

/* A client SYN to a VIP whose 4-tuple still has a flow entry. Clients reuse a port as soon as
 * their old connection on it is gone, well inside the closed-flow linger: an entry whose client
 * sent FIN or either side RST belongs to a finished connection, so both directions are deleted
 * (the dataplane's sweeper returns the SNAT port) and the SYN gets a cookie like any other.
 * Returns 1 for a live flow: the SYN goes to its backend, whose challenge ACK makes the client
 * reset the old connection (RFC 5961), after which its next SYN finds the flow closed. */
__attribute__((noinline)) int kvs_xdp_syn_on_flow(const struct kvs_flow_key *key) {
    struct kvs_flow_key rk;
    struct kvs_flow *f, *rev;
    __u8 st;

    if (!key) return 0;
    f = bpf_map_lookup_elem(&kvs_flows, key);
    if (!f) return 0;
    st = f->state;
    kvs_flow_reverse_key(key, f, &rk);
    rev = bpf_map_lookup_elem(&kvs_flows, &rk);
    if (rev && (rev->state & KVS_FLOW_RST)) st |= KVS_FLOW_RST;
    if (!(st & (KVS_FLOW_FIN_IN | KVS_FLOW_RST))) {
        kvs_count(KVS_R_SYN_ON_LIVE_FLOW);
        return 1;
    }
    bpf_map_delete_elem(&kvs_flows, key);
    if (rev) bpf_map_delete_elem(&kvs_flows, &rk);
    kvs_count(KVS_R_FLOW_REUSED);
    return 0;
}

/* A client segment to a VIP with no flow: only a valid cookie lets it through to the
 * dataplane (data or FIN); a valid pure ACK carries no state and is dropped. Global, with its
 * own parse (options were validated by the caller), so the two SipHash checks are verified once. */
__attribute__((noinline)) int kvs_xdp_vip_no_flow(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_cookie_tuple t;
    struct kvs_cookie_opts co;
    struct kvs_config *cfg;
    struct kvs_pkt pkt;
    __u32 zero = 0;
    __u8 flags;
    __u64 slot;

    if (kvs_parse(data, data_end, &pkt) != KVS_PARSE_OK || !pkt.tcp)
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    flags = pkt.tcp->flags;
    if (flags & KVS_TCP_RST) return kvs_verdict(KVS_R_DROP_RST_NO_FLOW, XDP_DROP);
    if ((flags & KVS_TCP_SYN) || !(flags & KVS_TCP_ACK))
        return kvs_verdict(KVS_R_DROP_BAD_COOKIE, XDP_DROP);
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg || !kvs_cookie_key_set(&cfg->cookie_key[0][0]))
        return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    kvs_cookie_tuple_of(&pkt, &t);
    slot = kvs_cookie_slot(bpf_ktime_get_tai_ns(), cfg->cookie_period_s);
    if (!kvs_cookie_check(&cfg->cookie_key[0][0], &t, bpf_ntohl(pkt.tcp->ack_seq) - 1, slot, &co))
        return kvs_verdict(KVS_R_DROP_BAD_COOKIE, XDP_DROP);
    if (pkt.payload_len == 0 && !(flags & KVS_TCP_FIN))
        return kvs_verdict(KVS_R_DROP_PURE_ACK, XDP_DROP);
    return kvs_punt(ctx, KVS_R_PUNT_FIRST_FLIGHT);
}

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

/* The general TCP option walk, verified once on its own (a global function, so the caller
 * sees only "some options were written" and its states do not multiply per layout), driven by
 * an open-coded iterator, which the verifier checks by convergence instead of unrolling. */
__attribute__((noinline)) int kvs_xdp_parse_opts(struct xdp_md *ctx, __u32 opt_off, __u32 optlen,
                                                 struct kvs_tcp_opts *o) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    const __u8 *opt = (const __u8 *)data + (opt_off & 0x7f);
    struct bpf_iter_num it;
    __u32 off = 0;
    int r = KVS_PARSE_OK;

    if (!o || optlen > KVS_TCP_MAX_OPTLEN) return KVS_PARSE_BAD_OPTION;
    bpf_iter_num_new(&it, 0, KVS_TCP_MAX_OPTLEN);
    while (bpf_iter_num_next(&it)) {
        r = kvs_tcp_opt_step(opt, data_end, optlen, &off, o);
        if (r != KVS_OPT_MORE) break;
    }
    bpf_iter_num_destroy(&it);
    return r == KVS_OPT_MORE ? KVS_PARSE_OK : r;
}

static __always_inline int kvs_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_flow_key key;
    struct kvs_flow *f;
    struct kvs_pkt pkt;
    __u8 flags;
    int st;

    st = kvs_parse(data, data_end, &pkt);
    if (st == KVS_PARSE_OK && pkt.opts_pending)
        st = kvs_xdp_parse_opts(ctx, pkt.l4_off + sizeof(struct kvs_tcphdr),
                                pkt.tcp_hlen - sizeof(struct kvs_tcphdr), &pkt.opts);
    if (st != KVS_PARSE_OK) {
        __u32 r = kvs_parse_reason(st, pkt.l4proto);

        return kvs_verdict(
            r, (r == KVS_R_DROP_TRUNCATED || r == KVS_R_DROP_MALFORMED) ? XDP_DROP : XDP_PASS);
    }
    if (!pkt.tcp) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    flags = pkt.tcp->flags;
    kvs_flow_key_of(&pkt, &key);

    if ((flags & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN) {
        if (!kvs_xdp_is_vip(&key)) return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
        if (kvs_xdp_syn_on_flow(&key)) {
            f = bpf_map_lookup_elem(&kvs_flows, &key);
            if (f) return kvs_forward(ctx, &pkt, &key, f);
        }
        return kvs_syn(ctx, &pkt);
    }
    /* Backend SYN-ACKs (first or retransmitted) always go to the dataplane, which must
     * (re-)ACK them. */
    if ((flags & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK) &&
        kvs_xdp_is_snat(&key))
        return kvs_punt(ctx, KVS_R_PUNT_BACKEND_SYNACK);

    f = bpf_map_lookup_elem(&kvs_flows, &key);
    if (f) return kvs_forward(ctx, &pkt, &key, f);
    if (kvs_xdp_is_vip(&key)) return kvs_xdp_vip_no_flow(ctx);
    if (kvs_xdp_is_snat(&key)) return kvs_punt(ctx, KVS_R_PUNT_BACKEND_OTHER);
    return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
}

#endif /* KVSTEER_STEER_BPF_H */
