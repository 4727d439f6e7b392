// Prometheus text parser and vLLM/SGLang telemetry extraction on real pages and hostile text.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "kvsteer/control/prometheus.h"
#include "kvsteer/control/telemetry.h"

using namespace kvsteer::control;

namespace {

// Shape of a vLLM v1 (0.9-0.10) /metrics page, trimmed.
const char *kVllm = R"(# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 8533.0
python_gc_objects_collected_total{generation="1"} 2213.0
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 1.2936413184e+010
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4213
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 120000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 90000.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 42.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 42.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.14
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",num_gpu_blocks="27000"} 1.0
)";

// Older vLLM (V0): gpu_cache_usage_perc, no prefix counters.
const char *kVllmOld = R"(# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.9
)";

const char *kSglang = R"(# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.35
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.62
# HELP sglang:e2e_request_latency_seconds Histogram of End-to-end request latency in seconds
# TYPE sglang:e2e_request_latency_seconds summary
sglang:e2e_request_latency_seconds{model_name="m",quantile="0.5"} NaN
sglang:e2e_request_latency_seconds_sum{model_name="m"} 0.0
sglang:e2e_request_latency_seconds_count{model_name="m"} 0.0
)";

void expect_sane(const Telemetry &t) {
    for (auto v : {t.running, t.waiting, t.prefix_queries, t.prefix_hits}) {
        if (v) {
            EXPECT_TRUE(std::isfinite(*v) && *v >= 0);
        }
    }
    for (auto v : {t.kv_usage, t.hit_rate}) {
        if (v) {
            EXPECT_TRUE(*v >= 0 && *v <= 1);
        }
    }
}

}  // namespace

TEST(Prometheus, RealVllmPage) {
    auto p = parse_prometheus(kVllm);
    EXPECT_EQ(p.bad_lines, 0u) << p.first_error;
    EXPECT_EQ(p.samples.size(), 14u);
    auto t = extract_telemetry(p);
    EXPECT_EQ(t.flavor, ServerFlavor::Vllm);
    EXPECT_EQ(t.running, 3.0);
    EXPECT_EQ(t.waiting, 7.0);
    EXPECT_DOUBLE_EQ(*t.kv_usage, 0.4213);
    EXPECT_EQ(t.prefix_queries, 120000.0);
    EXPECT_EQ(t.prefix_hits, 90000.0);
    EXPECT_FALSE(t.hit_rate);
    EXPECT_TRUE(t.problems.empty());
    // +Inf bucket boundary kept as a label; value of the bucket parsed.
    bool inf_bucket = false;
    for (const auto &s : p.samples)
        if (s.label("le") && *s.label("le") == "+Inf") inf_bucket = s.value == 42.0;
    EXPECT_TRUE(inf_bucket);
}

TEST(Prometheus, OlderVllmNames) {
    auto t = extract_telemetry(parse_prometheus(kVllmOld));
    EXPECT_EQ(t.flavor, ServerFlavor::Vllm);
    EXPECT_DOUBLE_EQ(*t.kv_usage, 0.9);
    EXPECT_FALSE(t.prefix_queries);
    // Pre-_total counter names and the gpu_ variants.
    t = extract_telemetry(
        parse_prometheus("vllm:gpu_prefix_cache_queries 10\nvllm:gpu_prefix_cache_hits 4\n"));
    EXPECT_EQ(t.prefix_queries, 10.0);
    EXPECT_EQ(t.prefix_hits, 4.0);
}

TEST(Prometheus, RealSglangPage) {
    auto p = parse_prometheus(kSglang);
    EXPECT_EQ(p.bad_lines, 0u) << p.first_error;
    auto t = extract_telemetry(p);
    EXPECT_EQ(t.flavor, ServerFlavor::Sglang);
    EXPECT_EQ(t.running, 5.0);
    EXPECT_EQ(t.waiting, 2.0);
    EXPECT_DOUBLE_EQ(*t.kv_usage, 0.35);
    EXPECT_DOUBLE_EQ(*t.hit_rate, 0.62);
    EXPECT_TRUE(std::isnan(p.samples[4].value));  // the NaN quantile
}

