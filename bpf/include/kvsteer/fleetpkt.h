/* The fleet's frames: who is asked next after a local miss, the encapsulation between appliances
 * (struct kvs_fleet_hdr) and its removal, and the RST that answers a packet no appliance has a
 * flow for. Plain C on a frame buffer, like synack.h: XDP and the tests run the same code. */
#ifndef KVSTEER_FLEETPKT_H
#define KVSTEER_FLEETPKT_H

#include "kvsteer/abi.h"
#include "kvsteer/csum.h"
#include "kvsteer/parse.h"
#include "kvsteer/proto.h"

/* Where a frame is in the fleet: its hop (0: from the router) and the appliance that sent it on
 * (KVS_APPLIANCE_NONE at hop 0), packed in one scalar for BPF global functions. */
#define KVS_FLEET_AT(hop, from) ((((__u32)(hop)&0xff) << 8) | ((__u32)(from)&0xff))
#define KVS_FLEET_ROUTER KVS_FLEET_AT(0, KVS_APPLIANCE_NONE)
#define KVS_FLEET_HOP(at) (((at) >> 8) & 0xff)
#define KVS_FLEET_FROM(at) ((at)&0xff)
#define KVS_FLEET_HOP_MAX (1 + KVS_OWNER_PREV) /* hop 2 + i for prev[i] */
/* In `at`: the chase is unsure (the sender's owner table differs from ours by its tag, the frame
 * carries KVS_FLEET_HOP_UNSURE, or our table denies the role its hop names: kvs_fleet_role_agrees),
 * so the hop number may not mean the same previous owner here: never answered with a RST. */
#define KVS_FLEET_UNSURE (1u << 16)
/* kvs_fleet_hdr.hop: the hop in the low 3 bits, KVS_FLEET_HOP_UNSURE in bit 3 (an appliance
 * earlier in the chase was unsure: the doubt goes on with the frame), the sender's table tag
 * (the low 4 bits of its owner-table digest) in the high 4. */
#define KVS_FLEET_HOP_BITS 0x7u
#define KVS_FLEET_HOP_UNSURE 0x8u
#if KVS_FLEET_HOP_MAX > KVS_FLEET_HOP_BITS
#error "the fleet header's hop field has 3 bits"
#endif
#define KVS_FLEET_TAG(digest) ((__u8)(((digest)&0xf) << 4))
#define KVS_FLEET_TTL 64 /* IPv4 TTL / IPv6 hop limit of our RSTs */

/* Whether `id` is a member (up or draining: either may hold flows). */
KVS_INLINE int kvs_fleet_member(const struct kvs_fleet *fl, __u32 id) {
    return id < KVS_MAX_APPLIANCES && fl->members[id].state != KVS_APP_EMPTY;
}

/* Fleet mode: a fleet was written (generation != 0; a zeroed map is no fleet) and this appliance
 * is one of its members. Off, the program behaves as a single appliance. */
KVS_INLINE int kvs_fleet_on(const struct kvs_fleet *fl) {
    return fl && fl->generation && fl->self != KVS_APPLIANCE_NONE && kvs_fleet_member(fl, fl->self);
}

/* Index in kvs_owner of `bucket` in the active half. */
KVS_INLINE __u32 kvs_fleet_owner_index(const struct kvs_fleet *fl, __u32 bucket) {
    return (fl->owner_active & 1) * KVS_OWNER_BUCKETS + (bucket & (KVS_OWNER_BUCKETS - 1));
}

/* A packet from the router (hop 0) that missed here goes to the bucket's owner when that is
 * another member: returns its id, else KVS_APPLIANCE_NONE (we are the owner, or it has none and
 * we act as the owner). */
KVS_INLINE __u32 kvs_fleet_remote_owner(const struct kvs_fleet *fl,
                                        const struct kvs_owner_entry *e) {
    __u32 o = e->owner;

    return (o != fl->self && kvs_fleet_member(fl, o)) ? o : KVS_APPLIANCE_NONE;
}

/* Whether our own table gives us the role the sender's hop says we have: the owner at hop 1,
 * prev[i] at hop 2 + i (hop 0, from the router, claims nothing). A sender whose table tag
 * matches ours may still have another table (4 bits of digest: a change keeps the tag one time
 * in 16); a receiver that has not applied the sender's newer table (or has applied a newer one)
 * finds another role for itself here, and its chase, walking its own previous owners, could skip
 * the appliance holding the flow and answer the client with a RST (a drain's epoch, applied by
 * one appliance a few milliseconds before another). Such a packet is UNSURE: never answered. */
