// Test packet builder and independent checksum verifier (no kvsteer header is used here, so the
// verification does not share code with what it verifies).
#include "pktgen.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace kvstest {

namespace {

void put16(Bytes &b, std::size_t off, std::uint16_t v) {
    b[off] = static_cast<std::uint8_t>(v >> 8);
    b[off + 1] = static_cast<std::uint8_t>(v);
}

void put32(Bytes &b, std::size_t off, std::uint32_t v) {
    for (int i = 0; i < 4; i++) b[off + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

std::uint32_t sum_bytes(const std::uint8_t *p, std::size_t n, std::uint32_t s = 0) {
    for (std::size_t i = 0; i + 1 < n; i += 2) s += (std::uint32_t(p[i]) << 8) | p[i + 1];
    if (n & 1) s += std::uint32_t(p[n - 1]) << 8;
    return s;
}

std::uint16_t finish(std::uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<std::uint16_t>(~s);
}

// Length of the Ethernet (+ one 802.1Q tag) header of the frame at f (18 bytes or more), and the
// ethertype after it.
std::size_t l2_len(const std::uint8_t *f, std::uint16_t *et) {
    *et = static_cast<std::uint16_t>((f[12] << 8) | f[13]);
    if (*et != 0x8100) return 14;
    *et = static_cast<std::uint16_t>((f[16] << 8) | f[17]);
    return 18;
}

// Ethernet (+ one 802.1Q tag) header; returns its length.
std::size_t put_l2(Bytes &b, const std::uint8_t *dmac, const std::uint8_t *smac, bool vlan,
                   std::uint16_t tci, bool v6) {
    std::memcpy(&b[0], dmac, 6);
    std::memcpy(&b[6], smac, 6);
    if (!vlan) {
        put16(b, 12, v6 ? 0x86dd : 0x0800);
        return 14;
    }
    put16(b, 12, 0x8100);
    put16(b, 14, tci);
    put16(b, 16, v6 ? 0x86dd : 0x0800);
    return 18;
}

}  // namespace

std::uint32_t ip4(const char *dotted) {
    in_addr a{};
    if (inet_pton(AF_INET, dotted, &a) != 1) throw std::invalid_argument(dotted);
    return a.s_addr;
}

void ip6(const char *text, std::uint32_t out[4]) {
    in6_addr a{};
    if (inet_pton(AF_INET6, text, &a) != 1) throw std::invalid_argument(text);
    std::memcpy(out, &a, 16);
}

Bytes build_tcp(const TcpSpec &s) {
    Bytes opts = s.opts;
    while (opts.size() % 4) opts.push_back(0);  // EOL padding
    std::size_t l2 = s.vlan ? 18 : 14;
    std::size_t iphl = s.v6 ? 40 : 20 + 4u * s.ip_opt_words;
    std::size_t tcphl = 20 + opts.size();
    std::size_t l4len = tcphl + s.payload.size();
    Bytes b(l2 + iphl + l4len, 0);

    put_l2(b, s.dmac, s.smac, s.vlan, s.vlan_tci, s.v6);
    std::size_t ip = l2, th = l2 + iphl;
    if (s.v6) {
        put32(b, ip, 0x60000000u);
        put16(b, ip + 4, static_cast<std::uint16_t>(l4len));
        b[ip + 6] = 6;
        b[ip + 7] = 64;
        std::memcpy(&b[ip + 8], s.saddr, 16);
        std::memcpy(&b[ip + 24], s.daddr, 16);
    } else {
        b[ip] = static_cast<std::uint8_t>(0x40 | (iphl / 4));
        put16(b, ip + 2, static_cast<std::uint16_t>(iphl + l4len));
        put16(b, ip + 4, s.ip_id);
        put16(b, ip + 6, s.frag_off);
        b[ip + 8] = 64;
        b[ip + 9] = 6;
        std::memcpy(&b[ip + 12], &s.saddr[0], 4);
        std::memcpy(&b[ip + 16], &s.daddr[0], 4);
        for (std::size_t i = 20; i < iphl; i++) b[ip + i] = 1;  // IP option NOPs
        put16(b, ip + 10, finish(sum_bytes(&b[ip], iphl)));
    }
    put16(b, th, s.sport);
    put16(b, th + 2, s.dport);
    put32(b, th + 4, s.seq);
    put32(b, th + 8, s.ack);
    b[th + 12] = static_cast<std::uint8_t>((tcphl / 4) << 4);
    b[th + 13] = s.flags;
    put16(b, th + 14, s.win);
    if (!opts.empty()) std::memcpy(&b[th + 20], opts.data(), opts.size());
    if (!s.payload.empty()) std::memcpy(&b[th + tcphl], s.payload.data(), s.payload.size());
    // TCP checksum over pseudo-header + segment.
    std::uint32_t sum = 0;
    if (s.v6) {
        sum = sum_bytes(&b[ip + 8], 32);
        sum += static_cast<std::uint32_t>(l4len >> 16) + (l4len & 0xffff) + 6;
    } else {
        sum = sum_bytes(&b[ip + 12], 8) + 6 + static_cast<std::uint32_t>(l4len);
    }
    put16(b, th + 16, finish(sum_bytes(&b[th], l4len, sum)));
    while (b.size() < s.pad_to) b.push_back(0xA5);
    return b;
}

Bytes build_icmp(const IcmpSpec &s) {
    std::size_t l2 = s.vlan ? 18 : 14;
    std::size_t iphl = s.v6 ? 40 : 20;
    std::size_t l4len = 8 + s.quote.size();
    Bytes b(l2 + iphl + l4len, 0);

    put_l2(b, s.dmac, s.smac, s.vlan, s.vlan_tci, s.v6);
    std::size_t ip = l2, ic = l2 + iphl;
    std::uint32_t sum = 0;
    if (s.v6) {
        put32(b, ip, 0x60000000u);
        put16(b, ip + 4, static_cast<std::uint16_t>(l4len));
        b[ip + 6] = 58;
        b[ip + 7] = s.ttl;
        std::memcpy(&b[ip + 8], s.saddr, 16);
        std::memcpy(&b[ip + 24], s.daddr, 16);
        sum = sum_bytes(&b[ip + 8], 32) + static_cast<std::uint32_t>(l4len >> 16) +
              (l4len & 0xffff) + 58;
    } else {
        b[ip] = 0x45;
        b[ip + 1] = 0xc0;  // what Linux sends ICMP errors with
        put16(b, ip + 2, static_cast<std::uint16_t>(iphl + l4len));
        put16(b, ip + 4, s.ip_id);
        b[ip + 8] = s.ttl;
        b[ip + 9] = 1;
        std::memcpy(&b[ip + 12], &s.saddr[0], 4);
        std::memcpy(&b[ip + 16], &s.daddr[0], 4);
        put16(b, ip + 10, finish(sum_bytes(&b[ip], iphl)));
    }
    b[ic] = s.type;
    b[ic + 1] = s.code;
    put32(b, ic + 4, s.rest);
    if (!s.quote.empty()) std::memcpy(&b[ic + 8], s.quote.data(), s.quote.size());
    put16(b, ic + 2, finish(sum_bytes(&b[ic], l4len, sum)));
    return b;
}

IcmpSpec readdressed(IcmpSpec err, const std::uint8_t *smac, const std::uint8_t *dmac,
                     const std::uint32_t *saddr, const std::uint32_t *daddr, Bytes quote) {
    std::memcpy(err.smac, smac, 6);
    std::memcpy(err.dmac, dmac, 6);
    std::memcpy(err.saddr, saddr, 16);
    std::memcpy(err.daddr, daddr, 16);
    err.quote = std::move(quote);
    return err;
}

TcpSpec data_segment(bool v6, const std::uint32_t *saddr, const std::uint32_t *daddr,
                     std::uint16_t sport, std::uint16_t dport, std::uint32_t seq) {
    TcpSpec t;
    t.v6 = v6;
    std::memcpy(t.saddr, saddr, 16);
    std::memcpy(t.daddr, daddr, 16);
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.ack = 0x12345678;
    t.flags = 0x18;  // ACK PSH
    t.opts = cat({opt_nop(2), opt_ts(1000, 2000)});
    t.payload = Bytes(1400, 'm');
    return t;
}

Bytes ip_packet(const Bytes &f, std::size_t n) {
    std::size_t l2 = (f.size() > 13 && f[12] == 0x81 && f[13] == 0x00) ? 18 : 14;
    if (f.size() < l2 + 20) throw std::invalid_argument("ip_packet: frame too short");
    std::size_t len = (f[l2] >> 4) == 6 ? 40 + ((std::size_t(f[l2 + 4]) << 8) | f[l2 + 5])
                                        : (std::size_t(f[l2 + 2]) << 8) | f[l2 + 3];
    if (n && n < len) len = n;
    if (l2 + len > f.size()) throw std::invalid_argument("ip_packet: length past the frame");
    return Bytes(f.begin() + static_cast<std::ptrdiff_t>(l2),
                 f.begin() + static_cast<std::ptrdiff_t>(l2 + len));
}

Bytes translated_quote(const TcpSpec &want, const Bytes &sent) {
    Bytes q = ip_packet(build_tcp(want), sent.size());
    std::size_t th = want.v6 ? 40 : 20 + 4u * want.ip_opt_words;
    for (std::size_t i = th + 16; i < th + 18 && i < q.size() && i < sent.size(); i++)
        q[i] = sent[i];
    return q;
}

Bytes opt_mss(std::uint16_t mss) {
    return {2, 4, std::uint8_t(mss >> 8), std::uint8_t(mss)};
}
Bytes opt_ws(std::uint8_t shift) {
    return {3, 3, shift};
}
Bytes opt_sack_perm() {
    return {4, 2};
}
Bytes opt_ts(std::uint32_t val, std::uint32_t ecr) {
    Bytes b(10);
    b[0] = 8;
    b[1] = 10;
    put32(b, 2, val);
    put32(b, 6, ecr);
    return b;
}
Bytes opt_sack(const std::vector<std::pair<std::uint32_t, std::uint32_t>> &blocks) {
    Bytes b(2 + 8 * blocks.size());
    b[0] = 5;
    b[1] = static_cast<std::uint8_t>(b.size());
    for (std::size_t i = 0; i < blocks.size(); i++) {
        put32(b, 2 + 8 * i, blocks[i].first);
        put32(b, 6 + 8 * i, blocks[i].second);
    }
    return b;
}
Bytes opt_nop(unsigned n) {
    return Bytes(n, 1);
}
Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto &p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

Bytes opt_linux(const LinuxOpts &o) {
    Bytes b;
    if (o.mss) b = opt_mss(o.mss);
    if (o.sack_perm && o.ts)
        b = cat({b, opt_sack_perm()});
    else if (o.ts)
        b = cat({b, opt_nop(2)});
    else if (o.sack_perm)
        b = cat({b, opt_nop(2), opt_sack_perm()});
    if (o.ts) b = cat({b, opt_ts(o.tsval, o.tsecr)});
    if (o.wscale) b = cat({b, opt_nop(), opt_ws(*o.wscale)});
    while (b.size() % 4) b.push_back(1);  // NOP padding (build_tcp's own would be EOL)
    return b;
}

std::string check_checksums(const std::uint8_t *f, std::size_t len) {
    if (len < 18) return "frame too short";
    std::uint16_t et;
    std::size_t l2 = l2_len(f, &et);
    std::uint32_t sum;
    std::size_t th, l4len;
    if (et == 0x0800) {
        std::size_t ihl = (f[l2] & 15u) * 4;
        std::size_t tot = (std::size_t(f[l2 + 2]) << 8) | f[l2 + 3];
        if (l2 + tot > len || ihl < 20) return "bad IPv4 lengths";
        if (finish(sum_bytes(f + l2, ihl)) != 0) return "IPv4 header checksum wrong";
        th = l2 + ihl;
        l4len = tot - ihl;
        sum = sum_bytes(f + l2 + 12, 8) + f[l2 + 9] + static_cast<std::uint32_t>(l4len);
    } else if (et == 0x86dd) {
        l4len = (std::size_t(f[l2 + 4]) << 8) | f[l2 + 5];
        th = l2 + 40;
        if (th + l4len > len) return "bad IPv6 length";
        sum = sum_bytes(f + l2 + 8, 32) + f[l2 + 6] + static_cast<std::uint32_t>(l4len);
    } else {
        return "not IP";
    }
    if (finish(sum_bytes(f + th, l4len, sum)) != 0) return "TCP checksum wrong";
    return "";
}

std::string check_icmp_checksums(const Bytes &b) {
    const std::uint8_t *f = b.data();
    std::size_t len = b.size();
    if (len < 18) return "frame too short";
    std::uint16_t et;
    std::size_t l2 = l2_len(f, &et);
    std::size_t ic, l4len;
    std::uint32_t sum = 0;
    bool v4 = et == 0x0800;
    if (v4) {
        std::size_t ihl = (f[l2] & 15u) * 4;
        std::size_t tot = (std::size_t(f[l2 + 2]) << 8) | f[l2 + 3];
        if (l2 + tot > len || ihl < 20 || tot < ihl) return "bad IPv4 lengths";
        if (f[l2 + 9] != 1) return "not ICMP";
        if (finish(sum_bytes(f + l2, ihl)) != 0) return "IPv4 header checksum wrong";
        ic = l2 + ihl;
        l4len = tot - ihl;
    } else if (et == 0x86dd) {
        l4len = (std::size_t(f[l2 + 4]) << 8) | f[l2 + 5];
        ic = l2 + 40;
        if (ic + l4len > len) return "bad IPv6 length";
        if (f[l2 + 6] != 58) return "not ICMPv6";
        sum = sum_bytes(f + l2 + 8, 32) + static_cast<std::uint32_t>(l4len >> 16) +
              (l4len & 0xffff) + 58;
    } else {
        return "not IP";
    }
    if (l4len < 8) return "ICMP message shorter than its header";
    if (finish(sum_bytes(f + ic, l4len, sum)) != 0)
        return v4 ? "ICMP checksum wrong" : "ICMPv6 checksum wrong";
    if (v4 && l4len >= 8 + 20) {
        const std::uint8_t *q = f + ic + 8;
        std::size_t qihl = (q[0] & 15u) * 4;
        if ((q[0] >> 4) == 4 && qihl >= 20 && 8 + qihl <= l4len && finish(sum_bytes(q, qihl)) != 0)
            return "quoted IPv4 header checksum wrong";
    }
    return "";
}

std::string hex(const std::uint8_t *p, std::size_t n) {
    std::string s;
    char buf[4];
    for (std::size_t i = 0; i < n; i++) {
        std::snprintf(buf, sizeof buf, "%02x%s", p[i], (i % 16 == 15) ? "\n" : " ");
        s += buf;
    }
    return s;
}

}  // namespace kvstest
