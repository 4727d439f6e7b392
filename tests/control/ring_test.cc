// Binding-report rings: a producer thread following the abi.h protocol, the daemon's consumer.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "heap_maps.h"
#include "kvsteer/control/ring.h"

using namespace kvsteer::control;

namespace {

// The dataplane side of the protocol (abi.h): write the slot, then store-release head+1; when
// the ring is full, drop and count.
bool produce(kvs_ring_ctl &ctl, kvs_bind_report *ring, const kvs_bind_report &r) {
    std::uint64_t head = std::atomic_ref<__u64>(ctl.head).load(std::memory_order_relaxed);
    std::uint64_t tail = std::atomic_ref<__u64>(ctl.tail).load(std::memory_order_acquire);
    if (head - tail >= KVS_BIND_RING_SLOTS) {
        std::atomic_ref<__u64>(ctl.dropped).fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    ring[head & (KVS_BIND_RING_SLOTS - 1)] = r;
    std::atomic_ref<__u64>(ctl.head).store(head + 1, std::memory_order_release);
    return true;
}

kvs_bind_report make(std::uint64_t seq, std::uint16_t worker) {
    kvs_bind_report r{};
    r.ts_ns = seq;
    r.prefix_hash = seq * 31 + worker;
    r.n_blocks = static_cast<std::uint16_t>(seq % (KVS_MAX_REPORT_BLOCKS + 1));
    for (unsigned i = 0; i < r.n_blocks; i++) r.block_hash[i] = seq ^ (i + 1);
    r.backend_id = static_cast<std::uint16_t>(seq % 7);
    r.worker = worker;
    return r;
}

}  // namespace

TEST(Ring, ConcurrentProducersDeliverEverythingInOrder) {
    HeapMaps m;
    constexpr unsigned kWorkers = 3;
    constexpr std::uint64_t kPerWorker = 50000;
    std::atomic<unsigned> done{0};
    std::vector<std::thread> producers;
    for (unsigned w = 0; w < kWorkers; w++) {
        producers.emplace_back([&, w] {
            kvs_bind_report *ring = m.view.ring + w * KVS_BIND_RING_SLOTS;
            for (std::uint64_t s = 1; s <= kPerWorker;) {
                if (produce(m.view.ring_ctl[w], ring, make(s, static_cast<std::uint16_t>(w))))
                    s++;
                else
                    std::this_thread::yield();  // a test producer retries instead of dropping
            }
            done++;
        });
    }
    std::vector<std::uint64_t> next(kWorkers, 1);
    std::uint64_t bad = 0, total = 0;
    RingStats st;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((done < kWorkers || total < kWorkers * kPerWorker) &&
           std::chrono::steady_clock::now() < deadline) {
        total += consume_reports(
            m.view.ring_ctl, m.view.ring, KVS_MAX_WORKERS,
            [&](const kvs_bind_report &r) {
                auto expect = make(next[r.worker], r.worker);
                if (std::memcmp(&expect, &r, sizeof r) != 0) bad++;
                next[r.worker]++;
            },
            st);
    }
    for (auto &t : producers) t.join();
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(total, kWorkers * kPerWorker);
    EXPECT_EQ(st.consumed, total);
    for (unsigned w = 0; w < kWorkers; w++) EXPECT_EQ(m.view.ring_ctl[w].tail, kPerWorker);
}

TEST(Ring, FullRingDropsAreCountedAndInvalidReportsSkipped) {
    HeapMaps m;
    auto &ctl = m.view.ring_ctl[2];
    kvs_bind_report *ring = m.view.ring + 2 * KVS_BIND_RING_SLOTS;
    unsigned ok = 0;
    for (std::uint64_t s = 1; s <= KVS_BIND_RING_SLOTS + 10; s++)
        ok += produce(ctl, ring, make(s, 2));
    EXPECT_EQ(ok, KVS_BIND_RING_SLOTS);
    auto bad = make(1, 2);
    bad.backend_id = KVS_MAX_BACKENDS;  // corrupt: skipped
    ring[3] = bad;
    RingStats st;
    std::size_t n = consume_reports(
        m.view.ring_ctl, m.view.ring, KVS_MAX_WORKERS, [](const kvs_bind_report &) {}, st);
    EXPECT_EQ(n, KVS_BIND_RING_SLOTS - 1);
    EXPECT_EQ(st.invalid, 1u);
    EXPECT_EQ(st.producer_dropped, 10u);
    EXPECT_EQ(ctl.tail, KVS_BIND_RING_SLOTS);
    EXPECT_TRUE(produce(ctl, ring, make(1, 2)));  // room again
}

TEST(Ring, ProducerRestartResyncs) {
    HeapMaps m;
    auto &ctl = m.view.ring_ctl[0];
    ctl.tail = 500;  // consumer state from before the dataplane restarted with head = 0
    ctl.head = 3;
    RingStats st;
    EXPECT_EQ(consume_reports(
                  m.view.ring_ctl, m.view.ring, 1, [](const kvs_bind_report &) {}, st),
              0u);
    EXPECT_EQ(st.resets, 1u);
    EXPECT_EQ(ctl.tail, 3u);
    EXPECT_TRUE(produce(ctl, m.view.ring, make(9, 0)));
    std::uint64_t got = 0;
    consume_reports(
        m.view.ring_ctl, m.view.ring, 1, [&](const kvs_bind_report &r) { got = r.ts_ns; }, st);
    EXPECT_EQ(got, 9u);
}
