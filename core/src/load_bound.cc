#include "kvsteer/core/load_bound.h"

#include <cmath>

namespace kvsteer {

double load_factor(const kvs_config &c) noexcept {
    return c.load_factor_milli ? c.load_factor_milli / 1000.0 : kDefaultLoadFactor;
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
