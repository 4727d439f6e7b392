// FleetPinger itself (fleet_ping.h), rounds and all: three appliances' pingers on one bridge in
// a network namespace private to this process (gone with it, whatever fails), no XDP program
// attached, so each pinger answers the others' pings and records their pongs through its own
// receive socket, as kvsteerd does while its dataplane restarts. fleet_test.cc tests the pure
// rules (silent_members, corroborated_silence, pong_says); this one the thread that applies them.
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/control/fleet_ping.h"
#include "kvsteer/control/net.h"

using namespace kvsteer::control;
using namespace std::chrono_literals;

namespace {

constexpr unsigned kMisses = 4;
constexpr auto kEvery = 10ms;
const char *const kIf[] = {"kvp-a", "kvp-b", "kvp-c"};

// One appliance: what outlives its kvsteerd (the pinned kvs_fleet_heard and kvs_fleet, here
// plain memory) and its pinger.
struct Appliance {
    std::vector<std::uint64_t> heard = std::vector<std::uint64_t>(KVS_FLEET_HEARD_ENTRIES, 0);
    kvs_fleet fleet{};
    std::unique_ptr<FleetPinger> pinger;
};

// kvs_fleet.heard as the pinger's thread writes it.
MemberSet vouches(const Appliance &a) {
    return __atomic_load_n(&a.fleet.heard, __ATOMIC_RELAXED);
}

// Until `cond` holds or 5 s pass (rounds are 10 ms): whether it held.
bool eventually(const std::function<bool()> &cond) {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < end) {
        if (cond()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return cond();
}

constexpr MemberSet bit(unsigned id) {
    return static_cast<MemberSet>(1u << id);
}

class FleetPingerTest : public ::testing::Test {
   protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace); CI runs as root";
        ASSERT_EQ(unshare(CLONE_NEWNET), 0) << std::strerror(errno);  // this process only
        ASSERT_EQ(std::system("ip link add kvp-br type bridge && ip link set kvp-br up && "
                              "for x in a b c; do ip link add kvp-$x address 02:00:00:00:00:0$x "
                              "type veth peer name kvp-${x}1 "
                              "&& ip link set kvp-${x}1 master kvp-br && ip link set kvp-${x}1 up "
                              "&& ip link set kvp-$x up || exit 1; done"),
                  0);
        for (int i = 0; i < 3; i++) macs_[i] = Mac{0x02, 0, 0, 0, 0, std::uint8_t(0x0a + i)};
        // Member 3: configured, never up (no host has its MAC): never answered anyone.
        macs_[3] = Mac{0x02, 0, 0, 0, 0, 0x99};
    }

    using Macs = std::array<std::optional<Mac>, KVS_MAX_APPLIANCES>;
    void start(int id) { start(id, macs_); }
    // `members`: the member set its pinger is first given; `misses`: its fleet-ping-misses.
    void start(int id, const Macs &members, unsigned misses = kMisses) {
        Appliance &a = app_[id];
        a.fleet.self = static_cast<std::uint8_t>(id);
        for (unsigned m = 0; m < KVS_MAX_APPLIANCES; m++)
            if (macs_[m]) std::memcpy(a.fleet.members[m].mac, macs_[m]->data(), 6);
        a.fleet.generation = 1;
        a.pinger = std::make_unique<FleetPinger>(kIf[id], kEvery, misses, a.heard.data(), &a.fleet,
                                                 nullptr);
        std::string err;
        ASSERT_TRUE(a.pinger->start(&err)) << err;
        a.pinger->set_members(static_cast<std::uint8_t>(id), members);
    }
    PingStatus status(int id) { return app_[id].pinger->status(); }
    // Whether `id` has heard from every member in `set` since its pinger started.
    bool answered(int id, MemberSet set) {
        const PingStatus st = status(id);
        for (unsigned m = 0; m < KVS_MAX_APPLIANCES; m++)
            if ((set & bit(m)) && !(st.unanswered[m] && *st.unanswered[m] < kMisses)) return false;
        return true;
    }

    Macs macs_{};
    Appliance app_[3];
};

