/* Stateless SYN-cookie codec: SipHash-2-4 MAC over the 4-tuple and a coarse time slot, with the
 * client's MSS/WS/SACK-permitted packed into our ISN. */
#ifndef KVSTEER_COOKIE_H
#define KVSTEER_COOKIE_H

#include "kvsteer/siphash.h"
#include "kvsteer/parse.h"

/* Cookie (our ISN) layout, most significant bit first:
 *   [31:30] time slot & 3    lets the checker pick the slot without trying several
 *   [29:22] option byte XOR  (h >> 22): MSS index(3) | window scale(4, 15 = none) | SACK-ok(1)
 *   [21:0]  h & 0x3fffff     the MAC
 * h = SipHash-2-4(key; saddr, daddr, sport | dport | slot). A cookie is valid in the slot it was
 * made in and the next one (period 64 s: 64..128 s of life), and in the one before (a signer
 * whose clock runs up to a slot ahead: kvs_cookie_check), under either key.
 * The client's ISN is deliberately NOT in the MAC: every segment of the client's first flight
 * carries ack = cookie + 1 but only the first has seq = ISN + 1, and all of them must validate
 * (they can arrive in any order, or the first can be lost).
 * Our SYN-ACK's TSval is (h >> 32) + the client's ISN: every segment of the first flight echoes
 * it (TSecr), so the checker recovers the client's ISN from any of them, knowing for sure where
 * the stream starts even when the first segment was lost (Linux mixes the ISN into its cookie
 * for the same reason). Clients without timestamps get no such proof. */
#define KVS_COOKIE_DEFAULT_PERIOD_S 64u
#define KVS_COOKIE_MAC_BITS 22
#define KVS_COOKIE_MAC_MASK 0x3fffffu
#define KVS_COOKIE_MSS_N 8
#define KVS_COOKIE_WS_NONE 15

/* MSS values a cookie can carry; the client's MSS is rounded down to one of them. */
#define KVS_COOKIE_MSS_TABLE \
    { 536, 1220, 1300, 1360, 1400, 1440, 1460, 8960 }

/* The connection as the client's SYN carried it (client -> VIP), network order; IPv4 in
 * saddr[0]/daddr[0], the rest zero. Build it with kvs_cookie_tuple_of(). */
struct kvs_cookie_tuple {
    __u32 saddr[4];
    __u32 daddr[4];
    __u16 sport;
    __u16 dport;
    __u32 pad;
};

KVS_INLINE void kvs_cookie_tuple_of(const struct kvs_pkt *pkt, struct kvs_cookie_tuple *t) {
    __builtin_memset(t, 0, sizeof(*t));
    if (pkt->ip4) {
        t->saddr[0] = pkt->ip4->saddr;
        t->daddr[0] = pkt->ip4->daddr;
    } else if (pkt->ip6) {
        kvs_copy_addr6(t->saddr, pkt->ip6->saddr);
        kvs_copy_addr6(t->daddr, pkt->ip6->daddr);
    }
    t->sport = pkt->tcp->source;
    t->dport = pkt->tcp->dest;
}

/* Options recovered from a cookie. */
struct kvs_cookie_opts {
    __u16 mss;      /* from KVS_COOKIE_MSS_TABLE (536 when the SYN had no MSS) */
    __u8 wscale;    /* KVS_WSCALE_NONE when the SYN had no window scale */
    __u8 sack_perm; /* 1 when the SYN had SACK-permitted */
    __u32 ts_base;  /* our SYN-ACK's TSval minus the client's ISN (see the layout above) */
};

/* Time slot of a TAI time (ns). Userspace passes kvs_cookie_now_tai_ns(), BPF
 * bpf_ktime_get_tai_ns(), so two appliances with synced clocks agree. */
KVS_INLINE __u64 kvs_cookie_slot(__u64 tai_ns, __u32 period_s) {
    __u64 p = period_s ? period_s : KVS_COOKIE_DEFAULT_PERIOD_S;
    return (tai_ns / 1000000000ull) / p;
}

KVS_INLINE __u8 kvs_cookie_pack_opts(__u16 mss, __u8 wscale, __u8 sack_perm) {
    static const __u16 table[KVS_COOKIE_MSS_N] = KVS_COOKIE_MSS_TABLE;
    __u8 idx = 0, ws;
    int i;

    for (i = KVS_COOKIE_MSS_N - 1; i > 0; i--) {
        if (mss >= table[i]) {
            idx = (__u8)i;
            break;
        }
    }
    /* RFC 7323 caps the shift at 14. */
    ws = wscale == KVS_WSCALE_NONE ? KVS_COOKIE_WS_NONE : (wscale > 14 ? 14 : wscale);
    return (__u8)((idx << 5) | (ws << 1) | (sack_perm ? 1 : 0));
}

KVS_INLINE struct kvs_cookie_opts kvs_cookie_unpack_opts(__u8 data) {
    static const __u16 table[KVS_COOKIE_MSS_N] = KVS_COOKIE_MSS_TABLE;
    struct kvs_cookie_opts o;
    __u8 ws = (data >> 1) & 0x0f;

    o.mss = table[(data >> 5) & 7];
    o.wscale = ws == KVS_COOKIE_WS_NONE ? KVS_WSCALE_NONE : ws;
    o.sack_perm = data & 1;
    return o;
}

