// Consumer side of the per-worker binding-report rings (protocol in abi.h, struct kvs_ring_ctl).
#pragma once

#include <cstdint>
#include <functional>

#include "kvsteer/abi.h"

namespace kvsteer::control {

struct RingStats {
    std::uint64_t consumed = 0;
    std::uint64_t invalid = 0;           // reports with out-of-range fields (skipped)
    std::uint64_t resets = 0;            // head moved backwards (producer restarted): resynced
    std::uint64_t overruns = 0;          // head more than a ring ahead of tail: oldest lost
    std::uint64_t producer_dropped = 0;  // sum of the producers' own dropped counters (latest)
};

// Drains every worker's ring once (at most one ring's worth each). Calls `fn` per valid report,
// in order per worker. Returns the number of reports delivered.
std::size_t consume_reports(kvs_ring_ctl *ctl, const kvs_bind_report *slots, unsigned workers,
                            const std::function<void(const kvs_bind_report &)> &fn, RingStats &st);

}  // namespace kvsteer::control
