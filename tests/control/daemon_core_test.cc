// DaemonCore without sockets (one test adds a reader thread): reports, scrapes and health verdicts
// in, tables out, over tables in ordinary memory and on a clock the test drives.
#include "kvsteer/control/daemon_core.h"
#include "kvsteer/control/daemon.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "heap_maps.h"

using namespace kvsteer::control;

namespace {

constexpr std::uint64_t kMs = 1000000ull;
constexpr std::uint64_t kT0 = 1000 * kMs;

class DaemonCoreTest : public ::testing::Test {
   protected:
    DaemonConfig config(unsigned n_backends) {
        DaemonConfig c;
        std::string err;
        for (unsigned i = 0; i < n_backends; i++) {
            BackendSpec b;
            b.ep = *parse_endpoint("10.0.2." + std::to_string(i + 1) + ":8000", &err);
            b.mac = Mac{2, 0, 0, 0, 0, static_cast<std::uint8_t>(0x10 + i)};
            c.backends.push_back(b);
        }
        c.health_interval_ms = 0;  // no active checks: configured backends are up
        c.table_grace_ms = 0;
        return c;
    }

    DaemonCore &start(const DaemonConfig &c) {
        core_ = std::make_unique<DaemonCore>(c, m_.view);
        core_->start(kT0);
        return *core_;
    }

    static kvs_bind_report report(std::uint16_t backend, std::uint64_t prefix,
                                  std::uint64_t block) {
        kvs_bind_report r{};
        r.prefix_hash = prefix;
        r.n_blocks = 1;
        r.block_hash[0] = block;
        r.backend_id = backend;
        return r;
    }

    std::uint32_t active() { return TableWriter::active_affinity(m_.view.config); }
    std::uint32_t generation() { return m_.view.config->generation; }
    const kvs_affinity_entry *affinity(std::uint64_t key) {
        const kvs_affinity_entry *half = m_.view.affinity + active() * KVS_AFFINITY_SLOTS;
        for (std::uint32_t i = 0; i < KVS_AFFINITY_SLOTS; i++)
            if (half[i].key == key) return &half[i];
        return nullptr;
    }
    std::uint32_t maglev_slots(std::uint32_t id) {
        const std::uint32_t *half =
            m_.view.maglev + TableWriter::active_maglev(m_.view.config) * KVS_MAGLEV_SIZE;
        std::uint32_t n = 0;
        for (std::uint32_t i = 0; i < KVS_MAGLEV_SIZE; i++) n += half[i] == id;
        return n;
    }

    // Adds a backend at `addr` (otherwise backend 0's spec) under the id free_id gives it.
    static std::optional<std::uint16_t> add(DaemonCore &d, const std::string &addr,
                                            std::uint64_t now_ns) {
        std::string err;
        BackendSpec spec = d.config().backends[0];
        spec.ep = *parse_endpoint(addr, &err);
        const auto id = d.free_id(spec.ep, &err);
        EXPECT_TRUE(id) << err;
        if (id) d.add_backend(*id, spec, now_ns);
        return id;
    }

    HeapMaps m_;
    std::unique_ptr<DaemonCore> core_;
};

// A backend whose next-hop MAC is not resolved yet: its health checks retry the lookup (a
// neighbour-table dump on the event loop) backing off, 250 ms doubled up to 2 s, not at every
// check; once resolved it is written up.
TEST_F(DaemonCoreTest, UnresolvedMacLookupsBackOff) {
    auto c = config(1);
    c.backends[0].mac.reset();
    c.health_interval_ms = 50;
    c.health_rise = 1;
    int lookups = 0;
    bool resolvable = false;
    core_ = std::make_unique<DaemonCore>(c, m_.view, [&](const Endpoint &, std::string *err) {
        lookups++;
        if (resolvable) return std::optional<Mac>(Mac{2, 0, 0, 0, 0, 0x42});
        *err = "no resolved neighbour entry";
        return std::optional<Mac>();
    });
    core_->start(kT0);
    const int at_start = lookups;
    // 10 s of checks every 50 ms: 200 checks; lookups at 0.25, 0.75, 1.75, 3.75, then every 2 s.
    for (int i = 1; i <= 200; i++) core_->health_check(0, true, "HTTP 200", kT0 + i * 50 * kMs);
    EXPECT_LE(lookups - at_start, 10) << "a lookup at every check: " << lookups;
    EXPECT_GE(lookups - at_start, 5);
    EXPECT_NE(m_.view.backends[0].state, KVS_BE_UP) << "no MAC: not written up";
    resolvable = true;
    for (int i = 201; i <= 250; i++) core_->health_check(0, true, "HTTP 200", kT0 + i * 50 * kMs);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP) << "resolved within 2 s of checks";
    const int resolved_at = lookups;
    for (int i = 251; i <= 300; i++) core_->health_check(0, true, "HTTP 200", kT0 + i * 50 * kMs);
    EXPECT_EQ(lookups, resolved_at) << "a resolved MAC is not looked up again";
}

}  // namespace

