// AffinityPolicy: learning holders from reports, replication of hot prefixes, cooling, expiry,
// cache-pressure aging, restarts, ineligible backends, pins, bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/fleet_etcd.h"

using namespace kvsteer::control;

namespace {

constexpr std::uint64_t kSec = 1000000000ull;

kvs_bind_report report(std::uint64_t prefix, std::vector<std::uint64_t> blocks,
                       std::uint16_t backend) {
    kvs_bind_report r{};
    r.prefix_hash = prefix;
    r.n_blocks = static_cast<std::uint16_t>(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); i++) r.block_hash[i] = blocks[i];
    r.backend_id = backend;
    return r;
}

std::vector<BackendSnapshot> backends(unsigned n, std::set<std::uint16_t> down = {}) {
    std::vector<BackendSnapshot> v;
    for (std::uint16_t i = 0; i < n; i++) {
        BackendSnapshot s;
        s.id = i;
        s.eligible = !down.count(i);
        v.push_back(s);
    }
    return v;
}

const DesiredEntry *find(const std::vector<DesiredEntry> &v, std::uint64_t key) {
    for (const auto &e : v)
        if (e.key == key) return &e;
    return nullptr;
}

std::set<std::uint16_t> ids(const DesiredEntry &e) {
    return {e.backends.begin(), e.backends.begin() + e.n};
}

PolicyParams params() {
    PolicyParams p;
    p.replication = 3;
    p.hot_rps = 10;
    p.rate_tau_s = 1.0;
    p.ttl_ns = 60 * kSec;
    return p;
}

}  // namespace

TEST(AffinityPolicy, LearnsHoldersOfEveryBlockAndThePrefix) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(4), 0);
    pol.on_report(report(0x11, {0xa0, 0xa1, 0xa2}, 2), 1 * kSec);
    auto out = pol.compute(1 * kSec);
    ASSERT_EQ(out.size(), 4u);
    for (std::uint64_t k : {0x11ull, 0xa0ull, 0xa1ull, 0xa2ull}) {
        auto *e = find(out, k);
        ASSERT_NE(e, nullptr) << k;
        EXPECT_EQ(ids(*e), std::set<std::uint16_t>{2});
        EXPECT_FALSE(e->hot);
    }
    EXPECT_EQ(find(out, 0xa2)->depth, 2);
    EXPECT_EQ(find(out, 0x11)->depth, kPrefixDepth);
    EXPECT_EQ(pol.counters().keys_learned, 4u);
    EXPECT_EQ(pol.counters().reports, 1u);
}

TEST(AffinityPolicy, MostRecentHolderFirst) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(4), 0);
    pol.on_report(report(0x11, {}, 1), 1 * kSec);
    pol.on_report(report(0x11, {}, 3), 2 * kSec);
    auto out = pol.compute(2 * kSec);
    auto *e = find(out, 0x11);
    ASSERT_NE(e, nullptr);
    ASSERT_EQ(e->n, 2);
    EXPECT_EQ(e->backends[0], 3);
    EXPECT_EQ(e->backends[1], 1);
}

TEST(AffinityPolicy, HotPrefixIsReplicatedToLeastLoadedThenCools) {
    AffinityPolicy pol(params());
    auto b = backends(5);
    b[1].in_flight = 50;  // busy
    b[3].in_flight = 1;
    b[4].in_flight = 2;
    b[2].in_flight = 0;
    pol.update_backends(b, 0);
    // 40 requests in one second on one prefix: well above 10 req/s.
    std::uint64_t t = 1 * kSec;
    for (int i = 0; i < 40; i++)
        pol.on_report(report(0x77, {0xb0}, 0), t + static_cast<std::uint64_t>(i) * (kSec / 40));
    t += kSec;
    auto out = pol.compute(t);
    auto *e = find(out, 0x77);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->hot);
    ASSERT_EQ(e->n, 3);
    EXPECT_EQ(e->backends[0], 0);  // the holder stays first
    auto s = ids(*e);
    EXPECT_FALSE(s.count(1)) << "the busy backend must not get a replica";
    EXPECT_TRUE(s.count(2)) << "the least loaded backend gets a replica";
    // The chained block (same traffic) is hot too; replicas planned this round count as load,
    // so together the two entries use every idle-ish backend rather than piling on one.
    auto *blk = find(out, 0xb0);
    ASSERT_NE(blk, nullptr);
    EXPECT_TRUE(blk->hot);
    std::set<std::uint16_t> both = ids(*blk);
    both.insert(s.begin(), s.end());
    EXPECT_EQ(both, (std::set<std::uint16_t>{0, 2, 3, 4}));
    EXPECT_EQ(pol.counters().became_hot, 2u);  // 0x77 and block 0xb0
    // Replicas stay while it is hot (stable table).
    auto again = pol.compute(t + kSec / 10);
    EXPECT_EQ(ids(*find(again, 0x77)), s);
    // Traffic stops: the rate decays below hot/2 within seconds and the extra replicas go (no
    // minimum hot time by default; HotPrefixHeldForMinHotTime covers it).
    auto later = pol.compute(t + 5 * kSec);
    auto *c = find(later, 0x77);
    ASSERT_NE(c, nullptr);
    EXPECT_FALSE(c->hot);
    EXPECT_EQ(ids(*c), std::set<std::uint16_t>{0});
    EXPECT_GE(pol.counters().replicas_dropped, 2u);
    EXPECT_GE(pol.counters().cooled, 1u);
}

