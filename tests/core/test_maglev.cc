// Weighted Maglev and the rendezvous variant: fill, determinism, weights, disruption.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <vector>

#include "kvsteer/core/maglev.h"

namespace kvsteer {
namespace {

using Builder = std::function<std::vector<std::uint32_t>(std::span<const MaglevBackend>)>;

std::uint64_t identity_of(std::uint32_t i) {  // stands in for a hash of "addr:port"
    std::uint64_t z = 0x0a000000ULL + i * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ULL;
    return z ^ (z >> 29);
}

std::vector<MaglevBackend> equal_backends(std::uint32_t n, std::uint32_t weight = 1) {
    std::vector<MaglevBackend> v;
    for (std::uint32_t i = 0; i < n; ++i) v.push_back({i, identity_of(i), weight});
    return v;
}

double changed(const std::vector<std::uint32_t> &a, const std::vector<std::uint32_t> &b) {
    std::size_t d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
    return static_cast<double>(d) / static_cast<double>(a.size());
}

std::map<std::uint32_t, std::size_t> counts(const std::vector<std::uint32_t> &t) {
    std::map<std::uint32_t, std::size_t> c;
    for (const std::uint32_t id : t) ++c[id];
    return c;
}

struct Disruption {
    double add, remove, weight_up, weight_down;  // measured / ideal, worst over the cases tried
};

// Ratios of slots that change owner to the ideal minimum, for one backend added, removed,
// re-weighted 1 -> 2 and 2 -> 1 among n.
Disruption measure(const Builder &build, std::uint32_t n, std::uint32_t cases) {
    Disruption d{0, 0, 0, 0};
    const auto base = equal_backends(n);
    const auto t0 = build(base);
    d.add = changed(t0, build(equal_backends(n + 1))) / (1.0 / (n + 1));
    const auto base2 = equal_backends(n, 2);
    const auto t2 = build(base2);
    for (std::uint32_t k = 0; k < cases; ++k) {
        const std::uint32_t r = (k * 7919u) % n;
        auto removed = base;
        removed.erase(removed.begin() + r);
        d.remove = std::max(d.remove, changed(t0, build(removed)) / (1.0 / n));
        auto up = base;
        up[r].weight = 2;
        d.weight_up = std::max(d.weight_up, changed(t0, build(up)) / (2.0 / (n + 1) - 1.0 / n));
        auto down = base2;
        down[r].weight = 1;
        d.weight_down =
            std::max(d.weight_down, changed(t2, build(down)) / (1.0 / n - 1.0 / (2 * n - 1)));
    }
    std::printf("  n=%u: add %.3fx remove %.3fx weight 1->2 %.3fx weight 2->1 %.3fx of ideal\n", n,
                d.add, d.remove, d.weight_up, d.weight_down);
    return d;
}

const Builder kMaglev = [](std::span<const MaglevBackend> b) { return build_maglev(b); };
const Builder kRendezvous = [](std::span<const MaglevBackend> b) {
    return build_rendezvous_table(b);
};

TEST(CoreMaglev, FillsEverySlotWithWeightedBackendsOnly) {
    std::vector<MaglevBackend> b = equal_backends(6);
    b[2].weight = 0;
    b[4].weight = 0;
    for (const Builder &build : {kMaglev, kRendezvous}) {
        const auto t = build(b);
        ASSERT_EQ(t.size(), KVS_MAGLEV_SIZE);
        const auto c = counts(t);
        EXPECT_EQ(c.size(), 4u);
        EXPECT_EQ(c.count(2), 0u);
        EXPECT_EQ(c.count(4), 0u);
        EXPECT_EQ(c.count(KVS_BACKEND_NONE), 0u);
    }
    for (auto &x : b) x.weight = 0;
    EXPECT_EQ(counts(build_maglev(b)),
              (std::map<std::uint32_t, std::size_t>{{KVS_BACKEND_NONE, KVS_MAGLEV_SIZE}}));
    EXPECT_EQ(counts(build_rendezvous_table(b)),
              (std::map<std::uint32_t, std::size_t>{{KVS_BACKEND_NONE, KVS_MAGLEV_SIZE}}));
    EXPECT_EQ(counts(build_maglev({})),
              (std::map<std::uint32_t, std::size_t>{{KVS_BACKEND_NONE, KVS_MAGLEV_SIZE}}));
}

TEST(CoreMaglev, DeterministicAndIndependentOfListOrder) {
    auto b = equal_backends(20);
    b[3].weight = 5;
    b[11].weight = 2;
    for (const Builder &build : {kMaglev, kRendezvous}) {
        const auto t1 = build(b);
        EXPECT_EQ(build(b), t1);
        auto r = b;
        std::reverse(r.begin(), r.end());
        std::rotate(r.begin(), r.begin() + 7, r.end());
        EXPECT_EQ(build(r), t1);
    }
}

TEST(CoreMaglev, EqualWeightsExactlyBalanced) {
    for (const std::uint32_t n : {3u, 10u, 100u, 1000u}) {
        const auto c = counts(build_maglev(equal_backends(n)));
        ASSERT_EQ(c.size(), n);
        std::size_t lo = SIZE_MAX, hi = 0;
        for (const auto &[id, k] : c) lo = std::min(lo, k), hi = std::max(hi, k);
        EXPECT_LE(hi - lo, 1u) << n;
    }
}

TEST(CoreMaglev, WeightProportional) {
    std::vector<MaglevBackend> b;
    const std::vector<std::uint32_t> w = {1, 2, 3, 4, 10, 7, 1, 100};
    double total = 0;
    for (std::uint32_t i = 0; i < w.size(); ++i)
        b.push_back({i, identity_of(i), w[i]}), total += w[i];
    const auto mc = counts(build_maglev(b));
    const auto rc = counts(build_rendezvous_table(b));
    for (std::uint32_t i = 0; i < w.size(); ++i) {
        const double ideal = KVS_MAGLEV_SIZE * w[i] / total;
        EXPECT_NEAR(static_cast<double>(mc.at(i)), ideal, 1.0 + 0.001 * ideal) << "maglev id " << i;
        // Rendezvous: binomial spread around the share, capped at +5%.
        EXPECT_NEAR(static_cast<double>(rc.at(i)), ideal, 5.0 * std::sqrt(ideal) + 1.0)
            << "rendezvous id " << i;
        EXPECT_LE(static_cast<double>(rc.at(i)), std::ceil(ideal * 1.05)) << "rendezvous id " << i;
    }
}

// A backend whose weight is below one slot's share still gets a slot in both tables: it got
// none, and while it was the least loaded every miss walked all 65,537 slots looking for it.
TEST(CoreMaglev, EveryWeightedBackendHasASlot) {
    std::vector<MaglevBackend> b;
    for (std::uint32_t i = 0; i < 10; ++i) b.push_back({i, identity_of(i), 65535});
    b.push_back({10, identity_of(10), 1});
    for (const Builder &build : {kMaglev, kRendezvous}) {
        const auto c = counts(build(b));
        ASSERT_EQ(c.count(10), 1u);
        EXPECT_EQ(c.at(10), 1u);
        for (std::uint32_t i = 0; i < 10; ++i)
            EXPECT_NEAR(static_cast<double>(c.at(i)), KVS_MAGLEV_SIZE / 10.0, 700.0) << i;
    }
    // Many backends of weight 100 and one of weight 1 (rendezvous gave it none).
    std::vector<MaglevBackend> many;
    for (std::uint32_t i = 0; i < 1023; ++i) many.push_back({i, identity_of(i), 100});
    many.push_back({1023, identity_of(1023), 1});
    for (const Builder &build : {kMaglev, kRendezvous})
        EXPECT_GE(counts(build(many)).count(1023), 1u);
}

TEST(CoreMaglev, AnyTableSizeTerminates) {
    const auto b = equal_backends(5);
    for (const std::uint32_t size : {1u, 2u, 251u, 1000u, 4096u}) {
        const auto t = build_maglev(b, size);
        ASSERT_EQ(t.size(), size);
        EXPECT_EQ(std::count(t.begin(), t.end(), KVS_BACKEND_NONE), 0) << size;
        const auto r = build_rendezvous_table(b, size);
        EXPECT_EQ(std::count(r.begin(), r.end(), KVS_BACKEND_NONE), 0) << size;
    }
    EXPECT_TRUE(build_maglev(b, 0).empty());
}

// Plain Maglev trades disruption for exact balance, more so as n grows against the table size.
// Measured with this builder (65537 slots): n=10 about 1.02-1.04x; n=50 about 1.25-1.37x.
TEST(CoreMaglev, DisruptionPlainMaglev) {
    const Disruption d10 = measure(kMaglev, 10, 10);
    EXPECT_LE(d10.add, 1.2);
    EXPECT_LE(d10.remove, 1.2);
    EXPECT_LE(d10.weight_up, 1.2);
    EXPECT_LE(d10.weight_down, 1.2);
    const Disruption d50 = measure(kMaglev, 50, 5);
    // Above the 1.2x target: the reason build_rendezvous_table exists. Bounded so a regression
    // shows.
    EXPECT_LE(d50.add, 1.45);
    EXPECT_LE(d50.remove, 1.45);
    EXPECT_LE(d50.weight_up, 1.45);
    EXPECT_LE(d50.weight_down, 1.55);
}

TEST(CoreMaglev, DisruptionRendezvousWithinTarget) {
    for (const std::uint32_t n : {10u, 50u}) {
        const Disruption d = measure(kRendezvous, n, 3);
        EXPECT_LE(d.add, 1.2) << n;
        EXPECT_LE(d.remove, 1.2) << n;
        EXPECT_LE(d.weight_up, 1.2) << n;
        EXPECT_LE(d.weight_down, 1.2) << n;
    }
}

}  // namespace
}  // namespace kvsteer