KVS_INLINE int kvs_fleet_role_agrees(const struct kvs_fleet *fl, const struct kvs_owner_entry *e,
                                     __u32 at) {
    __u32 hop = KVS_FLEET_HOP(at);

    if (hop == 0) return 1;
    if (hop == 1) return e->owner == fl->self;
    return hop - 2 < KVS_OWNER_PREV && e->prev[hop - 2] == fl->self;
}

/* After a miss here at `at` (the owner's miss: hop 0 or 1; prev[i]'s: hop 2 + i), the previous
 * owner to ask next: the first prev[j] after ours that is a member, not us and not the sender.
 * Returns KVS_FLEET_AT(2 + j, prev[j]), or 0 when nobody is left (the packet is an orphan).
 * The hop only grows, so a packet is never sent on twice by the same step. */
KVS_INLINE __u32 kvs_fleet_next_prev(const struct kvs_fleet *fl, const struct kvs_owner_entry *e,
                                     __u32 at) {
    __u32 hop = KVS_FLEET_HOP(at), from = KVS_FLEET_FROM(at), j, p;

    for (j = 0; j < KVS_OWNER_PREV; j++) {
        p = e->prev[j];
        if (p == KVS_APPLIANCE_NONE) break;
        if (j + 2 <= hop) continue; /* asked already, or it is us */
        if (p != fl->self && p != from && kvs_fleet_member(fl, p)) return KVS_FLEET_AT(2 + j, p);
    }
    return 0;
}

/* Whether two MACs are equal (no memcmp in BPF). */
KVS_INLINE int kvs_fleet_mac_eq(const __u8 *a, const __u8 *b) {
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
            (a[5] ^ b[5])) == 0;
}

/* Decapsulates a frame in place: `data` starts with the fleet Ethernet header and
 * struct kvs_fleet_hdr. Checks the header against the fleet (hop 1..KVS_FLEET_HOP_MAX, a sender
 * that is a member and not us, an IP EtherType, room for an IP header), then writes the restored
 * Ethernet header (dst `our_mac`, src orig_src, proto orig_proto) just before the IP packet, at
 * data + sizeof(struct kvs_fleet_hdr), where the frame then starts (bpf_xdp_adjust_head).
 * Returns KVS_FLEET_AT(hop, from) (| KVS_FLEET_UNSURE when the sender's table tag is not ours or
 * the frame carries KVS_FLEET_HOP_UNSURE),
 * or 0 for a bad header (nothing written). */
KVS_INLINE __u32 kvs_fleet_decap(void *data, void *data_end, const struct kvs_fleet *fl,
                                 const __u8 *our_mac) {
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)data;
    struct kvs_fleet_hdr *fh = (struct kvs_fleet_hdr *)(eth + 1);
    struct kvs_ethhdr *out = (struct kvs_ethhdr *)((__u8 *)data + sizeof(struct kvs_fleet_hdr));
    __u8 src[KVS_ETH_ALEN];
    __u16 proto;
    __u8 hop, tag, from, unsure;

    if ((__u8 *)(fh + 1) + sizeof(struct kvs_iphdr) > (__u8 *)data_end) return 0;
    hop = fh->hop & KVS_FLEET_HOP_BITS;
    unsure = fh->hop & KVS_FLEET_HOP_UNSURE;
    tag = fh->hop & 0xf0; /* read now: the restored header overwrites the fleet header */
    from = fh->from;
    proto = fh->orig_proto;
    /* Sent to us alone: members send on to each other's MAC in the member table. A group
     * destination (any host on the segment can send one) made every appliance answer what it
     * carried: a SYN's SYN-ACK, up to 15 of them, past the group-address check the restored
     * header then passed. */
    if (fl->self >= KVS_MAX_APPLIANCES || !kvs_fleet_mac_eq(eth->dst, fl->members[fl->self].mac))
        return 0;
    if (hop < 1 || hop > KVS_FLEET_HOP_MAX || from == fl->self || !kvs_fleet_member(fl, from))
        return 0;
    /* From that member's MAC (as kvs_fleet_beat checks a ping's): another host on the segment
     * naming a member in `from` is not one. */
    if (!kvs_fleet_mac_eq(eth->src, fl->members[from & (KVS_MAX_APPLIANCES - 1)].mac)) return 0;
    if (proto != kvs_htons(KVS_ETH_P_IP) && proto != kvs_htons(KVS_ETH_P_IPV6)) return 0;
    __builtin_memcpy(src, fh->orig_src, KVS_ETH_ALEN);
    __builtin_memcpy(out->dst, our_mac, KVS_ETH_ALEN);
    __builtin_memcpy(out->src, src, KVS_ETH_ALEN);
    out->proto = proto;
    return KVS_FLEET_AT(hop, from) |
           ((unsure || tag != KVS_FLEET_TAG(fl->digest)) ? KVS_FLEET_UNSURE : 0);
}

