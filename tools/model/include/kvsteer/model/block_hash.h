// Chained block hashes over prompt bytes: hash i covers blocks 0..i (XXH3-64, seeded by hash i-1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace kvsteer::model {

struct TokenGeometry {
    uint32_t block_tokens = 16;    // tokens per KV block (vLLM's default block size)
    uint32_t bytes_per_token = 4;  // a "token" of the emulated tokenizer is this many bytes

    uint64_t block_bytes() const { return uint64_t(block_tokens) * bytes_per_token; }
    // Tokens of a prompt of n bytes: a partial token still counts as one.
    uint64_t tokens_of(uint64_t bytes) const {
        return (bytes + bytes_per_token - 1) / bytes_per_token;
    }
};

// Seed of the first block; any fixed value works, it only has to be the same everywhere.
inline constexpr uint64_t kChainSeed = 0x6b76737465657231ULL;  // "kvsteer1"

// Hashes of every full block of `bytes` (a partial last block is not hashed: it is not cached).
std::vector<uint64_t> chain_block_hashes(std::string_view bytes, uint64_t block_bytes,
                                         uint64_t seed = kChainSeed);

}  // namespace kvsteer::model
