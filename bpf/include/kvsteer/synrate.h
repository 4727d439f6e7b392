/* SYN-ACKs per source prefix: a token bucket per client /24 (IPv4) or /48 (IPv6), so a flood of
 * SYNs spoofing one network's addresses cannot make the appliance reflect SYN-ACKs at it beyond
 * a set rate. The same code in XDP (an LRU map of buckets) and the pure-DPDK workers. */
#ifndef KVSTEER_SYNRATE_H
#define KVSTEER_SYNRATE_H

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"

struct kvs_syn_bucket {
    __u64 last_ns;      /* when the bucket was last refilled */
    __u64 tokens_milli; /* SYN-ACKs it may still send, x 1000 */
};

/* The bucket key of a SYN's source: its /24 or /48, with the family in the top byte. */
KVS_INLINE __u64 kvs_syn_prefix_key(const struct kvs_pkt *pkt) {
    if (pkt->ip4) return (4ull << 56) | (kvs_ntohl(pkt->ip4->saddr) >> 8);
    if (pkt->ip6) {
        const __u8 *a = (const __u8 *)pkt->ip6->saddr;

        return (6ull << 56) | ((__u64)a[0] << 40) | ((__u64)a[1] << 32) | ((__u64)a[2] << 24) |
               ((__u64)a[3] << 16) | ((__u64)a[4] << 8) | a[5];
    }
    return 0;
}

/* A fresh bucket, full (burst), as of now. */
KVS_INLINE void kvs_syn_bucket_init(struct kvs_syn_bucket *b, __u64 now, __u32 burst) {
    b->last_ns = now;
    b->tokens_milli = (__u64)(burst ? burst : 1) * 1000;
}

/* Refills at `rate` a second up to `burst`, then takes one SYN-ACK: 1 if one was left. The time
 * whose tokens the integer division cut off stays in the bucket (last_ns moves only as far as the
 * tokens added pay for): else SYNs a few microseconds apart (the pure-DPDK workers' clock) never
 * refilled it, and a prefix sending steadily was refused for good. */
KVS_INLINE int kvs_syn_bucket_take(struct kvs_syn_bucket *b, __u64 now, __u32 rate, __u32 burst) {
    __u64 cap = (__u64)(burst ? burst : 1) * 1000, el = now - b->last_ns, t, add;

    if (now < b->last_ns) el = 0;
    if (el > 10000000000ull) el = 10000000000ull; /* 10 s refills any bucket; no overflow */
    if (rate > 10000000u) rate = 10000000u;
    add = el * rate / 1000000u; /* rate/s x el ns x 1000 / 1e9 */
    t = b->tokens_milli + add;
    if (t >= cap || !rate) {
        b->tokens_milli = t > cap ? cap : t;
        b->last_ns = now;
    } else {
        b->tokens_milli = t;
        b->last_ns = now - (el * rate - add * 1000000u) / rate;
    }
    if (b->tokens_milli < 1000) return 0;
    b->tokens_milli -= 1000;
    return 1;
}

#endif /* KVSTEER_SYNRATE_H */
