// vLLM-format KV events: the cache records what it stores and evicts; batches are msgpack in
// vLLM's array_like layout; the publisher's frames reach a real ZMQ subscriber.
#include <gtest/gtest.h>

#include <string>

#include "kvsteer/model/block_hash.h"
#include "kvsteer/model/prefix_cache.h"

#ifdef KVS_EMU_KV_EVENTS
#include <msgpack.h>
#include <zmq.h>

#include <chrono>
#include <thread>

#include "kv_events.h"
#endif

using namespace kvsteer::model;

TEST(KvEvents, CacheRecordsStoredAndRemoved) {
    PrefixCache c({16, 16 * 4});
    c.record_events(true);
    const auto ha = chain_block_hashes(std::string(64 * 3, 'a'), 64);
    auto a = c.allocate(ha, 48, 16);  // 4 blocks: the whole cache
    ASSERT_TRUE(a);
    c.commit(*a, 48);
    c.release(*a);
    auto ev = c.take_events();
    ASSERT_EQ(ev.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(ev[i].type, BlockEvent::Stored);
        EXPECT_EQ(ev[i].hash, ha[i]);
        EXPECT_EQ(ev[i].has_parent, i > 0);
        if (i) {
            EXPECT_EQ(ev[i].parent, ha[i - 1]);
        }
    }
    EXPECT_TRUE(c.take_events().empty());
    const auto hb = chain_block_hashes(std::string(64 * 2, 'b'), 64);
    auto b = c.allocate(hb, 32, 16);  // 3 blocks: 1 free + 2 evicted, A's tail first
    ASSERT_TRUE(b);
    ev = c.take_events();
    ASSERT_EQ(ev.size(), 2u);
    EXPECT_EQ(ev[0].type, BlockEvent::Removed);
    EXPECT_EQ(ev[0].hash, ha[2]);
    EXPECT_EQ(ev[1].hash, ha[1]);
    c.release(*b);
}

#ifdef KVS_EMU_KV_EVENTS
namespace {

// Decodes a batch and checks vLLM's layout: [ts, [["BlockStored", [h...], parent, [], bs,
// nil, "GPU"] | ["BlockRemoved", [h...], "GPU"], ...]].
struct Decoded {
    double ts = 0;
    std::vector<std::string> tags;
    std::vector<std::vector<uint64_t>> hashes;
    std::vector<bool> parent_nil;
    std::vector<uint64_t> block_size;
};

std::string str_of(const msgpack_object &o) {
    return o.type == MSGPACK_OBJECT_STR ? std::string(o.via.str.ptr, o.via.str.size) : "";
}

Decoded decode(const std::string &payload) {
    Decoded d;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    EXPECT_EQ(msgpack_unpack_next(&u, payload.data(), payload.size(), &off),
              MSGPACK_UNPACK_SUCCESS);
    EXPECT_EQ(off, payload.size());
    const msgpack_object &root = u.data;
    EXPECT_EQ(root.type, MSGPACK_OBJECT_ARRAY);
    EXPECT_EQ(root.via.array.size, 2u);
    d.ts = root.via.array.ptr[0].via.f64;
    const msgpack_object &evs = root.via.array.ptr[1];
    EXPECT_EQ(evs.type, MSGPACK_OBJECT_ARRAY);
    for (uint32_t i = 0; i < evs.via.array.size; ++i) {
        const msgpack_object &e = evs.via.array.ptr[i];
        d.tags.push_back(str_of(e.via.array.ptr[0]));
        std::vector<uint64_t> hs;
        const msgpack_object &ha = e.via.array.ptr[1];
        for (uint32_t k = 0; k < ha.via.array.size; ++k) hs.push_back(ha.via.array.ptr[k].via.u64);
        d.hashes.push_back(hs);
        if (d.tags.back() == "BlockStored") {
            EXPECT_EQ(e.via.array.size, 7u);
            d.parent_nil.push_back(e.via.array.ptr[2].type == MSGPACK_OBJECT_NIL);
            EXPECT_EQ(e.via.array.ptr[3].via.array.size, 0u);  // token_ids
            d.block_size.push_back(e.via.array.ptr[4].via.u64);
            EXPECT_EQ(e.via.array.ptr[5].type, MSGPACK_OBJECT_NIL);
            EXPECT_EQ(str_of(e.via.array.ptr[6]), "GPU");
        } else {
            EXPECT_EQ(e.via.array.size, 3u);
            EXPECT_EQ(str_of(e.via.array.ptr[2]), "GPU");
        }
    }
    msgpack_unpacked_destroy(&u);
    return d;
}

}  // namespace

TEST(KvEvents, BatchEncodingGroupsChains) {
    const std::vector<BlockEvent> evs = {
        {BlockEvent::Stored, 11, 0, false}, {BlockEvent::Stored, 12, 11, true},
        {BlockEvent::Stored, 13, 12, true}, {BlockEvent::Stored, 21, 5, true},
        {BlockEvent::Removed, 7, 0, false}, {BlockEvent::Removed, 8, 0, false}};
    const auto d = decode(kvsteer::emu::encode_kv_batch(evs, 1700000000.5, 16));
    EXPECT_DOUBLE_EQ(d.ts, 1700000000.5);
    ASSERT_EQ(d.tags.size(), 3u);
    EXPECT_EQ(d.tags[0], "BlockStored");
    EXPECT_EQ(d.hashes[0], (std::vector<uint64_t>{11, 12, 13}));
    EXPECT_TRUE(d.parent_nil[0]);
    EXPECT_EQ(d.hashes[1], (std::vector<uint64_t>{21}));
    EXPECT_FALSE(d.parent_nil[1]);
    EXPECT_EQ(d.block_size[0], 16u);
    EXPECT_EQ(d.tags[2], "BlockRemoved");
    EXPECT_EQ(d.hashes[2], (std::vector<uint64_t>{7, 8}));
}

TEST(KvEvents, PublisherReachesSubscriber) {
    kvsteer::emu::KvEventPublisher pub("tcp://127.0.0.1:*", "kv", 16);
    const std::string ep = pub.endpoint();
    ASSERT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    const int linger = 0, timeout_ms = 50;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    ASSERT_EQ(zmq_connect(sub, ep.c_str()), 0);
    // PUB/SUB joins asynchronously: publish until one batch arrives (bounded: 100 tries).
    std::vector<std::string> frames;
    for (int attempt = 0; attempt < 100 && frames.empty(); ++attempt) {
        pub.publish({{BlockEvent::Stored, 42, 0, false}}, 1.0);
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, sub, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            frames.emplace_back(static_cast<const char *>(zmq_msg_data(&m)), zmq_msg_size(&m));
            const bool more = zmq_msg_more(&m);
            zmq_msg_close(&m);
            if (!more) break;
        }
    }
    zmq_close(sub);
    zmq_ctx_term(ctx);
    ASSERT_EQ(frames.size(), 3u);
    EXPECT_EQ(frames[0], "kv");
    ASSERT_EQ(frames[1].size(), 8u);
    uint64_t seq = 0;
    for (unsigned char ch : frames[1]) seq = seq << 8 | ch;
    EXPECT_LT(seq, pub.next_seq());
    const auto d = decode(frames[2]);
    ASSERT_EQ(d.tags.size(), 1u);
    EXPECT_EQ(d.hashes[0], (std::vector<uint64_t>{42}));
}
#endif
