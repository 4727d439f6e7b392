/* BPF map definitions of kvsteer.bpf.o: names, types and sizes exactly as kvsteer/abi.h. */
#ifndef KVSTEER_MAPS_BPF_H
#define KVSTEER_MAPS_BPF_H

#include "kvsteer/abi.h"
#include "config_map.bpf.h"

/* Every map except xsks_map is pinned by name so reloads, the dataplane and kvsteerd share
 * them; arrays userspace reads per packet are mmapable. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_MAX_BACKENDS);
    __type(key, __u32);
    __type(value, struct kvs_backend);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_backends SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_MAX_BACKENDS);
    __type(key, __u32);
    __type(value, struct kvs_backend_load);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_be_load SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvs_maglev_table);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_maglev SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2 * KVS_AFFINITY_SLOTS);
    __type(key, __u32);
    __type(value, struct kvs_affinity_entry);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_affinity SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, KVS_FLOW_MAX);
    __type(key, struct kvs_flow_key);
    __type(value, struct kvs_flow);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_MAX_WORKERS);
    __type(key, __u32);
    __type(value, struct kvs_ring_ctl);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_ring_ctl SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_MAX_WORKERS *KVS_BIND_RING_SLOTS);
    __type(key, __u32);
    __type(value, struct kvs_bind_report);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_bind_ring SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_MAX_WORKERS *KVS_STATS_MAX);
    __type(key, __u32);
    __type(value, __u64);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_dp_stats SEC(".maps");

/* The fleet (kvsteerd writes both; see abi.h, "a fleet of appliances"). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvs_fleet);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_fleet SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2 * KVS_OWNER_BUCKETS);
    __type(key, __u32);
    __type(value, struct kvs_owner_entry);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_owner SEC(".maps");

/* Liveness: the sequence number each member's newest pong echoed, and what it said (abi.h). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVS_FLEET_HEARD_ENTRIES);
    __type(key, __u32);
    __type(value, __u64);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} kvs_fleet_heard SEC(".maps");

/* Name and shape fixed by DPDK's af_xdp PMD, which fills it; never pinned. */
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, KVS_MAX_XSKS);
    __type(key, __u32);
    __type(value, __u32);
} xsks_map SEC(".maps");

/* Optional bulk-redirect ports (key = value = egress ifindex), filled by whoever loads the
 * program; flows whose port is missing use bpf_redirect(). Not pinned: the kernel adds
 * BPF_F_RDONLY_PROG to devmaps, and libbpf 1.1 then refuses to reuse the pin on reload. */
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, KVS_MAX_TX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} kvs_tx_ports SEC(".maps");

#endif /* KVSTEER_MAPS_BPF_H */
