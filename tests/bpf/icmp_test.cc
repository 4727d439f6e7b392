// icmp.h in userspace: which errors are recognised, the flow key from the quote, and the rewrite
// checked against frames built independently (pktgen) and on random errors against a full
// checksum recomputation.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <random>

#include "kvsteer/icmp.h"
#include "pktgen.h"
#include "test_pairs.h"

using namespace kvstest;

namespace {

std::uint32_t rd32(const std::uint8_t *p) {
    return (std::uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

const std::uint8_t kRouterMac[6] = {0x02, 0xee, 0, 0, 0, 0x09};

struct Pair {
    kvs_flowpair_params p{};
    kvs_flow_key kc{}, ks{};
    kvs_flow fc{}, fs{};
};

Pair make_pair(bool v6) {
    Pair x;
    x.p = v6 ? pair6_params() : pair4_params();
    kvs_flowpair_build(&x.p, &x.kc, &x.fc, &x.ks, &x.fs);
    return x;
}

struct Parsed {
    int pst = -1, ist = -1;
    kvs_pkt pkt{};
    kvs_icmp_err e{};
};

Parsed parse(Bytes &b) {
    Parsed r;
    r.pst = kvs_parse(b.data(), b.data() + b.size(), &r.pkt);
    if (r.pst == KVS_PARSE_NOT_TCP) r.ist = kvs_icmp_parse(b.data() + b.size(), &r.pkt, &r.e);
    return r;
}

TEST(BpfIcmp, FragNeededFromBackendLegGoesToClient) {
    Pair x = make_pair(false);
    x.fc.seq_delta = 0x1000;  // not made by flowpair today: shows the quote moves back by R's
    const std::uint32_t router = ip4("10.2.0.254");
    TcpSpec sent = data_segment(false, x.p.snat_addr, x.p.backend_addr, 20001, 8000, 5000 + 0x1000);
    Bytes q = ip_packet(build_tcp(sent), 548);  // Linux quotes up to 576 bytes in all
    IcmpSpec in;
    std::memcpy(in.smac, kRouterMac, 6);
    std::memcpy(in.dmac, kApplMac, 6);
    in.saddr[0] = router;
    in.daddr[0] = x.p.snat_addr[0];
    in.rest = 1400;
    in.quote = q;
    Bytes b = build_icmp(in);

    Parsed r = parse(b);
    ASSERT_EQ(r.pst, KVS_PARSE_NOT_TCP);
    ASSERT_EQ(r.ist, KVS_ICMP_OK);
    EXPECT_EQ(r.e.icmp_len, 8u + 548);
    kvs_flow_key k;
    ASSERT_EQ(kvs_icmp_flow_key(b.data() + b.size(), &r.pkt, &r.e, &k), 0);
    EXPECT_EQ(0, std::memcmp(&k, &x.ks, sizeof k)) << "the quote reversed is the S2C key";
    kvs_flow_key rk;
    kvs_flow_reverse_key(&k, &x.fs, &rk);
    EXPECT_EQ(0, std::memcmp(&rk, &x.kc, sizeof rk)) << "and its reverse the C2S key";
    ASSERT_EQ(kvs_icmp_rewrite(b.data() + b.size(), &r.pkt, &r.e, &x.fs, x.fc.seq_delta), 0);

    TcpSpec orig = data_segment(false, x.p.client_addr, x.p.vip_addr, 40001, 80, 5000);
    Bytes want = build_icmp(readdressed(in, kApplMac, kClientMac, x.p.vip_addr, x.p.client_addr,
                                        translated_quote(orig, q)));
    EXPECT_EQ(b, want) << "got:\n" << hex(b) << "\nwant:\n" << hex(want);
    EXPECT_EQ(check_icmp_checksums(b), "");
}

TEST(BpfIcmp, PacketTooBigFromClientLegGoesToBackend) {
    Pair x = make_pair(true);
    std::uint32_t router[4];
    ip6("fd00::fe", router);
    // The appliance sent the client VIP -> client with the seq moved into the cookie's space.
    std::uint32_t backend_seq = x.p.backend_isn + 1 + 300;
    TcpSpec sent =
        data_segment(true, x.p.vip_addr, x.p.client_addr, 80, 40001, backend_seq + x.fs.seq_delta);
    sent.vlan = true;
    Bytes q = ip_packet(build_tcp(sent), 1232);  // as much as fits in 1280
    IcmpSpec in;
    in.v6 = true;
    in.vlan = true;
    std::memcpy(in.smac, kRouterMac, 6);
    std::memcpy(in.dmac, kApplMac, 6);
    std::memcpy(in.saddr, router, 16);
    std::memcpy(in.daddr, x.p.vip_addr, 16);
    in.type = KVS_ICMPV6_PKT_TOOBIG;
    in.code = 0;
    in.rest = 1280;
    in.quote = q;
    Bytes b = build_icmp(in);

    Parsed r = parse(b);
    ASSERT_EQ(r.pst, KVS_PARSE_NOT_TCP);
    ASSERT_EQ(r.ist, KVS_ICMP_OK);
    kvs_flow_key k;
    ASSERT_EQ(kvs_icmp_flow_key(b.data() + b.size(), &r.pkt, &r.e, &k), 0);
    EXPECT_EQ(0, std::memcmp(&k, &x.kc, sizeof k));
    ASSERT_EQ(kvs_icmp_rewrite(b.data() + b.size(), &r.pkt, &r.e, &x.fc, x.fs.seq_delta), 0);

    TcpSpec orig = data_segment(true, x.p.backend_addr, x.p.snat_addr, 8000, 20001, backend_seq);
    Bytes want = build_icmp(readdressed(in, kApplMac, kBackendMac, x.p.snat_addr, x.p.backend_addr,
                                        translated_quote(orig, q)));
    EXPECT_EQ(b, want) << "got:\n" << hex(b) << "\nwant:\n" << hex(want);
    EXPECT_EQ(check_icmp_checksums(b), "");
}

TEST(BpfIcmp, WhatIsNotAnErrorAboutTcp) {
    Pair x = make_pair(false);
    TcpSpec sent = data_segment(false, x.p.snat_addr, x.p.backend_addr, 20001, 8000, 1);
    IcmpSpec in;
    in.saddr[0] = ip4("10.2.0.254");
    in.daddr[0] = x.p.snat_addr[0];
    in.quote = ip_packet(build_tcp(sent), 28);
    auto status = [](const IcmpSpec &s) {
        Bytes b = build_icmp(s);
        return parse(b).ist;
    };
    EXPECT_EQ(status(in), KVS_ICMP_OK);  // IP header + 8 bytes: the RFC 792 minimum
    IcmpSpec t = in;
    t.type = KVS_ICMP_TIME_EXCEEDED;
    t.code = 0;
    EXPECT_EQ(status(t), KVS_ICMP_OK);
    t.type = 8;  // echo request
    EXPECT_EQ(status(t), KVS_ICMP_NOT_ERROR);
    t.type = 12;  // parameter problem: not forwarded
    EXPECT_EQ(status(t), KVS_ICMP_NOT_ERROR);
    t = in;
    t.quote = ip_packet(build_tcp(sent), 27);  // 7 TCP bytes: no whole seq
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote = ip_packet(build_tcp(sent), 19);  // not even the IP header
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote.clear();
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote = ip_packet(build_tcp(sent), 28);
    t.quote[0] = 0x65;  // an IPv6 version in an ICMPv4 quote
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote[0] = 0x44;  // IHL below 5
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote = ip_packet(build_tcp(sent), 28);
    t.quote[9] = 17;  // UDP
    EXPECT_EQ(status(t), KVS_ICMP_NOT_TCP);
    t.quote = ip_packet(build_tcp(sent), 28);
    t.quote[7] = 0x10;  // a non-first fragment quotes no TCP header
    EXPECT_EQ(status(t), KVS_ICMP_NOT_TCP);
    TcpSpec opt = sent;
    opt.ip_opt_words = 3;  // quoted IPv4 options: TCP starts at 32
    t.quote = ip_packet(build_tcp(opt), 40);
    EXPECT_EQ(status(t), KVS_ICMP_OK);
    t.quote.resize(39);
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);

    // The quote must lie inside the outer IP length, not only inside the frame.
    Bytes padded = build_icmp(in);
    padded[14 + 3] -= 1;  // IP total length one short of the quote's 8 TCP bytes
    padded[14 + 10] = padded[14 + 11] = 0;
    kvs_pkt pk;
    kvs_icmp_err e;
    ASSERT_EQ(kvs_parse(padded.data(), padded.data() + padded.size(), &pk), KVS_PARSE_NOT_TCP);
    EXPECT_EQ(kvs_icmp_parse(padded.data() + padded.size(), &pk, &e), KVS_ICMP_BAD_QUOTE);

    // ICMPv6: errors 1-3 only, quoting IPv6 TCP without extension headers.
    Pair y = make_pair(true);
    TcpSpec s6 = data_segment(true, y.p.snat_addr, y.p.backend_addr, 20001, 8000, 1);
    IcmpSpec i6;
    i6.v6 = true;
    ip6("fd02::fe", i6.saddr);
    std::memcpy(i6.daddr, y.p.snat_addr, 16);
    i6.type = KVS_ICMPV6_DEST_UNREACH;
    i6.code = 0;
    i6.quote = ip_packet(build_tcp(s6), 48);
    EXPECT_EQ(status(i6), KVS_ICMP_OK);
    t = i6;
    t.type = KVS_ICMPV6_TIME_EXCEED;
    EXPECT_EQ(status(t), KVS_ICMP_OK);
    t.type = 128;  // echo request
    EXPECT_EQ(status(t), KVS_ICMP_NOT_ERROR);
    t.type = 135;  // neighbour solicitation
    EXPECT_EQ(status(t), KVS_ICMP_NOT_ERROR);
    t = i6;
    t.quote.resize(47);
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    t.quote = ip_packet(build_tcp(s6), 48);
    t.quote[6] = 60;  // destination options before TCP
    EXPECT_EQ(status(t), KVS_ICMP_NOT_TCP);
    t.quote[6] = 6;
    t.quote[0] = 0x45;
    EXPECT_EQ(status(t), KVS_ICMP_BAD_QUOTE);
    // ICMP (not ICMPv6) over IPv6 is nothing of ours.
    Bytes b = build_icmp(i6);
    b[14 + 6] = 1;
    EXPECT_EQ(parse(b).ist, KVS_ICMP_NOT_ERROR);
}

TEST(BpfIcmp, ErrorNotAddressedToTheQuotesSourceHasNoKey) {
    Pair x = make_pair(false);
    TcpSpec sent = data_segment(false, x.p.snat_addr, x.p.backend_addr, 20001, 8000, 1);
    IcmpSpec in;
    in.saddr[0] = ip4("10.2.0.254");
    in.daddr[0] = ip4("10.2.0.99");  // someone else
    in.quote = ip_packet(build_tcp(sent), 28);
    Bytes b = build_icmp(in);
    Parsed r = parse(b);
    ASSERT_EQ(r.ist, KVS_ICMP_OK);
    kvs_flow_key k;
    EXPECT_EQ(kvs_icmp_flow_key(b.data() + b.size(), &r.pkt, &r.e, &k), -1);
}

// Random errors of both families, both legs, any quote length from the minimum up, quoted IPv4
// options and VLAN tags: the rewrite leaves valid checksums and exactly the fields it names.
TEST(BpfIcmp, RandomErrorsMatchFullRecompute) {
    std::mt19937 rng(16);
    for (int iter = 0; iter < 4000; iter++) {
        bool v6 = rng() % 2;
        TcpSpec sent;
        sent.v6 = v6;
        sent.vlan = rng() % 4 == 0;
        kvs_flow f{};
        for (int i = 0; i < (v6 ? 4 : 1); i++) {
            sent.saddr[i] = static_cast<std::uint32_t>(rng());
            sent.daddr[i] = static_cast<std::uint32_t>(rng());
            f.new_saddr[i] = static_cast<std::uint32_t>(rng());
            f.new_daddr[i] = static_cast<std::uint32_t>(rng());
        }
        sent.sport = static_cast<std::uint16_t>(rng());
        sent.dport = static_cast<std::uint16_t>(rng());
        sent.seq = static_cast<std::uint32_t>(rng());
        sent.ack = static_cast<std::uint32_t>(rng());
        sent.ip_id = static_cast<std::uint16_t>(rng());
        if (!v6 && rng() % 4 == 0) sent.ip_opt_words = static_cast<std::uint8_t>(rng() % 4);
        sent.payload.resize(rng() % 200);
        for (auto &c : sent.payload) c = static_cast<std::uint8_t>(rng());
        f.new_sport = static_cast<std::uint16_t>(rng());
        f.new_dport = static_cast<std::uint16_t>(rng());
        for (int i = 0; i < 6; i++) {
            f.new_smac[i] = static_cast<std::uint8_t>(rng());
            f.new_dmac[i] = static_cast<std::uint8_t>(rng());
        }
        std::uint32_t seq_delta = rng() % 3 ? static_cast<std::uint32_t>(rng()) : 0;

        Bytes whole = ip_packet(build_tcp(sent));
        std::size_t th = v6 ? 40 : 20 + 4u * sent.ip_opt_words;
        std::size_t n = th + 8 + rng() % (whole.size() - th - 7);
        IcmpSpec in;
        in.v6 = v6;
        in.vlan = sent.vlan;
        if (v6) {
            in.type = static_cast<std::uint8_t>(1 + rng() % 3);
            in.code = 0;
            for (int i = 0; i < 4; i++) in.saddr[i] = static_cast<std::uint32_t>(rng());
        } else {
            in.type = rng() % 2 ? KVS_ICMP_DEST_UNREACH : KVS_ICMP_TIME_EXCEEDED;
            in.code = static_cast<std::uint8_t>(rng() % 16);
            in.saddr[0] = static_cast<std::uint32_t>(rng());
        }
        std::memcpy(in.daddr, sent.saddr, 16);
        in.rest = static_cast<std::uint32_t>(rng());
        in.quote = Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(n));
        Bytes b = build_icmp(in);
        const Bytes before = b;

        Parsed r = parse(b);
        ASSERT_EQ(r.ist, KVS_ICMP_OK) << iter;
        kvs_flow_key k;
        ASSERT_EQ(kvs_icmp_flow_key(b.data() + b.size(), &r.pkt, &r.e, &k), 0);
        EXPECT_EQ(0, std::memcmp(k.saddr, sent.daddr, 16));
        EXPECT_EQ(0, std::memcmp(k.daddr, sent.saddr, 16));
        EXPECT_EQ(k.sport, htons(sent.dport));
        EXPECT_EQ(k.dport, htons(sent.sport));
        ASSERT_EQ(kvs_icmp_rewrite(b.data() + b.size(), &r.pkt, &r.e, &f, seq_delta), 0);
        ASSERT_EQ(b.size(), before.size());
        ASSERT_EQ(check_icmp_checksums(b), "") << "iter " << iter << "\n" << hex(b);

        const std::size_t l2 = sent.vlan ? 18 : 14, ic = l2 + (v6 ? 40 : 20), qo = ic + 8;
        const std::size_t alen = v6 ? 16 : 4;
        const std::size_t os = l2 + (v6 ? 8 : 12), od = os + alen;
        const std::size_t qs = qo + (v6 ? 8 : 12), qd = qs + alen, qt = qo + th;
        EXPECT_EQ(0, std::memcmp(&b[0], f.new_dmac, 6));
        EXPECT_EQ(0, std::memcmp(&b[6], f.new_smac, 6));
        EXPECT_EQ(0, std::memcmp(&b[os], f.new_saddr, alen));
        EXPECT_EQ(0, std::memcmp(&b[od], f.new_daddr, alen));
        EXPECT_EQ(0, std::memcmp(&b[qs], f.new_daddr, alen));
        EXPECT_EQ(0, std::memcmp(&b[qd], f.new_saddr, alen));
        EXPECT_EQ(0, std::memcmp(&b[qt], &f.new_dport, 2));
        EXPECT_EQ(0, std::memcmp(&b[qt + 2], &f.new_sport, 2));
        EXPECT_EQ(rd32(&b[qt + 4]), sent.seq - seq_delta);
        // Nothing else moved: every other byte is as it came, checksums aside.
        for (std::size_t i = 12; i < b.size(); i++) {
            bool named = (i >= os && i < od + alen) || (i >= qs && i < qd + alen) ||
                         (i >= qt && i < qt + 8) || i == ic + 2 || i == ic + 3 ||
                         (!v6 && (i == l2 + 10 || i == l2 + 11 || i == qo + 10 || i == qo + 11));
            if (!named) {
                ASSERT_EQ(b[i], before[i]) << "iter " << iter << " byte " << i;
            }
        }
    }
}

}  // namespace
