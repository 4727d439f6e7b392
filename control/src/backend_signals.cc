// DaemonCore: what the backends tell it. Active health checks (rise/fall), passive evidence
// (the dataplane's bind failures in kvs_be_load), and scraped telemetry (load, hit rate, cache
// resets, queue-cap).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kvsteer/control/daemon_core.h"

namespace kvsteer::control {

namespace {

template <typename T>
T load_relaxed(T &x) {
    return std::atomic_ref<T>(x).load(std::memory_order_relaxed);
}

// A passive health interval fails only with failures at least 1/kPassiveFailShare of the flows
// bound in it.
constexpr std::uint64_t kPassiveFailShare = 10;

}  // namespace

void DaemonCore::log_transition(const BackendRuntime &b, bool up, const std::string &why) {
    if (up) {
        ctr_.backend_up++;
        spdlog::info("backend {} {} is up", b.id, b.spec.ep.str());
    } else {
        ctr_.backend_down++;
        spdlog::warn("backend {} {} is down: {}", b.id, b.spec.ep.str(), why);
    }
}

void DaemonCore::health_check(std::uint16_t id, bool ok, const std::string &why,
                              std::uint64_t now_ns) {
    auto it = backends_.find(id);
    if (it == backends_.end()) return;
    BackendRuntime &b = it->second;
    // A backend without a MAC cannot be written up: checks retry the lookup, backing off (each
    // is a neighbour-table dump on the event loop: a check of every unresolved backend dumped it
    // once a backend an interval).
    bool changed = false;
    if (!b.mac && resolve_mac_ && now_ns >= b.mac_retry_ns) {
        std::string e;
        b.mac = resolve_mac_(b.spec.ep, &e);
        constexpr std::uint64_t kFirstGapNs = 250'000'000, kMaxGapNs = 2'000'000'000;
        b.mac_retry_gap_ns =
            b.mac ? 0
                  : std::min(kMaxGapNs, b.mac_retry_gap_ns ? 2 * b.mac_retry_gap_ns : kFirstGapNs);
        b.mac_retry_ns = now_ns + b.mac_retry_gap_ns;
        if (!b.mac && ok) {
            ctr_.mac_resolve_failed++;
            b.last_error = "next-hop MAC: " + e;
            spdlog::warn("backend {} {}: cannot resolve its MAC: {}", b.id, b.spec.ep.str(), e);
        } else if (b.mac) {
            spdlog::info("backend {} {}: next-hop MAC {}", b.id, b.spec.ep.str(),
                         format_mac(*b.mac));
            changed = true;
        }
    }
    if (cfg_.health_interval_ms) {
        ctr_.health_checks++;
        if (ok) {
            b.checks_ok++;
            if (b.mac && b.health.up()) b.last_error.clear();  // shows only a current problem
        } else {
            b.checks_failed++;
            ctr_.health_failures++;
            b.last_error = "health: " + why;
        }
        if (b.health.observe(ok, {cfg_.health_rise, cfg_.health_fall})) {
            changed = true;
            log_transition(b, b.health.up(), why);
        }
    }
    if (changed) republish(now_ns);
}

void DaemonCore::passive_health(std::uint64_t now_ns) {
    bool changed = false;
    for (auto &[id, b] : backends_) {
        auto &l = maps_.load[id];
        std::uint64_t fails = load_relaxed(l.bind_fail_rst) + load_relaxed(l.bind_fail_timeout);
        std::uint64_t binds = load_relaxed(l.binds);
        std::uint64_t delta = fails >= b.prev_bind_fails ? fails - b.prev_bind_fails : 0;
        std::uint64_t bound = binds >= b.prev_binds ? binds - b.prev_binds : 0;
        b.prev_bind_fails = fails;
        b.prev_binds = binds;
        if (!cfg_.health_passive_fails) continue;
        if (!b.health.up()) {
            b.passive_streak = 0;  // a streak from before it went down is not carried past it
            // With active checks off nothing else can bring it back: retry after `rise` intervals.
            if (!cfg_.health_interval_ms && ++b.passive_hold >= cfg_.health_rise) {
                b.passive_hold = 0;
                b.health = HealthState(true);
                log_transition(b, true, "passive hold over");
                changed = true;
            }
            continue;
        }
        // Failed: at least health-passive-fails failures, and at least a tenth of the flows it
        // bound meanwhile (a busy backend's rare SYN timeout, one in thousands, took it down).
        if (delta >= cfg_.health_passive_fails && delta * kPassiveFailShare >= bound) {
            b.passive_streak++;
            b.passive_failures++;
            ctr_.passive_failures++;
            b.last_error = "passive: " + std::to_string(delta) +
                           " backend SYN failures (RST/timeout) in one interval";
            spdlog::debug("backend {} {}: {} dataplane bind failures in one interval ({} in a row)",
                          id, b.spec.ep.str(), delta, b.passive_streak);
        } else if (bound > 0) {
            b.passive_streak = 0;  // flows bound fine: the failures were transient
        }
        if (b.passive_streak >= cfg_.health_fall) {
            b.passive_streak = 0;
            b.passive_hold = 0;
            b.health.force_down();
            log_transition(b, false, b.last_error);
            changed = true;
        }
    }
    if (changed) republish(now_ns);
}

void DaemonCore::scrape_failed(std::uint16_t id, const std::string &why) {
    auto it = backends_.find(id);
    if (it == backends_.end()) return;
    BackendRuntime &b = it->second;
    ctr_.scrapes++;
    b.scrapes_failed++;
    ctr_.scrape_failures++;
    if (b.tel_valid || b.scrapes_failed == 1)
        spdlog::warn("backend {} {}: metrics scrape failed: {}", b.id, b.spec.ep.str(), why);
    b.tel_valid = false;
    b.window_hit_rate.reset();
    after_scrape(b);
}

void DaemonCore::scrape(std::uint16_t id, Telemetry tel, std::size_t bad_lines,
                        const std::string &parse_error) {
    auto it = backends_.find(id);
    if (it == backends_.end()) return;
    BackendRuntime &b = it->second;
    ctr_.scrapes++;
    b.scrapes_ok++;
    b.tel = std::move(tel);
    b.tel_valid = true;
    ctr_.metrics_parse_bad_lines += bad_lines;
    std::size_t unknown = b.tel.problems.size() + (b.tel.flavor == ServerFlavor::Unknown ? 1 : 0);
    if (unknown) {
        b.metrics_unknown += unknown;
        ctr_.metrics_unknown += unknown;
        if (!b.tel_problem_logged) {
            b.tel_problem_logged = true;
            spdlog::warn(
                "backend {} {}: metrics partly unknown ({}{}{}); further problems are only "
                "counted",
                b.id, b.spec.ep.str(),
                b.tel.flavor == ServerFlavor::Unknown ? "no vllm: or sglang: metrics" : "",
                b.tel.problems.empty() ? "" : b.tel.problems.front(),
                parse_error.empty() ? "" : "; " + parse_error);
        }
    }
    auto u = b.hit.update(b.tel);
    b.window_hit_rate = u.window_hit_rate;
    if (u.reset) {
        b.cache_reset = true;
        spdlog::info("backend {} {}: cache counters reset (restart?): forgetting its prefixes",
                     b.id, b.spec.ep.str());
    }
    after_scrape(b);
}

void DaemonCore::after_scrape(BackendRuntime &b) {
    // One writer per field: kvsteerd owns ext_queue / ext_running; unknown writes 0.
    auto &l = maps_.load[b.id];
    auto q =
        b.tel_valid && b.tel.waiting ? static_cast<std::uint64_t>(std::llround(*b.tel.waiting)) : 0;
    auto run =
        b.tel_valid && b.tel.running ? static_cast<std::uint64_t>(std::llround(*b.tel.running)) : 0;
    std::atomic_ref<__u64>(l.ext_queue).store(q, std::memory_order_relaxed);
    std::atomic_ref<__u64>(l.ext_running).store(run, std::memory_order_relaxed);
    // queue-cap: a backend that queues requests itself takes no new affinity flows beyond
    // what it has (max_load = its requests in flight, at least 1) until its queue drains.
    std::uint32_t cap = 0;
    if (cfg_.queue_cap && b.tel_valid && b.tel.waiting && *b.tel.waiting >= cfg_.queue_cap)
        cap = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(active(b), 1, 0xffffffffu));
    if (cap != b.queue_max_load) {
        spdlog::debug("backend {} {}: queue {} -> max_load {}", b.id, b.spec.ep.str(), q,
                      cap ? std::to_string(cap) : "bound");
        b.queue_max_load = cap;
        if (batch_depth_)
            batch_backends_ = true;
        else
            publish_backends(false);
    }
}

void DaemonCore::mark_cache_reset(std::uint16_t id) {
    auto it = backends_.find(id);
    if (it != backends_.end()) it->second.cache_reset = true;
}

}  // namespace kvsteer::control
