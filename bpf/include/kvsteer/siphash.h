/* SipHash-2-4 over a whole number of 64-bit words (keyed PRF for SYN cookies). */
#ifndef KVSTEER_SIPHASH_H
#define KVSTEER_SIPHASH_H

#include "kvsteer/types.h"

#define KVS_ROTL64(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))

#define KVS_SIPROUND(v0, v1, v2, v3) \
    do {                             \
        v0 += v1;                    \
        v1 = KVS_ROTL64(v1, 13);     \
        v1 ^= v0;                    \
        v0 = KVS_ROTL64(v0, 32);     \
        v2 += v3;                    \
        v3 = KVS_ROTL64(v3, 16);     \
        v3 ^= v2;                    \
        v0 += v3;                    \
        v3 = KVS_ROTL64(v3, 21);     \
        v3 ^= v0;                    \
        v2 += v1;                    \
        v1 = KVS_ROTL64(v1, 17);     \
        v1 ^= v2;                    \
        v2 = KVS_ROTL64(v2, 32);     \
    } while (0)

/* Equals reference SipHash-2-4 of the 8*n bytes m[0..n) stored little-endian. n is a
 * compile-time constant at every call site, so the loop unrolls. */
KVS_INLINE __u64 kvs_siphash24_words(__u64 k0, __u64 k1, const __u64 *m, __u32 n) {
    __u64 v0 = 0x736f6d6570736575ull ^ k0;
    __u64 v1 = 0x646f72616e646f6dull ^ k1;
    __u64 v2 = 0x6c7967656e657261ull ^ k0;
    __u64 v3 = 0x7465646279746573ull ^ k1;
    __u64 b = ((__u64)(n * 8) & 0xff) << 56;
    __u32 i;

    for (i = 0; i < n; i++) {
        v3 ^= m[i];
        KVS_SIPROUND(v0, v1, v2, v3);
        KVS_SIPROUND(v0, v1, v2, v3);
        v0 ^= m[i];
    }
    v3 ^= b;
    KVS_SIPROUND(v0, v1, v2, v3);
    KVS_SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    KVS_SIPROUND(v0, v1, v2, v3);
    KVS_SIPROUND(v0, v1, v2, v3);
    KVS_SIPROUND(v0, v1, v2, v3);
    KVS_SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* KVSTEER_SIPHASH_H */
