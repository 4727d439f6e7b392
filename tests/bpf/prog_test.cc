// XDP program fixtures through BPF_PROG_TEST_RUN: input frame -> expected verdict, expected
// output bytes (from the same C headers run in userspace) and counters.
#include <arpa/inet.h>

#include <cstring>
#include <ctime>
#include <string>

#include "kvsteer/cookie.h"
#include "kvsteer/flowpair.h"
#include "kvsteer/icmp.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synack.h"
#include "prog_fixture.h"
#include "test_pairs.h"

using namespace kvstest;

namespace {

constexpr std::uint32_t XDP_ABORTED_ = 0, XDP_DROP_ = 1, XDP_PASS_ = 2, XDP_TX_ = 3,
                        XDP_REDIRECT_ = 4;

class BpfProg : public ProgSuite {
   protected:
    void SetUp() override {
        ProgSuite::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        cfg_ = prog_config();
        h_->set_config(cfg_);
        h_->clear_flows();
        h_->clear_load();
    }

    // The client's segment to the VIP: 10.1.0.2:40001 -> 10.9.0.1:80, or with v6_
    // [fd00::2]:40001 -> [fd00::9]:80.
    TcpSpec client_spec() const { return client_segment(v6_); }

    // Where the TCP header of a frame of ours starts (no VLAN, no IPv4 options).
    std::size_t tcp_off() const { return 14 + (v6_ ? 40 : 20); }

    std::uint32_t cookie_for(const TcpSpec &s, std::uint8_t data) {
        kvs_cookie_tuple t{};
        std::memcpy(t.saddr, s.saddr, 16);
        std::memcpy(t.daddr, s.daddr, 16);
        t.sport = htons(s.sport);
        t.dport = htons(s.dport);
        return kvs_cookie_make(cfg_.cookie_key[0], &t,
                               kvs_cookie_slot(kvs_cookie_now_tai_ns(), cfg_.cookie_period_s),
                               data);
    }

    // Runs a SYN and checks the SYN-ACK against the userspace builder byte for byte.
    Bytes expect_synack(const Bytes &syn) {
        for (int attempt = 0; attempt < 3; attempt++) {
            std::uint64_t slot0 = kvs_cookie_slot(kvs_cookie_now_tai_ns(), cfg_.cookie_period_s);
            auto before = h_->stats();
            RunResult r = h_->run(syn);
            auto after = h_->stats();
            std::uint64_t slot1 = kvs_cookie_slot(kvs_cookie_now_tai_ns(), cfg_.cookie_period_s);
            if (slot0 != slot1) continue;  // crossed a slot boundary: the cookie is ambiguous
            EXPECT_EQ(r.verdict, XDP_TX_);
            EXPECT_EQ(after[KVS_R_TX_SYNACK] - before[KVS_R_TX_SYNACK], 1u)
                << stat_delta(before, after);
            EXPECT_EQ(check_checksums(r.out), "") << hex(r.out);

            // Same SYN-ACK from the userspace build of the same headers.
            Bytes in = syn;
            kvs_pkt p;
            EXPECT_EQ(kvs_parse(in.data(), in.data() + in.size(), &p), KVS_PARSE_OK);
            kvs_synack sa;
            kvs_synack_plan(&p, &cfg_, &sa);
            kvs_cookie_tuple t;
            kvs_cookie_tuple_of(&p, &t);
            // Cookie and TSval (the client's ISN under the cookie's hash) from the shared codec.
            kvs_cookie_sign(cfg_.cookie_key[0], &t, slot0, sa.cookie_data, sa.client_isn,
                            &sa.cookie, &sa.tsval);
            Bytes want(sa.frame_len, 0xA5);
            std::memcpy(want.data(), syn.data(), sa.l3_off);
            EXPECT_EQ(kvs_synack_write(want.data(), want.data() + want.size(), &sa), 0);
            EXPECT_EQ(r.out, want) << "got:\n" << hex(r.out) << "\nwant:\n" << hex(want);

            // The cookie validates and carries the SYN's options.
            Bytes o = r.out;
            kvs_pkt op;
            EXPECT_EQ(kvs_parse(o.data(), o.data() + o.size(), &op), KVS_PARSE_OK);
            kvs_cookie_opts co{};
            EXPECT_TRUE(
                kvs_cookie_check(&cfg_.cookie_key[0][0], &t, kvs_ntohl(op.tcp->seq), slot0, &co));
            kvs_cookie_opts expect = kvs_cookie_unpack_opts(sa.cookie_data);
            EXPECT_EQ(co.mss, expect.mss);
            EXPECT_EQ(co.wscale, expect.wscale);
            EXPECT_EQ(co.sack_perm, expect.sack_perm);
            if (sa.ts) {
                // Any first-flight segment's TSecr (our TSval) gives back the client's ISN.
                std::uint32_t isn = 0;
                EXPECT_TRUE(kvs_cookie_client_isn(&co, op.opts.tsval, sa.client_isn + 1 + 5000,
                                                  65535, &isn));
                EXPECT_EQ(isn, sa.client_isn);
            }
            return r.out;
        }
        ADD_FAILURE() << "crossed cookie slot boundaries three times";
        return {};
    }

    // Runs `in`, expects `verdict` and exactly one count of `reason`.
    RunResult expect_verdict(const Bytes &in, std::uint32_t verdict, unsigned reason) {
        return kvstest::expect_verdict(*h_, in, verdict, reason);
    }

    // A bound connection: client 10.1.0.2:40001 -> VIP 10.9.0.1:80, SNAT 10.2.0.1:20001 ->
    // backend 10.2.0.7:8000; with v6_ fd00::2 -> fd00::9, SNAT fd02::1 (snat2_addr) -> fd02::7.
    // The test family's connection: pair4_params(), in IPv6 the same connection (ISNs, backend
    // 3) between pair6_params()'s addresses.
    kvs_flowpair_params family_params(std::uint8_t backend_ws = 10) const {
        kvs_flowpair_params p = pair4_params(backend_ws);
        if (v6_) {
            const kvs_flowpair_params a6 = pair6_params();
            p.family = KVS_AF_INET6;
            std::memcpy(p.client_addr, a6.client_addr, 16);
            std::memcpy(p.vip_addr, a6.vip_addr, 16);
            std::memcpy(p.snat_addr, a6.snat_addr, 16);
            std::memcpy(p.backend_addr, a6.backend_addr, 16);
        }
        return p;
    }

    void install_pair(kvs_flow_key *kc, kvs_flow *fc, kvs_flow_key *ks, kvs_flow *fs,
                      std::uint8_t backend_ws = 10) {
        kvs_flowpair_params p = family_params(backend_ws);
        kvs_flowpair_build(&p, kc, fc, ks, fs);
        // The client's next byte, and where its (delimited) request ended, as the dataplane sets
        // them after the build.
        fc->next_seq = fc->resp_end = 9000;
        fc->resp = KVS_RESP_END;
        // Each side acknowledged all the other sent (the worker sets them at the bind to the
        // values then: the client's to our SYN-ACK, the backend's to the start of the request).
        fc->last_ack = fs->next_seq + fs->seq_delta;
        fs->last_ack = fc->next_seq + fc->seq_delta;
        h_->put_flow(*kc, *fc);
        h_->put_flow(*ks, *fs);
    }

    // The IPv6 connection of pair6_params(), installed; returns its parameters.
    kvs_flowpair_params install_pair6(kvs_flow_key *kc, kvs_flow *fc, kvs_flow_key *ks,
                                      kvs_flow *fs) {
        kvs_flowpair_params p = pair6_params();
        kvs_flowpair_build(&p, kc, fc, ks, fs);
        h_->put_flow(*kc, *fc);
        h_->put_flow(*ks, *fs);
        return p;
    }

    // The client's pure ACK on the installed pair (seq 5000, acking the SYN-ACK).
    TcpSpec client_ack_spec() const {
        TcpSpec s = client_spec();
        s.flags = KVS_TCP_ACK;
        s.seq = 5000;
        s.ack = 0x80001235;
        return s;
    }

    // The backend's segment to the SNAT address: 10.2.0.7:8000 -> 10.2.0.1:20001, or with v6_
    // [fd02::7]:8000 -> [fd02::1]:20001 (snat2_addr).
    TcpSpec backend_spec() const {
        TcpSpec s;
        std::memcpy(s.smac, kBackendMac, 6);
        std::memcpy(s.dmac, kApplMac, 6);
        s.v6 = v6_;
        if (v6_) {
            ip6("fd02::7", s.saddr);
            ip6("fd02::1", s.daddr);
        } else {
            s.saddr[0] = ip4("10.2.0.7");
            s.daddr[0] = ip4("10.2.0.1");
        }
        s.sport = 8000;
        s.dport = 20001;
        return s;
    }

    // Userspace rewrite of the same frame with the same entry.
    static Bytes cxx_rewrite(const Bytes &in, const kvs_flow &f) {
        Bytes b = in;
        kvs_pkt p;
        EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
        EXPECT_EQ(kvs_flow_rewrite(b.data() + b.size(), &p, &f), 0);
        return b;
    }

    kvs_config cfg_{};
    bool v6_ = false;  // client_spec, backend_spec and install_pair in IPv6
};

// The tests that run once per family: the same packets and expectations in IPv4 and IPv6.
class BpfProgFamily : public BpfProg, public ::testing::WithParamInterface<bool> {
   protected:
    void SetUp() override {
        v6_ = GetParam();
        BpfProg::SetUp();
    }
};

std::string family_name(const ::testing::TestParamInfo<bool> &i) {
    return i.param ? "ipv6" : "ipv4";
}

INSTANTIATE_TEST_SUITE_P(Family, BpfProgFamily, ::testing::Bool(), family_name);

std::uint32_t rd32(const std::uint8_t *p) {
    return (std::uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

TEST_F(BpfProg, SynAllOptions) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.seq = 0x12345678;
    s.opts = cat({opt_mss(1460), opt_sack_perm(), opt_ts(4242, 0), opt_nop(), opt_ws(7)});
    Bytes out = expect_synack(build_tcp(s));
    ASSERT_EQ(out.size(), 14u + 20 + 20 + 20);
    EXPECT_EQ(rd32(&out[34 + 8]), 0x12345679u);  // ack = client ISN + 1
}

TEST_F(BpfProg, SynNoOptionsPaddedFrame) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.pad_to = 60;  // 6 bytes of 0xA5 Ethernet padding: the frame shrinks/grows to 58
    Bytes out = expect_synack(build_tcp(s));
    EXPECT_EQ(out.size(), 14u + 20 + 20 + 4);
}

TEST_F(BpfProg, SynAnswerOverwritesEveryByte) {
    // Garbage wherever the SYN-ACK must write something itself: IP TOS/ID/TTL, TCP URG pointer,
    // reserved bits, and 0xA5 padding past the IP length where the options will go.
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.opts = cat({opt_mss(1460), opt_nop(2), opt_sack_perm()});
    s.pad_to = 150;
    Bytes syn = build_tcp(s);
    syn[15] = 0xA5;                      // TOS
    syn[18] = 0xA5;                      // IP ID
    syn[22] = 3;                         // TTL
    syn[34 + 12] |= 0x0f;                // reserved bits next to doff
    syn[34 + 18] = syn[34 + 19] = 0xA5;  // URG pointer
    Bytes out = expect_synack(syn);
    ASSERT_EQ(out.size(), 14u + 20 + 20 + 8);  // MSS, NOP NOP SACK-perm (no WS offered)
}

TEST_F(BpfProg, SynTimestampsOffInConfig) {
    cfg_.flags = 0;
    h_->set_config(cfg_);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.opts = cat({opt_mss(1460), opt_nop(2), opt_ts(1, 0), opt_nop(), opt_ws(2)});
    Bytes out = expect_synack(build_tcp(s));
    EXPECT_EQ(out.size(), 14u + 20 + 20 + 8);  // MSS + NOP WS
}

TEST_F(BpfProg, SynVlanAndIpv6) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.vlan = true;
    s.opts = cat({opt_mss(1460), opt_nop(2), opt_sack_perm()});
    expect_synack(build_tcp(s));
    TcpSpec s6 = client_spec();
    s6.v6 = true;
    ip6("fd00::2", s6.saddr);
    ip6("fd00::9", s6.daddr);
    s6.flags = KVS_TCP_SYN;
    s6.opts = cat({opt_mss(1440), opt_sack_perm(), opt_ts(9, 0), opt_nop(), opt_ws(9)});
    Bytes out = expect_synack(build_tcp(s6));
    EXPECT_EQ(out.size(), 14u + 40 + 20 + 20);
}

TEST_F(BpfProg, SynWithFinOrRstIsDroppedUnanswered) {
    // No connection starts so (RFC 9293; Linux drops them): no SYN-ACK, a counted drop.
    for (std::uint8_t extra : {KVS_TCP_FIN, KVS_TCP_RST}) {
        TcpSpec s = client_spec();
        s.flags = static_cast<std::uint8_t>(KVS_TCP_SYN | extra);
        s.opts = cat({opt_mss(1460), opt_nop(2), opt_sack_perm()});
        expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_MALFORMED);
    }
}

TEST_F(BpfProg, SynToAGroupAddressIsDroppedUnanswered) {
    // Broadcast or multicast destination MAC: the answer would leave from it, and every
    // appliance on the segment would send one.
    for (std::uint8_t first : {std::uint8_t{0xff}, std::uint8_t{0x01}}) {
        TcpSpec s = client_spec();
        s.flags = KVS_TCP_SYN;
        s.dmac[0] = first;
        expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_SYN_NOT_UNICAST);
    }
    // From a group address, or from no host: the SYN-ACK would answer no client (it was sent).
    for (const char *src : {"224.0.0.1", "255.255.255.255", "0.0.0.0", "127.0.0.1", "240.0.0.9"}) {
        TcpSpec s = client_spec();
        s.flags = KVS_TCP_SYN;
        s.saddr[0] = ip4(src);
        SCOPED_TRACE(src);
        expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_SYN_NOT_UNICAST);
    }
    for (const char *src : {"ff02::1", "::", "::1"}) {
        TcpSpec s = client_segment(true);
        s.flags = KVS_TCP_SYN;
        ip6(src, s.saddr);
        SCOPED_TRACE(src);
        expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_SYN_NOT_UNICAST);
    }
    // Unicast ones near the edges are answered.
    for (const char *src : {"1.0.0.1", "223.255.255.254", "126.255.255.255"}) {
        TcpSpec s = client_spec();
        s.flags = KVS_TCP_SYN;
        s.saddr[0] = ip4(src);
        SCOPED_TRACE(src);
        expect_verdict(build_tcp(s), XDP_TX_, KVS_R_TX_SYNACK);
    }
    TcpSpec s = client_segment(true);
    s.flags = KVS_TCP_SYN;
    ip6("::2", s.saddr);
    expect_verdict(build_tcp(s), XDP_TX_, KVS_R_TX_SYNACK);
}

