// choose_backend: the dataplane's backend choice over tables in plain memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/choose.h"
#include "kvsteer/core/load_bound.h"
#include "kvsteer/core/maglev.h"

namespace kvsteer {
namespace {

struct Mem {
    kvs_config config{};
    std::vector<kvs_backend> backends = std::vector<kvs_backend>(KVS_MAX_BACKENDS);
    std::vector<kvs_backend_load> load = std::vector<kvs_backend_load>(KVS_MAX_BACKENDS);
    std::vector<std::uint32_t> maglev =
        std::vector<std::uint32_t>(2 * KVS_MAGLEV_SIZE, KVS_BACKEND_NONE);
    std::vector<kvs_affinity_entry> affinity =
        std::vector<kvs_affinity_entry>(2 * KVS_AFFINITY_SLOTS);
    std::unique_ptr<ChooseScratch> scratch = std::make_unique<ChooseScratch>();

    explicit Mem(std::uint32_t n) {
        config.n_backends = n;
        config.steer_mode = KVS_STEER_PREFIX;
        std::vector<MaglevBackend> mb;
        for (std::uint32_t i = 0; i < n; ++i) {
            backends[i].state = KVS_BE_UP;
            backends[i].weight = 1;
            mb.push_back({i, 0x5000 + i * 0x9e3779b97f4a7c15ULL, 1});
        }
        const auto table = build_maglev(mb);
        std::copy(table.begin(), table.end(), maglev.begin());
    }
    Tables tables() {
        Tables t;
        t.config = &config;
        t.backends = backends.data();
        t.load = load.data();
        t.maglev = maglev.data();
        t.affinity = affinity.data();
        return t;
    }
    void set_in_flight(std::uint32_t id, std::uint64_t n) { load[id].binds = load[id].closes + n; }
    void pin(std::uint64_t key, std::vector<std::uint16_t> ids, std::uint8_t depth = 0) {
        AffinityBuilder b;
        ASSERT_TRUE(b.insert(key, ids, depth));
        std::copy(b.table().begin(), b.table().end(), affinity.begin());  // half 0 (active)
    }
    Choice choose(std::uint64_t prefix, std::span<const std::uint16_t> exclude = {}) {
        PrefixHashes h;
        h.prefix = prefix;
        return choose_backend(tables(), h, prefix, exclude, *scratch);
    }
    // A flight of `blocks` chained block hashes (and a fixed-prefix hash), of a prompt of
    // `prompt_blocks` blocks in all (0: unknown).
    Choice choose_blocks(std::uint64_t prefix, std::vector<std::uint64_t> blocks,
                         std::uint32_t prompt_blocks = 0) {
        PrefixHashes h;
        h.prefix = prefix;
        h.prompt_blocks = prompt_blocks;
        h.n_blocks = static_cast<std::uint32_t>(blocks.size());
        std::copy(blocks.begin(), blocks.end(), h.blocks.begin());
        return choose_backend(tables(), h, prefix, {}, *scratch);
    }
};

TEST(CoreChoose, NothingEligible) {
    Mem m(4);
    for (auto &b : m.backends) b.state = KVS_BE_DOWN;
    EXPECT_EQ(m.choose(7).backend, KVS_BACKEND_NONE);
    Mem empty(0);
    EXPECT_EQ(empty.choose(7).backend, KVS_BACKEND_NONE);
}

TEST(CoreChoose, AffinityLeastLoadedReplica) {
    Mem m(4);
    m.pin(0x1234, {2, 3});
    m.set_in_flight(2, 1);
    Choice c = m.choose(0x1234);
    EXPECT_EQ(c.backend, 3);
    EXPECT_EQ(c.via, KVS_VIA_AFFINITY);
}

TEST(CoreChoose, AffinityRespectsTheLoadBoundAndItsDefault) {
    // Three backends holding 4, 1 and 4: (total + 1) / n = 10 / 3, so c = 1 bounds at 4 and
    // c = 1.25 at 5; a slack of 1 puts the floor at 1 + 1 + 1 = 3, below both.
    Mem m(3);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 4);
    m.set_in_flight(1, 1);
    m.set_in_flight(2, 4);
    m.config.load_slack = 1;
    m.config.load_factor_milli = 0;  // the default, 1.25: backend 0 may take a 5th
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.config.load_factor_milli = 1000;  // c = 1: it may not; the least loaded takes the flow
    Choice c = m.choose(0x1234);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_EQ(c.backend, 1);
}

TEST(CoreChoose, AffinityHolderKeepsFlowsWithinTheSlackOfTheLeastLoaded) {
    // Four backends, the holder at 5 and the rest at 1: c x the mean alone bounds at
    // ceil(1.25 x 9 / 4) = 3, which would move the prefix off its cache on a blip of load.
    Mem m(4);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 5);
    for (std::uint32_t i = 1; i < 4; ++i) m.set_in_flight(i, 1);
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);  // default slack: bound 1 + 1 + 32
    m.config.load_slack = 4;                            // bound max(3, 1 + 1 + 4) = 6
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.set_in_flight(0, 6);  // a 7th would pass 6: the least loaded backends take it
    Choice c = m.choose(0x1234);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_GE(c.backend, 1);
    EXPECT_LT(c.backend, 4);
    // 0 in kvs_config is the default (KVS_DEFAULT_LOAD_SLACK), not "no slack".
    m.config.load_slack = 0;
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.set_in_flight(0, 1 + KVS_DEFAULT_LOAD_SLACK + 1);  // more than slack above the least
    EXPECT_NE(m.choose(0x1234).via, KVS_VIA_AFFINITY);
}

