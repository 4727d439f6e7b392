// The fleet's owner table (control/fleet.h): owners and previous owners from membership epochs,
// member states, the digest, and publishing into map-shaped memory. The fleet and the cookie
// keys as read from etcd (control/fleet_etcd.h): unhealthy members, two-phase key rotation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>

#include "kvsteer/control/fleet.h"
#include "kvsteer/control/fleet_etcd.h"
#include "kvsteer/control/fleet_ping.h"
#include "kvsteer/fleet.h"

using namespace kvsteer::control;

namespace {

constexpr MemberSet ids(std::initializer_list<int> l) {
    MemberSet s = 0;
    for (int i : l) s |= static_cast<MemberSet>(1u << i);
    return s;
}

Mac mac_of(int id) {
    return Mac{2, 0, 0, 0, 0xf1, static_cast<std::uint8_t>(id)};
}

// Members 0..n-1 with MACs, self 0, one epoch per set given (oldest first) pushed in order.
FleetState fleet(unsigned n, std::initializer_list<MemberSet> epochs, std::uint8_t self = 0) {
    FleetState s;
    std::string err;
    for (unsigned i = 0; i < n; i++)
        EXPECT_TRUE(s.set_mac(static_cast<std::uint8_t>(i), mac_of(i), &err)) << err;
    s.self = self;
    for (MemberSet e : epochs) EXPECT_TRUE(s.push(e, &err)) << err;
    return s;
}

// The owner of bucket b among `set`, written out: the highest score, the lower id on a tie.
std::uint8_t by_hand_owner(std::initializer_list<int> set, std::uint32_t b) {
    int best = -1;
    for (int id : set)
        if (best < 0 ||
            kvs_fleet_score(static_cast<__u8>(id), b) > kvs_fleet_score(static_cast<__u8>(best), b))
            best = id;
    return best < 0 ? KVS_APPLIANCE_NONE : static_cast<std::uint8_t>(best);
}

}  // namespace

TEST(Fleet, DeterministicAndIndependentOfSelf) {
    const auto a = compute_fleet_table(fleet(3, {ids({0, 1}), ids({0, 1, 2})}, 0));
    const auto b = compute_fleet_table(fleet(3, {ids({0, 1}), ids({0, 1, 2})}, 2));
    ASSERT_EQ(a.owner.size(), KVS_OWNER_BUCKETS);
    EXPECT_EQ(a.digest, b.digest);
    EXPECT_EQ(0,
              std::memcmp(a.owner.data(), b.owner.data(), KVS_OWNER_BUCKETS * sizeof a.owner[0]));
    EXPECT_EQ(a.owned, b.owned);
    for (std::uint32_t bk = 0; bk < KVS_OWNER_BUCKETS; bk += 997)
        EXPECT_EQ(a.owner[bk].owner, by_hand_owner({0, 1, 2}, bk));
    // Roughly a third each.
    for (int id = 0; id < 3; id++) {
        EXPECT_GT(a.owned[id], KVS_OWNER_BUCKETS / 3 * 9 / 10) << id;
        EXPECT_LT(a.owned[id], KVS_OWNER_BUCKETS / 3 * 11 / 10) << id;
    }
}

TEST(Fleet, NoFleetOwnsNothing) {
    FleetState s;
    const auto t = compute_fleet_table(s);
    for (const auto &e : t.owner) {
        ASSERT_EQ(e.owner, KVS_APPLIANCE_NONE);
        ASSERT_EQ(e.prev[0], KVS_APPLIANCE_NONE);
    }
    for (const auto &m : t.members) EXPECT_EQ(m.state, KVS_APP_EMPTY);
}

TEST(Fleet, JoinMovesAboutOneInNPlusOneOnlyToTheJoiner) {
    const auto before = compute_fleet_table(fleet(4, {ids({0, 1, 2})}));
    const auto after = compute_fleet_table(fleet(4, {ids({0, 1, 2}), ids({0, 1, 2, 3})}));
    unsigned moved = 0;
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        const auto &o = before.owner[b], &n = after.owner[b];
        if (o.owner == n.owner) {
            // Unmoved: nobody else to ask.
            EXPECT_EQ(n.prev[0], KVS_APPLIANCE_NONE) << b;
            continue;
        }
        moved++;
        ASSERT_EQ(n.owner, 3u) << b;
        EXPECT_EQ(n.prev[0], o.owner) << b;
        EXPECT_EQ(n.prev[1], KVS_APPLIANCE_NONE) << b;
    }
    EXPECT_EQ(moved, after.owned[3]);
    EXPECT_GT(moved, KVS_OWNER_BUCKETS / 4 * 9 / 10);
    EXPECT_LT(moved, KVS_OWNER_BUCKETS / 4 * 11 / 10);
}

TEST(Fleet, DrainedMemberOwnsNothingAndIsPrevForExactlyItsBuckets) {
    const auto before = compute_fleet_table(fleet(3, {ids({0, 1, 2})}));
    auto s = fleet(3, {ids({0, 1, 2}), ids({0, 2})});
    const auto after = compute_fleet_table(s);
    EXPECT_EQ(after.owned[1], 0u);
    EXPECT_EQ(s.state(1), KVS_APP_DRAINING);
    EXPECT_EQ(after.members[1].state, KVS_APP_DRAINING);
    EXPECT_EQ(after.members[0].state, KVS_APP_UP);
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        const auto &e = after.owner[b];
        ASSERT_NE(e.owner, 1u);
        const bool had = before.owner[b].owner == 1;
        ASSERT_EQ(e.prev[0] == 1, had) << b;
        if (!had) {
            ASSERT_EQ(e.owner, before.owner[b].owner) << b;  // nothing else moved
        }
        for (unsigned i = 1; i < KVS_OWNER_PREV; i++) ASSERT_NE(e.prev[i], 1u);
    }
    // Settled: member 1 is out, and nobody is asked second.
    s.settle();
    const auto settled = compute_fleet_table(s);
    EXPECT_EQ(s.state(1), KVS_APP_EMPTY);
    EXPECT_EQ(settled.members[1].state, KVS_APP_EMPTY);
    for (const auto &e : settled.owner) ASSERT_EQ(e.prev[0], KVS_APPLIANCE_NONE);
}