TEST(AffinityPolicy, HolderOverItsLoadBoundGetsAReplica) {
    AffinityPolicy pol(params());
    auto b = backends(3);
    b[0].in_flight = 30;
    b[0].queue = 10;  // the backend's own queue counts too
    pol.update_backends(b, 0);
    pol.on_report(report(0x55, {}, 0), 1 * kSec);  // one request: not hot by rate
    auto out = pol.compute(1 * kSec);
    auto *e = find(out, 0x55);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->hot);
    EXPECT_EQ(e->n, 3);
    EXPECT_GE(pol.counters().over_bound, 1u);
    // Load drops: no longer over its bound; with a low rate it cools at once (default: no
    // minimum hot time).
    b[0].in_flight = 0;
    b[0].queue = 0;
    pol.update_backends(b, 0);
    out = pol.compute(1 * kSec + kSec / 10);
    EXPECT_FALSE(find(out, 0x55)->hot);
    EXPECT_EQ(ids(*find(out, 0x55)), std::set<std::uint16_t>{0});
}

// Bound and replicas per address family, as the dataplane binds a flow within its own: two busy
// IPv4 backends beside two idle IPv6 ones are within their family's bound (one bound over both
// called holder 0 over it), and a hot IPv4 prefix is replicated to the other IPv4 backend, never
// to an IPv6 one its flows cannot use.
TEST(AffinityPolicy, BoundAndReplicasStayWithinTheHoldersFamily) {
    auto p = params();
    p.load_slack = 1;
    AffinityPolicy pol(p);
    auto b = backends(4);
    b[0].in_flight = b[1].in_flight = 40;
    b[2].family = b[3].family = KVS_AF_INET6;
    pol.update_backends(b, 0);
    pol.on_report(report(0x66, {}, 0), 1 * kSec);
    auto out = pol.compute(1 * kSec);
    ASSERT_NE(find(out, 0x66), nullptr);
    EXPECT_FALSE(find(out, 0x66)->hot) << "within the IPv4 backends' bound";
    EXPECT_EQ(pol.counters().over_bound, 0u);
    // Hot by rate: its replicas are IPv4 backends only.
    for (int i = 0; i < 40; i++) pol.on_report(report(0x66, {}, 0), 2 * kSec + i * (kSec / 100));
    out = pol.compute(2 * kSec + kSec / 2);
    auto *e = find(out, 0x66);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->hot);
    EXPECT_EQ(ids(*e), (std::set<std::uint16_t>{0, 1}));
}

// The bound's absolute slack: at light load a holder is over its bound only once it holds more
// than `load_slack` above the least loaded backend (the dataplane's affinity_bound), not as soon
// as it passes c x the mean.
TEST(AffinityPolicy, HolderWithinTheSlackOfTheLeastLoadedIsNotOverItsBound) {
    auto b = backends(3);
    b[0].in_flight = 8;  // c x mean: ceil(1.25 x 9 / 3) = 4; least 0 + 1 + slack
    for (const std::uint32_t slack : {8u, 7u}) {
        auto p = params();
        p.load_slack = slack;
        AffinityPolicy pol(p);
        pol.update_backends(b, 0);
        pol.on_report(report(0x55, {}, 0), 1 * kSec);  // one request: not hot by rate
        auto *e = find(pol.compute(1 * kSec), 0x55);
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e->hot, slack == 7) << slack;  // 8 + 1 > 0 + 1 + 7 only with slack 7
    }
}

