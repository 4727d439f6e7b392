// Prefix and chained block hashes: the construction, stability, seeds, lengths, the chain.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "kvsteer/core/prefix_hash.h"

namespace kvsteer {
namespace {

std::span<const std::uint8_t> bytes(const std::string &s) {
    return {reinterpret_cast<const std::uint8_t *>(s.data()), s.size()};
}

std::string text(std::size_t n, std::uint32_t salt = 0) {
    std::string s(n, ' ');
    std::uint32_t x = 2463534242u ^ salt;
    for (char &c : s) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        c = static_cast<char>('a' + x % 26);
    }
    return s;
}

// The documented construction, written out with the xxHash API directly.
std::uint64_t spec_prefix(std::uint64_t seed, const std::string &model, const std::string &key,
                          std::size_t plen) {
    const std::uint64_t mh = XXH3_64bits_withSeed(model.data(), model.size(), seed);
    return XXH3_64bits_withSeed(key.data(), std::min(plen, key.size()), seed ^ mh);
}
std::uint64_t spec_block(std::uint64_t seed, std::uint64_t prev, const char *block,
                         std::size_t len) {
    std::uint8_t prev_le[8];
    for (int k = 0; k < 8; ++k) prev_le[k] = static_cast<std::uint8_t>(prev >> (8 * k));
    XXH3_state_t st;
    XXH3_INITSTATE(&st);  // reset_withSeed reads the state's seed field: it must be initialised
    XXH3_64bits_reset_withSeed(&st, seed);
    XXH3_64bits_update(&st, prev_le, 8);
    XXH3_64bits_update(&st, block, len);
    return XXH3_64bits_digest(&st);
}

TEST(CorePrefixHash, MatchesTheDocumentedConstruction) {
    HashParams p;
    p.prefix_len = 100;
    p.block_size = 64;
    const std::string model = "meta-llama/Llama-3.1-8B-Instruct";
    const std::string key = text(64 * 5 + 17);
    const PrefixHashes h = hash_prompt(p, model, bytes(key));
    EXPECT_EQ(h.prefix, spec_prefix(p.seed, model, key, 100));
    ASSERT_EQ(h.n_blocks, 5u);
    std::uint64_t prev = XXH3_64bits_withSeed(model.data(), model.size(), p.seed);
    for (std::uint32_t i = 0; i < h.n_blocks; ++i) {
        prev = spec_block(p.seed, prev, key.data() + i * 64, 64);
        EXPECT_EQ(h.blocks[i], prev) << i;
    }
    for (std::uint32_t i = h.n_blocks; i < KVS_MAX_REPORT_BLOCKS; ++i) EXPECT_EQ(h.blocks[i], 0u);
}

// Values computed once from hash_prompt/hash_five_tuple and frozen: a change to the hash
// construction (or to xxHash's XXH3 output) breaks every deployed affinity table and is caught
// here.
TEST(CorePrefixHash, KnownAnswers) {
    HashParams p;  // defaults: seed 0x6b7673746565720a, prefix 256, block 512
    const std::string key = text(1100);
    const PrefixHashes h = hash_prompt(p, "m", bytes(key));
    EXPECT_EQ(h.prefix, 0x0d917ac69ee7d114ULL);
    ASSERT_EQ(h.n_blocks, 2u);
    EXPECT_EQ(h.blocks[0], 0xaafdbc68478fb1f0ULL);
    EXPECT_EQ(h.blocks[1], 0x23d8ff36252242e8ULL);
    kvs_flow_key fk{};
    fk.saddr[0] = 0x0100000a;
    fk.daddr[0] = 0x0200000a;
    fk.sport = 0x3930;
    fk.dport = 0x5000;
    fk.family = KVS_AF_INET;
    fk.proto = 6;
    EXPECT_EQ(hash_five_tuple(p, fk), 0x1737cda9b7dd5c5bULL);
}

TEST(CorePrefixHash, SameBytesSameHashAcrossSeparateBuffers) {
    HashParams p;
    const std::string a = text(3000, 7);
    std::vector<std::uint8_t> b(a.begin(), a.end());  // separately allocated copy
    std::string model_a = "model-x";
    std::string model_b = std::string("model-") + "x";
    const PrefixHashes ha = hash_prompt(p, model_a, bytes(a));
    const PrefixHashes hb = hash_prompt(p, model_b, b);
    EXPECT_EQ(ha.prefix, hb.prefix);
    EXPECT_EQ(ha.n_blocks, hb.n_blocks);
    EXPECT_EQ(ha.blocks, hb.blocks);
}

TEST(CorePrefixHash, SeedAndModelChangeTheHash) {
    HashParams p, q;
    q.seed = p.seed + 1;
    const std::string k = text(1024);
    const PrefixHashes a = hash_prompt(p, "m", bytes(k));
    const PrefixHashes b = hash_prompt(q, "m", bytes(k));
    const PrefixHashes c = hash_prompt(p, "n", bytes(k));
    EXPECT_NE(a.prefix, b.prefix);
    EXPECT_NE(a.prefix, c.prefix);
    for (std::uint32_t i = 0; i < a.n_blocks; ++i) {
        EXPECT_NE(a.blocks[i], b.blocks[i]);
        EXPECT_NE(a.blocks[i], c.blocks[i]);
    }
    // Model is mixed, not concatenated: ("ab", "c...") and ("a", "bc...") differ.
    const std::string kb = "b" + k, kc = k;
    EXPECT_NE(hash_prompt(p, "ab", bytes(kc)).prefix, hash_prompt(p, "a", bytes(kb)).prefix);
}

TEST(CorePrefixHash, PrefixLenRespected) {
    HashParams p;
    p.prefix_len = 200;
    std::string k = text(1000);
    const std::uint64_t base = hash_prompt(p, "m", bytes(k)).prefix;
    std::string after = k;
    after[200] ^= 1;  // first byte past the prefix
    EXPECT_EQ(hash_prompt(p, "m", bytes(after)).prefix, base);
    std::string inside = k;
    inside[199] ^= 1;  // last byte of the prefix
    EXPECT_NE(hash_prompt(p, "m", bytes(inside)).prefix, base);
    // Shorter keys hash what they have: a 150-byte key is not the 200-byte prefix.
    EXPECT_NE(hash_prompt(p, "m", bytes(k.substr(0, 150))).prefix, base);
    EXPECT_EQ(hash_prompt(p, "m", bytes(k.substr(0, 200))).prefix, base);
    p.prefix_len = 0;  // model only
    EXPECT_EQ(hash_prompt(p, "m", bytes(k)).prefix, hash_prompt(p, "m", {}).prefix);
}

TEST(CorePrefixHash, BlockChain) {
    HashParams p;
    p.block_size = 128;
    const std::string k = text(128 * 6 + 100);  // 6 full blocks + a partial one
    const PrefixHashes h = hash_prompt(p, "m", bytes(k));
    ASSERT_EQ(h.n_blocks, 6u);
    // Changing block j changes blocks j.. but not the ones before it.
    for (std::uint32_t j = 0; j < 6; ++j) {
        std::string m = k;
        m[j * 128 + 5] ^= 0x20;
        const PrefixHashes g = hash_prompt(p, "m", bytes(m));
        for (std::uint32_t i = 0; i < 6; ++i) {
            if (i < j) {
                EXPECT_EQ(g.blocks[i], h.blocks[i]) << j << "," << i;
            } else {
                EXPECT_NE(g.blocks[i], h.blocks[i]) << j << "," << i;
            }
        }
    }
    // The trailing partial block does not count; a shared prefix gives shared leading blocks.
    std::string longer = k.substr(0, 128 * 6) + text(300, 99);
    const PrefixHashes l = hash_prompt(p, "m", bytes(longer));
    EXPECT_EQ(l.n_blocks, 8u);
    for (std::uint32_t i = 0; i < 6; ++i) EXPECT_EQ(l.blocks[i], h.blocks[i]);
    // Same block content at a different position hashes differently (chained, not per block).
    const std::string rep = k.substr(0, 128) + k.substr(0, 128);
    const PrefixHashes r = hash_prompt(p, "m", bytes(rep));
    EXPECT_NE(r.blocks[0], r.blocks[1]);
}

TEST(CorePrefixHash, MaxBlocksAndBlockSizeLimits) {
    HashParams p;
    p.block_size = 16;
    p.max_blocks = 3;
    const std::string k = text(1000);
    EXPECT_EQ(hash_prompt(p, "m", bytes(k)).n_blocks, 3u);
    p.max_blocks = 1000;  // clamped to the report's capacity
    EXPECT_EQ(hash_prompt(p, "m", bytes(k)).n_blocks, KVS_MAX_REPORT_BLOCKS);
    p.block_size = 0;
    const PrefixHashes z = hash_prompt(p, "m", bytes(k));
    EXPECT_EQ(z.n_blocks, 0u);
    EXPECT_NE(z.prefix, 0u);
    p.block_size = 2000;  // longer than the key: no full block
    EXPECT_EQ(hash_prompt(p, "m", bytes(k)).n_blocks, 0u);
}

TEST(CorePrefixHash, FiveTupleUsesFieldsNotPadding) {
    HashParams p;
    kvs_flow_key a{};
    a.saddr[0] = 0x0100000a;
    a.daddr[0] = 0x0200000a;
    a.sport = 1000;
    a.dport = 80;
    a.family = KVS_AF_INET;
    a.proto = 6;
    kvs_flow_key b = a;
    b.pad = 0xbeef;
    EXPECT_EQ(hash_five_tuple(p, a), hash_five_tuple(p, b));
    b = a;
    b.sport = 1001;
    EXPECT_NE(hash_five_tuple(p, a), hash_five_tuple(p, b));
    b = a;
    b.daddr[3] = 1;
    EXPECT_NE(hash_five_tuple(p, a), hash_five_tuple(p, b));
    HashParams q;
    q.seed ^= 1;
    EXPECT_NE(hash_five_tuple(p, a), hash_five_tuple(q, a));
}

}  // namespace
}  // namespace kvsteer

