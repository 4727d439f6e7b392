// CLOCK_MONOTONIC in nanoseconds: the clock every timestamp the daemon keeps is read from.
#pragma once

#include <time.h>

#include <cstdint>

namespace kvsteer::control {

inline std::uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace kvsteer::control