TEST_F(DaemonCoreTest, StartWritesEveryTable) {
    auto c = config(2);
    c.backends[0].weight = 2;
    DaemonCore &d = start(c);
    EXPECT_EQ(m_.view.config->n_backends, 2u);
    EXPECT_EQ(m_.view.config->prefix_len, c.prefix_len);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP);
    EXPECT_EQ(m_.view.backends[1].mac[5], 0x11);
    EXPECT_NEAR(static_cast<double>(maglev_slots(0)) / KVS_MAGLEV_SIZE, 2.0 / 3, 0.03);
    // The lookup table is build_lookup_table's over the backends' identities.
    std::vector<kvsteer::MaglevBackend> mb;
    for (const auto &[id, b] : d.backends())
        mb.push_back({id, backend_identity(b.spec.ep), b.spec.weight});
    auto want = build_lookup_table(c.table_algorithm, mb);
    const std::uint32_t *half =
        m_.view.maglev + TableWriter::active_maglev(m_.view.config) * KVS_MAGLEV_SIZE;
    EXPECT_TRUE(std::equal(want.begin(), want.end(), half));
    // An empty affinity half is published once at start.
    EXPECT_EQ(d.counters().affinity_publishes, 1u);
    EXPECT_EQ(d.counters().maglev_rebuilds, 1u);
}

// A prefix-length or block-size change clears the prefix index (every hash changes), not the
// policy's counters: exported as Prometheus counters, they went back to 0 at such a tune.
TEST_F(DaemonCoreTest, RetuningTheHashesKeepsThePolicyCounters) {
    DaemonCore &d = start(config(2));
    d.on_report(report(1, 0xabc, 0x111), kT0 + 10 * kMs);
    d.tick(kT0 + 150 * kMs);
    const PolicyCounters before = d.policy().counters();
    ASSERT_EQ(before.reports, 1u);
    ASSERT_GT(before.keys_learned, 0u);
    std::string err;
    ASSERT_TRUE(d.set_tunable("block-size", "256", &err, kT0 + 200 * kMs)) << err;
    EXPECT_EQ(d.policy().counters().reports, before.reports);
    EXPECT_EQ(d.policy().counters().keys_learned, before.keys_learned);
    d.tick(kT0 + 400 * kMs);
    EXPECT_EQ(affinity(0x111), nullptr) << "the index is cleared";
}

TEST_F(DaemonCoreTest, ReportsBecomeAnAffinityTableOnTheNextTick) {
    DaemonCore &d = start(config(2));
    const auto gen = generation();
    const auto half = active();
    d.on_report(report(1, 0xabc, 0x111), kT0 + 10 * kMs);
    EXPECT_EQ(affinity(0x111), nullptr) << "nothing is published before the tick";
    d.tick(kT0 + 150 * kMs);
    ASSERT_NE(affinity(0x111), nullptr);
    EXPECT_EQ(affinity(0x111)->n_backends, 1);
    EXPECT_EQ(affinity(0x111)->backends[0], 1);
    ASSERT_NE(affinity(0xabc), nullptr);
    EXPECT_EQ(d.desired().size(), 2u);
    EXPECT_EQ(active(), half ^ 1u) << "written into the inactive half, then flipped";
    EXPECT_EQ(generation(), gen + 1);
    EXPECT_EQ(d.counters().affinity_publishes, 2u);
}

TEST_F(DaemonCoreTest, NoRepublishWhenTheEntriesAreUnchanged) {
    DaemonCore &d = start(config(2));
    d.on_report(report(0, 0xabc, 0x111), kT0 + 10 * kMs);
    d.tick(kT0 + 150 * kMs);
    const auto gen = generation();
    const auto half = active();
    const auto publishes = d.counters().affinity_publishes;
    const auto computes = d.counters().affinity_computes;
    // Same prefix, same backend: the policy runs (reports arrived) but the table is the same.
    d.on_report(report(0, 0xabc, 0x111), kT0 + 200 * kMs);
    d.tick(kT0 + 300 * kMs);
    EXPECT_EQ(d.counters().affinity_computes, computes + 1);
    EXPECT_EQ(d.counters().affinity_publishes, publishes);
    EXPECT_EQ(active(), half);
    EXPECT_EQ(generation(), gen);
}

