// Prefix and chained block hashes (XXH3-64, seeded). The model name is hashed first and its
// hash seeds the prefix hash and starts the block chain, so equal prompts under different
// models never share a key.
#include "kvsteer/core/prefix_hash.h"

#include <algorithm>
#include <cstring>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no allocation
#include <xxhash.h>

namespace kvsteer {
namespace {

// 0 marks an empty affinity slot, so no hash may be 0.
constexpr std::uint64_t kZeroReplacement = 0x9e3779b97f4a7c15ULL;

std::uint64_t nonzero(std::uint64_t h) {
    return h == 0 ? kZeroReplacement : h;
}

}  // namespace

namespace {
// Blocks up to this size are hashed in one call from a stack copy; larger ones (block-size goes
// up to 1 MiB) stream.
constexpr std::size_t kOneShotBlock = 4096;

// The secret XXH3_64bits_withSeed derives from `seed` for inputs over 240 bytes, kept per thread
// for the last seed seen: with it, XXH3_64bits_withSecretandSeed returns what _withSeed returns.
const unsigned char *seed_secret(std::uint64_t seed) noexcept {
    struct Cache {
        std::uint64_t seed = 0;
        bool valid = false;
        alignas(64) unsigned char secret[XXH3_SECRET_DEFAULT_SIZE];
    };
    thread_local Cache c;
    if (!c.valid || c.seed != seed) {
        XXH3_generateSecret_fromSeed(c.secret, seed);
        c.seed = seed;
        c.valid = true;
    }
    return c.secret;
}
}  // namespace

PrefixHashes hash_prompt(const HashParams &p, std::string_view model,
                         std::span<const std::uint8_t> key) noexcept {
    PrefixHashes out;
    const std::uint64_t model_hash = XXH3_64bits_withSeed(model.data(), model.size(), p.seed);

    const std::size_t plen = std::min<std::size_t>(p.prefix_len, key.size());
    out.prefix = nonzero(XXH3_64bits_withSeed(key.data(), plen, p.seed ^ model_hash));

    if (p.block_size == 0) return out;
    const std::size_t max_blocks = std::min<std::size_t>(p.max_blocks, KVS_MAX_REPORT_BLOCKS);
    const std::size_t full = std::min<std::size_t>(key.size() / p.block_size, max_blocks);
    // blocks[i] = H(seed, prev || block i) with prev = blocks[i-1], or the model hash for i = 0.
    std::uint64_t prev = model_hash;
    if (p.block_size <= kOneShotBlock) {
        // prev || block copied into one buffer and hashed in one call with the seed's secret
        // derived once: exactly XXH3_64bits_withSeed's value (and the streaming one's below),
        // without deriving the secret and staging the input again for every block.
        alignas(64) std::uint8_t buf[8 + kOneShotBlock];
        const unsigned char *secret = seed_secret(p.seed);
        for (std::size_t i = 0; i < full; ++i) {
            for (int k = 0; k < 8; ++k) buf[k] = static_cast<std::uint8_t>(prev >> (8 * k));
            std::memcpy(buf + 8, key.data() + i * p.block_size, p.block_size);
            prev = nonzero(XXH3_64bits_withSecretandSeed(buf, 8 + p.block_size, secret,
                                                         XXH3_SECRET_DEFAULT_SIZE, p.seed));
            out.blocks[i] = prev;
        }
    } else {
        XXH3_state_t st;
        XXH3_INITSTATE(
            &st);  // reset_withSeed reads st.seed: uninitialized stack could skip the secret setup
        for (std::size_t i = 0; i < full; ++i) {
            std::uint8_t prev_le[8];
            for (int k = 0; k < 8; ++k) prev_le[k] = static_cast<std::uint8_t>(prev >> (8 * k));
            XXH3_64bits_reset_withSeed(&st, p.seed);
            XXH3_64bits_update(&st, prev_le, sizeof prev_le);
            XXH3_64bits_update(&st, key.data() + i * p.block_size, p.block_size);
            prev = nonzero(XXH3_64bits_digest(&st));
            out.blocks[i] = prev;
        }
    }
    out.n_blocks = static_cast<std::uint32_t>(full);
    return out;
}

std::uint64_t hash_five_tuple(const HashParams &p, const struct kvs_flow_key &k) noexcept {
    // Only the meaningful fields, packed: the struct's padding may hold garbage.
    std::uint8_t buf[sizeof k.saddr + sizeof k.daddr + 2 + 2 + 1 + 1];
    std::size_t o = 0;
    std::memcpy(buf + o, k.saddr, sizeof k.saddr);
    o += sizeof k.saddr;
    std::memcpy(buf + o, k.daddr, sizeof k.daddr);
    o += sizeof k.daddr;
    std::memcpy(buf + o, &k.sport, 2);
    o += 2;
    std::memcpy(buf + o, &k.dport, 2);
    o += 2;
    buf[o++] = k.family;
    buf[o++] = k.proto;
    return nonzero(XXH3_64bits_withSeed(buf, o, p.seed));
}

}  // namespace kvsteer
