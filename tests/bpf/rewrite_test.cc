// kvs_flow_rewrite on thousands of random packets, checked field by field and against a full
// checksum recomputation; incremental checksum primitives; the flow-pair builder.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <random>

#include "kvsteer/csum.h"
#include "kvsteer/flowpair.h"
#include "kvsteer/rewrite.h"
#include "pktgen.h"

using namespace kvstest;

namespace {

std::uint32_t rd32(const std::uint8_t *p) {
    return (std::uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}
std::uint16_t rd16(const std::uint8_t *p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

TEST(BpfCsum, ReplaceMatchesRecompute) {
    std::mt19937 rng(3);
    for (int i = 0; i < 20000; i++) {
        std::uint8_t buf[40];
        for (auto &x : buf) x = static_cast<std::uint8_t>(rng());
        buf[10] = buf[11] = 0;
        std::uint16_t c = kvs_csum_finish(kvs_csum_partial(buf, sizeof buf, 0));
        std::memcpy(buf + 10, &c, 2);
        // Change a random aligned 32-bit word (not the checksum) and a 16-bit word.
        static const int kOffs[] = {0, 4, 12, 16, 20, 24, 28, 32, 36};
        int w = kOffs[rng() % 9];
        std::uint32_t old32, new32 = static_cast<std::uint32_t>(rng());
        std::memcpy(&old32, buf + w, 4);
        std::memcpy(buf + w, &new32, 4);
        c = kvs_csum_replace32(c, old32, new32);
        std::memcpy(buf + 10, &c, 2);
        ASSERT_EQ(kvs_csum_fold(kvs_csum_partial(buf, sizeof buf, 0)), 0xffff) << i;
        std::uint16_t old16, new16 = static_cast<std::uint16_t>(rng());
        std::memcpy(&old16, buf + 2, 2);
        std::memcpy(buf + 2, &new16, 2);
        c = kvs_csum_replace16(c, old16, new16);
        std::memcpy(buf + 10, &c, 2);
        ASSERT_EQ(kvs_csum_fold(kvs_csum_partial(buf, sizeof buf, 0)), 0xffff) << i;
    }
}

struct RandFlow {
    TcpSpec spec;
    kvs_flow f{};
};

RandFlow random_case(std::mt19937 &rng) {
    RandFlow r;
    TcpSpec &s = r.spec;
    s.v6 = rng() % 4 == 0;
    s.vlan = rng() % 5 == 0;
    for (int i = 0; i < (s.v6 ? 4 : 1); i++) {
        s.saddr[i] = static_cast<std::uint32_t>(rng());
        s.daddr[i] = static_cast<std::uint32_t>(rng());
        r.f.new_saddr[i] = static_cast<std::uint32_t>(rng());
        r.f.new_daddr[i] = static_cast<std::uint32_t>(rng());
    }
    s.sport = static_cast<std::uint16_t>(rng());
    s.dport = static_cast<std::uint16_t>(rng());
    s.seq = static_cast<std::uint32_t>(rng());
    s.ack = static_cast<std::uint32_t>(rng());
    s.flags =
        static_cast<std::uint8_t>(0x10 | (rng() % 2 ? 0x08 : 0) | (rng() % 10 == 0 ? 0x01 : 0));
    s.win = static_cast<std::uint16_t>(rng());
    if (!s.v6 && rng() % 6 == 0) s.ip_opt_words = static_cast<std::uint8_t>(rng() % 4);
    // Random option list within 40 bytes.
    Bytes o;
    bool ts = rng() % 3 != 0;
    int nsack = static_cast<int>(rng() % 5);
    if (rng() % 2) {
        if (ts)
            o = cat({o, opt_nop(2),
                     opt_ts(static_cast<std::uint32_t>(rng()), static_cast<std::uint32_t>(rng()))});
        if (nsack && o.size() + 4 + 8 * nsack <= 40) {
            std::vector<std::pair<std::uint32_t, std::uint32_t>> bl;
            for (int i = 0; i < nsack; i++)
                bl.push_back(
                    {static_cast<std::uint32_t>(rng()), static_cast<std::uint32_t>(rng())});
            o = cat({o, opt_nop(2), opt_sack(bl)});
        }
    } else {
        // Unusual order and padding: SACK first, unknown option, TS last.
        if (nsack && 2 + 8 * nsack + 4 <= 40) {
            std::vector<std::pair<std::uint32_t, std::uint32_t>> bl;
            for (int i = 0; i < nsack; i++)
                bl.push_back(
                    {static_cast<std::uint32_t>(rng()), static_cast<std::uint32_t>(rng())});
            o = cat({o, opt_sack(bl)});
        }
        if (o.size() + 4 <= 40 && rng() % 2) o = cat({o, Bytes{30, 4, 0xab, 0xcd}});
        if (ts && o.size() + 11 <= 40)
            o = cat({o, opt_nop(rng() % 2),
                     opt_ts(static_cast<std::uint32_t>(rng()), static_cast<std::uint32_t>(rng()))});
    }
    s.opts = o;
    s.payload.resize(rng() % 300);
    for (auto &x : s.payload) x = static_cast<std::uint8_t>(rng());
    if (rng() % 4 == 0) s.pad_to = s.payload.size() + 100;  // trailing Ethernet padding

    kvs_flow &f = r.f;
    f.new_sport = static_cast<std::uint16_t>(rng());
    f.new_dport = static_cast<std::uint16_t>(rng());
    for (int i = 0; i < 6; i++) {
        f.new_smac[i] = static_cast<std::uint8_t>(rng());
        f.new_dmac[i] = static_cast<std::uint8_t>(rng());
    }
    f.seq_delta = rng() % 3 ? static_cast<std::uint32_t>(rng()) : 0;
    f.ack_delta = rng() % 3 ? static_cast<std::uint32_t>(rng()) : 0;
    f.tsval_delta = static_cast<std::uint32_t>(rng());
    f.tsecr_delta = static_cast<std::uint32_t>(rng());
    f.win_shl = static_cast<std::uint8_t>(rng() % 3 ? rng() % 15 : 0);
    f.win_shr = static_cast<std::uint8_t>(rng() % 3 ? rng() % 15 : 0);
    return r;
}

TEST(BpfRewrite, RandomPacketsMatchFullRecompute) {
    std::mt19937 rng(2024);
    int with_sack = 0, with_ts = 0;
    for (int iter = 0; iter < 5000; iter++) {
        RandFlow rc = random_case(rng);
        Bytes in = build_tcp(rc.spec);
        Bytes out = in;
        kvs_pkt p;
        ASSERT_EQ(kvs_parse(out.data(), out.data() + out.size(), &p), KVS_PARSE_OK) << hex(in);
        const std::size_t l2 = rc.spec.vlan ? 18 : 14;
        const std::size_t th = p.l4_off;
        const kvs_tcp_opts opts = p.opts;
        ASSERT_EQ(kvs_flow_rewrite(out.data() + out.size(), &p, &rc.f), 0);
        ASSERT_EQ(out.size(), in.size());
        ASSERT_EQ(check_checksums(out), "") << "iter " << iter << "\n" << hex(out);

        const kvs_flow &f = rc.f;
        EXPECT_EQ(0, std::memcmp(&out[0], f.new_dmac, 6));
        EXPECT_EQ(0, std::memcmp(&out[6], f.new_smac, 6));
        EXPECT_EQ(0, std::memcmp(&out[12], &in[12], l2 - 12));  // ethertype / VLAN kept
        if (rc.spec.v6) {
            EXPECT_EQ(0, std::memcmp(&out[l2 + 8], f.new_saddr, 16));
            EXPECT_EQ(0, std::memcmp(&out[l2 + 24], f.new_daddr, 16));
        } else {
            EXPECT_EQ(0, std::memcmp(&out[l2 + 12], &f.new_saddr[0], 4));
            EXPECT_EQ(0, std::memcmp(&out[l2 + 16], &f.new_daddr[0], 4));
            EXPECT_EQ(out[l2 + 8], in[l2 + 8]);  // TTL untouched
        }
        EXPECT_EQ(0, std::memcmp(&out[th], &f.new_sport, 2));
        EXPECT_EQ(0, std::memcmp(&out[th + 2], &f.new_dport, 2));
        EXPECT_EQ(rd32(&out[th + 4]), rc.spec.seq + f.seq_delta);
        EXPECT_EQ(rd32(&out[th + 8]), rc.spec.ack + f.ack_delta);
        std::uint64_t w = (std::uint64_t(rc.spec.win) << f.win_shl) >> f.win_shr;
        if (w == 0 && rc.spec.win) w = 1;  // an open window stays open
        EXPECT_EQ(rd16(&out[th + 14]), w > 0xffff ? 0xffff : w);
        if (opts.ts_off) {
            with_ts++;
            EXPECT_EQ(rd32(&out[th + opts.ts_off]), rd32(&in[th + opts.ts_off]) + f.tsval_delta);
            EXPECT_EQ(rd32(&out[th + opts.ts_off + 4]),
                      rd32(&in[th + opts.ts_off + 4]) + f.tsecr_delta);
        }
        for (int b = 0; b < opts.sack_n; b++) {
            with_sack++;
            std::size_t o = th + opts.sack_off + 8 * b;
            EXPECT_EQ(rd32(&out[o]), rd32(&in[o]) + f.ack_delta);
            EXPECT_EQ(rd32(&out[o + 4]), rd32(&in[o + 4]) + f.ack_delta);
        }
        // Payload and padding untouched.
        std::size_t pay = th + p.tcp_hlen;
        EXPECT_EQ(0, std::memcmp(&out[pay], &in[pay], in.size() - pay));
        if (HasFailure()) {
            ADD_FAILURE() << "iter " << iter << " in:\n" << hex(in) << "\nout:\n" << hex(out);
            return;
        }
    }
    EXPECT_GT(with_sack, 1000);
    EXPECT_GT(with_ts, 1000);
}

TEST(BpfRewrite, WindowSaturates) {
    EXPECT_EQ(kvs_window_xlate(1000, 7, 0), 0xffff);
    EXPECT_EQ(kvs_window_xlate(1000, 2, 0), 4000);
    EXPECT_EQ(kvs_window_xlate(1000, 0, 3), 125);
    EXPECT_EQ(kvs_window_xlate(0xffff, 14, 14), 0xffff);
    // An open window stays open; a closed one stays closed.
    EXPECT_EQ(kvs_window_xlate(100, 0, 7), 1);
    EXPECT_EQ(kvs_window_xlate(1, 0, 14), 1);
    EXPECT_EQ(kvs_window_xlate(0, 0, 7), 0);
    EXPECT_EQ(kvs_window_xlate(0, 3, 0), 0);
}

TEST(BpfFlowPair, KeysAndDeltasAreConsistent) {
    kvs_flowpair_params p{};
    p.client_addr[0] = kvstest::ip4("10.1.0.2");
    p.vip_addr[0] = kvstest::ip4("10.9.0.1");
    p.snat_addr[0] = kvstest::ip4("10.2.0.1");
    p.backend_addr[0] = kvstest::ip4("10.2.0.7");
    p.client_port = htons(40001);
    p.vip_port = htons(80);
    p.snat_port = htons(20001);
    p.backend_port = htons(8000);
    p.family = KVS_AF_INET;
    p.client_wscale = 7;
    p.synack_wscale = 7;
    p.backend_wscale = 9;
    p.ts = 1;
    p.cookie = 0xc0000000;
    p.backend_isn = 0x10;
    p.synack_tsval = 5000;
    p.backend_tsval = 100;
    p.backend_id = 3;
    kvs_flow_key kc, ks, rk;
    kvs_flow fc, fs;
    kvs_flowpair_build(&p, &kc, &fc, &ks, &fs);
    // Each entry's reverse key is the other entry's key.
    kvs_flow_reverse_key(&kc, &fc, &rk);
    EXPECT_EQ(0, std::memcmp(&rk, &ks, sizeof rk));
    kvs_flow_reverse_key(&ks, &fs, &rk);
    EXPECT_EQ(0, std::memcmp(&rk, &kc, sizeof rk));
    // Client acks cookie+1+n; the backend expects backend_isn+1+n.
    EXPECT_EQ(p.cookie + 1 + 500 + fc.ack_delta, p.backend_isn + 1 + 500);
    EXPECT_EQ(p.backend_isn + 1 + 500 + fs.seq_delta, p.cookie + 1 + 500);
    EXPECT_EQ(fc.seq_delta, 0u);
    EXPECT_EQ(fs.ack_delta, 0u);
    EXPECT_EQ(p.synack_tsval + fc.tsecr_delta, p.backend_tsval);
    EXPECT_EQ(p.backend_tsval + fs.tsval_delta, p.synack_tsval);
    EXPECT_EQ(fs.win_shl, 2);
    EXPECT_EQ(fs.win_shr, 0);
    EXPECT_EQ(fc.dir, KVS_DIR_C2S);
    EXPECT_EQ(fs.dir, KVS_DIR_S2C);
    EXPECT_EQ(fs.backend_id, 3);
}

// Window scaling: the client applies our SYN-ACK's scale to every backend window, and a backend
// that did not agree to WS reads the client's windows unscaled.
TEST(BpfFlowPair, WindowScaleTranslation) {
    struct Case {
        std::uint8_t client, synack, backend;
        std::uint8_t s2c_shl, s2c_shr, c2s_shl;
    };
    const Case cases[] = {
        {7, 7, 9, 2, 0, 0},                              // backend scales more than we said
        {7, 7, 5, 0, 2, 0},                              // less
        {7, 7, 7, 0, 0, 0},                              // the same
        {7, 7, KVS_WSCALE_NONE, 0, 7, 7},                // backend without WS
        {KVS_WSCALE_NONE, 7, KVS_WSCALE_NONE, 0, 0, 0},  // no WS anywhere
    };
    for (const Case &c : cases) {
        kvs_flowpair_params p{};
        p.family = KVS_AF_INET;
        p.client_wscale = c.client;
        p.synack_wscale = c.synack;
        p.backend_wscale = c.backend;
        kvs_flow_key kc, ks;
        kvs_flow fc, fs;
        kvs_flowpair_build(&p, &kc, &fc, &ks, &fs);
        SCOPED_TRACE(testing::Message()
                     << "client " << int(c.client) << " backend " << int(c.backend));
        EXPECT_EQ(fs.win_shl, c.s2c_shl);
        EXPECT_EQ(fs.win_shr, c.s2c_shr);
        EXPECT_EQ(fc.win_shl, c.c2s_shl);
        EXPECT_EQ(fc.win_shr, 0);
    }
}

}  // namespace