TEST_F(DaemonCoreTest, WithoutReportsTheTableIsRecomputedOnceASecondAndAges) {
    auto c = config(2);
    c.affinity_ttl_ms = 2000;
    DaemonCore &d = start(c);
    d.on_report(report(1, 0xabc, 0x111), kT0 + 10 * kMs);
    d.tick(kT0 + 150 * kMs);  // computes at 150 ms
    ASSERT_NE(affinity(0x111), nullptr);
    auto computes = d.counters().affinity_computes;
    for (std::uint64_t t = 300; t < 1150; t += 150) d.tick(kT0 + t * kMs);
    EXPECT_EQ(d.counters().affinity_computes, computes) << "no reports, less than a second";
    d.tick(kT0 + 1200 * kMs);
    EXPECT_EQ(d.counters().affinity_computes, computes + 1) << "a second since the last compute";
    EXPECT_NE(affinity(0x111), nullptr);
    const auto half = active();
    // Past the TTL (2 s after the report) the next once-a-second compute drops the entries.
    for (std::uint64_t t = 1350; t <= 3300; t += 150) d.tick(kT0 + t * kMs);
    EXPECT_EQ(affinity(0x111), nullptr);
    EXPECT_TRUE(d.desired().empty());
    EXPECT_EQ(active(), half ^ 1u);
}

TEST_F(DaemonCoreTest, EachPublishFlipsTheHalvesAndBumpsTheGeneration) {
    DaemonCore &d = start(config(2));
    for (std::uint16_t i = 0; i < 4; i++) {
        const auto half = active();
        const auto gen = generation();
        const kvs_affinity_entry *old_half = m_.view.affinity + half * KVS_AFFINITY_SLOTS;
        std::vector<kvs_affinity_entry> before(old_half, old_half + KVS_AFFINITY_SLOTS);
        const std::uint64_t block = 0x1000 + i;
        d.on_report(report(static_cast<std::uint16_t>(i % 2), 0xabc, block),
                    kT0 + (i + 1) * 100 * kMs);
        d.tick(kT0 + (i + 1) * 100 * kMs + kMs);
        EXPECT_EQ(active(), half ^ 1u);
        EXPECT_EQ(generation(), gen + 1);
        EXPECT_NE(affinity(block), nullptr);
        // The half that was active is left as it was: a reader may still be in it.
        EXPECT_EQ(std::memcmp(before.data(), old_half, before.size() * sizeof(kvs_affinity_entry)),
                  0);
    }
}

TEST_F(DaemonCoreTest, HoldersThatGoDownLeaveTheTable) {
    auto c = config(2);
    c.health_interval_ms = 1000;
    DaemonCore &d = start(c);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_DOWN) << "down until the first good check";
    d.health_check(0, true, "HTTP 200", kT0 + kMs);
    d.health_check(1, true, "HTTP 200", kT0 + kMs);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_UP);
    d.on_report(report(1, 0xabc, 0x111), kT0 + 10 * kMs);
    d.tick(kT0 + 150 * kMs);
    ASSERT_NE(affinity(0x111), nullptr);
    for (int i = 0; i < 3; i++) d.health_check(1, false, "HTTP 503", kT0 + 200 * kMs);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_DOWN);
    EXPECT_EQ(maglev_slots(1), 0u);
    EXPECT_EQ(affinity(0x111), nullptr) << "republished at once, not at the next tick";
    EXPECT_EQ(d.backend(1)->last_error, "health: HTTP 503");
    EXPECT_EQ(d.counters().backend_down, 1u);
}

// A probe round's results are published once (begin_batch .. end_batch): three backends going
// down in one round rebuild the lookup table once. Before, each transition rebuilt it on the event
// loop (~46 ms at 256 backends: a switch blip failing 100 of them stalled the loop ~4.6 s).
TEST_F(DaemonCoreTest, ARoundsHealthTransitionsArePublishedOnce) {
    auto c = config(4);
    c.health_interval_ms = 1000;
    DaemonCore &d = start(c);
    for (std::uint16_t id = 0; id < 4; id++) d.health_check(id, true, "HTTP 200", kT0 + kMs);
    ASSERT_EQ(m_.view.backends[3].state, KVS_BE_UP);
    const std::uint64_t rebuilds = d.counters().maglev_rebuilds;
    d.begin_batch();
    for (std::uint16_t id = 1; id < 4; id++)
        for (int i = 0; i < 3; i++) d.health_check(id, false, "HTTP 503", kT0 + 200 * kMs);
    EXPECT_EQ(d.backend(1)->health.up(), false) << "the verdicts are taken at once";
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_UP) << "published at the batch's end";
    EXPECT_EQ(d.counters().maglev_rebuilds, rebuilds);
    d.end_batch(kT0 + 201 * kMs);
    EXPECT_EQ(d.counters().maglev_rebuilds, rebuilds + 1) << "one rebuild for the round";
    for (std::uint16_t id = 1; id < 4; id++) {
        EXPECT_EQ(m_.view.backends[id].state, KVS_BE_DOWN) << id;
        EXPECT_EQ(maglev_slots(id), 0u) << id;
    }
    EXPECT_EQ(maglev_slots(0), static_cast<std::uint32_t>(KVS_MAGLEV_SIZE));
}