// 1 -> 2 -> 3 members, then member 1 drained: {0}, {0,1}, {0,1,2}, {0,2}.
TEST(Fleet, PrevListsMatchByHandOverFourEpochs) {
    const auto t =
        compute_fleet_table(fleet(3, {ids({0}), ids({0, 1}), ids({0, 1, 2}), ids({0, 2})}));
    unsigned with_two = 0;
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b += 61) {
        const std::uint8_t owner = by_hand_owner({0, 2}, b);
        // Newest first: under {0,1,2}, {0,1}, {0}.
        const std::uint8_t older[3] = {by_hand_owner({0, 1, 2}, b), by_hand_owner({0, 1}, b), 0};
        std::vector<std::uint8_t> want;
        for (std::uint8_t o : older)
            if (o != owner && std::find(want.begin(), want.end(), o) == want.end())
                want.push_back(o);
        want.resize(KVS_OWNER_PREV, KVS_APPLIANCE_NONE);
        with_two += want[1] != KVS_APPLIANCE_NONE;
        const auto &e = t.owner[b];
        ASSERT_EQ(e.owner, owner) << b;
        for (unsigned i = 0; i < KVS_OWNER_PREV; i++)
            ASSERT_EQ(e.prev[i], want[i]) << b << " " << i;
    }
    EXPECT_GT(with_two, 0u);  // the sample reaches two previous owners somewhere
    // One bucket written out in full: scores 1 > 2 > 0. Its owners were 0, 1, 1, and 2 after
    // the drain of 1: 2 owns it, 1 is asked second, then 0.
    bool found = false;
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS && !found; b++) {
        const auto sc = [b](int id) { return kvs_fleet_score(static_cast<__u8>(id), b); };
        if (!(sc(1) > sc(2) && sc(2) > sc(0))) continue;
        EXPECT_EQ(t.owner[b].owner, 2u);
        EXPECT_EQ(t.owner[b].prev[0], 1u);
        EXPECT_EQ(t.owner[b].prev[1], 0u);
        EXPECT_EQ(t.owner[b].prev[2], KVS_APPLIANCE_NONE);
        found = true;
    }
    EXPECT_TRUE(found);
}

TEST(Fleet, ForgetClearsTheIdEverywhere) {
    auto s = fleet(4, {ids({0, 1, 2}), ids({0, 1, 2, 3}), ids({0, 2, 3})});
    ASSERT_GT(compute_fleet_table(s).owner.size(), 0u);
    std::string err;
    ASSERT_TRUE(s.forget(1, &err)) << err;
    EXPECT_FALSE(s.forget(9, &err));
    EXPECT_EQ(s.state(1), KVS_APP_EMPTY);
    const auto t = compute_fleet_table(s);
    EXPECT_EQ(t.members[1].state, KVS_APP_EMPTY);
    EXPECT_EQ(t.owned[1], 0u);
    for (const auto &e : t.owner) {
        ASSERT_NE(e.owner, 1u);
        for (unsigned i = 0; i < KVS_OWNER_PREV; i++) ASSERT_NE(e.prev[i], 1u);
    }
    // Forgetting an up member: its buckets go to the others, and it is nobody's previous owner.
    ASSERT_TRUE(s.forget(3, &err));
    const auto t2 = compute_fleet_table(s);
    EXPECT_EQ(t2.owned[0] + t2.owned[2], KVS_OWNER_BUCKETS);
    for (const auto &e : t2.owner)
        for (unsigned i = 0; i < KVS_OWNER_PREV; i++) ASSERT_NE(e.prev[i], 3u);
}

// Forgetting the newest epoch's only owner is refused: an empty newest epoch turns the fleet off
// on every appliance (nobody owns a bucket; each serves as a single appliance).
TEST(Fleet, ForgetRefusesToEmptyTheNewestEpoch) {
    auto s = fleet(4, {ids({0, 2}), ids({2})});
    std::string err;
    EXPECT_FALSE(s.forget(2, &err));
    EXPECT_NE(err.find("only owner"), std::string::npos) << err;
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0, 2}), ids({2})})) << "unchanged";
    ASSERT_TRUE(s.forget(0, &err)) << err;  // an older epoch may empty: the newest still owns
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({2}), ids({2})}));
}

TEST(Fleet, DigestChangesIffInputsChange) {
    const auto base = fleet(3, {ids({0, 1}), ids({0, 1, 2})});
    const std::uint64_t d = compute_fleet_table(base).digest;
    std::string err;
    // Same inputs reached another way: the same digest.
    auto other = fleet(3, {ids({0, 1})}, 1);
    ASSERT_TRUE(other.push(ids({0, 1, 2}), &err));
    ASSERT_TRUE(other.push(ids({0, 1, 2}), &err));  // the newest again: no new epoch
    EXPECT_EQ(other.epochs, base.epochs);
    EXPECT_EQ(compute_fleet_table(other).digest, d);

    auto mac = base;
    ASSERT_TRUE(mac.set_mac(2, Mac{2, 0, 0, 0, 0xee, 2}, &err));
    EXPECT_NE(compute_fleet_table(mac).digest, d);
    auto settled = base;
    settled.settle();
    EXPECT_NE(compute_fleet_table(settled).digest, d);
    auto pushed = base;
    ASSERT_TRUE(pushed.push(ids({0, 2}), &err));
    EXPECT_NE(compute_fleet_table(pushed).digest, d);
    auto forgot = base;
    ASSERT_TRUE(forgot.forget(2, &err));
    EXPECT_NE(compute_fleet_table(forgot).digest, d);
    // A member with a MAC but in no epoch is part of the members, so part of the digest.
    auto added = base;
    ASSERT_TRUE(added.set_mac(5, mac_of(5), &err));
    EXPECT_NE(compute_fleet_table(added).digest, d);
}

