// kvs_parse on good and hostile frames: every truncation, bad IHL/doff/option lengths, VLAN, IPv6.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "kvsteer/parse.h"
#include "pktgen.h"

using namespace kvstest;

namespace {

TcpSpec base_spec() {
    TcpSpec s;
    s.saddr[0] = ip4("10.0.0.1");
    s.daddr[0] = ip4("10.0.0.2");
    s.seq = 0x11223344;
    s.ack = 0x55667788;
    s.flags = 0x18;
    s.opts = cat({opt_nop(2), opt_ts(111, 222), opt_nop(2), opt_sack({{1, 2}, {3, 4}})});
    s.payload = Bytes(100, 0x42);
    return s;
}

int parse(Bytes &b, kvs_pkt *p) {
    // Copy into an exact-size heap buffer so ASan catches any read past the end.
    std::unique_ptr<std::uint8_t[]> buf(new std::uint8_t[b.size() ? b.size() : 1]);
    if (!b.empty()) std::memcpy(buf.get(), b.data(), b.size());
    int st = kvs_parse(buf.get(), buf.get() + b.size(), p);
    if (st == KVS_PARSE_OK) {
        // Pointers must lie inside the buffer; translate them to the caller's copy.
        auto *lo = buf.get(), *hi = buf.get() + b.size();
        EXPECT_GE(reinterpret_cast<std::uint8_t *>(p->tcp), lo);
        EXPECT_LE(reinterpret_cast<std::uint8_t *>(p->tcp) + p->tcp_hlen, hi);
        p->eth = nullptr;
        p->ip4 = nullptr;
        p->ip6 = nullptr;
        p->tcp = nullptr;
    }
    return st;
}

TEST(BpfParse, Ipv4WithOptions) {
    Bytes b = build_tcp(base_spec());
    std::vector<std::uint8_t> buf = b;
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(buf.data(), buf.data() + buf.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.family, 4);
    EXPECT_EQ(p.l3_off, 14);
    EXPECT_EQ(p.l4_off, 34);
    EXPECT_EQ(p.tcp_hlen, 20 + 32);
    EXPECT_EQ(p.payload_len, 100);
    EXPECT_EQ(p.opts.ts_off, 20 + 4);
    EXPECT_EQ(p.opts.tsval, 111u);
    EXPECT_EQ(p.opts.tsecr, 222u);
    EXPECT_EQ(p.opts.sack_n, 2);
    EXPECT_EQ(p.opts.sack_off, 20 + 12 + 4);
    EXPECT_EQ(p.opts.mss, 0);
    EXPECT_EQ(p.opts.wscale, KVS_WSCALE_NONE);
    EXPECT_EQ(kvs_ntohl(p.tcp->seq), 0x11223344u);
}

TEST(BpfParse, SynOptionsAnyOrder) {
    TcpSpec s = base_spec();
    s.flags = 0x02;
    s.payload.clear();
    s.opts = cat({opt_mss(1400), opt_nop(), opt_ws(9), opt_nop(2), opt_ts(5, 0), opt_sack_perm()});
    Bytes b = build_tcp(s);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.opts.mss, 1400);
    EXPECT_EQ(p.opts.wscale, 9);
    EXPECT_EQ(p.opts.sack_perm, 1);
    EXPECT_EQ(p.opts.tsval, 5u);
    EXPECT_EQ(p.opts.ts_off, 20 + 12);
    EXPECT_EQ(p.payload_len, 0);
}

TEST(BpfParse, EthernetPaddingIsNotPayload) {
    TcpSpec s = base_spec();
    s.payload.clear();
    s.opts.clear();
    s.pad_to = 60;
    Bytes b = build_tcp(s);
    ASSERT_EQ(b.size(), 60u);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.payload_len, 0);
    EXPECT_EQ(p.frame_len, 60u);
}

TEST(BpfParse, VlanAndIpOptions) {
    TcpSpec s = base_spec();
    s.vlan = true;
    s.ip_opt_words = 3;
    Bytes b = build_tcp(s);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.vlan, 1);
    EXPECT_EQ(p.l3_off, 18);
    EXPECT_EQ(p.l4_off, 18 + 32);
    EXPECT_EQ(p.payload_len, 100);
}

