/* The memory floor under kvsteer's established-flow lookup (lookup_floor.cc): two programs that
 * do nothing but one table read per packet, walking a random cycle through N entries the way
 * kvsteer-xdp-live's testrun walks N flows, so each packet's read is a cold miss.
 *   floor_array: an array entry of one cache line, indexed by a number in the packet: what a
 *                flow table read by index would cost (one miss, no hash);
 *   floor_hash:  an LRU hash lookup with kvs_flows' key and value sizes (40 and 160 bytes).
 * Each writes the next index or key into the packet and bumps a word of the entry. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct kvb_line {
    __u32 next;
    __u32 word[15];
}; /* 64 bytes */
struct kvb_key {
    __u32 w[10];
}; /* 40 bytes, as struct kvs_flow_key */
struct kvb_val {
    __u32 next;
    __u32 word[39];
}; /* 160 bytes, about struct kvs_flow */

/* Sized by the loader (bpf_map__set_max_entries) before it loads the object. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvb_line);
    __uint(map_flags, BPF_F_MMAPABLE);
} kvb_floor_array SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1);
    __type(key, struct kvb_key);
    __type(value, struct kvb_val);
} kvb_floor_hash SEC(".maps");

#define KVB_OFF 14 /* after an Ethernet header */

SEC("xdp")
int kvb_floor_array_walk(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 *p = data + KVB_OFF;
    struct kvb_line *e;
    __u32 idx;

    if ((void *)(p + 1) > end) return XDP_ABORTED;
    idx = *p;
    e = bpf_map_lookup_elem(&kvb_floor_array, &idx);
    if (!e) return XDP_ABORTED;
    *p = e->next;
    __sync_fetch_and_add(&e->word[7], 1);
    return XDP_TX;
}

SEC("xdp")
int kvb_floor_hash_walk(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct kvb_key *k = data + KVB_OFF;
    struct kvb_key key;
    struct kvb_val *v;

    if ((void *)(k + 1) > end) return XDP_ABORTED;
    key = *k;
    v = bpf_map_lookup_elem(&kvb_floor_hash, &key);
    if (!v) return XDP_ABORTED;
    k->w[0] = v->next;
    __sync_fetch_and_add(&v->word[20], 1);
    return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
