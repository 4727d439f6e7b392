// The replayer's workloads: equal hash ids give equal bytes exactly as far as they are equal,
// the last block is cut to input_length, bad trace lines are reported by number; plus the
// Prometheus parsing behind the reported hit rate.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "prom.h"
#include "summary.h"
#include "trace.h"

using namespace kvsteer::replay;

namespace {
size_t common_prefix(const std::string &a, const std::string &b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    return i;
}
ParseResult parse(const std::string &text, TextGeometry g = {}) {
    std::istringstream in(text);
    return parse_mooncake(in, g);
}
}  // namespace

TEST(ReplayTrace, BlockTextDeterministicPrefixStableJsonSafe) {
    std::string a, b, c;
    append_block_text(a, 42, 2048);
    append_block_text(b, 42, 100);
    append_block_text(c, 43, 2048);
    EXPECT_EQ(a.size(), 2048u);
    EXPECT_EQ(a.substr(0, 100), b);
    EXPECT_NE(a.substr(0, 8), c.substr(0, 8));  // different ids differ from the first bytes
    for (char ch : a) {
        EXPECT_TRUE(ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') << int(ch);
    }
}

TEST(ReplayTrace, EqualHashIdsGiveEqualBytesExactlyThatFar) {
    const auto r = parse(
        "{\"timestamp\": 0, \"input_length\": 1200, \"output_length\": 5, \"hash_ids\": [1, 2, "
        "3]}\n"
        "{\"timestamp\": 10, \"input_length\": 1100, \"output_length\": 5, \"hash_ids\": [1, 2, "
        "9]}\n"
        "{\"timestamp\": 20, \"input_length\": 1500, \"output_length\": 5, \"hash_ids\": [1, 7, "
        "3]}\n"
        "{\"timestamp\": 30, \"input_length\": 1200, \"output_length\": 5, \"hash_ids\": [1, 2, "
        "3]}\n");
    ASSERT_TRUE(r.errors.empty());
    ASSERT_EQ(r.items.size(), 4u);
    const auto p0 = prompt_text(r.items[0]), p1 = prompt_text(r.items[1]),
               p2 = prompt_text(r.items[2]), p3 = prompt_text(r.items[3]);
    const size_t block = 512 * 4;
    // ids 1,2 equal; 3 vs 9 differ within their 18-byte tag "<16 hex digits>".
    EXPECT_GT(common_prefix(p0, p1), 2 * block);
    EXPECT_LT(common_prefix(p0, p1), 2 * block + 17);
    EXPECT_LT(common_prefix(p0, p2), block + 17);
    EXPECT_GE(common_prefix(p0, p2), block);
    EXPECT_EQ(p0, p3);
    // Last block cut so the prompt is input_length tokens.
    EXPECT_EQ(p0.size(), 1200u * 4);
    EXPECT_EQ(p1.size(), 1100u * 4);
    EXPECT_EQ(p2.size(), 1500u * 4);
    EXPECT_DOUBLE_EQ(r.items[1].t_s, 0.010);

    // Bodies keep the property: the chat "messages" value and completions "prompt" text.
    BodyOptions o;
    const auto b0 = request_body(r.items[0], o), b1 = request_body(r.items[1], o);
    const auto j0 = nlohmann::json::parse(b0);
    EXPECT_EQ(j0["messages"][0]["content"].get<std::string>(), p0);
    EXPECT_EQ(j0["max_tokens"], 5);
    EXPECT_TRUE(j0["stream"].get<bool>());
    const size_t head = b0.find(p0.substr(0, 16));
    EXPECT_EQ(common_prefix(b0, b1), head + common_prefix(p0, p1));
    o.api = ApiKind::Completions;
    o.stream = false;
    const auto jc = nlohmann::json::parse(request_body(r.items[2], o));
    EXPECT_EQ(jc["prompt"].get<std::string>(), p2);
    EXPECT_FALSE(jc.contains("stream"));
}

TEST(ReplayTrace, ErrorsNameTheLine) {
    const auto r = parse(
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n"
        "\n"
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]\n"
        "{\"timestamp\": 0, \"output_length\": 1, \"hash_ids\": [1]}\n"
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 1, \"hash_ids\": [1]}\n"
        "{\"timestamp\": -5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n"
        "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [\"x\"]}\n"
        "[1,2]\n");
    EXPECT_EQ(r.items.size(), 1u);
    ASSERT_EQ(r.errors.size(), 6u);
    EXPECT_EQ(r.errors[0], "line 3: not valid JSON");
    EXPECT_EQ(r.errors[1], "line 4: missing \"input_length\"");
    EXPECT_NE(r.errors[2].find("line 5: 1 hash_ids for input_length 600"), std::string::npos);
    EXPECT_EQ(r.errors[3].rfind("line 6: ", 0), 0u);
    EXPECT_EQ(r.errors[4],
              "line 7: hash_ids[0] is neither a non-negative integer nor a range [first, last]");
    EXPECT_EQ(r.errors[5], "line 8: not a JSON object");
}

