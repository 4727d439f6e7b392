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
#include "kvsteer/fleet.h"
#include "kvsteer/fleetpkt.h"
#include "kvsteer/icmp.h"
#include "kvsteer/parse.h"
#include "kvsteer/reasons.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synack.h"
#include "kvsteer/synrate.h"
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

/* After a helper moved the frame (bpf_xdp_adjust_head/tail) its bounds are read afresh from the
 * context (a barrier keeps clang from reusing an offset context pointer, which the verifier
 * rejects). */
#define KVS_RELOAD_FRAME(ctx, data, data_end)       \
    do {                                            \
        barrier_var(ctx);                           \
        (data) = (void *)(long)(ctx)->data;         \
        barrier_var(ctx);                           \
        (data_end) = (void *)(long)(ctx)->data_end; \
    } while (0)

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

/* SYN-ACK buckets per client /24 or /48 (synrate.h); a private LRU: a reload starts them full. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct kvs_syn_bucket);
} kvs_syn_rate SEC(".maps");

/* Whether the SYN's source prefix may get another SYN-ACK now. */
static __always_inline int kvs_syn_allowed(const struct kvs_pkt *pkt, const struct kvs_config *cfg,
                                           __u64 now) {
    struct kvs_syn_bucket *b, fresh;
    __u64 key;

    if (!cfg->syn_rate_per_prefix) return 1;
    key = kvs_syn_prefix_key(pkt);
    b = bpf_map_lookup_elem(&kvs_syn_rate, &key);
    if (b) return kvs_syn_bucket_take(b, now, cfg->syn_rate_per_prefix, cfg->syn_burst_per_prefix);
    kvs_syn_bucket_init(&fresh, now);
    kvs_syn_bucket_take(&fresh, now, cfg->syn_rate_per_prefix, cfg->syn_burst_per_prefix);
    if (!bpf_map_update_elem(&kvs_syn_rate, &key, &fresh, BPF_NOEXIST)) return 1;
    /* Another CPU created it meanwhile: take from that one (writing ours over it gave back what
     * the CPUs had taken from it since). A bucket that cannot be kept (evicted at once) lets the
     * SYN-ACK go, as one that could not be created does. */
    b = bpf_map_lookup_elem(&kvs_syn_rate, &key);
    if (b) return kvs_syn_bucket_take(b, now, cfg->syn_rate_per_prefix, cfg->syn_burst_per_prefix);
    return 1;
}

/* A SYN to a VIP: answered in place with a cookie SYN-ACK (the SipHash runs in its own
 * function; the rest is straight-line code). */
static __always_inline int kvs_syn(struct xdp_md *ctx, const struct kvs_pkt *pkt) {
    struct kvs_syn_scratch *sc;
    struct kvs_config *cfg;
    const __u64 *key;
    void *data, *data_end;
    __u32 zero = 0;
    __u64 now;
    int delta;

    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    key = kvs_config_sign_key(cfg);
    if (!kvs_cookie_key_set(key)) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    sc = bpf_map_lookup_elem(&kvs_syn_scratch, &zero);
    if (!sc) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    if (!kvs_syn_allowed(pkt, cfg, bpf_ktime_get_coarse_ns()))
        return kvs_verdict(KVS_R_DROP_SYN_RATE, XDP_DROP);
    kvs_synack_plan(pkt, cfg, &sc->sa);
    kvs_cookie_tuple_of(pkt, &sc->t);
    now = bpf_ktime_get_tai_ns();
    /* The TSval carries the client's ISN under the cookie's hash (see cookie.h). */
    kvs_cookie_sign(key, &sc->t, kvs_cookie_slot(now, cfg->cookie_period_s), sc->sa.cookie_data,
                    sc->sa.client_isn, &sc->sa.cookie, &sc->sa.tsval);

    delta = (int)sc->sa.frame_len - (int)pkt->frame_len;
    if (delta && bpf_xdp_adjust_tail(ctx, delta)) /* a valid SYN, no room for the answer */
        return kvs_verdict(KVS_R_DROP_SYNACK_NO_ROOM, XDP_DROP);
    KVS_RELOAD_FRAME(ctx, data, data_end);
    if (kvs_synack_write(data, data_end, &sc->sa))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_verdict(KVS_R_TX_SYNACK, XDP_TX);
}

/* Whether the backend still owes the client a response (request tracking, below): fewer
 * responses started than requests, or the current one not known to be complete. */
static __always_inline int kvs_resp_owed(const struct kvs_flow *c2s, const struct kvs_flow *s2c) {
    return (__s16)(s2c->msgs - c2s->msgs) < 0 || !(s2c->resp & KVS_RESP_END) ||
           s2c->resp_end != s2c->next_seq;
}

/* An idle connection's end (its client sent again, or it closed): KVS_FLOW_IDLE cleared on its
 * client->server entry `c`, and counted in the backend's idle_ends by whoever clears it. */
static __always_inline void kvs_idle_end(struct kvs_flow *c) {
    const __u32 idle = (__u32)KVS_FLOW_IDLE << KVS_FLOW_STATE_SHIFT;

    if (__sync_fetch_and_and(KVS_FLOW_STATE_WORD(c), ~idle) & idle) {
        __u32 be = c->backend_id;
        struct kvs_backend_load *ld = bpf_map_lookup_elem(&kvs_be_load, &be);

        if (ld) __sync_fetch_and_add(&ld->idle_ends, 1);
    }
}

/* The reverse entry of `f` (its key in *rk), only while it is the same installation: both entries
 * of a pair carry one created_ns (kvs_flow_pair_init). After an eviction the reverse key may hold
 * another flow's entry (a client's port reused, bound to another backend): a FIN on the old leg's
 * leftover entry closed that live flow, its close counted on the wrong backend and never on its
 * own. NULL otherwise, as when there is none. */
static __always_inline struct kvs_flow *kvs_twin(const struct kvs_flow_key *key,
                                                 const struct kvs_flow *f,
                                                 struct kvs_flow_key *rk) {
    struct kvs_flow *r;

    kvs_flow_reverse_key(key, f, rk);
    r = bpf_map_lookup_elem(&kvs_flows, rk);
    return r && r->created_ns == f->created_ns ? r : 0;
}
/* A response's last byte just passed (`s`, the server->client entry, reached its end for the
 * first time): the connection is idle when nothing is owed (every request started has its
 * response) and the client sent nothing past its last request's end (a request XDP could not
 * delimit leaves it in flight). KVS_FLOW_IDLE is set only on an entry neither closed nor being
 * bound again (compare-and-swap: a close or a boundary on another CPU wins), and counted in the
 * backend's idle_starts once. Global: once per response. */
__attribute__((noinline)) int kvs_xdp_idle(const struct kvs_flow_key *key, struct kvs_flow *s) {
    const __u32 idle = (__u32)KVS_FLOW_IDLE << KVS_FLOW_STATE_SHIFT;
    const __u32 busy = (__u32)(KVS_FLOW_IDLE | KVS_FLOW_CLOSED | KVS_FLOW_REBINDING)
                       << KVS_FLOW_STATE_SHIFT;
    struct kvs_backend_load *ld;
    struct kvs_flow_key rk;
    struct kvs_flow *c;
    __u32 old, be;

    if (!key || !s) return 0;
    c = kvs_twin(key, s, &rk);
    if (!c || c->dir != KVS_DIR_C2S || (__s16)(s->msgs - c->msgs) < 0 ||
        !(c->resp & KVS_RESP_END) || c->next_seq != c->resp_end)
        return 0;
    old = *(volatile __u32 *)KVS_FLOW_STATE_WORD(c);
    if (old & busy) return 0;
    if (__sync_val_compare_and_swap(KVS_FLOW_STATE_WORD(c), old, old | idle) != old) return 0;
    be = c->backend_id;
    ld = bpf_map_lookup_elem(&kvs_be_load, &be);
    if (ld) __sync_fetch_and_add(&ld->idle_starts, 1);
    /* A request the client's side counted on another CPU between the reads above and the
     * swap (pipelined behind this response): not idle after all. */
    if ((__s16)(s->msgs - c->msgs) < 0 || c->next_seq != c->resp_end) kvs_idle_end(c);
    return 0;
}

