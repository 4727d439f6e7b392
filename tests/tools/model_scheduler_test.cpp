// Scheduler: TTFT from the cost model, queueing when the batch is full, cache hits shortening
// prefill, chunked prefill, aborts, determinism.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "kvsteer/model/block_hash.h"
#include "kvsteer/model/scheduler.h"

using namespace kvsteer::model;

namespace {

struct Times {
    double admitted = -1, first = -1, finished = -1;
    uint64_t cached = 0;
    uint32_t tokens = 0;
};

// Runs the model until idle, collecting per-request times.
std::map<uint64_t, Times> run_all(Scheduler &s, std::vector<Event> evs = {}) {
    std::map<uint64_t, Times> t;
    auto take = [&](const std::vector<Event> &v) {
        for (const auto &e : v) {
            auto &x = t[e.id];
            if (e.type == EventType::Admitted) {
                x.admitted = e.time;
                x.cached = e.cached_tokens;
            }
            if (e.type == EventType::FirstToken) x.first = e.time;
            if (e.type == EventType::Finished) x.finished = e.time;
            if (e.type == EventType::FirstToken || e.type == EventType::Token)
                x.tokens = e.tokens_out;
        }
    };
    take(evs);
    for (int guard = 0; guard < 1000000; ++guard) {
        auto next = s.next_event_time();
        if (!next) break;
        std::vector<Event> out;
        s.advance(*next, out);
        take(out);
    }
    return t;
}

RequestSpec req(uint64_t id, char fill, uint64_t tokens, uint32_t out, uint32_t bt = 16) {
    const std::string bytes(tokens * 4, fill);
    return RequestSpec{id, tokens, chain_block_hashes(bytes, uint64_t(bt) * 4), out};
}

}  // namespace

TEST(Scheduler, SingleRequestTtftIsOnePrefill) {
    Scheduler s({}, {}, {});
    std::vector<Event> ev;
    ASSERT_EQ(s.submit(req(1, 'a', 4096, 10), 0.0, ev), SubmitResult::Accepted);
    auto t = run_all(s, ev);
    EXPECT_NEAR(t[1].first, s.cost().prefill_time(0, 4096), 1e-9);
    EXPECT_EQ(t[1].tokens, 10u);
    EXPECT_GT(t[1].finished, t[1].first + 9 * s.cost().config().decode_base_s * 0.99);
    EXPECT_EQ(s.num_running(), 0u);
    EXPECT_EQ(s.cache().used_blocks(), 0u);
}

TEST(Scheduler, QueueingShowsUpInTtftWhenBatchIsFull) {
    Scheduler s({/*max_batch=*/2, 8192}, {}, {});
    std::vector<Event> ev;
    for (uint64_t id = 1; id <= 6; ++id)
        ASSERT_EQ(s.submit(req(id, char('a' + id), 512, 50), 0.0, ev), SubmitResult::Accepted);
    // The first arrival started a step alone; the rest wait for its end (as in vLLM).
    EXPECT_EQ(s.num_running(), 1u);
    EXPECT_EQ(s.num_waiting(), 5u);
    auto t = run_all(s, ev);
    EXPECT_LT(t[2].admitted, t[1].finished);  // two slots: 1 and 2 ran together
    // Requests 3.. wait for a slot: they are admitted only when an earlier one finishes.
    EXPECT_GE(t[3].admitted, std::min(t[1].finished, t[2].finished));
    EXPECT_GT(t[3].first, t[1].finished);
    EXPECT_GT(t[5].first, t[3].first);
    // With room for all six, the same load has much lower TTFT for the last ones.
    Scheduler wide({64, 8192}, {}, {});
    std::vector<Event> ev2;
    for (uint64_t id = 1; id <= 6; ++id) wide.submit(req(id, char('a' + id), 512, 50), 0.0, ev2);
    auto w = run_all(wide, ev2);
    EXPECT_LT(w[6].first * 3, t[6].first);
}

TEST(Scheduler, RepeatedPromptHitsCacheAndPrefillsFaster) {
    Scheduler s({}, {}, {});
    std::vector<Event> ev;
    s.submit(req(1, 'p', 4096, 2), 0.0, ev);
    auto t1 = run_all(s, ev);
    const double start2 = t1[1].finished + 1.0;
    ev.clear();
    s.submit(req(2, 'p', 4096, 2), start2, ev);
    auto t2 = run_all(s, ev);
    EXPECT_EQ(t1[1].cached, 0u);
    EXPECT_EQ(t2[2].cached, 4080u);  // 255 of 256 blocks: the last token is always recomputed
    EXPECT_EQ(s.cache().stats().queries_tokens, 8192u);
    EXPECT_EQ(s.cache().stats().hits_tokens, 4080u);
    EXPECT_LT((t2[2].first - start2) * 3, t1[1].first);
}

