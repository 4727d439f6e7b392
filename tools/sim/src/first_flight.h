// The dataplane's view of a request: the first `max_held` bytes, located and hashed exactly as a
// dataplane worker does before it binds (dataplane/src/worker.cpp, start_bind).
#pragma once
#include <cstdint>
#include <string_view>

#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"

namespace kvsteer::sim {

struct FirstFlightKey {
    PrefixHashes hashes;
    KeyKind kind = KeyKind::FiveTuple;
    uint32_t prompt_bytes = 0;  // prompt bytes seen (what the binding report carries)
};

// `five_tuple_hash` stands in for the connection's 5-tuple hash when nothing is usable.
FirstFlightKey first_flight_key(std::string_view bytes, uint32_t max_held, const HashParams &hp,
                                uint64_t five_tuple_hash);

}  // namespace kvsteer::sim