// Loads compare per unit of weight, as the dataplane's choice does: a holder of 1.5 times the
// mean weight is over its bound only past 1.5 times it, and a new replica goes to the least
// loaded per unit of weight.
TEST(AffinityPolicy, BoundsAndReplicasFollowTheWeights) {
    auto p = params();
    p.load_slack = 1;
    p.replication = 2;
    auto hot = [&](const std::vector<BackendSnapshot> &b) {
        AffinityPolicy pol(p);
        pol.update_backends(b, 0);
        pol.on_report(report(0x55, {}, 0), 1 * kSec);  // one request: not hot by rate
        const auto out = pol.compute(1 * kSec);
        const DesiredEntry *e = find(out, 0x55);
        EXPECT_NE(e, nullptr);
        return e ? std::make_pair(e->hot, ids(*e))
                 : std::make_pair(false, std::set<std::uint16_t>{});
    };
    auto b = backends(3);
    b[0].in_flight = 12;  // c x mean: ceil(1.25 x 23 / 3) = 10
    b[1].in_flight = 6;
    b[2].in_flight = 4;
    EXPECT_TRUE(hot(b).first) << "equal weights: 12 + 1 > 10";
    b[0].share = 1.5;  // weights 3, 1.5, 1.5
    b[1].share = b[2].share = 0.75;
    EXPECT_FALSE(hot(b).first) << "12 + 1 <= 10 x 1.5";

    // The replica: per unit of weight backend 2 (6 / 1.5 = 4) is less loaded than 1 (4 / 0.5 =
    // 8), though it holds more flows.
    b[0].in_flight = 40;
    b[1].in_flight = 4;
    b[2].in_flight = 6;
    b[0].share = 1.0;  // weights 2, 1, 3
    b[1].share = 0.5;
    b[2].share = 1.5;
    auto [h, holders] = hot(b);
    EXPECT_TRUE(h);
    EXPECT_EQ(holders, (std::set<std::uint16_t>{0, 2}));
    b[0].share = b[1].share = b[2].share = 1.0;
    EXPECT_EQ(hot(b).second, (std::set<std::uint16_t>{0, 1})) << "equal weights: the fewest flows";
}

// With a minimum hot time the same drop leaves the replicas in place until it is over.
TEST(AffinityPolicy, HotPrefixHeldForMinHotTime) {
    auto p = params();
    p.min_hot_ns = 10 * kSec;
    AffinityPolicy pol(p);
    auto b = backends(3);
    b[0].in_flight = 30;
    b[0].queue = 10;
    pol.update_backends(b, 0);
    pol.on_report(report(0x55, {}, 0), 1 * kSec);
    auto out = pol.compute(1 * kSec);
    ASSERT_NE(find(out, 0x55), nullptr);
    EXPECT_TRUE(find(out, 0x55)->hot);
    b[0].in_flight = 0;
    b[0].queue = 0;
    pol.update_backends(b, 0);
    out = pol.compute(1 * kSec + kSec / 10);
    EXPECT_TRUE(find(out, 0x55)->hot);
    EXPECT_EQ(find(out, 0x55)->n, 3);
    EXPECT_GE(pol.counters().held_hot, 1u);
    out = pol.compute(12 * kSec);
    EXPECT_FALSE(find(out, 0x55)->hot);
    EXPECT_EQ(ids(*find(out, 0x55)), std::set<std::uint16_t>{0});
}