/* Closes the flow pair (CLOSED on both entries); the backend's closes counter is bumped by
 * whoever flips CLOSED on the arbiter entry (the client->server one, or `f` if that is gone):
 * exactly once, however many CPUs and paths close it at once. */
static __always_inline void kvs_close_pair(struct kvs_flow *f, struct kvs_flow *rev) {
    const __u32 closed = (__u32)KVS_FLOW_CLOSED << KVS_FLOW_STATE_SHIFT;
    struct kvs_flow *arb = f, *other = rev;
    __u32 old;

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
        kvs_idle_end(arb); /* closed while idle: no longer idle either */
    }
}

/* Checks of a segment of flow `f` against its reverse entry, the other side's (0 without one).
 * Global: rare paths only.
 * KVS_REV_RST_ACKED: whether a RST whose seq is not the sender's next byte is at the
 *   acknowledgment the receiver last sent (a reset answering a segment carries its ACK as seq).
 * KVS_REV_ACK_PLAUSIBLE: whether a segment past a hole in the bytes seen (bytes lost before the
 *   appliance, or forged), or an acknowledgment moving last_ack from a segment not at the bytes
 *   seen, acknowledges something the receiver could take (RFC 5961 5.2, RFC 9293's acceptable
 *   ACK): from this side's last acknowledgment to the other side's next byte. Only then does it
 *   move the bytes seen (or last_ack). A blind attacker's forged bytes ahead moved them to where
 *   its next forged RST was exact; within 4 MiB of the other side's next byte (one guess in 512)
 *   each success moved them on from where the last left them, so 1,024 forged segments 4 MiB
 *   apart per guessed ACK (~2^19 packets) placed them where it chose; and forged ACKs moved
 *   last_ack 4 MiB at a time unchecked.
 * KVS_REV_FIN_ACK_OK: whether a FIN's acknowledgment is one the endpoint takes (1 without a
 *   reverse entry): at most the other side's next byte (nothing it has not sent: Linux discards
 *   a segment acknowledging unsent data, FIN and all) and at most KVS_SEQ_SLACK behind it. A FIN
 *   acknowledging 2^30 bytes ahead was dropped by the backend and counted a close here: the
 *   connection went on, its backend's in-flight count one lower for good. */
enum { KVS_REV_RST_ACKED = 0, KVS_REV_ACK_PLAUSIBLE = 1, KVS_REV_FIN_ACK_OK = 2 };
__attribute__((noinline)) int kvs_xdp_rev_check(const struct kvs_flow_key *key,
                                                const struct kvs_flow *f, __u32 v, __u32 what) {
    struct kvs_flow_key rk;
    struct kvs_flow *rev;

    if (!key || !f) return 0;
    rev = kvs_twin(key, f, &rk);
    if (!rev) return what == KVS_REV_FIN_ACK_OK;
    if (what == KVS_REV_RST_ACKED) return v + f->seq_delta == rev->last_ack;
    if (what == KVS_REV_FIN_ACK_OK)
        return (__u32)(rev->next_seq + rev->seq_delta - v) <= KVS_SEQ_SLACK;
    return (__s32)(v - f->last_ack) >= 0 && (__s32)(rev->next_seq + rev->seq_delta - v) >= 0;
}

/* Whether a FIN or RST may close the flow, by the rule the endpoint itself applies (RFC 5961 3.2,
 * RFC 9293 3.10.7.4): a RST exactly at the sender's next byte, or at the receiver's last
 * acknowledgment; a FIN on a segment holding the next byte expected (in order, or a
 * retransmission overlapping it, or of the FIN itself). Otherwise the segment is sent on (the
 * endpoint judges it: a challenge ACK, after which the peer's own RST is exact) but closes nothing
 * here. Before, anything within KVS_SEQ_SLACK (4 MiB) of the bytes seen closed the flow's
 * accounting: about 500 blind RSTs (only the client's address and port guessed) swept the sequence
 * space, and a SYN on the tuple then deleted the live connection's entries (it hung). A FIN after
 * a hole (bytes lost before the appliance) closes nothing either: the other side's FIN or RST
 * does.
 */
static __always_inline int kvs_close_plausible(const struct kvs_pkt *pkt,
                                               const struct kvs_flow_key *key,
                                               const struct kvs_flow *f) {
    __u32 seq = bpf_ntohl(pkt->tcp->seq);

    if (pkt->tcp->flags & KVS_TCP_RST)
        return seq == f->next_seq || kvs_xdp_rev_check(key, f, seq, KVS_REV_RST_ACKED);
    /* + 1: the FIN itself seen already (a retransmission: it changes nothing, and is no forgery
     * to count close_out_of_window for). Its ACK as the endpoint takes it (a FIN without one is
     * judged in kvs_forward). */
    return f->next_seq - seq <= (__u32)pkt->payload_len + 1 &&
           (!(pkt->tcp->flags & KVS_TCP_ACK) ||
            kvs_xdp_rev_check(key, f, bpf_ntohl(pkt->tcp->ack_seq), KVS_REV_FIN_ACK_OK));
}

/* A FIN or RST of a flow: its state bit on this entry. The flow is closed (CLOSED on both
 * entries, the backend's closes counter bumped exactly once, by whoever flips CLOSED on the
 * arbiter entry: the client->server one, or this one if that is gone) at its first FIN or RST,
 * except a client's FIN while a response is still owed (a half-close after the request: the
 * backend is still working on it): that one waits for the backend's FIN or a RST. Owed also
 * when the client's bytes go past the end of its last request seen (`fin_seq`, the FIN's own
 * sequence number, is not resp_end) or that end is unknown: a request XDP did not count (its
 * head lost before the appliance, one after a request of unknown end) was closed while the
 * backend worked on it, and a SYN on the tuple then deleted the live flow. Global: rare, and off
 * the fast path's stack. */
__attribute__((noinline)) int kvs_xdp_fin_rst(const struct kvs_flow_key *key, __u32 flags,
                                              __u32 fin_seq) {
    const __u32 closed = (__u32)KVS_FLOW_CLOSED << KVS_FLOW_STATE_SHIFT;
    struct kvs_flow_key rk;
    struct kvs_flow *f, *rev;
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
    rev = kvs_twin(key, f, &rk);
    if (!(bits & KVS_FLOW_RST) && f->dir == KVS_DIR_C2S && rev &&
        !(rev->state & (KVS_FLOW_FIN_IN | KVS_FLOW_RST)) &&
        (kvs_resp_owed(f, rev) || !(f->resp & KVS_RESP_END) || fin_seq != f->resp_end))
        return 0;
    kvs_close_pair(f, rev);
    return 0;
}

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

/* ---- request boundaries (per-request steering) --------------------------------------------
 * A client segment may start a new request where the connection is quiescent: it is the next
 * client byte and begins with a method token; no FIN or RST either way; every request got its
 * response and the current one is complete (Content-Length used up, or the last chunk sent);
 * the client acknowledged all the backend sent and the backend all the client sent. XDP then
 * marks both entries REBINDING and hands the segment to the dataplane, which binds the request
 * again (same backend: flushed through the entry; another: a new backend leg). The per-packet
 * cost on the fast path is a few stores; the rest runs once per request or response head. */