TEST_F(BpfProg, SynWithoutConfiguredKeyDropped) {
    cfg_.cookie_key[0][0] = cfg_.cookie_key[0][1] = 0;
    h_->set_config(cfg_);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_NO_CONFIG);
}

TEST_F(BpfProg, SynToOtherAddressPassed) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.dport = 81;  // VIP address, other port
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_NOT_OURS);
    EXPECT_EQ(r.out, in);
}

TEST_P(BpfProgFamily, AckWithBadCookieDropped) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK;
    s.seq = 1001;
    s.ack = 0x31337 + 1;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_BAD_COOKIE);
    // A cookie made for another client port is bad for this one.
    TcpSpec other = s;
    other.sport = 40002;
    s.ack = cookie_for(other, kvs_cookie_pack_opts(1460, 7, 1)) + 1;
    s.payload = Bytes(10, 'x');
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_BAD_COOKIE);
}

TEST_P(BpfProgFamily, PureAckWithGoodCookieDropped) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK;
    s.seq = 1001;
    s.ack = cookie_for(s, kvs_cookie_pack_opts(1460, 7, 1)) + 1;
    s.pad_to = 60;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_PURE_ACK);
}

TEST_P(BpfProgFamily, FirstFlightPuntedToXsk) {
    // No AF_XDP socket is bound in test-run: the redirect to xsks_map fails over to XDP_DROP
    // and is counted as PUNT_NO_XSK (with a socket it is XDP_REDIRECT + PUNT_FIRST_FLIGHT).
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 1001;
    s.ack = cookie_for(s, kvs_cookie_pack_opts(1460, 7, 1)) + 1;
    s.payload = Bytes(300, 'p');
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(r.out, in);  // nothing rewritten before the punt
    // A later segment of the same first flight (seq further on) carries the same ACK: valid too.
    s.seq = 1001 + 1400;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    // FIN without data, valid cookie: punted as well.
    s.payload.clear();
    s.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_PUNT_NO_XSK);
}

TEST_P(BpfProgFamily, RstWithoutFlowDropped) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_RST;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_RST_NO_FLOW);
    // RST|ACK acknowledging no cookie of ours: dropped the same.
    s.flags = KVS_TCP_RST | KVS_TCP_ACK;
    s.seq = 1001;
    s.ack = 0x12345678;
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_RST_NO_FLOW);
}

// A client's RST|ACK with a valid cookie (Linux aborting a connection whose flight the dataplane
// holds, no flow entry yet) goes to the dataplane, which ends the binding (in test-run no AF_XDP
// socket: PUNT_NO_XSK; with one, XDP_REDIRECT + punt_client_rst). Before, it was dropped.
TEST_P(BpfProgFamily, RstOfAConnectionBeingBoundIsPunted) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_RST | KVS_TCP_ACK;
    s.seq = 1001 + 300;
    s.ack = cookie_for(s, kvs_cookie_pack_opts(1460, 7, 1)) + 1;
    const Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(r.out, in);
}

TEST_F(BpfProg, EstablishedClientToBackend) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 5000;
    s.ack = 0x80001234 + 1 + 777;  // client acks 777 bytes of the (translated) response
    s.win = 1000;
    s.opts = cat({opt_nop(2), opt_ts(123456, 100000 + 40), opt_nop(2),
                  opt_sack({{0x80001234 + 2000, 0x80001234 + 3000},
                            {0x80001234 + 4000, 0x80001234 + 4500}})});
    s.payload = Bytes(200, 'q');
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(r.out, cxx_rewrite(in, fc)) << hex(r.out);
    EXPECT_EQ(check_checksums(r.out), "");
    // Independent expectations: addresses, ports, backend sequence space.
    EXPECT_EQ(0, std::memcmp(&r.out[0], kBackendMac, 6));
    EXPECT_EQ(0, std::memcmp(&r.out[6], kApplMac, 6));
    std::uint32_t a = ip4("10.2.0.1"), b = ip4("10.2.0.7");
    EXPECT_EQ(0, std::memcmp(&r.out[26], &a, 4));
    EXPECT_EQ(0, std::memcmp(&r.out[30], &b, 4));
    EXPECT_EQ((r.out[34] << 8) | r.out[35], 20001);
    EXPECT_EQ((r.out[36] << 8) | r.out[37], 8000);
    EXPECT_EQ(rd32(&r.out[38]), 5000u);                    // client seq space kept
    EXPECT_EQ(rd32(&r.out[42]), 0x7000aaaau + 1 + 777);    // ack in backend space
    EXPECT_EQ(rd32(&r.out[54 + 4]), 123456u);              // TSval kept
    EXPECT_EQ(rd32(&r.out[54 + 8]), 5u + 40);              // TSecr in the backend's clock
    EXPECT_EQ(rd32(&r.out[54 + 16]), 0x7000aaaau + 2000);  // SACK edges in backend space
    EXPECT_EQ(rd32(&r.out[54 + 20]), 0x7000aaaau + 3000);
    EXPECT_EQ(rd32(&r.out[54 + 24]), 0x7000aaaau + 4000);
    EXPECT_EQ(rd32(&r.out[54 + 28]), 0x7000aaaau + 4500);
    EXPECT_EQ((r.out[48] << 8) | r.out[49], 1000);  // client window untouched
    kvs_flow after{};
    ASSERT_TRUE(h_->get_flow(kc, &after));
    EXPECT_EQ(after.packets, 1u);
    EXPECT_EQ(after.bytes, in.size());
    EXPECT_GT(after.last_seen_ns, 0u);
    EXPECT_EQ(after.state, 0);
}

TEST_F(BpfProg, EstablishedBackendToClient) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs, 10);  // backend shift 10, ours 8: window << 2
    TcpSpec s = backend_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 0x7000aaaa + 1 + 100;
    s.ack = 5200;
    s.win = 3000;
    s.opts = cat({opt_nop(2), opt_ts(77, 123456)});
    s.payload = Bytes(500, 'r');
    s.vlan = true;
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(r.out, cxx_rewrite(in, fs)) << hex(r.out);
    EXPECT_EQ(check_checksums(r.out), "");
    const std::size_t th = 18 + 20;
    EXPECT_EQ(0, std::memcmp(&r.out[0], kClientMac, 6));
    EXPECT_EQ(rd32(&r.out[th + 4]), 0x80001234u + 1 + 100);  // seq in our cookie space
    EXPECT_EQ(rd32(&r.out[th + 8]), 5200u);
    EXPECT_EQ((r.out[th + 14] << 8) | r.out[th + 15], 12000);  // 3000 << 10 >> 8
    EXPECT_EQ(rd32(&r.out[th + 24]), 77u + 100000 - 5);        // TSval in our SYN-ACK clock
    EXPECT_EQ(rd32(&r.out[th + 28]), 123456u);
    std::uint32_t vip = ip4("10.9.0.1"), cli = ip4("10.1.0.2");
    EXPECT_EQ(0, std::memcmp(&r.out[18 + 12], &vip, 4));
    EXPECT_EQ(0, std::memcmp(&r.out[18 + 16], &cli, 4));
}

TEST_F(BpfProg, EstablishedIpv6BothWays) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    kvs_flowpair_params p = install_pair6(&kc, &fc, &ks, &fs);

    TcpSpec c = client_spec();
    c.v6 = true;
    std::memcpy(c.saddr, p.client_addr, 16);
    std::memcpy(c.daddr, p.vip_addr, 16);
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = 77;
    c.ack = p.cookie + 1;
    c.opts =
        cat({opt_nop(2), opt_ts(5, 70), opt_nop(2), opt_sack({{p.cookie + 100, p.cookie + 200}})});
    c.payload = Bytes(64, 'v');
    Bytes in = build_tcp(c);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(r.out, cxx_rewrite(in, fc));
    EXPECT_EQ(check_checksums(r.out), "");
    EXPECT_EQ(0, std::memcmp(&r.out[14 + 8], p.snat_addr, 16));
    EXPECT_EQ(0, std::memcmp(&r.out[14 + 24], p.backend_addr, 16));
    EXPECT_EQ(rd32(&r.out[54 + 8]), p.backend_isn + 1);

    TcpSpec b = backend_spec();
    b.v6 = true;
    std::memcpy(b.saddr, p.backend_addr, 16);
    std::memcpy(b.daddr, p.snat_addr, 16);
    b.flags = KVS_TCP_ACK;
    b.seq = p.backend_isn + 1;
    b.ack = 78;
    b.win = 4000;
    b.opts = cat({opt_nop(2), opt_ts(1234600, 5)});
    in = build_tcp(b);
    r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(r.out, cxx_rewrite(in, fs));
    EXPECT_EQ(check_checksums(r.out), "");
    EXPECT_EQ(rd32(&r.out[54 + 4]), p.cookie + 1);
    EXPECT_EQ((r.out[54 + 14] << 8) | r.out[54 + 15], 2000);  // backend shift 7, ours 8
}

// Options Linux reads past or stops at (tcp_parse_options) are no reason to drop a segment: a
// bound flow's segment whose TS is followed by a length-1 option, or whose SACK has the wrong
// length, goes on rewritten as far as Linux reads it (before: dropped as malformed).
TEST_P(BpfProgFamily, OptionsLinuxToleratesAreForwarded) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec s = client_ack_spec();
    for (const Bytes &odd : {Bytes{2, 1, 0, 0}, Bytes{30, 200, 0, 0}, Bytes{1, 1, 1, 99},
                             Bytes{5, 6, 0, 0, 0, 0, 1, 1}}) {
        s.opts = cat({opt_nop(2), opt_ts(777, 0x1234), odd});
        const Bytes in = build_tcp(s);
        const auto before = h_->stats();
        RunResult r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_C2S);
        EXPECT_EQ(h_->stats()[KVS_R_TCP_OPTS_IGNORED] - before[KVS_R_TCP_OPTS_IGNORED], 1u)
            << hex(odd);
        EXPECT_EQ(r.out, cxx_rewrite(in, fc)) << hex(odd);
        EXPECT_EQ(check_checksums(r.out), "");
        const std::size_t ts = tcp_off() + 20 + 2 + 2;
        EXPECT_EQ(rd32(&r.out[ts + 4]), 0x1234 + fc.tsecr_delta) << "TSecr read and rewritten";
        const auto at = r.out.begin() + static_cast<long>(tcp_off() + 20 + 12);
        EXPECT_EQ(Bytes(at, at + static_cast<long>(odd.size())), odd) << "the odd option as it was";
    }
}

TEST_P(BpfProgFamily, SackBlocksAllShifted) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec s = client_ack_spec();
    // Four blocks (no TS), wrapping around 2^32 on the way.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> bl = {{0x80001234 + 10, 0x80001234 + 20},
                                                               {0xffffff00, 0xfffffff0},
                                                               {0, 16},
                                                               {0x7fffffff, 0x80000000}};
    s.opts = cat({opt_nop(2), opt_sack(bl)});
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(check_checksums(r.out), "");
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(rd32(&r.out[tcp_off() + 20 + 4 + 8 * i]), bl[i].first + fc.ack_delta) << i;
        EXPECT_EQ(rd32(&r.out[tcp_off() + 20 + 8 + 8 * i]), bl[i].second + fc.ack_delta) << i;
    }
    EXPECT_EQ(r.out, cxx_rewrite(in, fc));
}

TEST_P(BpfProgFamily, FinClosesBothEntriesOnce) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    // The request was answered in full: the client's FIN closes the flow at once.
    fs.resp = KVS_RESP_END;
    fs.resp_end = fs.next_seq;
    h_->put_flow(ks, fs);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    s.seq = 9000;
    s.ack = 0x80001235;
    Bytes in = build_tcp(s);
    auto before = h_->stats();
    RunResult r = h_->run(in);
    auto after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(r.out, cxx_rewrite(in, fc)) << hex(r.out);
    EXPECT_EQ(check_checksums(r.out), "");
    EXPECT_EQ(after[KVS_R_FLOW_FIN] - before[KVS_R_FLOW_FIN], 1u);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 1u);
    EXPECT_EQ(after[KVS_R_TX_FWD_C2S] - before[KVS_R_TX_FWD_C2S], 1u);
    EXPECT_EQ(h_->load(3).closes, 1u);
    kvs_flow c{}, b{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(c.state, KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    EXPECT_EQ(b.state, KVS_FLOW_CLOSED);
    EXPECT_EQ(c.win_shl, fc.win_shl);  // the atomic or left the neighbouring bytes alone
    EXPECT_EQ(c.dir, KVS_DIR_C2S);
    // The backend's FIN: forwarded, its own FIN bit, no second close.
    TcpSpec bs = backend_spec();
    bs.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    bs.seq = 0x7000aaab;
    bs.ack = 9001;
    in = build_tcp(bs);
    before = h_->stats();
    r = h_->run(in);
    after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(r.out, cxx_rewrite(in, fs)) << hex(r.out);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 0u);
    EXPECT_EQ(h_->load(3).closes, 1u);
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.state, KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    EXPECT_EQ(b.dir, KVS_DIR_S2C);
    EXPECT_EQ(b.win_shl, fs.win_shl);
}

