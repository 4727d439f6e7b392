// The SYN-ACK builder in userspace: layout, options per client offer and config, checksums, and a
// cookie that validates and carries the client's options.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>

#include "kvsteer/synack.h"
#include "pktgen.h"

using namespace kvstest;

namespace {

struct Built {
    Bytes frame;
    kvs_synack sa;
};

kvs_config test_config() {
    kvs_config c{};
    c.cookie_key[0][0] = 0x1111;
    c.cookie_key[0][1] = 0x2222;
    c.syn_mss = 1400;
    c.syn_wscale = 8;
    c.syn_window = 0;  // default
    c.flags = KVS_CFG_SYN_TIMESTAMPS;
    return c;
}

Built answer(const Bytes &syn, const kvs_config &cfg, std::uint64_t slot) {
    Bytes in = syn;
    kvs_pkt p;
    EXPECT_EQ(kvs_parse(in.data(), in.data() + in.size(), &p), KVS_PARSE_OK);
    Built b;
    kvs_synack_plan(&p, &cfg, &b.sa);
    kvs_cookie_tuple t;
    kvs_cookie_tuple_of(&p, &t);
    b.sa.cookie = kvs_cookie_make(cfg.cookie_key[0], &t, slot, b.sa.cookie_data);
    b.sa.tsval = 777;
    // Resize like bpf_xdp_adjust_tail: the L2 header stays, the rest is garbage (0xA5).
    b.frame.assign(b.sa.frame_len, 0xA5);
    std::memcpy(b.frame.data(), syn.data(), b.sa.l3_off);
    EXPECT_EQ(kvs_synack_write(b.frame.data(), b.frame.data() + b.frame.size(), &b.sa), 0);
    return b;
}

TcpSpec syn_spec() {
    TcpSpec s;
    s.saddr[0] = ip4("10.1.0.2");
    s.daddr[0] = ip4("10.9.0.1");
    s.sport = 40001;
    s.dport = 80;
    s.seq = 0xdeadbeef;
    s.flags = 0x02;
    s.win = 64240;
    return s;
}

TEST(BpfSynack, AllOptions) {
    TcpSpec s = syn_spec();
    s.opts = cat({opt_mss(1460), opt_sack_perm(), opt_ts(4242, 0), opt_nop(), opt_ws(7)});
    Bytes syn = build_tcp(s);
    kvs_config cfg = test_config();
    Built b = answer(syn, cfg, 1000);
    const Bytes &f = b.frame;
    ASSERT_EQ(check_checksums(f), "") << hex(f);
    ASSERT_EQ(f.size(), 14u + 20 + 20 + 20);       // MSS, SACK-perm+TS, NOP+WS
    EXPECT_EQ(0, std::memcmp(&f[0], &syn[6], 6));  // MACs swapped
    EXPECT_EQ(0, std::memcmp(&f[6], &syn[0], 6));
    EXPECT_EQ(0, std::memcmp(&f[26], &syn[30], 4));  // addresses swapped
    EXPECT_EQ(0, std::memcmp(&f[30], &syn[26], 4));
    EXPECT_EQ(f[34], syn[36]);  // ports swapped
    EXPECT_EQ(f[36], syn[34]);
    kvs_pkt p;
    Bytes g = f;
    ASSERT_EQ(kvs_parse(g.data(), g.data() + g.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.tcp->flags, KVS_TCP_SYN | KVS_TCP_ACK);
    EXPECT_EQ(kvs_ntohl(p.tcp->ack_seq), 0xdeadbeefu + 1);
    EXPECT_EQ(kvs_ntohs(p.tcp->window), KVS_SYNACK_DEFAULT_WINDOW);
    EXPECT_EQ(p.opts.mss, 1400);
    EXPECT_EQ(p.opts.wscale, 8);
    EXPECT_EQ(p.opts.sack_perm, 1);
    EXPECT_EQ(p.opts.tsval, 777u);
    EXPECT_EQ(p.opts.tsecr, 4242u);
    EXPECT_EQ(p.payload_len, 0);
    // The ISN is a cookie for the client's tuple carrying the client's options.
    kvs_cookie_tuple t{};
    t.saddr[0] = s.saddr[0];
    t.daddr[0] = s.daddr[0];
    t.sport = htons(s.sport);
    t.dport = htons(s.dport);
    kvs_cookie_opts co{};
    ASSERT_TRUE(kvs_cookie_check(&cfg.cookie_key[0][0], &t, kvs_ntohl(p.tcp->seq), 1000, &co));
    EXPECT_EQ(co.mss, 1460);
    EXPECT_EQ(co.wscale, 7);
    EXPECT_EQ(co.sack_perm, 1);
}

TEST(BpfSynack, NoOptionsAtAll) {
    TcpSpec s = syn_spec();
    s.pad_to = 60;  // padded minimum frame
    Bytes syn = build_tcp(s);
    kvs_config cfg = test_config();
    Built b = answer(syn, cfg, 5);
    ASSERT_EQ(check_checksums(b.frame), "");
    ASSERT_EQ(b.frame.size(), 14u + 20 + 20 + 4);  // MSS only
    kvs_pkt p;
    Bytes g = b.frame;
    ASSERT_EQ(kvs_parse(g.data(), g.data() + g.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.opts.mss, 1400);
    EXPECT_EQ(p.opts.wscale, KVS_WSCALE_NONE);
    EXPECT_EQ(p.opts.sack_perm, 0);
    EXPECT_EQ(p.opts.ts_off, 0);
    kvs_cookie_opts co{};
    kvs_cookie_tuple t;
    kvs_cookie_tuple_of(&p, &t);  // reversed direction: swap back
    std::swap(t.saddr, t.daddr);
    std::swap(t.sport, t.dport);
    ASSERT_TRUE(kvs_cookie_check(&cfg.cookie_key[0][0], &t, kvs_ntohl(p.tcp->seq), 5, &co));
    EXPECT_EQ(co.mss, 536);  // no MSS option = RFC default
    EXPECT_EQ(co.wscale, KVS_WSCALE_NONE);
}

TEST(BpfSynack, TimestampsOnlyWhenConfigured) {
    TcpSpec s = syn_spec();
    s.opts = cat({opt_mss(1460), opt_nop(2), opt_ts(1, 0)});
    kvs_config cfg = test_config();
    cfg.flags = 0;
    Built b = answer(build_tcp(s), cfg, 5);
    ASSERT_EQ(check_checksums(b.frame), "");
    kvs_pkt p;
    Bytes g = b.frame;
    ASSERT_EQ(kvs_parse(g.data(), g.data() + g.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.opts.ts_off, 0);
    EXPECT_EQ(b.frame.size(), 14u + 40 + 4);
}

TEST(BpfSynack, VlanIpv6AndSynPayloadIgnored) {
    TcpSpec s = syn_spec();
    s.v6 = true;
    s.vlan = true;
    ip6("fd00::2", s.saddr);
    ip6("fd00::9", s.daddr);
    s.opts = cat({opt_mss(8960), opt_sack_perm(), opt_nop(), opt_ws(14)});
    s.payload = Bytes(33, 0x77);  // TFO-style data: not acknowledged
    Bytes syn = build_tcp(s);
    kvs_config cfg = test_config();
    Built b = answer(syn, cfg, 9);
    ASSERT_EQ(check_checksums(b.frame), "");
    ASSERT_EQ(b.frame.size(), 18u + 40 + 20 + 12);
    EXPECT_EQ(0, std::memcmp(&b.frame[12], &syn[12], 6));  // VLAN tag kept
    kvs_pkt p;
    Bytes g = b.frame;
    ASSERT_EQ(kvs_parse(g.data(), g.data() + g.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(kvs_ntohl(p.tcp->ack_seq), s.seq + 1);
    EXPECT_EQ(p.opts.wscale, 8);
    EXPECT_EQ(p.opts.sack_perm, 1);
}

}  // namespace