// The shipped demo trace writes runs of consecutive ids as inclusive ranges [first, last]: the
// same prompts as the ids written out, and bad or oversized ranges are reported, not expanded.
TEST(ReplayTrace, HashIdRangesExpandToTheSameBlocks) {
    const auto r = parse(
        "{\"timestamp\": 0, \"input_length\": 2500, \"output_length\": 2, \"hash_ids\": [7, 8, 9, "
        "4, 11]}\n"
        "{\"timestamp\": 0, \"input_length\": 2500, \"output_length\": 2, \"hash_ids\": [[7, 9], "
        "4, [11, 11]]}\n"
        "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 2, \"hash_ids\": [[9, 7]]}\n"
        "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 2, \"hash_ids\": [[0, "
        "4000000000000]]}\n"
        "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 2, \"hash_ids\": [[1, 2, "
        "3]]}\n"
        "{\"timestamp\": 0, \"input_length\": 2500, \"output_length\": 2, \"hash_ids\": [[7, "
        "9]]}\n");
    ASSERT_EQ(r.items.size(), 2u);
    EXPECT_EQ(prompt_text(r.items[0]), prompt_text(r.items[1]));
    ASSERT_EQ(r.items[1].segments.size(), 5u);
    EXPECT_EQ(r.items[1].segments[2].id, 9u);
    EXPECT_EQ(r.items[1].segments[3].id, 4u);
    ASSERT_EQ(r.errors.size(), 4u);
    EXPECT_NE(r.errors[0].find("line 3: hash_ids[0] is neither"), std::string::npos);
    EXPECT_EQ(r.errors[1], "line 4: hash_ids[0]: range longer than input");
    EXPECT_NE(r.errors[2].find("line 5: hash_ids[0] is neither"), std::string::npos);
    EXPECT_NE(r.errors[3].find("line 6: 3 hash_ids for input_length 2500"), std::string::npos);
}

// The trace `make demo` replays parses whole, and stands for exactly the requests of the public
// trace it was derived from: same times, lengths and block ids.
TEST(ReplayTrace, ShippedDemoTraceIsTheMooncakeTrace) {
    std::ifstream demo(KVS_DEMO_TRACE);
    ASSERT_TRUE(demo) << KVS_DEMO_TRACE;
    const auto d = parse_mooncake(demo, {});
    EXPECT_TRUE(d.errors.empty()) << d.errors.front();
    EXPECT_EQ(d.items.size(), 3993u);
    std::ifstream src(KVS_MOONCAKE_TRACE);
    if (!src) GTEST_SKIP() << KVS_MOONCAKE_TRACE << " absent: comparison with the source skipped";
    const auto s = parse_mooncake(src, {});
    ASSERT_EQ(s.items.size(), d.items.size());
    const double t0 = s.items.front().t_s;
    for (size_t i = 0; i < s.items.size(); ++i) {
        const auto &a = s.items[i], &b = d.items[i];
        ASSERT_DOUBLE_EQ(a.t_s - t0, b.t_s) << "request " << i;
        ASSERT_EQ(a.input_tokens, b.input_tokens) << "request " << i;
        ASSERT_EQ(a.output_tokens, b.output_tokens) << "request " << i;
        ASSERT_EQ(a.segments.size(), b.segments.size()) << "request " << i;
        for (size_t k = 0; k < a.segments.size(); ++k) {
            ASSERT_EQ(a.segments[k].id, b.segments[k].id) << "request " << i;
            ASSERT_EQ(a.segments[k].bytes, b.segments[k].bytes) << "request " << i;
        }
    }
}