// A client that half-closes while its response is still owed (the backend is still working on
// the request): its FIN does not end the request in flight; the backend's FIN does.
TEST_P(BpfProgFamily, ClientFinWhileTheResponseIsOwedWaitsForTheBackend) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    fc.msgs = 1;  // as the dataplane installs it: one request, no response started yet
    h_->put_flow(kc, fc);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    s.seq = 9000;
    s.ack = 0x80001235;
    auto before = h_->stats();
    RunResult r = h_->run(build_tcp(s));
    auto after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(after[KVS_R_FLOW_FIN] - before[KVS_R_FLOW_FIN], 1u);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 0u);
    EXPECT_EQ(h_->load(3).closes, 0u) << "the backend is still answering";
    kvs_flow c{}, b{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(c.state, KVS_FLOW_FIN_IN);
    EXPECT_EQ(b.state, 0);
    h_->run(build_tcp(s));  // retransmitted: still nothing
    EXPECT_EQ(h_->load(3).closes, 0u);
    // The backend answers and closes: now the flow is closed, once.
    TcpSpec bs = backend_spec();
    bs.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    bs.seq = 0x7000aaab;
    bs.ack = 9001;
    h_->run(build_tcp(bs));
    EXPECT_EQ(h_->load(3).closes, 1u);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(c.state, KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    EXPECT_EQ(b.state, KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    h_->run(build_tcp(s));
    h_->run(build_tcp(bs));
    EXPECT_EQ(h_->load(3).closes, 1u);
}

TEST_P(BpfProgFamily, RstFromBackendClosesOnce) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec bs = backend_spec();
    bs.flags = KVS_TCP_RST | KVS_TCP_ACK;
    bs.seq = 0x7000aaab;
    bs.ack = 9001;
    Bytes in = build_tcp(bs);
    RunResult r = h_->run(in);
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(r.out, cxx_rewrite(in, fs)) << hex(r.out);
    EXPECT_EQ(check_checksums(r.out), "");
    EXPECT_EQ(h_->load(3).closes, 1u);
    kvs_flow c{}, b{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.state, KVS_FLOW_RST | KVS_FLOW_CLOSED);
    EXPECT_EQ(c.state, KVS_FLOW_CLOSED);
    // Client's RST afterwards: no second count.
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_RST;
    s.seq = 9001;
    h_->run(build_tcp(s));
    EXPECT_EQ(h_->load(3).closes, 1u);
}

// A RST or FIN whose sequence number lies far from the bytes its sender was seen to send (a
// forged one: only the client's address and port guessed) is sent on, for the endpoint to judge,
// but closes nothing here; a SYN on the tuple then finds the flow live. Before, it closed the
// flow's accounting and the next SYN deleted both entries (the connection hung). A segment that
// far ahead does not move the bytes seen either (it stopped the connection's boundaries).
TEST_P(BpfProgFamily, CloseOutOfWindowClosesNothing) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    fc.next_seq = 9001;
    h_->put_flow(kc, fc);
    const auto run_one = [&](const TcpSpec &spec) {
        Bytes in = build_tcp(spec);
        auto before = h_->stats();
        RunResult r = h_->run(in);
        auto after = h_->stats();
        EXPECT_EQ(r.verdict, XDP_TX_) << "sent on all the same";
        EXPECT_EQ(after[KVS_R_CLOSE_OUT_OF_WINDOW] - before[KVS_R_CLOSE_OUT_OF_WINDOW], 1u)
            << stat_delta(before, after);
        EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 0u);
    };
    TcpSpec rst = client_spec();
    rst.flags = KVS_TCP_RST;
    rst.seq = 9001 + 0x40000000u;
    run_one(rst);
    TcpSpec fin = client_spec();
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    fin.seq = 9001 - 0x10000000u;
    fin.ack = 0x80001235;
    run_one(fin);
    TcpSpec brst = backend_spec();
    brst.flags = KVS_TCP_RST | KVS_TCP_ACK;
    brst.seq = 0x7000aaab + 0x20000000u;
    brst.ack = 9001;
    run_one(brst);
    // Near misses (within the 4 MiB every one of these closed the flow with until 2026-12-07,
    // which ~500 blind RSTs swept): a RST one window off the client's next byte, a FIN after a
    // hole (or a forged one a few bytes on), the backend's RST just past its own next byte.
    rst.seq = 9001 + 65535;
    run_one(rst);
    rst.seq = 9001 - 1;
    run_one(rst);
    fin.seq = 9001 + 100;
    run_one(fin);
    brst.seq = 0x7000aaab + 1;
    run_one(brst);
    EXPECT_EQ(h_->load(3).closes, 0u);
    kvs_flow c{}, b{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(c.state, 0);
    EXPECT_EQ(b.state, 0);
    // Bytes far ahead: sent on, the bytes seen unmoved.
    TcpSpec far = client_spec();
    far.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    far.seq = 9001 + 0x30000000u;
    far.ack = 0x80001235;
    far.payload = Bytes(10, 'x');
    EXPECT_EQ(h_->run(build_tcp(far)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9001u);
    // A SYN on the tuple: the flow is live (its backend's challenge ACK answers).
    TcpSpec syn = client_spec();
    syn.flags = KVS_TCP_SYN;
    syn.seq = 0x2468ace0;
    auto before = h_->stats();
    EXPECT_EQ(h_->run(build_tcp(syn)).verdict, XDP_TX_);
    auto after = h_->stats();
    EXPECT_EQ(after[KVS_R_SYN_ON_LIVE_FLOW] - before[KVS_R_SYN_ON_LIVE_FLOW], 1u);
    ASSERT_TRUE(h_->get_flow(kc, &c)) << "the SYN did not delete the live flow";
    // The client's real RST (at its next byte) closes it, once.
    rst.seq = 9001;
    before = h_->stats();
    EXPECT_EQ(h_->run(build_tcp(rst)).verdict, XDP_TX_);
    after = h_->stats();
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 1u);
    EXPECT_EQ(h_->load(3).closes, 1u);
}

// Bytes past a hole in those seen (lost before the appliance, or forged) move the bytes seen only
// when their ACK is near what the other side sent (a blind attacker does not know it): a forged
// segment ahead moved them to where its next forged RST was exact.
TEST_P(BpfProgFamily, BytesPastAHoleNeedAPlausibleAck) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec ahead = client_spec();
    ahead.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    ahead.seq = 9000 + 1000;
    ahead.ack = 0x80001235 + 0x01000000u;  // 16 MiB off what the backend sent
    ahead.payload = Bytes(10, 'x');
    EXPECT_EQ(h_->run(build_tcp(ahead)).verdict, XDP_TX_) << "sent on all the same";
    kvs_flow c{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u);
    ahead.ack = 0x80001235;  // the backend's next byte, in the client's space
    EXPECT_EQ(h_->run(build_tcp(ahead)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u + 1000 + 10);
    // In order, the ACK is not looked at (no reverse lookup on the fast path).
    TcpSpec next = ahead;
    next.seq = 9000 + 1010;
    next.ack = 0x12345678;
    EXPECT_EQ(h_->run(build_tcp(next)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u + 1020);
}

// A segment overlapping the bytes seen (starting before next_seq, ending after it) moves them
// only with a plausible ACK, as one past a hole: a blind attacker sweeping 1,448-byte segments
// across the sequence space moved next_seq to an end of its choosing, where its next RST was
// exact (the flow's close counted, a spoofed SYN then deleted the live connection).
TEST_P(BpfProgFamily, BytesOverlappingTheStreamNeedAPlausibleAck) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec over = client_spec();
    over.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    over.seq = 9000 - 100;
    over.ack = 0x12345678;  // not what the backend sent
    over.payload = Bytes(200, 'x');
    EXPECT_EQ(h_->run(build_tcp(over)).verdict, XDP_TX_) << "sent on all the same";
    kvs_flow c{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u);
    TcpSpec rst = client_spec();
    rst.flags = KVS_TCP_RST;
    rst.seq = 9000 + 100;
    EXPECT_EQ(h_->run(build_tcp(rst)).verdict, XDP_TX_);
    EXPECT_EQ(h_->load(3).closes, 0u) << "the RST at the forged end closed the flow";
    // A retransmission overlapping the stream with a real ACK moves it.
    over.ack = 0x80001235;
    EXPECT_EQ(h_->run(build_tcp(over)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u + 100);
}

// An acknowledgment more than 4 MiB past the last one moves it only when it acknowledges what
// the other side sent (a reverse lookup, that rare path only): a forged ACK far ahead (the SNAT
// port guessed) stopped the connection's request boundaries, which compare it with the other
// side's next byte, until real ACKs caught up with it.
TEST_P(BpfProgFamily, AnAckFarAheadMovesTheLastAckOnlyWhenPlausible) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    const std::uint32_t sent = 0x80001235;  // the backend's next byte, in the client's space
    fc.last_ack = sent - 0x02000000u;       // 32 MiB of it not acknowledged yet
    h_->put_flow(kc, fc);
    TcpSpec a = client_ack_spec();
    a.seq = 9000;
    a.ack = sent + 0x01000000u;  // 16 MiB past what the backend sent: forged
    EXPECT_EQ(h_->run(build_tcp(a)).verdict, XDP_TX_) << "sent on all the same";
    kvs_flow c{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.last_ack, fc.last_ack);
    a.ack = sent;  // the backend's next byte: 32 MiB on, and plausible
    EXPECT_EQ(h_->run(build_tcp(a)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.last_ack, sent);
    // Within 4 MiB it is not looked at (no reverse lookup on the fast path).
    a.ack = sent + 1000;
    EXPECT_EQ(h_->run(build_tcp(a)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.last_ack, sent + 1000);
}

// A blind attacker (the client's address and port guessed) cannot walk the bytes seen or the last
// acknowledgment to a value it knows: 1,024 forged one-byte segments 4 MiB apart with an ACK
// within 4 MiB of the backend's next byte (but past it) moved next_seq on from each success to
// the last one's end, where a forged RST was then exact and a spoofed SYN deleted the live flow;
// forged pure ACKs stepping 4 MiB moved last_ack anywhere unchecked. Now an acknowledgment counts
// there only between the last one and the other side's next byte.
TEST_P(BpfProgFamily, ForgedSegmentsCannotWalkTheBytesSeenOrTheLastAck) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    const std::uint32_t sent = fs.next_seq + fs.seq_delta;  // the backend's next byte, client space
    TcpSpec seg = client_spec();
    seg.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    seg.payload = Bytes(1, 'x');
    std::uint32_t last_end = 0;
    for (std::uint32_t ack : {sent + 0x300000u, sent - 0x300000u}) {  // past, and before last_ack
        seg.ack = ack;
        for (std::uint32_t i = 0; i < 1024; i++) {
            seg.seq = 0x10000000u + i * KVS_SEQ_SLACK;
            last_end = seg.seq + 1;
            ASSERT_EQ(h_->run(build_tcp(seg)).verdict, XDP_TX_);
        }
    }
    kvs_flow c{};
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u) << "walked to " << c.next_seq;
    TcpSpec a = client_ack_spec();  // pure ACKs, not at the client's next byte (a blind guess)
    for (std::uint32_t i = 0; i < 1024; i++) {
        a.ack = fc.last_ack + (i + 1) * KVS_SEQ_SLACK;
        ASSERT_EQ(h_->run(build_tcp(a)).verdict, XDP_TX_);
    }
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.last_ack, fc.last_ack) << "walked to " << c.last_ack;
    TcpSpec rst = client_spec();
    rst.flags = KVS_TCP_RST;
    rst.seq = last_end;
    EXPECT_EQ(h_->run(build_tcp(rst)).verdict, XDP_TX_);
    EXPECT_EQ(h_->load(3).closes, 0u) << "the RST at the walked end closed the flow";
    TcpSpec syn = client_spec();
    syn.flags = KVS_TCP_SYN;
    syn.seq = 777;
    syn.payload.clear();
    auto before = h_->stats();
    h_->run(build_tcp(syn));
    EXPECT_EQ(h_->stats()[KVS_R_SYN_ON_LIVE_FLOW] - before[KVS_R_SYN_ON_LIVE_FLOW], 1u);
    EXPECT_TRUE(h_->get_flow(kc, &c)) << "the live flow's entries stay";
    // Real traffic still moves both: the client's next bytes in order, and an ACK of what the
    // backend sent on a segment past a hole.
    seg.seq = 9000;
    seg.ack = sent;
    ASSERT_EQ(h_->run(build_tcp(seg)).verdict, XDP_TX_);
    seg.seq = 9000 + 100;
    ASSERT_EQ(h_->run(build_tcp(seg)).verdict, XDP_TX_);
    ASSERT_TRUE(h_->get_flow(kc, &c));
    EXPECT_EQ(c.next_seq, 9000u + 101);
}

// The other exact place a RST may lie (RFC 5961): the acknowledgment the receiver last sent (a
// reset answering a segment carries that segment's ACK as its seq); and a FIN whose segment
// overlaps bytes already seen (retransmitted with more) holds the next byte: both close.
TEST_P(BpfProgFamily, RstAtTheReceiversAckAndAnOverlappingFinClose) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    // The backend sent up to 0x80001235 (in the client's space); the client acknowledged all but
    // its last 50 bytes, and the backend's reset answers that ACK.
    fc.last_ack = 0x80001235 - 50;
    h_->put_flow(kc, fc);
    TcpSpec brst = backend_spec();
    brst.flags = KVS_TCP_RST;
    brst.seq = fc.last_ack - fs.seq_delta;  // in the backend's space
    ASSERT_NE(brst.seq, fs.next_seq) << "not the backend's next byte: the other case";
    auto before = h_->stats();
    EXPECT_EQ(h_->run(build_tcp(brst)).verdict, XDP_TX_);
    auto after = h_->stats();
    EXPECT_EQ(after[KVS_R_CLOSE_OUT_OF_WINDOW] - before[KVS_R_CLOSE_OUT_OF_WINDOW], 0u);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 1u);
    EXPECT_EQ(h_->load(3).closes, 1u);

    install_pair(&kc, &fc, &ks, &fs);  // afresh; the client FIN's segment starts 10 bytes back
    fs.resp = KVS_RESP_END;            // nothing owed
    fs.resp_end = fs.next_seq;
    h_->put_flow(ks, fs);
    TcpSpec fin = client_spec();
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    fin.seq = 9000 - 10;
    fin.ack = 0x80001235;
    fin.payload = Bytes(10, 'x');
    before = h_->stats();
    EXPECT_EQ(h_->run(build_tcp(fin)).verdict, XDP_TX_);
    after = h_->stats();
    EXPECT_EQ(after[KVS_R_CLOSE_OUT_OF_WINDOW] - before[KVS_R_CLOSE_OUT_OF_WINDOW], 0u);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 1u);
    // The same FIN retransmitted (its bytes and the FIN seen): plausible, closes nothing again,
    // and is not counted as out of window (it was, 20-35 times in 128 flows of a benchmark run).
    before = h_->stats();
    EXPECT_EQ(h_->run(build_tcp(fin)).verdict, XDP_TX_);
    after = h_->stats();
    EXPECT_EQ(after[KVS_R_CLOSE_OUT_OF_WINDOW] - before[KVS_R_CLOSE_OUT_OF_WINDOW], 0u);
    EXPECT_EQ(after[KVS_R_FLOW_CLOSED] - before[KVS_R_FLOW_CLOSED], 0u);
    // Further on (a forged FIN after a gap): out of window.
    fin.seq += 100;
    before = h_->stats();
    h_->run(build_tcp(fin));
    after = h_->stats();
    EXPECT_EQ(after[KVS_R_CLOSE_OUT_OF_WINDOW] - before[KVS_R_CLOSE_OUT_OF_WINDOW], 1u);
}

