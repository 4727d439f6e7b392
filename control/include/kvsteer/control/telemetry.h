// Backend telemetry in vLLM and SGLang metric names, extracted from a parsed /metrics page.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvsteer/control/prometheus.h"

namespace kvsteer::control {

enum class ServerFlavor : std::uint8_t { Unknown, Vllm, Sglang };
const char *flavor_name(ServerFlavor f);

// Every field is "unknown" (nullopt) unless the page gave a sane value for it.
struct Telemetry {
    ServerFlavor flavor = ServerFlavor::Unknown;
    std::optional<double> running;         // requests being processed
    std::optional<double> waiting;         // requests queued
    std::optional<double> kv_usage;        // KV cache fill, 0..1
    std::optional<double> prefix_queries;  // vLLM counter (tokens queried), cumulative
    std::optional<double> prefix_hits;     // vLLM counter (tokens hit), cumulative
    std::optional<double> hit_rate;        // SGLang gauge, 0..1
    std::vector<std::string> problems;  // "name: why", one per metric that was present but unusable
};

Telemetry extract_telemetry(const PromParse &page);

// Hit rate over the last scrape window from cumulative counters (vLLM) or the gauge (SGLang).
// Detects counter resets (backend restart: its cache is empty again).
class HitRateTracker {
   public:
    struct Update {
        std::optional<double>
            window_hit_rate;  // hits/queries over the window; nullopt if no queries
        bool reset = false;   // counters went backwards
        double window_queries = 0;
    };
    Update update(const Telemetry &t);

   private:
    std::optional<double> last_q_, last_h_;
};

}  // namespace kvsteer::control
