#include "metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace kvsteer::emu {

void Histogram::observe(double v) {
    const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
    if (it != bounds_.end()) ++counts_[size_t(it - bounds_.begin())];
    ++count_;
    sum_ += v;
}

std::vector<double> ttft_buckets() {
    return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
            1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> latency_buckets() {
    return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
            30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

namespace {

std::string num(double v) {
    return fmt::format("{}", v);
}

void family(std::string &o, const std::string &name, const char *type, const char *help) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void histogram(std::string &o, const std::string &name, const char *help, const std::string &labels,
               const Histogram &h) {
    family(o, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h.bounds().size(); ++i) {
        cum += h.counts()[i];
        o += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, num(h.bounds()[i]),
                         num(double(cum)));
    }
    o += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, num(double(h.count())));
    o += fmt::format("{}_count{{{}}} {}\n", name, labels, num(double(h.count())));
    o += fmt::format("{}_sum{{{}}} {}\n", name, labels, num(h.sum()));
}

std::string escape_label(const std::string &v) {
    std::string o;
    for (char c : v) {
        if (c == '\\' || c == '"') o.push_back('\\');
        if (c == '\n') {
            o += "\\n";
            continue;
        }
        o.push_back(c);
    }
    return o;
}

}  // namespace

std::string render_metrics(const MetricsSnapshot &s) {
    std::string o;
    const std::string L = fmt::format("engine=\"0\",model_name=\"{}\"", escape_label(s.model_name));
    auto gauge = [&](const char *name, const char *help, double v) {
        family(o, name, "gauge", help);
        o += fmt::format("{}{{{}}} {}\n", name, L, num(v));
    };
    auto counter = [&](const char *name, const char *help, uint64_t v) {
        family(o, name, "counter", help);
        o += fmt::format("{}{{{}}} {}\n", name, L, num(double(v)));
    };
    gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.running);
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.waiting);
    gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_usage);
    counter("vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.", s.prefix_queries);
    counter("vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.", s.prefix_hits);
    counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", s.prompt_tokens);
    counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
            s.generation_tokens);
    family(o, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
    o += fmt::format("vllm:request_success_total{{{},finished_reason=\"length\"}} {}\n", L,
                     num(double(s.success_length)));
    if (s.ttft)
        histogram(o, "vllm:time_to_first_token_seconds",
                  "Histogram of time to first token in seconds.", L, *s.ttft);
    if (s.e2e)
        histogram(o, "vllm:e2e_request_latency_seconds",
                  "Histogram of e2e request latency in seconds.", L, *s.e2e);
    if (s.queue)
        histogram(o, "vllm:request_queue_time_seconds",
                  "Histogram of time spent in WAITING phase for request.", L, *s.queue);
    // Emulator-only figures, in their own namespace so nothing mistakes them for vLLM's.
    const std::string K = fmt::format("{},server_id=\"{}\"", L, escape_label(s.server_id));
    family(o, "kvsteer_emu:aborted_requests_total", "counter",
           "Requests dropped by a client disconnect.");
    o += fmt::format("kvsteer_emu:aborted_requests_total{{{}}} {}\n", K, num(double(s.aborted)));
    family(o, "kvsteer_emu:prefix_cache_evicted_blocks_total", "counter",
           "Cached blocks evicted (LRU).");
    o += fmt::format("kvsteer_emu:prefix_cache_evicted_blocks_total{{{}}} {}\n", K,
                     num(double(s.evicted_blocks)));
    family(o, "kvsteer_emu:cache_config_blocks", "gauge",
           "KV cache size in blocks of block_tokens tokens.");
    o += fmt::format("kvsteer_emu:cache_config_blocks{{{},block_tokens=\"{}\"}} {}\n", K,
                     s.block_tokens, num(double(s.cache_blocks)));
    return o;
}

}  // namespace kvsteer::emu
