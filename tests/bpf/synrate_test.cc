// The per-prefix SYN-ACK token bucket (synrate.h), shared by XDP and the pure-DPDK workers.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "kvsteer/synrate.h"

namespace {

// SYN-ACKs a bucket allows to SYNs every `gap_ns` for `span_ns`.
unsigned allowed(__u32 rate, __u32 burst, __u64 gap_ns, __u64 span_ns) {
    kvs_syn_bucket b{};
    const __u64 t0 = 1'000'000'000ull;
    kvs_syn_bucket_init(&b, t0);
    unsigned n = 0;
    for (__u64 t = t0; t < t0 + span_ns; t += gap_ns) n += kvs_syn_bucket_take(&b, t, rate, burst);
    return n;
}

TEST(SynRate, ABurstThenTheRate) {
    // Burst 10 at once; then 100/s over the 999 ms to the last SYN: 10 + 99.
    EXPECT_EQ(allowed(100, 10, 1'000'000, 1'000'000'000), 109u);
    // SYNs 1 s apart: each finds a token.
    EXPECT_EQ(allowed(1, 1, 1'000'000'000, 5'000'000'000), 5u);
}

TEST(SynRate, SynsMicrosecondsApartStillRefillTheBucket) {
    // 100/s, a SYN every 5 us for 10 s: burst 10 + ~1000. Before, each take refilled
    // 5000 x 100 / 1e6 = 0 milli-tokens and moved last_ns on: 10 in all.
    const unsigned n = allowed(100, 10, 5'000, 10'000'000'000);
    EXPECT_GE(n, 1005u);
    EXPECT_LE(n, 1011u);
    // 2000/s, a SYN every 400 ns for 2 s: burst 40 + ~4000 (before: 40 in all, again).
    const unsigned m = allowed(2000, 40, 400, 2'000'000'000);
    EXPECT_GE(m, 4030u);
    EXPECT_LE(m, 4041u);
}

TEST(SynRate, TheBucketNeverHoldsMoreThanTheBurst) {
    kvs_syn_bucket b{};
    kvs_syn_bucket_init(&b, 0);
    // An hour idle: still 5, then none.
    unsigned n = 0;
    for (int i = 0; i < 10; ++i) n += kvs_syn_bucket_take(&b, 3'600'000'000'000ull, 100, 5);
    EXPECT_EQ(n, 5u);
    // A clock going backwards refills nothing.
    EXPECT_EQ(kvs_syn_bucket_take(&b, 1'000, 100, 5), 0);
}

TEST(SynRate, ABurstAboveTenSecondsOfTheRateRefillsWhole) {
    // 1/s, burst 100: emptied at 0, full again 100 s later (the two-field bucket capped the
    // time credited at 10 s: 10 tokens).
    kvs_syn_bucket b{};
    kvs_syn_bucket_init(&b, 0);
    unsigned n = 0;
    for (int i = 0; i < 200; ++i) n += kvs_syn_bucket_take(&b, 0, 1, 100);
    EXPECT_EQ(n, 100u);
    n = 0;
    for (int i = 0; i < 200; ++i) n += kvs_syn_bucket_take(&b, 100'000'000'000ull, 1, 100);
    EXPECT_EQ(n, 100u);
}

TEST(SynRate, ABackwardsClockCreditsNoTimeTwice) {
    // 10/s, burst 1: one at 1 s; the clock steps back to 0.5 s and forward to 1.1 s: one more,
    // not two (the two-field bucket moved its time back and credited 0.5..1 s again).
    kvs_syn_bucket b{};
    kvs_syn_bucket_init(&b, 0);
    const __u64 s = 1'000'000'000ull;
    EXPECT_EQ(kvs_syn_bucket_take(&b, s, 10, 1), 1);
    EXPECT_EQ(kvs_syn_bucket_take(&b, s / 2, 10, 1), 0);
    EXPECT_EQ(kvs_syn_bucket_take(&b, s + s / 10, 10, 1), 1);
    EXPECT_EQ(kvs_syn_bucket_take(&b, s + s / 10, 10, 1), 0);
}

TEST(SynRate, SeveralCpusTakingAtOnceGetTheBurstInAll) {
    // XDP's CPUs share one bucket a prefix: four threads taking at the same instant get the
    // burst in all, never more (each CPU's read-modify-write of two fields could overwrite
    // another's take).
    kvs_syn_bucket b{};
    kvs_syn_bucket_init(&b, 5);
    std::atomic<unsigned> n{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&] {
            while (!go.load()) {
            }
            unsigned mine = 0;
            for (int i = 0; i < 20000; ++i) mine += kvs_syn_bucket_take(&b, 5, 1000, 5000);
            n += mine;
        });
    go = true;
    for (auto &t : ts) t.join();
    EXPECT_EQ(n.load(), 5000u);
}

}  // namespace
