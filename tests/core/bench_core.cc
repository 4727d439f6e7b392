// Microbenchmarks of the per-request steering work: locate + hash of a first segment, Maglev
// lookup, bounded-load choice, affinity lookup.
// KVS_BENCH_SMOKE=1: very short runs. KVS_BENCH_OUT=path: also write {"core_*_ns": ...} there.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/maglev.h"
#include "kvsteer/core/prefix_hash.h"

namespace kvsteer {
namespace {

// A chat request cut to its first 1,400 bytes (one MSS-sized segment).
std::string first_segment() {
    std::string body =
        R"({"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"max_tokens":256,"messages":[)";
    body +=
        R"({"role":"system","content":"You are a careful assistant. Answer with \"facts\" only.)";
    for (int i = 0; i < 40; ++i)
        body += " Rule " + std::to_string(i) + ": be concise and cite sources.";
    body += R"("},{"role":"user","content":"Summarise the attached document."}]})";
    std::string req =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gpu.example:8000\r\nUser-Agent: bench\r\n"
        "Accept: */*\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    req.resize(1400);
    return req;
}

void BM_LocateHash(benchmark::State &st) {
    const std::string seg = first_segment();
    const std::span<const std::uint8_t> buf(reinterpret_cast<const std::uint8_t *>(seg.data()),
                                            seg.size());
    HashParams p;  // 256-byte prefix, 512-byte blocks
    for (auto _ : st) {
        const RequestView r = locate_request(buf);
        const PrefixHashes h = hash_prompt(p, r.hash_model(), buf.subspan(r.key_offset, r.key_len));
        benchmark::DoNotOptimize(h);
    }
    const RequestView r = locate_request(buf);
    if (r.kind != KeyKind::OpenAIChat) st.SkipWithError("benchmark request not located as chat");
}

std::vector<MaglevBackend> backends(std::uint32_t n) {
    std::vector<MaglevBackend> v;
    for (std::uint32_t i = 0; i < n; ++i) v.push_back({i, 0xabcdef + i * 0x9e3779b97f4a7c15ULL, 1});
    return v;
}

void BM_MaglevLookup(benchmark::State &st) {
    const auto table = build_maglev(backends(8));
    std::uint64_t h = 0x12345678;
    for (auto _ : st) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        benchmark::DoNotOptimize(table[h % table.size()]);
    }
}

void bounded_choice(benchmark::State &st, bool given_totals) {
    const auto n = static_cast<std::uint32_t>(st.range(0));
    const auto table = build_maglev(backends(n));
    std::vector<std::uint32_t> load(n);
    std::vector<std::uint8_t> eligible(n, 1);
    for (std::uint32_t i = 0; i < n; ++i) load[i] = (i * 37) % 11;  // uneven: some spills
    LoadView view{load, eligible};
    if (given_totals) {  // what a caller that keeps the summary per burst pays
        view.n_eligible = n;
        for (const auto l : load) view.total_in_flight += l;
    }
    std::uint64_t h = 0x12345678;
    for (auto _ : st) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        benchmark::DoNotOptimize(choose_bounded(table, h, view, 1.25));
    }
}

void BM_BoundedChoice(benchmark::State &st) {
    bounded_choice(st, false);
}
void BM_BoundedChoiceGivenTotals(benchmark::State &st) {
    bounded_choice(st, true);
}

void BM_AffinityLookup(benchmark::State &st) {
    // A half-full table; lookups of a 3-block prompt whose block 1 is present.
    AffinityBuilder b;
    std::uint64_t x = 0x9e3779b97f4a7c15ULL;
    const std::uint16_t rep[] = {1, 2};
    for (int i = 0; i < 30000; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b.insert(x, rep, 0);
    }
    PrefixHashes h;
    h.prefix = 0x1111;
    h.n_blocks = 3;
    h.blocks = {0x5555, x, 0x7777};
    for (auto _ : st) benchmark::DoNotOptimize(affinity_lookup(b.table(), h));
}

