/* Internet checksums: incremental updates (RFC 1624) and full computation. */
#ifndef KVSTEER_CSUM_H
#define KVSTEER_CSUM_H

#include "kvsteer/proto.h"

/* Differences are accumulated as a 64-bit sum of 32-bit words and folded once: the one's
 * complement sum is the same modulo 0xffff whatever the word size (2^16 == 1 mod 0xffff). */
KVS_INLINE __u16 kvs_csum_fold(__u64 s) {
    s = (s & 0xffffffffull) + (s >> 32);
    s = (s & 0xffffffffull) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

/* Adds the change of one 16-bit field (values as stored in the packet) to `acc`. */
KVS_INLINE __u64 kvs_csum_diff16(__u64 acc, __u16 old_v, __u16 new_v) {
    return acc + (__u16)~old_v + new_v;
}

/* Adds the change of one 32-bit field (values as stored in the packet) to `acc`. */
KVS_INLINE __u64 kvs_csum_diff32(__u64 acc, __u32 old_v, __u32 new_v) {
    return acc + (__u32)~old_v + new_v;
}

/* Change of a 32-bit field that starts at an ODD offset from the start of the checksummed
 * data: its bytes straddle the 16-bit words, and its contribution is the byte-swapped one. */
KVS_INLINE __u64 kvs_csum_diff32_odd(__u64 acc, __u32 old_v, __u32 new_v) {
    __u16 d = kvs_csum_fold(kvs_csum_diff32(0, old_v, new_v));

    return acc + (__u16)((d << 8) | (d >> 8));
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + sum(~m + m')). `check` as stored in the packet. */
KVS_INLINE __u16 kvs_csum_apply(__u16 check, __u64 acc) {
    return (__u16)~kvs_csum_fold((__u16)~check + acc);
}

/* One-shot update of a checksum for one changed 16-bit / 32-bit field. */
KVS_INLINE __u16 kvs_csum_replace16(__u16 check, __u16 old_v, __u16 new_v) {
    return kvs_csum_apply(check, kvs_csum_diff16(0, old_v, new_v));
}

KVS_INLINE __u16 kvs_csum_replace32(__u16 check, __u32 old_v, __u32 new_v) {
    return kvs_csum_apply(check, kvs_csum_diff32(0, old_v, new_v));
}

/* Sum of `len` bytes as 16-bit words in memory order (a trailing odd byte is padded with
 * zero), added to `sum`. For tests and userspace; BPF code uses it only on small fixed
 * lengths the compiler can unroll. */
KVS_INLINE __u64 kvs_csum_partial(const void *buf, __u32 len, __u64 sum) {
    const __u8 *p = (const __u8 *)buf;
    __u32 i;

    for (i = 0; i + 1 < len; i += 2) {
        __u16 w;
        __builtin_memcpy(&w, p + i, 2);
        sum += w;
    }
    if (len & 1) {
        __u8 last[2] = {p[len - 1], 0};
        __u16 w;
        __builtin_memcpy(&w, last, 2);
        sum += w;
    }
    return sum;
}

/* Pseudo-header sums (addresses in network order, length in host order). */
KVS_INLINE __u64 kvs_csum_pseudo4(__u32 saddr, __u32 daddr, __u8 proto, __u32 l4_len) {
    return (__u64)saddr + daddr + kvs_htons((__u16)proto) + kvs_htons((__u16)l4_len);
}

KVS_INLINE __u64 kvs_csum_pseudo6(const __u32 *saddr, const __u32 *daddr, __u8 proto,
                                  __u32 l4_len) {
    __u64 s = 0;
    int i;

    for (i = 0; i < 4; i++) s += (__u64)saddr[i] + daddr[i];
    return s + kvs_htonl(l4_len) + kvs_htonl((__u32)proto);
}

/* Final checksum value to store, from a complete sum. */
KVS_INLINE __u16 kvs_csum_finish(__u64 sum) {
    return (__u16)~kvs_csum_fold(sum);
}

/* Sets (`on`) or clears `bits` in a TCP header's doff_res byte (reserved bits), its checksum
 * updated (the byte shares its 16-bit word with the flags). */
KVS_INLINE void kvs_tcp_res_bits(struct kvs_tcphdr *t, __u8 bits, int on) {
    __u16 old_w, new_w;

    __builtin_memcpy(&old_w, &t->doff_res, 2);
    t->doff_res = on ? (__u8)(t->doff_res | bits) : (__u8)(t->doff_res & ~bits);
    __builtin_memcpy(&new_w, &t->doff_res, 2);
    t->check = kvs_csum_replace16(t->check, old_w, new_w);
}

#endif /* KVSTEER_CSUM_H */
