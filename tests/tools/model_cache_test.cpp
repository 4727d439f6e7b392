// PrefixCache: chained hashes, longest-chain hits, LRU eviction, capacity, pinning, counters.
#include <gtest/gtest.h>

#include <string>

#include "kvsteer/model/block_hash.h"
#include "kvsteer/model/prefix_cache.h"

using namespace kvsteer::model;

namespace {

std::vector<uint64_t> hashes_of(const std::string &s, uint64_t block_bytes = 64) {
    return chain_block_hashes(s, block_bytes);
}

std::string text(char c, size_t n) {
    return std::string(n, c);
}

}  // namespace

TEST(BlockHash, ChainedAndPartialBlockNotHashed) {
    const std::string a = text('a', 64) + text('b', 64) + text('c', 10);
    const auto h = hashes_of(a);
    ASSERT_EQ(h.size(), 2u);  // the 10-byte tail is not a full block
    // Hash 1 covers blocks 0..1: the same block 1 after a different block 0 hashes differently.
    const auto h2 = hashes_of(text('z', 64) + text('b', 64));
    EXPECT_NE(h[1], h2[1]);
    EXPECT_NE(h[0], h2[0]);
    // Equal prefix -> equal leading hashes, then they diverge.
    const auto h3 = hashes_of(text('a', 64) + text('x', 64));
    EXPECT_EQ(h[0], h3[0]);
    EXPECT_NE(h[1], h3[1]);
    EXPECT_TRUE(hashes_of("short").empty());
}

TEST(PrefixCache, HitIsLongestCachedLeadingChain) {
    PrefixCache c({16, 16 * 100});
    const std::string p = text('a', 64 * 4);
    const auto h = hashes_of(p);
    auto a = c.allocate(h, 64 + 1 + 3 * 16, 4);  // 4 full blocks + 1 token
    ASSERT_TRUE(a);
    EXPECT_EQ(a->hit_blocks, 0u);
    c.commit(*a, 4 * 16 + 1);
    c.release(*a);
    EXPECT_EQ(c.match(h), 4u);

    // A prompt sharing the first two blocks only: hit = 2 blocks.
    const auto h2 = hashes_of(text('a', 128) + text('q', 128));
    EXPECT_EQ(c.match(h2), 2u);
    auto b = c.allocate(h2, 64 + 1, 1);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->hit_blocks, 2u);
    EXPECT_EQ(c.stats().hits_tokens, 32u);
    EXPECT_EQ(c.stats().queries_tokens, (64u + 1 + 48) + 65);
    c.release(*b);
}

TEST(PrefixCache, FullHitRecomputesLastToken) {
    PrefixCache c({16, 16 * 100});
    const auto h = hashes_of(text('a', 64 * 2));  // exactly 2 blocks = 32 tokens
    auto a = c.allocate(h, 32, 1);
    ASSERT_TRUE(a);
    c.commit(*a, 32);
    c.release(*a);
    EXPECT_EQ(c.match(h), 2u);
    // Like vLLM: at most prompt_tokens - 1 tokens are a hit, so the second block is recomputed.
    EXPECT_EQ(c.hit_tokens(h, 32), 16u);
    EXPECT_EQ(c.hit_tokens(h, 33), 32u);
}

TEST(PrefixCache, NothingMatchableBeforeCommit) {
    PrefixCache c({16, 16 * 100});
    const auto h = hashes_of(text('a', 64 * 3));
    auto a = c.allocate(h, 49, 1);
    ASSERT_TRUE(a);
    EXPECT_EQ(c.match(h), 0u);  // still being prefilled
    c.commit(*a, 20);           // one full block computed
    EXPECT_EQ(c.match(h), 1u);
    c.commit(*a, 49);
    EXPECT_EQ(c.match(h), 3u);
    c.release(*a);
    EXPECT_EQ(c.match(h), 3u);  // released blocks stay cached until evicted
}

