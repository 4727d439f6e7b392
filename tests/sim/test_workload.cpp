#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "kvsteer/core/flight_key.h"
#include "policy.h"
#include "sim_fixtures.h"

namespace kvsteer::sim {
namespace {

std::string temp_file(const std::string &name, const std::string &text) {
    const std::string p = ::testing::TempDir() + name;
    std::ofstream(p) << text;
    return p;
}

TEST(WorkloadTest, MissingTraceFileIsAClearError) {
    try {
        load_mooncake("does/not/exist.jsonl", 0, WorkloadOptions{});
        FAIL() << "no error";
    } catch (const std::runtime_error &e) {
        EXPECT_NE(std::string(e.what()).find("cannot read trace file 'does/not/exist.jsonl'"),
                  std::string::npos)
            << e.what();
    }
}

TEST(WorkloadTest, MalformedTraceNamesTheLine) {
    const auto p = temp_file(
        "sim_bad.jsonl",
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [1]}\n"
        "this is not json\n");
    try {
        load_mooncake(p, 0, WorkloadOptions{});
        FAIL() << "no error";
    } catch (const std::runtime_error &e) {
        EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    }
    const auto empty = temp_file("sim_empty.jsonl", "\n\n");
    EXPECT_THROW(load_mooncake(empty, 0, WorkloadOptions{}), std::runtime_error);
}

TEST(WorkloadTest, MooncakeItemsShareBytesExactlyAsFarAsTheirBlockIds) {
    const auto p = temp_file(
        "sim_ok.jsonl",
        "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 2, \"hash_ids\": [1, 2]}\n"
        "{\"timestamp\": 500, \"input_length\": 1024, \"output_length\": 2, \"hash_ids\": [1, "
        "3]}\n");
    const Workload w = load_mooncake(p, 0, WorkloadOptions{});
    ASSERT_EQ(w.reqs.size(), 2u);
    EXPECT_DOUBLE_EQ(w.reqs[1].base_t, 0.5);
    // 512 tokens x 4 bytes per Mooncake block = 32 KV blocks of 64 bytes; the chat wrapper shifts
    // the block grid, so the first 32 blocks agree and the rest differ.
    size_t same = 0;
    while (same < w.reqs[0].blocks.size() && w.reqs[0].blocks[same] == w.reqs[1].blocks[same])
        ++same;
    EXPECT_EQ(same, 32u);
    // Speed-up divides the trace times.
    const auto t = arrivals(w, 2.0, 0, 0);
    EXPECT_DOUBLE_EQ(t[1], 0.25);
}

// --max-input-tokens takes kvsteer-replay's request set: the longer requests skipped first, then
// the first `limit` of the rest by arrival, times relative to the first one kept.
TEST(WorkloadTest, MaxInputTokensSkipsBeforeTheLimitAsTheReplayerDoes) {
    const auto p = temp_file(
        "sim_cap.jsonl",
        "{\"timestamp\": 100, \"input_length\": 500, \"output_length\": 2, \"hash_ids\": [1]}\n"
        "{\"timestamp\": 300, \"input_length\": 100, \"output_length\": 2, \"hash_ids\": [2]}\n"
        "{\"timestamp\": 200, \"input_length\": 200, \"output_length\": 2, \"hash_ids\": [3]}\n"
        "{\"timestamp\": 400, \"input_length\": 300, \"output_length\": 2, \"hash_ids\": [4]}\n");
    WorkloadOptions o;
    o.max_input_tokens = 400;
    const Workload w = load_mooncake(p, 2, o);
    ASSERT_EQ(w.reqs.size(), 2u);
    EXPECT_EQ(w.reqs[0].source_line, 3u) << "sorted by arrival";
    EXPECT_EQ(w.reqs[1].source_line, 2u);
    EXPECT_DOUBLE_EQ(w.reqs[0].base_t, 0.0);
    EXPECT_DOUBLE_EQ(w.reqs[1].base_t, 0.1);
    // Without the cap the same order: the first 2 by arrival (before, the first 2 lines).
    const Workload all = load_mooncake(p, 2, WorkloadOptions{});
    ASSERT_EQ(all.reqs.size(), 2u);
    EXPECT_EQ(all.reqs[0].source_line, 1u);
    EXPECT_EQ(all.reqs[1].source_line, 3u);
    EXPECT_DOUBLE_EQ(all.reqs[1].base_t, 0.1);
}

// Times relative to the first arrival whatever the trace's epoch: a trace in epoch milliseconds
// waited that long in simulated time before (kvsteerd's rounds ticking through ~56 years).
TEST(WorkloadTest, TraceTimesStartAtTheFirstArrival) {
    const auto p =
        temp_file("sim_epoch.jsonl",
                  "{\"timestamp\": 1733400000500, \"input_length\": 100, \"output_length\": 2, "
                  "\"hash_ids\": [1]}\n"
                  "{\"timestamp\": 1733400000000, \"input_length\": 100, \"output_length\": 2, "
                  "\"hash_ids\": [2]}\n");
    const Workload w = load_mooncake(p, 0, WorkloadOptions{});
    ASSERT_EQ(w.reqs.size(), 2u);
    EXPECT_EQ(w.reqs[0].source_line, 2u);
    EXPECT_DOUBLE_EQ(w.reqs[0].base_t, 0.0);
    EXPECT_DOUBLE_EQ(w.reqs[1].base_t, 0.5);
}

TEST(WorkloadTest, FirstFlightIsCutAndLocatable) {
    const Workload w = test::small_shared_prefix(1, 1, 8192);  // a 32 KiB system prompt
    const SimRequest &r = w.reqs[0];
    EXPECT_EQ(r.first_flight.rfind("POST /v1/chat/completions HTTP/1.1\r\n", 0), 0u);
    HashParams hp;
    const auto k = key_flight(hp, flight_bytes(r.first_flight, 14600), 1);
    EXPECT_EQ(k.kind, KeyKind::OpenAIChat);
    EXPECT_LT(k.prompt_bytes, 14600u);
    EXPECT_GT(k.prompt_bytes, 14000u);
    // Every full 512-byte block of the ~14.3 KB of prompt seen, at most 28.
    EXPECT_EQ(k.hashes.n_blocks, std::min<uint32_t>(28, k.prompt_bytes / 512));
    EXPECT_GE(k.hashes.n_blocks, 27u);
}

TEST(WorkloadTest, ConversationTurnsExtendTheirSessionAndShareTheFirstBlock) {
    ConversationSpec s;
    s.sessions = 12;
    s.turns = 3;
    s.system_prompt_len = 256;
    s.user_len = 32;
    s.output_len = 16;
    s.session_rate = 2.0;
    s.think_s = 1.0;
    s.seed = 5;
    replay::TextGeometry g;
    const auto items = conversation_items(s, g);
    ASSERT_FALSE(items.empty());
    // Seeded: the same spec gives the same items; another seed, other ones.
    const auto again = conversation_items(s, g);
    ASSERT_EQ(again.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) {
        EXPECT_EQ(again[i].t_s, items[i].t_s);
        EXPECT_EQ(replay::prompt_text(again[i]), replay::prompt_text(items[i]));
    }
    ConversationSpec other = s;
    other.seed = 6;
    const auto o = conversation_items(other, g);
    EXPECT_TRUE(o.size() != items.size() || o[1].t_s != items[1].t_s);

    // Sorted by arrival; every request opens with the same system prompt; a later turn of a
    // session holds the earlier turn (its user message and the reply) as its prefix.
    const uint64_t sys_bytes = uint64_t(s.system_prompt_len) * g.bytes_per_token;
    const std::string sys = replay::prompt_text(items[0]).substr(0, sys_bytes);
    size_t extended = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) {
            EXPECT_GE(items[i].t_s, items[i - 1].t_s);
        }
        EXPECT_EQ(items[i].line, i);
        const std::string p = replay::prompt_text(items[i]);
        EXPECT_EQ(p.compare(0, sys_bytes, sys), 0);
        EXPECT_EQ(items[i].input_tokens * g.bytes_per_token, p.size());
        const auto &seg = items[i].segments;
        ASSERT_GE(seg.size(), 2u);
        EXPECT_EQ(seg.size() % 2, 0u);  // system, then (user, reply) pairs, then the new user turn
        // Only the system prompt carries the system prompt's id (so its text): every user turn
        // and reply has its own.
        for (size_t k = 1; k < seg.size(); ++k) EXPECT_NE(seg[k].id, seg[0].id) << i << "/" << k;
        if (seg.size() > 2) {
            // The previous turn of this session is an earlier item, and a prefix of this prompt.
            bool found = false;
            for (size_t j = 0; j < i && !found; ++j) {
                const auto &prev = items[j].segments;
                if (prev.size() + 2 != seg.size() || prev.back().id != seg[seg.size() - 3].id)
                    continue;
                found = p.compare(0, replay::prompt_text(items[j]).size(),
                                  replay::prompt_text(items[j])) == 0;
            }
            EXPECT_TRUE(found) << "item " << i;
            ++extended;
        }
    }
    EXPECT_GT(extended, 0u);

    // The simulator's view: all first KV blocks equal; sessions differ after the system prompt.
    const Workload w = make_conversation(s, WorkloadOptions{});
    ASSERT_EQ(w.reqs.size(), items.size());
    for (const auto &r : w.reqs) EXPECT_EQ(r.blocks.front(), w.reqs[0].blocks.front());
    ConversationSpec none = s;
    none.sessions = 0;
    EXPECT_THROW(make_conversation(none, WorkloadOptions{}), std::runtime_error);
}

}  // namespace
}  // namespace kvsteer::sim
