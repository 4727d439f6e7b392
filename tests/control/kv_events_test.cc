// vLLM KV events: the decoder on the emulator's encoder output and on vLLM's shapes (array_like
// and map), malformed and random input, the per-server accounting (gaps, restarts, clears), and
// the subscriber thread against a real ZMQ publisher.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <thread>

#include "kv_test_publisher.h"
#include "kvsteer/control/kv_events.h"

#ifdef KVS_GPU_EMU
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#endif

#ifdef KVS_EMU_KV_EVENTS
#include <msgpack.h>

#include "kv_events.h"  // tools/gpu-emu: encode_kv_batch
#endif

using namespace kvsteer::control;
using namespace std::chrono_literals;
using Kind = KvEvent::Kind;

namespace {

bool decode(const std::string &p, KvBatch *b, std::string *err) {
    return decode_kv_batch({reinterpret_cast<const std::uint8_t *>(p.data()), p.size()}, b, err);
}

[[maybe_unused]] bool wait_for(const std::function<bool()> &f,
                               std::chrono::milliseconds timeout = 5000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        if (f()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

// A payload every decoder test can start from: what the emulator sends when built with events,
// else the same shape written by hand.
std::string sample_payload() {
#ifdef KVS_EMU_KV_EVENTS
    using kvsteer::model::BlockEvent;
    std::vector<BlockEvent> evs = {
        {BlockEvent::Stored, 0xfedcba9876543210ull, 0, false},
        {BlockEvent::Stored, 0x8000000000000001ull, 0xfedcba9876543210ull, true},
        {BlockEvent::Stored, 3, 0x8000000000000001ull, true},
        {BlockEvent::Stored, 10, 0, false},  // a new chain: a second BlockStored
        {BlockEvent::Removed, 3, 0, false},
        {BlockEvent::Removed, 10, 0, false},
    };
    return kvsteer::emu::encode_kv_batch(evs, 1700000000.25, 16);
#else
    using namespace kvtest;
    return batch({stored(3, 0xfedcba9876543210ull), stored(1, 10), removed(2, 3)}, 1700000000.25);
#endif
}

}  // namespace

TEST(KvEventsDecode, TheEmulatorsBatches) {
#ifndef KVS_EMU_KV_EVENTS
    GTEST_SKIP() << "kvsteer-gpu-emu built without KV events (libzmq/msgpack-c missing): hand-made "
                    "bytes only";
#endif
    KvBatch b;
    std::string err;
    ASSERT_TRUE(decode(sample_payload(), &b, &err)) << err;
    EXPECT_DOUBLE_EQ(b.ts, 1700000000.25);
    EXPECT_FALSE(b.dp_rank) << "the emulator sends [ts, events]";
    ASSERT_EQ(b.events.size(), 3u);
    EXPECT_EQ(b.events[0].kind, Kind::Stored);
    EXPECT_EQ(b.events[0].blocks, 3u);
    EXPECT_TRUE(b.events[0].gpu);
    EXPECT_EQ(b.events[1].kind, Kind::Stored);
    EXPECT_EQ(b.events[1].blocks, 1u);
    EXPECT_EQ(b.events[2].kind, Kind::Removed);
    EXPECT_EQ(b.events[2].blocks, 2u);
    EXPECT_TRUE(b.events[2].gpu);
}

#ifdef KVS_EMU_KV_EVENTS
namespace {

// msgpack-c as a second, independent encoder for the shapes the emulator does not send.
struct Pk {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    Pk() {
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    }
    ~Pk() { msgpack_sbuffer_destroy(&sb); }
    Pk &arr(std::size_t n) { return msgpack_pack_array(&pk, n), *this; }
    Pk &map(std::size_t n) { return msgpack_pack_map(&pk, n), *this; }
    Pk &str(std::string_view s) {
        msgpack_pack_str(&pk, s.size());
        msgpack_pack_str_body(&pk, s.data(), s.size());
        return *this;
    }
    Pk &bin(std::string_view s) {
        msgpack_pack_bin(&pk, s.size());
        msgpack_pack_bin_body(&pk, s.data(), s.size());
        return *this;
    }
    Pk &u(std::uint64_t v) { return msgpack_pack_uint64(&pk, v), *this; }
    Pk &i(std::int64_t v) { return msgpack_pack_int64(&pk, v), *this; }
    Pk &d(double v) { return msgpack_pack_double(&pk, v), *this; }
    Pk &nil() { return msgpack_pack_nil(&pk), *this; }
    std::string bytes() const { return std::string(sb.data, sb.size); }
};

}  // namespace

TEST(KvEventsDecode, VllmArrayLikeShapes) {
    // [ts, events, data_parallel_rank] with sha256 (bytes) and signed-int hashes, a CPU-tier
    // store, an old 5-field BlockStored (no medium), an old 1-field BlockRemoved, a clear and a
    // tag from a future release.
    const std::string sha(32, '\xab');
    Pk p;
    p.arr(3).d(12.5).arr(6);
    p.arr(8).str("BlockStored").arr(2).bin(sha).bin(sha).bin(sha).arr(16);
    for (int t = 0; t < 16; t++) p.u(static_cast<std::uint64_t>(t) * 1000);
    p.u(16).nil().str("CPU").nil();
    p.arr(6)
        .str("BlockStored")
        .arr(3)
        .i(-5)
        .i(-9000000000000000000ll)
        .u(7)
        .nil()
        .arr(0)
        .u(16)
        .nil();
    p.arr(2).str("BlockRemoved").arr(1).i(-5);
    p.arr(1).str("AllBlocksCleared");
    p.arr(4).str("BlockMovedToMars").arr(1).u(1).map(1).str("x").u(2).nil();
    p.arr(3).str("BlockRemoved").arr(2).u(1).u(2).nil();
    p.u(3);
    KvBatch b;
    std::string err;
    ASSERT_TRUE(decode(p.bytes(), &b, &err)) << err;
    EXPECT_DOUBLE_EQ(b.ts, 12.5);
    ASSERT_TRUE(b.dp_rank);
    EXPECT_EQ(*b.dp_rank, 3);
    ASSERT_EQ(b.events.size(), 6u);
    EXPECT_EQ(b.events[0].kind, Kind::Stored);
    EXPECT_EQ(b.events[0].blocks, 2u);
    EXPECT_FALSE(b.events[0].gpu) << "medium CPU is an offload tier";
    EXPECT_EQ(b.events[1].kind, Kind::Stored);
    EXPECT_EQ(b.events[1].blocks, 3u);
    EXPECT_TRUE(b.events[1].gpu) << "no medium field: GPU";
    EXPECT_EQ(b.events[2].kind, Kind::Removed);
    EXPECT_TRUE(b.events[2].gpu);
    EXPECT_EQ(b.events[3].kind, Kind::Cleared);
    EXPECT_EQ(b.events[4].kind, Kind::Unknown);
    EXPECT_EQ(b.events[5].kind, Kind::Removed);
    EXPECT_EQ(b.events[5].blocks, 2u);
    EXPECT_TRUE(b.events[5].gpu) << "medium nil: GPU";
}

TEST(KvEventsDecode, VllmMapShapes) {
    // Releases without array_like send structs as maps, the tag in "type"; fields in any order.
    Pk p;
    p.map(3).str("ts").d(99.0).str("events").arr(3);
    p.map(9)
        .str("type")
        .str("BlockStored")
        .str("block_hashes")
        .arr(2)
        .u(1)
        .u(2)
        .str("parent_block_hash")
        .nil()
        .str("token_ids")
        .arr(0)
        .str("block_size")
        .u(16)
        .str("lora_id")
        .nil()
        .str("medium")
        .str("GPU")
        .str("lora_name")
        .nil()
        .str("extra_keys")
        .nil();
    p.map(2).str("block_hashes").arr(1).u(2).str("type").str("BlockRemoved");
    p.map(1).str("type").str("AllBlocksCleared");
    p.str("data_parallel_rank").u(0);
    KvBatch b;
    std::string err;
    ASSERT_TRUE(decode(p.bytes(), &b, &err)) << err;
    EXPECT_DOUBLE_EQ(b.ts, 99.0);
    EXPECT_EQ(b.dp_rank, 0);
    ASSERT_EQ(b.events.size(), 3u);
    EXPECT_EQ(b.events[0].kind, Kind::Stored);
    EXPECT_EQ(b.events[0].blocks, 2u);
    EXPECT_EQ(b.events[1].kind, Kind::Removed);
    EXPECT_EQ(b.events[1].blocks, 1u);
    EXPECT_EQ(b.events[2].kind, Kind::Cleared);

    Pk no_type;
    no_type.map(2).str("ts").u(1).str("events").arr(1).map(1).str("block_hashes").arr(0);
    EXPECT_FALSE(decode(no_type.bytes(), &b, &err));
    EXPECT_NE(err.find("type"), std::string::npos) << err;
}
#endif

TEST(KvEventsDecode, MalformedInputIsRejectedWithAReason) {
    using namespace kvtest;
    const std::string ts0 = std::string(1, '\0');
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "truncated"},
        {"\xc1", "truncated or invalid"},
        {"\x2a", "neither a list nor a map"},
        {std::string("\xdd\xff\xff\xff\xff", 5), "truncated"},  // 4G elements claimed in 5 bytes
        {std::string("\xdf\xff\xff\xff\xff", 5), "truncated"},
        {arr(2) + f64(1) + std::string("\xdd\x7f\xff\xff\xff", 5), "truncated"},
        {arr(1) + ts0, "fewer than 2"},
        {arr(2) + str("x") + arr(0), "ts is not a number"},
        {arr(2) + ts0 + ts0, "events is not a list"},
        {arr(2) + ts0 + arr(1) + arr(0), "empty list"},
        {arr(2) + ts0 + arr(1) + arr(1) + u64(5), "tag is not a string"},
        {arr(2) + ts0 + arr(1) + arr(2) + str("BlockStored") + str("x"),
         "block_hashes is not a list"},
        {arr(2) + ts0 + arr(1) + arr(2) + str("BlockStored") + arr(1) +
             std::string("\xca\0\0\0\0", 5),
         "neither an integer nor bytes"},
        {arr(2) + ts0 + arr(1) + arr(2) + str("BlockStored") + arr(1) + str("h"),
         "neither an integer nor bytes"},
        {arr(2) + ts0 + arr(1) + arr(1) + str("BlockRemoved"), "without block_hashes"},
        {arr(2) + ts0 + arr(1) + arr(3) + str("BlockRemoved") + arr(0) + u64(5), "medium"},
        {arr(2) + ts0 + arr(0) + ts0, "bytes after the batch"},
        {arr(3) + ts0 + arr(0) + str("r"), "data_parallel_rank"},
        {map(1) + str("ts") + ts0, "no ts or no events"},
        {map(1) + u64(1) + ts0, "not a string"},
        {arr(2) + ts0 + arr(1) + u64(1), "neither a list nor a map"},
        {batch({stored(2)}).substr(0, batch({stored(2)}).size() - 1), "truncated"},
    };
    for (const auto &[bytes, why] : cases) {
        KvBatch b;
        std::string err;
        EXPECT_FALSE(decode(bytes, &b, &err)) << why;
        EXPECT_NE(err.find(why), std::string::npos) << "want '" << why << "', got: " << err;
        EXPECT_EQ(err.find('\n'), std::string::npos);
    }
}