/* Encapsulates a frame in place: `data` is its new start, sizeof(struct kvs_fleet_hdr) bytes
 * before its (untagged) Ethernet header (bpf_xdp_adjust_head(-sizeof)). Writes Ethernet
 * (dst `to_mac`, src `our_mac`, KVS_ETH_P_FLEET) and the header {hop, from, the frame's source
 * MAC and EtherType}; the IP packet after it is untouched. Returns 0, or -1 if too short. */
KVS_INLINE int kvs_fleet_encap(void *data, void *data_end, const __u8 *to_mac, const __u8 *our_mac,
                               __u8 hop, __u8 from) {
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)data;
    struct kvs_fleet_hdr *fh = (struct kvs_fleet_hdr *)(eth + 1);
    const struct kvs_ethhdr *orig =
        (const struct kvs_ethhdr *)((__u8 *)data + sizeof(struct kvs_fleet_hdr));
    __u8 src[KVS_ETH_ALEN];
    __u16 proto;

    if ((void *)(fh + 1) > data_end) return -1;
    /* The original header overlaps both new ones: read it first. */
    __builtin_memcpy(src, orig->src, KVS_ETH_ALEN);
    proto = orig->proto;
    __builtin_memcpy(eth->dst, to_mac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, our_mac, KVS_ETH_ALEN);
    eth->proto = kvs_htons(KVS_ETH_P_FLEET);
    fh->hop = hop;
    fh->from = from;
    __builtin_memcpy(fh->orig_src, src, KVS_ETH_ALEN);
    fh->orig_proto = proto;
    return 0;
}

/* The RST that answers an orphan: to the client from the VIP, RST|ACK, seq = the segment's
 * ack_seq, ack = its seq + payload (+1 for FIN), no options, no payload, window 0. */
struct kvs_fleet_rst {
    __u32 saddr[4]; /* the segment's destination (the VIP), network order */
    __u32 daddr[4]; /* the client */
    __u16 sport, dport;
    __u32 seq, ack; /* host order */
    __u8 smac[6], dmac[6];
    __u8 family;
    __u8 pad[3];
    __u32 frame_len;
};

#define KVS_FLEET_RST_LEN4 (14 + 20 + 20)
#define KVS_FLEET_RST_LEN6 (14 + 40 + 20)

/* Fills `r` from the segment in `pkt` (untagged: the RST starts its IP header at 14). Returns 0,
 * or -1 for a frame it cannot answer (tagged, not TCP/IP). */
KVS_INLINE int kvs_fleet_rst_plan(const struct kvs_pkt *pkt, const __u8 *our_mac,
                                  struct kvs_fleet_rst *r) {
    const struct kvs_tcphdr *th = pkt->tcp;

    __builtin_memset(r, 0, sizeof(*r));
    if (!th || pkt->vlan || pkt->l3_off != sizeof(struct kvs_ethhdr)) return -1;
    if (pkt->ip4) {
        r->saddr[0] = pkt->ip4->daddr;
        r->daddr[0] = pkt->ip4->saddr;
        r->family = 4;
        r->frame_len = KVS_FLEET_RST_LEN4;
    } else if (pkt->ip6) {
        kvs_copy_addr6(r->saddr, pkt->ip6->daddr);
        kvs_copy_addr6(r->daddr, pkt->ip6->saddr);
        r->family = 6;
        r->frame_len = KVS_FLEET_RST_LEN6;
    } else {
        return -1;
    }
    r->sport = th->dest;
    r->dport = th->source;
    r->seq = (th->flags & KVS_TCP_ACK) ? kvs_ntohl(th->ack_seq) : 0;
    r->ack = kvs_ntohl(th->seq) + pkt->payload_len + ((th->flags & KVS_TCP_FIN) ? 1 : 0);
    __builtin_memcpy(r->smac, our_mac, KVS_ETH_ALEN);
    __builtin_memcpy(r->dmac, pkt->eth->src, KVS_ETH_ALEN);
    return 0;
}