// A client reopens a connection on the 4-tuple of one that just closed, its entries still
// lingering: the old entries go and the SYN gets a cookie (before, the new connection's
// segments went to the old backend connection and stalled until the flow expired). The close is
// counted once, also when the client's FIN had closed nothing yet (its response owed: before,
// that close was lost with the entries, which the sweeper never sees, and the backend's in-flight
// count stayed one too high for good).
TEST_P(BpfProgFamily, SynReusesTupleOfClosedFlow) {
    for (int how = 0; how < 3; how++) {
        const bool backend_rst = how == 1, owed = how == 2;
        SCOPED_TRACE(backend_rst ? "closed by the backend's RST"
                     : owed      ? "the client's FIN while its response was owed, then the "
                                   "backend's RST"
                                 : "closed by the client's FIN");
        kvs_flow_key kc, ks;
        kvs_flow fc, fs;
        install_pair(&kc, &fc, &ks, &fs);
        if (owed) {
            fc.msgs = 1;  // one request, no response started yet
            h_->put_flow(kc, fc);
        }
        if (backend_rst) {
            TcpSpec bs = backend_spec();
            bs.flags = KVS_TCP_RST | KVS_TCP_ACK;
            bs.seq = 0x7000aaab;
            bs.ack = 9001;
            ASSERT_EQ(h_->run(build_tcp(bs)).verdict, XDP_TX_);
        } else {
            TcpSpec fin = client_spec();
            fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
            fin.seq = 9000;
            fin.ack = 0x80001235;
            ASSERT_EQ(h_->run(build_tcp(fin)).verdict, XDP_TX_);
        }
        EXPECT_EQ(h_->load(3).closes, owed ? 0u : 1u);
        if (owed) {  // open while the response is owed (HalfClosedFlowWithAResponseOwedIsLive)
            TcpSpec bs = backend_spec();
            bs.flags = KVS_TCP_RST | KVS_TCP_ACK;
            bs.seq = 0x7000aaab;
            bs.ack = 9001;
            ASSERT_EQ(h_->run(build_tcp(bs)).verdict, XDP_TX_);
            EXPECT_EQ(h_->load(3).closes, 1u);
        }
        TcpSpec syn = client_spec();
        syn.flags = KVS_TCP_SYN;
        syn.seq = 0x2468ace0;
        syn.opts = cat({opt_mss(1460), opt_sack_perm(), opt_ts(777, 0), opt_nop(), opt_ws(7)});
        auto before = h_->stats();
        Bytes out = expect_synack(build_tcp(syn));
        auto after = h_->stats();
        ASSERT_FALSE(out.empty());
        EXPECT_EQ(rd32(&out[tcp_off() + 8]), 0x2468ace1u);
        EXPECT_EQ(after[KVS_R_FLOW_REUSED] - before[KVS_R_FLOW_REUSED], 1u)
            << stat_delta(before, after);
        kvs_flow f{};
        EXPECT_FALSE(h_->get_flow(kc, &f)) << "client->VIP entry left behind";
        EXPECT_FALSE(h_->get_flow(ks, &f)) << "backend->SNAT entry left behind";
        EXPECT_EQ(h_->load(3).closes, 1u) << "closed once";
        h_->clear_load();
    }
}

// A client that half-closed after its request keeps its flow while the response is owed: a SYN
// on its 4-tuple (spoofed: the client's own socket still holds the port) goes to the backend as
// on any live flow, and the flow stays (it was deleted, and the response lost).
TEST_P(BpfProgFamily, HalfClosedFlowWithAResponseOwedIsLive) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    fc.msgs = 1;  // one request, no response started yet
    h_->put_flow(kc, fc);
    TcpSpec fin = client_spec();
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    fin.seq = 9000;
    fin.ack = 0x80001235;
    ASSERT_EQ(h_->run(build_tcp(fin)).verdict, XDP_TX_);
    ASSERT_EQ(h_->load(3).closes, 0u);
    TcpSpec syn = client_spec();
    syn.flags = KVS_TCP_SYN;
    syn.seq = 0x2468ace0;
    syn.opts = cat({opt_mss(1460), opt_sack_perm()});
    auto before = h_->stats();
    RunResult r = h_->run(build_tcp(syn));
    auto after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(after[KVS_R_SYN_ON_LIVE_FLOW] - before[KVS_R_SYN_ON_LIVE_FLOW], 1u)
        << stat_delta(before, after);
    EXPECT_EQ(after[KVS_R_FLOW_REUSED] - before[KVS_R_FLOW_REUSED], 0u);
    EXPECT_EQ(after[KVS_R_TX_SYNACK] - before[KVS_R_TX_SYNACK], 0u);
    kvs_flow f{};
    EXPECT_TRUE(h_->get_flow(kc, &f)) << "the half-closed flow was deleted";
    EXPECT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(h_->load(3).closes, 0u);
}

// A client's bytes past the end of its last request seen (a request XDP did not count: its head
// lost before the appliance, or after one of unknown end) are a request the backend may be
// working on: a FIN after them waits for the backend's, as with a response owed (it closed the
// flow, and a SYN on the tuple then deleted it). Also when the request's end is unknown.
TEST_P(BpfProgFamily, FinAfterBytesOfAnUncountedRequestWaits) {
    for (const bool end_unknown : {false, true}) {
        SCOPED_TRACE(end_unknown ? "end unknown" : "bytes past the end");
        kvs_flow_key kc, ks;
        kvs_flow fc, fs;
        install_pair(&kc, &fc, &ks, &fs);
        if (end_unknown) {
            fc.resp = 0;
            h_->put_flow(kc, fc);
        }
        if (!end_unknown) {
            TcpSpec c = client_spec();
            c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
            c.seq = 9000;
            c.ack = 0x80001235;
            c.payload = {'x', 'y', 'z'};  // no request head: a continuation
            expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
        }
        const std::uint32_t at = end_unknown ? 9000 : 9003;  // the FIN's sequence number
        TcpSpec fin = client_spec();
        fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
        fin.seq = at;
        fin.ack = 0x80001235;
        expect_verdict(build_tcp(fin), XDP_TX_, KVS_R_TX_FWD_C2S);
        kvs_flow f{};
        ASSERT_TRUE(h_->get_flow(kc, &f));
        EXPECT_EQ(f.state, KVS_FLOW_FIN_IN) << "not closed";
        EXPECT_EQ(h_->load(3).closes, 0u);
        TcpSpec syn = client_spec();
        syn.flags = KVS_TCP_SYN;
        syn.seq = 0x2468ace0;
        syn.opts = cat({opt_mss(1460), opt_sack_perm()});
        expect_verdict(build_tcp(syn), XDP_TX_, KVS_R_SYN_ON_LIVE_FLOW);
        EXPECT_TRUE(h_->get_flow(kc, &f)) << "the live flow was deleted";
        // The backend's FIN closes it.
        TcpSpec b = backend_spec();
        b.flags = KVS_TCP_ACK | KVS_TCP_FIN;
        b.seq = 0x7000aaab;
        b.ack = at + 1;
        expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
        EXPECT_EQ(h_->load(3).closes, 1u);
        h_->clear_load();
    }
}

// A FIN without ACK is dropped by the endpoint (an established Linux socket discards it):
// forwarded for it to judge, it closes nothing, nor does it move the bytes seen (the client's
// next request, at the same sequence number, is still a boundary). Counted closed, a client kept
// its connection open with its backend's in-flight count one lower.
TEST_P(BpfProgFamily, FinWithoutAckClosesNothing) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec fin = client_spec();
    fin.flags = KVS_TCP_FIN;
    fin.seq = 9000;
    const auto before = h_->stats();
    RunResult r = h_->run(build_tcp(fin));
    const auto after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(after[KVS_R_FIN_WITHOUT_ACK] - before[KVS_R_FIN_WITHOUT_ACK], 1u);
    EXPECT_EQ(after[KVS_R_TX_FWD_C2S] - before[KVS_R_TX_FWD_C2S], 1u);
    EXPECT_EQ(after[KVS_R_FLOW_FIN] - before[KVS_R_FLOW_FIN], 0u);
    EXPECT_EQ(h_->load(3).closes, 0u);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.state, 0);
    EXPECT_EQ(f.next_seq, 9000u);
}

// A SYN on a flow that is still open goes to its backend (whose challenge ACK makes the client
// reset the old connection), rewritten like any other segment of the flow.
TEST_P(BpfProgFamily, SynOnLiveFlowForwarded) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    TcpSpec syn = client_spec();
    syn.flags = KVS_TCP_SYN;
    syn.seq = 0x13572468;
    syn.opts = cat({opt_mss(1460), opt_nop(2), opt_sack_perm()});
    Bytes in = build_tcp(syn);
    auto before = h_->stats();
    RunResult r = h_->run(in);
    auto after = h_->stats();
    EXPECT_EQ(r.verdict, XDP_TX_);
    EXPECT_EQ(r.out, cxx_rewrite(in, fc)) << hex(r.out);
    EXPECT_EQ(after[KVS_R_SYN_ON_LIVE_FLOW] - before[KVS_R_SYN_ON_LIVE_FLOW], 1u)
        << stat_delta(before, after);
    EXPECT_EQ(after[KVS_R_TX_FWD_C2S] - before[KVS_R_TX_FWD_C2S], 1u) << stat_delta(before, after);
    EXPECT_EQ(after[KVS_R_TX_SYNACK] - before[KVS_R_TX_SYNACK], 0u);
    kvs_flow f{};
    EXPECT_TRUE(h_->get_flow(kc, &f));
    EXPECT_TRUE(h_->get_flow(ks, &f));
}

TEST_F(BpfProg, TwoArmedFlowRedirected) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    fc.tx_ifindex = 12345;  // not in kvs_tx_ports: bpf_redirect() to the ifindex
    h_->put_flow(kc, fc);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK;
    s.seq = 5000;
    s.ack = 0x80001235;
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_REDIRECT_, KVS_R_REDIRECT_FWD);
    EXPECT_EQ(r.out, cxx_rewrite(in, fc));  // rewritten before the redirect
}

TEST_P(BpfProgFamily, BackendPacketsWithoutFlowPunted) {
    TcpSpec s = backend_spec();
    s.flags = KVS_TCP_SYN | KVS_TCP_ACK;
    s.opts = cat({opt_mss(1460), opt_nop(), opt_ws(7)});
    expect_verdict(build_tcp(s), XDP_DROP_,
                   KVS_R_PUNT_NO_XSK);  // PUNT_BACKEND_SYNACK with a socket
    s.flags = KVS_TCP_ACK;
    s.opts.clear();
    s.payload = Bytes(20, 'z');
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_PUNT_NO_XSK);  // PUNT_BACKEND_OTHER with a socket
    s.dport = 30000;                                             // outside the SNAT range: not ours
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_NOT_OURS);
    EXPECT_EQ(r.out, in);
}

// Dual stack: a backend's packet without a flow is ours when it comes to either SNAT address of
// its own family within the port range (kvs_xdp_is_snat), whichever of snat_addr/snat2_addr
// holds it; any other address (or the right bytes in the other family) is passed untouched.
TEST_F(BpfProg, DualStackSnatMatchesEitherAddress) {
    auto backend_packet = [&](bool v6, const char *dst) {
        v6_ = v6;
        TcpSpec s = backend_spec();
        if (dst) ip6(dst, s.daddr);
        s.flags = KVS_TCP_ACK;
        s.payload = Bytes(20, 'z');
        return build_tcp(s);
    };
    auto passed = [&](const Bytes &in) {
        RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_NOT_OURS);
        EXPECT_EQ(r.out, in);
    };
    for (bool swapped : {false, true}) {
        SCOPED_TRACE(swapped ? "IPv6 in snat_addr, IPv4 in snat2_addr" : "IPv4 first");
        if (swapped) {
            std::swap(cfg_.snat_addr, cfg_.snat2_addr);
            std::swap(cfg_.snat_family, cfg_.snat2_family);
            h_->set_config(cfg_);
        }
        expect_verdict(backend_packet(false, nullptr), XDP_DROP_, KVS_R_PUNT_NO_XSK);
        expect_verdict(backend_packet(true, nullptr), XDP_DROP_, KVS_R_PUNT_NO_XSK);  // fd02::1
        passed(backend_packet(true, "fd02::99"));
        passed(backend_packet(true, "a02:1::"));  // 10.2.0.1's bytes, but IPv6
    }
    // Single stack (IPv4): nothing of IPv6 is a SNAT address.
    cfg_.snat2_family = KVS_AF_NONE;
    std::swap(cfg_.snat_addr, cfg_.snat2_addr);
    cfg_.snat_family = KVS_AF_INET;
    h_->set_config(cfg_);
    expect_verdict(backend_packet(false, nullptr), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    passed(backend_packet(true, nullptr));
}