TEST(Fleet, OperationsRefuseBadInput) {
    auto s = fleet(6, {ids({0, 1, 2})});
    const auto before = s;
    std::string err;
    EXPECT_FALSE(s.push(ids({0, 7}), &err));
    EXPECT_NE(err.find("appliance 7 is not a member"), std::string::npos) << err;
    EXPECT_FALSE(s.push(0, &err));
    EXPECT_FALSE(s.set_mac(16, mac_of(1), &err));
    EXPECT_FALSE(s.set_mac(1, Mac{}, &err));
    EXPECT_FALSE(s.set_mac(1, Mac{1, 0, 0, 0, 0, 1}, &err));  // multicast
    EXPECT_EQ(s, before);
    // 16 distinct epochs (repeats would be compacted): {0, 1, 2} then 0 and 1 with other subsets
    // of 2..5.
    for (unsigned v = 0; v < 16; v++) {
        if (v == 1) continue;  // {0, 1, 2}: the first epoch's
        ASSERT_TRUE(s.push(static_cast<MemberSet>(ids({0, 1}) | (v << 2)), &err)) << err;
    }
    EXPECT_FALSE(s.push(ids({0}), &err));
    EXPECT_NE(err.find("settle first"), std::string::npos) << err;
    EXPECT_EQ(s.epoch_no, kMaxFleetEpochs);
}

TEST(Fleet, MemberSetText) {
    std::string err;
    EXPECT_EQ(parse_member_set("3,0,15", &err), ids({0, 3, 15}));
    EXPECT_EQ(member_set_str(ids({0, 3, 15})), "0,3,15");
    for (const char *bad : {"", "1,", ",1", "16", "1,1", "a", "-1", "1 ,2", "0x1"})
        EXPECT_FALSE(parse_member_set(bad, &err)) << bad;
    EXPECT_FALSE(parse_member_set("2,2", &err));
    EXPECT_NE(err.find("twice"), std::string::npos);
    EXPECT_EQ(parse_appliance_id("15", &err), 15);
    EXPECT_FALSE(parse_appliance_id("16", &err));
    EXPECT_NE(err.find("0..15"), std::string::npos);
}

TEST(Fleet, WriterFillsTheInactiveHalfThenFlips) {
    auto fl = std::make_unique<kvs_fleet>();
    auto owner = std::make_unique<kvs_owner_entry[]>(2 * KVS_OWNER_BUCKETS);
    FleetWriter w(FleetMaps{fl.get(), owner.get()}, std::chrono::milliseconds(0));
    auto s = fleet(3, {ids({0, 1, 2})}, 1);
    auto t = compute_fleet_table(s);
    w.publish(s, t);
    EXPECT_EQ(fl->owner_active, 1u);
    EXPECT_EQ(fl->generation, 1u);
    EXPECT_EQ(fl->self, 1u);
    EXPECT_EQ(fl->digest, t.digest);
    EXPECT_EQ(fl->epoch, 1u);
    EXPECT_EQ(0, std::memcmp(owner.get() + KVS_OWNER_BUCKETS, t.owner.data(),
                             KVS_OWNER_BUCKETS * sizeof(kvs_owner_entry)));
    EXPECT_EQ(fl->members[2].state, KVS_APP_UP);
    EXPECT_EQ(0, std::memcmp(fl->members[2].mac, mac_of(2).data(), 6));

    std::string err;
    ASSERT_TRUE(s.forget(2, &err));
    auto t2 = compute_fleet_table(s);
    w.publish(s, t2);
    EXPECT_EQ(fl->owner_active, 0u);
    EXPECT_EQ(fl->generation, 2u);
    EXPECT_EQ(fl->members[2].state, KVS_APP_EMPTY);
    EXPECT_EQ(
        0, std::memcmp(owner.get(), t2.owner.data(), KVS_OWNER_BUCKETS * sizeof(kvs_owner_entry)));
    // No fleet: self none, every bucket without owner.
    w.publish(FleetState{}, compute_fleet_table(FleetState{}));
    EXPECT_EQ(fl->self, KVS_APPLIANCE_NONE);
    EXPECT_EQ(fl->generation, 3u);
    EXPECT_EQ(owner[KVS_OWNER_BUCKETS + 7].owner, KVS_APPLIANCE_NONE);
}

// ---- the fleet as read from etcd (fleet_etcd.h) ------------------------------------------------

namespace {

// What an appliance read from etcd: `alive` members with their key (MACs as fleet()), the epochs
// key at `version`, and the members that say their dataplane is unhealthy (whether alive or not).
FleetEtcdView etcd_view(MemberSet alive, std::vector<MemberSet> epochs, MemberSet unhealthy = 0,
                        std::int64_t version = 7) {
    FleetEtcdView v;
    v.read = v.reachable = true;
    for (int id = 0; id < static_cast<int>(KVS_MAX_APPLIANCES); id++) {
        if (alive & ids({id})) v.alive[id] = mac_of(id);
        v.unhealthy[id] = unhealthy & ids({id});
    }
    v.epochs = std::move(epochs);
    v.epochs_version = version;
    return v;
}

using Key = std::array<std::uint64_t, 2>;
constexpr Key kKeyPrev{0x1111, 0x1112}, kKey0{0x2221, 0x2222}, kKey1{0x3331, 0x3332},
    kKey2{0x4441, 0x4442}, kFallback{0x5551, 0x5552};

FleetEtcdView cookie_view(std::optional<Key> cur, std::optional<Key> prev,
                          std::optional<Key> next = std::nullopt, std::int64_t next_at = 0) {
    FleetEtcdView v;
    v.read = v.reachable = true;
    v.cookie_key = cur;
    v.cookie_key_prev = prev;
    v.cookie_key_next = next;
    v.cookie_next_at_ms = next_at;
    return v;
}

}  // namespace

TEST(FleetCookieKeys, NoneWithoutACurrentKey) {
    EXPECT_FALSE(fleet_cookie_keys(FleetEtcdView{}, 1000, kFallback));
    // Even with the other keys there: the current one is what says etcd holds the keys.
    EXPECT_FALSE(
        fleet_cookie_keys(cookie_view(std::nullopt, kKeyPrev, kKey1, 5000), 1000, kFallback));
}