TEST(BpfParse, Ipv6) {
    TcpSpec s = base_spec();
    s.v6 = true;
    ip6("fd00::1", s.saddr);
    ip6("fd00::2", s.daddr);
    Bytes b = build_tcp(s);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.family, 6);
    EXPECT_EQ(p.l4_off, 54);
    EXPECT_EQ(p.payload_len, 100);
    // Extension header (hop-by-hop = 0) and ICMPv6.
    b[14 + 6] = 0;
    EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_IPV6_EXT);
    EXPECT_EQ(kvs_parse_reason(KVS_PARSE_IPV6_EXT, 0), unsigned(KVS_R_PASS_IPV6_EXT));
    b[14 + 6] = 58;
    EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_NOT_TCP);
    EXPECT_EQ(kvs_parse_reason(KVS_PARSE_NOT_TCP, p.l4proto), unsigned(KVS_R_PASS_ICMP));
}

TEST(BpfParse, NonIpAndNonTcp) {
    Bytes b = build_tcp(base_spec());
    kvs_pkt p;
    b[12] = 0x08;
    b[13] = 0x06;  // ARP
    EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_NOT_IP);
    b = build_tcp(base_spec());
    b[14 + 9] = 17;  // UDP
    EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_NOT_TCP);
    EXPECT_EQ(kvs_parse_reason(KVS_PARSE_NOT_TCP, p.l4proto), unsigned(KVS_R_PASS_NOT_TCP));
}

TEST(BpfParse, Fragments) {
    for (std::uint16_t fo : {0x2000, 0x0001, 0x20ff}) {
        TcpSpec s = base_spec();
        s.frag_off = fo;
        Bytes b = build_tcp(s);
        kvs_pkt p;
        EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_FRAGMENT) << fo;
    }
}

TEST(BpfParse, EveryTruncation) {
    for (bool v6 : {false, true}) {
        for (bool vlan : {false, true}) {
            TcpSpec s = base_spec();
            s.v6 = v6;
            s.vlan = vlan;
            if (v6) {
                ip6("fd00::1", s.saddr);
                ip6("fd00::2", s.daddr);
            }
            Bytes full = build_tcp(s);
            for (std::size_t n = 0; n < full.size(); n++) {
                Bytes b(full.begin(), full.begin() + static_cast<long>(n));
                kvs_pkt p;
                EXPECT_EQ(parse(b, &p), KVS_PARSE_TRUNCATED) << "len " << n << " v6 " << v6;
            }
            kvs_pkt p;
            EXPECT_EQ(parse(full, &p), KVS_PARSE_OK);
        }
    }
}

TEST(BpfParse, BadIhlAndLengths) {
    for (std::uint8_t ihl = 0; ihl < 5; ihl++) {
        Bytes b = build_tcp(base_spec());
        b[14] = static_cast<std::uint8_t>(0x40 | ihl);
        kvs_pkt p;
        EXPECT_EQ(parse(b, &p), KVS_PARSE_BAD_IP) << int(ihl);
    }
    {
        Bytes b = build_tcp(base_spec());
        b[14] = 0x55;  // version 5
        kvs_pkt p;
        EXPECT_EQ(parse(b, &p), KVS_PARSE_BAD_IP);
    }
    {
        Bytes b = build_tcp(base_spec());
        b[14 + 2] = 0;
        b[14 + 3] = 10;  // tot_len < ihl
        kvs_pkt p;
        EXPECT_EQ(parse(b, &p), KVS_PARSE_BAD_IP);
    }
    {
        Bytes b = build_tcp(base_spec());
        b[14] = 0x4f;  // IHL 60 bytes: runs into TCP, then TCP header lies past the IP length
        kvs_pkt p;
        int st = parse(b, &p);
        EXPECT_TRUE(st == KVS_PARSE_BAD_DOFF || st == KVS_PARSE_TRUNCATED ||
                    st == KVS_PARSE_BAD_OPTION)
            << st;
    }
}