TEST(KvEventsDecode, DeepNestingIsSkippedWithoutRecursionUpToALimit) {
    using namespace kvtest;
    // An unknown event's field nesting lists: skipped iteratively while the whole message nests
    // at most 16 containers (batch, events, event: 13 more); the same without its innermost value
    // is truncated.
    auto nested = [](std::size_t depth) {
        return arr(2) + std::string(1, '\0') + arr(1) + arr(2) + str("FutureEvent") +
               std::string(depth, '\x91') + nil();
    };
    KvBatch b;
    std::string err;
    ASSERT_TRUE(decode(nested(13), &b, &err)) << err;
    ASSERT_EQ(b.events.size(), 1u);
    EXPECT_EQ(b.events[0].kind, Kind::Unknown);
    EXPECT_FALSE(decode(nested(13).substr(0, nested(13).size() - 1), &b, &err));
    EXPECT_FALSE(decode(nested(14), &b, &err));
    EXPECT_NE(err.find("nested deeper than 16"), std::string::npos) << err;

    // A hostile publisher's megabytes of nested list headers (msgpack-c's parse stack took an
    // entry per byte: hundreds of MB): refused at once, with the reason, the event named.
    const std::string ts0(1, '\0'), headers(4u << 20, '\x91');
    for (const std::string &deep :
         {nested(4u << 20),                                 // an event field
          arr(4) + ts0 + arr(0) + nil() + headers + nil(),  // a batch field
          map(3) + str("ts") + ts0 + str("events") + arr(0) + str("x") + headers + nil()}) {
        const auto t0 = std::chrono::steady_clock::now();
        err.clear();
        EXPECT_FALSE(decode(deep, &b, &err));
        // Stops at the 17th container (the message says so); the bound, wide for a loaded or
        // sanitized build, only catches a parse that went through the megabytes first.
        EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms) << "stops at the 17th container";
        EXPECT_NE(err.find("msgpack nested deeper than 16 lists or maps"), std::string::npos)
            << err;
        EXPECT_EQ(err.find('\n'), std::string::npos);
    }
}

