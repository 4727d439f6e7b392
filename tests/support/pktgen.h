// Test packet builder (library kvsteer_pktgen): Ethernet (+VLAN) / IPv4 (+options) or IPv6 / TCP
// with options or ICMP errors, valid checksums, and an independent full-recompute checksum
// verifier. The one place
// test frames are laid out: the BPF tests, the dataplane tests (copied into mbufs) and
// kvsteer-bpf-bench all build theirs here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvstest {

using Bytes = std::vector<std::uint8_t>;

struct TcpSpec {
    bool v6 = false;
    bool vlan = false;
    std::uint16_t vlan_tci = 7;
    std::uint8_t smac[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::uint8_t dmac[6] = {0x02, 0, 0, 0, 0, 0x02};
    std::uint32_t saddr[4] = {};  // network order
    std::uint32_t daddr[4] = {};
    std::uint16_t sport = 40000;  // host order
    std::uint16_t dport = 80;
    std::uint32_t seq = 1000, ack = 0;
    std::uint8_t flags = 0x10;
    std::uint16_t win = 501;
    Bytes opts;  // raw option bytes (padded to 4 with NOP... by the builder: EOL)
    Bytes payload;
    std::uint8_t ip_opt_words = 0;  // IPv4 options (NOP-filled), 0..10 words
    std::size_t pad_to = 0;         // pad the frame with 0xA5 bytes to this length
    std::uint16_t frag_off = 0x4000;
    std::uint16_t ip_id = 0x1234;  // IPv4 identification
};

std::uint32_t ip4(const char *dotted);  // network order
void ip6(const char *text, std::uint32_t out[4]);

Bytes build_tcp(const TcpSpec &s);

// An ICMP (IPv4) or ICMPv6 error frame quoting `quote` (an IP packet as it was sent, cut to what
// the router kept), with valid checksums.
struct IcmpSpec {
    bool v6 = false;
    bool vlan = false;
    std::uint16_t vlan_tci = 7;
    std::uint8_t smac[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::uint8_t dmac[6] = {0x02, 0, 0, 0, 0, 0x02};
    std::uint32_t saddr[4] = {};  // network order
    std::uint32_t daddr[4] = {};
    std::uint8_t type = 3, code = 4;  // ICMPv4 fragmentation needed
    std::uint32_t rest = 0;  // the word after the checksum: ICMPv4 3/4 MTU in its low 16 bits,
                             // Packet Too Big MTU all 32
    std::uint8_t ttl = 64;
    std::uint16_t ip_id = 0x4321;
    Bytes quote;
};

Bytes build_icmp(const IcmpSpec &s);

// `err` as it should leave once forwarded: other MACs and addresses (16 bytes each; IPv4 in
// [0]) around another quote, the rest (type, code, MTU, TTL) as it came.
IcmpSpec readdressed(IcmpSpec err, const std::uint8_t *smac, const std::uint8_t *dmac,
                     const std::uint32_t *saddr, const std::uint32_t *daddr, Bytes quote);

// A full-sized data segment (ACK|PSH, NOP NOP TS, 1400 payload bytes) between two addresses
// (16 bytes each, network order; IPv4 in [0]), ports in host order: what the ICMP tests quote.
TcpSpec data_segment(bool v6, const std::uint32_t *saddr, const std::uint32_t *daddr,
                     std::uint16_t sport, std::uint16_t dport, std::uint32_t seq);

// The IP packet of a frame from build_tcp (Ethernet and VLAN headers stripped, padding past the
// IP length dropped), cut to its first `n` bytes (0: whole).
Bytes ip_packet(const Bytes &frame, std::size_t n = 0);

// `want`'s IP packet cut to the length of `sent` (a quote), with `sent`'s TCP checksum bytes
// where the cut keeps them: an ICMP error's quote once translated for `want`'s sender (kvsteer
// rewrites the quoted addresses, ports and seq, and leaves the quoted TCP checksum as sent).
Bytes translated_quote(const TcpSpec &want, const Bytes &sent);

// Option builders.
Bytes opt_mss(std::uint16_t mss);
Bytes opt_ws(std::uint8_t shift);
Bytes opt_sack_perm();
Bytes opt_ts(std::uint32_t val, std::uint32_t ecr);
Bytes opt_sack(const std::vector<std::pair<std::uint32_t, std::uint32_t>> &blocks);
Bytes opt_nop(unsigned n = 1);
Bytes cat(std::initializer_list<Bytes> parts);

// The options of a segment as Linux lays them out: MSS, SACK-permitted + TS (NOP NOP in place of
// whichever is absent), NOP WS, NOP-padded to a multiple of 4.
struct LinuxOpts {
    std::uint16_t mss = 0;  // 0 = none
    std::optional<std::uint8_t> wscale;
    bool sack_perm = false;
    bool ts = false;
    std::uint32_t tsval = 0, tsecr = 0;
};
Bytes opt_linux(const LinuxOpts &o);

// Recomputes the IPv4 header checksum and the TCP checksum from scratch. Empty string = valid,
// else what is wrong.
std::string check_checksums(const std::uint8_t *frame, std::size_t len);
inline std::string check_checksums(const Bytes &b) {
    return check_checksums(b.data(), b.size());
}

// Recomputes from scratch the checksums of an ICMP/ICMPv6 frame: the outer IPv4 header, the
// ICMP checksum (ICMPv6: with its pseudo-header) and a quoted IPv4 header. Empty string = valid.
std::string check_icmp_checksums(const Bytes &frame);

// Hex dump for failure messages.
std::string hex(const std::uint8_t *p, std::size_t n);
inline std::string hex(const Bytes &b) {
    return hex(b.data(), b.size());
}

}  // namespace kvstest
