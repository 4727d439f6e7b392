// The shared tables, as every component sees them: the one description of the mapped maps.
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"

namespace kvsteer {

// Pointers into the shared tables: the mmapped pinned BPF maps (bpf::PinnedMaps is one, and
// owns the mappings), or any memory of the same shape (tests, the simulator). Copies are views:
// they own nothing and stay valid as long as the memory they point into. Readers and writers
// follow abi.h's rules for each table (double-buffered halves, one writer per field).
struct Tables {
    kvs_config *config = nullptr;            // [1]
    kvs_backend *backends = nullptr;         // [KVS_MAX_BACKENDS]
    kvs_backend_load *load = nullptr;        // [KVS_MAX_BACKENDS]
    std::uint32_t *maglev = nullptr;         // [2 * KVS_MAGLEV_SIZE]: kvs_maglev_table
    kvs_affinity_entry *affinity = nullptr;  // [2 * KVS_AFFINITY_SLOTS]
    kvs_ring_ctl *ring_ctl = nullptr;        // [KVS_MAX_WORKERS]
    kvs_bind_report *ring = nullptr;         // [KVS_MAX_WORKERS * KVS_BIND_RING_SLOTS]
    std::uint64_t *dp_stats = nullptr;       // [KVS_MAX_WORKERS * KVS_STATS_MAX]
    // kvs_flows (an LRU hash: not mmappable, used through the fd); -1 when there is none, or
    // when the flows are not to be used (the dataplane in dpdk mode keeps its flows local).
    int flows_fd = -1;
};

// Kept-alive connections of a backend idle now (XDP's idle_starts - idle_ends, counted on other
// CPUs, read relaxed): 0 where a read of the two, torn by a count between them, puts the ends
// ahead. The choice subtracts it from the bound connections (binds - closes).
inline std::uint64_t backend_idle(const kvs_backend_load &l) {
    const std::uint64_t starts = __atomic_load_n(&l.idle_starts, __ATOMIC_RELAXED);
    const std::uint64_t ends = __atomic_load_n(&l.idle_ends, __ATOMIC_RELAXED);
    return starts > ends ? starts - ends : 0;
}

}  // namespace kvsteer