TEST(PrefixCache, LruEvictsLeastRecentlyUsedAndTailFirst) {
    // 8 blocks of capacity.
    PrefixCache c({16, 16 * 8});
    const auto ha = hashes_of(text('a', 64 * 3));
    const auto hb = hashes_of(text('b', 64 * 3));
    for (const auto *h : {&ha, &hb}) {
        auto x = c.allocate(*h, 49, 1);  // 4 blocks: 3 hashed + 1 for the tail/output
        ASSERT_TRUE(x);
        c.commit(*x, 49);
        c.release(*x);
    }
    EXPECT_EQ(c.cached_blocks(), 6u);
    EXPECT_EQ(c.free_blocks(), 2u);
    // Touch A again (hit, release): B is now the least recently used.
    {
        auto x = c.allocate(ha, 49, 1);
        ASSERT_TRUE(x);
        EXPECT_EQ(x->hit_blocks, 3u);
        c.release(*x);
    }
    // Needs 4 fresh blocks: 2 free + 2 evicted from B, tail of B's chain first.
    const auto hc = hashes_of(text('c', 64 * 3));
    auto x = c.allocate(hc, 49, 1);
    ASSERT_TRUE(x);
    EXPECT_EQ(c.stats().evicted_blocks, 2u);
    EXPECT_EQ(c.match(ha), 3u);
    EXPECT_EQ(c.match(hb), 1u);  // B's first block survives: its tail went first
    c.release(*x);
}

TEST(PrefixCache, PinnedBlocksAreNotEvictedAndCapacityIsFinite) {
    PrefixCache c({16, 16 * 6});
    const auto ha = hashes_of(text('a', 64 * 3));
    auto a = c.allocate(ha, 49, 1);  // 4 blocks held by a running request
    ASSERT_TRUE(a);
    c.commit(*a, 49);
    EXPECT_DOUBLE_EQ(c.usage(), 4.0 / 6.0);
    // 3 more blocks do not fit while A runs: nothing evicted, nothing counted.
    const auto hb = hashes_of(text('b', 64 * 3));
    const uint64_t q = c.stats().queries_tokens;
    EXPECT_FALSE(c.allocate(hb, 49, 16));  // needs 5 blocks, 2 are free
    EXPECT_EQ(c.stats().queries_tokens, q);
    EXPECT_EQ(c.match(ha), 3u);
    c.release(*a);
    EXPECT_DOUBLE_EQ(c.usage(), 0.0);
    auto b = c.allocate(hb, 49, 16);  // now A's cached blocks can be evicted
    ASSERT_TRUE(b);
    EXPECT_GT(c.stats().evicted_blocks, 0u);
    c.release(*b);
}

TEST(PrefixCache, SharedPrefixPinnedByTwoRequests) {
    PrefixCache c({16, 16 * 8});
    const auto h = hashes_of(text('s', 64 * 2) + text('x', 64));
    auto a = c.allocate(h, 49, 1);
    c.commit(*a, 49);
    const auto h2 = hashes_of(text('s', 64 * 2) + text('y', 64));
    auto b = c.allocate(h2, 49, 1);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->hit_blocks, 2u);
    c.release(*a);
    // Still pinned by B: fill the cache and check the shared blocks survive.
    for (char ch = 'd'; ch < 'k'; ++ch) {
        const auto hx = hashes_of(text(ch, 64 * 1));
        auto x = c.allocate(hx, 17, 1);
        ASSERT_TRUE(x);
        c.commit(*x, 17);
        c.release(*x);
    }
    EXPECT_GT(c.stats().evicted_blocks, 0u);  // the fill did push blocks out
    EXPECT_EQ(c.match(h2), 2u);
    c.release(*b);
    // Nothing held: every block is either free or cached.
    EXPECT_EQ(c.used_blocks(), 0u);
    EXPECT_EQ(c.free_blocks() + c.cached_blocks(), c.total_blocks());
}
