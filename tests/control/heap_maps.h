// The shared tables in ordinary memory, shaped exactly like the mmapped maps (tests only).
#pragma once

#include <memory>

#include "kvsteer/control/fleet.h"
#include "kvsteer/control/tables.h"

struct HeapMaps {
    HeapMaps();
    kvsteer::Tables view;
    kvsteer::control::FleetMaps fleet;  // kvs_fleet, kvs_owner

   private:
    std::unique_ptr<kvs_config> config_;
    std::unique_ptr<kvs_backend[]> backends_;
    std::unique_ptr<kvs_backend_load[]> load_;
    std::unique_ptr<std::uint32_t[]> maglev_;
    std::unique_ptr<kvs_affinity_entry[]> affinity_;
    std::unique_ptr<kvs_ring_ctl[]> ring_ctl_;
    std::unique_ptr<kvs_bind_report[]> ring_;
    std::unique_ptr<std::uint64_t[]> dp_stats_;
    std::unique_ptr<kvs_fleet> fleet_;
    std::unique_ptr<kvs_owner_entry[]> owner_;
};