TEST(FleetCookieKeys, CurrentSignsPreviousOrFallbackAccepted) {
    auto k = fleet_cookie_keys(cookie_view(kKey0, kKeyPrev), 1000, kFallback);
    ASSERT_TRUE(k);
    EXPECT_EQ(k->sign, kKey0);
    EXPECT_EQ(k->accept, kKeyPrev);
    k = fleet_cookie_keys(cookie_view(kKey0, std::nullopt), 1000, kFallback);
    ASSERT_TRUE(k);
    EXPECT_EQ(k->sign, kKey0);
    EXPECT_EQ(k->accept, kFallback);
}

TEST(FleetCookieKeys, TwoPhaseRotation) {
    constexpr std::int64_t at = 1700000002000;
    const auto v = cookie_view(kKey0, kKeyPrev, kKey1, at);
    // Before next-at: the current key signs, the next one is accepted already.
    for (std::int64_t now : {std::int64_t{0}, at - kCookieActivateMs, at - 1}) {
        const auto k = fleet_cookie_keys(v, now, kFallback);
        ASSERT_TRUE(k);
        EXPECT_EQ(k->sign, kKey0) << now;
        EXPECT_EQ(k->accept, kKey1) << now;
    }
    // From next-at on: the next key signs, the current one is still accepted.
    for (std::int64_t now : {at, at + 1, at + 3600000}) {
        const auto k = fleet_cookie_keys(v, now, kFallback);
        ASSERT_TRUE(k);
        EXPECT_EQ(k->sign, kKey1) << now;
        EXPECT_EQ(k->accept, kKey0) << now;
    }
}

TEST(FleetCookieKeys, HalfARotationIsNoRotation) {
    // A next key without its time, or a time without a key: current + previous.
    for (const auto &v : {cookie_view(kKey0, kKeyPrev, kKey1, 0),
                          cookie_view(kKey0, kKeyPrev, std::nullopt, 5000)}) {
        const auto k = fleet_cookie_keys(v, 10000, kFallback);
        ASSERT_TRUE(k);
        EXPECT_EQ(k->sign, kKey0);
        EXPECT_EQ(k->accept, kKeyPrev);
    }
}

TEST(FleetCookieKeys, NoHandshakeFailsHoweverThePollsInterleave) {
    // Two rotations as rotate_cookie writes them: the first at w1 (signing from t1 = w1 + 2 s),
    // the second at w2, just after t1 (the key in force then, K1, stays current, K0 becomes the
    // previous). Every appliance reads etcd within kPoll of a write. At any instant an appliance
    // holds the newest view or, for kPoll after a write, the one before; its clock may be off by
    // a millisecond. The key any appliance signs with must be one every other accepts.
    constexpr std::int64_t kPoll = 200;
    constexpr std::int64_t w1 = 1700000000000, t1 = w1 + kCookieActivateMs, w2 = t1 + 100,
                           t2 = w2 + kCookieActivateMs;
    struct Written {
        std::int64_t at;
        FleetEtcdView v;
    };
    const std::vector<Written> history = {
        {0, cookie_view(kKey0, kKeyPrev)},
        {w1, cookie_view(kKey0, kKeyPrev, kKey1, t1)},
        {w2, cookie_view(kKey1, kKey0, kKey2, t2)},
    };
    unsigned checked = 0;
    for (std::int64_t base : {w1 - 1, w1, w1 + 1, w1 + kPoll - 1, t1 - 1, t1, t1 + 1, w2 - 1, w2,
                              w2 + 1, w2 + kPoll - 1, t2 - 1, t2, t2 + 1, t2 + 60000}) {
        std::vector<const FleetEtcdView *> held;
        for (std::size_t i = 0; i < history.size(); i++) {
            const bool newest = i + 1 == history.size() || history[i + 1].at > base;
            const bool lagging = i + 1 < history.size() && history[i + 1].at <= base &&
                                 base < history[i + 1].at + kPoll;
            if (history[i].at <= base && (newest || lagging)) held.push_back(&history[i].v);
        }
        ASSERT_FALSE(held.empty()) << base;
        for (const auto *a : held)
            for (const auto *b : held)
                for (std::int64_t skew_a : {-1, 0, 1})
                    for (std::int64_t skew_b : {-1, 0, 1}) {
                        const auto ka = fleet_cookie_keys(*a, base + skew_a, kFallback);
                        const auto kb = fleet_cookie_keys(*b, base + skew_b, kFallback);
                        ASSERT_TRUE(ka && kb);
                        EXPECT_TRUE(ka->sign == kb->sign || ka->sign == kb->accept)
                            << "at " << base - w1 << " ms after the first rotation";
                        checked++;
                    }
    }
    EXPECT_GT(checked, 100u);
}

TEST(FleetFromEtcd, BeforeTheFirstReadTheLocalState) {
    const auto local = fleet(3, {ids({0, 1, 2})});
    auto v = etcd_view(ids({0, 1}), {ids({0, 1})}, ids({1}));
    v.read = false;
    EXPECT_EQ(fleet_state_from_etcd(local, v), local);
}

TEST(FleetFromEtcd, UnhealthyMemberOwnsNothingButStaysAPreviousOwner) {
    const auto local = fleet(3, {ids({0, 1, 2})});
    const auto s =
        fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), {ids({0, 1, 2})}, ids({1}), 5));
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0, 1, 2}), ids({0, 2})}));
    EXPECT_EQ(s.epoch_no, 5u);  // etcd's epochs key's version
    EXPECT_EQ(s.self, 0u);
    ASSERT_TRUE(s.macs[1]);  // still a member
    EXPECT_EQ(s.state(1), KVS_APP_DRAINING);
    EXPECT_EQ(s.state(0), KVS_APP_UP);
    const auto t = compute_fleet_table(s);
    EXPECT_EQ(t.owned[1], 0u);
    EXPECT_EQ(t.owned[0] + t.owned[2], KVS_OWNER_BUCKETS);
    // Its buckets went to the others, which consult it for its flows.
    unsigned its = 0;
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        if (fleet_owner(ids({0, 1, 2}), b) != 1) continue;
        its++;
        ASSERT_NE(t.owner[b].owner, 1u) << b;
        ASSERT_EQ(t.owner[b].prev[0], 1u) << b;
    }
    EXPECT_GT(its, 0u);
    // Healthy again: etcd's epochs as they are.
    const auto back =
        fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), {ids({0, 1, 2})}, 0, 5));
    EXPECT_EQ(back.epochs, std::vector<MemberSet>{ids({0, 1, 2})});
}

