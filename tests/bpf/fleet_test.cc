// The XDP program in a fleet of appliances (BPF_PROG_TEST_RUN): a local miss sent on to the
// bucket's owner, then to its previous owners (second chance), the RST for an orphan, the
// decapsulation of frames from other appliances; and nothing of it with the fleet off.
#include <arpa/inet.h>
#include <bpf/bpf.h>

#include <cstring>
#include <ctime>
#include <string>

#include "fleet_frames.h"
#include "kvsteer/cookie.h"
#include "kvsteer/fleet.h"
#include "kvsteer/fleetpkt.h"
#include "kvsteer/flowpair.h"
#include "kvsteer/rewrite.h"
#include "prog_fixture.h"
#include "test_pairs.h"

using namespace kvstest;

namespace {

constexpr std::uint32_t XDP_DROP_ = 1, XDP_TX_ = 3;
constexpr std::uint8_t kSelf = 1;
constexpr std::uint8_t N = KVS_APPLIANCE_NONE;

class BpfFleet : public ProgSuite, public ::testing::WithParamInterface<bool> {
   protected:
    void SetUp() override {
        ProgSuite::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        v6_ = GetParam();
        cfg_ = prog_config();
        h_->set_config(cfg_);
        h_->clear_flows();
        // Members 0..3 up, we are 1; the table's active half is 1 (half 0 holds decoys).
        fleet_ = kvs_fleet{};
        fleet_.generation = 1;
        fleet_.self = kSelf;
        fleet_.owner_active = 1;
        for (std::uint8_t i = 0; i < 4; i++) {
            member_mac(i, fleet_.members[i].mac);
            fleet_.members[i].state = KVS_APP_UP;
        }
        set_fleet(fleet_);
    }
    void TearDown() override {
        if (h_) set_fleet(kvs_fleet{});  // the other suites run with the fleet off
    }

    void set_fleet(const kvs_fleet &f) {
        std::uint32_t zero = 0;
        EXPECT_EQ(bpf_map_update_elem(h_->loader().map_fd(KVS_MAP_FLEET), &zero, &f, BPF_ANY), 0);
    }

    // The client's bucket's entry in the active half (and a decoy owner 3 in the other).
    void set_owner(std::uint8_t owner, std::uint8_t p0 = N, std::uint8_t p1 = N,
                   std::uint8_t p2 = N) {
        kvs_owner_entry e{};
        e.owner = owner;
        e.prev[0] = p0;
        e.prev[1] = p1;
        e.prev[2] = p2;
        kvs_owner_entry decoy{};
        decoy.owner = 3;
        decoy.prev[0] = decoy.prev[1] = decoy.prev[2] = 3;
        std::uint32_t b = bucket(), act = fleet_.owner_active * KVS_OWNER_BUCKETS + b,
                      other = (1 - fleet_.owner_active) * KVS_OWNER_BUCKETS + b;
        int fd = h_->loader().map_fd(KVS_MAP_OWNER);
        EXPECT_EQ(bpf_map_update_elem(fd, &act, &e, BPF_ANY), 0);
        EXPECT_EQ(bpf_map_update_elem(fd, &other, &decoy, BPF_ANY), 0);
    }

    TcpSpec client_spec() const { return client_segment(v6_); }

    std::size_t tcp_off() const { return 14 + (v6_ ? 40 : 20); }

    std::uint32_t bucket() const {
        TcpSpec s = client_spec();
        kvs_flow_key k{};
        std::memcpy(k.saddr, s.saddr, 16);
        std::memcpy(k.daddr, s.daddr, 16);
        k.sport = htons(s.sport);
        k.dport = htons(s.dport);
        k.family = v6_ ? KVS_AF_INET6 : KVS_AF_INET;
        k.proto = KVS_IPPROTO_TCP;
        return kvs_fleet_bucket(&k);
    }