TEST(CoreChoose, AffinityBoundIsCTimesTheMeanUnderLoad) {
    // Holder at 130, the other at 100: c = 1.25 bounds at ceil(1.25 x 231 / 2) = 145, far above
    // the slack's floor (100 + 1 + 4); c = 1 at 116, which the holder has passed.
    Mem m(2);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 130);
    m.set_in_flight(1, 100);
    m.config.load_slack = 4;
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.config.load_factor_milli = 1000;
    Choice c = m.choose(0x1234);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_EQ(c.backend, 1);
}

TEST(CoreChoose, MissGoesToTheLeastLoadedTiesByConsistentHash) {
    Mem m(8);
    // Idle: the table's choice for the prefix, every time.
    const Choice first = m.choose(0xabcdef);
    ASSERT_LT(first.backend, 8);
    EXPECT_EQ(first.via, KVS_VIA_MAGLEV);
    EXPECT_EQ(m.choose(0xabcdef).backend, first.backend);
    // It holds one more than the others: the next backend of the walk, counted as a spill.
    m.set_in_flight(first.backend, 1);
    const Choice second = m.choose(0xabcdef);
    EXPECT_NE(second.backend, first.backend);
    EXPECT_EQ(second.via, KVS_VIA_MAGLEV_SPILL);
    // Equal again: back to the table's choice.
    for (std::uint32_t i = 0; i < 8; ++i) m.set_in_flight(i, 1);
    EXPECT_EQ(m.choose(0xabcdef).backend, first.backend);
    // The least loaded wins wherever it is in the walk.
    m.set_in_flight(5, 0);
    EXPECT_EQ(m.choose(0xabcdef).backend, 5);
}