// SGLang's page has no process start time and its hit rate is a gauge: its prompt and cached
// token counters (every cache_source summed) going backwards tell a restart, the gauge still
// the window's rate. Before, a restarted SGLang was never seen as one.
TEST(Telemetry, SglangCountersGoingBackwardsAreARestart) {
    auto page = [](double prompt, double device, double host) {
        return extract_telemetry(parse_prometheus(
            "sglang:cache_hit_rate{model_name=\"m\"} 0.5\n"
            "sglang:prompt_tokens_total{model_name=\"m\"} " +
            std::to_string(prompt) + "\n" +
            "sglang:cached_tokens_total{model_name=\"m\",cache_source=\"device\"} " +
            std::to_string(device) + "\n" +
            "sglang:cached_tokens_total{model_name=\"m\",cache_source=\"host\"} " +
            std::to_string(host) + "\n"));
    };
    const Telemetry a = page(4096, 3000, 168);
    ASSERT_TRUE(a.prefix_queries && a.prefix_hits);
    EXPECT_DOUBLE_EQ(*a.prefix_queries, 4096);
    EXPECT_DOUBLE_EQ(*a.prefix_hits, 3168);
    HitRateTracker h;
    EXPECT_FALSE(h.update(a).reset);
    auto u = h.update(page(8192, 6000, 200));
    EXPECT_FALSE(u.reset);
    ASSERT_TRUE(u.window_hit_rate);
    EXPECT_DOUBLE_EQ(*u.window_hit_rate, 0.5) << "the gauge gives the rate";
    u = h.update(page(100, 10, 0));
    EXPECT_TRUE(u.reset) << "restarted";
    EXPECT_FALSE(page(100, 90, 20).prefix_hits) << "more cached than prompt tokens: unknown";
}

TEST(Prometheus, SumsEnginesAndTakesMaxUsage) {
    auto t = extract_telemetry(parse_prometheus(
        "vllm:num_requests_running{engine=\"0\"} 2\nvllm:num_requests_running{engine=\"1\"} 3\n"
        "vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\"} "
        "0.7\n"));
    EXPECT_EQ(t.running, 5.0);
    EXPECT_DOUBLE_EQ(*t.kv_usage, 0.7);
    // One series twice (its labels in any order) is a malformed page, not two engines: summed,
    // it counted double.
    t = extract_telemetry(
        parse_prometheus("vllm:num_requests_running{engine=\"0\",model=\"m\"} 2\n"
                         "vllm:num_requests_running{model=\"m\",engine=\"0\"} 2\n"
                         "vllm:num_requests_waiting 1\nvllm:num_requests_waiting 1\n"
                         "vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\n"));
    EXPECT_FALSE(t.running);
    EXPECT_FALSE(t.waiting);
    EXPECT_DOUBLE_EQ(*t.kv_usage, 0.2);
    EXPECT_EQ(t.problems.size(), 2u);
}

TEST(Prometheus, LabelEscapesCommentsTimestampsCrlf) {
    auto p = parse_prometheus(
        "# free comment with { and \"\r\n"
        "#TYPE weird gauge\r\n"
        "  \tm{a=\"x\\\"y\",b=\"back\\\\slash\",c=\"new\\nline\",d=\"{},=\",} 1.5 1700000000000\r\n"
        "m2 -Inf\n"
        "m3 +inf\n"
        "m4 1e3 # {trace_id=\"abc\"} 1.0\n"
        "m5 4.9e-324\n"  // a subnormal (strtod's ERANGE): a value, as Go's ParseFloat has it
        "# EOF\n");
    EXPECT_EQ(p.bad_lines, 0u) << p.first_error;
    ASSERT_EQ(p.samples.size(), 5u);
    EXPECT_GT(p.samples[4].value, 0.0);
    const auto &s = p.samples[0];
    EXPECT_EQ(*s.label("a"), "x\"y");
    EXPECT_EQ(*s.label("b"), "back\\slash");
    EXPECT_EQ(*s.label("c"), "new\nline");
    EXPECT_EQ(*s.label("d"), "{},=");
    EXPECT_EQ(s.value, 1.5);
    EXPECT_EQ(s.timestamp_ms, 1700000000000);
    EXPECT_TRUE(std::isinf(p.samples[1].value) && p.samples[1].value < 0);
    EXPECT_TRUE(std::isinf(p.samples[2].value) && p.samples[2].value > 0);
    EXPECT_EQ(p.samples[3].value, 1000.0);
    ASSERT_EQ(p.types.size(), 1u);
    EXPECT_EQ(p.types[0].first, "weird");
}

