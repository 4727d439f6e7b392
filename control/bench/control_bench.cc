// kvsteer-control-bench: the daemon's per-interval costs (figures, not tests).
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/prometheus.h"
#include "kvsteer/control/telemetry.h"

using namespace kvsteer::control;

namespace {

std::vector<BackendSnapshot> eight_backends() {
    std::vector<BackendSnapshot> b;
    for (std::uint16_t i = 0; i < 8; i++) {
        BackendSnapshot s;
        s.id = i;
        s.eligible = true;
        s.in_flight = i;
        b.push_back(s);
    }
    return b;
}

// Reports shaped like a chat trace: a few shared system prompts (first 4 blocks), then
// conversation-specific blocks, 28 chained blocks each.
kvs_bind_report chat_report(std::mt19937_64 &rng) {
    kvs_bind_report r{};
    r.prefix_hash = rng() | 1;
    r.n_blocks = KVS_MAX_REPORT_BLOCKS;
    std::uint64_t sys = rng() % 64;
    for (unsigned i = 0; i < KVS_MAX_REPORT_BLOCKS; i++)
        r.block_hash[i] = i < 4 ? sys * 131 + i + 1 : (rng() | 1);
    r.backend_id = static_cast<std::uint16_t>(rng() % 8);
    return r;
}

void BM_PolicyOnReport(benchmark::State &st) {
    AffinityPolicy pol;
    pol.update_backends(eight_backends(), 0);
    std::mt19937_64 rng(1);
    std::uint64_t now = 1;
    for (auto _ : st) {
        auto r = chat_report(rng);
        pol.on_report(r, now += 1000000);
    }
    st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_PolicyOnReport);

// One affinity round over a full index (the daemon runs it each report interval with reports).
void BM_PolicyCompute(benchmark::State &st) {
    PolicyParams p;
    p.index_max = static_cast<std::uint32_t>(st.range(0));
    AffinityPolicy pol(p);
    pol.update_backends(eight_backends(), 0);
    std::mt19937_64 rng(2);
    std::uint64_t now = 1;
    while (pol.index_size() < p.index_max) pol.on_report(chat_report(rng), now += 1000000);
    for (auto _ : st) benchmark::DoNotOptimize(pol.compute(now += 1000));
}
BENCHMARK(BM_PolicyCompute)->Arg(16384)->Arg(131072)->Unit(benchmark::kMillisecond);

// A vLLM page's shape: per engine, the gauges read and a histogram no one reads.
std::string vllm_page() {
    std::string page;
    for (int e = 0; e < 4; e++) {
        page += "vllm:num_requests_running{engine=\"" + std::to_string(e) +
                "\",model_name=\"m\"} 3.0\n";
        page += "vllm:kv_cache_usage_perc{engine=\"" + std::to_string(e) +
                "\",model_name=\"m\"} 0.42\n";
        for (int b = 0; b < 30; b++)
            page += "vllm:time_to_first_token_seconds_bucket{engine=\"" + std::to_string(e) +
                    "\",le=\"" + std::to_string(b * 0.01) + "\",model_name=\"m\"} " +
                    std::to_string(b) + "\n";
    }
    return page;
}

// Every line parsed, then the telemetry picked out.
void BM_ParseVllmMetrics(benchmark::State &st) {
    const std::string page = vllm_page();
    for (auto _ : st) benchmark::DoNotOptimize(extract_telemetry(parse_prometheus(page)));
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * page.size()));
}
BENCHMARK(BM_ParseVllmMetrics);

// What kvsteerd does: only the metrics read are parsed.
void BM_ReadVllmTelemetry(benchmark::State &st) {
    const std::string page = vllm_page();
    PromParse p;
    for (auto _ : st) benchmark::DoNotOptimize(read_telemetry(page, &p));
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * page.size()));
}
BENCHMARK(BM_ReadVllmTelemetry);

}  // namespace

BENCHMARK_MAIN();
