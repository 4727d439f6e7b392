// choose_backend: the dataplane's backend choice over tables in plain memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/choose.h"
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
    void pin(std::uint64_t key, std::vector<std::uint16_t> ids) {
        AffinityBuilder b;
        ASSERT_TRUE(b.insert(key, ids, 0));
        std::copy(b.table().begin(), b.table().end(), affinity.begin());  // half 0 (active)
    }
    Choice choose(std::uint64_t prefix, std::span<const std::uint16_t> exclude = {}) {
        PrefixHashes h;
        h.prefix = prefix;
        return choose_backend(tables(), h, prefix, exclude, *scratch);
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
    // Two backends holding 3 and 2: (total + 1) / n = 3, so c = 1 bounds at 3 and c = 1.25 at 4.
    Mem m(2);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 3);
    m.set_in_flight(1, 2);
    m.config.load_factor_milli = 0;  // the default, 1.25: backend 0 may take a 4th
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.config.load_factor_milli = 1000;  // c = 1: it may not; Maglev places the flow
    Choice c = m.choose(0x1234);
    EXPECT_NE(c.via, KVS_VIA_AFFINITY);
    EXPECT_EQ(c.backend, 1);  // the only backend within the bound
}

TEST(CoreChoose, MaxLoadReplacesTheBoundForAffinity) {
    Mem m(2);
    m.pin(0x1234, {0});
    m.set_in_flight(0, 10);
    m.config.load_factor_milli = 1000;
    m.backends[0].max_load = 11;  // over the load-factor bound, within max_load
    EXPECT_EQ(m.choose(0x1234).via, KVS_VIA_AFFINITY);
    m.backends[0].max_load = 10;  // in_flight + 1 > max_load
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
