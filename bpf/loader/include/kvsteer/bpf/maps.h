// Pinned kvsteer maps, opened (or created) under a bpffs directory and mmapped where MMAPABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvsteer/abi.h"

namespace kvsteer::bpf {

// Every shared table. Pointers are mmaps of the pinned BPF arrays (valid for this object's
// lifetime); the fds stay open. Closing does not unpin: maps outlive every process.
struct PinnedMaps {
    std::string dir;
    int config_fd = -1, backends_fd = -1, load_fd = -1, maglev_fd = -1, affinity_fd = -1;
    int flows_fd = -1, stats_fd = -1, ring_ctl_fd = -1, ring_fd = -1, dp_stats_fd = -1;

    kvs_config *config = nullptr;             // [1]
    kvs_backend *backends = nullptr;          // [KVS_MAX_BACKENDS]
    kvs_backend_load *load = nullptr;         // [KVS_MAX_BACKENDS]
    std::uint32_t *maglev = nullptr;          // [2 * KVS_MAGLEV_SIZE]
    kvs_affinity_entry *affinity = nullptr;   // [2 * KVS_AFFINITY_SLOTS]
    kvs_ring_ctl *ring_ctl = nullptr;         // [KVS_MAX_WORKERS]
    kvs_bind_report *ring = nullptr;          // [KVS_MAX_WORKERS * KVS_BIND_RING_SLOTS]
    std::uint64_t *dp_stats = nullptr;        // [KVS_MAX_WORKERS * KVS_STATS_MAX]

    PinnedMaps() = default;
    PinnedMaps(const PinnedMaps &) = delete;
    PinnedMaps &operator=(const PinnedMaps &) = delete;
    ~PinnedMaps();
};

// Opens the pinned maps under `dir`. With `create`, missing maps are created with exactly the
// definitions of the XDP object (so the XDP program, DPDK's af_xdp PMD and every process reuse
// them) and pinned there; `dir` must be on a bpffs (created if missing). nullptr + `err` on
// failure, naming the map and the reason.
std::unique_ptr<PinnedMaps> open_pinned_maps(const std::string &dir, bool create, std::string *err);

// Sums the per-CPU kvs_stats counter of each reason (one syscall per call; not for packet paths).
bool read_xdp_stats(const PinnedMaps &m, std::uint64_t *out, unsigned n, std::string *err);

}  // namespace kvsteer::bpf