TEST_F(BpfProg, OtherTrafficPassedWithReason) {
    TcpSpec s = client_spec();
    s.daddr[0] = ip4("10.9.0.99");  // not a VIP
    s.flags = KVS_TCP_ACK;
    Bytes in = build_tcp(s);
    RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_NOT_OURS);
    EXPECT_EQ(r.out, in);

    Bytes udp = build_tcp(client_spec());
    udp[14 + 9] = 17;
    expect_verdict(udp, XDP_PASS_, KVS_R_PASS_NOT_TCP);
    Bytes icmp = build_tcp(client_spec());
    icmp[14 + 9] = 1;
    expect_verdict(icmp, XDP_PASS_, KVS_R_PASS_ICMP);
    Bytes arp = build_tcp(client_spec());
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect_verdict(arp, XDP_PASS_, KVS_R_PASS_NOT_IP);
    TcpSpec f = client_spec();
    f.frag_off = 0x2000;
    expect_verdict(build_tcp(f), XDP_PASS_, KVS_R_PASS_FRAGMENT);
    TcpSpec v6 = client_spec();
    v6.v6 = true;
    ip6("fd00::2", v6.saddr);
    ip6("fd00::9", v6.daddr);
    Bytes e = build_tcp(v6);
    e[14 + 6] = 60;  // destination options header
    expect_verdict(e, XDP_PASS_, KVS_R_PASS_IPV6_EXT);
}

// Userspace run of icmp.h on the same frame, with F and R's seq_delta as the program finds them.
Bytes cxx_icmp(const Bytes &in, const kvs_flow &f, std::uint32_t seq_delta) {
    Bytes b = in;
    kvs_pkt p;
    kvs_icmp_err e;
    EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_NOT_TCP);
    EXPECT_EQ(kvs_icmp_parse(b.data() + b.size(), &p, &e), KVS_ICMP_OK);
    EXPECT_EQ(kvs_icmp_rewrite(b.data() + b.size(), &p, &e, &f, seq_delta), 0);
    return b;
}

TEST_F(BpfProg, IcmpFragNeededFromBackendLegReachesClient) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    // A client->backend seq_delta (kvs_flowpair_build makes 0) shows the quote's seq moved back
    // by the delta of the entry that sent it.
    fc.seq_delta = 0x1000;
    h_->put_flow(kc, fc);
    std::uint32_t client[4] = {ip4("10.1.0.2")}, vip[4] = {ip4("10.9.0.1")};
    std::uint32_t snat[4] = {ip4("10.2.0.1")}, backend[4] = {ip4("10.2.0.7")};
    // What the appliance sent the backend, quoted as Linux quotes: up to 576 bytes in all.
    TcpSpec sent = data_segment(false, snat, backend, 20001, 8000, 5000 + 0x1000);
    Bytes q = ip_packet(build_tcp(sent), 548);
    IcmpSpec err;
    std::memcpy(err.smac, kBackendMac, 6);  // the backend-side next hop
    std::memcpy(err.dmac, kApplMac, 6);
    err.saddr[0] = ip4("10.2.0.254");
    err.daddr[0] = snat[0];
    err.type = KVS_ICMP_DEST_UNREACH;
    err.code = KVS_ICMP_FRAG_NEEDED;
    err.rest = 1400;
    err.quote = q;
    Bytes in = build_icmp(err);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_ICMP_FWD_TO_CLIENT);

    // Built independently: VIP -> client out of the appliance to the client's MAC, quoting the
    // segment as the client sent it (its seq 5000), the MTU unchanged.
    Bytes expect = build_icmp(
        readdressed(err, kApplMac, kClientMac, vip, client,
                    translated_quote(data_segment(false, client, vip, 40001, 80, 5000), q)));
    EXPECT_EQ(r.out, expect) << "got:\n" << hex(r.out) << "\nwant:\n" << hex(expect);
    EXPECT_EQ(check_icmp_checksums(r.out), "");
    EXPECT_EQ(r.out, cxx_icmp(in, fs, fc.seq_delta));
    EXPECT_EQ(rd32(&r.out[34 + 4]), 1400u);
    kvs_flow after{};
    ASSERT_TRUE(h_->get_flow(ks, &after));
    EXPECT_EQ(after.packets, 0u);  // an error is not the flow's traffic
}

TEST_F(BpfProg, IcmpPacketTooBigBothWaysIpv6) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    kvs_flowpair_params p = install_pair6(&kc, &fc, &ks, &fs);

    // Backend leg: a router there cannot forward what we sent SNAT -> backend.
    TcpSpec sent = data_segment(true, p.snat_addr, p.backend_addr, 20001, 8000, 77);
    Bytes q = ip_packet(build_tcp(sent), 1232);  // as much as fits in 1280
    IcmpSpec err;
    err.v6 = true;
    std::memcpy(err.smac, kBackendMac, 6);
    std::memcpy(err.dmac, kApplMac, 6);
    ip6("fd02::fe", err.saddr);
    std::memcpy(err.daddr, p.snat_addr, 16);
    err.type = KVS_ICMPV6_PKT_TOOBIG;
    err.code = 0;
    err.rest = 1280;
    err.quote = q;
    Bytes in = build_icmp(err);
    RunResult r = expect_verdict(in, XDP_TX_, KVS_R_ICMP_FWD_TO_CLIENT);
    Bytes expect = build_icmp(readdressed(
        err, kApplMac, kClientMac, p.vip_addr, p.client_addr,
        translated_quote(data_segment(true, p.client_addr, p.vip_addr, 40001, 80, 77), q)));
    EXPECT_EQ(r.out, expect) << "got:\n" << hex(r.out) << "\nwant:\n" << hex(expect);
    EXPECT_EQ(check_icmp_checksums(r.out), "");
    EXPECT_EQ(r.out, cxx_icmp(in, fs, fc.seq_delta));

    // Client leg, tagged: a router there cannot forward what we sent VIP -> client, whose seq
    // is the backend's moved into our SYN-ACK's space.
    std::uint32_t backend_seq = p.backend_isn + 1 + 4000;
    sent = data_segment(true, p.vip_addr, p.client_addr, 80, 40001, backend_seq + fs.seq_delta);
    q = ip_packet(build_tcp(sent), 1232);
    err.vlan = true;
    std::memcpy(err.smac, kClientMac, 6);
    ip6("fd00::fe", err.saddr);
    std::memcpy(err.daddr, p.vip_addr, 16);
    err.rest = 1400;
    err.quote = q;
    in = build_icmp(err);
    r = expect_verdict(in, XDP_TX_, KVS_R_ICMP_FWD_TO_BACKEND);
    expect = build_icmp(readdressed(
        err, kApplMac, kBackendMac, p.snat_addr, p.backend_addr,
        translated_quote(data_segment(true, p.backend_addr, p.snat_addr, 8000, 20001, backend_seq),
                         q)));
    EXPECT_EQ(r.out, expect) << "got:\n" << hex(r.out) << "\nwant:\n" << hex(expect);
    EXPECT_EQ(check_icmp_checksums(r.out), "");
    EXPECT_EQ(r.out, cxx_icmp(in, fc, fs.seq_delta));
}

// A client's path-MTU error below KVS_ICMP_RELAY_MTU_FLOOR is not relayed to the backend: the
// backend keeps a path MTU per destination, the SNAT address every client shares (one client's
// MTU 68 made it send small segments to all of them). At the floor it is; an error from the
// backend's side goes to its one client whatever its MTU.
TEST_F(BpfProg, ClientPathMtuErrorBelowTheFloorIsNotRelayed) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    std::uint32_t client[4] = {ip4("10.1.0.2")}, vip[4] = {ip4("10.9.0.1")};
    std::uint32_t snat[4] = {ip4("10.2.0.1")}, backend[4] = {ip4("10.2.0.7")};
    const std::uint32_t backend_seq = 0x7000aaaa + 1 + 300;
    TcpSpec sent = data_segment(false, vip, client, 80, 40001, backend_seq + fs.seq_delta);
    IcmpSpec err;
    std::memcpy(err.smac, kClientMac, 6);
    std::memcpy(err.dmac, kApplMac, 6);
    err.saddr[0] = client[0];  // the client itself (no spoofing needed)
    err.daddr[0] = vip[0];
    err.type = KVS_ICMP_DEST_UNREACH;
    err.code = KVS_ICMP_FRAG_NEEDED;
    err.rest = 68;
    err.quote = ip_packet(build_tcp(sent), 548);
    expect_verdict(build_icmp(err), XDP_DROP_, KVS_R_DROP_ICMP_MTU_BELOW_FLOOR);
    err.rest = KVS_ICMP_RELAY_MTU_FLOOR - 1;
    expect_verdict(build_icmp(err), XDP_DROP_, KVS_R_DROP_ICMP_MTU_BELOW_FLOOR);
    err.rest = 0;  // the MTU field 0: Linux applies its minimum (552); was relayed
    expect_verdict(build_icmp(err), XDP_DROP_, KVS_R_DROP_ICMP_MTU_BELOW_FLOOR);
    err.rest = KVS_ICMP_RELAY_MTU_FLOOR;
    expect_verdict(build_icmp(err), XDP_TX_, KVS_R_ICMP_FWD_TO_BACKEND);
    err.code = 1;  // host unreachable: no MTU, relayed
    err.rest = 0;
    expect_verdict(build_icmp(err), XDP_TX_, KVS_R_ICMP_FWD_TO_BACKEND);
    // The backend's side: per client, relayed with its MTU.
    TcpSpec to_be = data_segment(false, snat, backend, 20001, 8000, 5000);
    IcmpSpec be;
    std::memcpy(be.smac, kBackendMac, 6);
    std::memcpy(be.dmac, kApplMac, 6);
    be.saddr[0] = ip4("10.2.0.254");
    be.daddr[0] = snat[0];
    be.type = KVS_ICMP_DEST_UNREACH;
    be.code = KVS_ICMP_FRAG_NEEDED;
    be.rest = 576;
    be.quote = ip_packet(build_tcp(to_be), 548);
    RunResult r = expect_verdict(build_icmp(be), XDP_TX_, KVS_R_ICMP_FWD_TO_CLIENT);
    EXPECT_EQ(rd32(&r.out[34 + 4]), 576u);
}

TEST_F(BpfProg, IcmpErrorFollowsTheFlowsEgress) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    fs.tx_ifindex = 12345;  // two-armed: the client side is another interface
    h_->put_flow(ks, fs);
    std::uint32_t snat[4] = {ip4("10.2.0.1")}, backend[4] = {ip4("10.2.0.7")};
    IcmpSpec err;
    err.saddr[0] = ip4("10.2.0.254");
    err.daddr[0] = snat[0];
    err.type = KVS_ICMP_TIME_EXCEEDED;
    err.code = 0;
    err.quote = ip_packet(build_tcp(data_segment(false, snat, backend, 20001, 8000, 9)), 28);
    Bytes in = build_icmp(err);
    RunResult r = expect_verdict(in, XDP_REDIRECT_, KVS_R_ICMP_FWD_TO_CLIENT);
    EXPECT_EQ(r.out, cxx_icmp(in, fs, fc.seq_delta));  // rewritten before the redirect
    EXPECT_EQ(check_icmp_checksums(r.out), "");
}

TEST_F(BpfProg, IcmpErrorsWithoutAFlowPassedAndCounted) {
    std::uint32_t snat[4] = {ip4("10.2.0.1")}, backend[4] = {ip4("10.2.0.7")};
    IcmpSpec err;
    err.saddr[0] = ip4("10.2.0.254");
    err.daddr[0] = snat[0];
    err.rest = 1400;
    err.quote = ip_packet(build_tcp(data_segment(false, snat, backend, 20001, 8000, 9)), 548);
    Bytes in = build_icmp(err);
    RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_ICMP_NO_FLOW);  // no flows at all
    EXPECT_EQ(r.out, in);

    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    IcmpSpec other = err;  // another SNAT port
    other.quote = ip_packet(build_tcp(data_segment(false, snat, backend, 20002, 8000, 9)), 548);
    in = build_icmp(other);
    r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_ICMP_NO_FLOW);
    EXPECT_EQ(r.out, in);
    other = err;  // addressed to someone other than the quote's source
    other.daddr[0] = ip4("10.2.0.99");
    expect_verdict(build_icmp(other), XDP_PASS_, KVS_R_PASS_ICMP_NO_FLOW);
    h_->clear_flows();  // half a pair: the entry that sent the quote is gone
    h_->put_flow(ks, fs);
    expect_verdict(build_icmp(err), XDP_PASS_, KVS_R_PASS_ICMP_NO_FLOW);
    // The pair's two entries of two installations (an old leg's leftover beside a newer flow
    // on the client's key): no pair, nothing rewritten with the other flow's delta.
    kvs_flow newer = fc;
    newer.created_ns = fc.created_ns + 1000;
    h_->put_flow(kc, newer);
    r = expect_verdict(build_icmp(err), XDP_PASS_, KVS_R_PASS_ICMP_NO_FLOW);
    h_->put_flow(kc, fc);
    expect_verdict(build_icmp(err), XDP_TX_, KVS_R_ICMP_FWD_TO_CLIENT);
    h_->clear_flows();

    // ICMP that is no error about TCP stays the kernel's, as before.
    other = err;
    other.type = 8;  // echo request
    other.code = 0;
    expect_verdict(build_icmp(other), XDP_PASS_, KVS_R_PASS_ICMP);
    other = err;
    other.quote[9] = 17;  // about UDP
    expect_verdict(build_icmp(other), XDP_PASS_, KVS_R_PASS_ICMP);
    IcmpSpec v6;
    v6.v6 = true;
    ip6("fd00::2", v6.saddr);
    ip6("fd00::9", v6.daddr);
    v6.type = 128;  // echo request
    v6.code = 0;
    expect_verdict(build_icmp(v6), XDP_PASS_, KVS_R_PASS_ICMP);
}