// Saturated holders hover around the load bound and a bursty prefix around the rate threshold:
// either way the entry must not flip hot/cool faster than min_hot_ns allows.
TEST(AffinityPolicy, MinHotTimeBoundsFlapping) {
    constexpr std::uint64_t kTick = kSec * 15 / 100;  // kvsteerd's report interval
    constexpr std::uint64_t kElapsed = 60 * kSec;
    constexpr std::uint64_t kMinHot = 10 * kSec;
    const std::uint64_t max_hot_periods = kElapsed / kMinHot + 1;
    struct Run {
        std::uint64_t became_hot = 0, transitions = 0;
    };
    enum class Drive { Load, Rate };
    auto run = [&](Drive drive, std::uint64_t min_hot_ns) {
        auto p = params();
        p.min_hot_ns = min_hot_ns;
        AffinityPolicy pol(p);
        auto b = backends(3);
        Run r;
        bool hot = false;
        for (std::uint64_t t = kSec, step = 0; t < kSec + kElapsed; t += kTick, step++) {
            if (drive == Drive::Load) {
                // 1 request/s (far below hot_rps 10); the holder's load alternates above and
                // below the bound (ceil(1.25 * (total + 1) / 3)) on every compute.
                if (step % 7 == 0) pol.on_report(report(0x99, {}, 0), t);
                b[0].in_flight = step % 2 ? 40 : 0;
            } else {
                // 1 s at 20 req/s (rate ~12.6/s > 10), then 2 s silent (decays to ~1.7 < 5).
                if (((t - kSec) / kSec) % 3 == 0)
                    for (std::uint64_t i = 0; i < 3; i++)
                        pol.on_report(report(0x99, {}, 0), t + i * kTick / 3);
            }
            pol.update_backends(b, t);
            auto out = pol.compute(t + kTick - 1);
            auto *e = find(out, 0x99);
            if (!e) {
                ADD_FAILURE() << "entry missing at step " << step;
                return r;
            }
            if (e->hot != hot) r.transitions++;
            r.became_hot += e->hot && !hot;
            hot = e->hot;
        }
        EXPECT_EQ(r.became_hot, pol.counters().became_hot);
        EXPECT_EQ(r.transitions, pol.counters().became_hot + pol.counters().cooled);
        return r;
    };
    for (Drive d : {Drive::Load, Drive::Rate}) {
        SCOPED_TRACE(d == Drive::Load ? "load around the bound" : "rate around the threshold");
        // The drive really flaps the policy without a minimum hot time...
        Run off = run(d, 0);
        EXPECT_GT(off.transitions, 2 * max_hot_periods);
        // ...and with one every hot period lasts min_hot_ns, but the prefix still heats again.
        Run on = run(d, kMinHot);
        EXPECT_LE(on.became_hot, max_hot_periods);
        EXPECT_LE(on.transitions, 2 * max_hot_periods);
        EXPECT_GE(on.became_hot, 2u);
    }
}

TEST(AffinityPolicy, IneligibleBackendsAreExcluded) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(3), 0);
    pol.on_report(report(0x21, {}, 1), 1 * kSec);
    pol.on_report(report(0x21, {}, 2), 2 * kSec);
    pol.on_report(report(0x22, {}, 1), 2 * kSec);
    pol.update_backends(backends(3, {1}), 0);  // backend 1 down (or draining)
    auto out = pol.compute(2 * kSec);
    auto *e = find(out, 0x21);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(ids(*e), std::set<std::uint16_t>{2});
    EXPECT_EQ(find(out, 0x22), nullptr) << "an entry whose only holder is down is not written";
    EXPECT_GE(pol.counters().entries_no_backend, 1u);
    EXPECT_GE(pol.counters().excluded_ineligible, 2u);
    for (const auto &x : out)
        for (unsigned i = 0; i < x.n; i++) EXPECT_NE(x.backends[i], 1);
    // Recovery: it returns (its holdings were kept).
    pol.update_backends(backends(3), 0);
    out = pol.compute(3 * kSec);
    ASSERT_NE(find(out, 0x22), nullptr);
    EXPECT_EQ(ids(*find(out, 0x22)), std::set<std::uint16_t>{1});
}

TEST(AffinityPolicy, ColdPrefixesExpire) {
    auto p = params();
    p.ttl_ns = 10 * kSec;
    AffinityPolicy pol(p);
    pol.update_backends(backends(2), 0);
    pol.on_report(report(0x31, {}, 0), 1 * kSec);
    pol.on_report(report(0x32, {}, 1), 8 * kSec);
    auto out = pol.compute(9 * kSec);
    EXPECT_EQ(out.size(), 2u);
    out = pol.compute(12 * kSec);  // 0x31 idle 11 s > ttl
    EXPECT_EQ(find(out, 0x31), nullptr);
    EXPECT_NE(find(out, 0x32), nullptr);
    EXPECT_EQ(pol.index_size(), 1u);
    EXPECT_EQ(pol.counters().keys_expired, 1u);
    EXPECT_EQ(pol.counters().holders_expired, 1u);
}

TEST(AffinityPolicy, FullCacheAgesFasterAndRestartForgets) {
    auto p = params();
    p.ttl_ns = 100 * kSec;
    AffinityPolicy pol(p);
    auto b = backends(2);
    pol.update_backends(b, 0);
    pol.on_report(report(0x41, {}, 0), 1 * kSec);
    pol.on_report(report(0x42, {}, 1), 1 * kSec);
    // Backend 0's cache is full and its hit rate falls: its TTL shrinks to a quarter or less.
    b[0].kv_usage = 1.0;
    b[0].hit_rate = 0.8;
    pol.update_backends(b, 0);
    b[0].hit_rate = 0.3;
    pol.update_backends(b, 0);
    EXPECT_GE(pol.counters().ttl_shortened, 2u);
    auto out = pol.compute(40 * kSec);  // 39 s idle: beyond 100 s x 0.25 x 0.5, within 100 s
    EXPECT_EQ(find(out, 0x41), nullptr);
    EXPECT_NE(find(out, 0x42), nullptr);
    // Backend 1 restarts (its counters reset): everything it held is forgotten at once.
    b[1].cache_reset = true;
    pol.update_backends(b, 0);
    out = pol.compute(41 * kSec);
    EXPECT_EQ(find(out, 0x42), nullptr);
    EXPECT_GE(pol.counters().holders_flushed, 1u);
}