    // A segment of a connection this appliance does not have: data, acknowledging nothing a
    // cookie would validate.
    Bytes mid_stream(std::uint8_t flags = KVS_TCP_ACK | KVS_TCP_PSH, std::size_t payload = 100) {
        TcpSpec s = client_spec();
        s.flags = flags;
        s.seq = 0x5000;
        s.ack = 0x31337;
        s.opts = cat({opt_nop(2), opt_ts(123, 456)});
        s.payload = Bytes(payload, 'm');
        return build_tcp(s);
    }

    // A first-flight segment (the ACK of a valid cookie) with `payload` bytes and `flags`.
    Bytes first_flight(std::size_t payload = 300, std::uint8_t flags = KVS_TCP_ACK | KVS_TCP_PSH) {
        TcpSpec s = client_spec();
        s.flags = flags;
        s.seq = 1001;
        kvs_cookie_tuple t{};
        std::memcpy(t.saddr, s.saddr, 16);
        std::memcpy(t.daddr, s.daddr, 16);
        t.sport = htons(s.sport);
        t.dport = htons(s.dport);
        s.ack = kvs_cookie_make(cfg_.cookie_key[0], &t,
                                kvs_cookie_slot(kvs_cookie_now_tai_ns(), cfg_.cookie_period_s),
                                kvs_cookie_pack_opts(1460, 7, 1)) +
                1;
        s.payload = Bytes(payload, 'p');
        return build_tcp(s);
    }

    // `frame` as appliance `from` sends it to us at `hop`.
    static Bytes to_us(const Bytes &frame, std::uint8_t hop, std::uint8_t from) {
        std::uint8_t us[6], sender[6];
        member_mac(kSelf, us);
        member_mac(from, sender);
        return fleet_frame(frame, hop, from, us, sender);
    }

    // `frame` as we send it on to `to` at `hop`.
    static Bytes from_us(const Bytes &frame, std::uint8_t hop, std::uint8_t to) {
        std::uint8_t dst[6];
        member_mac(to, dst);
        return fleet_frame(frame, hop, kSelf, dst, kApplMac);
    }

    // The RST answering `frame` (a segment of client_spec()), laid out by the test builder.
    Bytes rst_for(const Bytes &frame) const {
        kvs_pkt p;
        Bytes b = frame;
        EXPECT_EQ(kvs_parse(b.data(), b.data() + b.size(), &p), KVS_PARSE_OK);
        TcpSpec c = client_spec(), s;
        s.v6 = v6_;
        std::memcpy(s.smac, kApplMac, 6);
        std::memcpy(s.dmac, &frame[6], 6);
        std::memcpy(s.saddr, c.daddr, 16);
        std::memcpy(s.daddr, c.saddr, 16);
        s.sport = c.dport;
        s.dport = c.sport;
        s.seq = kvs_ntohl(p.tcp->ack_seq);
        s.ack = kvs_ntohl(p.tcp->seq) + p.payload_len + ((p.tcp->flags & KVS_TCP_FIN) ? 1 : 0);
        s.flags = KVS_TCP_RST | KVS_TCP_ACK;
        s.win = 0;
        s.ip_id = 0;
        return build_tcp(s);
    }

    // Runs `in`, expects `verdict`, one count of `reason` and no other verdict reason; and a
    // decapsulation counted when `decap`.
    RunResult expect_verdict(const Bytes &in, std::uint32_t verdict, unsigned reason,
                             bool decap = false) {
        auto before = h_->stats();
        RunResult r = kvstest::expect_verdict(*h_, in, verdict, reason);
        auto after = h_->stats();
        EXPECT_EQ(after[KVS_R_FLEET_DECAP] - before[KVS_R_FLEET_DECAP], decap ? 1u : 0u)
            << stat_delta(before, after);
        return r;
    }

