#include "kvsteer/control/telemetry.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace kvsteer::control {

const char *flavor_name(ServerFlavor f) {
    switch (f) {
        case ServerFlavor::Vllm:
            return "vllm";
        case ServerFlavor::Sglang:
            return "sglang";
        default:
            return "unknown";
    }
}

namespace {

enum class Combine { Sum, Max };

// The metrics read, each as the names it has had (the first one present counts).
using Names = std::span<const std::string_view>;
constexpr std::string_view
    kVllmRunning[] = {"vllm:num_requests_running"},
    kVllmWaiting[] = {"vllm:num_requests_waiting"},
    kVllmKvUsage[] = {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"},
    kVllmQueries[] = {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries",
                      "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries"},
    kVllmHits[] = {"vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits",
                   "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits"},
    kSglangRunning[] = {"sglang:num_running_reqs"}, kSglangWaiting[] = {"sglang:num_queue_reqs"},
    kSglangKvUsage[] = {"sglang:token_usage"}, kSglangHitRate[] = {"sglang:cache_hit_rate"},
    kSglangQueries[] = {"sglang:prompt_tokens_total"},
    kSglangHits[] = {"sglang:cached_tokens_total"}, kStartTime[] = {"process_start_time_seconds"};
constexpr Names kRead[] = {kVllmRunning,   kVllmWaiting,   kVllmKvUsage,   kVllmQueries,
                           kVllmHits,      kSglangRunning, kSglangWaiting, kSglangKvUsage,
                           kSglangHitRate, kSglangQueries, kSglangHits,    kStartTime};

// A sample's label set as one string, its labels in name order ({a="1",b="2"} and {b="2",a="1"}
// are one series).
std::string series_of(const PromSample &s) {
    std::vector<const std::pair<std::string, std::string> *> l;
    for (const auto &kv : s.labels) l.push_back(&kv);
    std::sort(l.begin(), l.end(), [](auto *a, auto *b) { return a->first < b->first; });
    std::string key;
    for (const auto *kv : l) (((key += kv->first) += '\0') += kv->second) += '\0';
    return key;
}

// Looks for the first of `names` present in the page; combines its label sets. Values outside
// [0, hi] or not finite, a line of it that did not parse, or one label set twice (a malformed
// page: summed, the series counted double) make the whole metric unknown (a wrong number is
// worse than none).
std::optional<double> pick(const PromParse &page, Names names, double hi, Combine how,
                           std::vector<std::string> &problems) {
    for (auto name : names) {
        bool found = false, bad = false;
        double acc = 0;
        std::unordered_set<std::string> series;
        // A line of it that did not parse: the sum of the others would be wrong, not unknown.
        for (const auto &b : page.bad_names) {
            if (b != name) continue;
            problems.push_back(std::string(name) + ": a line of it could not be parsed");
            return std::nullopt;
        }
        for (const auto &s : page.samples) {
            if (s.name != name) continue;
            if (!std::isfinite(s.value) || s.value < 0 || s.value > hi) {
                if (!bad)
                    problems.push_back(std::string(name) + ": value " + std::to_string(s.value) +
                                       " outside 0.." + std::to_string(hi));
                bad = true;
                continue;
            }
            if (!series.insert(series_of(s)).second) {
                problems.push_back(std::string(name) + ": one label set twice");
                return std::nullopt;
            }
            acc = !found ? s.value : (how == Combine::Sum ? acc + s.value : std::max(acc, s.value));
            found = true;
        }
        if (bad) return std::nullopt;
        if (found) return acc;
    }
    return std::nullopt;
}

bool has_prefix(const PromParse &page, std::string_view p) {
    for (const auto &s : page.samples)
        if (std::string_view(s.name).starts_with(p)) return true;
    return false;
}

Telemetry extract(const PromParse &page, ServerFlavor flavor) {
    Telemetry t;
    constexpr double kCount = 1e9, kCounter = 1e18;
    auto &pr = t.problems;
    t.flavor = flavor;
    if (flavor == ServerFlavor::Vllm) {
        t.running = pick(page, kVllmRunning, kCount, Combine::Sum, pr);
        t.waiting = pick(page, kVllmWaiting, kCount, Combine::Sum, pr);
        t.kv_usage = pick(page, kVllmKvUsage, 1.0, Combine::Max, pr);
        t.prefix_queries = pick(page, kVllmQueries, kCounter, Combine::Sum, pr);
        t.prefix_hits = pick(page, kVllmHits, kCounter, Combine::Sum, pr);
    } else if (flavor == ServerFlavor::Sglang) {
        t.running = pick(page, kSglangRunning, kCount, Combine::Sum, pr);
        t.waiting = pick(page, kSglangWaiting, kCount, Combine::Sum, pr);
        t.kv_usage = pick(page, kSglangKvUsage, 1.0, Combine::Max, pr);
        t.hit_rate = pick(page, kSglangHitRate, 1.0, Combine::Max, pr);
        // Prompt tokens and those served from the cache (every cache_source summed): counters,
        // which a restart takes back to 0. SGLang's page has no process_start_time_seconds (a
        // multiprocess registry) and its hit rate is a gauge: a restarted SGLang was never seen
        // as one, and affinity to its emptied cache lasted until the affinity TTL.
        t.prefix_queries = pick(page, kSglangQueries, kCounter, Combine::Sum, pr);
        t.prefix_hits = pick(page, kSglangHits, kCounter, Combine::Sum, pr);
    }
    if (t.prefix_queries && t.prefix_hits && *t.prefix_hits > *t.prefix_queries) {
        pr.push_back(t.flavor == ServerFlavor::Vllm
                         ? "vllm:prefix_cache_hits: more hits than queries"
                         : "sglang:cached_tokens_total: more than sglang:prompt_tokens_total");
        t.prefix_hits.reset();
        t.prefix_queries.reset();
    }
    if (t.flavor != ServerFlavor::Unknown)
        t.start_time = pick(page, kStartTime, 1e11, Combine::Max, pr);
    return t;
}

}  // namespace

Telemetry extract_telemetry(const PromParse &page) {
    return extract(page, has_prefix(page, "vllm:")     ? ServerFlavor::Vllm
                         : has_prefix(page, "sglang:") ? ServerFlavor::Sglang
                                                       : ServerFlavor::Unknown);
}

Telemetry read_telemetry(std::string_view body, PromParse *page) {
    // The flavour is whichever family's metrics the page has, read or not; the first wins, as
    // extract_telemetry's vLLM-first test.
    bool vllm = false, sglang = false;
    auto keep = [&](std::string_view n, bool sample) {
        vllm |= sample && n.starts_with("vllm:");
        sglang |= sample && n.starts_with("sglang:");
        for (const Names names : kRead)
            for (const std::string_view w : names)
                if (n == w) return true;
        return false;
    };
    *page = parse_prometheus(body, kTelemetryMaxSamples, keep);
    return extract(*page, vllm     ? ServerFlavor::Vllm
                          : sglang ? ServerFlavor::Sglang
                                   : ServerFlavor::Unknown);
}

HitRateTracker::Update HitRateTracker::update(const Telemetry &t) {
    Update u;
    if (t.start_time) {
        const bool restarted = last_start_ && *t.start_time != *last_start_;
        last_start_ = t.start_time;
        if (restarted) {
            // Counters start again from here; no window across the restart.
            u.reset = true;
            u.window_hit_rate = t.hit_rate;
            last_q_ = t.prefix_queries;
            last_h_ = t.prefix_hits;
            return u;
        }
    }
    // Counters going backwards: a restart, also beside a hit-rate gauge (SGLang's), which
    // then gives the window's rate.
    if (t.hit_rate) u.window_hit_rate = t.hit_rate;
    if (!t.prefix_queries || !t.prefix_hits) return u;
    if (last_q_ && last_h_) {
        double dq = *t.prefix_queries - *last_q_, dh = *t.prefix_hits - *last_h_;
        if (dq < 0 || dh < 0) {
            u.reset = true;
        } else if (!t.hit_rate) {
            u.window_queries = dq;
            if (dq > 0) u.window_hit_rate = std::min(1.0, dh / dq);
        }
    }
    last_q_ = t.prefix_queries;
    last_h_ = t.prefix_hits;
    return u;
}

}  // namespace kvsteer::control
