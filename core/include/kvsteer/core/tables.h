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

}  // namespace kvsteer