TEST(FleetFromEtcd, SeveralUnhealthyOneEpochWithoutAllOfThem) {
    const auto local = fleet(4, {ids({0})});
    const auto s = fleet_state_from_etcd(
        local, etcd_view(ids({0, 1, 2, 3}), {ids({0}), ids({0, 1, 2, 3})}, ids({1, 3})));
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0}), ids({0, 1, 2, 3}), ids({0, 2})}));
}

TEST(FleetFromEtcd, UnhealthyOutsideTheNewestEpochChangesNothing) {
    // 1 was drained already: it owns nothing anyway.
    const auto local = fleet(3, {ids({0, 1, 2})});
    const std::vector<MemberSet> epochs = {ids({0, 1}), ids({0, 2})};
    const auto s = fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), epochs, ids({1})));
    EXPECT_EQ(s.epochs, epochs);
}

TEST(FleetFromEtcd, DeadAndUnhealthyIsJustDead) {
    // 1 reported unhealthy, then its key expired: removed from every epoch, no extra epoch.
    const auto local = fleet(3, {ids({0, 1, 2})});
    const auto s = fleet_state_from_etcd(
        local, etcd_view(ids({0, 2}), {ids({0, 1}), ids({0, 1, 2})}, ids({1})));
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0}), ids({0, 2})}));
    EXPECT_FALSE(s.macs[1]);
    EXPECT_EQ(s.state(1), KVS_APP_EMPTY);
}

TEST(FleetFromEtcd, NoOwnerLeftMeansNoExtraEpoch) {
    const auto local = fleet(3, {ids({0, 1, 2})});
    // Every member of the newest epoch unhealthy: they keep owning (better than no owner).
    auto s = fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), {ids({0, 1})}, ids({0, 1})));
    EXPECT_EQ(s.epochs, std::vector<MemberSet>{ids({0, 1})});
    EXPECT_GT(compute_fleet_table(s).owned[0], 0u);
    // The only owner unhealthy, a healthy member outside the newest epoch: still no extra epoch.
    s = fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), {ids({0, 2}), ids({1})}, ids({1})));
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0, 2}), ids({1})}));
    EXPECT_EQ(compute_fleet_table(s).owned[1], KVS_OWNER_BUCKETS);
}

TEST(FleetFromEtcd, WithoutAnEpochsKeyTheLocalEpochs) {
    const auto local = fleet(3, {ids({0, 1, 2})});
    auto v = etcd_view(ids({0, 1}), {}, ids({1}));
    v.epochs = std::nullopt;
    const auto s = fleet_state_from_etcd(local, v);
    // 2 has no key: dead; 1 unhealthy.
    EXPECT_EQ(s.epochs, (std::vector<MemberSet>{ids({0, 1}), ids({0})}));
    EXPECT_EQ(s.epoch_no, local.epoch_no);
}

// An appliance back in the fleet (a restart, or its lease expired): before its key is put it
// leaves by the epoch the others computed while it was away, and re-enters by another, so the
// interim owners of its buckets are its previous owners there. Before, its key alone made it the
// owner again with no previous owner: the flows the others bound meanwhile were orphaned.
TEST(FleetFromEtcd, AMemberBackAfterAnAbsenceKeepsItsInterimOwnersAsPrevious) {
    const auto local = fleet(3, {ids({0, 1, 2})}, 1);
    std::vector<MemberSet> etcd = {ids({0, 1, 2})};
    // Away (no key): the others computed {0, 2} and bound 1's buckets' new flows.
    const auto away = fleet_state_from_etcd(local, etcd_view(ids({0, 2}), etcd));
    EXPECT_EQ(away.newest(), ids({0, 2}));
    // Its return, in the order kvsteerd takes: the leave (members alive: 0, 2), the key, then the
    // re-entry when its dataplane beats.
    const MemberSet to = fleet_leave_epoch(etcd.back(), 1, ids({0, 2}));
    ASSERT_EQ(to, ids({0, 2}));
    ASSERT_TRUE(append_epoch(etcd, to));
    const auto keyed = fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), etcd));
    EXPECT_EQ(compute_fleet_table(keyed).owned[1], 0u) << "an owner before its dataplane beats";
    const auto interim = compute_fleet_table(away);
    const auto before = compute_fleet_table(keyed);
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++)
        ASSERT_EQ(before.owner[b].owner, interim.owner[b].owner) << "nothing moves at the key";
    const MemberSet back = fleet_return_epoch(etcd.back(), 1, ids({0, 1, 2}), to);
    ASSERT_EQ(back, ids({0, 1, 2}));
    ASSERT_TRUE(append_epoch(etcd, back));
    const auto t =
        compute_fleet_table(fleet_state_from_etcd(local, etcd_view(ids({0, 1, 2}), etcd)));
    unsigned its = 0;
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        if (t.owner[b].owner != 1) continue;
        its++;
        ASSERT_EQ(t.owner[b].prev[0], interim.owner[b].owner) << "bucket " << b;
    }
    EXPECT_GT(its, 0u);
    // Nothing to record: alone, not an owner in the newest epoch, or no other member alive.
    EXPECT_EQ(fleet_leave_epoch(ids({1}), 1, ids({1})), 0u);
    EXPECT_EQ(fleet_leave_epoch(ids({0, 2}), 1, ids({0, 2})), 0u);
    EXPECT_EQ(fleet_leave_epoch(ids({0, 1}), 1, ids({2})), 0u);
    // A member dead now (2) stays in the epoch left by: taken out of etcd's newest epoch, it
    // found itself no owner when it came back, and stayed out.
    EXPECT_EQ(fleet_leave_epoch(ids({0, 1, 2}), 1, ids({0})), ids({0, 2}));
    // A member dead meanwhile (2, no MAC in the view) stays in the epoch it re-enters by; the
    // epochs changed meanwhile: the newest plus itself.
    EXPECT_EQ(fleet_return_epoch(ids({0}), 1, ids({0, 1, 2}), ids({0})), ids({0, 1, 2}));
    EXPECT_EQ(fleet_return_epoch(ids({0, 3}), 1, ids({0, 1, 2}), ids({0})), ids({0, 1, 3}));
    EXPECT_EQ(fleet_return_epoch(ids({0, 1}), 1, ids({0, 1, 2}), ids({0})), 0u);
}