TEST(KvEventsDecode, EveryPrefixAndRandomBytesFailCleanly) {
    const std::string good = sample_payload();
    KvBatch b;
    std::string err;
    ASSERT_TRUE(decode(good, &b, &err)) << err;
    for (std::size_t n = 0; n < good.size(); n++)
        EXPECT_FALSE(decode(good.substr(0, n), &b, &err)) << "prefix of " << n << " bytes";

    // Random and mutated input (fixed seed): never a crash, and whatever decodes is plausible.
    std::mt19937_64 rng(0x6b7673);
    std::size_t decoded = 0;
    auto check = [&](const std::string &in) {
        KvBatch x;
        if (!decode(in, &x, &err)) return;
        decoded++;
        std::uint64_t blocks = 0;
        for (const auto &e : x.events) blocks += e.blocks;
        EXPECT_LE(x.events.size() + blocks, in.size())
            << "every event and hash takes at least a byte";
    };
    for (int i = 0; i < 20000; i++) {
        std::string s(rng() % 48, '\0');
        for (auto &c : s) c = static_cast<char>(rng());
        check(s);
    }
    for (int i = 0; i < 20000; i++) {
        std::string s = good;
        for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; k++)
            s[rng() % s.size()] = static_cast<char>(rng());
        check(s);
    }
    RecordProperty("random_inputs_decoded", static_cast<int>(decoded));
}