/* Response-head scan: per CPU, off the stack. */
#define KVS_RESP_SCAN 2048 /* a whole 1500-byte segment's head; the scan stops at its end */
struct kvs_resp_scratch {
    __u8 b[2 * KVS_RESP_SCAN]; /* bytes past those loaded are stale but readable (masked index) */
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvs_resp_scratch);
} kvs_resp_scratch SEC(".maps");

static __always_inline __u8 kvs_lc(__u8 c) {
    return (c >= 'A' && c <= 'Z') ? (__u8)(c | 0x20) : c;
}

/* Whether the header line starting at b[i] names `name` (lower case, n bytes). */
static __always_inline int kvs_hdr_is(const __u8 *b, __u32 i, const char *name, __u32 n) {
    __u32 k;

#pragma unroll
    for (k = 0; k < 20; k++) {
        if (k >= n) break;
        if (kvs_lc(b[(i + k) & (2 * KVS_RESP_SCAN - 1)]) != (__u8)name[k]) return 0;
    }
    return 1;
}

struct kvs_head_scan {
    const __u8 *b; /* the loaded bytes (kvs_resp_scratch) */
    __u32 n;       /* bytes loaded */
    __u32 hdr_end; /* offset after the blank line; 0 = not found yet */
    __u64 clen;    /* Content-Length */
    __u8 have_len;
    __u8 chunked;
};

/* One position of the head scan (a bpf_loop callback, verified once); returns 1 to stop. */
static long kvs_head_step(__u64 index, void *arg) {
    const __u32 m = 2 * KVS_RESP_SCAN - 1;
    struct kvs_head_scan *h = arg;
    const __u8 *b = h->b;
    __u32 i = (__u32)index & (KVS_RESP_SCAN - 1);
    __u32 k;

    if (!b || i + 4 > h->n) return 1;
    if (b[i & m] == '\r' && b[(i + 1) & m] == '\n' && b[(i + 2) & m] == '\r' &&
        b[(i + 3) & m] == '\n') {
        h->hdr_end = i + 4;
        return 1;
    }
    if (i < 2 || b[(i - 2) & m] != '\r' || b[(i - 1) & m] != '\n') return 0;
    if (kvs_hdr_is(b, i, "content-length:", 15)) {
        __u64 v = 0;
        __u32 j = i + 15;

        /* Optional whitespace: spaces or tabs (a tab read as the value's end made it 0). */
        while (j < h->n && (b[j & m] == ' ' || b[j & m] == '\t')) {
            j++;
            if (j > i + 20) break;
        }
#pragma unroll
        for (k = 0; k < 12; k++) {
            __u8 c = b[(j + k) & m];

            if (j + k >= h->n || c < '0' || c > '9') break;
            v = v * 10 + (c - '0');
        }
        /* More than 12 digits (leading zeros are valid): no length known (the first 12 were
         * taken as the length, "0000000000005" as 0). No digit: none either (was taken as 0, a
         * response ending at its head). */
        if (k == 12 && j + 12 < h->n && b[(j + 12) & m] >= '0' && b[(j + 12) & m] <= '9') k = 0;
        if (k > 0) {
            h->clen = v;
            h->have_len = 1;
        }
    } else if (kvs_hdr_is(b, i, "transfer-encoding:", 18)) {
        h->chunked = 1; /* the one transfer coding a response body carries in practice */
    }
    return 0;
}

/* A head at `off` (at most KVS_RESP_SCAN bytes of the segment's `len`) loaded into the per-CPU
 * scratch and scanned into *h (its end, Content-Length, chunked); the scratch, or 0 when fewer
 * than `min` bytes are there or the load fails. */
static __always_inline struct kvs_resp_scratch *kvs_scan_head(struct xdp_md *ctx, __u32 off,
                                                              __u32 len, __u32 min,
                                                              struct kvs_head_scan *h) {
    __u32 zero = 0, n = len < KVS_RESP_SCAN ? len : KVS_RESP_SCAN;
    struct kvs_resp_scratch *sc = bpf_map_lookup_elem(&kvs_resp_scratch, &zero);

    if (!sc || n < min || bpf_xdp_load_bytes(ctx, off, sc->b, n)) return 0;
    h->b = sc->b;
    h->n = n;
    bpf_loop(KVS_RESP_SCAN, kvs_head_step, h, 0);
    return sc;
}

/* Whether a server->client segment ends with a chunked body's last chunk: "0\r\n\r\n" ending
 * the segment, after the previous chunk's CRLF (or alone in it). `t` holds its first 5 bytes. */
static __always_inline int kvs_ends_last_chunk(struct xdp_md *ctx, __u32 off, __u32 len, __u8 *t) {
    if (len >= 7) {
        if (bpf_xdp_load_bytes(ctx, (off + len - 7) & 0xffff, t, 7)) return 0;
        return t[0] == '\r' && t[1] == '\n' && t[2] == '0' && t[3] == '\r' && t[4] == '\n' &&
               t[5] == '\r' && t[6] == '\n';
    }
    return len == 5 && t[0] == '0' && t[1] == '\r' && t[2] == '\n' && t[3] == '\r' && t[4] == '\n';
}

/* Whether 5 loaded bytes begin a response head ("HTTP/"). */
static __always_inline int kvs_http_head_at(const __u8 *t) {
    return t[0] == 'H' && t[1] == 'T' && t[2] == 'T' && t[3] == 'P' && t[4] == '/';
}

/* A response whose head XDP cannot read, starting at `seq`: counted (s2c.msgs keeps step with the
 * requests), its end unknown, as for a head longer than one segment. */
static __always_inline int kvs_resp_unknown(struct kvs_flow *f, __u32 seq) {
    f->chunk_end = 0;
    f->resp = 0;
    f->msgs += 1;
    f->resp_end = seq + 1;
    return 0;
}

/* A server->client segment with payload: a response head at the next byte starts a new
 * response (its end from Content-Length, or chunked); a chunked body ends with its last chunk.
 * Loss or reordering before the appliance can bring a chunked response's last chunk before its
 * head (the head retransmitted after the rest passed): while the previous response is complete,
 * a segment past its end that ends with a last chunk leaves that end in chunk_end, taken when
 * the head arrives (else the response would never end for XDP, and no later request on the
 * connection would be a boundary).
 * Global: verified once, off the fast path's stack; runs for response heads, for the segments
 * of chunked bodies, and for segments that arrive before their response's head. */