TEST(CoreChoose, UnderLoadAMissKeepsItsHashsBackendWithinTheTolerance) {
    // Loads around 100: a tenth of the mean = 9 of tolerance, so the hash's own backend keeps a
    // new prefix while it is within 9 of the least loaded, and the least loaded takes it after.
    Mem m(8);
    const std::uint16_t own = m.choose(0xabcdef).backend;
    ASSERT_LT(own, 8);
    const std::uint16_t least = 3 == own ? 4 : 3;
    for (std::uint32_t i = 0; i < 8; ++i) m.set_in_flight(i, 100);
    m.set_in_flight(least, 95);  // the least loaded: 95
    m.set_in_flight(own, 104);   // 9 above it, within floor(799 / 8 / 10) = 9
    Choice c = m.choose(0xabcdef);
    EXPECT_EQ(c.backend, own);
    EXPECT_EQ(c.via, KVS_VIA_MAGLEV);
    m.set_in_flight(own, 105);  // 10 above, within floor(800 / 8 / 10) = 10
    EXPECT_EQ(m.choose(0xabcdef).backend, own);
    m.set_in_flight(own, 110);  // 15 above: past floor(805 / 8 / 10) = 10
    c = m.choose(0xabcdef);
    EXPECT_NE(c.backend, own);
    EXPECT_EQ(c.via, KVS_VIA_MAGLEV_SPILL);
    // The load factor plays no part in the tolerance.
    m.config.load_factor_milli = 1000;
    m.set_in_flight(own, 104);
    EXPECT_EQ(m.choose(0xabcdef).backend, own);
}

TEST(CoreChoose, MissesOfASharedPreambleSpreadOverEveryBackend) {
    // Every request opens with the same bytes (one prefix hash) and no affinity entry matches:
    // the misses no longer all land on one backend until it passes its bound.
    // The loads stay within 1 + miss_tolerance (floor(mean / 10)) of each other.
    Mem m(8);
    std::vector<std::uint64_t> held(8, 0);
    for (int i = 0; i < 64; ++i) {
        const Choice c = m.choose(0x5eed);
        ASSERT_LT(c.backend, 8);
        m.set_in_flight(c.backend, ++held[c.backend]);
        const auto [lo, hi] = std::minmax_element(held.begin(), held.end());
        ASSERT_LE(*hi - *lo, 1 + miss_tolerance(static_cast<double>(i), 8)) << i;
    }
    for (std::uint32_t i = 0; i < 8; ++i) EXPECT_GE(held[i], 6u) << i;
}

TEST(CoreChoose, ABurstFollowsItsFirstRequestUntilTheTableKnowsIt) {
    // A new prefix's first request is a miss; the worker remembers where it went, and the next
    // requests sharing its blocks follow it (within the affinity bound) while the table has no
    // deeper match, for kRecentGenerations generations.
    Mem m(8);
    const Choice first = m.choose_blocks(0xabc, {0xb1, 0xb2});
    ASSERT_LT(first.backend, 8);
    EXPECT_EQ(first.via, KVS_VIA_MAGLEV);
    const std::uint16_t own = first.backend;
    m.set_in_flight(own, 3);  // a miss would go elsewhere now (tolerance 0 at light load)
    Choice c = m.choose_blocks(0xabc, {0xb1, 0xb2, 0xb3});
    EXPECT_EQ(c.backend, own);
    EXPECT_EQ(c.via, KVS_VIA_AFFINITY);
    EXPECT_NE(m.choose(0xabc).backend, own);  // the prefix alone (no block) is a plain miss
    // Past the bound (least + 1 + slack = 0 + 1 + 4), not followed.
    m.config.load_slack = 4;
    m.set_in_flight(own, 5);
    c = m.choose_blocks(0xabc, {0xb1, 0xb2});
    EXPECT_NE(c.backend, own);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    // The table's match as deep as the worker's wins.
    m.config.load_slack = 0;
    m.set_in_flight(own, 3);
    const std::uint16_t other = own == 0 ? 1 : 0;
    m.pin(0xb3, {other}, 2);
    EXPECT_EQ(m.choose_blocks(0xabc, {0xb1, 0xb2, 0xb3}).backend, other);
    // Valid for kRecentGenerations publishes, then a plain miss.
    const Choice a = m.choose_blocks(0xde1, {0xc1});
    const Choice b = m.choose_blocks(0xde2, {0xd1});
    m.set_in_flight(a.backend, 3);
    m.set_in_flight(b.backend, 3);
    m.config.generation += kRecentGenerations;
    EXPECT_EQ(m.choose_blocks(0xde1, {0xc1}).backend, a.backend);
    m.config.generation += 1;
    EXPECT_NE(m.choose_blocks(0xde2, {0xd1}).backend, b.backend);
}

