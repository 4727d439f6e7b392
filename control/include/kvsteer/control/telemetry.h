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
    std::optional<double> running;   // requests being processed
    std::optional<double> waiting;   // requests queued
    std::optional<double> kv_usage;  // KV cache fill, 0..1
    // Counters, cumulative: vLLM's prefix-cache tokens queried and hit; SGLang's prompt tokens
    // and those served from the cache (sglang:prompt_tokens_total, sglang:cached_tokens_total).
    std::optional<double> prefix_queries;
    std::optional<double> prefix_hits;
    std::optional<double> hit_rate;  // SGLang gauge, 0..1
    // process_start_time_seconds (Unix time; Prometheus' process collector, vLLM's page; SGLang's
    // has none, its counters going backwards tell its restarts): a change is a restart, whatever
    // the counters did meanwhile.
    std::optional<double> start_time;
    std::vector<std::string> problems;  // "name: why", one per metric that was present but unusable
};

Telemetry extract_telemetry(const PromParse &page);

// A /metrics page read for its telemetry only (parse_prometheus keeping the metrics read, the
// rest passed over by name): the values extract_telemetry(parse_prometheus(body)) gives (the
// flavour from any sample line's metric name, parsed or not), ~5x faster on a vLLM-shaped page
// (BM_ReadVllmTelemetry against BM_ParseVllmMetrics in the control bench). `page` gets what was
// parsed (bad lines, truncation).
// At most kTelemetryMaxSamples samples of the metrics read (real servers have tens): a page with
// more is `truncated` and not used.
constexpr std::size_t kTelemetryMaxSamples = 20000;
Telemetry read_telemetry(std::string_view body, PromParse *page);

// Hit rate over the last scrape window from cumulative counters (vLLM) or the gauge (SGLang).
// Detects a restart (its cache is empty again): the counters going backwards, or the process
// start time changing (a restarted server's counters may pass their old values while scrapes
// failed, and SGLang's hit rate is a gauge).
class HitRateTracker {
   public:
    struct Update {
        std::optional<double>
            window_hit_rate;  // hits/queries over the window; nullopt if no queries
        bool reset = false;   // counters went backwards, or the process start time changed
        double window_queries = 0;
    };
    Update update(const Telemetry &t);

   private:
    std::optional<double> last_q_, last_h_, last_start_;
};

}  // namespace kvsteer::control
