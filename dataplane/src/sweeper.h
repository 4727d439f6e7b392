// Flow expiry off the packet path: deletes closed or idle entries (both directions) from kvs_flows.
#pragma once

#include <cstdint>

#include "worker.h"

namespace kvsteer::dp {

struct SweepResult {
    std::uint32_t seen = 0, deleted = 0;
};

// One pass over kvs_flows at CLOCK_MONOTONIC time `now_ns`. Frees the SNAT ports of deleted
// flows in `ports` (may be null). `mark_busy` marks the ports of every live flow (at startup,
// so a restarted dataplane does not reuse a port an XDP flow still holds).
SweepResult sweep_flows(int flows_fd, std::uint64_t now_ns, std::uint64_t closed_idle_ns,
                        std::uint64_t idle_ns, PortBusy *ports, bool mark_busy = false);

}  // namespace kvsteer::dp