TEST(KvEventsStats, CountsGapsRestartsClearsAndBadMessages) {
    using namespace kvtest;
    const auto t = std::chrono::steady_clock::now();
    KvEventStats st;
    // We joined late: seq 5 is the baseline, not a gap.
    EXPECT_FALSE(st.on_message(frames(5, batch({stored(4)}), "kv@gpu0"), t));
    EXPECT_EQ(st.resident_blocks, 4u);
    EXPECT_EQ(st.seq_gaps, 0u);
    EXPECT_EQ(st.last_seq, 5u);
    EXPECT_DOUBLE_EQ(st.last_batch_ts.value_or(0), 1.5);
    EXPECT_FALSE(st.on_message(frames(6, batch({removed(1)})), t));
    EXPECT_EQ(st.resident_blocks, 3u);
    EXPECT_FALSE(st.on_message(frames(9, batch({stored(2)})), t));
    EXPECT_EQ(st.seq_gaps, 1u);
    EXPECT_EQ(st.missed_batches, 2u);
    EXPECT_EQ(st.resident_blocks, 5u);
    {  // a publisher's jumps of 2^63 back and forth: the count saturates, never wraps
        KvEventStats w;
        std::uint64_t last = 0;
        for (std::uint64_t seq : {0ull, 1ull << 63, 0ull, 1ull << 63, 0ull, 1ull << 63}) {
            w.on_message(frames(seq, batch({stored(1)})), t);
            EXPECT_GE(w.missed_batches, last) << seq;
            last = w.missed_batches;
        }
        EXPECT_EQ(w.missed_batches, UINT64_MAX);
    }
    // Undecodable payload: counted, skipped; its seq still counts (10 follows 9: no gap).
    EXPECT_FALSE(st.on_message(frames(10, "\xc1"), t));
    EXPECT_EQ(st.decode_errors, 1u);
    EXPECT_FALSE(st.last_error.empty());
    EXPECT_EQ(st.last_seq, 10u);
    EXPECT_EQ(st.seq_gaps, 1u);
    // Wrong framing: no seq to read.
    EXPECT_FALSE(st.on_message({"topic", "payload"}, t));
    EXPECT_FALSE(st.on_message({"topic", "1234567", batch({})}, t));
    EXPECT_EQ(st.decode_errors, 3u);
    EXPECT_EQ(st.last_seq, 10u);
    // A clear inside a batch: what follows it counts against the empty cache.
    EXPECT_TRUE(st.on_message(frames(11, batch({stored(2), cleared(), stored(1)})), t));
    EXPECT_EQ(st.clears, 1u);
    EXPECT_EQ(st.resets, 1u);
    EXPECT_EQ(st.resident_blocks, 1u);
    EXPECT_EQ(st.blocks_stored, 4u + 2u + 2u + 1u);
    // Removals of blocks stored before we joined: floored at 0.
    EXPECT_FALSE(st.on_message(frames(12, batch({removed(5)})), t));
    EXPECT_EQ(st.resident_blocks, 0u);
    EXPECT_EQ(st.blocks_removed, 6u);
    // Offload tiers are counted apart.
    EXPECT_FALSE(st.on_message(frames(13, batch({stored(3, 1, "CPU"), removed(1, 1, "CPU")})), t));
    EXPECT_EQ(st.other_medium_blocks, 4u);
    EXPECT_EQ(st.resident_blocks, 0u);
    // seq back to 0: a new publisher (engine restart), so an empty cache.
    EXPECT_FALSE(st.on_message(frames(14, batch({stored(7)})), t));
    EXPECT_TRUE(st.on_message(frames(0, batch({stored(1)})), t));
    EXPECT_EQ(st.publisher_restarts, 1u);
    EXPECT_EQ(st.resets, 2u);
    EXPECT_EQ(st.resident_blocks, 1u);
    EXPECT_EQ(st.messages, 11u);
    EXPECT_EQ(st.last_message, t);
}