TEST(Prometheus, BadLinesAreSkippedAndCounted) {
    auto p = parse_prometheus(
        "ok1 1\n"
        "{novalue=\"1\"} 2\n"
        "m{a=\"unterminated} 3\n"
        "m{a=\"bad\\escape\"} 3\n"
        "m{a=b} 3\n"
        "m{a=\"x\" b=\"y\"} 3\n"
        "m 0x1p3\n"
        "m 12abc\n"
        "m\n"
        "m 1 notatimestamp\n"
        "m 1 1.7e+23\n"  // float seconds beyond int64 milliseconds (found by the fuzzer: UB)
        "9bad 1\n"
        "ok2{a=\"1\"} 2\n");
    EXPECT_EQ(p.samples.size(), 2u);
    EXPECT_EQ(p.bad_lines, 11u);
    EXPECT_EQ(p.first_error.rfind("line 2:", 0), 0u) << p.first_error;
}

TEST(Prometheus, GarbageValuesMakeMetricsUnknownNotWrong) {
    auto t = extract_telemetry(
        parse_prometheus("vllm:num_requests_running NaN\n"
                         "vllm:num_requests_waiting -3\n"
                         "vllm:kv_cache_usage_perc 42\n"  // a percentage where a fraction belongs:
                                                          // refuse, don't guess
                         "vllm:prefix_cache_queries_total +Inf\n"
                         "vllm:prefix_cache_hits_total 5\n"));
    EXPECT_EQ(t.flavor, ServerFlavor::Vllm);
    EXPECT_FALSE(t.running);
    EXPECT_FALSE(t.waiting);
    EXPECT_FALSE(t.kv_usage);
    EXPECT_FALSE(t.prefix_queries);
    EXPECT_EQ(t.problems.size(), 4u);
    // More hits than queries: both unknown.
    t = extract_telemetry(
        parse_prometheus("vllm:prefix_cache_queries_total 5\nvllm:prefix_cache_hits_total 9\n"));
    EXPECT_FALSE(t.prefix_queries);
    EXPECT_FALSE(t.prefix_hits);
    // One bad label set poisons the metric rather than giving a partial sum.
    t = extract_telemetry(parse_prometheus(
        "vllm:num_requests_running{e=\"0\"} 2\nvllm:num_requests_running{e=\"1\"} NaN\n"));
    EXPECT_FALSE(t.running);
    // So does a line of it that does not parse (it was skipped: waiting came out 5, not unknown);
    // a bad line of another metric does not.
    auto page = parse_prometheus(
        "vllm:num_requests_waiting{engine=\"0\"} 5\n"
        "vllm:num_requests_waiting{engine=\"1\",x=\"\\q\"} 9\n"
        "vllm:num_requests_running 3\n"
        "vllm:num_requests_running_other{oops 1\n");
    EXPECT_EQ(page.bad_lines, 2u);
    t = extract_telemetry(page);
    EXPECT_FALSE(t.waiting);
    ASSERT_TRUE(t.running);
    EXPECT_EQ(*t.running, 3);
}

TEST(Prometheus, NotAMetricsPage) {
    auto p = parse_prometheus("<html><body><h1>404 Not Found</h1></body></html>\n");
    auto t = extract_telemetry(p);
    EXPECT_EQ(t.flavor, ServerFlavor::Unknown);
    EXPECT_FALSE(t.running);
    EXPECT_EQ(extract_telemetry(parse_prometheus("")).flavor, ServerFlavor::Unknown);
    EXPECT_EQ(parse_prometheus(std::string("m 1\0\n", 5)).bad_lines, 1u);
}