// A backend that comes up is UP in its slot only once the lookup table that includes it is in
// force (before, the least-loaded choice met it first, absent from the table, and walked all
// 65,537 slots at every miss while the table was rebuilt); one that goes down leaves rotation in
// its slot before the table drops it.
TEST_F(DaemonCoreTest, ABackendIsUpOnlyOnceTheTableHasIt) {
    auto c = config(2);
    c.health_interval_ms = 1000;
    DaemonCore &d = start(c);
    d.health_check(0, true, "HTTP 200", kT0 + kMs);
    std::vector<std::pair<std::uint8_t, std::uint32_t>> seen;  // (slot 1's state, its slots)
    d.on_lookup_published = [&] { seen.emplace_back(m_.view.backends[1].state, maglev_slots(1)); };
    d.health_check(1, true, "HTTP 200", kT0 + 2 * kMs);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_NE(seen[0].first, KVS_BE_UP) << "UP before the table that has it";
    EXPECT_GT(seen[0].second, 0u);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_UP);
    seen.clear();
    for (int i = 0; i < 3; i++) d.health_check(1, false, "HTTP 503", kT0 + 200 * kMs);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].first, KVS_BE_DOWN) << "down in its slot before the table drops it";
    EXPECT_EQ(seen[0].second, 0u);
}

TEST_F(DaemonCoreTest, BindFailuresTakeABackendDownAndTheHoldBringsItBack) {
    auto c = config(2);
    c.health_fall = 2;
    c.health_rise = 2;
    DaemonCore &d = start(c);
    std::uint64_t t = kT0;
    for (int i = 0; i < 2; i++) {
        m_.view.load[0].bind_fail_rst += 3;
        d.tick(t += 1000 * kMs);
    }
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_DOWN);
    EXPECT_EQ(maglev_slots(0), 0u);
    EXPECT_EQ(d.counters().passive_failures, 2u);
    // Active checks are off: after `rise` quiet intervals it is tried again.
    for (int i = 0; i < 2; i++) d.tick(t += 1000 * kMs);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP);
}

// A busy backend with rare bind failures (one SYN timeout among 2,000 flows a second) stays up:
// an interval fails only when its failures are at least a tenth of the flows bound in it. Before,
// any failure failed the interval, and `fall` seconds of them took a healthy busy backend down.
TEST_F(DaemonCoreTest, RareBindFailuresOfABusyBackendAreNoFailedInterval) {
    auto c = config(2);
    c.health_fall = 2;
    DaemonCore &d = start(c);
    std::uint64_t t = kT0;
    // `n` health intervals in which backend 0 bound `binds` flows and failed `fails` binds.
    auto intervals = [&](int n, std::uint64_t fails, std::uint64_t binds) {
        for (int i = 0; i < n; i++) {
            m_.view.load[0].bind_fail_timeout += fails;
            m_.view.load[0].binds += binds;
            d.tick(t += 1000 * kMs);
        }
    };
    intervals(5, 1, 2000);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP);
    EXPECT_EQ(d.counters().passive_failures, 0u);
    // A tenth and more of them failing: down after `fall` intervals.
    intervals(2, 300, 2000);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_DOWN);
    EXPECT_EQ(d.counters().passive_failures, 2u);
}

TEST_F(DaemonCoreTest, ScrapesFeedTheLoadMapAndACounterResetForgetsTheBackend) {
    DaemonCore &d = start(config(2));
    Telemetry t;
    t.flavor = ServerFlavor::Vllm;
    t.running = 3;
    t.waiting = 7;
    t.kv_usage = 0.5;
    t.prefix_queries = 100;
    t.prefix_hits = 50;
    d.scrape(1, t, 0, {});
    EXPECT_EQ(m_.view.load[1].ext_queue, 7u);
    EXPECT_EQ(m_.view.load[1].ext_running, 3u);
    t.prefix_queries = 300;
    t.prefix_hits = 200;
    d.scrape(1, t, 0, {});
    auto snaps = d.snapshots();
    ASSERT_EQ(snaps.size(), 2u);
    EXPECT_EQ(snaps[1].queue, 7.0);
    EXPECT_EQ(snaps[1].kv_usage, 0.5);
    EXPECT_EQ(snaps[1].hit_rate, 0.75);

    d.on_report(report(1, 0xabc, 0x111), kT0 + 10 * kMs);
    d.tick(kT0 + 150 * kMs);
    ASSERT_NE(affinity(0x111), nullptr);
    t.prefix_queries = 10;  // went backwards: the server restarted, its cache is empty
    t.prefix_hits = 0;
    d.scrape(1, t, 0, {});
    d.tick(kT0 + 1200 * kMs);
    EXPECT_EQ(affinity(0x111), nullptr);
    EXPECT_GT(d.policy().counters().holders_flushed, 0u);
    d.scrape_failed(1, "HTTP 500");
    EXPECT_EQ(m_.view.load[1].ext_queue, 0u);
    EXPECT_EQ(d.counters().scrape_failures, 1u);
}