TEST(ReplayTrace, SharedPrefixWorkloadShape) {
    SharedPrefixSpec s;
    s.groups = 4;
    s.prompts_per_group = 3;
    s.system_prompt_len = 100;
    s.question_len = 10;
    s.output_len = 7;
    const auto v = shared_prefix_workload(s, {});
    ASSERT_EQ(v.size(), 12u);
    std::map<uint64_t, int> groups;
    std::set<std::string> prompts;
    for (const auto &w : v) {
        EXPECT_EQ(w.input_tokens, 110u);
        EXPECT_EQ(w.output_tokens, 7u);
        const auto p = prompt_text(w);
        EXPECT_EQ(p.size(), 440u);
        prompts.insert(p);
        ++groups[w.segments[0].id];
    }
    EXPECT_EQ(prompts.size(), 12u);  // every question differs
    EXPECT_EQ(groups.size(), 4u);
    for (auto &[g, n] : groups) EXPECT_EQ(n, 3);
    // Same group -> the system prompt (400 bytes) is shared byte for byte, then they differ.
    for (size_t i = 0; i < v.size(); ++i)
        for (size_t j = i + 1; j < v.size(); ++j) {
            const size_t cp = common_prefix(prompt_text(v[i]), prompt_text(v[j]));
            if (v[i].segments[0].id == v[j].segments[0].id) {
                EXPECT_GE(cp, 400u);
                EXPECT_LT(cp, 417u);
            } else {
                EXPECT_LT(cp, 17u);
            }
        }
}

TEST(ReplayTrace, SelectionSkipsSortsLimitsAndRebases) {
    // Epoch-millisecond times out of file order, one request over the token cap.
    auto item = [](double t, std::uint64_t tokens, std::uint64_t id) {
        WorkItem w;
        w.t_s = t;
        w.input_tokens = tokens;
        w.output_tokens = id;  // a tag to follow each item
        return w;
    };
    std::vector<WorkItem> v{item(1.7e9 + 5, 100, 1), item(1.7e9 + 2, 100, 2),
                            item(1.7e9 + 1, 9000, 3), item(1.7e9 + 2, 100, 4),
                            item(1.7e9 + 9, 100, 5)};
    EXPECT_EQ(select_trace(v, 1000, 3), 1u);
    ASSERT_EQ(v.size(), 3u);
    // The earliest three kept, ties in file order, times from the first.
    EXPECT_EQ(v[0].output_tokens, 2u);
    EXPECT_EQ(v[1].output_tokens, 4u);
    EXPECT_EQ(v[2].output_tokens, 1u);
    EXPECT_DOUBLE_EQ(v[0].t_s, 0.0);
    EXPECT_DOUBLE_EQ(v[1].t_s, 0.0);
    EXPECT_DOUBLE_EQ(v[2].t_s, 3.0);
    // No cap, no limit: all kept, sorted.
    std::vector<WorkItem> w{item(4, 1, 1), item(3, 1, 2)};
    EXPECT_EQ(select_trace(w, 0, 0), 0u);
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(w[0].output_tokens, 2u);
    EXPECT_DOUBLE_EQ(w[1].t_s, 1.0);
    std::vector<WorkItem> none;
    EXPECT_EQ(select_trace(none, 10, 10), 0u);
    EXPECT_TRUE(none.empty());
}

TEST(ReplayTrace, PoissonArrivalsDeterministic) {
    std::vector<WorkItem> a(1000), b(1000);
    poisson_arrivals(a, 50, 7);
    poisson_arrivals(b, 50, 7);
    EXPECT_EQ(a.back().t_s, b.back().t_s);
    EXPECT_NEAR(a.back().t_s, 20.0, 3.0);  // 1000 arrivals at 50/s
    for (size_t i = 1; i < a.size(); ++i) EXPECT_GE(a[i].t_s, a[i - 1].t_s);
}

