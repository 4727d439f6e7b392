#include "kvsteer/core/load_bound.h"

#include <cmath>

namespace kvsteer {

double load_factor(const kvs_config &c) noexcept {
    return c.load_factor_milli ? c.load_factor_milli / 1000.0 : kDefaultLoadFactor;
}

std::uint32_t load_slack(const kvs_config &c) noexcept {
    return c.load_slack ? c.load_slack : KVS_DEFAULT_LOAD_SLACK;
}

std::uint32_t miss_tolerance(double total, std::uint32_t n) noexcept {
    if (n == 0) return 0;
    if (!(total >= 0.0)) total = 0.0;
    const double mean = total / n;
    const double t = std::floor(kMissToleranceShare * mean);
    if (!(t < 4294967295.0)) return UINT32_MAX;
    return static_cast<std::uint32_t>(t);
}

std::uint64_t affinity_bound(double c, std::uint32_t slack, double total, std::uint32_t n,
                             double min_load) noexcept {
    const std::uint64_t b = load_bound(c, total, n);
    if (n == 0) return 0;
    if (!(min_load >= 0.0)) min_load = 0.0;
    const double floor_b = std::floor(min_load) + 1.0 + static_cast<double>(slack);
    if (!(floor_b < 18446744073709551616.0)) return UINT64_MAX;
    const auto f = static_cast<std::uint64_t>(floor_b);
    return f > b ? f : b;
}

std::uint64_t load_bound(double c, double total, std::uint32_t n) noexcept {
    if (n == 0) return 0;
    if (!(c >= 1.0)) c = 1.0;  // also NaN
    if (!(total >= 0.0)) total = 0.0;
    const double b = std::ceil(c * (total + 1.0) / n);
    // 2^64 is exactly representable; anything at or above it (or inf) does not fit.
    if (!(b < 18446744073709551616.0)) return UINT64_MAX;
    return static_cast<std::uint64_t>(b);
}

}  // namespace kvsteer
