// How a held first flight becomes a steering key: the one rule that the dataplane's workers and
// the simulator both run (the simulator must not carry a copy).
#pragma once

#include <cstdint>
#include <span>

#include "kvsteer/abi.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"

namespace kvsteer {

struct FlightKey {
    PrefixHashes hashes;
    KeyKind kind = KeyKind::FiveTuple;
    std::uint32_t prompt_bytes = 0;  // prompt bytes hashed (what the binding report carries)
};

// Hash parameters from the published config: a zero field takes HashParams' default (abi.h's
// KVS_DEFAULT_*); blocks are capped at what a binding report carries.
HashParams hash_params(const kvs_config &c) noexcept;

// Bytes a flight must cover for its key to be final: the fixed prefix and every chained block.
std::uint32_t bind_depth(const HashParams &hp) noexcept;

// The key of a located flight (`v` = locate_request(bytes)): the prompt span with the model
// mixed in; for `Expect: 100-continue` without body bytes, the request target and host; for
// bytes that are not HTTP we understand, their leading bytes; else `five_tuple_hash` (the
// connection's 5-tuple hash).
FlightKey key_flight(const HashParams &hp, const RequestView &v,
                     std::span<const std::uint8_t> bytes, std::uint64_t five_tuple_hash) noexcept;

// Locates, then keys.
FlightKey key_flight(const HashParams &hp, std::span<const std::uint8_t> bytes,
                     std::uint64_t five_tuple_hash) noexcept;

}  // namespace kvsteer