// Three live pingers hear each other and vouch for each other; the one never up is never judged.
// One stops (its host gone): the other two leave it out after a few rounds, each by itself, as
// nobody answering them hears it. A pinger restarted after that (the same maps) leaves it out too,
// from its own pings: it answered the pinger before this one.
TEST_F(FleetPingerTest, ASilentMemberIsLeftOutByEveryPingerAndByOneRestartedAfterIt) {
    for (int i = 0; i < 3; i++) start(i);
    ASSERT_TRUE(eventually([&] {
        return answered(0, bit(1) | bit(2)) && answered(1, bit(0) | bit(2)) &&
               answered(2, bit(0) | bit(1));
    })) << "the three pingers never heard each other";
    for (int i = 0; i < 3; i++) {
        const PingStatus st = status(i);
        EXPECT_EQ(st.silent, 0) << "appliance " << i;
        EXPECT_EQ(st.silent_here, 0) << "appliance " << i;
        EXPECT_FALSE(st.unanswered[3]) << "member 3 never answered: no count";
        EXPECT_EQ(st.send_errors, 0u) << st.last_error;
        EXPECT_GT(st.answered_here, 0u) << "no XDP program here: the pinger answers";
    }
    // Whom each vouches for (kvs_fleet.heard, carried by its pongs): the other two, not 3.
    EXPECT_TRUE(eventually([&] {
        return vouches(app_[0]) == (bit(1) | bit(2)) && vouches(app_[1]) == (bit(0) | bit(2)) &&
               vouches(app_[2]) == (bit(0) | bit(1));
    })) << vouches(app_[0])
        << " " << vouches(app_[1]) << " " << vouches(app_[2]);

    app_[2].pinger.reset();  // appliance 2 gone: nothing answers its MAC any more
    EXPECT_EQ(app_[2].fleet.heard_until_ns, 0u) << "a stopped pinger vouches for nobody";
    ASSERT_TRUE(eventually([&] {
        return status(0).silent == bit(2) && status(1).silent == bit(2);
    })) << "0: "
        << status(0).silent << ", 1: " << status(1).silent;
    for (int i = 0; i < 2; i++) {
        EXPECT_EQ(status(i).silent_here, bit(2)) << "appliance " << i;
        EXPECT_GE(status(i).unanswered[2].value_or(0), kMisses) << "appliance " << i;
    }

    // Appliance 0's kvsteerd restarts: a new pinger over the same heard map and kvs_fleet.
    app_[0].pinger.reset();
    start(0);
    ASSERT_TRUE(eventually([&] { return answered(0, bit(1)); })) << "the restarted pinger hears 1";
    EXPECT_TRUE(eventually([&] { return status(0).silent == bit(2); }))
        << "restarted, appliance 0 kept the silent member 2 (silent " << status(0).silent << ")";
    const PingStatus st = status(0);
    EXPECT_EQ(st.silent_here, bit(2));
    EXPECT_GE(st.unanswered[2].value_or(0), kMisses) << "counted from its first ping to 2";
    EXPECT_FALSE(st.unanswered[3]) << "member 3 answered nobody: still not judged";
    EXPECT_TRUE(eventually([&] { return status(1).silent == bit(2); }));

    // Restarted once more, first given the members without 2 (as etcd's first view after 2's key
    // expired), then with it (a new box under id 2, not answering yet): a member that joins later
    // is new, never judged, whatever an earlier kvsteerd heard under its id.
    app_[0].pinger.reset();
    Macs without2 = macs_;
    without2[2].reset();
    start(0, without2);
    ASSERT_TRUE(eventually([&] { return answered(0, bit(1)); })) << "the restarted pinger hears 1";
    app_[0].pinger->set_members(0, macs_);
    const std::uint64_t r0 = status(0).rounds;
    ASSERT_TRUE(eventually([&] { return status(0).rounds > r0 + 3 * kMisses; }));
    EXPECT_EQ(status(0).silent_here, 0) << "member 2 joined after the start: judged as new";
    EXPECT_FALSE(status(0).unanswered[2]) << "nor counted";

    // And once more, given 2 at first (it answered the pinger before), which then leaves the set
    // before it could be judged (50 misses here) and comes back: new as well.
    constexpr unsigned kSlow = 50;
    app_[0].pinger.reset();
    start(0, macs_, kSlow);
    ASSERT_TRUE(eventually([&] { return status(0).unanswered[2].has_value(); }))
        << "counted from our first ping to it (it answered the pinger before)";
    app_[0].pinger->set_members(0, without2);
    const std::uint64_t r1 = status(0).rounds;
    ASSERT_TRUE(eventually([&] { return status(0).rounds > r1 + 1; }));
    EXPECT_FALSE(status(0).unanswered[2]) << "not pinged now";
    app_[0].pinger->set_members(0, macs_);
    const std::uint64_t r2 = status(0).rounds;
    ASSERT_TRUE(eventually([&] { return status(0).rounds > r2 + kSlow + 2; }));
    EXPECT_EQ(status(0).silent_here, 0) << "member 2 left and came back: judged as new";
}

}  // namespace
