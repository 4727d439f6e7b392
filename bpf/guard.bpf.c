/* kvsteer tc ingress guard. While no XDP program is attached (the dataplane swaps it when it
 * restarts: the previous one must be detached before the new one attaches), segments of bound
 * flows reach the appliance kernel. It owns the VIP and SNAT addresses but has no sockets for
 * them, so it would answer RST and kill every flow that sends a packet in that window. The
 * guard drops TCP to a VIP or the SNAT range instead; the peers retransmit once XDP is back.
 * With XDP attached the guard never sees these segments (XDP consumes all of them).
 *
 * Headers are read relative to the network header (bpf_skb_load_bytes_relative), not from the
 * frame's start: an skb caught mid-way through the XDP detach need not have its MAC header
 * where tc expects it, and those are exactly the packets this program exists for. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"
#include "match.bpf.h"

#define KVS_TC_ACT_OK 0
#define KVS_TC_ACT_SHOT 2

SEC("tc")
int kvsteer_guard(struct __sk_buff *skb) {
    struct kvs_flow_key key;
    __u8 l3[40];
    __u16 ports[2];
    __u32 l4_off;

    __builtin_memset(&key, 0, sizeof(key));
    if (skb->protocol == bpf_htons(KVS_ETH_P_IP)) {
        if (bpf_skb_load_bytes_relative(skb, 0, l3, 20, BPF_HDR_START_NET)) return KVS_TC_ACT_OK;
        /* TCP, and the first fragment only (later ones carry no ports). */
        if (l3[9] != KVS_IPPROTO_TCP || ((l3[6] & 0x1f) | l3[7])) return KVS_TC_ACT_OK;
        l4_off = (__u32)(l3[0] & 0x0f) * 4;
        __builtin_memcpy(&key.saddr[0], &l3[12], 4);
        __builtin_memcpy(&key.daddr[0], &l3[16], 4);
        key.family = KVS_AF_INET;
    } else if (skb->protocol == bpf_htons(KVS_ETH_P_IPV6)) {
        if (bpf_skb_load_bytes_relative(skb, 0, l3, 40, BPF_HDR_START_NET)) return KVS_TC_ACT_OK;
        if (l3[6] != KVS_IPPROTO_TCP) /* extension headers: not ours (XDP passes them too) */
            return KVS_TC_ACT_OK;
        l4_off = 40;
        __builtin_memcpy(key.saddr, &l3[8], 16);
        __builtin_memcpy(key.daddr, &l3[24], 16);
        key.family = KVS_AF_INET6;
    } else {
        return KVS_TC_ACT_OK;
    }
    if (l4_off < 20 ||
        bpf_skb_load_bytes_relative(skb, l4_off, ports, sizeof(ports), BPF_HDR_START_NET))
        return KVS_TC_ACT_OK;
    key.sport = ports[0];
    key.dport = ports[1];
    key.proto = KVS_IPPROTO_TCP;
    if (!kvs_xdp_is_vip(&key) && !kvs_xdp_is_snat(&key)) return KVS_TC_ACT_OK;
    kvs_count(KVS_R_GUARD_DROP);
    return KVS_TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
