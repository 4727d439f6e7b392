// Consistent hashing with bounded loads over a Maglev table, checked against a plain reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kvsteer/core/maglev.h"

namespace kvsteer {
namespace {

struct Fixture {
    std::vector<std::uint32_t> table;
    std::vector<std::uint32_t> load;
    std::vector<std::uint8_t> eligible;
    LoadView view() const { return LoadView{load, eligible}; }
};

Fixture make(std::uint32_t n, std::uint32_t size = 4093) {
    Fixture f;
    std::vector<MaglevBackend> b;
    for (std::uint32_t i = 0; i < n; ++i) b.push_back({i, 0x1000 + i * 0x9e3779b97f4a7c15ULL, 1});
    f.table = build_maglev(b, size);
    f.load.assign(n, 0);
    f.eligible.assign(n, 1);
    return f;
}

// The rule as stated in maglev.h, walked naively.
struct Expected {
    std::uint32_t id;
    bool spilled;
};
Expected reference(const Fixture &f, std::uint64_t hash, double c) {
    std::uint64_t total = 0, n = 0;
    for (std::size_t i = 0; i < f.load.size(); ++i)
        if (f.eligible[i]) total += f.load[i], ++n;
    if (n == 0) return {KVS_BACKEND_NONE, false};
    const double bound =
        std::ceil(std::max(c, 1.0) * static_cast<double>(total + 1) / static_cast<double>(n));
    bool first = true;
    for (std::size_t k = 0; k < f.table.size(); ++k) {
        const std::uint32_t id = f.table[(hash + k) % f.table.size()];
        if (!f.eligible[id]) continue;
        if (f.load[id] + 1 <= bound) return {id, !first};
        first = false;
    }
    return {KVS_BACKEND_NONE, true};  // every eligible backend over its bound
}

TEST(CoreBounded, NoneOnlyWhenNothingEligible) {
    Fixture f = make(8);
    f.eligible.assign(8, 0);
    bool spilled = true;
    EXPECT_EQ(choose_bounded(f.table, 42, f.view(), 1.25, &spilled), KVS_BACKEND_NONE);
    EXPECT_FALSE(spilled);
    EXPECT_EQ(choose_bounded({}, 42, LoadView{}, 1.25), KVS_BACKEND_NONE);
    f.eligible[5] = 1;
    f.load[5] = 1000000;
    EXPECT_EQ(choose_bounded(f.table, 42, f.view(), 1.25), 5u);
    // Eligible but absent from the table (weight 0): still chosen rather than NONE.
    Fixture g = make(8);
    g.eligible.assign(8, 0);
    g.load.push_back(3);
    g.eligible.push_back(1);
    EXPECT_EQ(choose_bounded(g.table, 7, g.view(), 1.25), 8u);
}

TEST(CoreBounded, MatchesReferenceOnRandomStates) {
    std::mt19937_64 rng(99);
    for (const std::uint32_t n : {1u, 2u, 8u, 64u, 300u}) {
        Fixture f = make(n);
        for (int iter = 0; iter < 400; ++iter) {
            for (std::uint32_t i = 0; i < n; ++i) {
                f.load[i] = static_cast<std::uint32_t>(rng() % 50);
                f.eligible[i] = (rng() % 5) != 0;
            }
            if (iter % 7 == 0) f.load[rng() % n] = 100000;  // one hot backend
            const std::uint64_t hash = rng();
            const double c = 1.0 + static_cast<double>(rng() % 100) / 100.0;
            LoadView view = f.view();
            if (iter % 2 == 1) {  // caller-supplied summary must give the same answers
                for (std::uint32_t i = 0; i < n; ++i) {
                    view.n_eligible += f.eligible[i];
                    view.total_in_flight += f.eligible[i] ? f.load[i] : 0;
                }
            }
            bool spilled = false;
            const std::uint32_t got = choose_bounded(f.table, hash, view, c, &spilled);
            const Expected want = reference(f, hash, c);
            ASSERT_EQ(got, want.id) << "n=" << n << " iter=" << iter;
            if (got != KVS_BACKEND_NONE) {
                EXPECT_TRUE(f.eligible[got]);
                EXPECT_EQ(spilled, want.spilled);
            }
        }
    }
}

TEST(CoreBounded, BoundHoldsUnderSustainedLoad) {
    // Everyone asks for the same prefix: the load spreads, nobody exceeds c x mean (+1).
    Fixture f = make(8);
    const double c = 1.25;
    int spills = 0;
    for (int k = 0; k < 4000; ++k) {
        bool spilled = false;
        const std::uint32_t id = choose_bounded(f.table, 12345, f.view(), c, &spilled);
        ASSERT_LT(id, 8u);
        spills += spilled;
        ++f.load[id];
        std::uint64_t total = 0;
        for (const auto l : f.load) total += l;
        EXPECT_LE(f.load[id], std::ceil(c * static_cast<double>(total) / 8.0));
    }
    EXPECT_GT(spills, 0);
    // Without contention the first candidate wins and nothing spills.
    Fixture g = make(8);
    bool spilled = true;
    const std::uint32_t first = choose_bounded(g.table, 777, g.view(), c, &spilled);
    EXPECT_EQ(first, g.table[777 % g.table.size()]);
    EXPECT_FALSE(spilled);
}

TEST(CoreBounded, AllOverloadedTerminatesWithLeastLoaded) {
    // Only backends 0 and 1 are in the table; backend 2 is eligible, idle and absent, so the
    // bound (ceil(1.25 * 23 / 3) = 10) is exceeded by every backend the walk can reach.
    Fixture f;
    std::vector<MaglevBackend> b = {{0, 11, 1}, {1, 22, 1}};
    f.table = build_maglev(b, 65537);
    f.load = {12, 10, 0};
    f.eligible = {1, 1, 1};
    bool spilled = false;
    EXPECT_EQ(choose_bounded(f.table, 5, f.view(), 1.25, &spilled), 1u);
    EXPECT_TRUE(spilled);
    // A load factor below 1 is treated as 1, never as "nobody fits".
    Fixture g = make(8);
    EXPECT_LT(choose_bounded(g.table, 5, g.view(), 0.1), 8u);
}

TEST(CoreBounded, IgnoresIdsOutsideTheLoadView) {
    Fixture f = make(8);
    f.load.resize(4);  // ids 4..7 unknown: treated as ineligible
    for (std::uint64_t h = 0; h < 200; ++h)
        EXPECT_LT(choose_bounded(f.table, h * 977, f.view(), 1.25), 4u);
}

// choose_least_loaded as stated in maglev.h, walked naively.
Expected reference_least(const Fixture &f, std::uint64_t hash, std::uint32_t tolerance) {
    std::uint32_t argmin = KVS_BACKEND_NONE;
    for (std::uint32_t i = 0; i < f.load.size(); ++i)
        if (f.eligible[i] && (argmin == KVS_BACKEND_NONE || f.load[i] < f.load[argmin])) argmin = i;
    if (argmin == KVS_BACKEND_NONE) return {KVS_BACKEND_NONE, false};
    bool first = true;
    for (std::size_t k = 0; k < f.table.size(); ++k) {
        const std::uint32_t id = f.table[(hash + k) % f.table.size()];
        if (!f.eligible[id]) continue;
        if (std::uint64_t{f.load[id]} <= std::uint64_t{f.load[argmin]} + tolerance)
            return {id, !first};
        first = false;
    }
    return {argmin, true};
}

TEST(CoreLeastLoaded, IdleClusterIsTheTablesChoice) {
    Fixture f = make(16);
    for (std::uint64_t hash : {1ull, 42ull, 0xdeadbeefull, ~0ull}) {
        bool spilled = true;
        EXPECT_EQ(choose_least_loaded(f.table, hash, f.view(), 0, &spilled),
                  choose_bounded(f.table, hash, f.view(), 1.25));
        EXPECT_FALSE(spilled);
    }
}

TEST(CoreLeastLoaded, MatchesReferenceOnRandomStates) {
    std::mt19937_64 rng(7);
    for (const std::uint32_t n : {1u, 2u, 8u, 64u, 300u}) {
        Fixture f = make(n);
        for (int iter = 0; iter < 400; ++iter) {
            for (std::uint32_t i = 0; i < n; ++i) {
                f.load[i] = static_cast<std::uint32_t>(rng() % 20);
                f.eligible[i] = (rng() % 5) != 0;
            }
            const std::uint64_t hash = rng();
            const auto tolerance = static_cast<std::uint32_t>(iter % 3 == 0 ? 0 : rng() % 6);
            bool spilled = false;
            const std::uint32_t got =
                choose_least_loaded(f.table, hash, f.view(), tolerance, &spilled);
            const Expected want = reference_least(f, hash, tolerance);
            ASSERT_EQ(got, want.id) << "n=" << n << " iter=" << iter;
            if (got != KVS_BACKEND_NONE) {
                EXPECT_EQ(spilled, want.spilled);
            }
        }
    }
}

TEST(CoreLeastLoaded, OneHashSpreadsEvenly) {
    // Many flows on one hash (a shared preamble): each takes the least loaded backend, so the
    // loads never differ by more than one (tolerance 0) or 1 + tolerance.
    for (const std::uint32_t tolerance : {0u, 3u}) {
        Fixture f = make(8);
        for (int i = 0; i < 200; ++i) {
            const std::uint32_t id = choose_least_loaded(f.table, 0x5eed, f.view(), tolerance);
            ASSERT_LT(id, 8u);
            ++f.load[id];
            const auto [lo, hi] = std::minmax_element(f.load.begin(), f.load.end());
            ASSERT_LE(*hi - *lo, 1 + tolerance) << i;
        }
    }
}

// With weight shares the loads compare per unit of weight: flows on one hash split in proportion
// to the shares (least loaded), and the bounded walk lets a heavier backend hold more.
TEST(CoreLeastLoaded, SharesSplitFlowsByWeight) {
    Fixture f = make(3);
    const std::vector<double> share{0.5, 1.0, 1.5};  // weights 1:2:3
    for (int i = 0; i < 600; ++i) {
        LoadView v = f.view();
        v.share = share;
        const std::uint32_t id = choose_least_loaded(f.table, 0x5eed, v, 0);
        ASSERT_LT(id, 3u);
        ++f.load[id];
    }
    EXPECT_EQ(f.load, (std::vector<std::uint32_t>{100, 200, 300}));

    Fixture g = make(2);
    const std::vector<double> g_share{0.5, 1.5};
    g.load = {0, 0};
    // Every flow's hash: the bound ceil(1.0 x (total + 1) / 2) x share, so a walk from any slot
    // fills backend 1 to three times backend 0.
    for (std::uint64_t h = 0; h < 400; ++h) {
        LoadView v = g.view();
        v.share = g_share;
        const std::uint32_t id = choose_bounded(g.table, h * 0x9e3779b97f4a7c15ULL, v, 1.0);
        ASSERT_LT(id, 2u);
        ++g.load[id];
    }
    EXPECT_NEAR(g.load[1], 300.0, 2.0) << g.load[0] << " / " << g.load[1];
}

TEST(CoreLeastLoaded, NoneOnlyWhenNothingEligible) {
    Fixture f = make(8);
    f.eligible.assign(8, 0);
    bool spilled = true;
    EXPECT_EQ(choose_least_loaded(f.table, 42, f.view(), 0, &spilled), KVS_BACKEND_NONE);
    EXPECT_FALSE(spilled);
    EXPECT_EQ(choose_least_loaded({}, 42, LoadView{}), KVS_BACKEND_NONE);
    // Eligible but absent from the table (weight 0): still chosen rather than NONE.
    f.load.push_back(3);
    f.eligible.push_back(1);
    EXPECT_EQ(choose_least_loaded(f.table, 7, f.view(), 0, &spilled), 8u);
    EXPECT_TRUE(spilled);
}

}  // namespace
}  // namespace kvsteer