TEST(AffinityPolicy, PinsComeFirstAndSkipDownBackends) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(4, {3}), 0);
    pol.pin(0x99, {2, 3});
    pol.on_report(report(0x99, {}, 0), 1 * kSec);  // a pin overrides what was learned
    auto out = pol.compute(1 * kSec);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out[0].key, 0x99u);
    EXPECT_TRUE(out[0].pinned);
    EXPECT_EQ(out[0].depth, kPrefixDepth) << "a pinned prefix is weighed as the prefix it is";
    EXPECT_EQ(ids(out[0]), std::set<std::uint16_t>{2});
    EXPECT_EQ(
        std::count_if(out.begin(), out.end(), [](const DesiredEntry &e) { return e.key == 0x99; }),
        1);
    EXPECT_TRUE(pol.unpin(0x99));
    EXPECT_FALSE(pol.unpin(0x99));
    out = pol.compute(1 * kSec);
    EXPECT_EQ(ids(*find(out, 0x99)), std::set<std::uint16_t>{0});
}

TEST(AffinityPolicy, MemoryAndOutputAreBounded) {
    auto p = params();
    p.index_max = 100;
    p.max_entries = 30;
    AffinityPolicy pol(p);
    pol.update_backends(backends(2), 0);
    for (std::uint64_t k = 1; k <= 500; k++)
        pol.on_report(report(k, {}, static_cast<std::uint16_t>(k % 2)), k * 1000);
    EXPECT_EQ(pol.index_size(), 100u);
    EXPECT_EQ(pol.counters().keys_evicted, 400u);
    auto out = pol.compute(1 * kSec);
    EXPECT_EQ(out.size(), 30u);
    // The most recently requested prefixes are the ones kept.
    EXPECT_NE(find(out, 500), nullptr);
    EXPECT_EQ(find(out, 300), nullptr);
    EXPECT_EQ(pol.counters().entries_truncated, 70u);
}

TEST(AffinityPolicy, IgnoresBadReportsAndZeroKeys) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(2), 0);
    auto r = report(0, {0, 5}, 1);
    pol.on_report(r, kSec);
    r.backend_id = KVS_MAX_BACKENDS;
    pol.on_report(r, kSec);
    r = report(7, {}, 0);
    r.n_blocks = KVS_MAX_REPORT_BLOCKS + 1;
    pol.on_report(r, kSec);
    EXPECT_EQ(pol.counters().reports_ignored, 2u);
    auto out = pol.compute(kSec);
    ASSERT_EQ(out.size(), 1u);  // only block 5; key 0 is never an entry
    EXPECT_EQ(out[0].key, 5u);
}

// A flow keyed on its 5-tuple (no prompt seen: no body, Expect: 100-continue, a GET) shares
// nothing with any other: its report is counted, not learned (each added an index entry of its
// own, evicting prompts' ones).
TEST(AffinityPolicy, FiveTupleKeyedReportsAreNotLearned) {
    AffinityPolicy pol(params());
    pol.update_backends(backends(2), 0);
    auto r = report(77, {}, 1);
    r.key_kind = KVS_KEY_FIVE_TUPLE;
    pol.on_report(r, kSec);
    EXPECT_EQ(pol.counters().reports, 1u);
    EXPECT_EQ(pol.counters().reports_unkeyed, 1u);
    EXPECT_EQ(pol.counters().keys_learned, 0u);
    EXPECT_EQ(pol.index_size(), 0u);
    r.key_kind = KVS_KEY_BODY_PREFIX;  // the body's leading bytes: learned
    pol.on_report(r, kSec);
    EXPECT_EQ(pol.counters().keys_learned, 1u);
    EXPECT_EQ(pol.index_size(), 1u);
}

