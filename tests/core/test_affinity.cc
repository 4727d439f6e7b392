// Affinity table: longest chained match first, probe window, replicas, updates.
#include <gtest/gtest.h>

#include <vector>

#include "kvsteer/core/affinity.h"

namespace kvsteer {
namespace {

std::vector<std::uint16_t> ids(std::initializer_list<std::uint16_t> l) {
    return l;
}

PrefixHashes hashes(std::uint64_t prefix, std::initializer_list<std::uint64_t> blocks) {
    PrefixHashes h;
    h.prefix = prefix;
    for (const std::uint64_t b : blocks) h.blocks[h.n_blocks++] = b;
    return h;
}

TEST(CoreAffinity, LongestChainedMatchFirstThenPrefix) {
    AffinityBuilder b;
    ASSERT_TRUE(b.insert(0x1111, ids({7}), 0));     // fixed-prefix hash
    ASSERT_TRUE(b.insert(0x2002, ids({5, 6}), 1));  // block 1
    ASSERT_TRUE(b.insert(0x4004, ids({9}), 3));     // block 3
    EXPECT_EQ(b.size(), 3u);
    const auto &t = b.table();
    ASSERT_EQ(t.size(), KVS_AFFINITY_SLOTS);

    const kvs_affinity_entry *e =
        affinity_lookup(t, hashes(0x1111, {0x1001, 0x2002, 0x3003, 0x4004, 0x5005}));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->key, 0x4004u);
    EXPECT_EQ(e->backends[0], 9);
    EXPECT_EQ(e->depth, 3);

    e = affinity_lookup(t, hashes(0x1111, {0x1001, 0x2002, 0x3003}));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->key, 0x2002u);
    EXPECT_EQ(e->n_backends, 2);
    EXPECT_EQ(e->backends[1], 6);

    e = affinity_lookup(t, hashes(0x1111, {0x9991, 0x9992}));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->key, 0x1111u);
    EXPECT_EQ(affinity_lookup(t, hashes(0x8888, {0x9991})), nullptr);
    EXPECT_EQ(affinity_lookup({}, hashes(0x1111, {})), nullptr);
}

TEST(CoreAffinity, RejectsZeroKeyAndEmptyReplicaSetCapsReplicas) {
    AffinityBuilder b(64);
    EXPECT_FALSE(b.insert(0, ids({1}), 0));
    EXPECT_FALSE(b.insert(5, {}, 0));
    EXPECT_TRUE(b.insert(5, ids({1, 2, 3, 4, 5, 6}), 0));
    const kvs_affinity_entry *e = affinity_lookup(b.table(), hashes(5, {}));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->n_backends, KVS_MAX_REPLICAS);
    EXPECT_EQ(e->backends[3], 4);
    // Re-inserting a key replaces its replicas in place.
    EXPECT_TRUE(b.insert(5, ids({8}), 2));
    EXPECT_EQ(b.size(), 1u);
    e = affinity_lookup(b.table(), hashes(5, {}));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->n_backends, 1);
    EXPECT_EQ(e->backends[0], 8);
    EXPECT_EQ(e->backends[1], 0);
    EXPECT_EQ(e->depth, 2);
}

TEST(CoreAffinity, ProbeWindowAndWrapAround) {
    const std::uint32_t slots = 1024;
    AffinityBuilder b(slots);
    const std::uint64_t home = slots - 3;  // the run wraps past the end of the half
    for (std::uint32_t j = 0; j < KVS_AFFINITY_MAX_PROBE; ++j)
        EXPECT_TRUE(
            b.insert(home + std::uint64_t{j} * slots, ids({static_cast<std::uint16_t>(j)}), 0))
            << j;
    EXPECT_FALSE(b.insert(home + std::uint64_t{KVS_AFFINITY_MAX_PROBE} * slots, ids({99}), 0));
    EXPECT_EQ(b.size(), KVS_AFFINITY_MAX_PROBE);
    for (std::uint32_t j = 0; j < KVS_AFFINITY_MAX_PROBE; ++j) {
        const kvs_affinity_entry *e =
            affinity_lookup(b.table(), hashes(home + std::uint64_t{j} * slots, {}));
        ASSERT_NE(e, nullptr) << j;
        EXPECT_EQ(e->backends[0], j);
    }
    EXPECT_EQ(b.table()[0].key, home + 3ULL * slots);  // wrapped into slot 0
    EXPECT_EQ(affinity_lookup(b.table(),
                              hashes(home + std::uint64_t{KVS_AFFINITY_MAX_PROBE} * slots, {})),
              nullptr);
}

