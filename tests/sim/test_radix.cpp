#include <gtest/gtest.h>

#include "policy.h"
#include "radix_tree.h"
#include "sim_fixtures.h"

namespace kvsteer::sim {
namespace {

struct FakeCluster {
    std::vector<uint32_t> in_flight;
    std::vector<std::unique_ptr<model::Scheduler>> servers;
    explicit FakeCluster(uint32_t n) : in_flight(n, 0) {}
    Cluster view() const { return Cluster{in_flight, servers}; }
};

TEST(RadixPolicyTest, RepeatedPromptGoesToTheSameWorkerWhenBalanced) {
    const Workload w = test::small_shared_prefix(4, 2);
    auto p = make_radix(4, PolicyParams{});
    FakeCluster c(4);
    const uint32_t first = p->choose(0, w.reqs[0], 0.0, c.view());
    for (int i = 1; i < 5; ++i) {
        c.in_flight[first] += 1;  // still balanced: within the absolute threshold
        EXPECT_EQ(p->choose(0, w.reqs[0], double(i), c.view()), first);
    }
    EXPECT_EQ(p->counters().at("cache_routes"), 4);
}

TEST(RadixPolicyTest, WeakMatchGoesToTheLeastLoadedAndImbalanceToTheLeastLoaded) {
    const Workload w = test::small_shared_prefix(4, 1);
    auto p = make_radix(3, PolicyParams{});
    FakeCluster c(3);
    c.in_flight = {3, 1, 2};
    const uint32_t a = p->choose(0, w.reqs[0], 0.0, c.view());
    EXPECT_EQ(a, 1u);  // nothing matched: the least loaded worker
    c.in_flight = {3, 4, 2};
    EXPECT_EQ(p->choose(1, w.reqs[1], 0.0, c.view()), 2u);  // another group: least loaded again
    EXPECT_EQ(p->choose(2, w.reqs[0], 0.0, c.view()), a);   // a strong match: its worker
    EXPECT_EQ(p->counters().at("weak_match_routes"), 2);
    // Imbalanced: (max - min) > 64 and max > 1.5 * min -> least loaded, even for a cached prompt.
    c.in_flight = {40, 40, 40};
    c.in_flight[a] = 100;
    const uint32_t least = a == 0 ? 2 : 0;
    c.in_flight[least] = 5;
    EXPECT_EQ(p->choose(0, w.reqs[0], 1.0, c.view()), least);
    EXPECT_EQ(p->counters().at("balance_routes"), 1);
    // Not imbalanced when max <= 1.5 x min, however large the difference: the strong match goes
    // to its most recent worker (the balance route above inserted the prompt there).
    c.in_flight = {200, 200, 200};
    c.in_flight[least] = 290;
    EXPECT_EQ(p->choose(0, w.reqs[0], 2.0, c.view()), least);
}

TEST(RadixPolicyTest, OlderRouterSendsAWeakMatchToTheSmallestTree) {
    const Workload w = test::small_shared_prefix(4, 1);
    PolicyParams pp;
    pp.radix_weak_to_smallest_tree = true;
    auto p = make_radix(3, pp);
    FakeCluster c(3);
    const uint32_t a = p->choose(0, w.reqs[0], 0.0, c.view());
    const uint32_t b = p->choose(1, w.reqs[1], 0.0, c.view());
    EXPECT_NE(a, b);  // the second group's prompt shares nothing: smallest tree
}

TEST(RadixTreeTest, MatchSplitAndEvict) {
    RadixTree t(2);
    const std::vector<uint64_t> a = {1, 2, 3, 4}, b = {1, 2, 9}, c = {7};
    t.insert(a, 0, 1.0);
    t.insert(b, 1, 2.0);  // splits a's edge after {1, 2}
    EXPECT_EQ(t.prefix_match(a).matched, 4u);
    EXPECT_EQ(t.prefix_match(a).tenant, 0);
    const auto m = t.prefix_match(std::vector<uint64_t>{1, 2, 5});
    EXPECT_EQ(m.matched, 2u);
    EXPECT_EQ(m.tenant, 1);  // most recent at the split node
    EXPECT_EQ(t.tenant_size(0), 4u);
    EXPECT_EQ(t.tenant_size(1), 3u);
    EXPECT_EQ(t.smallest_tenant(), 1);
    t.insert(c, 0, 3.0);
    // Tenant 0 down to 1 symbol: its oldest leaf ({3, 4}) goes first, then {1, 2}, keeping {7}.
    EXPECT_EQ(t.evict(0, 1), 4u);
    EXPECT_EQ(t.tenant_size(0), 1u);
    EXPECT_EQ(t.prefix_match(c).tenant, 0);
    EXPECT_EQ(t.prefix_match(a).matched, 2u);  // {1, 2} still there for tenant 1, {3, 4} gone
    EXPECT_EQ(t.prefix_match(a).tenant, 1);
}

}  // namespace
}  // namespace kvsteer::sim
