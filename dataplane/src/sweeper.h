// Flow expiry off the packet path: deletes closed or idle entries (both directions) from kvs_flows.
#pragma once

#include <cstdint>
#include <functional>

#include "worker.h"

namespace kvsteer::dp {

struct SweepResult {
    std::uint32_t seen = 0, deleted = 0;
    std::uint32_t reclaimed = 0;  // installed ports whose entries someone else removed
    std::uint32_t closes = 0;     // deleted flows XDP never saw close, counted closed here
    std::uint32_t restored = 0;   // entries put back: used or installed anew as they were deleted
};

// One pass over kvs_flows at CLOCK_MONOTONIC time `now_ns`. Frees the SNAT ports of deleted
// flows in `ports` (may be null), and every port that was kPortInstalled before the pass but
// has no entry in the map any more (removed by XDP or evicted by the LRU). `mark_busy` marks
// the ports of every live flow installed (at startup, so a restarted dataplane does not reuse
// a port an XDP flow still holds). A flow deleted without the close XDP counts at its first FIN
// or RST (idle past the timeout: its client or backend vanished, or half closed) has its close
// counted in `load` (kvs_be_load, may be null) instead, so its backend's in-flight count
// (binds - closes) does not keep it forever.
// A flow's two entries are told by the reverse key and the installation (created_ns, the same on
// both): an entry on the reverse key of another installation is not its twin.
// An entry doomed by the walk is deleted only if, read again, it is still the installation the
// walk saw (created_ns) and still expired: the walk of a large table takes long, and meanwhile a
// flow may carry a packet again, or a client reuse its tuple for a new connection.
// `after_snapshot` (tests): called once the installed ports are noted, before the walk;
// The deletes take the entries' values (bpf_map_lookup_and_delete_elem): entries that a packet
// or a new installation changed between that read and the delete are put back (BPF_NOEXIST).
// `after_walk` (tests): called after the walk, before the deletions; `before_take` (tests): called
// with each doomed flow's key after it is read again, just before its entries are deleted.
SweepResult sweep_flows(int flows_fd, std::uint64_t now_ns, std::uint64_t closed_idle_ns,
                        std::uint64_t idle_ns, PortBusy *ports, bool mark_busy = false,
                        kvs_backend_load *load = nullptr,
                        const std::function<void()> &after_snapshot = {},
                        const std::function<void()> &after_walk = {},
                        const std::function<void(const kvs_flow_key &)> &before_take = {});

}  // namespace kvsteer::dp