    kvs_config cfg_{};
    kvs_fleet fleet_{};
    bool v6_ = false;
};

TEST_P(BpfFleet, FleetOffIsASingleAppliance) {
    set_owner(2, 3);
    // A zeroed map (generation 0, self 0), self NONE, self not a member: each is "no fleet".
    kvs_fleet off[3] = {kvs_fleet{}, fleet_, fleet_};
    off[1].self = KVS_APPLIANCE_NONE;
    off[2].members[kSelf].state = KVS_APP_EMPTY;
    for (const kvs_fleet &f : off) {
        set_fleet(f);
        expect_verdict(mid_stream(), XDP_DROP_, KVS_R_DROP_BAD_COOKIE);
        expect_verdict(mid_stream(KVS_TCP_RST, 0), XDP_DROP_, KVS_R_DROP_RST_NO_FLOW);
        expect_verdict(first_flight(), XDP_DROP_, KVS_R_PUNT_NO_XSK);
        expect_verdict(to_us(mid_stream(), 1, 2), XDP_DROP_, KVS_R_FLEET_DROP_NOT_IN_FLEET);
    }
    // Generation 0 with everything else set is off too.
    kvs_fleet g0 = fleet_;
    g0.generation = 0;
    set_fleet(g0);
    expect_verdict(mid_stream(), XDP_DROP_, KVS_R_DROP_BAD_COOKIE);
}

TEST_P(BpfFleet, NonOwnerSendsTheMissToTheOwner) {
    set_owner(2, 0);
    for (const Bytes &in : {mid_stream(), first_flight(), mid_stream(KVS_TCP_ACK, 0),
                            mid_stream(KVS_TCP_RST | KVS_TCP_ACK, 0)}) {
        RunResult r = expect_verdict(in, XDP_TX_, KVS_R_FLEET_TO_OWNER);
        EXPECT_EQ(r.out, from_us(in, 1, 2)) << "got:\n" << hex(r.out);
        // Independent of the builder: MACs, EtherType, header, the IP packet unchanged.
        std::uint8_t m2[6];
        member_mac(2, m2);
        ASSERT_EQ(r.out.size(), in.size() + sizeof(kvs_fleet_hdr));
        EXPECT_EQ(0, std::memcmp(&r.out[0], m2, 6));
        EXPECT_EQ(0, std::memcmp(&r.out[6], kApplMac, 6));
        EXPECT_EQ(r.out[12], 0x88);
        EXPECT_EQ(r.out[13], 0xB5);
        EXPECT_EQ(r.out[14], 1);      // hop: to the owner
        EXPECT_EQ(r.out[15], kSelf);  // from
        EXPECT_EQ(0, std::memcmp(&r.out[16], kClientMac, 6));
        EXPECT_EQ(0, std::memcmp(&r.out[22], &in[12], 2));
        EXPECT_EQ(0, std::memcmp(&r.out[24], &in[14], in.size() - 14));
    }
}

TEST_P(BpfFleet, SynsAreAnsweredWhereTheyArrive) {
    set_owner(2, 0);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_SYN;
    s.seq = 0x12345678;
    s.opts = opt_linux({1460, 7, true, true, 99, 0});
    expect_verdict(build_tcp(s), XDP_TX_, KVS_R_TX_SYNACK);
}

TEST_P(BpfFleet, OwnerPuntsADecapsulatedFirstFlight) {
    set_owner(kSelf, 0);
    Bytes ff = first_flight();
    // No AF_XDP socket in test-run: the punt falls back to a counted drop (PUNT_NO_XSK).
    RunResult r = expect_verdict(to_us(ff, 1, 2), XDP_DROP_, KVS_R_PUNT_NO_XSK, true);
    EXPECT_EQ(r.out, ff);  // the frame as it reached the fleet, header restored
    // From the router straight to the owner: punted the same.
    r = expect_verdict(ff, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    // The handshake's ACK (valid cookie, nothing else) is dropped as on one appliance, never
    // answered with a RST.
    TcpSpec a = client_spec();
    a.flags = KVS_TCP_ACK;
    a.seq = 1001;
    std::memcpy(&a.ack, &ff[tcp_off() + 8], 4);
    a.ack = ntohl(a.ack);
    expect_verdict(to_us(build_tcp(a), 1, 2), XDP_DROP_, KVS_R_DROP_PURE_ACK, true);
}

TEST_P(BpfFleet, OwnerForwardsADecapsulatedSegmentOfItsFlow) {
    set_owner(kSelf);
    kvs_flowpair_params p = v6_ ? pair6_params() : pair4_params();
    kvs_flow_key kc, ks;
    kvs_flow fc, fs;
    kvs_flowpair_build(&p, &kc, &fc, &ks, &fs);
    h_->put_flow(kc, fc);
    h_->put_flow(ks, fs);
    TcpSpec s = client_spec();
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 5000;
    s.ack = p.cookie + 1 + 10;
    s.opts = cat({opt_nop(2), opt_ts(123456, p.synack_tsval + 3)});
    s.payload = Bytes(200, 'q');
    Bytes in = build_tcp(s);
    Bytes want = in;
    kvs_pkt pk;
    ASSERT_EQ(kvs_parse(want.data(), want.data() + want.size(), &pk), KVS_PARSE_OK);
    ASSERT_EQ(kvs_flow_rewrite(want.data() + want.size(), &pk, &fc), 0);
    RunResult r = expect_verdict(to_us(in, 2, 0), XDP_TX_, KVS_R_TX_FWD_C2S, true);
    EXPECT_EQ(r.out, want) << hex(r.out);
    EXPECT_EQ(check_checksums(r.out), "");
    EXPECT_EQ(0, std::memcmp(&r.out[0], kBackendMac, 6));
}

TEST_P(BpfFleet, OwnerMissGoesToThePreviousOwner) {
    set_owner(kSelf, 3, 2);
    Bytes in = mid_stream();
    // Sent to us by 0 (hop 1), or straight from the router: on to prev[0] = 3 with hop 2,
    // the router's MAC still the original source.
    RunResult r = expect_verdict(to_us(in, 1, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 2, 3)) << hex(r.out);
    EXPECT_EQ(0, std::memcmp(&r.out[16], kClientMac, 6));
    r = expect_verdict(in, XDP_TX_, KVS_R_FLEET_TO_PREV);
    EXPECT_EQ(r.out, from_us(in, 2, 3)) << hex(r.out);
    // prev[0] is who sent it to us: skipped, prev[1] = 2 gets hop 3.
    r = expect_verdict(to_us(in, 1, 3), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 3, 2)) << hex(r.out);
    // A client RST goes the same way (it must reach whoever has the flow).
    Bytes rst = mid_stream(KVS_TCP_RST | KVS_TCP_ACK, 0);
    r = expect_verdict(to_us(rst, 1, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(rst, 2, 3));
}

TEST_P(BpfFleet, PreviousOwnerMissGoesToTheNextOne) {
    set_owner(0, kSelf, 2);
    Bytes in = mid_stream();
    RunResult r = expect_verdict(to_us(in, 2, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 3, 2)) << hex(r.out);
    // Members that are gone are skipped: prev[1] empty, prev[2] = 3.
    set_owner(0, kSelf, 2, 3);
    kvs_fleet f = fleet_;
    f.members[2].state = KVS_APP_EMPTY;
    set_fleet(f);
    r = expect_verdict(to_us(in, 2, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 4, 3)) << hex(r.out);
    // A draining member still serves its flows.
    f.members[2].state = KVS_APP_DRAINING;
    set_fleet(f);
    r = expect_verdict(to_us(in, 2, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 3, 2)) << hex(r.out);
}

TEST_P(BpfFleet, LastMissAnswersTheClientWithRst) {
    set_owner(0, 2, kSelf);
    for (const Bytes &in :
         {mid_stream(), mid_stream(KVS_TCP_ACK | KVS_TCP_FIN, 0),
          mid_stream(KVS_TCP_ACK | KVS_TCP_FIN | KVS_TCP_PSH, 1400), mid_stream(KVS_TCP_ACK, 0)}) {
        RunResult r = expect_verdict(to_us(in, 3, 2), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
        Bytes want = rst_for(in);
        EXPECT_EQ(r.out, want) << "got:\n" << hex(r.out) << "\nwant:\n" << hex(want);
        EXPECT_EQ(check_checksums(r.out), "");
        const std::size_t th = tcp_off();
        ASSERT_EQ(r.out.size(), th + 20);
        EXPECT_EQ(r.out[th + 13], KVS_TCP_RST | KVS_TCP_ACK);
        EXPECT_EQ(0, std::memcmp(&r.out[0], kClientMac, 6));  // back to the router
        EXPECT_EQ(0, std::memcmp(&r.out[6], kApplMac, 6));
    }
    // The owner with no previous owner: its own miss is the last.
    set_owner(kSelf);
    Bytes in = mid_stream();
    RunResult r = expect_verdict(to_us(in, 1, 2), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
    EXPECT_EQ(r.out, rst_for(in));
    r = expect_verdict(in, XDP_TX_, KVS_R_FLEET_RST_ORPHAN);
    EXPECT_EQ(r.out, rst_for(in));
}

// Two appliances a few milliseconds apart in applying a new epoch (a drain's), with table tags
// that match (4 bits: one change in 16; the fixture's tags are always equal): the sender's hop
// claims a role our own table does not give us. Our chase would walk our own previous owners and
// could skip the one holding the flow: never answered with a RST, only dropped (the client's
// next segment comes once the tables agree). The doubt goes on with a frame sent further.
// Before, a CI run reset two live streams this way (fleet_rst_orphan at the drain's epoch).
TEST_P(BpfFleet, AChaseWhoseRoleOurTableDeniesIsNeverAnswered) {
    // Hop 1 says we own the bucket; our (older) table: owner 2, prev [us].
    set_owner(2, kSelf);
    for (const Bytes &in : {mid_stream(KVS_TCP_ACK, 0), mid_stream()})
        expect_verdict(to_us(in, 1, 0), XDP_DROP_, KVS_R_FLEET_DROP_ORPHAN_UNSURE, true);
    // Hop 2 says we are prev[0]; our table: prev [2, us].
    set_owner(0, 2, kSelf);
    expect_verdict(to_us(mid_stream(), 2, 3), XDP_DROP_, KVS_R_FLEET_DROP_ORPHAN_UNSURE, true);
    // Unsure with someone left to ask: sent on, marked unsure; the last one drops it.
    set_owner(2, 3);
    Bytes in = mid_stream();
    RunResult r = expect_verdict(to_us(in, 1, 0), XDP_TX_, KVS_R_FLEET_TO_PREV, true);
    EXPECT_EQ(r.out, from_us(in, 2 | KVS_FLEET_HOP_UNSURE, 3)) << hex(r.out);
    set_owner(0, 2, kSelf);
    expect_verdict(to_us(in, 3 | KVS_FLEET_HOP_UNSURE, 2), XDP_DROP_,
                   KVS_R_FLEET_DROP_ORPHAN_UNSURE, true);
    // The same frame without the mark, roles agreeing: answered (LastMissAnswersTheClientWithRst).
    r = expect_verdict(to_us(in, 3, 2), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
    EXPECT_EQ(r.out, rst_for(in));
    // A tag that differs from ours is unsure too, as before.
    expect_verdict(to_us(in, 0x50 | 3, 2), XDP_DROP_, KVS_R_FLEET_DROP_ORPHAN_UNSURE, true);
}

TEST_P(BpfFleet, ClientRstIsNeverAnswered) {
    set_owner(0, 2, kSelf);
    expect_verdict(to_us(mid_stream(KVS_TCP_RST | KVS_TCP_ACK, 0), 3, 2), XDP_DROP_,
                   KVS_R_FLEET_DROP_RST_ORPHAN, true);
    set_owner(kSelf);
    expect_verdict(mid_stream(KVS_TCP_RST | KVS_TCP_ACK, 0), XDP_DROP_,
                   KVS_R_FLEET_DROP_RST_ORPHAN);
    // Without ACK no cookie can be checked: dropped as on a single appliance.
    expect_verdict(mid_stream(KVS_TCP_RST, 0), XDP_DROP_, KVS_R_DROP_RST_NO_FLOW);
}

// A client RST|ACK acknowledging a valid cookie, missed by the owner: with previous owners left it
// goes to them first (they hold the flows bound before the last change); with none, to the
// owner's own dataplane, which may be binding the flow (no entry yet) and ends the binding, as
// on a single appliance. Before, it was chased and, with nobody left, dropped: the binding of a
// client that had given up went on.
TEST_P(BpfFleet, OwnersClientRstWithAValidCookieGoesToItsDataplane) {
    const Bytes rst = first_flight(0, KVS_TCP_RST | KVS_TCP_ACK);
    set_owner(kSelf);
    // No AF_XDP socket in test-run: the hand-over shows as PUNT_NO_XSK.
    expect_verdict(rst, XDP_DROP_, KVS_R_PUNT_NO_XSK);
    expect_verdict(to_us(rst, 1, 2), XDP_DROP_, KVS_R_PUNT_NO_XSK, true);
    set_owner(kSelf, 3);
    RunResult r = expect_verdict(rst, XDP_TX_, KVS_R_FLEET_TO_PREV);
    EXPECT_EQ(r.out, from_us(rst, 2, 3)) << hex(r.out);
    // At the previous owner, with nobody after it: never answered.
    set_owner(2, kSelf);
    expect_verdict(to_us(rst, 2, 2), XDP_DROP_, KVS_R_FLEET_DROP_RST_ORPHAN, true);
}

TEST_P(BpfFleet, BadHeadersAreDropped) {
    set_owner(kSelf, 2);
    Bytes in = mid_stream();
    auto bad = [&](Bytes f, const char *what) {
        SCOPED_TRACE(what);
        expect_verdict(f, XDP_DROP_, KVS_R_FLEET_DROP_BAD_HEADER);
    };
    bad(to_us(in, 0x10, 2), "hop 0 with a table tag (hop 0 alone is a ping)");
    bad(to_us(in, 2 + KVS_OWNER_PREV, 2), "hop past the last previous owner");
    bad(to_us(in, 1, kSelf), "from ourselves");
    bad(to_us(in, 1, 7), "from a non-member");
    bad(to_us(in, 1, KVS_APPLIANCE_NONE), "from nobody");
    Bytes arp = to_us(in, 1, 2);
    arp[22] = 0x08;
    arp[23] = 0x06;
    bad(arp, "not IP inside");
    Bytes shortf = to_us(in, 1, 2);
    shortf.resize(14 + 10 + 19);
    bad(shortf, "no room for an IP header");
}

TEST_P(BpfFleet, NothingIsSentOnTwice) {
    // We are prev[0] (hop 2); prev[1] is the sender and prev[2] us again: nobody left.
    set_owner(0, kSelf, 2, kSelf);
    Bytes in = mid_stream();
    RunResult r = expect_verdict(to_us(in, 2, 2), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
    EXPECT_EQ(r.out, rst_for(in));
    // The last hop never goes further, whatever the table says.
    set_owner(0, 2, 3, kSelf);
    r = expect_verdict(to_us(in, 1 + KVS_OWNER_PREV, 3), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
    EXPECT_EQ(r.out, rst_for(in));
    // A hop-2 frame to us is never sent back to an earlier step (the owner or prev[0]).
    set_owner(2, 3, kSelf);
    r = expect_verdict(to_us(in, 3, 3), XDP_TX_, KVS_R_FLEET_RST_ORPHAN, true);
    EXPECT_EQ(r.out, rst_for(in));
}

TEST_P(BpfFleet, TaggedFramesStayLocal) {
    set_owner(2, 0);
    TcpSpec s = client_spec();
    s.vlan = true;
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
    s.seq = 0x5000;
    s.ack = 0x31337;
    s.payload = Bytes(10, 'v');
    auto before = h_->stats();
    expect_verdict(build_tcp(s), XDP_DROP_, KVS_R_DROP_BAD_COOKIE);
    auto after = h_->stats();
    EXPECT_EQ(after[KVS_R_FLEET_VLAN_LOCAL] - before[KVS_R_FLEET_VLAN_LOCAL], 1u);
}

// A ping (struct kvs_fleet_ping), laid out here independently of fleetpkt.h: Ethernet to `to`
// from `from`'s MAC, 0x88B5, hop byte, sender id, 8 bytes of sequence number, the sender's
// heard set (2 bytes, little-endian), zero padding.
Bytes ping_frame(std::uint8_t hop, std::uint8_t from, std::uint8_t to, std::uint64_t seq,
                 std::uint16_t heard = 0) {
    Bytes b(60, 0);
    member_mac(to, &b[0]);
    member_mac(from, &b[6]);
    b[12] = 0x88;
    b[13] = 0xB5;
    b[14] = hop;
    b[15] = from;
    std::memcpy(&b[16], &seq, 8);
    b[24] = static_cast<std::uint8_t>(heard & 0xff);
    b[25] = static_cast<std::uint8_t>(heard >> 8);
    return b;
}

TEST(FleetPing, WriterLaysOutThePing) {
    std::uint8_t to[6], ours[6];
    member_mac(3, to);
    member_mac(kSelf, ours);
    Bytes b(KVS_FLEET_PING_LEN, 0xee);
    EXPECT_EQ(kvs_fleet_ping_write(b.data(), to, ours, kSelf, 0x0102030405060708ull),
              KVS_FLEET_PING_LEN);
    EXPECT_EQ(b, ping_frame(KVS_FLEET_HOP_PING, kSelf, 3, 0x0102030405060708ull));
}

// A pong carries the answerer's heard set (kvs_fleet.heard: whom its pinger hears) while it is
// valid (heard_until_ns), and the pinger's XDP program stores it in one word with the sequence
// number it answers: how the others learn that a member silent to them alone is alive
// (fleet_ping.h corroborated_silence).
TEST_P(BpfFleet, PongsCarryTheAnswerersHeardSet) {
    const int heard_fd = h_->loader().map_fd(KVS_MAP_FLEET_HEARD);
    ASSERT_GE(heard_fd, 0);
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const std::uint64_t now_ns = std::uint64_t(now.tv_sec) * 1000000000ull + now.tv_nsec;
    kvs_fleet f = fleet_;
    f.heard = 0x8005;  // ids 0, 2 and 15
    f.heard_until_ns = now_ns + 60ull * 1000000000ull;
    set_fleet(f);
    RunResult r = expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 41), XDP_TX_,
                                 KVS_R_FLEET_PING_ANSWERED);
    EXPECT_EQ(r.out, ping_frame(KVS_FLEET_HOP_PONG, kSelf, 2, 41, 0x8005)) << "got:\n"
                                                                           << hex(r.out);
    // Past its validity (a pinger that stopped): the pong vouches for nobody.
    f.heard_until_ns = now_ns - 1;
    set_fleet(f);
    r = expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 41), XDP_TX_,
                       KVS_R_FLEET_PING_ANSWERED);
    EXPECT_EQ(r.out, ping_frame(KVS_FLEET_HOP_PONG, kSelf, 2, 41, 0)) << "got:\n" << hex(r.out);
    set_fleet(fleet_);
    std::uint32_t k = KVS_FLEET_HEARD_SAYS(3);
    std::uint64_t v = 0xdead;
    EXPECT_EQ(bpf_map_update_elem(heard_fd, &k, &v, BPF_ANY), 0);
    expect_verdict(ping_frame(KVS_FLEET_HOP_PONG, 3, kSelf, 0x1122334455ull, 0x4002), XDP_DROP_,
                   KVS_R_FLEET_PONG_HEARD);
    ASSERT_EQ(bpf_map_lookup_elem(heard_fd, &k, &v), 0);
    EXPECT_EQ(v, (0x22334455ull << 32) | 0x4002u) << "the sequence number's low half with it";
    k = 3;
    ASSERT_EQ(bpf_map_lookup_elem(heard_fd, &k, &v), 0);
    EXPECT_EQ(v, 0x1122334455ull);
}

TEST_P(BpfFleet, PingsAreAnsweredInPlaceAndPongsRecorded) {
    const int heard_fd = h_->loader().map_fd(KVS_MAP_FLEET_HEARD);
    ASSERT_GE(heard_fd, 0);
    // A ping from member 2: the same frame back, to 2 from us, hop PONG, from us, seq unchanged.
    RunResult r = expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 0xabcdef0123ull), XDP_TX_,
                                 KVS_R_FLEET_PING_ANSWERED);
    Bytes want = ping_frame(KVS_FLEET_HOP_PONG, kSelf, 2, 0xabcdef0123ull);
    EXPECT_EQ(r.out, want) << "got:\n" << hex(r.out);
    // A member that owns nothing (no state, MAC known) is answered too: it must hear us.
    kvs_fleet f = fleet_;
    f.members[2].state = KVS_APP_EMPTY;
    set_fleet(f);
    expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 7), XDP_TX_, KVS_R_FLEET_PING_ANSWERED);
    // A pong from member 3: its sequence number stored, the frame dropped.
    std::uint32_t k = 3;
    std::uint64_t v = 0;
    EXPECT_EQ(bpf_map_update_elem(heard_fd, &k, &v, BPF_ANY), 0);
    expect_verdict(ping_frame(KVS_FLEET_HOP_PONG, 3, kSelf, 0x77665544ull), XDP_DROP_,
                   KVS_R_FLEET_PONG_HEARD);
    ASSERT_EQ(bpf_map_lookup_elem(heard_fd, &k, &v), 0);
    EXPECT_EQ(v, 0x77665544ull);
    // Pongs of the silent member 2 are heard too (it comes back when it answers).
    expect_verdict(ping_frame(KVS_FLEET_HOP_PONG, 2, kSelf, 9), XDP_DROP_, KVS_R_FLEET_PONG_HEARD);
    k = 2;
    ASSERT_EQ(bpf_map_lookup_elem(heard_fd, &k, &v), 0);
    EXPECT_EQ(v, 9u);
    set_fleet(fleet_);

    auto bad = [&](Bytes in, const char *what) {
        SCOPED_TRACE(what);
        expect_verdict(in, XDP_DROP_, KVS_R_FLEET_DROP_BAD_PING);
    };
    bad(ping_frame(KVS_FLEET_HOP_PING, kSelf, kSelf, 1), "from ourselves");
    bad(ping_frame(KVS_FLEET_HOP_PING, 9, kSelf, 1), "from an appliance with no MAC here");
    Bytes spoofed = ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 1);
    member_mac(3, &spoofed[6]);
    bad(spoofed, "source MAC not the sender's");
    bad(ping_frame(KVS_FLEET_HOP_PING, 2, 3, 1), "to another appliance's MAC");
    Bytes pong = ping_frame(KVS_FLEET_HOP_PONG, 3, kSelf, 1);
    member_mac(2, &pong[6]);
    bad(pong, "pong with a source MAC not the sender's");
    bad(ping_frame(KVS_FLEET_HOP_PONG, 3, 2, 1), "pong to another appliance's MAC");
    k = 3;
    ASSERT_EQ(bpf_map_lookup_elem(heard_fd, &k, &v), 0);
    EXPECT_EQ(v, 0x77665544ull) << "a refused pong must not be recorded";
    // Too short for the header: not a ping; the decapsulation refuses it.
    Bytes shortp = ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 1);
    shortp.resize(14 + 5);
    expect_verdict(shortp, XDP_DROP_, KVS_R_FLEET_DROP_BAD_HEADER);
    // Not yet in any epoch (a joiner before its push: no fleet for the data path), but the fleet
    // is written with our MAC: answered.
    kvs_fleet joiner = fleet_;
    joiner.members[kSelf].state = KVS_APP_EMPTY;
    set_fleet(joiner);
    expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 1), XDP_TX_, KVS_R_FLEET_PING_ANSWERED);
    // Our own MAC unknown: refused.
    joiner.members[kSelf] = kvs_appliance{};
    set_fleet(joiner);
    expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 1), XDP_DROP_,
                   KVS_R_FLEET_DROP_BAD_PING);
    // Fleet never written (generation 0): not answered.
    set_fleet(kvs_fleet{});
    expect_verdict(ping_frame(KVS_FLEET_HOP_PING, 2, kSelf, 1), XDP_DROP_,
                   KVS_R_FLEET_DROP_NOT_IN_FLEET);
}

INSTANTIATE_TEST_SUITE_P(Family, BpfFleet, ::testing::Values(false, true),
                         [](const auto &i) { return i.param ? "ipv6" : "ipv4"; });

}  // namespace