TEST_F(BpfProg, IcmpErrorWithShortQuotePassedAndCounted) {
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    install_pair(&kc, &fc, &ks, &fs);
    std::uint32_t snat[4] = {ip4("10.2.0.1")}, backend[4] = {ip4("10.2.0.7")};
    Bytes whole = ip_packet(build_tcp(data_segment(false, snat, backend, 20001, 8000, 9)));
    IcmpSpec err;
    err.saddr[0] = ip4("10.2.0.254");
    err.daddr[0] = snat[0];
    err.rest = 1400;
    for (std::size_t n : {0, 1, 19, 20, 24, 27}) {  // never the IP header and 8 TCP bytes
        err.quote = Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(n));
        Bytes in = build_icmp(err);
        RunResult r = expect_verdict(in, XDP_PASS_, KVS_R_PASS_ICMP_BAD_QUOTE);
        EXPECT_EQ(r.out, in) << n;
    }
    // The ICMP header itself cut short by the IP length (the frame padded on).
    err.quote.clear();
    Bytes in = build_icmp(err);
    in[14 + 3] = 20 + 4;
    in.resize(60, 0);
    expect_verdict(in, XDP_PASS_, KVS_R_PASS_ICMP_BAD_QUOTE);
    // An IP length past the frame is a truncated frame, like any other.
    err.quote = Bytes(whole.begin(), whole.begin() + 28);
    in = build_icmp(err);
    in.resize(in.size() - 1);
    expect_verdict(in, XDP_DROP_, KVS_R_DROP_TRUNCATED);

    kvs_flowpair_params p = install_pair6(&kc, &fc, &ks, &fs);
    IcmpSpec e6;
    e6.v6 = true;
    ip6("fd02::fe", e6.saddr);
    std::memcpy(e6.daddr, p.snat_addr, 16);
    e6.type = KVS_ICMPV6_PKT_TOOBIG;
    e6.code = 0;
    e6.rest = 1280;
    e6.quote = ip_packet(build_tcp(data_segment(true, p.snat_addr, p.backend_addr, 20001, 8000, 9)),
                         40 + 7);
    Bytes in6 = build_icmp(e6);
    RunResult r = expect_verdict(in6, XDP_PASS_, KVS_R_PASS_ICMP_BAD_QUOTE);
    EXPECT_EQ(r.out, in6);
    e6.quote = ip_packet(build_tcp(data_segment(true, p.snat_addr, p.backend_addr, 20001, 8000, 9)),
                         40 + 8);  // the minimum: forwarded
    expect_verdict(build_icmp(e6), XDP_TX_, KVS_R_ICMP_FWD_TO_CLIENT);
}

TEST_F(BpfProg, TruncatedAndMalformedCounted) {
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.opts = cat({opt_nop(2), opt_ts(1, 2), opt_nop(2), opt_sack({{1, 2}})});
    s.payload = Bytes(40, 'm');
    Bytes full = build_tcp(s);
    // Every truncation down to the Ethernet header (test-run needs at least 14 bytes).
    auto before = h_->stats();
    for (std::size_t n = 14; n < full.size(); n++) {
        Bytes b(full.begin(), full.begin() + static_cast<long>(n));
        RunResult r = h_->run(b);
        EXPECT_EQ(r.verdict, XDP_DROP_) << n;
    }
    auto after = h_->stats();
    EXPECT_EQ(after[KVS_R_DROP_TRUNCATED] - before[KVS_R_DROP_TRUNCATED], full.size() - 14);
    // Hostile option lengths (the general option walk in its own verified function): read as
    // Linux reads them (the walk stops, or skips a known kind of the wrong length), counted, and
    // the segment judged as one without them.
    TcpSpec plain = s;
    plain.opts.clear();
    before = h_->stats();
    const RunResult want = h_->run(build_tcp(plain));
    const std::string want_delta = stat_delta(before, h_->stats());
    for (Bytes opts : {Bytes{2, 0, 0, 0}, Bytes{2, 1, 0, 0}, Bytes{30, 200, 0, 0},
                       Bytes{8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                       Bytes{5, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, Bytes{1, 1, 1, 99}}) {
        TcpSpec m = s;
        m.opts = opts;
        before = h_->stats();
        EXPECT_EQ(h_->run(build_tcp(m)).verdict, want.verdict) << hex(opts);
        auto after = h_->stats();
        EXPECT_EQ(after[KVS_R_TCP_OPTS_IGNORED] - before[KVS_R_TCP_OPTS_IGNORED], 1u) << hex(opts);
        after[KVS_R_TCP_OPTS_IGNORED] = before[KVS_R_TCP_OPTS_IGNORED];
        EXPECT_EQ(stat_delta(before, after), want_delta) << hex(opts);
    }
    // Bad IHL, bad doff.
    Bytes b = full;
    b[14] = 0x43;
    expect_verdict(b, XDP_DROP_, KVS_R_DROP_MALFORMED);
    b = full;
    b[34 + 12] = 0x30;
    expect_verdict(b, XDP_DROP_, KVS_R_DROP_MALFORMED);
}

// ---- request boundaries (per-request steering) --------------------------------------------

class BpfBoundary : public BpfProgFamily {
   protected:
    static constexpr std::uint32_t kReqEnd = 5000;  // the first request's bytes end here
    static constexpr std::uint32_t kBisn = 0x7000aaaa, kCookie = 0x80001234;
    // A whole request in one segment (XDP reads where it ends from its head).
    static inline const std::string kRequest =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

    void SetUp() override {
        BpfProgFamily::SetUp();
        if (IsSkipped()) return;
        cfg_.flags |= KVS_CFG_PER_REQUEST;
        h_->set_config(cfg_);
        install_pair(&kc, &fc, &ks, &fs);
        // As the dataplane installs it: the first request flushed (it ends at kReqEnd), its
        // response owed.
        reset_request();
        fs.next_seq = kBisn + 1;
        fs.resp_end = kBisn + 1;
        fs.resp = KVS_RESP_END;
        fs.last_ack = kReqEnd;
        h_->put_flow(kc, fc);
        h_->put_flow(ks, fs);
        for (std::uint32_t w = 0; w < KVS_MAX_WORKERS; ++w) h_->set_worker_alive(w, mono_ns());
    }
    static std::uint64_t mono_ns() {
        timespec t{};
        clock_gettime(CLOCK_MONOTONIC, &t);
        return static_cast<std::uint64_t>(t.tv_sec) * 1000000000ull +
               static_cast<std::uint64_t>(t.tv_nsec);
    }
    // The client's entry as the dataplane leaves it after binding the first request: tracking
    // from kReqEnd, where that request ends and the next may start; one request started.
    void reset_request() {
        fc.next_seq = kReqEnd;
        fc.resp_end = kReqEnd;
        fc.resp = KVS_RESP_END;
        fc.msgs = 1;
    }
    // The backend's response segment at `off` bytes into its stream.
    Bytes response(std::uint32_t off, const std::string &payload) {
        TcpSpec b = backend_spec();
        b.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        b.seq = kBisn + 1 + off;
        b.ack = kReqEnd;
        b.payload.assign(payload.begin(), payload.end());
        return build_tcp(b);
    }
    // The whole response to the first request ("ok") in one segment, forwarded; its length.
    std::uint32_t answer_whole() {
        const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
        return static_cast<std::uint32_t>(resp.size());
    }
    // The client's FIN|ACK at the end of its first request (its ACK for the caller to set).
    TcpSpec client_fin() const {
        TcpSpec c = client_spec();
        c.flags = KVS_TCP_ACK | KVS_TCP_FIN;
        c.seq = kReqEnd;
        return c;
    }
    // The client's next request, having acknowledged `acked` response bytes.
    Bytes next_request(std::uint32_t acked) {
        TcpSpec c = client_spec();
        c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        c.seq = kReqEnd;
        c.ack = kCookie + 1 + acked;
        c.payload.assign(kRequest.begin(), kRequest.end());
        return build_tcp(c);
    }
    std::uint8_t state(const kvs_flow_key &k) {
        kvs_flow f{};
        EXPECT_TRUE(h_->get_flow(k, &f));
        return f.state;
    }
    kvs_flow_key kc{}, ks{};
    kvs_flow fc{}, fs{};
};

INSTANTIATE_TEST_SUITE_P(Family, BpfBoundary, ::testing::Bool(), family_name);

// A 1-byte segment at the boundary ("P") in a frame padded to Ethernet's minimum with "OST":
// the padding is no payload, so no request head (it was read as one: counted, and with per-
// request steering handed over as a boundary).
TEST_P(BpfBoundary, EthernetPaddingIsNoRequestHead) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const auto n = static_cast<std::uint32_t>(resp.size());
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = kReqEnd;
    c.ack = kCookie + 1 + n;
    c.payload = Bytes{'P'};
    Bytes one = build_tcp(c);
    for (char ch : std::string("OST /v1")) one.push_back(static_cast<std::uint8_t>(ch));
    expect_verdict(one, XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc) & KVS_FLOW_REBINDING, 0);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, fc.msgs) << "no request counted";
    EXPECT_EQ(f.next_seq, kReqEnd + 1);
}

TEST_P(BpfBoundary, NextRequestAfterACompleteResponseIsHandedOver) {
    const std::string resp =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: "
        "5\r\n\r\nhello";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp, KVS_RESP_END);
    EXPECT_EQ(b.resp_end, kBisn + 1 + resp.size()) << "the head and its 5 body bytes";
    EXPECT_EQ(b.next_seq, b.resp_end);
    EXPECT_EQ(b.msgs, 1);
    EXPECT_EQ(b.ts_last, fs.ts_last) << "no timestamps on this segment: the install's stays";
    // No AF_XDP socket in test-run: the hand-over shows as PUNT_NO_XSK.
    const Bytes req = next_request(static_cast<std::uint32_t>(resp.size()));
    RunResult r = expect_verdict(req, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
    EXPECT_EQ(state(ks), KVS_FLOW_REBINDING);
    // Tagged for the dataplane (a bound connection's segment, never a new connection's first
    // flight, whatever its ACK says of the cookie), the checksum still valid.
    auto tag = [](Bytes b) {
        kvs_pkt p;
        EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
        return p.tcp ? p.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND : -1;
    };
    EXPECT_EQ(tag(r.out), KVS_TCP_RES_PUNT_BOUND);
    EXPECT_EQ(check_checksums(r.out), "");
    // Marked: every packet of the flow goes to the dataplane, both ways; the client's tagged (its
    // retransmitted request here), the server's not.
    r = expect_verdict(req, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(tag(r.out), KVS_TCP_RES_PUNT_BOUND);
    EXPECT_EQ(check_checksums(r.out), "");
    r = expect_verdict(response(static_cast<std::uint32_t>(resp.size()), "x"), XDP_DROP_,
                       KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(tag(r.out), 0);
    EXPECT_EQ(check_checksums(r.out), "");
}

// Content-Length's value after optional whitespace of tabs is read (a tab ended the scan: the
// length was 0, the response taken as ending at its head); a value without digits leaves the end
// unknown (it was 0 too).
TEST_P(BpfBoundary, ContentLengthAfterATabIsReadAndNoDigitsIsUnknown) {
    const std::string tab = "HTTP/1.1 200 OK\r\nContent-Length:\t \t5\r\n\r\nhello";
    expect_verdict(response(0, tab), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp, KVS_RESP_END);
    EXPECT_EQ(b.resp_end, kBisn + 1 + tab.size()) << "the head and its 5 body bytes";
    h_->put_flow(ks, fs);
    h_->put_flow(kc, fc);
    const std::string bad = "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello";
    expect_verdict(response(0, bad), XDP_TX_, KVS_R_TX_FWD_S2C);
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp & KVS_RESP_END, 0) << "its end unknown, not at its head";
}

// A client segment XDP forwards itself (here a request while a response is owed: kept on its
// backend) carries no tag: only what is handed to the dataplane does.
TEST_P(BpfBoundary, ForwardedClientSegmentsAreNotTagged) {
    RunResult r = expect_verdict(next_request(0), XDP_TX_, KVS_R_TX_FWD_C2S);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(r.out.data(), r.out.data() + r.out.size(), &p), KVS_PARSE_OK);
    EXPECT_EQ(p.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND, 0);
    EXPECT_EQ(check_checksums(r.out), "");
}

// A kept-alive connection between requests carries no load: XDP counts it idle once its response
// ended with nothing owed (idle_starts), and no longer at the client's next request or the close
// (idle_ends); the choice's load is binds - closes - (idle_starts - idle_ends).
TEST_P(BpfBoundary, IdleBetweenRequestsIsCountedUntilTheNextRequest) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    const auto n = static_cast<std::uint32_t>(resp.size());
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(state(kc), KVS_FLOW_IDLE);
    EXPECT_EQ(state(ks), 0) << "marked on the client's entry only";
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
    EXPECT_EQ(h_->load(3).idle_ends, 0u);
    // Its last segment again (a retransmission): counted once.
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
    // The next request: no longer idle, before the dataplane takes the connection over.
    expect_verdict(next_request(n), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
    EXPECT_EQ(h_->load(3).idle_ends, 1u);
}

// Only bytes XDP takes end an idleness: a segment far ahead of the bytes seen that does not
// acknowledge what the backend sent (a blind forgery) leaves the connection idle (any segment
// ahead ended it: two forged bytes made a pooled idle connection count in flight).
TEST_P(BpfBoundary, ForgedBytesAheadDoNotEndAnIdleness) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    const auto n = static_cast<std::uint32_t>(resp.size());
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    ASSERT_EQ(state(kc), KVS_FLOW_IDLE);
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = kReqEnd + 100000;
    c.ack = kCookie + 1 + n + (16u << 20);  // far past anything the backend sent
    c.payload = {'x'};
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), KVS_FLOW_IDLE);
    EXPECT_EQ(h_->load(3).idle_ends, 0u);
    // The next real request ends it (as a boundary).
    expect_verdict(next_request(n), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(h_->load(3).idle_ends, 1u);
}