__attribute__((noinline)) int kvs_xdp_resp(struct xdp_md *ctx, __u32 off, __u32 len, __u32 seq,
                                           struct kvs_flow *f) {
    struct kvs_resp_scratch *sc;
    struct kvs_head_scan h = {};
    __u32 hint;
    __u8 t[8];

    if (!f || len < 5 || len > 0xffff) return 0;
    off &= 0xff;
    if (bpf_xdp_load_bytes(ctx, off, t, 5)) return 0;
    /* A response head starts where the previous response ended (resp_end; the dataplane sets
     * it to the first byte at install): found there even when segments arrive reordered. */
    if (seq == f->resp_end && kvs_http_head_at(t)) {
        /* A head whose status this segment does not hold (its first write shorter than a
         * status code): counted, its end unknown (the next head is resynced). Uncounted, s2c.msgs
         * stayed one behind for good: every later request "owed", never a boundary, never idle. */
        if (len < 12) return kvs_resp_unknown(f, seq);
        sc = kvs_scan_head(ctx, off, len, 12, &h);
        if (!sc) return 0;
        if (sc->b[9] == '1') { /* 1xx: the final response follows it */
            if (!h.hdr_end) return 0;
            f->resp_end = seq + h.hdr_end;
            /* ... in this segment too (100 Continue and the answer written together): its head
             * read here. Before, it went unseen, s2c.msgs stayed one behind for good, and every
             * later request of the connection was "owed" (no boundary, never idle). */
            if (h.hdr_end >= len) return 0; /* it begins the next segment, at resp_end */
            off += h.hdr_end;
            len -= h.hdr_end;
            seq += h.hdr_end;
            /* Too little of it here to read its status, or a second 1xx before it: the final
             * response is counted, its end unknown (no segment starts where it does). */
            if (len < 12) return kvs_resp_unknown(f, seq);
            if (bpf_xdp_load_bytes(ctx, off, t, 5) || !kvs_http_head_at(t)) return 0;
            __builtin_memset(&h, 0, sizeof(h));
            sc = kvs_scan_head(ctx, off, len, 12, &h);
            if (!sc) return 0;
            if (sc->b[9] == '1') return kvs_resp_unknown(f, seq);
        }
        hint = f->chunk_end;
        f->chunk_end = 0;
        f->resp = 0;
        f->msgs += 1;
        /* Counted once: until its end is known, resp_end is one past the head's first byte, where
         * no segment of the stream starts with "HTTP/" (a retransmission of this head would
         * otherwise match resp_end again and count a second response). */
        f->resp_end = seq + 1;
        if (!h.hdr_end) return 0; /* a head longer than one segment: its end stays unknown */
        if (sc->b[9] == '2' && sc->b[10] == '0' && sc->b[11] == '4') h.have_len = 1, h.clen = 0;
        if (sc->b[9] == '3' && sc->b[10] == '0' && sc->b[11] == '4') h.have_len = 1, h.clen = 0;
        if (h.chunked) {
            f->resp = KVS_RESP_CHUNKED;
            if (hint && (__s32)(hint - seq) > 0) { /* its last chunk overtook it */
                f->resp_end = hint;
                f->resp |= KVS_RESP_END;
                return 0;
            }
        } else if (h.have_len && h.clen < 0x40000000ull) {
            f->resp_end = seq + h.hdr_end + (__u32)h.clen;
            f->resp = KVS_RESP_END;
            return 0;
        } else {
            return 0;
        }
    } else if ((f->resp & KVS_RESP_END) && (__s32)(seq - f->resp_end) > 0) {
        /* Past the end of a complete response: the next one's, ahead of its head. */
        if (kvs_ends_last_chunk(ctx, off, len, t) &&
            (!f->chunk_end || (__s32)(seq + len - f->chunk_end) > 0))
            f->chunk_end = seq + len;
        return 0;
    }
    if ((f->resp & (KVS_RESP_CHUNKED | KVS_RESP_END)) != KVS_RESP_CHUNKED) return 0;
    if (!kvs_ends_last_chunk(ctx, off, len, t)) return 0;
    f->resp_end = seq + len;
    f->resp |= KVS_RESP_END;
    return 0;
}

/* A request head XDP counted on the client->server entry (a request it left on the
 * connection's backend): where the request ends, from its head, into that entry's resp_end
 * (END set), as the dataplane writes it for the requests it binds. A head longer than the
 * segment, a chunked body or an absurd length leave the end unknown (END clear): no later
 * request of the connection is then taken for a start, and none is re-bound
 * (request_end_unknown). A request without Content-Length or Transfer-Encoding has no body.
 * Global: runs once per request XDP keeps. */
__attribute__((noinline)) int kvs_xdp_req(struct xdp_md *ctx, __u32 off, __u32 len, __u32 seq,
                                          struct kvs_flow *f) {
    struct kvs_head_scan h = {};

    if (!f) return 0;
    f->resp = 0;
    if (len > 0xffff || !kvs_scan_head(ctx, off & 0xff, len, 16, &h)) {
        kvs_count(KVS_R_REQ_END_UNKNOWN);
        return 0;
    }
    if (!h.have_len) h.clen = 0;
    if (!h.hdr_end || h.chunked || h.clen >= 0x40000000ull) {
        kvs_count(KVS_R_REQ_END_UNKNOWN);
        return 0;
    }
    f->resp_end = seq + h.hdr_end + (__u32)h.clen;
    f->resp = KVS_RESP_END;
    return 0;
}

/* A response head at the next byte of the server's stream that is not where XDP expected the
 * next response (the previous one's end unknown to it: a head longer than it scans, the
 * Content-Length of a response to HEAD, a chunked body ending in trailers): taken as the next
 * response when the client has a request waiting for one (more requests started than
 * responses), so the tracking resumes after one request kept on its backend instead of never.
 * Body bytes that merely begin with "HTTP/" are not taken: no request waits then. 1 when
 * taken. Global: rare. */
__attribute__((noinline)) int kvs_xdp_resync(const struct kvs_flow_key *key, struct kvs_flow *f) {
    struct kvs_flow_key rk;
    struct kvs_flow *c;

    if (!key || !f) return 0;
    c = kvs_twin(key, f, &rk);
    if (!c || c->dir != KVS_DIR_C2S || (__s16)(f->msgs - c->msgs) >= 0) return 0;
    kvs_count(KVS_R_RESP_RESYNC);
    return 1;
}

/* A client segment that may start a request at a quiescent point (see above): 1 when it is a
 * boundary, both entries then marked REBINDING. */
__attribute__((noinline)) int kvs_xdp_boundary(const struct kvs_flow_key *key, __u32 seq,
                                               __u32 ack) {
    const __u32 bit = (__u32)KVS_FLOW_REBINDING << KVS_FLOW_STATE_SHIFT;
    struct kvs_flow_key rk;
    struct kvs_config *cfg;
    struct kvs_ring_ctl *rc;
    struct kvs_flow *f, *rev;
    __u32 zero = 0, w;
    __u64 alive;

    if (!key) return 0;
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg || !(cfg->flags & KVS_CFG_PER_REQUEST)) return 0;
    f = bpf_map_lookup_elem(&kvs_flows, key);
    if (!f || f->dir != KVS_DIR_C2S || (f->state & KVS_FLOW_REBINDING)) return 0;
    rev = kvs_twin(key, f, &rk);
    if (!rev) return 0;
    /* No dataplane worker to take the request (stopped: its heartbeat 0; crashed: silent past
     * KVS_DP_ALIVE_NS): it stays on its backend, as without per-request steering. Marked, every
     * packet of the connection went to a queue with no socket (punt_no_xsk) until a dataplane
     * came back, and for good if none did. */
    w = f->worker;
    rc = bpf_map_lookup_elem(&kvs_ring_ctl, &w);
    alive = rc ? rc->alive_ns : 0;
    if (!alive || (__s64)(bpf_ktime_get_ns() - alive) > (__s64)KVS_DP_ALIVE_NS) {
        kvs_count(KVS_R_REQ_KEPT_NO_DATAPLANE);
        return 0;
    }
    /* Left on the connection's backend, counted (not verdicts): a client half-close or a
     * backend closing; a request sent before the previous response ended (pipelining); either
     * side's bytes not all acknowledged. */
    if ((f->state | rev->state) & (KVS_FLOW_FIN_IN | KVS_FLOW_RST)) {
        kvs_count(KVS_R_REQ_KEPT_CLOSING);
        return 0;
    }
    /* Responses started >= requests started: none owed (a request head the client's side saw
     * out of order is not counted; that errs towards boundaries no later than the response). */
    if (kvs_resp_owed(f, rev)) {
        kvs_count(KVS_R_REQ_KEPT_OWED);
        return 0;
    }
    /* Either side not yet acknowledging all the other sent (loss, or the client's request
     * before the last response bytes' acknowledgment reached us): not quiescent. */
    if (ack != rev->next_seq + rev->seq_delta || rev->last_ack != seq + f->seq_delta) {
        kvs_count(KVS_R_REQ_KEPT_UNACKED);
        return 0;
    }
    __sync_fetch_and_or(KVS_FLOW_STATE_WORD(f), bit);
    __sync_fetch_and_or(KVS_FLOW_STATE_WORD(rev), bit);
    /* The dataplane replaces these entries: an idleness still marked would be lost uncounted. */
    kvs_idle_end(f);
    return 1;
}

