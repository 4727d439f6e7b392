/* kvsteer XDP program: the only program in this object (DPDK's af_xdp PMD attaches the first). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kvsteer/prog_abi.h"
#include "steer.bpf.h"

/* Read from the object file by the dataplane (prog_abi.h), never by the program. */
const char kvs_xdp_abi[] __attribute__((used)) = KVS_XDP_ABI_MARKER KVS_XDP_ABI_STR(KVS_XDP_ABI);

SEC("xdp")
int kvsteer_xdp(struct xdp_md *ctx) {
    return kvs_xdp(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