TEST(AffinityPolicy, DecisionsAreLogged) {
    AffinityPolicy pol(params());
    std::vector<std::string> lines;
    pol.set_decision_sink([&](const std::string &s) { lines.push_back(s); });
    pol.update_backends(backends(3), 0);
    for (int i = 0; i < 30; i++)
        pol.on_report(report(0x5, {}, 0), kSec + static_cast<std::uint64_t>(i) * 1000000);
    pol.compute(kSec + 30000000);
    bool hot = false, rep = false;
    for (auto &l : lines) {
        hot |= l.find("hot") != std::string::npos;
        rep |= l.find("replicated") != std::string::npos;
    }
    EXPECT_TRUE(hot && rep);
}

// Remote state (fleet-share-hot): what the other appliances of a fleet know.

namespace {

// `n` requests spread over the second before `t` on prefix `key` (no blocks), to `backend`.
void requests(AffinityPolicy &pol, std::uint64_t key, int n, std::uint16_t backend,
              std::uint64_t t) {
    for (int i = 0; i < n; i++)
        pol.on_report(report(key, {}, backend),
                      t - kSec + static_cast<std::uint64_t>(i) * (kSec / static_cast<unsigned>(n)));
}

RemoteKey remote(std::uint64_t key, double rate, bool hot, std::vector<std::uint16_t> holders,
                 std::uint8_t depth = kPrefixDepth) {
    RemoteKey k;
    k.key = key;
    k.depth = depth;
    k.rate = rate;
    k.hot = hot;
    k.holders = std::move(holders);
    return k;
}

}  // namespace

TEST(AffinityPolicyRemote, RemoteRateMakesAPrefixHotThatLocalRateAloneDoesNot) {
    const std::uint64_t t = 2 * kSec;
    AffinityPolicy alone(params()), fleet(params());
    for (auto *pol : {&alone, &fleet}) {
        pol->update_backends(backends(4), 0);
        requests(*pol, 0x77, 6, 0, t);  // ~3.5 req/s here: below 10
    }
    // Two other appliances see 4 and 5 req/s of it: 3.5 + 9 > 10 together.
    fleet.set_remote({remote(0x77, 4, false, {}), remote(0x77, 5, false, {})});
    EXPECT_EQ(fleet.remote_size(), 1u);  // one key, the rates summed
    auto a = alone.compute(t), f = fleet.compute(t);
    ASSERT_NE(find(a, 0x77), nullptr);
    EXPECT_FALSE(find(a, 0x77)->hot);
    EXPECT_EQ(find(a, 0x77)->n, 1);
    ASSERT_NE(find(f, 0x77), nullptr);
    EXPECT_TRUE(find(f, 0x77)->hot);
    EXPECT_EQ(find(f, 0x77)->n, 3);  // replicated to K
    EXPECT_EQ(fleet.counters().became_hot, 1u);
    EXPECT_EQ(fleet.counters().remote_became_hot, 1u);
    EXPECT_EQ(alone.counters().became_hot, 0u);
    // Hot by this appliance's own evidence (the fleet's rate counts): shared as hot.
    auto info = fleet.info(0x77, t);
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->own_hot);
    EXPECT_LT(info->rate, 10.0);  // the local rate alone
}

TEST(AffinityPolicyRemote, RemoteHotFlagIsUsedButNotSharedOn) {
    const std::uint64_t t = 2 * kSec;
    AffinityPolicy pol(params());
    pol.update_backends(backends(4), 0);
    requests(pol, 0x77, 3, 0, t);
    pol.set_remote({remote(0x77, 0.5, true, {})});
    auto out = pol.compute(t);
    ASSERT_NE(find(out, 0x77), nullptr);
    EXPECT_TRUE(find(out, 0x77)->hot);
    EXPECT_EQ(find(out, 0x77)->n, 3);
    auto info = pol.info(0x77, t);
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->hot);
    EXPECT_FALSE(info->own_hot);  // two appliances must not keep each other hot
    // The remote state goes: the prefix cools, its replicas go.
    pol.set_remote({});
    out = pol.compute(t + kSec / 10);
    EXPECT_FALSE(find(out, 0x77)->hot);
    EXPECT_EQ(ids(*find(out, 0x77)), std::set<std::uint16_t>{0});
    EXPECT_EQ(pol.counters().cooled, 1u);
}

