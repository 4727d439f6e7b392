#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kvsteer/control/daemon_core.h"
#include "sim_fixtures.h"
#include "sim_maglev.h"

namespace kvsteer::sim {
namespace {

using test::config;
using test::small_shared_prefix;

TEST(SimTest, SameInputsAndSeedGiveTheSameResults) {
    const Workload w = small_shared_prefix();
    const auto arr = arrivals(w, 1, 20, 3);
    for (const auto &p : policy_names()) {
        const RunResult a = simulate(w, arr, config(p, 4));
        const RunResult b = simulate(w, arr, config(p, 4));
        EXPECT_EQ(a.hit_tokens, b.hit_tokens) << p;
        EXPECT_EQ(a.routed, b.routed) << p;
        EXPECT_EQ(a.ttft_p99_s, b.ttft_p99_s) << p;
        EXPECT_EQ(a.makespan_s, b.makespan_s) << p;
        EXPECT_EQ(a.counters, b.counters) << p;
        EXPECT_EQ(a.completed, w.reqs.size()) << p;
    }
    // A different arrival seed changes the run (so the check above can fail).
    const auto arr2 = arrivals(w, 1, 20, 4);
    EXPECT_NE(simulate(w, arr, config("least-loaded", 4)).makespan_s,
              simulate(w, arr2, config("least-loaded", 4)).makespan_s);
}

// A conversation's turns wait for the reply their prompt holds (closed loop): one session whose
// turns follow at once (think time 0) never has two in flight, so its run lasts exactly the sum
// of its requests' times. Before, every turn was sent at the session's start.
TEST(SimTest, ConversationTurnsWaitForTheReplyBeforeThem) {
    ConversationSpec s;
    s.sessions = 1;
    s.turns = 4;
    s.system_prompt_len = 256;
    s.user_len = 32;
    s.output_len = 16;
    s.think_s = 0;
    s.seed = 3;
    const Workload w = make_conversation(s, WorkloadOptions{});
    ASSERT_GE(w.reqs.size(), 3u);
    EXPECT_EQ(w.reqs[0].after, -1);
    for (size_t i = 1; i < w.reqs.size(); ++i) EXPECT_EQ(w.reqs[i].after, int64_t(i) - 1);
    const auto arr = arrivals(w, 1, 0, 0);
    const RunResult r = simulate(w, arr, config("rr", 4));
    ASSERT_EQ(r.completed, w.reqs.size());
    EXPECT_NEAR(r.makespan_s, r.e2e_mean_s * double(r.completed), 1e-9 * r.makespan_s);
    EXPECT_GT(r.makespan_s, 0.0);
}

// The servers are kvsteerd backends: ch/ch-bl walk the lookup table kvsteerd's DaemonCore
// publishes for them (kvsteer's own table comes from a DaemonCore).
TEST(SimTest, LookupTableIsTheOneKvsteerdPublishes) {
    EXPECT_EQ(sim_endpoint(0).str(), "10.90.1.1:8000");
    EXPECT_EQ(sim_endpoint(253).str(), "10.90.1.254:8000");
    EXPECT_EQ(sim_endpoint(255).str(), "10.90.2.0:8000");
    const uint32_t n = 5;
    control::DaemonConfig c;
    c.health_interval_ms = 0;
    c.table_grace_ms = 0;
    for (uint32_t i = 0; i < n; ++i) {
        control::BackendSpec b;
        b.ep = sim_endpoint(i);
        b.mac = control::Mac{2, 0, 0, 0, 0, uint8_t(i)};
        c.backends.push_back(b);
    }
    kvs_config cfg{};
    std::vector<kvs_backend> backends(KVS_MAX_BACKENDS);
    std::vector<kvs_backend_load> load(KVS_MAX_BACKENDS);
    std::vector<uint32_t> maglev(2 * KVS_MAGLEV_SIZE);
    std::vector<kvs_affinity_entry> affinity(2 * KVS_AFFINITY_SLOTS);
    Tables t;
    t.config = &cfg;
    t.backends = backends.data();
    t.load = load.data();
    t.maglev = maglev.data();
    t.affinity = affinity.data();
    control::DaemonCore d(c, t);
    d.start(1);
    const auto want = sim_maglev(n);
    const auto half = maglev.begin() + cfg.maglev_active * KVS_MAGLEV_SIZE;
    EXPECT_TRUE(std::equal(want.begin(), want.end(), half));
}

TEST(SimTest, RoundRobinSpreadsEvenly) {
    const Workload w = small_shared_prefix(5, 10);  // 50 requests over 4 servers
    const RunResult r = simulate(w, arrivals(w, 1, 50, 1), config("rr", 4));
    ASSERT_EQ(r.routed.size(), 4u);
    uint64_t mn = r.routed[0], mx = r.routed[0], sum = 0;
    for (auto x : r.routed) {
        mn = std::min(mn, x);
        mx = std::max(mx, x);
        sum += x;
    }
    EXPECT_EQ(sum, 50u);
    EXPECT_LE(mx - mn, 1u);
}

TEST(SimTest, PrefixAwarePoliciesBeatRoundRobinOnSharedPrefixes) {
    const Workload w = small_shared_prefix(8, 8, 1024);
    const auto arr = arrivals(w, 1, 10, 1);
    const RunResult rr = simulate(w, arr, config("rr", 4));
    const RunResult kv = simulate(w, arr, config("kvsteer", 4));
    const RunResult orc = simulate(w, arr, config("oracle", 4));
    // Round robin computes each system prompt on every server; the others once or twice.
    EXPECT_GT(kv.hit_rate, rr.hit_rate + 0.10) << kv.hit_rate << " vs " << rr.hit_rate;
    EXPECT_GT(orc.hit_rate, rr.hit_rate + 0.10) << orc.hit_rate << " vs " << rr.hit_rate;
    // kvsteer learned the prefixes through the daemon and used its table.
    EXPECT_GT(kv.counters.at("via_affinity"), 0);
}

TEST(SimTest, HitRateIsTheCachesOwnCounters) {
    const Workload w = small_shared_prefix();
    const auto arr = arrivals(w, 1, 30, 2);
    for (const std::string p : {"rr", "kvsteer", "radix", "oracle"}) {
        uint64_t hits = 0, queries = 0;
        const RunResult r = simulate(w, arr, config(p, 3), {}, [&](const Cluster &c) {
            for (const auto &s : c.servers) {
                hits += s->cache().stats().hits_tokens;
                queries += s->cache().stats().queries_tokens;
            }
        });
        EXPECT_EQ(r.hit_tokens, hits) << p;
        EXPECT_EQ(r.query_tokens, queries) << p;
        EXPECT_GT(queries, 0u);
        EXPECT_DOUBLE_EQ(r.hit_rate, double(hits) / double(queries)) << p;
    }
}

TEST(SimTest, RepeatedPromptOnOneServerHitsAllItsFullBlocks) {
    // One prompt sent 5 times, far apart: the first misses, each later one hits every full block.
    replay::WorkItem it;
    it.input_tokens = 300;
    it.output_tokens = 4;
    it.segments.push_back({42, 1203});  // not a multiple of the 64-byte block
    std::vector<replay::WorkItem> items(5, it);
    for (size_t i = 0; i < items.size(); ++i) items[i].t_s = 10.0 * double(i);
    const Workload w = from_items("repeat", items, WorkloadOptions{});
    const SimRequest &r0 = w.reqs[0];
    ASSERT_NE(r0.prompt_bytes % 64, 0u);
    const RunResult r = simulate(w, arrivals(w, 1, 0, 0), config("rr", 1));
    EXPECT_EQ(r.query_tokens, 5 * r0.prompt_tokens);
    EXPECT_EQ(r.hit_tokens, 4 * r0.blocks.size() * 16);
    EXPECT_EQ(r.completed, 5u);
}

TEST(SimTest, UnknownPolicyAndBadSizesAreErrors) {
    const Workload w = small_shared_prefix(1, 2);
    const auto arr = arrivals(w, 1, 1, 1);
    EXPECT_THROW(simulate(w, arr, config("nope", 2)), std::invalid_argument);
    EXPECT_THROW(simulate(w, std::vector<double>{0.0}, config("rr", 2)), std::invalid_argument);
    EXPECT_THROW(simulate(w, arr, config("rr", 0)), std::invalid_argument);
}

}  // namespace
}  // namespace kvsteer::sim