// append_epoch needs no MAC (etcd's epochs keep dead members) and, full, drops the oldest.
TEST(Fleet, AppendEpochDropsTheOldestWhenFull) {
    std::vector<MemberSet> e;
    EXPECT_FALSE(append_epoch(e, 0));
    for (unsigned i = 0; i < kMaxFleetEpochs; i++)
        ASSERT_TRUE(append_epoch(e, static_cast<MemberSet>(i + 1)));
    ASSERT_TRUE(append_epoch(e, static_cast<MemberSet>(kMaxFleetEpochs)));  // the newest again
    EXPECT_EQ(e.size(), kMaxFleetEpochs);
    ASSERT_TRUE(append_epoch(e, ids({9, 15})));
    EXPECT_EQ(e.size(), kMaxFleetEpochs);
    EXPECT_EQ(e.front(), 2u);
    EXPECT_EQ(e.back(), ids({9, 15}));
}

// A history of leaves and returns fills the epochs with repeats: compacted (an epoch a newer one
// repeats goes), the table and its digest are unchanged, and the operator's push is not refused
// (it was at 16, leaving only `fleet settle`, which forgets every previous owner).
TEST(Fleet, RepeatedEpochsAreCompactedWithoutChangingTheTable) {
    FleetState s = fleet(4, {ids({0, 1, 2, 3})});
    std::string err;
    for (unsigned i = 0; s.epochs.size() < kMaxFleetEpochs; i++)
        ASSERT_TRUE(s.push(i % 2 ? ids({0, 1, 2, 3}) : ids({0, 1, 3}), &err)) << err;
    ASSERT_TRUE(s.push(ids({1, 2, 3}), &err)) << err;  // the 16 were mostly repeats
    EXPECT_LE(s.epochs.size(), 3u);
    EXPECT_EQ(s.epochs.back(), ids({1, 2, 3}));
    // Compacting alone changes no owner, no previous owner, no digest.
    for (const std::vector<MemberSet> &h :
         {std::vector<MemberSet>{ids({0, 1, 2}), ids({0, 1}), ids({0, 1, 2}), ids({1, 2}),
                                 ids({0, 1}), ids({0, 1, 2})},
          std::vector<MemberSet>{ids({0, 1, 2, 3}), ids({0, 1, 3}), ids({2, 3}), ids({0, 1, 3}),
                                 ids({0, 1, 2, 3}), ids({0, 1, 3})}}) {
        FleetState a = fleet(4, {});
        a.epochs = h;
        FleetState b = a;
        EXPECT_GT(compact_epochs(b.epochs), 0u);
        const auto ta = compute_fleet_table(a), tb = compute_fleet_table(b);
        EXPECT_EQ(ta.digest, tb.digest);
        EXPECT_EQ(0, std::memcmp(ta.owner.data(), tb.owner.data(),
                                 KVS_OWNER_BUCKETS * sizeof ta.owner[0]));
    }
    std::vector<MemberSet> e;
    for (unsigned i = 0; i < kMaxFleetEpochs; i++)
        ASSERT_TRUE(append_epoch(e, i % 2 ? ids({0, 1}) : ids({0})));
    bool dropped = true;
    ASSERT_TRUE(append_epoch(e, ids({1}), &dropped));
    EXPECT_FALSE(dropped) << "repeats went first: nothing of the history lost";
    EXPECT_EQ(e, (std::vector<MemberSet>{ids({0}), ids({0, 1}), ids({1})}));
}

TEST(FleetFromEtcd, EveryApplianceComputesTheSameTable) {
    const auto v = etcd_view(ids({0, 1, 2, 3}), {ids({0, 1, 2}), ids({0, 1, 2, 3})}, ids({2}));
    const auto a = fleet_state_from_etcd(fleet(4, {ids({0, 1, 2, 3})}, 0), v);
    const auto b = fleet_state_from_etcd(fleet(2, {ids({0, 1})}, 3), v);
    EXPECT_EQ(a.self, 0u);
    EXPECT_EQ(b.self, 3u);
    EXPECT_EQ(a.epochs, b.epochs);
    const auto ta = compute_fleet_table(a), tb = compute_fleet_table(b);
    EXPECT_EQ(ta.digest, tb.digest);
    EXPECT_EQ(ta.owned[2], 0u);
    // The member's health is part of what the fleet agrees on.
    const auto healthy = fleet_state_from_etcd(
        fleet(4, {ids({0})}, 0), etcd_view(ids({0, 1, 2, 3}), {ids({0, 1, 2}), ids({0, 1, 2, 3})}));
    EXPECT_NE(compute_fleet_table(healthy).digest, ta.digest);
    EXPECT_GT(compute_fleet_table(healthy).owned[2], 0u);
}

// Liveness (fleet_ping.h): sequence numbers from `base`, `sent` the newest sent.
TEST(FleetPing, SilentAfterMissesInARowOnlyIfItAnsweredBefore) {
    const std::uint64_t base = 1000;
    std::uint64_t heard[KVS_MAX_APPLIANCES] = {};
    heard[1] = 1009;  // answered the newest ping
    heard[2] = 1006;  // 3 unanswered since
    heard[3] = 1005;  // 4 unanswered: silent at misses 4
    heard[4] = 999;   // an answer from before this pinger's life: never answered, not silent
    heard[5] = 0;     // never answered
    heard[6] = 1000;  // answered the first ping only
    heard[7] = 5000;  // not one of ours (later than the newest sent): ignored
    const MemberSet all = ids({1, 2, 3, 4, 5, 6, 7});
    EXPECT_EQ(silent_members(all, base, 1009, heard, 4), ids({3, 6}));
    EXPECT_EQ(silent_members(all, base, 1009, heard, 3), ids({2, 3, 6}));
    EXPECT_EQ(silent_members(all, base, 1009, heard, 10), 0);
    // Only members are considered.
    EXPECT_EQ(silent_members(ids({1, 2, 4}), base, 1009, heard, 3), ids({2}));
    // It answers again: back.
    heard[3] = 1009;
    EXPECT_EQ(silent_members(all, base, 1009, heard, 4), ids({6}));
}

