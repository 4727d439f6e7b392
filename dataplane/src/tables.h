// The shared tables a worker reads and writes: views of the pinned BPF maps (or test arrays).
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"
#include "kvsteer/reasons.h"

namespace kvsteer::bpf { struct PinnedMaps; }

namespace kvsteer::dp {

struct Tables {
    kvs_config *config = nullptr;
    kvs_backend *backends = nullptr;
    kvs_backend_load *load = nullptr;
    std::uint32_t *maglev = nullptr;
    kvs_affinity_entry *affinity = nullptr;
    kvs_ring_ctl *ring_ctl = nullptr;
    kvs_bind_report *ring = nullptr;
    std::uint64_t *dp_stats = nullptr;  // [KVS_MAX_WORKERS * KVS_STATS_MAX]
    int flows_fd = -1;                  // kvs_flows; -1 in dpdk mode (flows stay local)
};

Tables tables_from(const bpf::PinnedMaps &m);

}  // namespace kvsteer::dp
