/* The fleet's shared functions: which owner-table bucket a client connection falls in, and the
 * rendezvous score that makes every appliance compute the same owner for it. Both XDP (bucket)
 * and kvsteerd (the table) use them; see struct kvs_fleet in abi.h. */
#ifndef KVSTEER_FLEET_H
#define KVSTEER_FLEET_H

#include "kvsteer/abi.h"
#include "kvsteer/types.h"

KVS_INLINE __u64 kvs_fleet_mix(__u64 h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Bucket of a client -> VIP key (kvs_flow_key as the client's packet arrives), in
 * [0, KVS_OWNER_BUCKETS). The same on every appliance: a function of the 4-tuple only. */
KVS_INLINE __u32 kvs_fleet_bucket(const struct kvs_flow_key *k) {
    __u64 h = 0x6b76737465657266ull; /* "kvsteerf" */

    h = kvs_fleet_mix(h ^ (((__u64)k->saddr[0] << 32) | k->saddr[1]));
    h = kvs_fleet_mix(h ^ (((__u64)k->saddr[2] << 32) | k->saddr[3]));
    h = kvs_fleet_mix(h ^ (((__u64)k->daddr[0] << 32) | k->daddr[3]));
    h = kvs_fleet_mix(h ^ (((__u64)k->sport << 16) | k->dport));
    return (__u32)(h & (KVS_OWNER_BUCKETS - 1));
}

/* Rendezvous (highest random weight) score of appliance `id` for `bucket`: the owner of a bucket
 * is the member of the epoch with the highest score, so a member joining or leaving moves only
 * the buckets it takes or gives. */
KVS_INLINE __u64 kvs_fleet_score(__u8 id, __u32 bucket) {
    return kvs_fleet_mix(((__u64)(id + 1) << 40) ^ ((__u64)bucket * 0x9e3779b97f4a7c15ull));
}

#endif /* KVSTEER_FLEET_H */
