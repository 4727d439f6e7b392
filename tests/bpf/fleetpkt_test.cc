// The fleet's frame code in userspace (kvsteer/fleetpkt.h): who is asked next, encapsulation and
// decapsulation against an independent layout, and the orphan's RST against the test builder.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>

#include "fleet_frames.h"
#include "kvsteer/fleetpkt.h"
#include "pktgen.h"
#include "test_pairs.h"

using namespace kvstest;

namespace {

constexpr std::uint8_t N = KVS_APPLIANCE_NONE;
const std::uint8_t *const kUs = kApplMac;
const std::uint8_t *const kRouter = kClientMac;  // the router, as the fleet sees it

kvs_fleet fleet_of(std::uint8_t self, unsigned n_up) {
    kvs_fleet f{};
    f.generation = 1;
    f.self = self;
    for (std::uint8_t i = 0; i < n_up; i++) {
        member_mac(i, f.members[i].mac);
        f.members[i].state = KVS_APP_UP;
    }
    return f;
}

kvs_owner_entry entry(std::uint8_t owner, std::uint8_t p0, std::uint8_t p1, std::uint8_t p2) {
    kvs_owner_entry e{};
    e.owner = owner;
    e.prev[0] = p0;
    e.prev[1] = p1;
    e.prev[2] = p2;
    return e;
}

TcpSpec client(bool v6) {
    TcpSpec s = client_segment(v6);
    s.seq = 0xfffffff0;  // the ack wraps
    s.ack = 0x31337;
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    s.opts = cat({opt_nop(2), opt_ts(1, 2)});
    s.payload = Bytes(40, 'x');
    return s;
}

TEST(FleetPkt, OnlyAWrittenFleetWithUsAsAMemberIsOn) {
    kvs_fleet f = fleet_of(1, 3);
    EXPECT_TRUE(kvs_fleet_on(&f));
    EXPECT_FALSE(kvs_fleet_on(nullptr));
    kvs_fleet zero{};
    EXPECT_FALSE(kvs_fleet_on(&zero));  // self 0 in a zeroed map is no fleet
    kvs_fleet g = f;
    g.generation = 0;
    EXPECT_FALSE(kvs_fleet_on(&g));
    g = f;
    g.self = N;
    EXPECT_FALSE(kvs_fleet_on(&g));
    g.self = 5;  // not a member
    EXPECT_FALSE(kvs_fleet_on(&g));
    f.owner_active = 1;
    EXPECT_EQ(kvs_fleet_owner_index(&f, 7), KVS_OWNER_BUCKETS + 7);
}

TEST(FleetPkt, RemoteOwnerOnlyWhenAnotherMember) {
    kvs_fleet f = fleet_of(1, 3);
    kvs_owner_entry e = entry(2, N, N, N);
    EXPECT_EQ(kvs_fleet_remote_owner(&f, &e), 2u);
    e.owner = 1;
    EXPECT_EQ(kvs_fleet_remote_owner(&f, &e), N);
    e.owner = N;
    EXPECT_EQ(kvs_fleet_remote_owner(&f, &e), N);
    e.owner = 4;  // not a member: we act as the owner
    EXPECT_EQ(kvs_fleet_remote_owner(&f, &e), N);
}

TEST(FleetPkt, NextPreviousOwner) {
    kvs_fleet f = fleet_of(1, 4);
    kvs_owner_entry e = entry(1, 3, 2, 0);
    // The owner (us) missed: prev[0], whether the frame came from the router or from 0.
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_ROUTER), KVS_FLEET_AT(2, 3));
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(1, 0)), KVS_FLEET_AT(2, 3));
    // The sender is skipped (it missed already).
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(1, 3)), KVS_FLEET_AT(3, 2));
    // As prev[i], only prev[j > i].
    e = entry(0, 1, 2, 3);
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(2, 0)), KVS_FLEET_AT(3, 2));
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(3, 1)), KVS_FLEET_AT(4, 3));
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(4, 2)), 0u);
    // Ourselves, the sender, non-members: skipped; NONE ends the list.
    e = entry(0, 1, 1, 2);
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(2, 2)), 0u);
    e = entry(0, 7, N, 2);
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_AT(1, 0)), 0u);
    f.members[3].state = KVS_APP_DRAINING;
    e = entry(1, 3, N, N);
    EXPECT_EQ(kvs_fleet_next_prev(&f, &e, KVS_FLEET_ROUTER), KVS_FLEET_AT(2, 3));
}

