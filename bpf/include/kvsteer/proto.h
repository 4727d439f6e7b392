/* Wire-format packet headers (Ethernet, 802.1Q, IPv4, IPv6, TCP) under kvs_ names, clashing with
 * neither vmlinux.h nor the linux/ headers. */
#ifndef KVSTEER_PROTO_H
#define KVSTEER_PROTO_H

#include "kvsteer/types.h"

/* Userspace may place these at any byte offset (Ethernet puts IP at 14): packed there, so
 * access is defined behaviour; in BPF they keep natural alignment and plain loads. The
 * layouts have no padding either way. */
#if defined(__bpf__)
#define KVS_WIRE
#else
#define KVS_WIRE __attribute__((packed))
#endif

#define KVS_ETH_ALEN 6
#define KVS_ETH_P_IP 0x0800
#define KVS_ETH_P_IPV6 0x86DD
#define KVS_ETH_P_8021Q 0x8100
#define KVS_ETH_P_8021AD 0x88A8
#define KVS_IPPROTO_ICMP 1
#define KVS_IPPROTO_TCP 6
#define KVS_IPPROTO_ICMPV6 58
#define KVS_IP_MF 0x2000
#define KVS_IP_OFFMASK 0x1fff

/* TCP flag bits in the 13th byte of the header. */
#define KVS_TCP_FIN 0x01
#define KVS_TCP_SYN 0x02
#define KVS_TCP_RST 0x04
#define KVS_TCP_PSH 0x08
#define KVS_TCP_ACK 0x10
#define KVS_TCP_URG 0x20

/* A reserved bit of the TCP header (RFC 9293's Rsrvd, the highest of the four; AccECN's AE is
 * the lowest), in the 12th byte (kvs_tcphdr.doff_res). XDP sets it on a client segment of a bound
 * connection it hands the dataplane: at a request boundary, or while the connection is being
 * bound again. The dataplane (xdp mode) takes it off before anything else, checksum and all.
 * Without it a boundary whose ACK happened to pass the SYN-cookie check (about 2^-22 of them) was
 * taken for a new connection's first flight. */
#define KVS_TCP_RES_PUNT_BOUND 0x08

/* TCP option kinds and lengths. */
#define KVS_TCPOPT_EOL 0
#define KVS_TCPOPT_NOP 1
#define KVS_TCPOPT_MSS 2
#define KVS_TCPOPT_WS 3
#define KVS_TCPOPT_SACK_PERM 4
#define KVS_TCPOPT_SACK 5
#define KVS_TCPOPT_TS 8
#define KVS_TCPOLEN_MSS 4
#define KVS_TCPOLEN_WS 3
#define KVS_TCPOLEN_SACK_PERM 2
#define KVS_TCPOLEN_TS 10
#define KVS_TCP_MAX_OPTLEN 40
#define KVS_TCP_MAX_SACK 4

struct kvs_ethhdr {
    __u8 dst[KVS_ETH_ALEN];
    __u8 src[KVS_ETH_ALEN];
    __u16 proto; /* network order */
} KVS_WIRE;

struct kvs_vlanhdr {
    __u16 tci;   /* network order */
    __u16 proto; /* encapsulated ethertype, network order */
} KVS_WIRE;

struct kvs_iphdr {
    __u8 ver_ihl; /* version << 4 | IHL in 32-bit words */
    __u8 tos;
    __u16 tot_len;
    __u16 id;
    __u16 frag_off;
    __u8 ttl;
    __u8 protocol;
    __u16 check;
    __u32 saddr;
    __u32 daddr;
} KVS_WIRE;

struct kvs_ipv6hdr {
    __u32 ver_tc_flow; /* version(4) traffic class(8) flow label(20), network order */
    __u16 payload_len;
    __u8 nexthdr;
    __u8 hop_limit;
    __u32 saddr[4];
    __u32 daddr[4];
} KVS_WIRE;

/* Copies a 16-byte address (__u32[4]) word by word. In BPF the header's words are then 4-byte
 * loads and stores (a memcpy from a byte pointer becomes 16 one-byte loads, which made the IPv6
 * fast path ~1.6x IPv4's); in userspace, where the wire structs are packed, the compiler
 * handles each word's alignment. */
#define kvs_copy_addr6(dst, src) \
    do {                         \
        (dst)[0] = (src)[0];     \
        (dst)[1] = (src)[1];     \
        (dst)[2] = (src)[2];     \
        (dst)[3] = (src)[3];     \
    } while (0)

struct kvs_tcphdr {
    __u16 source;
    __u16 dest;
    __u32 seq;
    __u32 ack_seq;
    __u8 doff_res; /* data offset << 4 (32-bit words) */
    __u8 flags;    /* KVS_TCP_* */
    __u16 window;
    __u16 check;
    __u16 urg_ptr;
} KVS_WIRE;

struct kvs_icmphdr {
    __u8 type;
    __u8 code;
    __u16 check;
    __u32 rest;
} KVS_WIRE;

/* Byte order helpers usable in both worlds (constants fold at compile time). */
#define kvs_bswap16(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define kvs_bswap32(x) ((__u32)__builtin_bswap32((__u32)(x)))
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define kvs_htons(x) kvs_bswap16(x)
#define kvs_ntohs(x) kvs_bswap16(x)
#define kvs_htonl(x) kvs_bswap32(x)
#define kvs_ntohl(x) kvs_bswap32(x)
#else
#define kvs_htons(x) ((__u16)(x))
#define kvs_ntohs(x) ((__u16)(x))
#define kvs_htonl(x) ((__u32)(x))
#define kvs_ntohl(x) ((__u32)(x))
#endif

/* Unaligned 16/32-bit access inside options (TS and SACK fields sit at any even offset). */
#if defined(__bpf__)
KVS_INLINE __u32 kvs_load32(const void *p) {
    return *(const __u32 *)p;
}
KVS_INLINE void kvs_store32(void *p, __u32 v) {
    *(__u32 *)p = v;
}
KVS_INLINE __u16 kvs_load16(const void *p) {
    return *(const __u16 *)p;
}
KVS_INLINE void kvs_store16(void *p, __u16 v) {
    *(__u16 *)p = v;
}
#else
KVS_INLINE __u32 kvs_load32(const void *p) {
    __u32 v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
KVS_INLINE void kvs_store32(void *p, __u32 v) {
    __builtin_memcpy(p, &v, 4);
}
KVS_INLINE __u16 kvs_load16(const void *p) {
    __u16 v;
    __builtin_memcpy(&v, p, 2);
    return v;
}
KVS_INLINE void kvs_store16(void *p, __u16 v) {
    __builtin_memcpy(p, &v, 2);
}
#endif

#endif /* KVSTEER_PROTO_H */
