// The simulated servers as kvsteerd knows them, and the lookup table it builds over them.
#pragma once
#include <cstdint>
#include <vector>

#include "kvsteer/control/net.h"

namespace kvsteer::sim {
// Server `i`'s address: 10.90.1.(i+1):8000 (10.90.2.0 onwards past 254 servers).
control::Endpoint sim_endpoint(uint32_t i);
// The lookup table kvsteerd builds by default (table-algorithm = rendezvous) for `servers`
// equal-weight backends at sim_endpoint(0 .. servers-1), with kvsteerd's backend identity.
std::vector<uint32_t> sim_maglev(uint32_t servers);
}  // namespace kvsteer::sim