namespace kvsteer {
namespace {
// The construction streamed, as hash_prompt computed every block before the one-shot path.
std::vector<std::uint64_t> streamed_blocks(const HashParams &p, std::string_view model,
                                           std::span<const std::uint8_t> key) {
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    std::uint64_t prev = XXH3_64bits_withSeed(model.data(), model.size(), p.seed);
    std::vector<std::uint64_t> out;
    const std::size_t full = std::min<std::size_t>(
        key.size() / p.block_size, std::min<std::size_t>(p.max_blocks, KVS_MAX_REPORT_BLOCKS));
    for (std::size_t i = 0; i < full; ++i) {
        std::uint8_t le[8];
        for (int k = 0; k < 8; ++k) le[k] = static_cast<std::uint8_t>(prev >> (8 * k));
        XXH3_64bits_reset_withSeed(&st, p.seed);
        XXH3_64bits_update(&st, le, 8);
        XXH3_64bits_update(&st, key.data() + i * p.block_size, p.block_size);
        prev = XXH3_64bits_digest(&st);
        if (prev == 0) prev = 0x9e3779b97f4a7c15ULL;
        out.push_back(prev);
    }
    return out;
}
}  // namespace

// Blocks hashed in one call (up to 4 KiB) or streamed (larger) give the same chain, whatever the
// block size and seed, and a second seed on the same thread does not reuse the first's secret.
TEST(CorePrefixHash, OneShotBlocksEqualTheStreamedConstruction) {
    std::vector<std::uint8_t> key(70000);
    std::uint64_t x = 0x1234567;
    for (auto &b : key) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        b = static_cast<std::uint8_t>(x >> 56);
    }
    for (std::uint64_t seed : {0ULL, 1ULL, 0x6b7673746565720aULL, 0xffffffffffffffffULL, 1ULL}) {
        for (std::uint32_t bs : {16u, 100u, 233u, 240u, 241u, 512u, 4096u, 4097u, 8192u}) {
            HashParams p;
            p.seed = seed;
            p.block_size = bs;
            p.max_blocks = KVS_MAX_REPORT_BLOCKS;
            const auto h = hash_prompt(p, "m", key);
            const auto want = streamed_blocks(p, "m", key);
            ASSERT_EQ(h.n_blocks, want.size()) << "seed " << seed << " block " << bs;
            for (std::size_t i = 0; i < want.size(); ++i)
                ASSERT_EQ(h.blocks[i], want[i]) << "seed " << seed << " block " << bs << " #" << i;
        }
    }
}

}  // namespace kvsteer