TEST(CoreChoose, WorkersSharingRecentChoicesFollowEachOther) {
    // Two workers (two scratches) over one RecentChoices, as the dataplane's workers: a prefix
    // first sent by one is followed by the other; with their own tables they do not see it.
    Mem m(8);
    auto shared = std::make_unique<RecentChoices>();
    auto other = std::make_unique<ChooseScratch>();
    m.scratch->recent = shared.get();
    other->recent = shared.get();
    const Choice first = m.choose_blocks(0xabc, {0xb1, 0xb2});
    ASSERT_LT(first.backend, 8);
    m.set_in_flight(first.backend, 3);
    PrefixHashes h;
    h.prefix = 0xabc;
    h.n_blocks = 2;
    h.blocks[0] = 0xb1;
    h.blocks[1] = 0xb2;
    Choice c = choose_backend(m.tables(), h, 1, {}, *other);
    EXPECT_EQ(c.backend, first.backend);
    EXPECT_EQ(c.via, KVS_VIA_AFFINITY);
    auto alone = std::make_unique<ChooseScratch>();
    c = choose_backend(m.tables(), h, 1, {}, *alone);
    EXPECT_NE(c.backend, first.backend);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
}

TEST(CoreChoose, AHolderThatTookACohortJustNowLosesTheNextFlowsUntilItsIntakeDecays) {
    // The intake gate: the holder's decayed intake + 1 must stay within c x (the mean intake,
    // this flow counted) + kIntakeSlack. Four idle backends (in-flight counts never gate here),
    // all intake on the holder: v + 1 <= 1.25 x (v + 1) / 4 + 6 holds for v <= 7, so 8 flows
    // in one instant follow the table and the 9th goes elsewhere.
    Mem m(4);
    m.pin(0x1234, {0});
    m.scratch->now_ns = 1'000'000'000;
    for (int i = 0; i < 8; ++i) {
        const Choice c = m.choose(0x1234);
        EXPECT_EQ(c.backend, 0) << i;
        EXPECT_EQ(c.via, KVS_VIA_AFFINITY) << i;
    }
    Choice c = m.choose(0x1234);
    EXPECT_NE(c.backend, 0);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    // Ten half-lives later the intake is ~1/1000 of what it was: the holder takes it again.
    m.scratch->now_ns += 10 * kIntakeHalfLifeNs;
    c = m.choose(0x1234);
    EXPECT_EQ(c.backend, 0);
    EXPECT_EQ(c.via, KVS_VIA_AFFINITY);
    // Flows spread in time are not gated: one every half-life keeps the holder's intake below 2.
    for (int i = 0; i < 50; ++i) {
        m.scratch->now_ns += kIntakeHalfLifeNs;
        EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY) << i;
    }
    // No clock (now_ns 0): no gate; the same instant's 20 flows all follow the table.
    Mem off(4);
    off.pin(0x1234, {0});
    for (int i = 0; i < 20; ++i) EXPECT_EQ(off.choose(0x1234).via, KVS_VIA_AFFINITY) << i;
}

TEST(CoreChoose, AGatedHolderIsNotTheMissRulesToChoose) {
    // The returning cohort: the holder is the least loaded by count, so the miss rule alone
    // would hand a refused flow straight back to it; it sits the choice out instead.
    Mem m(4);
    m.pin(0x1234, {0});
    for (std::uint32_t i = 1; i < 4; ++i) m.set_in_flight(i, 10);
    m.scratch->now_ns = 1'000'000'000;
    for (int i = 0; i < 8; ++i) ASSERT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY) << i;
    const Choice c = m.choose(0x1234);  // the 9th is refused, and goes to another backend
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_NE(c.backend, 0);
    EXPECT_LT(c.backend, 4);
    // (That flow raised the mean: 9 + 1 <= 1.25 x 10 / 4 + 6 lets the holder take the next.)
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    // Refused with no other backend eligible, it still takes the flow (a refusal is no outage).
    Mem one(4);
    one.pin(0x1234, {0});
    for (std::uint32_t i = 1; i < 4; ++i) one.backends[i].state = KVS_BE_DOWN;
    one.scratch->now_ns = 1'000'000'000;
    for (int i = 0; i < 20; ++i) EXPECT_EQ(one.choose(0x1234).backend, 0) << i;
}