// A silence heard here alone is not acted on while a member that answers us still hears the
// silent one (one-way loss or an ACL between two appliances: before, this appliance reset the
// live member's flows that reached it). Only a positive word keeps it: a witness that knows
// nothing of it (restarted, new, without a pinger: an empty heard set) does not.
TEST(FleetPing, ASilenceCountsUnlessAWitnessStillHearsTheMember) {
    MemberSet hears[KVS_MAX_APPLIANCES] = {};  // what each member's recent pong said it hears
    // Fleet {self, 1, 2, 3}: 2 is silent here; 1 and 3 answer us.
    hears[1] = ids({2, 3});
    hears[3] = ids({1});
    EXPECT_EQ(corroborated_silence(ids({2}), ids({1, 3}), hears), 0) << "1 still hears 2";
    hears[1] = ids({3});
    EXPECT_EQ(corroborated_silence(ids({2}), ids({1, 3}), hears), ids({2})) << "nobody hears 2";
    // A witness that knows nothing (a restarted kvsteerd, a new member, no pinger) keeps nobody.
    hears[1] = hears[3] = 0;
    EXPECT_EQ(corroborated_silence(ids({2}), ids({1, 3}), hears), ids({2}));
    // A member silent here is no witness, whatever it said last.
    hears[3] = ids({2});
    EXPECT_EQ(corroborated_silence(ids({2, 3}), ids({1, 3}), hears), ids({2, 3}));
    hears[1] = ids({3});
    EXPECT_EQ(corroborated_silence(ids({2, 3}), ids({1, 3}), hears), ids({2}))
        << "1 hears 3 (3's word about 2 does not count)";
    // A member that never answered us (not yet running its XDP program) is no witness.
    hears[1] = ids({2});
    hears[3] = 0;
    EXPECT_EQ(corroborated_silence(ids({2}), ids({3}), hears), ids({2}));
    // Nobody left to ask (a fleet of two; everyone else silent here): out.
    EXPECT_EQ(corroborated_silence(ids({2}), 0, hears), ids({2}));
    // A member silent here answers nothing of its own: its last word, even about itself, is
    // no witness's.
    hears[2] = ids({2});
    EXPECT_EQ(corroborated_silence(ids({2}), ids({2, 3}), hears), ids({2}));
}

// A pong's word counts only with one of our last `misses` pings: an old one (a witness that
// stopped answering) or one paired with a sequence number we never sent (forged) says nothing.
TEST(FleetPing, APongsWordCountsOnlyForARecentPing) {
    const auto says = [](std::uint64_t seq, MemberSet set) { return (seq << 32) | set; };
    const std::uint64_t sent = 0x1234500000010ull;
    EXPECT_EQ(pong_says(says(sent, ids({2})), sent, 4), ids({2}));
    EXPECT_EQ(pong_says(says(sent - 3, ids({2})), sent, 4), ids({2}));
    EXPECT_EQ(pong_says(says(sent - 4, ids({2})), sent, 4), 0) << "4 pings ago";
    EXPECT_EQ(pong_says(says(sent + 1, ids({2})), sent, 4), 0) << "a ping not yet sent";
    EXPECT_EQ(pong_says(says(0, ids({2})), sent, 4), 0);
    // Across a wrap of the low 32 bits.
    const std::uint64_t wrap = 0x200000001ull;
    EXPECT_EQ(pong_says(says(wrap - 2, ids({5})), wrap, 4), ids({5}));
}

// An answer no ping of ours carried (a forged pong, above the newest sent) overwrites the
// member's slot in kvs_fleet_heard: judged on the newest real answer kept, a dead member still
// goes silent. Before, the forged value was ignored as "not ours" and the member, never judged
// again, stayed in the table for good.
TEST(FleetPing, AForgedAnswerDoesNotKeepADeadMemberAlive) {
    const std::uint64_t base = 1000;
    std::uint64_t heard[KVS_MAX_APPLIANCES] = {};
    std::uint64_t newest[KVS_MAX_APPLIANCES] = {};
    heard[2] = 1004;
    EXPECT_EQ(silent_members(ids({2}), base, 1005, heard, 4, nullptr, newest), 0);
    EXPECT_EQ(newest[2], 1004u);
    heard[2] = ~0ull;  // forged; the member then dies (no answer after 1004)
    EXPECT_EQ(silent_members(ids({2}), base, 1007, heard, 4, nullptr, newest), 0);
    EXPECT_EQ(silent_members(ids({2}), base, 1008, heard, 4, nullptr, newest), ids({2}));
    EXPECT_EQ(silent_members(ids({2}), base, 1008, heard, 4), 0) << "without newest: never silent";
    heard[2] = 1002;  // an older answer (forged, or a late copy) moves nothing back
    EXPECT_EQ(silent_members(ids({2}), base, 1008, heard, 4, nullptr, newest), ids({2}));
    EXPECT_EQ(newest[2], 1004u);
    heard[2] = 1008;  // it answers again: back
    EXPECT_EQ(silent_members(ids({2}), base, 1008, heard, 4, nullptr, newest), 0);
}