TEST_P(BpfBoundary, IdleConnectionClosedIsNoLongerIdle) {
    const std::uint32_t n = answer_whole();
    ASSERT_EQ(state(kc), KVS_FLOW_IDLE);
    TcpSpec c = client_fin();
    c.ack = kCookie + 1 + n;
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    EXPECT_EQ(h_->load(3).closes, 1u);
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
    EXPECT_EQ(h_->load(3).idle_ends, 1u);
    // A closed connection is never idle again (its last segment retransmitted).
    answer_whole();
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
}

// A FIN whose ACK the backend cannot take: past what it sent (Linux discards the segment, FIN
// and all) or further behind it than any window. Counted, the connection went on with its
// backend's in-flight count one lower for good, and its later real close counted nothing. Closes
// nothing here either; the proper FIN then closes it.
TEST_P(BpfBoundary, FinWithAnAckTheEndpointDropsClosesNothing) {
    const std::uint32_t n = answer_whole();
    ASSERT_EQ(state(kc), KVS_FLOW_IDLE);
    TcpSpec c = client_fin();
    for (std::uint32_t ack :
         {kCookie + 1 + n + (1u << 30), kCookie + 1 + n + 1, kCookie + 1 + n - (8u << 20)}) {
        c.ack = ack;
        expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
        EXPECT_EQ(state(kc), KVS_FLOW_IDLE) << std::hex << ack;
        EXPECT_EQ(h_->load(3).closes, 0u) << std::hex << ack;
        EXPECT_EQ(h_->load(3).idle_ends, 0u) << std::hex << ack;
        kvs_flow cf{};
        ASSERT_TRUE(h_->get_flow(kc, &cf));
        EXPECT_EQ(cf.next_seq, kReqEnd) << "a FIN not taken moves nothing: " << std::hex << ack;
    }
    c.ack = kCookie + 1 + n;
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), KVS_FLOW_FIN_IN | KVS_FLOW_CLOSED);
    EXPECT_EQ(h_->load(3).closes, 1u);
    EXPECT_EQ(h_->load(3).idle_ends, 1u);
}

// An old leg's entry left behind (its client entry evicted, the client's port then reused by a
// new flow on another backend) is no twin of the new flow's client entry: the old backend's FIN
// closes only its own entry. Paired by key, it closed the live flow (its close counted on the old
// backend, never on its own; never idle again).
TEST_P(BpfBoundary, AnOldLegEntryClosesOnlyItsOwnInstallation) {
    kvs_flowpair_params p = family_params();
    // The new flow: same client key, backend 4 on another SNAT port, installed later.
    p.backend_id = 4;
    p.snat_port = htons(20002);
    p.now_ns = fc.created_ns + 1000;
    kvs_flow_key kc2{}, ks2{};
    kvs_flow fc2{}, fs2{};
    kvs_flowpair_build(&p, &kc2, &fc2, &ks2, &fs2);
    ASSERT_EQ(std::memcmp(&kc2, &kc, sizeof kc), 0) << "the client's key, reused";
    h_->put_flow(kc2, fc2);
    h_->put_flow(ks2, fs2);
    TcpSpec b = backend_spec();
    b.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    b.seq = kBisn + 1;
    b.ack = kReqEnd;
    expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(state(ks) & KVS_FLOW_CLOSED, KVS_FLOW_CLOSED) << "the old leg's own entry";
    EXPECT_EQ(state(kc) & KVS_FLOW_CLOSED, 0) << "the live flow's client entry";
    EXPECT_EQ(h_->load(3).closes, 1u);
    EXPECT_EQ(h_->load(4).closes, 0u);
}

TEST_P(BpfBoundary, ResponseEndingWithARequestOwedIsNotIdle) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";  // 5 of 10
    const auto n = static_cast<std::uint32_t>(head.size());
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(state(kc), 0) << "half a response: in flight";
    // A pipelined request before the response ended: kept on the backend, a response owed.
    expect_verdict(next_request(n), XDP_TX_, KVS_R_TX_FWD_C2S);
    expect_verdict(response(n, "world"), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(state(kc), 0) << "the second request is still being answered";
    EXPECT_EQ(h_->load(3).idle_starts, 0u);
}

TEST_P(BpfBoundary, ChunkedResponseEndsWithItsLastChunk) {
    const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    const std::string last = "0\r\n\r\n";
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::uint32_t n1 = static_cast<std::uint32_t>(head.size());
    // Before the last chunk the client's next request is not a boundary (a pipelined one).
    expect_verdict(next_request(n1), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), 0);
    // Another connection's worth of state: the request above counted as started, so reset it.
    reset_request();
    h_->put_flow(kc, fc);
    expect_verdict(response(n1, last), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp, KVS_RESP_CHUNKED | KVS_RESP_END);
    EXPECT_EQ(b.resp_end, kBisn + 1 + n1 + last.size());
    expect_verdict(next_request(n1 + static_cast<std::uint32_t>(last.size())), XDP_DROP_,
                   KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

TEST_P(BpfBoundary, NoBoundaryWhileAnythingIsOutstanding) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";  // 5 of 10
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::uint32_t n = static_cast<std::uint32_t>(resp.size());
    // The response is not complete: the request stays on the connection's backend.
    const auto before = h_->stats();
    expect_verdict(next_request(n), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_OWED] - before[KVS_R_REQ_KEPT_OWED], 1u);
    EXPECT_EQ(state(kc), 0);
    EXPECT_EQ(state(ks), 0);
}

// A 1xx head (100 Continue) and the final response: apart, or written together in one segment.
// Either way the final response is counted and its end read, and the next request is a boundary.
// Before, the final head after a 1xx in the same segment went unseen: the response count stayed
// one behind, and every later request of the connection was "owed".
TEST_P(BpfBoundary, AnInterimResponseAndTheFinalOneInOneSegment) {
    const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::string final_ = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (const bool together : {false, true}) {
        SCOPED_TRACE(together ? "one segment" : "two segments");
        SetUp();
        if (together) {
            expect_verdict(response(0, interim + final_), XDP_TX_, KVS_R_TX_FWD_S2C);
        } else {
            expect_verdict(response(0, interim), XDP_TX_, KVS_R_TX_FWD_S2C);
            kvs_flow b{};
            ASSERT_TRUE(h_->get_flow(ks, &b));
            EXPECT_EQ(b.msgs, 0) << "an interim response is no response";
            EXPECT_EQ(b.resp_end, kBisn + 1 + interim.size());
            expect_verdict(response(static_cast<std::uint32_t>(interim.size()), final_), XDP_TX_,
                           KVS_R_TX_FWD_S2C);
        }
        const std::uint32_t n = static_cast<std::uint32_t>(interim.size() + final_.size());
        kvs_flow b{};
        ASSERT_TRUE(h_->get_flow(ks, &b));
        EXPECT_EQ(b.msgs, 1);
        EXPECT_EQ(b.resp, KVS_RESP_END);
        EXPECT_EQ(b.resp_end, kBisn + 1 + n);
        expect_verdict(next_request(n), XDP_DROP_, KVS_R_PUNT_NO_XSK);
        EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
    }
}

// Response heads XDP cannot read are still counted (their ends unknown): a status line shorter
// than a status code in its first segment, a final head a 1xx leaves fewer than 12 bytes of in
// its segment, a second 1xx before it. Before, each went uncounted and the response count stayed
// one behind for the connection's life (every later request "owed": no boundary, never idle).
// And a Content-Length of more than 12 digits is no length (its first 12 were taken).
TEST_P(BpfBoundary, ResponseHeadsXdpCannotReadAreStillCounted) {
    const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::string early = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
    const std::string final_ = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct Case {
        const char *name;
        std::vector<std::string> segments;
    };
    for (const Case &c :
         {Case{"short first segment", {"HTTP/1.", final_.substr(7)}},
          Case{"a 1xx and 3 bytes of the final head", {interim + "HTT", final_.substr(3)}},
          Case{"two 1xx and the final head", {interim + early + final_}}}) {
        SCOPED_TRACE(c.name);
        SetUp();
        std::uint32_t at = 0;
        for (const std::string &seg : c.segments) {
            expect_verdict(response(at, seg), XDP_TX_, KVS_R_TX_FWD_S2C);
            at += static_cast<std::uint32_t>(seg.size());
        }
        kvs_flow b{};
        ASSERT_TRUE(h_->get_flow(ks, &b));
        EXPECT_EQ(b.msgs, 1) << "the final response is counted";
        EXPECT_EQ(b.resp & KVS_RESP_END, 0) << "its end is unknown";
        // The next request is no boundary (the response's end unknown): kept, counted.
        expect_verdict(next_request(at), XDP_TX_, KVS_R_TX_FWD_C2S);
        EXPECT_EQ(state(kc), 0);
        // Its response's head is resynced and counted: the counts are in step again, so the
        // request after it is a boundary (one behind, it was "owed" for the connection's life).
        const std::string resp2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        const auto L = static_cast<std::uint32_t>(kRequest.size());
        TcpSpec r = backend_spec();
        r.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        r.seq = kBisn + 1 + at;
        r.ack = kReqEnd + L;
        r.payload.assign(resp2.begin(), resp2.end());
        expect_verdict(build_tcp(r), XDP_TX_, KVS_R_TX_FWD_S2C);
        TcpSpec q = client_spec();
        q.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        q.seq = kReqEnd + L;
        q.ack = kCookie + 1 + at + static_cast<std::uint32_t>(resp2.size());
        q.payload.assign(kRequest.begin(), kRequest.end());
        expect_verdict(build_tcp(q), XDP_DROP_, KVS_R_PUNT_NO_XSK);
        EXPECT_EQ(state(kc), KVS_FLOW_REBINDING) << "the third request is a boundary";
    }
    SetUp();
    const std::string long_len = "HTTP/1.1 200 OK\r\nContent-Length: 0000000000005\r\n\r\nhello";
    expect_verdict(response(0, long_len), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.msgs, 1);
    EXPECT_EQ(b.resp & KVS_RESP_END, 0) << "13 digits: no length (was read as 0)";
}

// No dataplane worker to take the request: the flow's worker stopped (heartbeat 0) or silent
// past KVS_DP_ALIVE_NS. The request stays on its backend; before, it was marked and every
// packet of the connection went to a queue with no socket until a dataplane came back.
TEST_P(BpfBoundary, NoBoundaryWithoutALiveDataplane) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::uint32_t n = static_cast<std::uint32_t>(resp.size());
    for (const std::uint64_t alive :
         {std::uint64_t{0}, static_cast<std::uint64_t>(mono_ns() - 2 * KVS_DP_ALIVE_NS)}) {
        reset_request();
        h_->put_flow(kc, fc);
        h_->set_worker_alive(fc.worker, alive);
        const auto before = h_->stats();
        expect_verdict(next_request(n), XDP_TX_, KVS_R_TX_FWD_C2S);
        EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_NO_DATAPLANE] - before[KVS_R_REQ_KEPT_NO_DATAPLANE],
                  1u)
            << alive;
        EXPECT_EQ(state(kc), 0);
        EXPECT_EQ(state(ks), 0);
    }
    // Its heartbeat fresh again: the next request is handed over.
    reset_request();
    h_->put_flow(kc, fc);
    h_->set_worker_alive(fc.worker, mono_ns());
    expect_verdict(next_request(n), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

TEST_P(BpfBoundary, UnacknowledgedResponseOrSteeringOffIsNoBoundary) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::uint32_t n = static_cast<std::uint32_t>(resp.size());
    // The client has not acknowledged the whole response.
    const auto before = h_->stats();
    expect_verdict(next_request(n - 1), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), 0);
    EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_UNACKED] - before[KVS_R_REQ_KEPT_UNACKED], 1u);
    // Complete and acknowledged, but per-request steering is off.
    reset_request();
    h_->put_flow(kc, fc);
    cfg_.flags &= ~KVS_CFG_PER_REQUEST;
    h_->set_config(cfg_);
    expect_verdict(next_request(n), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), 0);
}

TEST_P(BpfBoundary, ClosingConnectionIsNoBoundary) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::uint32_t n = static_cast<std::uint32_t>(resp.size());
    // The backend closes its side (an idle close): the next request is not re-bound here; it
    // reaches the closing backend, whose answer (a reset) the client sees at once.
    TcpSpec fin = backend_spec();
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    fin.seq = kBisn + 1 + n;
    fin.ack = kReqEnd;
    RunResult r = h_->run(build_tcp(fin));
    EXPECT_EQ(r.verdict, XDP_TX_);
    const auto before = h_->stats();
    expect_verdict(next_request(n + 1), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_CLOSING] - before[KVS_R_REQ_KEPT_CLOSING], 1u);
    EXPECT_EQ(state(kc) & KVS_FLOW_REBINDING, 0);
}

// A segment of a request's body that begins with capitals (base64, an upper-case prompt) is
// not a request: requests start only where the previous one ends. Before, it counted one, the
// connection then looked one response short forever, and no later request was re-bound.
TEST_P(BpfBoundary, BodyThatBeginsWithCapitalsIsNoRequest) {
    fc.resp_end = kReqEnd + 20;  // the first request's last 20 body bytes still to come via XDP
    h_->put_flow(kc, fc);
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = kReqEnd;
    c.ack = kCookie + 1;
    const std::string body = "ABCDEFGHIJKLMNOPQRS}";
    c.payload.assign(body.begin(), body.end());
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, 1) << "no request counted";
    EXPECT_EQ(f.next_seq, kReqEnd + 20);
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    TcpSpec b = backend_spec();
    b.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    b.seq = kBisn + 1;
    b.ack = kReqEnd + 20;
    b.payload.assign(resp.begin(), resp.end());
    expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
    // The next request, where the first one ends, everything acknowledged: a boundary.
    c.seq = kReqEnd + 20;
    c.ack = kCookie + 1 + static_cast<std::uint32_t>(resp.size());
    c.payload.assign(kRequest.begin(), kRequest.end());
    expect_verdict(build_tcp(c), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// A request whose first segment was lost before the appliance while a later one passed: its
// head, retransmitted, is counted and its end read (the tracking goes on), but it is no
// boundary (the later bytes already reached the connection's backend), and no later segment of
// its body is one either, whatever it begins with.
TEST_P(BpfBoundary, RequestWhoseHeadCameLateIsNoBoundaryNorIsItsBody) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const auto n = static_cast<std::uint32_t>(resp.size());
    const std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n0123456789";
    const auto hl = static_cast<std::uint32_t>(head.size());
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.ack = kCookie + 1 + n;
    // The second segment first (its head lost upstream).
    c.seq = kReqEnd + hl;
    const std::string b2 = "XYZ4567890";
    c.payload.assign(b2.begin(), b2.end());
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    // The head, retransmitted: counted, forwarded, no boundary.
    c.seq = kReqEnd;
    c.payload.assign(head.begin(), head.end());
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, 2);
    EXPECT_EQ(f.resp, KVS_RESP_END);
    EXPECT_EQ(f.resp_end, kReqEnd + hl + 20) << "its Content-Length: 30 body bytes";
    EXPECT_EQ(state(kc), 0);
    // The backend acknowledges both; the body's last segment begins with capitals: still none.
    fs.last_ack = 0;
    ASSERT_TRUE(h_->get_flow(ks, &fs));
    TcpSpec a = backend_spec();
    a.flags = KVS_TCP_ACK;
    a.seq = kBisn + 1 + n;
    a.ack = kReqEnd + hl + 10;
    expect_verdict(build_tcp(a), XDP_TX_, KVS_R_TX_FWD_S2C);
    c.seq = kReqEnd + hl + 10;
    const std::string b3 = "QRS4567890";
    c.payload.assign(b3.begin(), b3.end());
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(state(kc), 0);
    EXPECT_EQ(state(ks), 0);
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, 2);
}