TEST(AffinityPolicyRemote, RemoteHoldersMappedByAddressFollowTheLocalOnes) {
    // Two other appliances' lists; their backend ids differ from ours, their addresses do not.
    std::array<std::optional<std::vector<FleetHotKey>>, KVS_MAX_APPLIANCES> lists{};
    lists[1] = std::vector<FleetHotKey>{
        {0x11, kPrefixDepth, 2.0, false, {"10.0.0.3:8000", "10.9.9.9:8000"}}};  // 10.9.9.9: unknown
    lists[2] = std::vector<FleetHotKey>{{0x11, kPrefixDepth, 1.0, false, {"10.0.0.2:8000"}}};
    lists[0] = std::vector<FleetHotKey>{{0x11, kPrefixDepth, 9.0, true, {"10.0.0.1:8000"}}};
    const std::map<std::string, std::uint16_t> by_addr = {
        {"10.0.0.1:8000", 1}, {"10.0.0.2:8000", 2}, {"10.0.0.3:8000", 3}};
    std::size_t unknown = 0;
    auto keys = fleet_remote_keys(lists, /*self=*/0, by_addr, &unknown);
    EXPECT_EQ(unknown, 1u);
    ASSERT_EQ(keys.size(), 2u);  // self's own list left out
    EXPECT_EQ(keys[0].holders, std::vector<std::uint16_t>{3});
    EXPECT_EQ(keys[1].holders, std::vector<std::uint16_t>{2});

    const std::uint64_t t = 2 * kSec;
    AffinityPolicy pol(params());  // K = 3
    pol.update_backends(backends(4), 0);
    requests(pol, 0x11, 2, 0, t);
    pol.set_remote(keys);
    auto out = pol.compute(t);
    auto *e = find(out, 0x11);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(e->hot);  // 2 + 3 req/s
    ASSERT_EQ(e->n, 3);
    EXPECT_EQ(e->backends[0], 0);  // the local holder first
    EXPECT_EQ(e->backends[1], 3);  // then the remote ones, in member order
    EXPECT_EQ(e->backends[2], 2);
    EXPECT_EQ(pol.counters().remote_holders_used, 2u);

    // Only eligible ones, and within K (K = 2: the local holder and one remote holder).
    PolicyParams p = params();
    p.replication = 2;
    AffinityPolicy two(p);
    two.update_backends(backends(4, {3}), 0);
    requests(two, 0x11, 2, 0, t);
    two.set_remote(keys);
    out = two.compute(t);
    EXPECT_EQ(ids(*find(out, 0x11)), (std::set<std::uint16_t>{0, 2}));
}

TEST(AffinityPolicyRemote, HotPrefixTakesRemoteHoldersBeforeNewReplicas) {
    const std::uint64_t t = 2 * kSec;
    AffinityPolicy pol(params());  // K = 3
    auto b = backends(5);
    b[4].in_flight = 40;  // the busiest: never a new replica here
    pol.update_backends(b, 0);
    requests(pol, 0x77, 20, 0, t);  // hot on its own
    pol.set_remote({remote(0x77, 5, true, {4})});
    auto out = pol.compute(t);
    auto *e = find(out, 0x77);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->hot);
    ASSERT_EQ(e->n, 3);
    EXPECT_EQ(e->backends[0], 0);
    EXPECT_EQ(e->backends[1], 4);  // cached there already (another appliance's replica)
    EXPECT_EQ(pol.counters().replicas_added, 1u);
}

TEST(AffinityPolicyRemote, RemoteOnlyKeyGetsAnEntry) {
    const std::uint64_t t = 2 * kSec;
    AffinityPolicy pol(params());
    pol.update_backends(backends(4, {2}), 0);
    requests(pol, 0x11, 2, 0, t);
    pol.set_remote({
        remote(0x77, 30, true, {1, 3, 2}, 3),  // hot elsewhere: cached on 1 and 3 (2 is down)
        remote(0x88, 1, false, {3}),           // cached on 3: this appliance's first request too
        remote(0x99, 8, false, {}),            // neither hot nor held: nothing to write
        remote(0xaa, 40, true, {2}),           // only an ineligible holder: nothing to write
    });
    auto out = pol.compute(t);
    auto *e = find(out, 0x77);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->hot);
    EXPECT_EQ(e->depth, 3);
    EXPECT_EQ(ids(*e), (std::set<std::uint16_t>{1, 3}));
    ASSERT_NE(find(out, 0x88), nullptr);
    EXPECT_FALSE(find(out, 0x88)->hot);
    EXPECT_EQ(ids(*find(out, 0x88)), std::set<std::uint16_t>{3});
    EXPECT_EQ(find(out, 0x99), nullptr);
    EXPECT_EQ(find(out, 0xaa), nullptr);
    EXPECT_EQ(pol.counters().remote_entries, 2u);
    EXPECT_EQ(pol.counters().keys_learned, 1u);  // nothing remote is learned into the index
    EXPECT_EQ(pol.index_size(), 1u);
    EXPECT_EQ(out.size(), 3u);
    // The local entries come first within max_entries.
    PolicyParams p = params();
    p.max_entries = 2;
    pol.set_params(p);
    out = pol.compute(t);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].key, 0x11u);
    EXPECT_EQ(out[1].key, 0x77u);  // the highest remote rate first
    // The first local request: an index entry, the remote holders after it.
    pol.set_params(params());
    pol.on_report(report(0x88, {}, 0), t);
    out = pol.compute(t);
    EXPECT_EQ(ids(*find(out, 0x88)), (std::set<std::uint16_t>{0, 3}));
    EXPECT_EQ(find(out, 0x88)->backends[0], 0);
}