TEST_F(DaemonCoreTest, RegistryAddsAndRemovesBackends) {
    DaemonCore &d = start(config(1));
    std::string err;
    BackendSpec spec = d.config().backends[0];
    EXPECT_FALSE(d.free_id(spec.ep, &err));
    EXPECT_NE(err.find("exists"), std::string::npos);
    m_.view.load[1].binds = 5;        // an earlier occupant's flows
    m_.view.load[1].idle_starts = 3;  // two of them idle
    m_.view.load[1].idle_ends = 1;
    const auto id = add(d, "10.0.2.9:8000", kT0 + kMs);
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, 1);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_UP);
    EXPECT_EQ(m_.view.config->n_backends, 2u);
    EXPECT_EQ(d.in_flight(*d.backend(1)), 0u);
    m_.view.load[1].binds = 7;
    EXPECT_EQ(d.in_flight(*d.backend(1)), 2u);
    // One of the two connections idle between requests: still in flight (a drain waits for it),
    // no longer load (what the policy is told); an earlier occupant's idle counts are not its.
    EXPECT_EQ(d.idle(*d.backend(1)), 0u);
    m_.view.load[1].idle_starts = 4;
    EXPECT_EQ(d.idle(*d.backend(1)), 1u);
    EXPECT_EQ(d.active(*d.backend(1)), 1u);
    EXPECT_EQ(d.in_flight(*d.backend(1)), 2u);
    const auto snaps = d.snapshots();
    const auto one = std::find_if(snaps.begin(), snaps.end(),
                                  [](const BackendSnapshot &s) { return s.id == 1; });
    ASSERT_NE(one, snaps.end());
    EXPECT_EQ(one->in_flight, 1u) << "the policy's load";
    m_.view.load[1].idle_ends = 2;
    EXPECT_EQ(d.active(*d.backend(1)), 2u);
    EXPECT_GT(maglev_slots(1), 0u);
    d.set_draining(1, true, kT0 + 2 * kMs);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_DRAIN);
    EXPECT_EQ(maglev_slots(1), 0u);
    d.remove_backend(1, kT0 + 3 * kMs);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_EMPTY);
    EXPECT_EQ(m_.view.config->n_backends, 1u);
}

// A pin names a backend, not its slot: a backend that later gets the removed one's id does not
// inherit the pin; a pin naming others too keeps them.
TEST_F(DaemonCoreTest, PinsDoNotFollowAReusedId) {
    DaemonCore &d = start(config(3));
    d.pin(0xabc, {1}, kT0 + kMs);
    d.pin(0xdef, {1, 2}, kT0 + kMs);
    ASSERT_NE(affinity(0xabc), nullptr);
    EXPECT_EQ(affinity(0xabc)->backends[0], 1);
    d.remove_backend(1, kT0 + 2 * kMs);
    EXPECT_EQ(d.policy().pins().count(0xabc), 0u) << "its only backend is gone";
    ASSERT_EQ(d.policy().pins().count(0xdef), 1u);
    EXPECT_EQ(d.policy().pins().at(0xdef), (std::vector<std::uint16_t>{2}));
    const auto id = add(d, "10.0.2.9:8000", kT0 + 3 * kMs);
    ASSERT_TRUE(id);
    ASSERT_EQ(*id, 1) << "the lowest free id: the removed backend's";
    EXPECT_EQ(affinity(0xabc), nullptr) << "the new backend 1 is not pinned to 0xabc";
    ASSERT_NE(affinity(0xdef), nullptr);
    EXPECT_EQ(affinity(0xdef)->n_backends, 1);
    EXPECT_EQ(affinity(0xdef)->backends[0], 2);
    // A cache reset is the same backend: its pins stay (the recompute a second later sees it).
    d.pin(0x456, {2}, kT0 + 6 * kMs);
    d.mark_cache_reset(2);
    d.tick(kT0 + 2000 * kMs);
    ASSERT_NE(affinity(0x456), nullptr);
    EXPECT_EQ(affinity(0x456)->backends[0], 2);
}

