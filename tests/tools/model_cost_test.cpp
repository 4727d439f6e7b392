// CostModel: matches the H200 calibration points and is monotonic where physics says so.
#include <gtest/gtest.h>

#include <cmath>

#include "kvsteer/model/cost_model.h"

using namespace kvsteer::model;

namespace {
// Llama-3.1-8B rows of the shared calibration/h200-prefill.json: (cached, new, measured ms).
struct Point {
    uint64_t cached, fresh;
    double ms;
};
constexpr Point kPoints[] = {
    {0, 2048, 61.1},    {1024, 1024, 35.78},  {0, 4096, 123.06},     {2048, 2048, 75.42},
    {3584, 512, 26.63}, {0, 8192, 253.81},    {4096, 4096, 174.02},  {7168, 1024, 51.64},
    {0, 16384, 594.15}, {8192, 8192, 467.77}, {14336, 2048, 129.61}, {15892, 492, 48.16},
};
}  // namespace

TEST(CostModel, MatchesCalibrationPoints) {
    CostModel m;
    double sum_rel = 0;
    for (const auto &p : kPoints) {
        const double ms = m.prefill_time(p.cached, p.fresh) * 1e3;
        const double rel = std::fabs(ms - p.ms) / p.ms;
        EXPECT_LT(rel, 0.40) << "cached " << p.cached << " new " << p.fresh << ": model " << ms
                             << " ms vs measured " << p.ms;
        sum_rel += rel;
    }
    EXPECT_LT(sum_rel / std::size(kPoints), 0.15);
    // The two headline figures: 123 ms cold vs 27 ms with 3,584 of 4,096 cached.
    EXPECT_NEAR(m.prefill_time(0, 4096) * 1e3, 123.06, 123.06 * 0.2);
    EXPECT_LT(m.prefill_time(3584, 512), m.prefill_time(0, 4096) / 2.5);
}

TEST(CostModel, Monotonic) {
    CostModel m;
    for (uint64_t n = 16; n < 32768; n *= 2) {
        EXPECT_LT(m.prefill_time(0, n), m.prefill_time(0, 2 * n));
        EXPECT_LT(m.prefill_time(n, 256),
                  m.prefill_time(2 * n, 256));  // attention over more context
    }
    for (uint64_t b = 1; b < 512; b *= 2) {
        EXPECT_LT(m.decode_step_time(b, 1000 * b), m.decode_step_time(2 * b, 2000 * b));
        EXPECT_LT(m.decode_step_time(b, 1000), m.decode_step_time(b, 100000));
    }
    EXPECT_EQ(m.decode_step_time(0, 0), 0.0);
}

TEST(CostModel, ChunkedPrefillAddsUpToOnePrefill) {
    CostModel m;
    const double whole = m.prefill_work(1000, 9000);
    const double chunks =
        m.prefill_work(1000, 4000) + m.prefill_work(5000, 3000) + m.prefill_work(8000, 2000);
    EXPECT_NEAR(whole, chunks, 1e-12);
}

TEST(CostModel, ScaleMultipliesEverything) {
    CostConfig c;
    c.scale = 10;
    CostModel m10(c), m1;
    EXPECT_NEAR(m10.prefill_time(100, 1000), 10 * m1.prefill_time(100, 1000), 1e-12);
    EXPECT_NEAR(m10.decode_step_time(8, 8000), 10 * m1.decode_step_time(8, 8000), 1e-12);
}
