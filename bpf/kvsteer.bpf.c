/* kvsteer XDP program: the only program in this object (DPDK's af_xdp PMD attaches the first). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer.bpf.h"

SEC("xdp")
int kvsteer_xdp(struct xdp_md *ctx) {
    return kvs_xdp(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