// A removed backend's flows stay open in the dataplane and close against its id: the id is
// retired, not given to the next backend, until they are closed, and they count as in flight
// (a drain must wait for them). Before, the next backend took the id and the old flows' closes
// hid its own flows (its in-flight count clamped at 0).
TEST_F(DaemonCoreTest, ARemovedBackendsIdWaitsForItsFlows) {
    DaemonCore &d = start(config(3));
    m_.view.load[1].binds += 100;  // 100 flows bound to backend 1, none closed
    EXPECT_EQ(d.in_flight(*d.backend(1)), 100u);
    d.remove_backend(1, kT0 + kMs);
    ASSERT_EQ(d.retired().count(1), 1u);
    EXPECT_EQ(d.retired_in_flight(), 100u);
    auto id = add(d, "10.0.2.9:8000", kT0 + 2 * kMs);
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, 3) << "not the retired id 1";
    m_.view.load[3].binds += 50;
    m_.view.load[1].closes += 60;  // most of the old flows close
    d.tick(kT0 + 3 * kMs);
    EXPECT_EQ(d.retired_in_flight(), 40u);
    EXPECT_EQ(d.in_flight(*d.backend(3)), 50u) << "the new backend's own flows, untouched";
    m_.view.load[1].closes += 40;
    d.tick(kT0 + 4 * kMs);
    EXPECT_TRUE(d.retired().empty()) << "its last flow closed: the id is free again";
    id = add(d, "10.0.2.10:8000", kT0 + 5 * kMs);
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, 1);
    EXPECT_EQ(d.in_flight(*d.backend(1)), 0u) << "counted from its own start";
    // A backend removed with nothing open frees its id at once.
    d.remove_backend(2, kT0 + 6 * kMs);
    EXPECT_EQ(d.retired().count(2), 0u);
}

// A restart on the maps a previous instance filled (kvsteerd killed and started again): the
// backends it had up stay up (a new instance starting them down made the dataplane reset new
// connections until the first health check), and a random cookie key is the previous one (a
// new key dropped the ACKs of handshakes under way).
TEST_F(DaemonCoreTest, RestartKeepsBackendsUpAndTheCookieKey) {
    auto c = config(2);
    c.health_interval_ms = 1000;  // active checks on: a fresh backend starts down
    c.cookie_key = {0x1111, 0x2222};
    c.cookie_key_prev = c.cookie_key;
    c.cookie_key_random = true;
    start(c);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_DOWN) << "unchecked, nothing known before";
    m_.view.backends[0].state = KVS_BE_UP;  // what the first instance's checks concluded
    m_.view.backends[1].state = KVS_BE_DOWN;
    core_.reset();

    auto again = c;
    again.cookie_key = {0x3333, 0x4444};  // the new instance's own random draw
    again.cookie_key_prev = again.cookie_key;
    start(again);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP) << "up before stays up until checked";
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_DOWN);
    EXPECT_EQ(kvs_config_sign_key(m_.view.config)[0], 0x1111u) << "the previous instance's key";
    EXPECT_EQ(kvs_config_sign_key(m_.view.config)[1], 0x2222u);

    // A configured key always wins.
    core_.reset();
    auto fixed = again;
    fixed.cookie_key_random = false;
    start(fixed);
    EXPECT_EQ(kvs_config_sign_key(m_.view.config)[0], 0x3333u);
    EXPECT_EQ(kvs_config_prev_key(m_.view.config)[0], 0x3333u);

    // With etcd the maps' keys are the fleet's (rotated since): kept over a configured one until
    // etcd is read (the configured key put back refused the others' cookies).
    core_.reset();
    auto etcd = fixed;
    std::string err;
    etcd.fleet_etcd = *parse_endpoint("10.0.3.1:2379", &err);
    etcd.cookie_key = {0x7777, 0x8888};
    etcd.cookie_key_prev = etcd.cookie_key;
    start(etcd);
    EXPECT_EQ(kvs_config_sign_key(m_.view.config)[0], 0x3333u) << "the maps' key, not 0x7777";
    core_.reset();
    start(fixed);  // back to the configured key of `fixed` for what follows
    // After a rotation, a restart with a random key takes both of the previous instance's keys,
    // whichever slot signs.
    core_->set_cookie_keys({0x5555, 0x6666}, {0x3333, 0x4444});
    core_.reset();
    start(again);
    EXPECT_EQ(kvs_config_sign_key(m_.view.config)[0], 0x5555u);
    EXPECT_EQ(kvs_config_prev_key(m_.view.config)[0], 0x3333u);
}