KVS_INLINE __u64 kvs_cookie_hash(const __u64 *key, const struct kvs_cookie_tuple *t, __u64 slot) {
    __u64 m[5];

    m[0] = (__u64)t->saddr[0] | ((__u64)t->saddr[1] << 32);
    m[1] = (__u64)t->saddr[2] | ((__u64)t->saddr[3] << 32);
    m[2] = (__u64)t->daddr[0] | ((__u64)t->daddr[1] << 32);
    m[3] = (__u64)t->daddr[2] | ((__u64)t->daddr[3] << 32);
    m[4] = (__u64)t->sport | ((__u64)t->dport << 16) | (slot << 32);
    return kvs_siphash24_words(key[0], key[1], m, 5);
}

/* BPF routes the hash through a separately verified function (see steer.bpf.h). */
#ifndef KVS_COOKIE_HASH
#define KVS_COOKIE_HASH(key, t, slot) kvs_cookie_hash((key), (t), (slot))
#endif

/* Our SYN-ACK's TSval for the client ISN `client_isn`, from the cookie's hash `h`. */
KVS_INLINE __u32 kvs_cookie_tsval(__u64 h, __u32 client_isn) {
    return (__u32)(h >> 32) + client_isn;
}

/* Both values our SYN-ACK carries for a SYN of tuple `t` with ISN `client_isn`: the cookie
 * (our ISN) and the TSval (used only when the SYN-ACK has timestamps). */
KVS_INLINE void kvs_cookie_sign(const __u64 *key, const struct kvs_cookie_tuple *t, __u64 slot,
                                __u8 data, __u32 client_isn, __u32 *cookie, __u32 *tsval) {
    __u64 h = KVS_COOKIE_HASH(key, t, slot);

    *cookie = ((__u32)(slot & 3) << 30) |
              ((((__u32)data ^ (__u32)(h >> KVS_COOKIE_MAC_BITS)) & 0xff) << KVS_COOKIE_MAC_BITS) |
              ((__u32)h & KVS_COOKIE_MAC_MASK);
    *tsval = kvs_cookie_tsval(h, client_isn);
}

/* Our ISN for a SYN of tuple `t` in time slot `slot`, carrying option byte `data` (from
 * kvs_cookie_pack_opts). `key` is one SipHash key (2 words), normally kvs_config_sign_key(cfg). */
KVS_INLINE __u32 kvs_cookie_make(const __u64 *key, const struct kvs_cookie_tuple *t, __u64 slot,
                                 __u8 data) {
    __u32 cookie, tsval;

    kvs_cookie_sign(key, t, slot, data, 0, &cookie, &tsval);
    return cookie;
}

/* Recovers the client's ISN from a first-flight segment's TSecr and a checked cookie's opts;
 * returns 1 when it is consistent with the segment's seq (at most `max_off` bytes before it). */
KVS_INLINE int kvs_cookie_client_isn(const struct kvs_cookie_opts *o, __u32 tsecr, __u32 seq,
                                     __u32 max_off, __u32 *isn) {
    __u32 cand = tsecr - o->ts_base;

    if (seq - (cand + 1) > max_off) return 0;
    *isn = cand;
    return 1;
}

KVS_INLINE int kvs_cookie_key_set(const __u64 *key) {
    return (key[0] | key[1]) != 0;
}

/* Validates `cookie` (= the ACK number - 1 of any client segment before the flow exists) for
 * tuple `t` (client -> VIP) at time slot `now_slot` (signed in that slot, the one before or the
 * one after), under
 * keys[0..1] (current key) or keys[2..3] (previous; an all-zero key is never accepted), i.e.
 * &cfg->cookie_key[0][0]. On success
 * returns 1 and fills `out`; else 0. */
KVS_INLINE int kvs_cookie_check(const __u64 *keys, const struct kvs_cookie_tuple *t, __u32 cookie,
                                __u64 now_slot, struct kvs_cookie_opts *out) {
    /* The tag's distance from now: 0 this slot, 1 the one before, 3 the one after (a signer whose
     * clock runs up to a slot ahead: another fleet member, or one whose TAI offset differs; it
     * was refused, and the chase ended in a reset); 2 is too far either way. */
    __u64 d = (now_slot - (cookie >> 30)) & 3, slot;
    int k;

    if (d == 2 || (d == 1 && now_slot == 0)) return 0;
    slot = d == 3 ? now_slot + 1 : now_slot - d;
    for (k = 0; k < 2; k++) {
        __u64 h;

        if (!kvs_cookie_key_set(keys + 2 * k)) continue;
        h = KVS_COOKIE_HASH(keys + 2 * k, t, slot);
        if (((__u32)h & KVS_COOKIE_MAC_MASK) == (cookie & KVS_COOKIE_MAC_MASK)) {
            *out = kvs_cookie_unpack_opts(
                (__u8)((cookie >> KVS_COOKIE_MAC_BITS) ^ (__u32)(h >> KVS_COOKIE_MAC_BITS)));
            out->ts_base = kvs_cookie_tsval(h, 0);
            return 1;
        }
    }
    return 0;
}

#if !defined(__bpf__)
#include <time.h>
/* CLOCK_TAI now, in ns: the userspace twin of bpf_ktime_get_tai_ns(). */
static inline __u64 kvs_cookie_now_tai_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_TAI, &ts);
    return (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec;
}
#endif

#endif /* KVSTEER_COOKIE_H */