TEST(Prometheus, HugeAndRandomInputNeverCrash) {
    std::string big(200000, 'a');
    auto p = parse_prometheus(big + " 1\nvllm:num_requests_running 4\n");
    EXPECT_EQ(p.bad_lines, 1u);
    EXPECT_EQ(extract_telemetry(p).running, 4.0);
    EXPECT_TRUE(parse_prometheus("a 1\nb 2\nc 3\n", 2).truncated);
    // TYPE lines are bounded too (200,000: each kept one costs ~10x its line).
    std::string types;
    for (int i = 0; i < 200001; i++) types += "# TYPE m" + std::to_string(i) + " gauge\n";
    auto t = parse_prometheus(types + "d 1\n");
    EXPECT_TRUE(t.truncated);
    EXPECT_EQ(t.types.size(), 200000u);
    EXPECT_TRUE(t.samples.empty()) << "the rest skipped";

    // Labels are bounded by line (64) and by parse (4 a sample on average).
    std::string many = "m{";
    for (int i = 0; i < 65; i++) many += "l" + std::to_string(i) + "=\"\",";
    auto l = parse_prometheus(many + "} 1\nm{a=\"1\"} 2\n");
    EXPECT_EQ(l.bad_lines, 1u);
    EXPECT_NE(l.first_error.find("more than 64 labels"), std::string::npos) << l.first_error;
    ASSERT_EQ(l.samples.size(), 1u);
    const std::string four = "m{a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=\"5\"} 1\n";
    EXPECT_FALSE(parse_prometheus(four + "m 1\nm 1\nm 1\n", 4).truncated)
        << "5 labels in 4 samples";
    EXPECT_TRUE(parse_prometheus(four + four + four, 3).truncated) << "15 labels, 3 samples";
    // kvsteerd keeps at most kTelemetryMaxSamples samples of the metrics it reads.
    std::string running, at_cap_page;  // one engine a line (one series twice: unknown)
    for (std::size_t i = 0; i <= kTelemetryMaxSamples; i++) {
        if (i == kTelemetryMaxSamples) at_cap_page = running;
        running += "vllm:num_requests_running{engine=\"" + std::to_string(i) + "\"} 1\n";
    }
    PromParse rp;
    const Telemetry at_cap = read_telemetry(at_cap_page, &rp);
    EXPECT_FALSE(rp.truncated);
    EXPECT_EQ(at_cap.running, static_cast<double>(kTelemetryMaxSamples));
    read_telemetry(running, &rp);
    EXPECT_TRUE(rp.truncated);

    std::mt19937 rng(7);
    const std::string alphabet =
        "vllm:sglang_num_requests_running{}=\",\\ \n#\t0123456789.eE+-NaInf\r";
    std::string real = std::string(kVllm) + kSglang;
    for (int i = 0; i < 2000; i++) {
        std::string s;
        if (i % 2) {
            s = real;  // mutate a real page
            for (int k = 0; k < 20; k++) s[rng() % s.size()] = alphabet[rng() % alphabet.size()];
        } else {
            int n = static_cast<int>(rng() % 400);
            for (int k = 0; k < n; k++)
                s += (k % 3) ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() & 0xff);
        }
        auto t = extract_telemetry(parse_prometheus(s));
        expect_sane(t);
    }
}

// kvsteerd reads a page for the telemetry only (read_telemetry: other metrics' lines passed over
// by name): the same values as parsing the whole page, with only the read metrics' samples kept
// and only their bad lines counted.
TEST(Prometheus, ReadingOnlyTheTelemetryGivesTheSameValues) {
    auto same = [](const std::string &page) {
        PromParse kept;
        const Telemetry a = read_telemetry(page, &kept),
                        b = extract_telemetry(parse_prometheus(page));
        EXPECT_EQ(a.flavor, b.flavor) << page;
        EXPECT_EQ(a.running, b.running) << page;
        EXPECT_EQ(a.waiting, b.waiting) << page;
        EXPECT_EQ(a.kv_usage, b.kv_usage) << page;
        EXPECT_EQ(a.prefix_queries, b.prefix_queries) << page;
        EXPECT_EQ(a.prefix_hits, b.prefix_hits) << page;
        EXPECT_EQ(a.hit_rate, b.hit_rate) << page;
        EXPECT_EQ(a.start_time, b.start_time) << page;
        EXPECT_EQ(a.problems, b.problems) << page;
        return kept;
    };
    const PromParse v = same(kVllm);
    EXPECT_EQ(v.bad_lines, 0u);
    EXPECT_LT(v.samples.size(), parse_prometheus(kVllm).samples.size());
    for (const auto &x : v.samples) EXPECT_TRUE(x.name.starts_with("vllm:")) << x.name;
    same(kVllmOld);
    same(kSglang);
    same("vllm:num_requests_running NaN\nvllm:kv_cache_usage_perc 42\n");
    same("vllm:prefix_cache_queries_total 5\nvllm:prefix_cache_hits_total 9\n");
    same("process_start_time_seconds 1.7e9\nsglang:num_queue_reqs 4\n");
    same("<html><body><h1>404 Not Found</h1></body></html>\n");
    const PromParse bad = same(
        "vllm:num_requests_waiting{engine=\"0\"} 5\n"
        "vllm:num_requests_waiting{engine=\"1\",x=\"\\q\"} 9\n"
        "vllm:num_requests_running 3\n"
        "vllm:num_requests_running_other{oops 1\n");
    EXPECT_EQ(bad.bad_lines, 1u) << "the unread metric's bad line is not parsed";
    // The kind comes from samples, not TYPE lines.
    same("# TYPE vllm:x gauge\nsglang:num_queue_reqs 4\n");
    // An unread metric's line is not looked at past its name: a NUL or a 64 KiB line in it is not
    // a bad line (nor one more name among the 256 bad names kept).
    PromParse nul;
    const std::string odd = std::string("vllm:other{a=\"\0\"} 1\n", 20) + "vllm:other " +
                            std::string(70000, '1') + "\nvllm:num_requests_running 2\n";
    EXPECT_EQ(read_telemetry(odd, &nul).running, 2.0);
    EXPECT_EQ(nul.bad_lines, 0u);
    EXPECT_EQ(parse_prometheus(odd).bad_lines, 2u);
    // A page of vLLM metrics none of which is read (or parses) is still vLLM's.
    PromParse p;
    EXPECT_EQ(read_telemetry("vllm:iteration_tokens_total{ 1\n", &p).flavor, ServerFlavor::Vllm);
    // Mutated real pages and noise: never a value out of range.
    std::mt19937 rng(11);
    const std::string alphabet =
        "vllm:sglang_num_requests_running{}=\",\\ \n#\t0123456789.eE+-NaInf\r";
    const std::string real = std::string(kVllm) + kSglang;
    for (int i = 0; i < 2000; i++) {
        std::string s = real;
        for (int k = 0; k < 20; k++) s[rng() % s.size()] = alphabet[rng() % alphabet.size()];
        expect_sane(read_telemetry(s, &p));
    }
}

