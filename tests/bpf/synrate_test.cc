// The per-prefix SYN-ACK token bucket (synrate.h), shared by XDP and the pure-DPDK workers.
#include <gtest/gtest.h>

#include "kvsteer/synrate.h"

namespace {

// SYN-ACKs a bucket allows to SYNs every `gap_ns` for `span_ns`.
unsigned allowed(__u32 rate, __u32 burst, __u64 gap_ns, __u64 span_ns) {
    kvs_syn_bucket b{};
    const __u64 t0 = 1'000'000'000ull;
    kvs_syn_bucket_init(&b, t0, burst);
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
    kvs_syn_bucket_init(&b, 0, 5);
    // An hour idle: still 5, then none.
    unsigned n = 0;
    for (int i = 0; i < 10; ++i) n += kvs_syn_bucket_take(&b, 3'600'000'000'000ull, 100, 5);
    EXPECT_EQ(n, 5u);
    // A clock going backwards refills nothing.
    EXPECT_EQ(kvs_syn_bucket_take(&b, 1'000, 100, 5), 0);
}

}  // namespace
