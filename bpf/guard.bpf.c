/* kvsteer tc ingress guard. While no XDP program is attached (the dataplane swaps it when it
 * restarts: the previous one must be detached before the new one attaches), segments of bound
 * flows reach the appliance kernel. It owns the VIP and SNAT addresses but has no sockets for
 * them, so it would answer RST and kill every flow that sends a packet in that window. The
 * guard drops TCP to a VIP or the SNAT range instead; the peers retransmit once XDP is back.
 * With XDP attached the guard never sees these segments (XDP consumes all of them). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kvsteer/parse.h"
#include "kvsteer/reasons.h"
#include "kvsteer/rewrite.h"
#include "match.bpf.h"

#define KVS_TC_ACT_OK 0
#define KVS_TC_ACT_SHOT 2
/* Ethernet + VLAN + the largest IPv6 + TCP headers kvs_parse reads. */
#define KVS_GUARD_HDR_BYTES (14 + 4 + 40 + 60)

SEC("tc")
int kvsteer_guard(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct kvs_flow_key key;
    struct kvs_pkt pkt;
    __u32 want = skb->len < KVS_GUARD_HDR_BYTES ? skb->len : KVS_GUARD_HDR_BYTES;

    /* Headers may sit partly in the skb's pages (veth hands over what XDP mode built): make
     * them linear before parsing. */
    if (data + want > data_end) {
        if (bpf_skb_pull_data(skb, want))
            return KVS_TC_ACT_OK;
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
    }
    if (kvs_parse(data, data_end, &pkt) != KVS_PARSE_OK || !pkt.tcp)
        return KVS_TC_ACT_OK;
    kvs_flow_key_of(&pkt, &key);
    if (!kvs_xdp_is_vip(&key) && !kvs_xdp_is_snat(&key))
        return KVS_TC_ACT_OK;
    kvs_count(KVS_R_GUARD_DROP);
    return KVS_TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
