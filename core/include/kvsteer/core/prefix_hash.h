// Prefix hashing: keyed 64-bit hashes of a prompt's fixed-length prefix and of chained blocks.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "kvsteer/abi.h"

namespace kvsteer {

// Defaults are abi.h's: what a zero kvs_config field means (hash_params() in flight_key.h).
struct HashParams {
    std::uint64_t seed =
        KVS_DEFAULT_HASH_SEED;  // configured, never random: same bytes -> same hash
    std::uint32_t prefix_len = KVS_DEFAULT_PREFIX_LEN;  // bytes in the fixed-length prefix hash
    std::uint32_t block_size = KVS_DEFAULT_BLOCK_SIZE;  // bytes per chained block
    std::uint32_t max_blocks = KVS_MAX_REPORT_BLOCKS;
};

struct PrefixHashes {
    std::uint64_t prefix = 0;    // hash(seed, model, key[0 .. min(prefix_len, len)))
    std::uint32_t n_blocks = 0;  // full blocks hashed (a trailing partial block is not)
    std::array<std::uint64_t, KVS_MAX_REPORT_BLOCKS> blocks{};  // blocks[i] covers blocks 0..i
    // Blocks the whole prompt spans as the request declares it (Content-Length), of which the
    // first n_blocks were hashed; 0: unknown (no length, chunked, not a prompt). At most
    // kMaxPromptBlocks.
    std::uint32_t prompt_blocks = 0;
};

// The most prompt blocks one request may declare (8 MiB of body at the default 512-byte block):
// its Content-Length is the client's word, and the estimate weighs the chosen backend's work.
inline constexpr std::uint32_t kMaxPromptBlocks = 1u << 14;

// Hashes never return 0 (0 marks an empty affinity slot).
PrefixHashes hash_prompt(const HashParams &p, std::string_view model,
                         std::span<const std::uint8_t> key) noexcept;

// Fallback key when nothing in the payload is usable (IPv4/IPv6 in network order, abi layout).
std::uint64_t hash_five_tuple(const HashParams &p, const struct kvs_flow_key &k) noexcept;

}  // namespace kvsteer
