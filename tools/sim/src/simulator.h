// Discrete-event simulation of one routing policy in front of N emulated GPU servers, each a
// kvsteer_model Scheduler (the emulator's own model): TTFT, queueing and cache hits come from it.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "kvsteer/model/scheduler.h"
#include "policy.h"
#include "workload.h"

namespace kvsteer::sim {

struct ServerConfig {
    model::SchedulerConfig sched;
    model::CacheConfig cache;
    model::CostConfig cost;
};

struct RunConfig {
    std::string policy;
    uint32_t servers = 8;
    ServerConfig server;
    PolicyParams params;
};

struct RunResult {
    std::string policy;
    uint32_t servers = 0;
    uint64_t requests = 0, completed = 0, rejected = 0;
    // Token hit rate counted by the servers' own caches (vLLM prefix_cache_hits / queries).
    uint64_t hit_tokens = 0, query_tokens = 0;
    double hit_rate = 0;
    double makespan_s = 0;  // first arrival to last finish
    double req_per_s = 0;
    double tok_per_s = 0;  // prompt + output tokens of completed requests per second
    double out_tok_per_s = 0;
    double ttft_mean_s = 0, ttft_p50_s = 0, ttft_p90_s = 0, ttft_p99_s = 0;
    double e2e_mean_s = 0;
    double imbalance = 0;          // max / mean busy time over servers
    std::vector<double> busy_s;    // per server
    std::vector<uint64_t> routed;  // requests sent to each server
    std::map<std::string, double> counters;
    double wall_s = 0;  // simulation run time
};

// Runs `cfg.policy` over the workload with the given arrival times (one per request, seconds).
// Throws std::invalid_argument for an unknown policy or a size mismatch.
// `on_end` sees the servers as they are when the run ends (tests read the caches' own counters).
RunResult simulate(const Workload &w, std::span<const double> arrivals, const RunConfig &cfg,
                   const std::function<void(double)> &progress = {},
                   const std::function<void(const Cluster &)> &on_end = {});

}  // namespace kvsteer::sim