/* Per-packet request tracking: the next byte and last ACK of this direction; returns 1 when a
 * client segment is a request boundary (the caller hands it to the dataplane). A request starts
 * only where the previous one ended (the client->server entry's resp_end, END set: written by
 * the dataplane for the requests it binds, by kvs_xdp_req for those XDP keeps). A body segment
 * that merely begins with capitals is none; a request head that arrives after later bytes (its
 * first segment lost before the appliance) is counted but is no boundary: those bytes already
 * went to the connection's backend. `no_boundary`: count only (the segment carries the client's
 * FIN). */
static __always_inline int kvs_track(struct xdp_md *ctx, const struct kvs_pkt *pkt,
                                     const struct kvs_flow_key *key, struct kvs_flow *f,
                                     int no_boundary, int fin_taken) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 seq = bpf_ntohl(pkt->tcp->seq), end;
    __u32 off = pkt->l4_off + pkt->tcp_hlen;
    __u32 len = pkt->payload_len;
    __u8 flags = pkt->tcp->flags;
    const __u8 *p;

    /* Never backwards: a segment the network delayed must not undo a later acknowledgment. On a
     * segment at the bytes seen (in-order segments and pure ACKs of a sender whose bytes all
     * passed here), up to KVS_SEQ_SLACK ahead without a look; otherwise only when it acknowledges
     * what the other side sent (the reverse lookup, a rare path): a forged ACK far ahead (the SNAT
     * port guessed) stopped the connection's request boundaries until real ACKs caught up with it,
     * and a blind sweep of forged ones walked it 4 MiB at a time to a value of its choosing. */
    if (flags & KVS_TCP_ACK) {
        __u32 a = bpf_ntohl(pkt->tcp->ack_seq), d = a - f->last_ack;

        if ((__s32)d > 0 && ((seq == f->next_seq && d <= KVS_SEQ_SLACK) ||
                             kvs_xdp_rev_check(key, f, a, KVS_REV_ACK_PLAUSIBLE)))
            f->last_ack = a;
    }
    if (len) {
        p = (const __u8 *)data + (off & 0xff);
        /* Read within the payload, not the frame: Ethernet padding after a 1-byte "P" made
         * it a request head (counted, and the connection's steering stopped). */
        if (f->dir == KVS_DIR_C2S && seq == f->resp_end && (f->resp & KVS_RESP_END) && len >= 3 &&
            (const void *)(p + 3) <= data_end && p[0] >= 'A' && p[0] <= 'Z' && p[1] >= 'A' &&
            p[1] <= 'Z' && p[2] >= 'A' && p[2] <= 'Z') {
            if (seq == f->next_seq && !no_boundary &&
                kvs_xdp_boundary(key, seq, bpf_ntohl(pkt->tcp->ack_seq)))
                return 1;
            f->msgs += 1; /* a request the backend answers in turn */
            kvs_xdp_req(ctx, off, len, seq, f);
        } else if (f->dir == KVS_DIR_S2C) {
            const int h = len >= 5 && (const void *)(p + 5) <= data_end && p[0] == 'H';

            /* A head at the stream's end where the previous response was not seen to end. */
            if (h && seq == f->next_seq && seq != f->resp_end && p[1] == 'T' && p[2] == 'T' &&
                p[3] == 'P' && p[4] == '/' && kvs_xdp_resync(key, f))
                f->resp_end = seq;
            if (h || f->resp & KVS_RESP_CHUNKED ||
                ((f->resp & KVS_RESP_END) && (__s32)(seq - f->resp_end) > 0))
                kvs_xdp_resp(ctx, off, len, seq, f);
        }
    }
    /* A FIN counts where kvs_forward took it (`fin_taken`: in order and acknowledging what the
     * endpoint takes, kvs_close_plausible; with ACK): one the endpoint discards moved the bytes
     * seen past the client's next request, which was then no boundary. */
    end = seq + len + (fin_taken && f->next_seq - seq <= len ? 1 : 0);
    /* Within KVS_SEQ_SLACK only, and never a SYN's (a new ISN forwarded on a live flow): a
     * forged or stale segment far ahead stopped the connection's boundaries for good. Only bytes
     * or a FIN move it: a bare ACK or RST ahead (a blind sweep of forged ones) moved it to where
     * a second forged RST was then exact (kvs_close_plausible); bytes past a hole, or overlapping
     * the bytes seen (a blind attacker's segment across next_seq moved it to an end of its
     * choosing, where its RST was then exact: ~6M packets over the sequence space), only with an
     * acknowledgment of what the other side sent (kvs_xdp_rev_check). In order: no lookup. */
    if (end != seq && (__s32)(end - f->next_seq) > 0 && end - f->next_seq <= KVS_SEQ_SLACK &&
        !(flags & KVS_TCP_SYN) &&
        (seq == f->next_seq ||
         ((flags & KVS_TCP_ACK) &&
          kvs_xdp_rev_check(key, f, bpf_ntohl(pkt->tcp->ack_seq), KVS_REV_ACK_PLAUSIBLE)))) {
        f->next_seq = end;
        /* The client's new bytes, taken, end its connection's idleness (a boundary ended it
         * already: the dataplane replaces the entries). Only taken ones: any segment ahead of
         * the bytes seen did, half of all sequence numbers, so two forged bytes made a pooled
         * idle connection count in flight. After the request count and next_seq (an atomic
         * clear, not behind a plain read): kvs_xdp_idle on another CPU either sees them in its
         * re-check after its swap, or its IDLE is cleared here. */
        if (f->dir == KVS_DIR_C2S && len) kvs_idle_end(f);
    }
    /* The response's bytes all passed with this segment: the connection may be idle now. Also
     * when this one did not move the bytes seen: a head that arrived after its body (reordered)
     * told where the response ends only now (it was never idle then, and counted in flight until
     * its next request). kvs_xdp_idle counts an idleness once. */
    if (f->dir == KVS_DIR_S2C && len && f->next_seq == f->resp_end && (f->resp & KVS_RESP_END))
        kvs_xdp_idle(key, f);
    return 0;
}

/* Sends a rewritten frame where `f` says: out of its tx_ifindex (XDP_REDIRECT, through
 * kvs_tx_ports when the port is there, bpf_redirect() otherwise), else back out (XDP_TX). */
static __always_inline int kvs_send(const struct kvs_flow *f, __u32 tx_reason,
                                    __u32 redirect_reason) {
    if (f->tx_ifindex) {
        long r = bpf_redirect_map(&kvs_tx_ports, f->tx_ifindex, XDP_PASS);

        if (r != XDP_REDIRECT) r = bpf_redirect(f->tx_ifindex, 0);
        return kvs_verdict(r == XDP_REDIRECT ? redirect_reason : KVS_R_DROP_NO_TX_PORT, (int)r);
    }
    return kvs_verdict(tx_reason, XDP_TX);
}

/* A segment of a bound connection handed to the dataplane (a request boundary, or any segment
 * while one is being bound again): the client's is tagged (KVS_TCP_RES_PUNT_BOUND), so that the
 * dataplane never takes it for a new connection whatever its ACK says of the cookie. */
static __always_inline int kvs_punt_bound(struct xdp_md *ctx, struct kvs_pkt *pkt,
                                          const struct kvs_flow *f, __u32 reason) {
    if (f->dir == KVS_DIR_C2S) kvs_tcp_res_bits(pkt->tcp, KVS_TCP_RES_PUNT_BOUND, 1);
    return kvs_punt(ctx, reason);
}