/* Writes the RST of `r` over the frame [data, data_end), which must be exactly r->frame_len
 * bytes. Returns 0, or -1 if the frame has the wrong size. */
KVS_INLINE int kvs_fleet_rst_write(void *data, void *data_end, const struct kvs_fleet_rst *r) {
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)data;
    struct kvs_tcphdr *th;
    __u64 sum;
    __u32 i;

    if (!r->frame_len || (__u8 *)data + r->frame_len != (__u8 *)data_end ||
        (void *)(eth + 1) > data_end)
        return -1;
    __builtin_memcpy(eth->dst, r->dmac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, r->smac, KVS_ETH_ALEN);
    if (r->family == 4) {
        struct kvs_iphdr *ip = (struct kvs_iphdr *)(eth + 1);

        if ((void *)(ip + 1) > data_end) return -1;
        eth->proto = kvs_htons(KVS_ETH_P_IP);
        ip->ver_ihl = 0x45;
        ip->tos = 0;
        ip->tot_len = kvs_htons((__u16)(sizeof(*ip) + sizeof(struct kvs_tcphdr)));
        ip->id = 0;
        ip->frag_off = kvs_htons(0x4000); /* DF */
        ip->ttl = KVS_FLEET_TTL;
        ip->protocol = KVS_IPPROTO_TCP;
        ip->check = 0;
        ip->saddr = r->saddr[0];
        ip->daddr = r->daddr[0];
        ip->check = kvs_csum_finish(kvs_csum_partial(ip, sizeof(*ip), 0));
        sum =
            kvs_csum_pseudo4(r->saddr[0], r->daddr[0], KVS_IPPROTO_TCP, sizeof(struct kvs_tcphdr));
        th = (struct kvs_tcphdr *)(ip + 1);
    } else {
        struct kvs_ipv6hdr *ip6 = (struct kvs_ipv6hdr *)(eth + 1);

        if ((void *)(ip6 + 1) > data_end) return -1;
        eth->proto = kvs_htons(KVS_ETH_P_IPV6);
        ip6->ver_tc_flow = kvs_htonl(0x60000000u);
        ip6->payload_len = kvs_htons((__u16)sizeof(struct kvs_tcphdr));
        ip6->nexthdr = KVS_IPPROTO_TCP;
        ip6->hop_limit = KVS_FLEET_TTL;
        kvs_copy_addr6(ip6->saddr, r->saddr);
        kvs_copy_addr6(ip6->daddr, r->daddr);
        sum = kvs_csum_pseudo6(r->saddr, r->daddr, KVS_IPPROTO_TCP, sizeof(struct kvs_tcphdr));
        th = (struct kvs_tcphdr *)(ip6 + 1);
    }
    if ((void *)(th + 1) > data_end) return -1;
    th->source = r->sport;
    th->dest = r->dport;
    th->seq = kvs_htonl(r->seq);
    th->ack_seq = kvs_htonl(r->ack);
    th->doff_res = (__u8)((sizeof(struct kvs_tcphdr) / 4) << 4);
    th->flags = KVS_TCP_RST | KVS_TCP_ACK;
    th->window = 0;
    th->check = 0;
    th->urg_ptr = 0;
    for (i = 0; i < sizeof(struct kvs_tcphdr) / 4; i++) sum += kvs_load32((__u8 *)th + i * 4);
    th->check = kvs_csum_finish(sum);
    return 0;
}

/* ---- liveness: pings and pongs between appliances (abi.h, struct kvs_fleet_ping) ---------- */
#define KVS_FLEET_PING_LEN 60 /* Ethernet's minimum frame (the header is zero-padded) */

/* Writes a ping from appliance `from` (MAC `our_mac`) to `to_mac` with sequence number `seq`
 * into `buf` (KVS_FLEET_PING_LEN bytes). Returns the frame's length. */
