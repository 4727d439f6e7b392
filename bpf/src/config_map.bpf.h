/* The maps every kvsteer BPF object shares: the configuration kvsteerd writes and the
 * per-reason counters (definitions exactly as kvsteer/abi.h; pinned by name). */
#ifndef KVSTEER_CONFIG_MAP_BPF_H
#define KVSTEER_CONFIG_MAP_BPF_H

#include "kvsteer/abi.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvs_config);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, KVS_STATS_MAX);
    __type(key, __u32);
    __type(value, __u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_stats SEC(".maps");

#endif /* KVSTEER_CONFIG_MAP_BPF_H */
