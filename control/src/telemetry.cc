#include "kvsteer/control/telemetry.h"

#include <cmath>
#include <initializer_list>
#include <string_view>

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

// Looks for the first of `names` present in the page; combines its label sets. Values outside
// [0, hi] or not finite make the whole metric unknown (a wrong number is worse than none).
std::optional<double> pick(const PromParse &page, std::initializer_list<std::string_view> names,
                           double hi, Combine how, std::vector<std::string> &problems) {
    for (auto name : names) {
        bool found = false, bad = false;
        double acc = 0;
        for (const auto &s : page.samples) {
            if (s.name != name) continue;
            if (!std::isfinite(s.value) || s.value < 0 || s.value > hi) {
                if (!bad)
                    problems.push_back(std::string(name) + ": value " + std::to_string(s.value) +
                                       " outside 0.." + std::to_string(hi));
                bad = true;
                continue;
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

}  // namespace

Telemetry extract_telemetry(const PromParse &page) {
    Telemetry t;
    constexpr double kCount = 1e9, kCounter = 1e18;
    auto &pr = t.problems;
    if (has_prefix(page, "vllm:")) {
        t.flavor = ServerFlavor::Vllm;
        t.running = pick(page, {"vllm:num_requests_running"}, kCount, Combine::Sum, pr);
        t.waiting = pick(page, {"vllm:num_requests_waiting"}, kCount, Combine::Sum, pr);
        t.kv_usage = pick(page, {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}, 1.0,
                          Combine::Max, pr);
        t.prefix_queries =
            pick(page,
                 {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries",
                  "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries"},
                 kCounter, Combine::Sum, pr);
        t.prefix_hits = pick(page,
                             {"vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits",
                              "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits"},
                             kCounter, Combine::Sum, pr);
        if (t.prefix_queries && t.prefix_hits && *t.prefix_hits > *t.prefix_queries) {
            pr.push_back("vllm:prefix_cache_hits: more hits than queries");
            t.prefix_hits.reset();
            t.prefix_queries.reset();
        }
    } else if (has_prefix(page, "sglang:")) {
        t.flavor = ServerFlavor::Sglang;
        t.running = pick(page, {"sglang:num_running_reqs"}, kCount, Combine::Sum, pr);
        t.waiting = pick(page, {"sglang:num_queue_reqs"}, kCount, Combine::Sum, pr);
        t.kv_usage = pick(page, {"sglang:token_usage"}, 1.0, Combine::Max, pr);
        t.hit_rate = pick(page, {"sglang:cache_hit_rate"}, 1.0, Combine::Max, pr);
    }
    return t;
}

HitRateTracker::Update HitRateTracker::update(const Telemetry &t) {
    Update u;
    if (t.hit_rate) {
        u.window_hit_rate = t.hit_rate;
        return u;
    }
    if (!t.prefix_queries || !t.prefix_hits) return u;
    if (last_q_ && last_h_) {
        double dq = *t.prefix_queries - *last_q_, dh = *t.prefix_hits - *last_h_;
        if (dq < 0 || dh < 0) {
            u.reset = true;
        } else {
            u.window_queries = dq;
            if (dq > 0) u.window_hit_rate = std::min(1.0, dh / dq);
        }
    }
    last_q_ = t.prefix_queries;
    last_h_ = t.prefix_hits;
    return u;
}

}  // namespace kvsteer::control