static __always_inline int kvs_forward(struct xdp_md *ctx, struct kvs_pkt *pkt,
                                       const struct kvs_flow_key *key, struct kvs_flow *f) {
    void *data_end = (void *)(long)ctx->data_end;
    __u8 flags = pkt->tcp->flags;
    int fin_after;

    if (f->state & KVS_FLOW_REBINDING) return kvs_punt_bound(ctx, pkt, f, KVS_R_PUNT_REBINDING);
    /* CLOCK_MONOTONIC at tick resolution: the precise clock costs ~30 ns a packet here, and
     * idle expiry needs no better than milliseconds. */
    f->last_seen_ns = bpf_ktime_get_coarse_ns();
    f->packets += 1;
    f->bytes += pkt->frame_len;
    /* A client FIN on a segment with bytes: the bytes (a request in them is counted, never a
     * boundary) before the FIN, whose close waits while that request's response is owed. */
    if ((flags & (KVS_TCP_FIN | KVS_TCP_RST)) && !kvs_close_plausible(pkt, key, f)) {
        kvs_count(KVS_R_CLOSE_OUT_OF_WINDOW);
        flags &= (__u8) ~(KVS_TCP_FIN | KVS_TCP_RST);
    }
    /* The endpoint drops a FIN without ACK on an established connection (Linux: the segment
     * is discarded): forwarded for it to judge, it closes nothing here. Counted closed, a client
     * sending one kept its connection open with its backend's in-flight count one lower and its
     * requests never steered again. */
    if ((flags & (KVS_TCP_FIN | KVS_TCP_RST | KVS_TCP_ACK)) == KVS_TCP_FIN) {
        kvs_count(KVS_R_FIN_WITHOUT_ACK);
        flags &= (__u8)~KVS_TCP_FIN;
    }
    fin_after = (flags & (KVS_TCP_FIN | KVS_TCP_RST)) == KVS_TCP_FIN && f->dir == KVS_DIR_C2S &&
                pkt->payload_len;
    if ((flags & (KVS_TCP_FIN | KVS_TCP_RST)) && !fin_after)
        kvs_xdp_fin_rst(key, flags, bpf_ntohl(pkt->tcp->seq) + pkt->payload_len);
    if (kvs_track(ctx, pkt, key, f, fin_after,
                  (flags & (KVS_TCP_FIN | KVS_TCP_ACK)) == (KVS_TCP_FIN | KVS_TCP_ACK)))
        return kvs_punt_bound(ctx, pkt, f, KVS_R_PUNT_REQUEST_BOUNDARY);
    if (fin_after) kvs_xdp_fin_rst(key, flags, bpf_ntohl(pkt->tcp->seq) + pkt->payload_len);
    /* The newest TSval the client was sent (a moved connection's timestamps go on from it): a
     * delayed segment's older one does not take it back. The dataplane starts it at install. A
     * compare-and-swap: two CPUs forwarding one leg's segments at once (RSS moved, a
     * retransmission on another queue) could each write back their own, the newer lost, and a
     * moved connection then sent the client TSvals below ones it had seen (PAWS drops them). */
    if (f->dir == KVS_DIR_S2C && pkt->opts.ts_off) {
        __u32 tsv = pkt->opts.tsval + f->tsval_delta;
        int i;

        for (i = 0; i < 3; i++) {
            __u32 cur = *(volatile __u32 *)&f->ts_last;

            if ((__s32)(tsv - cur) <= 0 ||
                __sync_val_compare_and_swap(&f->ts_last, cur, tsv) == cur)
                break;
        }
    }
    if (kvs_flow_rewrite(data_end, pkt, f)) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_send(f, f->dir == KVS_DIR_S2C ? KVS_R_TX_FWD_S2C : KVS_R_TX_FWD_C2S,
                    KVS_R_REDIRECT_FWD);
}

/* An ICMP or ICMPv6 packet: an error about a packet a bound flow sent goes on to the host on the
 * other leg, rewritten (icmp.h); anything else goes to the kernel. Global, with its own parse:
 * errors are rare, and this is verified once, off the fast path's stack. */
__attribute__((noinline)) int kvs_xdp_icmp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_icmp_err e;
    struct kvs_flow_key k, rk;
    struct kvs_flow *f, *r;
    struct kvs_pkt pkt;
    __u32 reason;
    int st;

    if (kvs_parse(data, data_end, &pkt) != KVS_PARSE_NOT_TCP)
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    st = kvs_icmp_parse(data_end, &pkt, &e);
    if (st == KVS_ICMP_BAD_QUOTE) return kvs_verdict(KVS_R_PASS_ICMP_BAD_QUOTE, XDP_PASS);
    if (st != KVS_ICMP_OK) return kvs_verdict(KVS_R_PASS_ICMP, XDP_PASS);
    /* F answers the quoted packet; R (its reverse, of the same installation: kvs_twin) produced
     * it. Both or nothing: an old leg's leftover entry would rewrite the quote with another
     * flow's sequence delta. */
    if (kvs_icmp_flow_key(data_end, &pkt, &e, &k))
        return kvs_verdict(KVS_R_PASS_ICMP_NO_FLOW, XDP_PASS);
    f = bpf_map_lookup_elem(&kvs_flows, &k);
    if (!f) return kvs_verdict(KVS_R_PASS_ICMP_NO_FLOW, XDP_PASS);
    r = kvs_twin(&k, f, &rk);
    if (!r) return kvs_verdict(KVS_R_PASS_ICMP_NO_FLOW, XDP_PASS);
    if (f->dir == KVS_DIR_C2S && e.icmp && (void *)(e.icmp + 1) <= data_end) {
        /* MTU 0 too: it read as "not a path-MTU error" and was relayed (Linux takes 552). */
        if (kvs_icmp_below_relay_floor(e.icmp, pkt.ip6 != 0))
            return kvs_verdict(KVS_R_DROP_ICMP_MTU_BELOW_FLOOR, XDP_DROP);
    }
    if (kvs_icmp_rewrite(data_end, &pkt, &e, f, r->seq_delta))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    reason = f->dir == KVS_DIR_S2C ? KVS_R_ICMP_FWD_TO_CLIENT : KVS_R_ICMP_FWD_TO_BACKEND;
    return kvs_send(f, reason, reason);
}

/* A client SYN to a VIP whose 4-tuple still has a flow entry. Clients reuse a port as soon as
 * their old connection on it is gone, well inside the closed-flow linger: an entry closed by
 * the client's FIN or by either side's RST belongs to a finished connection, so both directions
 * are deleted (the dataplane's sweeper returns the SNAT port) and the SYN gets a cookie like any
 * other. Returns 1 for a live flow: the SYN goes to its backend, whose challenge ACK makes the
 * client reset the old connection (RFC 5961), after which its next SYN finds the flow closed.
 * A client FIN whose response is still owed left the flow open (kvs_xdp_fin_rst): live too (the
 * client still holds its half-closed socket, so no SYN of its own reuses the port; a spoofed one
 * deleted the flow, and the response was lost). */
__attribute__((noinline)) int kvs_xdp_syn_on_flow(const struct kvs_flow_key *key) {
    struct kvs_flow_key rk;
    struct kvs_flow *f, *rev;
    __u8 st;

    if (!key) return 0;
    f = bpf_map_lookup_elem(&kvs_flows, key);
    if (!f) return 0;
    st = f->state;
    rev = kvs_twin(key, f, &rk);
    if (rev && (rev->state & KVS_FLOW_RST)) st |= KVS_FLOW_RST;
    if (!(st & (KVS_FLOW_FIN_IN | KVS_FLOW_RST)) ||
        (!(st & KVS_FLOW_RST) && !(st & KVS_FLOW_CLOSED))) {
        kvs_count(KVS_R_SYN_ON_LIVE_FLOW);
        return 1;
    }
    /* Closed by now; kvs_close_pair counts a close only once (the sweeper never sees entries
     * deleted here). */
    kvs_close_pair(f, rev);
    bpf_map_delete_elem(&kvs_flows, key);
    if (rev) bpf_map_delete_elem(&kvs_flows, &rk);
    kvs_count(KVS_R_FLOW_REUSED);
    return 0;
}

