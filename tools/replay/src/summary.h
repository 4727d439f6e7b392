// Per-request JSON lines and the run summary (JSON and a human-readable print).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "replayer.h"

namespace kvsteer::replay {

// Nearest-rank percentile (p in 0..100) of unsorted values; -1 when empty.
double percentile(std::vector<double> v, double p);

nlohmann::json result_json(const Result &r, const ReplayConfig &cfg);

struct BackendCounters {
    std::string url;
    bool ok = false;  // both scrapes worked and the counters were found
    std::string error;
    double queries_before = 0, hits_before = 0, queries_after = 0, hits_after = 0;
};

// The summary. Latencies are in seconds of model time (wall * time_scale); rates per second of
// model time. prefix_cache_hit_rate comes only from the backends' own counters.
nlohmann::json summarize(const std::vector<Result> &results, double wall_s, const ReplayConfig &cfg,
                         const std::vector<BackendCounters> &counters);

std::string human_summary(const nlohmann::json &s);

}  // namespace kvsteer::replay
