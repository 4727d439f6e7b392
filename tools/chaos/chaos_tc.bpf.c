/* Fault injector for the chaos suite: a tc classifier (cls_bpf, direct action) on the root HTB
 * qdisc of a test veth. Per IPv4 TCP packet leaving the device it draws a pseudo-random number
 * in 0..999: below drop_permille the packet is dropped (TC_ACT_SHOT); below drop_permille +
 * slow_permille it is put in the slow HTB class (slow_classid, a low rate: delayed, so it
 * arrives after packets sent later, i.e. reordered); otherwise it goes to the default class.
 * Everything else (ARP, IPv6, UDP) passes untouched, so neighbour resolution never breaks.
 * The configuration is one array entry (kvc_cfg) that the loader (kvsteer-chaos-tc) writes at
 * any time; kvc_stats counts what was seen, dropped and slowed. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct kvc_cfg {
    __u32 drop_permille; /* share of TCP packets dropped, 0..1000 */
    __u32 slow_permille; /* share of TCP packets sent through the slow class */
    __u32 slow_classid;  /* HTB class handle (major << 16 | minor) of the slow class */
    __u32 flags;         /* KVC_SPARE_SYN: SYNs and SYN-ACKs are never touched */
};

#define KVC_SPARE_SYN 1u

enum { KVC_SEEN, KVC_DROPPED, KVC_SLOWED, KVC_NSTATS };

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct kvc_cfg);
} kvc_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, KVC_NSTATS);
    __type(key, __u32);
    __type(value, __u64);
} kvc_stats SEC(".maps");

static __always_inline void kvc_count(__u32 what) {
    __u64 *v = bpf_map_lookup_elem(&kvc_stats, &what);
    if (v) __sync_fetch_and_add(v, 1);
}

SEC("tc")
int kvc_fault(struct __sk_buff *skb) {
    __u32 zero = 0;
    const struct kvc_cfg *cfg = bpf_map_lookup_elem(&kvc_cfg, &zero);
    __u8 ip[20];
    __u8 tcp_flags;
    __u32 ihl, r;

    if (!cfg || skb->protocol != __constant_htons(ETH_P_IP)) return TC_ACT_OK;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0) return TC_ACT_OK;
    if (ip[9] != IPPROTO_TCP) return TC_ACT_OK;
    ihl = (__u32)(ip[0] & 0x0f) * 4;
    if (ihl < 20 || bpf_skb_load_bytes(skb, ETH_HLEN + ihl + 13, &tcp_flags, 1) < 0)
        return TC_ACT_OK;
    kvc_count(KVC_SEEN);
    if ((cfg->flags & KVC_SPARE_SYN) && (tcp_flags & 0x02)) return TC_ACT_OK;

    r = bpf_get_prandom_u32() % 1000;
    if (r < cfg->drop_permille) {
        kvc_count(KVC_DROPPED);
        return TC_ACT_SHOT;
    }
    if (r < cfg->drop_permille + cfg->slow_permille && cfg->slow_classid) {
        kvc_count(KVC_SLOWED);
        skb->tc_classid = cfg->slow_classid;
    }
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