// The chained block hashes alone over a full first flight: 28 blocks of 512 bytes.
void BM_HashPrompt28Blocks(benchmark::State &st) {
    std::vector<std::uint8_t> key(28 * 512 + 100);
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>('a' + i % 26);
    HashParams p;
    p.max_blocks = 28;
    for (auto _ : st) {
        const PrefixHashes h = hash_prompt(p, "m", key);
        benchmark::DoNotOptimize(h);
    }
    if (hash_prompt(p, "m", key).n_blocks != 28) st.SkipWithError("not 28 blocks");
}

BENCHMARK(BM_LocateHash)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_HashPrompt28Blocks)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_MaglevLookup)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_BoundedChoice)->Arg(8)->Arg(1024)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_BoundedChoiceGivenTotals)->Arg(1024)->Unit(benchmark::kNanosecond);
BENCHMARK(BM_AffinityLookup)->Unit(benchmark::kNanosecond);

// Console output as usual, plus each benchmark's CPU time per iteration by name (the median when
// --benchmark_repetitions gives aggregates). CPU rather than wall time: on a shared 2-CPU host
// wall time mostly measures the other processes.
class Collector : public benchmark::ConsoleReporter {
   public:
    std::map<std::string, double> ns;
    void ReportRuns(const std::vector<Run> &runs) override {
        for (const Run &r : runs) {
            if (r.error_occurred) continue;
            const double t = r.GetAdjustedCPUTime();  // Unit is ns for all of them
            if (r.run_type == Run::RT_Iteration && !has_median_.count(r.run_name.str())) {
                ns[r.run_name.str()] = t;
            } else if (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median") {
                ns[r.run_name.str()] = t;
                has_median_.insert(r.run_name.str());
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }

   private:
    std::set<std::string> has_median_;
};

const std::map<std::string, std::string> kKeys = {
    {"BM_LocateHash", "core_locate_hash_ns"},
    {"BM_HashPrompt28Blocks", "core_hash_prompt_28_blocks_ns"},
    {"BM_MaglevLookup", "core_maglev_lookup_ns"},
    {"BM_BoundedChoice/8", "core_bounded_choice_8_ns"},
    {"BM_BoundedChoice/1024", "core_bounded_choice_1024_ns"},
    {"BM_BoundedChoiceGivenTotals/1024", "core_bounded_choice_1024_given_totals_ns"},
    {"BM_AffinityLookup", "core_affinity_lookup_ns"},
};

int write_json(const char *path, const std::map<std::string, double> &ns) {
    FILE *f = std::fopen(path, "w");
    if (f == nullptr) {
        std::fprintf(stderr, "kvsteer-core-bench: cannot write KVS_BENCH_OUT=%s\n", path);
        return 1;
    }
    std::fprintf(f, "{");
    bool first = true;
    for (const auto &[name, key] : kKeys) {
        const auto it = ns.find(name);
        if (it == ns.end()) continue;
        std::fprintf(f, "%s\"%s\": %.2f", first ? "" : ", ", key.c_str(), it->second);
        first = false;
    }
    std::fprintf(f, "}\n");
    return std::fclose(f) == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvsteer

int main(int argc, char **argv) {
    std::vector<char *> args(argv, argv + argc);
    std::string min_time = "--benchmark_min_time=0.005";
    const char *smoke = std::getenv("KVS_BENCH_SMOKE");
    if (smoke != nullptr && std::string(smoke) == "1")
        args.insert(args.begin() + 1, min_time.data());
    int n = static_cast<int>(args.size());
    benchmark::Initialize(&n, args.data());
    if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
    kvsteer::Collector collector;
    benchmark::RunSpecifiedBenchmarks(&collector);
    benchmark::Shutdown();
    if (const char *out = std::getenv("KVS_BENCH_OUT"); out != nullptr && *out != '\0') {
        return kvsteer::write_json(out, collector.ns);
    }
    return 0;
}