KVS_INLINE __u32 kvs_fleet_ping_write(void *buf, const __u8 *to_mac, const __u8 *our_mac, __u8 from,
                                      __u64 seq) {
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)buf;
    struct kvs_fleet_ping *p = (struct kvs_fleet_ping *)(eth + 1);

    __builtin_memset(buf, 0, KVS_FLEET_PING_LEN);
    __builtin_memcpy(eth->dst, to_mac, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, our_mac, KVS_ETH_ALEN);
    eth->proto = kvs_htons(KVS_ETH_P_FLEET);
    p->hop = KVS_FLEET_HOP_PING;
    p->from = from;
    __builtin_memcpy(p->seq, &seq, sizeof(seq));
    return KVS_FLEET_PING_LEN;
}

KVS_INLINE int kvs_fleet_mac_zero(const __u8 *a) {
    return (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0;
}

enum kvs_fleet_beat {
    KVS_FLEET_BEAT_NONE = 0,   /* not a ping or pong: a frame sent on (kvs_fleet_decap) */
    KVS_FLEET_BEAT_BAD = 1,    /* a ping or pong not from a member of ours (dropped) */
    KVS_FLEET_BEAT_ANSWER = 2, /* a ping, turned into its pong in place: send it back (XDP_TX) */
    KVS_FLEET_BEAT_HEARD = 3,  /* a pong: *from, *seq and *heard say who answered which ping,
                                * hearing whom (the answerer's kvs_fleet.heard) */
};

/* A KVS_ETH_P_FLEET frame at `data`: when its header is a ping or a pong, checks it (the sender
 * is another appliance with a MAC in kvs_fleet, the frame's source MAC is that one, each is
 * addressed to our MAC) and answers a ping in place with our kvs_fleet.heard, if still valid at
 * `now_ns` (CLOCK_MONOTONIC). Returns enum kvs_fleet_beat. */
KVS_INLINE int kvs_fleet_beat(void *data, void *data_end, const struct kvs_fleet *fl, __u64 now_ns,
                              __u8 *from, __u64 *seq, __u16 *heard) {
    const __u16 vouch = now_ns < fl->heard_until_ns ? fl->heard : 0;
    struct kvs_ethhdr *eth = (struct kvs_ethhdr *)data;
    struct kvs_fleet_ping *p = (struct kvs_fleet_ping *)(eth + 1);
    const __u8 *ours, *theirs;
    __u32 f;

    if ((void *)(p + 1) > data_end) return KVS_FLEET_BEAT_NONE; /* decap refuses it */
    if (p->hop != KVS_FLEET_HOP_PING && p->hop != KVS_FLEET_HOP_PONG) return KVS_FLEET_BEAT_NONE;
    f = p->from;
    if (f == fl->self || f >= KVS_MAX_APPLIANCES || fl->self >= KVS_MAX_APPLIANCES)
        return KVS_FLEET_BEAT_BAD;
    ours = fl->members[fl->self & (KVS_MAX_APPLIANCES - 1)].mac;
    theirs = fl->members[f & (KVS_MAX_APPLIANCES - 1)].mac;
    /* Any appliance with a MAC here, whatever its state: one left out of the owner table for
     * silence must be heard again when it answers, and must hear us. */
    if (kvs_fleet_mac_zero(ours) || kvs_fleet_mac_zero(theirs) ||
        !kvs_fleet_mac_eq(eth->src, theirs))
        return KVS_FLEET_BEAT_BAD;
    /* Ours, both: a pong flooded to us for another appliance must not overwrite its word. */
    if (!kvs_fleet_mac_eq(eth->dst, ours)) return KVS_FLEET_BEAT_BAD;
    if (p->hop == KVS_FLEET_HOP_PONG) {
        *from = (__u8)f;
        __builtin_memcpy(seq, p->seq, sizeof(*seq));
        *heard = (__u16)(p->heard[0] | (p->heard[1] << 8));
        return KVS_FLEET_BEAT_HEARD;
    }
    __builtin_memcpy(eth->dst, theirs, KVS_ETH_ALEN);
    __builtin_memcpy(eth->src, ours, KVS_ETH_ALEN);
    p->hop = KVS_FLEET_HOP_PONG;
    p->from = fl->self;
    p->heard[0] = (__u8)(vouch & 0xff);
    p->heard[1] = (__u8)(vouch >> 8);
    return KVS_FLEET_BEAT_ANSWER;
}

#endif /* KVSTEER_FLEETPKT_H */