TEST(AffinityPolicyRemote, TopListsBusiestPrefixesByLocalRate) {
    const std::uint64_t t = 2 * kSec;
    AffinityPolicy pol(params());
    pol.update_backends(backends(4), 0);
    requests(pol, 0x11, 4, 1, t);
    requests(pol, 0x22, 20, 2, t);
    requests(pol, 0x33, 1, 3, t);
    // Hot only because another appliance says so: not shared on (own_hot false), and the
    // remote rate is not this appliance's own to list by.
    pol.set_remote({remote(0x33, 0, true, {})});
    pol.compute(t);
    auto top = pol.top(64, 1.5, t);  // 0x22 ~12.9 req/s, 0x11 ~2.2, 0x33 ~0.4
    ASSERT_EQ(top.size(), 2u);
    EXPECT_EQ(top[0].key, 0x22u);
    EXPECT_TRUE(top[0].own_hot);
    EXPECT_EQ(top[0].holders, std::vector<std::uint16_t>{2});
    EXPECT_EQ(top[0].extra.size(), 2u);  // K = 3
    EXPECT_EQ(top[1].key, 0x11u);
    EXPECT_FALSE(top[1].own_hot);
    EXPECT_EQ(pol.top(1, 0, t).size(), 1u);
    EXPECT_EQ(pol.top(64, 0, t).size(), 3u);
}

TEST(AffinityPolicyRemote, NoRemoteStateChangesNothing) {
    // The same reports, backends and computes into a policy without remote state, one given an
    // empty remote state, one given remote keys that neither make anything hot, nor hold, nor
    // add a rate: same entries and counters every round.
    PolicyParams p = params();
    p.min_hot_ns = 2 * kSec;
    AffinityPolicy a(p), b(p), c(p);
    b.set_remote({});
    c.set_remote({remote(0x77, 0, false, {}), remote(0x1234, 0, false, {})});
    auto bs = backends(5, {4});
    bs[1].in_flight = 7;
    for (auto *pol : {&a, &b, &c}) pol->update_backends(bs, 0);
    std::uint64_t t = kSec;
    for (int round = 0; round < 40; round++) {
        const int n = round < 10 ? 30 : round < 20 ? 4 : 0;  // hot, then cooling, then idle
        for (auto *pol : {&a, &b, &c}) {
            for (int i = 0; i < n; i++) {
                const auto at = t + static_cast<std::uint64_t>(i) *
                                        (kSec / 4 / static_cast<std::uint64_t>(n + 1));
                pol->on_report(report(0x77, {0xb0 + static_cast<std::uint64_t>(i % 3)},
                                      static_cast<std::uint16_t>(i % 4)),
                               at);
            }
        }
        auto oa = a.compute(t), ob = b.compute(t), oc = c.compute(t);
        EXPECT_EQ(oa, ob) << round;
        EXPECT_EQ(oa, oc) << round;
        t += kSec / 4;
    }
    const auto &ca = a.counters(), &cb = b.counters(), &cc = c.counters();
    EXPECT_GT(ca.became_hot, 0u);
    EXPECT_GT(ca.cooled, 0u);
    for (const auto *x : {&cb, &cc}) {
        EXPECT_EQ(ca.became_hot, x->became_hot);
        EXPECT_EQ(ca.cooled, x->cooled);
        EXPECT_EQ(ca.held_hot, x->held_hot);
        EXPECT_EQ(ca.replicas_added, x->replicas_added);
        EXPECT_EQ(ca.replicas_dropped, x->replicas_dropped);
        EXPECT_EQ(ca.over_bound, x->over_bound);
        EXPECT_EQ(x->remote_became_hot + x->remote_holders_used + x->remote_entries, 0u);
    }
}