TEST(ReplayProm, ParsesVllmCounters) {
    const std::string text =
        "# HELP vllm:prefix_cache_queries_total x\n"
        "# TYPE vllm:prefix_cache_queries_total counter\n"
        "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"a}b\"} 1200.0\n"
        "vllm:prefix_cache_queries_total{engine=\"1\",model_name=\"m\"} 800\n"
        "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 5e2 1700000000\n"
        "vllm:num_requests_running 3\n"
        "garbage line\n";
    const auto m = parse_prometheus(text);
    EXPECT_DOUBLE_EQ(m.at("vllm:prefix_cache_queries_total"), 2000);
    EXPECT_DOUBLE_EQ(m.at("vllm:num_requests_running"), 3);
    const auto c = cache_counters(m);
    ASSERT_TRUE(c);
    EXPECT_DOUBLE_EQ(c->queries, 2000);
    EXPECT_DOUBLE_EQ(c->hits, 500);
    EXPECT_FALSE(cache_counters(parse_prometheus("vllm:num_requests_running 1\n")));
    const auto v0 = cache_counters(parse_prometheus(
        "vllm:gpu_prefix_cache_queries_total 10\nvllm:gpu_prefix_cache_hits_total 4\n"));
    ASSERT_TRUE(v0);
    EXPECT_DOUBLE_EQ(v0->hits, 4);
}

TEST(ReplayProm, Url) {
    std::string err;
    auto u = parse_url("http://127.0.0.1:9000/metrics", err);
    ASSERT_TRUE(u);
    EXPECT_EQ(u->host, "127.0.0.1");
    EXPECT_EQ(u->port, "9000");
    EXPECT_EQ(u->target, "/metrics");
    EXPECT_FALSE(parse_url("https://x/metrics", err));
    EXPECT_FALSE(err.empty());
}

TEST(ReplaySummary, PercentilesAndHitRateFromCounters) {
    EXPECT_EQ(percentile({}, 50), -1);
    std::vector<double> v;
    for (int i = 1; i <= 100; ++i) v.push_back(i);
    EXPECT_EQ(percentile(v, 50), 50);
    EXPECT_EQ(percentile(v, 99), 99);
    EXPECT_EQ(percentile({3, 1, 2}, 100), 3);

    ReplayConfig cfg;
    cfg.time_scale = 10;
    std::vector<Result> rs(3);
    for (size_t i = 0; i < rs.size(); ++i) {
        rs[i].sent = true;
        rs[i].ok = i < 2;
        rs[i].status = i < 2 ? 200 : 400;
        rs[i].error = i < 2 ? "" : "HTTP 400: x";
        rs[i].ttft_s = 0.1 * double(i + 1);
        rs[i].backend = i == 0 ? "a" : "b";
        rs[i].usage_completion = 10;
        rs[i].usage_prompt = 100;
    }
    BackendCounters bc;
    bc.url = "u";
    bc.ok = true;
    bc.queries_before = 100;
    bc.hits_before = 10;
    bc.queries_after = 300;
    bc.hits_after = 60;
    const auto s = summarize(rs, 2.0, cfg, {bc});
    EXPECT_EQ(s["ok"], 2);
    EXPECT_EQ(s["failed"], 1);
    EXPECT_EQ(s["errors"]["HTTP 400"], 1);
    EXPECT_DOUBLE_EQ(s["duration_s"].get<double>(), 20.0);
    EXPECT_DOUBLE_EQ(s["req_per_s"].get<double>(), 0.1);
    EXPECT_DOUBLE_EQ(s["prefix_cache_hit_rate"].get<double>(), 0.25);
    EXPECT_EQ(s["per_backend"]["a"], 1);
    EXPECT_EQ(s["per_backend"]["b"], 1);
    EXPECT_DOUBLE_EQ(s["ttft_p50_s"].get<double>(), 0.1);
    // Without counters there is no hit rate at all (never inferred from routing).
    EXPECT_TRUE(summarize(rs, 2.0, cfg, {})["prefix_cache_hit_rate"].is_null());
}
