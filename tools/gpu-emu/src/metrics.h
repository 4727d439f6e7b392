// Prometheus text exposition in vLLM's metric names (prometheus_client style: counters carry
// the _total suffix in # HELP/# TYPE and samples; labels engine="0",model_name="...").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kvsteer::emu {

class Histogram {
   public:
    explicit Histogram(std::vector<double> bounds)
        : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
    void observe(double v);
    const std::vector<double> &bounds() const { return bounds_; }
    const std::vector<uint64_t> &counts() const { return counts_; }  // per bucket, not cumulative
    uint64_t count() const { return count_; }
    double sum() const { return sum_; }

   private:
    std::vector<double> bounds_;
    std::vector<uint64_t> counts_;
    uint64_t count_ = 0;
    double sum_ = 0.0;
};

// vLLM's buckets for vllm:time_to_first_token_seconds.
std::vector<double> ttft_buckets();
// vLLM's buckets for request latency histograms (e2e, queue time).
std::vector<double> latency_buckets();

struct MetricsSnapshot {
    std::string model_name;
    std::string server_id;
    uint32_t running = 0;
    uint32_t waiting = 0;
    double kv_usage = 0.0;
    uint64_t prefix_queries = 0;
    uint64_t prefix_hits = 0;
    uint64_t prompt_tokens = 0;
    uint64_t generation_tokens = 0;
    uint64_t success_length = 0;  // finished requests (finish_reason "length": all of ours)
    uint64_t aborted = 0;
    uint64_t evicted_blocks = 0;
    uint64_t cache_blocks = 0;
    uint32_t block_tokens = 0;
    const Histogram *ttft = nullptr;
    const Histogram *e2e = nullptr;
    const Histogram *queue = nullptr;
};

std::string render_metrics(const MetricsSnapshot &s);

}  // namespace kvsteer::emu
