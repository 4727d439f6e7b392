/* Receiving end of the live XDP benchmark: counts frames and bytes per CPU, then drops them
 * (a sink that costs as little as possible, so the figure is the forwarder's). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2); /* [0] frames, [1] bytes */
    __type(key, __u32);
    __type(value, __u64);
} kvb_count SEC(".maps");

SEC("xdp")
int kvb_count_drop(struct xdp_md *ctx) {
    const unsigned char *data = (const unsigned char *)(long)ctx->data;
    const unsigned char *end = (const unsigned char *)(long)ctx->data_end;
    __u32 k = 0;
    __u64 *v;

    /* Only IPv4 frames count: the kernel's own IPv6 chatter on the veth is not ours. */
    if (data + 14 > end || data[12] != 0x08 || data[13] != 0x00) return XDP_DROP;
    v = bpf_map_lookup_elem(&kvb_count, &k);

    if (v) *v += 1;
    k = 1;
    v = bpf_map_lookup_elem(&kvb_count, &k);
    if (v) *v += (__u64)(ctx->data_end - ctx->data);
    return XDP_DROP;
}

/* The rig's floor: bounces every frame back out (XDP_TX) with no work, so live injection through
 * it measures what the injector, veth and the counting peer cost without the kvsteer program. */
SEC("xdp")
int kvb_bounce(struct xdp_md *ctx) {
    (void)ctx;
    return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
