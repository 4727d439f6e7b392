#include "heap_maps.h"

HeapMaps::HeapMaps()
    : config_(new kvs_config{}),
      backends_(new kvs_backend[KVS_MAX_BACKENDS]{}),
      load_(new kvs_backend_load[KVS_MAX_BACKENDS]{}),
      maglev_(new std::uint32_t[2 * KVS_MAGLEV_SIZE]{}),
      affinity_(new kvs_affinity_entry[2 * KVS_AFFINITY_SLOTS]{}),
      ring_ctl_(new kvs_ring_ctl[KVS_MAX_WORKERS]{}),
      ring_(new kvs_bind_report[KVS_MAX_WORKERS * KVS_BIND_RING_SLOTS]{}),
      dp_stats_(new std::uint64_t[KVS_MAX_WORKERS * KVS_STATS_MAX]{}),
      fleet_(new kvs_fleet{}),
      owner_(new kvs_owner_entry[2 * KVS_OWNER_BUCKETS]{}) {
    view.config = config_.get();
    view.backends = backends_.get();
    view.load = load_.get();
    view.maglev = maglev_.get();
    view.affinity = affinity_.get();
    view.ring_ctl = ring_ctl_.get();
    view.ring = ring_.get();
    view.dp_stats = dp_stats_.get();
    fleet.fleet = fleet_.get();
    fleet.owner = owner_.get();
}
