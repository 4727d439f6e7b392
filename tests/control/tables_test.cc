// Double-buffered tables: a concurrent reader never sees a half-written Maglev table, and the
// check itself catches an in-place writer (so it can fail).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "heap_maps.h"
#include "kvsteer/control/net.h"
#include "kvsteer/control/tables.h"
#include "kvsteer/core/affinity.h"
#include "kvsteer/core/maglev.h"

using namespace kvsteer::control;

namespace {

std::uint64_t checksum(const std::uint32_t *t) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::uint32_t i = 0; i < KVS_MAGLEV_SIZE; i++) h = (h ^ t[i]) * 1099511628211ull;
    return h;
}

// Four distinct real tables (different backend sets) that the writer cycles through.
std::vector<std::vector<std::uint32_t>> candidate_tables() {
    std::vector<std::vector<std::uint32_t>> out;
    for (int v = 0; v < 4; v++) {
        std::vector<kvsteer::MaglevBackend> b;
        for (std::uint32_t id = 0; id < static_cast<std::uint32_t>(3 + v); id++)
            b.push_back({id, 0x1000u + id * 7919u, 1u + (id % 2)});
        out.push_back(kvsteer::build_maglev(b, KVS_MAGLEV_SIZE));
    }
    return out;
}

struct ReaderResult {
    std::uint64_t checked = 0, overlapped = 0, mixed = 0;
};

// Copies whole active halves the way a dataplane refreshing its own copy would. A read that
// took less than half the writer's grace must see exactly one of the published tables: the
// writer never touches a half until `grace` after it stopped being the active one.
ReaderResult run_reader(const kvsteer::Tables &v, const std::set<std::uint64_t> &valid,
                        std::atomic<bool> &stop, std::chrono::microseconds max_read) {
    ReaderResult r;
    std::vector<std::uint32_t> copy(KVS_MAGLEV_SIZE);
    while (!stop.load(std::memory_order_relaxed)) {
        auto t0 = std::chrono::steady_clock::now();
        auto g1 = std::atomic_ref<__u32>(v.config->generation).load(std::memory_order_acquire);
        auto a = TableWriter::active_maglev(v.config);
        const std::uint32_t *half = v.maglev + static_cast<std::size_t>(a) * KVS_MAGLEV_SIZE;
        for (std::uint32_t i = 0; i < KVS_MAGLEV_SIZE; i++)
            copy[i] = std::atomic_ref<std::uint32_t>(const_cast<std::uint32_t &>(half[i]))
                          .load(std::memory_order_relaxed);
        auto g2 = std::atomic_ref<__u32>(v.config->generation).load(std::memory_order_acquire);
        if (std::chrono::steady_clock::now() - t0 > max_read)
            continue;  // preempted: longer than the guarantee covers
        r.checked++;
        r.overlapped += g2 != g1;
        if (!valid.count(checksum(copy.data()))) r.mixed++;
    }
    return r;
}

}  // namespace

TEST(Tables, ReaderNeverSeesAMixedMaglevTable) {
    HeapMaps m;
    auto tables = candidate_tables();
    std::set<std::uint64_t> valid;
    for (auto &t : tables) valid.insert(checksum(t.data()));
    ASSERT_EQ(valid.size(), tables.size());
    const auto grace = std::chrono::milliseconds(4);
    TableWriter w(m.view, grace);
    w.publish_maglev(tables[0]);
    w.publish_maglev(tables[1]);  // both halves hold real tables before the reader starts

    std::atomic<bool> stop{false};
    ReaderResult rr;
    std::thread reader([&] { rr = run_reader(m.view, valid, stop, grace / 2); });
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    int flips = 0;
    while (std::chrono::steady_clock::now() < until) {
        w.publish_maglev(tables[flips % tables.size()]);
        flips++;
    }
    stop = true;
    reader.join();
    EXPECT_EQ(rr.mixed, 0u) << "reader saw a half-written table";
    EXPECT_GT(rr.checked, 10u);
    EXPECT_GT(rr.overlapped, 0u) << "no read overlapped a flip: the test did not exercise the race";
    EXPECT_EQ(w.maglev_flips(), static_cast<std::uint64_t>(flips) + 2);
    EXPECT_EQ(w.generation(), static_cast<std::uint32_t>(flips) + 2);
}