// A restart with a configuration that replaces a backend whose flows are still open: the new
// backend takes another id, the old one's slot is left (retired) until its flows close. Before,
// the new backend took the lowest unmatched id, the old one's: its slot was rewritten and the
// old flows' segments went to the new server.
TEST_F(DaemonCoreTest, RestartGivesANewBackendNoIdWithFlowsOpen) {
    auto c = config(3);
    start(c);
    m_.view.load[1].binds += 10;  // 10 flows open on 10.0.2.2, 5 on 10.0.2.3 (closed later)
    m_.view.load[2].binds += 5;
    core_.reset();

    auto next = c;
    next.backends.erase(next.backends.begin() + 1, next.backends.end());  // 10.0.2.2, .3 gone
    BackendSpec d = c.backends[0];
    std::string err;
    d.ep = *parse_endpoint("10.0.2.9:8000", &err);  // a new one
    next.backends.push_back(d);
    start(next);
    ASSERT_EQ(core_->retired().count(1), 1u);
    ASSERT_EQ(core_->retired().count(2), 1u);
    EXPECT_EQ(core_->retired_in_flight(), 15u);
    ASSERT_EQ(core_->backend(1), nullptr) << "not the id of 10.0.2.2, whose flows are open";
    ASSERT_NE(core_->backend(3), nullptr);
    EXPECT_EQ(core_->backend(3)->spec.ep.str(), "10.0.2.9:8000");
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_EMPTY) << "out of rotation";
    EXPECT_EQ(std::memcmp(m_.view.backends[1].addr, c.backends[1].ep.addr.data(),
                          sizeof m_.view.backends[1].addr),
              0)
        << "the old flows' address kept in the slot";
    m_.view.load[2].closes += 5;
    core_->tick(kT0 + kMs);
    EXPECT_EQ(core_->retired().count(2), 0u) << "its flows closed: the id is free";
    EXPECT_EQ(core_->retired().count(1), 1u);

    // With every other id taken, a retired one is reused (the lowest), as at run time.
    core_.reset();
    auto full = c;
    full.backends.clear();
    for (unsigned i = 0; i < KVS_MAX_BACKENDS; i++) {
        BackendSpec b = c.backends[0];
        b.ep = *parse_endpoint(
            "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":8000", &err);
        full.backends.push_back(b);
    }
    start(full);
    ASSERT_NE(core_->backend(1), nullptr);
    EXPECT_TRUE(core_->retired().empty());
}

// A backend drained before a restart stays drained (it took new flows again).
TEST_F(DaemonCoreTest, RestartKeepsADrainedBackendDrained) {
    auto c = config(2);
    start(c);
    core_->set_draining(1, true, 1);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_DRAIN);
    core_.reset();
    start(c);
    EXPECT_EQ(m_.view.backends[1].state, KVS_BE_DRAIN);
    ASSERT_NE(core_->backend(1), nullptr);
    EXPECT_TRUE(core_->backend(1)->draining);
    EXPECT_EQ(m_.view.backends[0].state, KVS_BE_UP);
}

// A cookie key rotation never rewrites the key SYN-ACKs are being signed with: the new key goes
// into the other slot, then the signing index flips (before, the current key's two words were
// overwritten in place while XDP read them: a SYN answered in that window got a cookie of half
// of each key, which no key checks).
TEST_F(DaemonCoreTest, CookieRotationWritesTheOtherSlotThenFlips) {
    auto c = config(1);
    c.cookie_key = {0xa0, 0xa1};
    c.cookie_key_prev = c.cookie_key;
    start(c);
    kvs_config *cfg = m_.view.config;
    const __u64 *a = kvs_config_sign_key(cfg);
    EXPECT_EQ(a[0], 0xa0u);
    EXPECT_EQ(a[1], 0xa1u);

    core_->set_cookie_keys({0xb0, 0xb1}, {0xa0, 0xa1});  // rotation: A becomes the previous key
    const __u64 *b = kvs_config_sign_key(cfg);
    EXPECT_NE(b, a) << "the other slot signs";
    EXPECT_EQ(b[0], 0xb0u);
    EXPECT_EQ(b[1], 0xb1u);
    EXPECT_EQ(kvs_config_prev_key(cfg), a);
    EXPECT_EQ(a[0], 0xa0u) << "A's slot untouched";

    core_->set_cookie_keys({0xc0, 0xc1}, {0xb0, 0xb1});
    EXPECT_EQ(kvs_config_sign_key(cfg), a) << "back to the first slot";
    EXPECT_EQ(a[0], 0xc0u);
    EXPECT_EQ(b[0], 0xb0u);

    // Only the previous key changes: the signing slot stays.
    core_->set_cookie_keys({0xc0, 0xc1}, {0xd0, 0xd1});
    EXPECT_EQ(kvs_config_sign_key(cfg), a);
    EXPECT_EQ(kvs_config_prev_key(cfg)[0], 0xd0u);

    // Both new (a reload with other keys): still a flip to the new signing key.
    core_->set_cookie_keys({0xe0, 0xe1}, {0xf0, 0xf1});
    EXPECT_EQ(kvs_config_sign_key(cfg), b);
    EXPECT_EQ(b[0], 0xe0u);
    EXPECT_EQ(a[0], 0xf0u);
}