TEST(Scheduler, LongPromptIsChunked) {
    Scheduler s({256, /*max_batched_tokens=*/2048}, {}, {});
    std::vector<Event> ev;
    s.submit(req(1, 'l', 8192, 1), 0.0, ev);
    auto t = run_all(s, ev);
    EXPECT_EQ(s.steps(), 4u);  // 4 chunks of 2048
    // Same work as one prefill, plus the fixed cost of each extra step.
    const double expect = s.cost().prefill_time(0, 8192) + 3 * s.cost().config().prefill_c0_s;
    EXPECT_NEAR(t[1].first, expect, 1e-9);
}

TEST(Scheduler, AbortFreesTheSlot) {
    Scheduler s({1, 8192}, {}, {});
    std::vector<Event> ev;
    s.submit(req(1, 'a', 256, 1000), 0.0, ev);
    s.submit(req(2, 'b', 256, 5), 0.0, ev);
    EXPECT_EQ(s.num_waiting(), 1u);
    ev.clear();
    ASSERT_TRUE(s.abort(1, 0.5, ev));
    EXPECT_FALSE(s.abort(1, 0.5, ev));
    auto t = run_all(s, ev);
    EXPECT_GT(t[2].first, 0.5);
    EXPECT_LT(t[2].finished, 1.0);
    EXPECT_EQ(t[1].finished, -1.0);  // never finished
    EXPECT_EQ(s.cache().used_blocks(), 0u);
}

TEST(Scheduler, RejectsWhatCanNeverFit) {
    Scheduler s({}, {16, 1024}, {});
    std::vector<Event> ev;
    EXPECT_EQ(s.submit(req(1, 'a', 1000, 100), 0.0, ev), SubmitResult::TooLarge);
    EXPECT_EQ(s.submit(req(2, 'a', 100, 10), 0.0, ev), SubmitResult::Accepted);
    EXPECT_EQ(s.submit(req(2, 'a', 100, 10), 0.0, ev), SubmitResult::DuplicateId);
}

TEST(Scheduler, KvCapacityBoundsAdmission) {
    // Room for ~2 requests of 1000+24 tokens: the third waits for blocks, not for a slot.
    Scheduler s({256, 8192}, {16, 2100}, {});
    std::vector<Event> ev;
    for (uint64_t id = 1; id <= 3; ++id) s.submit(req(id, char('a' + id), 1000, 24), 0.0, ev);
    auto t = run_all(s, ev);
    EXPECT_LT(t[2].admitted, t[1].finished);  // 1 and 2 fit together
    EXPECT_GE(t[3].admitted, std::min(t[1].finished, t[2].finished));
}

TEST(Scheduler, DecodeSlowsWithBatchSize) {
    auto itl = [](uint32_t n) {
        Scheduler s({256, 8192}, {}, {});
        std::vector<Event> ev;
        for (uint64_t id = 1; id <= n; ++id)
            s.submit(req(id, char('a' + id % 26), 64 + id, 100), 0.0, ev);
        auto t = run_all(s, ev);
        return (t[1].finished - t[1].first) / 99.0;
    };
    EXPECT_LT(itl(1), itl(64));
}

TEST(Scheduler, Deterministic) {
    auto trace = [] {
        Scheduler s({4, 4096}, {16, 50000}, {});
        std::vector<Event> all, ev;
        for (uint64_t id = 1; id <= 20; ++id) {
            ev.clear();
            s.submit(req(id, char('a' + id % 3), 300 + 37 * id, 20), 0.01 * double(id), ev);
            all.insert(all.end(), ev.begin(), ev.end());
        }
        while (auto n = s.next_event_time()) {
            ev.clear();
            s.advance(*n, ev);
            all.insert(all.end(), ev.begin(), ev.end());
        }
        return all;
    };
    const auto a = trace(), b = trace();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].id, b[i].id);
        EXPECT_EQ(a[i].time, b[i].time);
        EXPECT_EQ(a[i].type, b[i].type);
    }
}