TEST(FleetPkt, EncapsulationAndBackByteForByte) {
    kvs_fleet f = fleet_of(1, 4);
    for (bool v6 : {false, true}) {
        Bytes in = build_tcp(client(v6));
        // Encapsulate like XDP: 10 bytes of headroom in front, then the frame.
        Bytes buf = in;
        buf.insert(buf.begin(), 10, 0xEE);
        std::uint8_t to[6], mac1[6];
        member_mac(2, to);
        member_mac(1, mac1);  // appliance 1's own MAC
        ASSERT_EQ(kvs_fleet_encap(buf.data(), buf.data() + buf.size(), to, mac1, 3, 1), 0);
        EXPECT_EQ(buf, fleet_frame(in, 3, 1, to, mac1)) << hex(buf);

        // Appliance 2 takes it apart: the frame as it reached the fleet, our MAC in front.
        kvs_fleet f2 = fleet_of(2, 4);
        std::uint8_t mac2[6];
        member_mac(2, mac2);
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, mac2),
                  KVS_FLEET_AT(3, 1));
        Bytes out(buf.begin() + 10, buf.end());
        Bytes want = in;
        std::memcpy(want.data(), mac2, 6);
        EXPECT_EQ(out, want) << hex(out);

        // The sender itself, a short frame, a bad hop: refused, nothing written.
        buf = fleet_frame(in, 3, 1, to, mac1);
        Bytes copy = buf;
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f, kUs), 0u);
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + 24 + 19, &f2, mac2), 0u);
        buf[14] = 1 + KVS_OWNER_PREV + 1;
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, mac2), 0u);
        buf[14] = 3;
        EXPECT_EQ(buf, copy);
        // Not to our MAC (a broadcast anyone on the segment can send): refused.
        buf[0] = 0xff;
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, mac2), 0u);
        buf[0] = copy[0];
        // Not from member 1's MAC (another host on the segment naming it): refused.
        buf[11] ^= 1;
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, mac2), 0u);
        buf[11] = copy[11];
        EXPECT_EQ(buf, copy);
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, mac2),
                  KVS_FLEET_AT(3, 1));
        // The encapsulated frame is too short for the headers: refused.
        EXPECT_EQ(kvs_fleet_encap(buf.data(), buf.data() + 23, to, kUs, 1, 1), -1);
    }
}

// The hop byte's high nibble carries the sender's table tag: the same tag as the receiver's is a
// sure hop; another one (the tables disagree for now) is marked unsure, which forbids a RST.
TEST(FleetPkt, TableTagMarksDisagreement) {
    Bytes in = build_tcp(client(false));
    std::uint8_t to[6];
    member_mac(2, to);
    std::uint8_t mac1[6];
    member_mac(1, mac1);
    kvs_fleet f2 = fleet_of(2, 4);
    f2.digest = 0x1234567890abcdeaull;
    for (std::uint64_t sender_digest : {f2.digest, f2.digest ^ 0x3ull, f2.digest ^ 0x10ull}) {
        Bytes buf = in;
        buf.insert(buf.begin(), 10, 0xEE);
        const auto hop = static_cast<std::uint8_t>(3 | KVS_FLEET_TAG(sender_digest));
        ASSERT_EQ(kvs_fleet_encap(buf.data(), buf.data() + buf.size(), to, mac1, hop, 1), 0);
        EXPECT_EQ(buf[14], hop);
        const bool same = (sender_digest & 0xf) == (f2.digest & 0xf);
        EXPECT_EQ(kvs_fleet_decap(buf.data(), buf.data() + buf.size(), &f2, to),
                  KVS_FLEET_AT(3, 1) | (same ? 0u : KVS_FLEET_UNSURE))
            << std::hex << sender_digest;
    }
}

TEST(FleetPkt, RstAnswersTheSegment) {
    for (bool v6 : {false, true}) {
        TcpSpec c = client(v6);
        c.ip_opt_words = v6 ? 0 : 2;  // IP options are not copied into the RST
        Bytes in = build_tcp(c);
        kvs_pkt p;
        ASSERT_EQ(kvs_parse(in.data(), in.data() + in.size(), &p), KVS_PARSE_OK);
        kvs_fleet_rst r;
        ASSERT_EQ(kvs_fleet_rst_plan(&p, kUs, &r), 0);
        Bytes out = in;
        out.resize(r.frame_len);  // like bpf_xdp_adjust_tail
        ASSERT_EQ(kvs_fleet_rst_write(out.data(), out.data() + out.size(), &r), 0);

        TcpSpec w;
        w.v6 = v6;
        std::memcpy(w.smac, kUs, 6);
        std::memcpy(w.dmac, kRouter, 6);
        std::memcpy(w.saddr, c.daddr, 16);
        std::memcpy(w.daddr, c.saddr, 16);
        w.sport = 80;
        w.dport = 40001;
        w.seq = 0x31337;
        w.ack = 0xfffffff0u + 40 + 1;  // payload and FIN, wrapped
        w.flags = KVS_TCP_RST | KVS_TCP_ACK;
        w.win = 0;
        w.ip_id = 0;
        EXPECT_EQ(out, build_tcp(w)) << hex(out);
        EXPECT_EQ(check_checksums(out), "");
        // A frame of another size is refused.
        out.push_back(0);
        EXPECT_EQ(kvs_fleet_rst_write(out.data(), out.data() + out.size(), &r), -1);
    }
    // Tagged frames are not answered here.
    TcpSpec t = client(false);
    t.vlan = true;
    Bytes in = build_tcp(t);
    kvs_pkt p;
    ASSERT_EQ(kvs_parse(in.data(), in.data() + in.size(), &p), KVS_PARSE_OK);
    kvs_fleet_rst r;
    EXPECT_EQ(kvs_fleet_rst_plan(&p, kUs, &r), -1);
}

}  // namespace