TEST(KvEventSubscriber, FollowsARealPublisher) {
#ifndef KVS_TEST_ZMQ
    GTEST_SKIP() << "built without libzmq";
#else
    ASSERT_TRUE(kv_events_supported());
    using namespace kvtest;
    XPub pub;
    ASSERT_TRUE(pub.ok());
    std::atomic<int> wakes{0};
    KvEventSubscriber sub([&] { wakes++; });
    std::string err;
    ASSERT_TRUE(sub.start(&err)) << err;
    EXPECT_FALSE(sub.stats(7));
    sub.set(7, pub.endpoint());
    ASSERT_TRUE(sub.stats(7));
    EXPECT_EQ(sub.stats(7)->endpoint, pub.endpoint());
    ASSERT_TRUE(pub.wait_subscriber());

    ASSERT_TRUE(pub.send(frames(0, sample_payload())));
    ASSERT_TRUE(wait_for([&] { return sub.stats(7)->messages == 1; }));
    EXPECT_EQ(sub.stats(7)->resident_blocks, 2u);  // 4 stored, 2 removed
    EXPECT_EQ(sub.stats(7)->decode_errors, 0u);
    ASSERT_TRUE(pub.send({"", "garbage"}));
    ASSERT_TRUE(pub.send(frames(2, batch({cleared()}))));
    ASSERT_TRUE(wait_for([&] { return sub.stats(7)->messages == 3; }));
    auto st = *sub.stats(7);
    EXPECT_EQ(st.decode_errors, 1u);
    EXPECT_EQ(st.seq_gaps, 1u);
    EXPECT_EQ(st.missed_batches, 1u);
    EXPECT_EQ(st.clears, 1u);
    EXPECT_EQ(st.resident_blocks, 0u);
    EXPECT_EQ(sub.reset_events(), 1u);
    EXPECT_TRUE(wait_for([&] { return wakes.load() >= 1; })) << "a reset wakes the daemon";
    // A flood of resets wakes it at most every 50 ms (it woke every round), the last ones too.
    const auto flood = std::chrono::steady_clock::now();
    const int woken = wakes.load();
    for (std::uint64_t q = 3; q < 103; ++q) {  // paced: each its own round of the thread
        ASSERT_TRUE(pub.send(frames(q, batch({cleared()}))));
        std::this_thread::sleep_for(2ms);
    }
    ASSERT_TRUE(wait_for([&] { return sub.reset_events() == 101u; }));
    EXPECT_TRUE(wait_for([&] { return wakes.load() > woken; }));
    std::this_thread::sleep_for(100ms);  // a wake owed for the last ones comes within 50 ms
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - flood)
                        .count();
    EXPECT_LE(wakes.load() - woken, ms / 50 + 2) << "100 resets in " << ms << " ms";

    // Re-subscribing starts the counts over (on a socket of its own, which receives);
    // removing forgets the backend.
    sub.set(7, pub.endpoint());
    EXPECT_EQ(sub.stats(7)->messages, 0u);
    // Many subscriptions at once (the transport follows the table when it changes) all receive;
    // the first XPUB send may precede a new socket's subscription: sent until each counted one.
    for (std::uint16_t id = 100; id < 164; ++id) sub.set(id, pub.endpoint());
    std::uint64_t seq = 103;
    EXPECT_TRUE(wait_for([&] {
        pub.send(frames(seq++, sample_payload()));
        for (std::uint16_t id = 100; id < 164; ++id)
            if (sub.stats(id)->messages == 0) return false;
        return sub.stats(7)->messages > 0;
    })) << "every subscription receives";
    for (std::uint16_t id = 100; id < 164; ++id) sub.remove(id);
    sub.remove(7);
    EXPECT_FALSE(sub.stats(7));
    EXPECT_TRUE(sub.all_stats().empty());