/* ---- a fleet of appliances (abi.h; bpf/README.md "Fleet") ---------------------------------
 * A frame between appliances is decapsulated first thing; a client packet to a VIP that misses
 * the flow map is sent on to the bucket's owner, then to its previous owners, and answered with
 * a RST once nobody is left. Global functions: off the fast path, verified once. */

static __always_inline struct kvs_fleet *kvs_fleet_get(void) {
    __u32 zero = 0;
    struct kvs_fleet *fl = bpf_map_lookup_elem(&kvs_fleet, &zero);

    return kvs_fleet_on(fl) ? fl : 0;
}

/* A KVS_ETH_P_FLEET frame: checked and decapsulated in place (the frame then starts with its
 * restored Ethernet header). Returns KVS_FLEET_AT(hop, from), or 0: dropped and counted. */
__attribute__((noinline)) int kvs_xdp_fleet_decap(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_fleet *fl = kvs_fleet_get();
    struct kvs_config *cfg;
    __u32 zero = 0, at;

    if (!fl) {
        kvs_count(KVS_R_FLEET_DROP_NOT_IN_FLEET);
        return 0;
    }
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    at = cfg ? kvs_fleet_decap(data, data_end, fl, cfg->appliance_mac) : 0;
    if (!at || bpf_xdp_adjust_head(ctx, (int)sizeof(struct kvs_fleet_hdr))) {
        kvs_count(KVS_R_FLEET_DROP_BAD_HEADER);
        return 0;
    }
    kvs_count(KVS_R_FLEET_DECAP);
    return (int)at;
}

/* A ping from another member is answered in place (XDP_TX); a pong's sequence number is stored
 * in kvs_fleet_heard (abi.h, "liveness"). Returns the verdict, or -1: not a ping or pong. */
__attribute__((noinline)) int kvs_xdp_fleet_beat(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 zero = 0, id;
    /* Not kvs_fleet_get(): an appliance not yet in any epoch (a joiner before its push) answers
     * too, once kvsteerd wrote the fleet with its MAC (kvs_fleet_beat checks). */
    struct kvs_fleet *fl = bpf_map_lookup_elem(&kvs_fleet, &zero);
    __u64 seq = 0, *h;
    __u16 heard = 0;
    __u8 from = 0;
    int b;

    if (!fl || !fl->generation) return -1; /* decap counts it */
    b = kvs_fleet_beat(data, data_end, fl, bpf_ktime_get_ns(), &from, &seq, &heard);
    if (b == KVS_FLEET_BEAT_NONE) return -1;
    if (b == KVS_FLEET_BEAT_ANSWER) return kvs_verdict(KVS_R_FLEET_PING_ANSWERED, XDP_TX);
    if (b != KVS_FLEET_BEAT_HEARD) return kvs_verdict(KVS_R_FLEET_DROP_BAD_PING, XDP_DROP);
    /* What it says, in one word with the ping it answers (the pinger trusts only a recent one). */
    id = KVS_FLEET_HEARD_SAYS(from);
    h = bpf_map_lookup_elem(&kvs_fleet_heard, &id);
    if (h) *h = (seq << 32) | heard;
    id = from;
    h = bpf_map_lookup_elem(&kvs_fleet_heard, &id);
    if (h) *h = seq;
    return kvs_verdict(KVS_R_FLEET_PONG_HEARD, XDP_DROP);
}

/* Sends the (untagged) frame on to appliance `to`, encapsulated with `hop` (with
 * KVS_FLEET_HOP_UNSURE when the chase is unsure); XDP_TX (the appliances share a segment). */
__attribute__((noinline)) int kvs_xdp_fleet_send(struct xdp_md *ctx, __u32 to, __u32 hop) {
    struct kvs_fleet *fl = kvs_fleet_get();
    struct kvs_config *cfg;
    void *data, *data_end;
    __u32 zero = 0;

    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!fl || !cfg || to >= KVS_MAX_APPLIANCES) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct kvs_fleet_hdr)))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    KVS_RELOAD_FRAME(ctx, data, data_end);
    if (kvs_fleet_encap(data, data_end, fl->members[to].mac, cfg->appliance_mac,
                        (__u8)(hop | KVS_FLEET_TAG(fl->digest)), fl->self))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_verdict((hop & KVS_FLEET_HOP_BITS) == 1 ? KVS_R_FLEET_TO_OWNER : KVS_R_FLEET_TO_PREV,
                       XDP_TX);
}

/* A client packet no appliance has a flow for: answered with a RST built in place (a RST is
 * never answered, only dropped). */
__attribute__((noinline)) int kvs_xdp_fleet_orphan(struct xdp_md *ctx, __u32 at) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_fleet_rst r;
    struct kvs_config *cfg;
    struct kvs_fleet *fl;
    struct kvs_pkt pkt;
    __u32 zero = 0;
    int delta;

    if (kvs_parse(data, data_end, &pkt) != KVS_PARSE_OK || !pkt.tcp)
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    if (pkt.tcp->flags & KVS_TCP_RST) return kvs_verdict(KVS_R_FLEET_DROP_RST_ORPHAN, XDP_DROP);
    fl = kvs_fleet_get();
    if (at & KVS_FLEET_UNSURE) return kvs_verdict(KVS_R_FLEET_DROP_ORPHAN_UNSURE, XDP_DROP);
    if (fl && bpf_ktime_get_ns() - fl->changed_ns < KVS_FLEET_SETTLE_NS)
        return kvs_verdict(KVS_R_FLEET_DROP_ORPHAN_UNSETTLED, XDP_DROP);
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    if (kvs_fleet_rst_plan(&pkt, cfg->appliance_mac, &r))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    delta = (int)r.frame_len - (int)pkt.frame_len;
    if (delta && bpf_xdp_adjust_tail(ctx, delta))
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    KVS_RELOAD_FRAME(ctx, data, data_end);
    if (kvs_fleet_rst_write(data, data_end, &r)) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    return kvs_verdict(KVS_R_FLEET_RST_ORPHAN, XDP_TX);
}

/* The owner (or prev[i]) missed too: on to the next previous owner, or the orphan's RST. A
 * receiver whose own table gives it another role than the sender's hop says is unsure (it has
 * not applied the sender's table yet, or a newer one): its doubt goes on with the frame, and an
 * unsure orphan is dropped, never answered (kvs_fleet_role_agrees). */
__attribute__((noinline)) int kvs_xdp_fleet_chase(struct xdp_md *ctx, __u32 at, __u32 bucket) {
    struct kvs_fleet *fl = kvs_fleet_get();
    struct kvs_owner_entry *e;
    __u32 idx, next;

    if (!fl) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    idx = kvs_fleet_owner_index(fl, bucket);
    e = bpf_map_lookup_elem(&kvs_owner, &idx);
    if (e && !kvs_fleet_role_agrees(fl, e, at)) at |= KVS_FLEET_UNSURE;
    next = e ? kvs_fleet_next_prev(fl, e, at) : 0;
    if (next)
        return kvs_xdp_fleet_send(
            ctx, KVS_FLEET_FROM(next),
            KVS_FLEET_HOP(next) | ((at & KVS_FLEET_UNSURE) ? KVS_FLEET_HOP_UNSURE : 0));
    return kvs_xdp_fleet_orphan(ctx, at);
}

/* A client segment to a VIP with no flow: only a valid cookie lets it through to the
 * dataplane (data or FIN); a valid pure ACK carries no state and is dropped. Global, with its
 * own parse (options were validated by the caller), so the two SipHash checks are verified once.
 * In a fleet (`at`: where the frame is, KVS_FLEET_ROUTER when it came from the router) the
 * packet goes to the bucket's owner first; only the owner binds; what the owner cannot bind
 * goes on to the previous owners (kvs_xdp_fleet_chase). Tagged frames stay local. */