TEST(CoreChoose, TheIntakeGatesMeanIsTheHoldersFamilys) {
    // 4 IPv4 and 4 IPv6 backends: a busy IPv6 side does not loosen the IPv4 gate (its mean is
    // the IPv4 count over the 4 IPv4 backends): 8 IPv4 flows in one instant follow the table,
    // the 9th does not, as with no IPv6 traffic at all.
    Mem m(8);
    for (std::uint32_t i = 0; i < 8; ++i) m.backends[i].family = i < 4 ? KVS_AF_INET : KVS_AF_INET6;
    m.pin(0x1234, {0});
    m.scratch->now_ns = 1'000'000'000;
    auto choose = [&](std::uint64_t prefix, std::uint8_t family) {
        PrefixHashes h;
        h.prefix = prefix;
        return choose_backend(m.tables(), h, prefix, {}, *m.scratch, family);
    };
    for (int i = 0; i < 400; ++i) {
        const Choice c = choose(0x9000 + i, KVS_AF_INET6);  // misses, spread over the IPv6 four
        ASSERT_GE(c.backend, 4);
    }
    for (int i = 0; i < 8; ++i) {
        const Choice c = choose(0x1234, KVS_AF_INET);
        EXPECT_EQ(c.backend, 0) << i;
        EXPECT_EQ(c.via, KVS_VIA_AFFINITY) << i;
    }
    const Choice c = choose(0x1234, KVS_AF_INET);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_LT(c.backend, 4);
}

TEST(CoreChoose, ARecentChoiceIsGatedByIntakeToo) {
    // A new prefix's burst follows its first request (a recent choice) only while the intake
    // gate allows: the miss and 7 followers in one instant, then the 9th flow goes elsewhere.
    Mem m(8);
    m.scratch->now_ns = 5'000'000'000;
    const Choice first = m.choose_blocks(0xabc, {0xb1, 0xb2});
    ASSERT_LT(first.backend, 8);
    m.set_in_flight(first.backend, 3);  // a miss would go elsewhere (tolerance 0 at light load)
    int followed = 0;
    Choice c;
    for (int i = 0; i < 20; ++i) {
        c = m.choose_blocks(0xabc, {0xb1, 0xb2});
        if (c.backend != first.backend) break;
        EXPECT_EQ(c.via, KVS_VIA_AFFINITY);
        ++followed;
    }
    // v + 1 <= 1.25 x (v + 1) / 8 + 6 holds for v <= 6: the miss (v = 0) and followers at
    // v = 1..6.
    EXPECT_EQ(followed, 6);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
}

TEST(CoreChoose, AShallowMatchGetsAShareOfTheSlack) {
    // A match on the first of a flight's 4 blocks gets a quarter of the slack (32 / 4 = 8): its
    // holder keeps requests up to least + 1 + 8; one on the last block, the whole slack.
    const std::vector<std::uint64_t> flight = {0xb0, 0xb1, 0xb2, 0xb3};
    Mem m(4);
    m.pin(0xb0, {2}, 0);
    m.set_in_flight(2, 8);  // 9 <= 0 + 1 + 8
    EXPECT_EQ(m.choose_blocks(0xabc, flight).backend, 2);
    m.scratch = std::make_unique<ChooseScratch>();  // no recent choices
    m.set_in_flight(2, 9);                          // 10 > 9
    EXPECT_NE(m.choose_blocks(0xabc, flight).backend, 2);
    m.scratch = std::make_unique<ChooseScratch>();
    m.pin(0xb3, {2}, 3);
    m.set_in_flight(2, 20);  // 21 <= 0 + 1 + 32
    EXPECT_EQ(m.choose_blocks(0xabc, flight).backend, 2);
}

