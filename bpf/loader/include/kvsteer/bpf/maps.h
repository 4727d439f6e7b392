// Pinned kvsteer maps, opened (or created) under a bpffs directory and mmapped where MMAPABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvsteer/abi.h"
#include "kvsteer/core/tables.h"

namespace kvsteer::bpf {

// Every shared table: the Tables pointers are mmaps of the pinned BPF arrays, valid for this
// object's lifetime (a Tables copied from it is a view that must not outlive it), and
// Tables::flows_fd is kvs_flows. The fds stay open. Closing does not unpin: maps outlive every
// process.
struct PinnedMaps : Tables {
    std::string dir;
    int config_fd = -1, backends_fd = -1, load_fd = -1, maglev_fd = -1, affinity_fd = -1;
    int stats_fd = -1, ring_ctl_fd = -1, ring_fd = -1, dp_stats_fd = -1;
    // The fleet (abi.h, "a fleet of appliances"), mmapped: kvs_fleet[1] and
    // kvs_owner[2 * KVS_OWNER_BUCKETS].
    kvs_fleet *fleet = nullptr;
    kvs_owner_entry *owner = nullptr;
    int fleet_fd = -1, owner_fd = -1;
    // kvs_fleet_heard[KVS_FLEET_HEARD_ENTRIES] (abi.h, "liveness"), mmapped: written by XDP.
    std::uint64_t *fleet_heard = nullptr;
    int fleet_heard_fd = -1;

    PinnedMaps() = default;
    PinnedMaps(const PinnedMaps &) = delete;
    PinnedMaps &operator=(const PinnedMaps &) = delete;
    ~PinnedMaps();
};

// Opens the pinned maps under `dir`. With `create`, missing maps are created with exactly the
// definitions of the XDP object (so the XDP program, DPDK's af_xdp PMD and every process reuse
// them) and pinned there; `dir` must be on a bpffs (created if missing). nullptr + `err` on
// failure, naming the map and the reason; `missing` (when given) is then set when the failure is
// only that `dir` or a pin does not exist yet (another process may be about to create them).
std::unique_ptr<PinnedMaps> open_pinned_maps(const std::string &dir, bool create, std::string *err,
                                             bool *missing = nullptr);

// Sums the per-CPU kvs_stats counter of each reason (one syscall per call; not for packet paths).
bool read_xdp_stats(const PinnedMaps &m, std::uint64_t *out, unsigned n, std::string *err);

}  // namespace kvsteer::bpf