// A kept request whose end XDP cannot read (a chunked body): counted, and no later request of
// the connection is re-bound (its start is unknown), counted as request_end_unknown.
TEST_P(BpfBoundary, KeptRequestOfUnknownEndEndsTheSteering) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";  // 5 of 10
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::string chunked =
        "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: "
        "chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = kReqEnd;
    c.ack = kCookie + 1 + static_cast<std::uint32_t>(resp.size());
    c.payload.assign(chunked.begin(), chunked.end());
    const auto before = h_->stats();
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);  // kept: a response owed
    EXPECT_EQ(h_->stats()[KVS_R_REQ_END_UNKNOWN] - before[KVS_R_REQ_END_UNKNOWN], 1u);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, 2);
    EXPECT_EQ(f.resp & KVS_RESP_END, 0);
}

// A chunked response's head retransmitted (lost between the appliance and the client) is one
// response, not two.
TEST_P(BpfBoundary, RetransmittedChunkedHeadCountsOnce) {
    const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.msgs, 1);
    EXPECT_EQ(b.resp, KVS_RESP_CHUNKED);
    const auto n1 = static_cast<std::uint32_t>(head.size());
    const std::string last = "0\r\n\r\n";
    expect_verdict(response(n1, last), XDP_TX_, KVS_R_TX_FWD_S2C);
    expect_verdict(next_request(n1 + static_cast<std::uint32_t>(last.size())), XDP_DROP_,
                   KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING) << "the counts agree: the next request re-binds";
}

// The newest TSval the client was sent never goes back: a delayed segment's older one does not
// lower it (a moved connection's timestamps go on from it: the client's PAWS check).
TEST_P(BpfBoundary, NewestTimestampToTheClientNeverGoesBack) {
    kvs_flow f0{};
    ASSERT_TRUE(h_->get_flow(ks, &f0));
    TcpSpec b = backend_spec();
    b.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    b.seq = kBisn + 1;
    b.ack = kReqEnd;
    b.payload = {'x'};
    b.opts = cat({opt_nop(2), opt_ts(1300, 7)});
    expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(f.ts_last, 1300 + f0.tsval_delta);
    b.opts = cat({opt_nop(2), opt_ts(1000, 7)});  // an older segment, delayed
    expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
    ASSERT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(f.ts_last, 1300 + f0.tsval_delta);
}

// A request and the client's FIN in one segment (a client that half-closes after its last
// request): the request is counted first, so the FIN waits for the response like any client
// FIN while one is owed; no boundary is taken with it.
TEST_P(BpfBoundary, RequestWithTheClientsFinWaitsForTheResponse) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    c.seq = kReqEnd;
    c.ack = kCookie + 1 + static_cast<std::uint32_t>(resp.size());
    c.payload.assign(kRequest.begin(), kRequest.end());
    const std::uint32_t closes = h_->load(fc.backend_id).closes;
    expect_verdict(build_tcp(c), XDP_TX_, KVS_R_TX_FWD_C2S);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(kc, &f));
    EXPECT_EQ(f.msgs, 2);
    EXPECT_EQ(f.state, KVS_FLOW_FIN_IN) << "not closed: the response is owed";
    EXPECT_EQ(h_->load(fc.backend_id).closes, closes);
}

// A SYN flood spoofing one network's addresses: SYN-ACKs to that /24 or /48 are capped
// (reflection), other networks are answered as usual.
TEST_P(BpfProgFamily, SynAcksPerSourcePrefixAreRateLimited) {
    cfg_.syn_rate_per_prefix = 1;  // a second: no refill within this test unless it stalls 1 s
    cfg_.syn_burst_per_prefix = 3;
    h_->set_config(cfg_);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.opts = opt_mss(1460);
    // Five addresses of one /24 (IPv4) or /48 (IPv6: the /64s differ, the /48 is the same).
    auto source = [&](int net, int i) {
        if (v6_)
            ip6(("fd66:0:" + std::to_string(net) + ":" + std::to_string(i) + "::10").c_str(),
                s.saddr);
        else
            s.saddr[0] =
                ip4(("10.66." + std::to_string(net) + "." + std::to_string(10 + i)).c_str());
    };
    for (int i = 0; i < 5; ++i) {
        source(5, i);
        s.sport = static_cast<std::uint16_t>(41000 + i);
        if (i < 3)
            expect_verdict(build_tcp(s), XDP_TX_, KVS_R_TX_SYNACK);
        else
            expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_SYN_RATE);
    }
    source(6, 0);  // another /24 or /48: its own bucket
    expect_verdict(build_tcp(s), XDP_TX_, KVS_R_TX_SYNACK);
}

// Loss before the appliance: the response head is retransmitted after its body's tail passed.
// The head is still found where the response starts, so the next request is a boundary.
TEST_P(BpfBoundary, ResponseHeadArrivingAfterItsBodyIsStillFound) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
    const std::uint32_t n1 = static_cast<std::uint32_t>(head.size());
    expect_verdict(response(n1, "world"), XDP_TX_, KVS_R_TX_FWD_S2C);  // the tail first
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);      // then the head
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp, KVS_RESP_END);
    EXPECT_EQ(b.resp_end, b.next_seq);
    EXPECT_EQ(b.msgs, 1);
    // Ended with the late head: idle (it was never, and counted in flight until the next request).
    EXPECT_EQ(state(kc), KVS_FLOW_IDLE);
    EXPECT_EQ(h_->load(3).idle_starts, 1u);
    expect_verdict(response(n1, "world"), XDP_TX_, KVS_R_TX_FWD_S2C);  // retransmitted
    EXPECT_EQ(h_->load(3).idle_starts, 1u) << "counted once";
    expect_verdict(next_request(n1 + 5), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// The same for a chunked response, whose end only its last chunk tells: that chunk passed
// before the head did, and the head still ends the response there.
TEST_P(BpfBoundary, ChunkedResponseWhoseLastChunkOvertookItsHeadStillEnds) {
    const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string mid = "5\r\nhello\r\n";
    const std::string last = "5\r\nworld\r\n0\r\n\r\n";
    const auto n1 = static_cast<std::uint32_t>(head.size());
    const auto n2 = n1 + static_cast<std::uint32_t>(mid.size());
    const auto n3 = n2 + static_cast<std::uint32_t>(last.size());
    expect_verdict(response(n2, last), XDP_TX_, KVS_R_TX_FWD_S2C);  // the last chunk first
    expect_verdict(response(n1, mid), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.chunk_end, kBisn + 1 + n3);
    EXPECT_EQ(b.msgs, 0) << "no head yet";
    // Not a boundary yet: the head has not passed, so the response has not started for XDP.
    const auto before = h_->stats();
    expect_verdict(next_request(n3), XDP_TX_, KVS_R_TX_FWD_C2S);
    EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_OWED] - before[KVS_R_REQ_KEPT_OWED], 1u);
    reset_request();  // the request above counted as started: back to one owed
    h_->put_flow(kc, fc);
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);  // the head, retransmitted
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.resp, KVS_RESP_CHUNKED | KVS_RESP_END);
    EXPECT_EQ(b.resp_end, kBisn + 1 + n3);
    EXPECT_EQ(b.chunk_end, 0u);
    EXPECT_EQ(b.msgs, 1);
    expect_verdict(next_request(n3), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// Reordering: the backend's earlier segment, delayed, arrives after the whole response with an
// older acknowledgment; the next request is still a boundary (the backend did acknowledge it).
TEST_P(BpfBoundary, DelayedSegmentDoesNotUndoTheBackendsAcknowledgment) {
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const auto n = static_cast<std::uint32_t>(resp.size());
    expect_verdict(response(0, resp), XDP_TX_, KVS_R_TX_FWD_S2C);
    TcpSpec late = backend_spec();
    late.flags = KVS_TCP_ACK;
    late.seq = kBisn + 1;
    late.ack = kReqEnd - 100;  // sent before the request's last bytes had arrived
    expect_verdict(build_tcp(late), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.last_ack, kReqEnd);
    expect_verdict(next_request(n), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// A response whose end XDP cannot know (a response to HEAD: Content-Length and no body): the
// next request is kept (a response owed), and the next response's head, at the stream's end
// while that request waits, puts the tracking back in step: the request after it is a boundary.
TEST_P(BpfBoundary, TrackingResumesAtTheNextHeadAfterAnUnknownEnd) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";  // no body
    const auto n1 = static_cast<std::uint32_t>(head.size());
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    const std::string req = kRequest;
    const auto rl = static_cast<std::uint32_t>(req.size());
    auto before = h_->stats();
    expect_verdict(next_request(n1), XDP_TX_, KVS_R_TX_FWD_C2S);  // kept: a response owed
    EXPECT_EQ(h_->stats()[KVS_R_REQ_KEPT_OWED] - before[KVS_R_REQ_KEPT_OWED], 1u);
    // Its response, at the stream's end (not where the first one's Content-Length ends).
    const std::string resp2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    TcpSpec b = backend_spec();
    b.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    b.seq = kBisn + 1 + n1;
    b.ack = kReqEnd + rl;
    b.payload.assign(resp2.begin(), resp2.end());
    before = h_->stats();
    expect_verdict(build_tcp(b), XDP_TX_, KVS_R_TX_FWD_S2C);
    EXPECT_EQ(h_->stats()[KVS_R_RESP_RESYNC] - before[KVS_R_RESP_RESYNC], 1u);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(f.resp, KVS_RESP_END);
    EXPECT_EQ(f.resp_end, kBisn + 1 + n1 + static_cast<std::uint32_t>(resp2.size()));
    EXPECT_EQ(f.resp_end, f.next_seq);
    EXPECT_EQ(f.msgs, 2);
    // The third request, everything acknowledged both ways: a boundary again.
    TcpSpec c = client_spec();
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    c.seq = kReqEnd + rl;
    c.ack = kCookie + 1 + n1 + static_cast<std::uint32_t>(resp2.size());
    c.payload.assign(req.begin(), req.end());
    expect_verdict(build_tcp(c), XDP_DROP_, KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// A head as long as a whole segment (a gateway's many headers): its end is still found, and
// the response ends where its Content-Length says.
TEST_P(BpfBoundary, HeadFillingASegmentIsParsed) {
    std::string head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    for (int i = 0; head.size() < 1300; ++i)
        head += "x-gateway-header-" + std::to_string(i) + ": " + std::string(40, 'v') + "\r\n";
    head += "Content-Length: 2\r\n\r\nok";
    ASSERT_GT(head.size(), 1300u);
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(f.resp, KVS_RESP_END);
    EXPECT_EQ(f.resp_end, kBisn + 1 + static_cast<std::uint32_t>(head.size()));
    EXPECT_EQ(f.resp_end, f.next_seq);
    expect_verdict(next_request(static_cast<std::uint32_t>(head.size())), XDP_DROP_,
                   KVS_R_PUNT_NO_XSK);
    EXPECT_EQ(state(kc), KVS_FLOW_REBINDING);
}

// Body bytes that begin with "HTTP/" at the stream's end while no request waits (the response
// in progress is the one the client asked for) are not a new response.
TEST_P(BpfBoundary, BodyThatLooksLikeAHeadIsNoResync) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n";
    const auto n1 = static_cast<std::uint32_t>(head.size());
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    const auto before = h_->stats();
    expect_verdict(response(n1, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"), XDP_TX_,
                   KVS_R_TX_FWD_S2C);
    EXPECT_EQ(h_->stats()[KVS_R_RESP_RESYNC] - before[KVS_R_RESP_RESYNC], 0u);
    kvs_flow f{};
    ASSERT_TRUE(h_->get_flow(ks, &f));
    EXPECT_EQ(f.msgs, 1);
    EXPECT_EQ(f.resp_end, kBisn + 1 + n1 + 40);
}

// A segment ending like a last chunk inside a response that is still going (not past a
// complete response's end) leaves no hint.
TEST_P(BpfBoundary, LastChunkHintOnlyPastACompleteResponse) {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n";
    const auto n1 = static_cast<std::uint32_t>(head.size());
    expect_verdict(response(0, head), XDP_TX_, KVS_R_TX_FWD_S2C);
    // Body bytes that happen to end like a last chunk: inside the response, no hint.
    expect_verdict(response(n1, "abcdefghijklm\r\n0\r\n\r\n"), XDP_TX_, KVS_R_TX_FWD_S2C);
    kvs_flow b{};
    ASSERT_TRUE(h_->get_flow(ks, &b));
    EXPECT_EQ(b.chunk_end, 0u);
    EXPECT_EQ(b.resp, KVS_RESP_END);
    EXPECT_EQ(b.resp_end, kBisn + 1 + n1 + 20);
}

}  // namespace