TEST(BpfParse, BadDoff) {
    for (std::uint8_t doff = 0; doff < 5; doff++) {
        Bytes b = build_tcp(base_spec());
        b[34 + 12] = static_cast<std::uint8_t>(doff << 4);
        kvs_pkt p;
        EXPECT_EQ(parse(b, &p), KVS_PARSE_BAD_DOFF) << int(doff);
    }
    TcpSpec s = base_spec();
    s.payload.clear();
    Bytes b = build_tcp(s);  // header 48 bytes, no payload
    b[34 + 12] = 15 << 4;    // doff 60 > IP payload 48
    kvs_pkt p;
    EXPECT_EQ(parse(b, &p), KVS_PARSE_BAD_DOFF);
}

TEST(BpfParse, HostileOptionLengths) {
    // As Linux's tcp_parse_options: a length below 2, past the option space or with no room is
    // where the walk stops (what came before stands); a known kind of the wrong length is
    // skipped by its length; neither makes the segment bad (`ignored` says so).
    struct Case {
        Bytes opts;
        std::uint8_t ignored;
        std::uint16_t mss;  // what the walk read: MSS 1400 where a case has it after the odd one
    } cases[] = {
        {{2, 0, 0, 0}, 1, 0},                           // length 0: stop
        {{2, 1, 0, 0}, 1, 0},                           // length 1: stop
        {{1, 1, 1, 99}, 1, 0},                          // no room for a length: stop
        {{30, 200, 0, 0}, 1, 0},                        // past the option space: stop
        {{8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 0},  // TS wrong length: skipped
        {{2, 3, 0, 1, 2, 4, 5, 0x78}, 1, 1400},         // MSS wrong length, then MSS
        {{5, 9, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5, 0x78, 0, 0, 0}, 1, 1400},  // SACK not 2+8n
        {{5, 2, 2, 4, 5, 0x78, 1, 1}, 1, 1400},                          // SACK with no block
        {{2, 4, 5, 0x78, 2, 1, 2, 4}, 1, 1400},                          // MSS, then a stop
        {{2, 1, 2, 4, 5, 0x78, 1, 1}, 1, 0},                             // a stop, then MSS unread
        {{0, 2, 0, 0}, 0, 0},                                            // EOL ends parsing
        {{1, 1, 1, 1}, 0, 0},                                            // all NOPs
        {{99, 4, 0, 0}, 0, 0},                                           // unknown kind skipped
    };
    for (const auto &c : cases) {
        TcpSpec s = base_spec();
        s.opts = c.opts;
        Bytes b = build_tcp(s);
        kvs_pkt p;
        EXPECT_EQ(parse(b, &p), KVS_PARSE_OK) << hex(c.opts);
        EXPECT_EQ(p.opts.ignored, c.ignored) << hex(c.opts);
        EXPECT_EQ(p.opts.mss, c.mss) << hex(c.opts);
    }
    // Forty bytes of options, the maximum: four SACK blocks + NOP NOP.
    TcpSpec s = base_spec();
    s.opts = cat({opt_nop(2), opt_sack({{1, 2}, {3, 4}, {5, 6}, {7, 8}}), opt_nop(4)});
    Bytes b = build_tcp(s);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.opts.sack_n, 4);
    EXPECT_EQ(p.tcp_hlen, 60);
}

TEST(BpfParse, RandomMutationsNeverCrash) {
    std::mt19937 rng(42);
    Bytes full = build_tcp(base_spec());
    int ok = 0;
    for (int i = 0; i < 100000; i++) {
        Bytes b = full;
        int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; f++)
            b[14 + rng() % (b.size() - 14)] = static_cast<std::uint8_t>(rng());
        b.resize(rng() % (b.size() + 1));
        kvs_pkt p;
        ok += parse(b, &p) == KVS_PARSE_OK;
    }
    EXPECT_GT(ok, 0);  // some mutations stay valid (payload bytes): the parser is not rejecting all
}

}  // namespace
