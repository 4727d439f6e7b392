#include "kvsteer/bpf/maps.h"
#include "tables.h"

namespace kvsteer::dp {

Tables tables_from(const bpf::PinnedMaps &m) {
    Tables t;
    t.config = m.config;
    t.backends = m.backends;
    t.load = m.load;
    t.maglev = m.maglev;
    t.affinity = m.affinity;
    t.ring_ctl = m.ring_ctl;
    t.ring = m.ring;
    t.dp_stats = m.dp_stats;
    t.flows_fd = m.flows_fd;
    return t;
}

}  // namespace kvsteer::dp
