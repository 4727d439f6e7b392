// kvsteerd's fleet maps (kvs_fleet, kvs_owner): opened, or created, pinned by name and mmapped.
// The one place that knows them until the loader's PinnedMaps has them too.
#pragma once

#include <memory>
#include <string>

#include "kvsteer/control/fleet.h"

namespace kvsteer::control {

// Owns the mappings and fds (a FleetMaps copied from it is a view that must not outlive it).
struct PinnedFleetMaps : FleetMaps {
    int fleet_fd = -1, owner_fd = -1;
    PinnedFleetMaps() = default;
    PinnedFleetMaps(const PinnedFleetMaps &) = delete;
    PinnedFleetMaps &operator=(const PinnedFleetMaps &) = delete;
    ~PinnedFleetMaps();
};

// Opens KVS_MAP_FLEET and KVS_MAP_OWNER under the bpffs directory `dir`, creating and pinning a
// missing one (with `create`) exactly as abi.h defines it: an MMAPABLE array, so that the XDP
// object reuses the pin. nullptr + err naming the map otherwise (a pin of another layout is
// refused).
std::unique_ptr<PinnedFleetMaps> open_fleet_maps(const std::string &dir, bool create,
                                                 std::string *err);

}  // namespace kvsteer::control