TEST(Tables, CheckDetectsAnInPlaceWriter) {
    // Negative control: rewriting the ACTIVE half in place must be caught by the same reader.
    HeapMaps m;
    auto tables = candidate_tables();
    std::set<std::uint64_t> valid;
    for (auto &t : tables) valid.insert(checksum(t.data()));
    std::memcpy(m.view.maglev, tables[0].data(), KVS_MAGLEV_SIZE * 4);
    std::atomic<bool> stop{false};
    ReaderResult rr;
    std::thread reader([&] { rr = run_reader(m.view, valid, stop, std::chrono::milliseconds(2)); });
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
    for (int i = 0; std::chrono::steady_clock::now() < until; i++) {
        const auto &t = tables[i % tables.size()];
        for (std::uint32_t k = 0; k < KVS_MAGLEV_SIZE; k++)
            std::atomic_ref<std::uint32_t>(m.view.maglev[k]).store(t[k], std::memory_order_relaxed);
    }
    stop = true;
    reader.join();
    EXPECT_GT(rr.mixed, 0u) << "an in-place writer went unnoticed: the check cannot fail";
}

TEST(Tables, GraceKeepsARetiredHalfUntouched) {
    HeapMaps m;
    auto tables = candidate_tables();
    TableWriter w(m.view, std::chrono::milliseconds(60));
    auto t0 = std::chrono::steady_clock::now();
    w.publish_maglev(tables[0]);
    w.publish_maglev(tables[1]);  // must wait out the grace of the first flip
    w.publish_maglev(tables[2]);
    auto dt = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(dt, std::chrono::milliseconds(115));
    EXPECT_EQ(TableWriter::active_maglev(m.view.config), 1u);  // three flips from 0
    EXPECT_EQ(std::memcmp(m.view.maglev + KVS_MAGLEV_SIZE, tables[2].data(), KVS_MAGLEV_SIZE * 4),
              0);
    EXPECT_EQ(std::memcmp(m.view.maglev, tables[1].data(), KVS_MAGLEV_SIZE * 4), 0);
}

TEST(Tables, AffinityHalfAndBackendSlot) {
    HeapMaps m;
    TableWriter w(m.view, std::chrono::milliseconds(0));
    kvsteer::AffinityBuilder b(KVS_AFFINITY_SLOTS);
    std::uint16_t ids[2] = {3, 5};
    ASSERT_TRUE(b.insert(0xabcdef, ids, 2));
    w.publish_affinity(b.table());
    auto a = TableWriter::active_affinity(m.view.config);
    EXPECT_EQ(a, 1u);
    std::span<const kvs_affinity_entry> half(m.view.affinity + a * KVS_AFFINITY_SLOTS,
                                             KVS_AFFINITY_SLOTS);
    kvsteer::PrefixHashes h;
    h.prefix = 0xabcdef;
    const kvs_affinity_entry *e = kvsteer::affinity_lookup(half, h);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->n_backends, 2);
    EXPECT_EQ(e->backends[1], 5);
    EXPECT_EQ(e->depth, 2);

    kvs_backend be{};
    be.addr[0] = 0x0100000a;
    be.port = 0x901f;
    be.family = KVS_AF_INET;
    be.state = KVS_BE_UP;
    be.weight = 4;
    w.write_backend(7, be);
    EXPECT_EQ(m.view.backends[7].state, KVS_BE_UP);
    EXPECT_EQ(m.view.backends[7].weight, 4);
    EXPECT_EQ(m.view.backends[7].port, 0x901f);
    w.set_backend_state(7, KVS_BE_DRAIN);
    EXPECT_EQ(m.view.backends[7].state, KVS_BE_DRAIN);
}