TEST(CoreChoose, AtLightLoadAHolderBusyWithALongPromptLosesAMatch) {
    // Backend 2 holds the whole 4-block flight. A 1000-block prompt bound there makes its
    // estimated work 1000 blocks while its count of flows (1) is well within the slack.
    const std::vector<std::uint64_t> flight = {0xc0, 0xc1, 0xc2, 0xc3};
    Mem m(4);
    m.pin(0xc3, {2}, 3);
    EXPECT_EQ(m.choose_blocks(0xabc, flight, 1000).backend, 2);
    m.set_in_flight(2, 1);
    // A 10-block prompt would save at most 10 blocks: 1000 > 0 + 12 x 10, and 1010 is above
    // c x the mean work (1.25 x 1010 / 4): it goes elsewhere.
    Choice c = m.choose_blocks(0xabc, flight, 10);
    EXPECT_NE(c.backend, 2);
    m.set_in_flight(c.backend, 1);
    // A 100-block prompt may save 100: 1000 <= 10 + 12 x 100, the holder keeps it.
    EXPECT_EQ(m.choose_blocks(0xabc, flight, 100).backend, 2);
    m.set_in_flight(2, 2);
    // A match of only part of the flight is gated with kWorkGatePartialRatio (24): a 10-block
    // prompt goes elsewhere (1100 > 0 + 24 x 10), a 50-block one stays (1100 <= 0 + 24 x 50,
    // where a whole-flight match would allow only 12 x 50).
    m.pin(0xc1, {2}, 1);
    EXPECT_NE(m.choose_blocks(0xabd, {0xc0, 0xc1, 0xd2, 0xd3}, 10).backend, 2);
    EXPECT_EQ(m.choose_blocks(0xabe, {0xc0, 0xc1, 0xe2, 0xe3}, 50).backend, 2);
    m.set_in_flight(2, 3);
    // Under load (c x the mean above the least + 1 + slack) the gate does not apply.
    m.pin(0xc3, {2}, 3);
    for (std::uint32_t i = 0; i < 4; ++i) m.set_in_flight(i, 200);
    EXPECT_EQ(m.choose_blocks(0xabc, flight, 10).backend, 2);
    // Once the holder's flows have all closed, its estimated work is 0 again.
    m.scratch = std::make_unique<ChooseScratch>();
    for (std::uint32_t i = 0; i < 4; ++i) m.set_in_flight(i, 0);
    EXPECT_EQ(m.choose_blocks(0xabc, flight, 1000).backend, 2);
    m.set_in_flight(2, 1);
    EXPECT_NE(m.choose_blocks(0xabc, flight, 10).backend, 2);
    m.set_in_flight(2, 0);  // closed
    EXPECT_EQ(m.choose_blocks(0xabc, flight, 10).backend, 2);
}

TEST(CoreChoose, MaxLoadReplacesTheBoundForAffinity) {
    Mem m(2);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 10);
    m.config.load_factor_milli = 1000;
    m.config.load_slack = 1;      // bound max(c x the mean, 0 + 1 + 1): ~5
    m.backends[0].max_load = 11;  // over the load-factor bound, within max_load
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.backends[0].max_load = 10;  // in_flight + 1 > max_load
    EXPECT_NE(m.choose(0x1234).via, KVS_VIA_AFFINITY);
}