#endif
}

TEST(KvEventSubscriber, BadEndpointIsReportedNotFatal) {
#ifndef KVS_TEST_ZMQ
    GTEST_SKIP() << "built without libzmq";
#else
    KvEventSubscriber sub(nullptr);
    std::string err;
    ASSERT_TRUE(sub.start(&err)) << err;
    sub.set(1, "tcp://127.0.0.1:notaport");  // libzmq refuses it in zmq_connect
    EXPECT_TRUE(wait_for([&] { return !sub.stats(1)->last_error.empty(); }))
        << "connect error shown";
#endif
}

#ifdef KVS_GPU_EMU
namespace {

// One blocking POST /v1/completions; true on a 200 answer.
bool complete(std::uint16_t port, const std::string &prompt) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        close(fd);
        return false;
    }
    const std::string body = R"({"model":"m","prompt":")" + prompt + R"(","max_tokens":1})";
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: emu\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    bool ok = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
    std::string resp;
    char buf[4096];
    for (ssize_t n; ok && (n = recv(fd, buf, sizeof buf, 0)) > 0;)
        resp.append(buf, static_cast<std::size_t>(n));
    close(fd);
    return resp.starts_with("HTTP/1.1 200");
}

}  // namespace

TEST(KvEventSubscriber, CountsTheEmulatorsBlocks) {
    // The real kvsteer-gpu-emu process as the publisher: what it stores arrives, block for block.
    const std::uint16_t kv_port = kvtest::free_tcp_port();
    const std::string port_file = "/tmp/kvs-kvtest-" + std::to_string(getpid()) + ".port";
    unlink(port_file.c_str());
    const std::string ep = "tcp://127.0.0.1:" + std::to_string(kv_port);
    std::vector<std::string> args = {
        KVS_GPU_EMU, "--port",  "0", "--port-file",  port_file, "--kv-events-endpoint",
        ep,          "--model", "m", "--time-scale", "100",     "--log-level",
        "warn"};
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, KVS_GPU_EMU, nullptr, nullptr, argv.data(), environ), 0);
    struct Reap {
        pid_t pid;
        std::string file;
        ~Reap() {
            kill(pid, SIGTERM);
            waitpid(pid, nullptr, 0);
            unlink(file.c_str());
        }
    } reap{pid, port_file};
    std::uint16_t port = 0;
    ASSERT_TRUE(wait_for([&] {
        std::ifstream f(port_file);
        return f >> port && port != 0;
    })) << "the emulator did not start";

    KvEventSubscriber sub(nullptr);
    std::string err;
    ASSERT_TRUE(sub.start(&err)) << err;
    sub.set(1, ep);
    // A subscriber misses what is published before it has joined: send fresh one-block prompts
    // until one is seen; from then on every batch arrives, in order.
    unsigned warm = 0;
    ASSERT_TRUE(wait_for(
        [&] {
            EXPECT_TRUE(complete(port, "warm-up " + std::to_string(warm++) + std::string(60, 'w')));
            return sub.stats(1)->messages > 0;
        },
        10000ms));
    // Warm-up batches may still be in flight (at most one block per warm-up). A barrier prompt
    // with more blocks than that: once its count is in, everything published before it is too.
    const std::uint64_t s0 = sub.stats(1)->blocks_stored;
    ASSERT_TRUE(complete(port, std::string((warm + 1) * 64, 'b')));
    ASSERT_TRUE(wait_for([&] { return sub.stats(1)->blocks_stored >= s0 + warm + 1; }));
    const auto before = *sub.stats(1);
    // 3 full blocks (16 tokens of 4 bytes) and half a block, which is not cached.
    ASSERT_TRUE(complete(port, std::string(3 * 64 + 32, 'p')));
    ASSERT_TRUE(wait_for([&] { return sub.stats(1)->blocks_stored >= before.blocks_stored + 3; }));
    const auto after = *sub.stats(1);
    EXPECT_EQ(after.blocks_stored, before.blocks_stored + 3);
    EXPECT_EQ(after.blocks_removed, 0u) << "the cache is far from full";
    EXPECT_EQ(after.resident_blocks, before.resident_blocks + 3);
    EXPECT_EQ(after.decode_errors, 0u) << after.last_error;
    EXPECT_EQ(after.unknown_events, 0u);
    EXPECT_EQ(after.seq_gaps, 0u);
    EXPECT_EQ(after.other_medium_blocks, 0u);
    EXPECT_GT(after.last_batch_ts.value_or(0), 1.6e9)
        << "the emulator stamps batches with its wall clock";
}
#endif
