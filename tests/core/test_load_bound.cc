// load_bound: the bounded-load rule every component applies, at its edges.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "kvsteer/core/load_bound.h"

namespace kvsteer {
namespace {

TEST(CoreLoadBound, Formula) {
    EXPECT_EQ(load_bound(1.25, 0, 1), 2u);   // ceil(1.25 * 1 / 1)
    EXPECT_EQ(load_bound(1.25, 7, 4), 3u);   // ceil(1.25 * 8 / 4) = ceil(2.5)
    EXPECT_EQ(load_bound(1.25, 15, 4), 5u);  // exactly 5: no rounding up
    EXPECT_EQ(load_bound(2.0, 99, 10), 20u);
    EXPECT_EQ(load_bound(1.0, 9, 10), 1u);  // c = 1: the mean, rounded up
    EXPECT_EQ(load_bound(1.0, 10, 10), 2u);
}

TEST(CoreLoadBound, NoEligibleBackend) {
    EXPECT_EQ(load_bound(1.25, 0, 0), 0u);
    EXPECT_EQ(load_bound(1.25, 1000, 0), 0u);
}

TEST(CoreLoadBound, EmptyClusterAdmitsOneEach) {
    // Nothing in flight: every backend may take the flow (in_flight 0 + 1 <= bound).
    for (std::uint32_t n : {1u, 2u, 8u, 1024u}) {
        EXPECT_GE(load_bound(1.0, 0, n), 1u) << n;
        EXPECT_GE(load_bound(1.25, 0, n), 1u) << n;
    }
}

TEST(CoreLoadBound, FactorBelowOneCountsAsOne) {
    EXPECT_EQ(load_bound(0.5, 99, 10), load_bound(1.0, 99, 10));
    EXPECT_EQ(load_bound(0.0, 99, 10), 10u);
    EXPECT_EQ(load_bound(-3.0, 99, 10), 10u);
    EXPECT_EQ(load_bound(std::nan(""), 99, 10), 10u);
    EXPECT_EQ(load_bound(-1.0, -5.0, 4), 1u);  // a negative total counts as 0
}

TEST(CoreLoadBound, SomeBackendIsAlwaysWithinTheBound) {
    // With n backends holding `total`, the least loaded holds <= total / n < bound.
    for (std::uint64_t total : {0ull, 1ull, 7ull, 1000ull, 123457ull})
        for (std::uint32_t n : {1u, 3u, 64u, 1024u})
            EXPECT_LE(total / n + 1, load_bound(1.0, static_cast<double>(total), n))
                << total << "/" << n;
}

TEST(CoreLoadBound, LargeTotals) {
    // Exact while total + 1 is exact in a double.
    const std::uint64_t big = (std::uint64_t{1} << 52);
    EXPECT_EQ(load_bound(1.0, static_cast<double>(big - 1), 1), big);
    EXPECT_EQ(load_bound(2.0, static_cast<double>(big - 1), 2), big);
    EXPECT_EQ(load_bound(1.25, 4e9, 1), 5000000002u);  // past 32 bits
    // Saturates instead of overflowing the conversion.
    EXPECT_EQ(load_bound(1e9, 1.8e19, 1), UINT64_MAX);
    EXPECT_EQ(load_bound(1.0, std::numeric_limits<double>::infinity(), 4), UINT64_MAX);
    EXPECT_EQ(load_bound(std::numeric_limits<double>::infinity(), 0, 4), UINT64_MAX);
    EXPECT_EQ(load_bound(1.0, 1.8446744073709552e19, 1), UINT64_MAX);  // 2^64
}

TEST(CoreLoadBound, LoadFactorFromConfig) {
    kvs_config c{};
    EXPECT_DOUBLE_EQ(load_factor(c), kDefaultLoadFactor);
    EXPECT_DOUBLE_EQ(kDefaultLoadFactor, 1.25);
    c.load_factor_milli = 2000;
    EXPECT_DOUBLE_EQ(load_factor(c), 2.0);
    c.load_factor_milli = 1001;
    EXPECT_DOUBLE_EQ(load_factor(c), 1.001);
}

TEST(CoreLoadBound, AffinityBoundHasAnAbsoluteSlack) {
    // Light load: c x the mean gives ceil(1.25 x 16 / 8) = 3; the floor least + 1 + slack rules.
    EXPECT_EQ(affinity_bound(1.25, 32, 15, 8, 1), 34u);
    EXPECT_EQ(affinity_bound(1.25, 4, 15, 8, 1), 6u);
    EXPECT_EQ(affinity_bound(1.25, 4, 15, 8, 1.9), 6u);  // the least load rounds down
    // Heavy load: c x the mean, ceil(1.25 x 800 / 8) = 125, is above 90 + 1 + 4 and rules.
    EXPECT_EQ(affinity_bound(1.25, 4, 799, 8, 90), 125u);
    EXPECT_EQ(affinity_bound(1.25, 4, 799, 8, 90), load_bound(1.25, 799, 8));
    // Edges: no eligible backend, a bad least load, saturation.
    EXPECT_EQ(affinity_bound(1.25, 32, 10, 0, 1), 0u);
    EXPECT_EQ(affinity_bound(1.25, 4, 0, 2, std::nan("")), 5u);
    EXPECT_EQ(affinity_bound(1.25, 4, 0, 2, -3), 5u);
    EXPECT_EQ(affinity_bound(1.25, UINT32_MAX, 0, 1, 1e30), UINT64_MAX);
}

TEST(CoreLoadBound, MissToleranceIsATenthOfTheMean) {
    EXPECT_EQ(miss_tolerance(0, 8), 0u);
    EXPECT_EQ(miss_tolerance(72, 8), 0u);    // mean 9: floor(0.9)
    EXPECT_EQ(miss_tolerance(80, 8), 1u);    // mean 10
    EXPECT_EQ(miss_tolerance(800, 8), 10u);  // mean 100
    EXPECT_EQ(miss_tolerance(799, 8), 9u);   // mean 99.875
    EXPECT_EQ(miss_tolerance(800, 0), 0u);   // nothing eligible
    EXPECT_EQ(miss_tolerance(-5, 8), 0u);
    EXPECT_EQ(miss_tolerance(1e30, 1), UINT32_MAX);
}

TEST(CoreLoadBound, LoadSlackZeroIsTheDefault) {
    kvs_config c{};
    EXPECT_EQ(load_slack(c), KVS_DEFAULT_LOAD_SLACK);
    c.load_slack = 7;
    EXPECT_EQ(load_slack(c), 7u);
}

}  // namespace
}  // namespace kvsteer
