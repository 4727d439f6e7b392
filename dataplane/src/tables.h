// The shared tables a worker reads and writes: core's one description of the mapped maps.
#pragma once

#include "kvsteer/abi.h"
#include "kvsteer/bpf/maps.h"
#include "kvsteer/core/tables.h"
#include "kvsteer/reasons.h"

namespace kvsteer::dp {

using kvsteer::Tables;

// The view of the pinned maps (valid while `m` lives). PinnedMaps is a Tables that owns the
// mappings, so this is a plain copy of the pointers and of flows_fd.
inline Tables tables_from(const bpf::PinnedMaps &m) {
    return m;
}

}  // namespace kvsteer::dp