TEST(Telemetry, HitRateWindowAndReset) {
    HitRateTracker h;
    Telemetry t;
    t.prefix_queries = 1000;
    t.prefix_hits = 500;
    auto u = h.update(t);
    EXPECT_FALSE(u.window_hit_rate);  // first sample: no window yet
    t.prefix_queries = 2000;
    t.prefix_hits = 1400;
    u = h.update(t);
    ASSERT_TRUE(u.window_hit_rate);
    EXPECT_DOUBLE_EQ(*u.window_hit_rate, 0.9);
    EXPECT_DOUBLE_EQ(u.window_queries, 1000);
    u = h.update(t);  // no new queries
    EXPECT_FALSE(u.window_hit_rate);
    t.prefix_queries = 10;  // restart
    t.prefix_hits = 0;
    u = h.update(t);
    EXPECT_TRUE(u.reset);
    Telemetry s;
    s.hit_rate = 0.4;
    EXPECT_DOUBLE_EQ(*HitRateTracker().update(s).window_hit_rate, 0.4);
}

// A restart the counters do not show (they passed their old values while scrapes failed): the
// process start time changed.
TEST(Telemetry, AChangedStartTimeIsARestart) {
    HitRateTracker h;
    Telemetry t;
    t.prefix_queries = 1000;
    t.prefix_hits = 500;
    t.start_time = 1.7e9;
    EXPECT_FALSE(h.update(t).reset);
    t.prefix_queries = 5000;  // grew past the old values, but a new process
    t.prefix_hits = 600;
    t.start_time = 1.7e9 + 60;
    auto u = h.update(t);
    EXPECT_TRUE(u.reset);
    EXPECT_FALSE(u.window_hit_rate) << "no window across a restart";
    t.prefix_queries = 6000;
    t.prefix_hits = 1100;
    u = h.update(t);
    EXPECT_FALSE(u.reset);
    ASSERT_TRUE(u.window_hit_rate);
    EXPECT_DOUBLE_EQ(*u.window_hit_rate, 0.5);
    HitRateTracker g;
    Telemetry s;
    s.hit_rate = 0.4;
    s.start_time = 100;
    EXPECT_FALSE(g.update(s).reset);
    s.start_time = 200;
    EXPECT_TRUE(g.update(s).reset) << "SGLang restarted";
    // Read from the page, for both servers.
    auto v = extract_telemetry(
        parse_prometheus("vllm:num_requests_running 1\nprocess_start_time_seconds 1.7e+09\n"));
    ASSERT_TRUE(v.start_time);
    EXPECT_DOUBLE_EQ(*v.start_time, 1.7e9);
    v = extract_telemetry(
        parse_prometheus("sglang:num_running_reqs 1\nprocess_start_time_seconds 123\n"));
    ASSERT_TRUE(v.start_time);
}
