// How a held first flight becomes a steering key: the one rule that the dataplane's workers and
// the simulator both run (the simulator must not carry a copy).
#pragma once

#include <cstdint>
#include <span>

#include "kvsteer/abi.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/core/session.h"

namespace kvsteer {

struct FlightKey {
    PrefixHashes hashes;
    KeyKind kind = KeyKind::FiveTuple;
    std::uint32_t prompt_bytes = 0;  // prompt bytes hashed (what the binding report carries)
    SessionKey session;              // the session header's key, when one is configured and sent
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

// The same, and the session key of the head when `hs` names headers (find_session_key).
FlightKey key_flight(const HashParams &hp, const SessionHeaders &hs, const RequestView &v,
                     std::span<const std::uint8_t> bytes, std::uint64_t five_tuple_hash) noexcept;

// The hashes a request is steered by: its session key's (session_hashes) when it has one and
// `limiter` admits one more request of that key (`cap`); else its prompt's. `slot`: the
// limiter's slot that counted it (release it when the request completes), or kNone.
PrefixHashes steering_hashes(const FlightKey &k, SessionLimiter &limiter, std::uint32_t cap,
                             std::uint32_t &slot) noexcept;

// Locates, then keys.
FlightKey key_flight(const HashParams &hp, std::span<const std::uint8_t> bytes,
                     std::uint64_t five_tuple_hash) noexcept;

}  // namespace kvsteer