// kvsteerd's queue cap (max_load_cap) is the flows a backend had when it began to queue: it
// applies with the load-factor bound, not in its place (frozen above the bound, it let the
// backend take flows the bound refused as its flows closed).
TEST(CoreChoose, QueueCapAppliesWithTheBound) {
    Mem m(2);
    m.pin(0x1234, {0});
    m.config.load_factor_milli = 1000;
    m.config.load_slack = 1;
    m.backends[0].max_load_cap = 1;
    m.set_in_flight(1, 2);
    m.set_in_flight(0, 10);       // bound max(c x the mean, 2 + 1 + 1): ~6
    m.backends[0].max_load = 11;  // within the cap, over the load-factor bound
    EXPECT_NE(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.backends[0].max_load_cap = 0;  // the same max_load, static: in place of the bound
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.backends[0].max_load_cap = 1;
    m.set_in_flight(0, 2);       // within the bound (4)...
    m.backends[0].max_load = 3;  // ...and the cap
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.backends[0].max_load = 2;  // within the bound, at the cap
    EXPECT_NE(m.choose(0x1234).via, KVS_VIA_AFFINITY);
}

TEST(CoreChoose, ExcludedBackendsAreRetries) {
    Mem m(3);
    m.pin(0x1234, {1});
    const std::uint16_t tried[] = {1};
    Choice c = m.choose(0x1234, tried);
    EXPECT_NE(c.backend, 1);
    EXPECT_LT(c.backend, 3);
    EXPECT_EQ(c.via, KVS_VIA_RETRY);
}

// A backend of weight 0 is out of rotation (kvsteerd's tables leave it out): no choice takes it,
// whatever its load. Before, it was chosen as the least loaded backend (after a walk of the
// whole Maglev table, which has no slot for it), and made a replica of hot prefixes.
TEST(CoreChoose, WeightZeroIsNeverChosen) {
    Mem m(4);
    std::vector<MaglevBackend> mb;
    for (std::uint32_t i = 0; i < 3; ++i) mb.push_back({i, 0x5000 + i * 0x9e3779b97f4a7c15ULL, 1});
    const auto table = build_maglev(mb);  // backend 3 in no slot, as kvsteerd publishes it
    std::copy(table.begin(), table.end(), m.maglev.begin());
    m.backends[3].weight = 0;
    for (std::uint32_t i = 0; i < 3; ++i) m.set_in_flight(i, 5);  // 3 is the least loaded
    m.pin(0x77, {3, 1});
    for (std::uint64_t p = 1; p <= 200; ++p) {
        const Choice c = m.choose(p * 0x9e3779b97f4a7c15ULL);
        ASSERT_NE(c.backend, KVS_BACKEND_NONE);
        ASSERT_NE(c.backend, 3) << "prefix " << p;
    }
    EXPECT_EQ(m.choose(0x77).backend, 1) << "an affinity entry naming it too";
    m.config.steer_mode = KVS_STEER_ROUND_ROBIN;
    for (int i = 0; i < 8; ++i) ASSERT_NE(m.choose(0).backend, 3);
}

// Weights set each backend's share of the flows, not only the order of the Maglev walk: loads
// compare per unit of weight. Before, the least-loaded rule for misses and the bounded-load rule
// split flows equally whatever the weights (1:3 gave 52-55% to the heavier, not 75%).
TEST(CoreChoose, WeightsSetEachBackendsShareOfTheFlows) {
    Mem m(2);
    std::vector<MaglevBackend> mb{{0, 0x5000, 1}, {1, 0x5000 + 0x9e3779b97f4a7c15ULL, 3}};
    const auto table = build_maglev(mb);
    std::copy(table.begin(), table.end(), m.maglev.begin());
    m.backends[1].weight = 3;
    // Flows that stay (nothing closes): each choice adds one to its backend.
    std::uint32_t got[2] = {0, 0};
    for (std::uint64_t p = 1; p <= 400; ++p) {
        const Choice c = m.choose(p * 0x9e3779b97f4a7c15ULL);
        ASSERT_LT(c.backend, 2u);
        ++got[c.backend];
        ++m.load[c.backend].binds;
    }
    // 300 exactly but for the miss rule's tolerance (a tenth of the mean, per unit of weight).
    EXPECT_NEAR(got[1], 300.0, 10.0) << "backend 1 of weight 3 took " << got[1] << " of 400";
    // The affinity bound scales too: under load (slack 1, so c x the mean rules) a holder of
    // weight 3 among three of weight 1 (mean 1.5: shares 2, 2/3, 2/3, 2/3) keeps a prefix up to
    // twice c x the mean flows.
    Mem a(4);
    a.config.load_slack = 1;
    a.backends[0].weight = 3;
    for (std::uint32_t i = 1; i < 4; ++i) a.set_in_flight(i, 60);
    a.pin(0x77, {0});
    a.set_in_flight(0, 119);  // c x mean = ceil(1.25 x 300 / 4) = 94, x 2 = 188
    EXPECT_EQ(a.choose(0x77).backend, 0);
    a.set_in_flight(0, 310);  // ceil(1.25 x 491 / 4) = 154, x 2 = 308 < 311
    EXPECT_NE(a.choose(0x77).backend, 0);
    // A holder far below the mean weight (1 beside 100s: bound x share < 1) still takes a flow
    // with none in flight: not out of rotation.
    Mem low(3);
    low.backends[1].weight = 100;
    low.backends[2].weight = 100;
    low.pin(0x88, {0});
    EXPECT_EQ(low.choose(0x88).backend, 0);
    a.backends[0].weight = 1;
    a.set_in_flight(0, 119);
    EXPECT_NE(a.choose(0x77).backend, 0) << "the same load on an equal-weight holder is over";
}

// The caller's pending flows (chosen, not yet in the binds) count as in flight.
TEST(CoreChoose, PendingFlowsCountAsInFlight) {
    Mem m(2);
    m.scratch->pending[0] = 50;
    for (std::uint64_t p = 1; p <= 50; ++p)
        ASSERT_EQ(m.choose(p * 0x9e3779b97f4a7c15ULL).backend, 1) << "prefix " << p;
    m.pin(0x99, {0});
    EXPECT_NE(m.choose(0x99).backend, 0) << "beyond the bound by its pending flows alone";
}

// Kept-alive connections idle between requests (XDP's idle_starts - idle_ends) are no load: a
// backend holding 40 such connections and one request is less loaded than one with 2 requests.
TEST(CoreChoose, IdleConnectionsAreNotInFlight) {
    Mem m(2);
    m.set_in_flight(0, 41);
    m.load[0].idle_starts = 45;  // 40 of its connections idle now
    m.load[0].idle_ends = 5;
    m.set_in_flight(1, 2);
    for (std::uint64_t p = 1; p <= 20; ++p)
        ASSERT_EQ(m.choose(p * 0x9e3779b97f4a7c15ULL).backend, 0) << "prefix " << p;
    EXPECT_EQ(m.scratch->in_flight[0], 1u);
    // All 40 back to work: the other is the less loaded.
    m.load[0].idle_ends = 45;
    for (std::uint64_t p = 1; p <= 20; ++p)
        ASSERT_EQ(m.choose(p * 0x9e3779b97f4a7c15ULL).backend, 1) << "prefix " << p;
    // The two counters read torn (ends ahead of starts): never below zero idle.
    m.load[0].idle_ends = 46;
    m.choose(0x1234);
    EXPECT_EQ(m.scratch->in_flight[0], 41u);
}

TEST(CoreChoose, RoundRobinSkipsDownBackends) {
    Mem m(3);
    m.config.steer_mode = KVS_STEER_ROUND_ROBIN;
    m.backends[1].state = KVS_BE_DRAIN;
    std::vector<std::uint16_t> got;
    for (int i = 0; i < 4; ++i) {
        Choice c = m.choose(0);
        EXPECT_EQ(c.via, KVS_VIA_ROUND_ROBIN);
        got.push_back(c.backend);
    }
    EXPECT_EQ(got, (std::vector<std::uint16_t>{0, 2, 0, 2}));
}

TEST(CoreChoose, FiveTupleIgnoresLoad) {
    Mem m(4);
    m.config.steer_mode = KVS_STEER_FIVE_TUPLE;
    const std::uint16_t first = m.choose(99).backend;
    ASSERT_LT(first, 4);
    m.set_in_flight(first, 1000000);
    EXPECT_EQ(m.choose(99).backend, first);
    EXPECT_EQ(m.choose(99).via, KVS_VIA_MAGLEV);
}

}  // namespace
}  // namespace kvsteer