__attribute__((noinline)) int kvs_xdp_vip_no_flow(struct xdp_md *ctx, __u32 at) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct kvs_syn_scratch *sc; /* its tuple: off this frame (the 512-byte stack of the chain) */
    struct kvs_cookie_opts co;
    struct kvs_config *cfg;
    struct kvs_fleet *fl;
    struct kvs_pkt pkt;
    __u32 zero = 0, bucket = 0, hop = KVS_FLEET_HOP(at);
    __u8 flags;
    __u64 slot;

    if (kvs_parse(data, data_end, &pkt) != KVS_PARSE_OK || !pkt.tcp)
        return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    flags = pkt.tcp->flags;
    fl = kvs_fleet_get();
    if (fl && pkt.vlan) {
        kvs_count(KVS_R_FLEET_VLAN_LOCAL);
        fl = 0;
    }
    if (fl) {
        struct kvs_owner_entry *e;
        struct kvs_flow_key k;
        __u32 idx, owner;

        kvs_flow_key_of(&pkt, &k);
        bucket = kvs_fleet_bucket(&k);
        idx = kvs_fleet_owner_index(fl, bucket);
        e = bpf_map_lookup_elem(&kvs_owner, &idx);
        if (hop == 0) {
            owner = e ? kvs_fleet_remote_owner(fl, e) : KVS_APPLIANCE_NONE;
            if (owner != KVS_APPLIANCE_NONE && !(flags & KVS_TCP_SYN))
                return kvs_xdp_fleet_send(ctx, owner, 1);
        }
        if (hop >= 2 && !(flags & KVS_TCP_SYN)) return kvs_xdp_fleet_chase(ctx, at, bucket);
        /* The owner's miss of a client RST: the previous owners first (they hold the flows bound
         * before the last change); with none left, its own dataplane may be binding the flow
         * (no entry yet), so the RST goes on as on a single appliance (below). Before, it was
         * always chased, and with nobody to ask dropped: the binding went on. */
        if ((flags & KVS_TCP_RST) && e && kvs_fleet_next_prev(fl, e, at))
            return kvs_xdp_fleet_chase(ctx, at, bucket);
    }
    /* A client's RST with the ACK of a valid cookie (RST|ACK: how Linux aborts a connection) may
     * end a binding in progress: the dataplane holds its flight (no flow entry yet) and checks
     * the RST's window itself (none held: counted dropped there). Before, XDP dropped every RST
     * without a flow: a client that gave up while its flight was held still had its request
     * bound and computed, and a slow head held its slot until the idle timeout. */
    if ((flags & KVS_TCP_RST) && !(flags & KVS_TCP_ACK))
        return kvs_verdict(KVS_R_DROP_RST_NO_FLOW, XDP_DROP);
    if ((flags & KVS_TCP_SYN) || !(flags & KVS_TCP_ACK))
        return kvs_verdict(KVS_R_DROP_BAD_COOKIE, XDP_DROP);
    cfg = bpf_map_lookup_elem(&kvs_config, &zero);
    if (!cfg || !kvs_cookie_key_set(kvs_config_sign_key(cfg)))
        return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    sc = bpf_map_lookup_elem(&kvs_syn_scratch, &zero);
    if (!sc) return kvs_verdict(KVS_R_DROP_NO_CONFIG, XDP_DROP);
    kvs_cookie_tuple_of(&pkt, &sc->t);
    slot = kvs_cookie_slot(bpf_ktime_get_tai_ns(), cfg->cookie_period_s);
    if (!kvs_cookie_check(&cfg->cookie_key[0][0], &sc->t, bpf_ntohl(pkt.tcp->ack_seq) - 1, slot,
                          &co))
        return fl ? kvs_xdp_fleet_chase(ctx, at, bucket)
                  : kvs_verdict(
                        (flags & KVS_TCP_RST) ? KVS_R_DROP_RST_NO_FLOW : KVS_R_DROP_BAD_COOKIE,
                        XDP_DROP);
    if (pkt.payload_len == 0 && !(flags & (KVS_TCP_FIN | KVS_TCP_RST)))
        return kvs_verdict(KVS_R_DROP_PURE_ACK, XDP_DROP);
    return kvs_punt(ctx, (flags & KVS_TCP_RST) ? KVS_R_PUNT_CLIENT_RST : KVS_R_PUNT_FIRST_FLIGHT);
}

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
    __u32 at = KVS_FLEET_ROUTER;
    __u8 flags;
    int st;

    /* Between appliances (a fleet): the frame is decapsulated before anything reads it. */
    if ((void *)((struct kvs_ethhdr *)data + 1) <= data_end &&
        ((struct kvs_ethhdr *)data)->proto == bpf_htons(KVS_ETH_P_FLEET)) {
        st = kvs_xdp_fleet_beat(ctx);
        if (st >= 0) return st;
        at = (__u32)kvs_xdp_fleet_decap(ctx);
        if (!at) return XDP_DROP; /* counted there */
        KVS_RELOAD_FRAME(ctx, data, data_end);
    }
    st = kvs_parse(data, data_end, &pkt);
    if (st == KVS_PARSE_OK && pkt.opts_pending)
        st = kvs_xdp_parse_opts(ctx, pkt.l4_off + sizeof(struct kvs_tcphdr),
                                pkt.tcp_hlen - sizeof(struct kvs_tcphdr), &pkt.opts);
    if (st != KVS_PARSE_OK) {
        __u32 r = kvs_parse_reason(st, pkt.l4proto);

        if (r == KVS_R_PASS_ICMP) return kvs_xdp_icmp(ctx);
        return kvs_verdict(
            r, (r == KVS_R_DROP_TRUNCATED || r == KVS_R_DROP_MALFORMED) ? XDP_DROP : XDP_PASS);
    }
    if (!pkt.tcp) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
    /* Odd options Linux leaves unread too: the segment goes on, counted (not a verdict). */
    if (pkt.opts.ignored) kvs_count(KVS_R_TCP_OPTS_IGNORED);
    flags = pkt.tcp->flags;
    kvs_flow_key_of(&pkt, &key);

    if ((flags & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN) {
        if (!kvs_xdp_is_vip(&key)) return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
        /* SYN+FIN, SYN+RST: no connection starts so (RFC 9293; Linux drops them). They got a
         * SYN-ACK, which told a scanner a port was open. */
        if (flags & (KVS_TCP_FIN | KVS_TCP_RST)) return kvs_verdict(KVS_R_DROP_MALFORMED, XDP_DROP);
        /* A SYN to a group address (broadcast, multicast) is not to us: the SYN-ACK would leave
         * from that address, and every appliance on the segment would answer (Linux drops it). */
        if (pkt.eth->dst[0] & 1) return kvs_verdict(KVS_R_DROP_SYN_NOT_UNICAST, XDP_DROP);
        /* Nor from one (or from no host): a SYN-ACK to a multicast, broadcast, unspecified or
         * loopback source answers no client (Linux drops such martians before TCP sees them). */
        if (kvs_src_not_unicast(&key)) return kvs_verdict(KVS_R_DROP_SYN_NOT_UNICAST, XDP_DROP);
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
    if (kvs_xdp_is_vip(&key)) return kvs_xdp_vip_no_flow(ctx, at);
    if (kvs_xdp_is_snat(&key)) return kvs_punt(ctx, KVS_R_PUNT_BACKEND_OTHER);
    return kvs_verdict(KVS_R_PASS_NOT_OURS, XDP_PASS);
}

#endif /* KVSTEER_STEER_BPF_H */
