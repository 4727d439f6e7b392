// The lookup table kvsteerd builds by default (table-algorithm = rendezvous) for `servers`
// equal-weight backends.
#pragma once
#include <cstdint>
#include <vector>

namespace kvsteer::sim {
std::vector<uint32_t> sim_maglev(uint32_t servers);
}  // namespace kvsteer::sim