// The same, with a reader signing concurrently: every key it reads is a whole key, never half of
// two. Each rotation waits for one read to finish after it (real rotations are a period apart:
// a writer lapping a reader stopped between the index and the key is not the race under test).
// Bounded: 20,000 rotations and 10 s.
TEST_F(DaemonCoreTest, ConcurrentSignerNeverReadsAHalfWrittenKey) {
    auto c = config(1);
    c.cookie_key = {1, ~1ull};
    c.cookie_key_prev = c.cookie_key;
    start(c);
    const kvs_config *cfg = m_.view.config;
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> torn{0}, reads{0};
    std::thread signer([&] {
        while (!done.load(std::memory_order_relaxed)) {
            const __u64 *k = kvs_config_sign_key(cfg);
            const std::uint64_t w0 = __atomic_load_n(&k[0], __ATOMIC_RELAXED);
            const std::uint64_t w1 = __atomic_load_n(&k[1], __ATOMIC_RELAXED);
            if (w1 != ~w0) torn.fetch_add(1, std::memory_order_relaxed);
            reads.fetch_add(1, std::memory_order_relaxed);
        }
    });
    std::array<std::uint64_t, 2> prev = c.cookie_key;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (std::uint64_t i = 2; i < 20002 && std::chrono::steady_clock::now() < deadline; ++i) {
        const std::array<std::uint64_t, 2> next{i, ~i};  // each key: word 1 = ~word 0
        core_->set_cookie_keys(next, prev);
        prev = next;
        const std::uint64_t seen = reads.load(std::memory_order_relaxed);
        while (reads.load(std::memory_order_relaxed) == seen &&
               std::chrono::steady_clock::now() < deadline)
            std::this_thread::yield();
    }
    done = true;
    signer.join();
    EXPECT_GT(reads.load(), 0u);
    EXPECT_EQ(torn.load(), 0u) << "reads of a half-written signing key";
}

// The lookup table's digest names backends by address: two appliances whose backends got
// different local ids (added in another order) show the same digest; a weight change shows.
TEST_F(DaemonCoreTest, LookupDigestIsIndependentOfLocalIds) {
    DaemonConfig c = config(3);
    DaemonCore &a = start(c);
    const std::uint64_t da = a.lookup_digest();
    EXPECT_NE(da, 0u);
    HeapMaps other;
    std::reverse(c.backends.begin(), c.backends.end());
    DaemonCore b(c, other.view);
    b.start(kT0);
    EXPECT_EQ(b.backend(0)->spec.ep.str(), "10.0.2.3:8000");  // ids differ from a's
    EXPECT_EQ(b.lookup_digest(), da);
    b.set_weight(0, 5, kT0 + kMs);
    EXPECT_NE(b.lookup_digest(), da);
    b.set_weight(0, 1, kT0 + 2 * kMs);
    EXPECT_EQ(b.lookup_digest(), da);
}

// etcd's tunables that depend on each other, applied whatever the names' order: lowering
// prefix-length and max-held-bytes together refuses max-held-bytes (first by name) below the
// prefix-length still in force; it goes in the next pass. Before, it was refused for good.
TEST_F(DaemonCoreTest, EtcdTunablesThatDependOnEachOtherAreAppliedInPasses) {
    auto c = config(1);
    c.prefix_len = 2048;
    DaemonCore &d = start(c);
    auto apply = [&](const std::string &n, const std::string &v, std::string *err) {
        return d.set_tunable(n, v, err, kT0);
    };
    std::string err;
    ASSERT_FALSE(d.set_tunable("max-held-bytes", "1024", &err, kT0)) << "the dependency is real";
    auto refused =
        apply_tunables_in_passes({{"max-held-bytes", "1024"}, {"prefix-length", "256"}}, apply);
    EXPECT_TRUE(refused.empty());
    EXPECT_EQ(d.config().max_held_bytes, 1024u);
    EXPECT_EQ(d.config().prefix_len, 256u);
    // Raising them again: prefix-length (later by name, refused above 1024 at first) too.
    refused =
        apply_tunables_in_passes({{"max-held-bytes", "8192"}, {"prefix-length", "4096"}}, apply);
    EXPECT_TRUE(refused.empty());
    EXPECT_EQ(d.config().prefix_len, 4096u);
    // A value refused on its own stays refused, with its error; the others are applied.
    refused = apply_tunables_in_passes({{"prefix-length", "100000"}, {"max-blocks", "4"}}, apply);
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused.begin()->first, "prefix-length");
    EXPECT_EQ(refused.begin()->second.first, "100000");
    EXPECT_NE(refused.begin()->second.second.find("max-held-bytes"), std::string::npos)
        << refused.begin()->second.second;
    EXPECT_EQ(d.config().prefix_len, 4096u);
}