// One key whose home is slot 1, inserted before eight whose home is slot 0, takes slot 1; the
// eight then have seven free slots in their window and one is dropped. A batch takes them in
// home order: the eight fill slots 0-7 and the ninth key finds slot 8 in its window.
TEST(CoreAffinity, BatchPlacesWhatOneByOneDrops) {
    const std::uint32_t slots = 64;
    std::vector<std::uint64_t> keys = {slots + 1};  // home 1
    for (std::uint64_t j = 1; j <= KVS_AFFINITY_MAX_PROBE; ++j) keys.push_back(j * slots);
    const auto one = ids({1});
    AffinityBuilder seq(slots);
    std::size_t failed = 0;
    for (const std::uint64_t k : keys) failed += seq.insert(k, one, 0) ? 0 : 1;
    EXPECT_EQ(failed, 1u) << "one by one, in this order";

    AffinityBuilder batch(slots);
    std::vector<AffinityItem> items;
    for (std::size_t i = 0; i < keys.size(); ++i)
        items.push_back({keys[i], one, static_cast<std::uint8_t>(i)});
    std::vector<std::uint64_t> dropped;
    EXPECT_EQ(batch.insert_all(items, &dropped), 0u);
    EXPECT_TRUE(dropped.empty());
    EXPECT_EQ(batch.size(), keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const kvs_affinity_entry *e = affinity_lookup(batch.table(), hashes(keys[i], {}));
        ASSERT_NE(e, nullptr) << i;
        EXPECT_EQ(e->depth, i);
    }
    EXPECT_EQ(batch.table()[8].key, slots + 1u);
    // A window that is really full still drops, and says which key: another key of home 1
    // (slots 1-8 all taken), while one of home 2 finds slot 9.
    const std::uint64_t over = (KVS_AFFINITY_MAX_PROBE + 1) * std::uint64_t{slots} + 1;
    const std::uint64_t next = (KVS_AFFINITY_MAX_PROBE + 2) * std::uint64_t{slots} + 2;
    items.push_back({over, one, 0});
    items.push_back({next, one, 0});
    AffinityBuilder full(slots);
    dropped.clear();
    EXPECT_EQ(full.insert_all(items, &dropped), 1u);
    ASSERT_EQ(dropped.size(), 1u);
    EXPECT_EQ(dropped[0], over);
    EXPECT_EQ(affinity_lookup(full.table(), hashes(over, {})), nullptr);
    EXPECT_NE(affinity_lookup(full.table(), hashes(next, {})), nullptr);
}

// At half load (the policy's default 32,768 entries in 65,536 slots), random keys: the batch
// drops far fewer than one by one.
TEST(CoreAffinity, BatchAtHalfLoadDropsAlmostNothing) {
    std::vector<std::uint64_t> keys;
    std::uint64_t x = 0x243f6a8885a308d3ULL;
    for (int i = 0; i < 32768; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift64
        keys.push_back(x | 1);
    }
    const auto one = ids({2});
    AffinityBuilder seq;
    std::size_t failed = 0;
    for (const std::uint64_t k : keys) failed += seq.insert(k, one, 0) ? 0 : 1;
    AffinityBuilder batch;
    std::vector<AffinityItem> items;
    for (const std::uint64_t k : keys) items.push_back({k, one, 0});
    const std::size_t dropped = batch.insert_all(items);
    EXPECT_GT(failed, 50u) << "one by one";
    EXPECT_LE(dropped * 20, failed) << "batch " << dropped << ", one by one " << failed;
    EXPECT_EQ(batch.size() + dropped, keys.size());
}

TEST(CoreAffinity, EntryWithoutReplicasDoesNotMatch) {
    std::vector<kvs_affinity_entry> t(16, kvs_affinity_entry{});
    t[3].key = 3;  // written by hand: key set, no backends
    EXPECT_EQ(affinity_lookup(t, hashes(3, {})), nullptr);
    t[3].n_backends = 1;
    t[3].backends[0] = 4;
    EXPECT_EQ(affinity_lookup(t, hashes(3, {})), &t[3]);
}

TEST(CoreAffinity, NonPowerOfTwoHalfStillConsistent) {
    AffinityBuilder b(1000);
    for (std::uint64_t k = 1; k <= 500; ++k)
        ASSERT_TRUE(b.insert(k * 0x9e3779b97f4a7c15ULL, ids({1}), 0));
    for (std::uint64_t k = 1; k <= 500; ++k)
        EXPECT_NE(affinity_lookup(b.table(), hashes(k * 0x9e3779b97f4a7c15ULL, {})), nullptr);
}

TEST(CoreAffinity, RealHashesEndToEnd) {
    HashParams p;
    p.block_size = 64;
    std::string conv(64 * 4, 'x');
    for (std::size_t i = 0; i < conv.size(); ++i) conv[i] = static_cast<char>('a' + (i * 7) % 26);
    const auto bytes = [](const std::string &s) {
        return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t *>(s.data()),
                                             s.size());
    };
    const PrefixHashes first_turn = hash_prompt(p, "m", bytes(conv.substr(0, 128)));
    AffinityBuilder b;
    ASSERT_TRUE(b.insert(first_turn.blocks[1], ids({3}), 1));
    // A later turn of the same conversation extends the prompt: it still finds block 1.
    const PrefixHashes later = hash_prompt(p, "m", bytes(conv));
    const kvs_affinity_entry *e = affinity_lookup(b.table(), later);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->backends[0], 3);
    // Another model never matches.
    EXPECT_EQ(affinity_lookup(b.table(), hash_prompt(p, "other", bytes(conv))), nullptr);
}

}  // namespace
}  // namespace kvsteer