// A member back in the ping set (its etcd key expired, then came back) is judged on the pings
// sent since: its answer from before it left is none. Before, that old answer was `misses` or
// more pings old, so it was silent at once, before its first new ping (the table flapped: in,
// out, in).
TEST(FleetPing, AMemberBackInThePingSetIsJudgedOnNewPingsOnly) {
    const std::uint64_t base = 1000;
    std::uint64_t heard[KVS_MAX_APPLIANCES] = {};
    std::uint64_t since[KVS_MAX_APPLIANCES] = {};
    heard[2] = 1003;  // answered, then left the ping set at 1004
    since[2] = 1010;  // back: the first ping to it since is 1010
    EXPECT_EQ(silent_members(ids({2}), base, 1009, heard, 4), ids({2})) << "without since";
    EXPECT_EQ(silent_members(ids({2}), base, 1009, heard, 4, since), 0) << "not pinged yet";
    EXPECT_EQ(silent_members(ids({2}), base, 1013, heard, 4, since), 0)
        << "never answered since it came back: not silent (as a new member)";
    heard[2] = 1010;  // answers the first new ping, then falls silent
    EXPECT_EQ(silent_members(ids({2}), base, 1013, heard, 4, since), 0);
    EXPECT_EQ(silent_members(ids({2}), base, 1014, heard, 4, since), ids({2}));
}

// A member that answered an earlier pinger of this boot (kvsteerd restarted; kvs_fleet_heard
// outlives it) and never answers ours is silent after `misses` of our pings, as if it had
// answered just before our first: it crashed while this kvsteerd was down. Before, it was "never
// answered", so this appliance kept it in its owner table while the others left it out. One that
// answered nobody before (a new member) is still not judged.
TEST(FleetPing, AMemberThatAnsweredAnEarlierPingerIsJudgedOnOurPings) {
    const std::uint64_t base = 1000;
    std::uint64_t heard[KVS_MAX_APPLIANCES] = {};
    std::uint64_t since[KVS_MAX_APPLIANCES] = {};
    std::uint64_t newest[KVS_MAX_APPLIANCES] = {};
    heard[2] = 400;                         // answered the kvsteerd before this one, never this one
    heard[3] = 400;                         // as 2, but answers us too (below)
    heard[4] = 0;                           // answered nobody: a new member
    since[2] = since[3] = since[4] = 1000;  // pinged from our first ping
    const MemberSet all = ids({2, 3, 4}), earlier = ids({2, 3});
    // The answer each is judged on (also what fleet status's `unanswered` counts from).
    EXPECT_EQ(judged_answer(1002, 1000, false), 1002u) << "answered us";
    EXPECT_EQ(judged_answer(400, 1000, true), 999u) << "answered the pinger before: just before";
    EXPECT_EQ(judged_answer(400, 1000, false), std::nullopt) << "not in the first set";
    EXPECT_EQ(judged_answer(0, 1000, false), std::nullopt) << "answered nobody";
    EXPECT_EQ(silent_members(all, base, 999, heard, 4, since, newest, nullptr, earlier), 0)
        << "nothing sent yet";
    EXPECT_EQ(silent_members(all, base, 1002, heard, 4, since, newest, nullptr, earlier), 0)
        << "three pings unanswered";
    heard[3] = 1002;  // 3 answers our third ping
    EXPECT_EQ(silent_members(all, base, 1003, heard, 4, since, newest, nullptr, earlier), ids({2}))
        << "four pings unanswered: 2 silent; 3 answered; 4 never answered anyone";
    EXPECT_EQ(silent_members(all, base, 1003, heard, 4, since, newest), 0)
        << "without earlier: 2 never answered this pinger, not silent (the defect)";
    // Pings that failed to send are still no misses.
    std::vector<std::uint64_t> unsent[KVS_MAX_APPLIANCES];
    unsent[2] = {1001};
    EXPECT_EQ(silent_members(ids({2}), base, 1003, heard, 4, since, newest, unsent, earlier), 0);
    EXPECT_EQ(silent_members(ids({2}), base, 1004, heard, 4, since, newest, unsent, earlier),
              ids({2}));
}

// Pings that could not be sent (ENOBUFS, a local link flap) are no misses: the member is judged
// on the pings that left this host. Before, four rounds of send errors made every live member
// silent (taken out of the table, its flows reaching this appliance reset).
TEST(FleetPing, PingsNeverSentAreNoMisses) {
    const std::uint64_t base = 1000;
    std::uint64_t heard[KVS_MAX_APPLIANCES] = {};
    std::vector<std::uint64_t> unsent[KVS_MAX_APPLIANCES];
    heard[2] = heard[3] = 1005;
    unsent[2] = {1003, 1007, 1008};  // 1003: before its answer (no matter); 1006, 1009 were sent
    // 3 was asked every time
    EXPECT_EQ(silent_members(ids({2, 3}), base, 1009, heard, 4), ids({2, 3})) << "without unsent";
    EXPECT_EQ(silent_members(ids({2, 3}), base, 1009, heard, 4, nullptr, nullptr, unsent), ids({3}))
        << "2 was asked twice since its answer, not four times";
    EXPECT_EQ(silent_members(ids({2, 3}), base, 1011, heard, 4, nullptr, nullptr, unsent),
              ids({2, 3}))
        << "two more pings sent, still no answer: silent";
}

TEST(FleetPing, SilentMembersLeaveTheTableAsAForget) {
    // What the daemon publishes (daemon_fleet.cc): the epochs less the silent members, MACs kept.
    auto s = fleet(4, {ids({0, 1, 2}), ids({0, 1, 2, 3})}, 0);
    auto eff = s;
    eff.drop(ids({2}));
    auto forgot = s;
    std::string err;
    ASSERT_TRUE(forgot.forget(2, &err)) << err;
    const auto te = compute_fleet_table(eff), tf = compute_fleet_table(forgot);
    EXPECT_EQ(te.owned[2], 0u);
    EXPECT_EQ(te.digest, tf.digest);
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b += 97) {
        EXPECT_NE(te.owner[b].owner, 2);
        for (unsigned i = 0; i < KVS_OWNER_PREV; i++) EXPECT_NE(te.owner[b].prev[i], 2);
    }
    // Its MAC stays in kvs_fleet (its pongs are heard), with no state.
    EXPECT_EQ(te.members[2].state, KVS_APP_EMPTY);
    EXPECT_EQ(te.members[2].mac[5], (*s.macs[2])[5]);
}
