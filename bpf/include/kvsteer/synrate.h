/* SYN-ACKs per source prefix: a token bucket per client /24 (IPv4) or /48 (IPv6), so a flood of
 * SYNs spoofing one network's addresses cannot make the appliance reflect SYN-ACKs at it beyond
 * a set rate. The same code in XDP (an LRU map of buckets) and the pure-DPDK workers. */
#ifndef KVSTEER_SYNRATE_H
#define KVSTEER_SYNRATE_H

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"

/* One prefix's bucket as a single word (GCRA, the token bucket's equivalent): the time at which it
 * would be full again had it been refilled at the rate since. A SYN-ACK is allowed when, with its
 * interval added, that time is at most `burst` intervals ahead of now. One word, so XDP's CPUs
 * take from it with a compare-and-swap: with two fields each CPU's read-modify-write could
 * overwrite another's, and a flood spread over N receive queues got up to N x the limit. */
struct kvs_syn_bucket {
    __u64 tat_ns;
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

/* A fresh bucket, full (`burst` SYN-ACKs at once), as of now. */
KVS_INLINE void kvs_syn_bucket_init(struct kvs_syn_bucket *b, __u64 now) {
    b->tat_ns = now;
}

/* The bucket's word after one more SYN-ACK at `now` (`rate` a second, `burst` at once), or 0 when
 * none may be sent. The interval is rounded up (never above the rate); the time since the bucket
 * was last full counts in full whatever the burst (no refill cap); a clock going backwards refills
 * nothing and credits no time twice. */
KVS_INLINE __u64 kvs_syn_bucket_next(__u64 tat, __u64 now, __u32 rate, __u32 burst) {
    __u64 t = rate ? (1000000000ull + rate - 1) / rate : 1, next = (tat > now ? tat : now) + t;

    return next - now > (__u64)(burst ? burst : 1) * t ? 0 : next;
}

/* Takes one SYN-ACK from the bucket at `now`: 1 if one was left. Safe when several CPUs take from
 * one bucket at once (a compare-and-swap, tried a few times; one that keeps losing to the others'
 * takes is refused, as the bucket is being emptied). */
KVS_INLINE int kvs_syn_bucket_take(struct kvs_syn_bucket *b, __u64 now, __u32 rate, __u32 burst) {
    int i;

    for (i = 0; i < 4; i++) {
        __u64 old = *(volatile __u64 *)&b->tat_ns,
              next = kvs_syn_bucket_next(old, now, rate, burst);

        if (!next) return 0;
        if (__sync_val_compare_and_swap(&b->tat_ns, old, next) == old) return 1;
    }
    return 0;
}

#endif /* KVSTEER_SYNRATE_H */
