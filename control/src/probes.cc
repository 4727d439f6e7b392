// kvsteerd's probes: two prober threads (health checks, /metrics scrapes) that only do network
// I/O and parsing, and the loop's side that hands each result to DaemonCore.
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "mono_clock.h"
#include "publish_batch.h"
#include "kvsteer/control/daemon.h"
#include "kvsteer/control/prometheus.h"

namespace kvsteer::control {

void Daemon::update_targets(bool kick) {
    std::lock_guard lk(mu_);
    if (kick) kick_[0] = kick_[1] = true;
    targets_.clear();
    for (const auto &[id, b] : core_.backends()) targets_.push_back({id, b.incarnation, b.spec.ep});
    cv_.notify_all();
}

void Daemon::prober_loop(Probe kind) {
    const bool health = kind == Probe::Health;
    const std::size_t k = health ? 0 : 1;
    // Copies: the loop thread owns the live configuration.
    const std::uint32_t health_ms = cfg().health_interval_ms, tel_ms = cfg().telemetry_interval_ms;
    const auto interval =
        std::chrono::milliseconds(health ? (health_ms ? health_ms : 1000) : tel_ms);
    // Never past the interval: with checks off (health-interval 0, the probes only retry MAC
    // lookups every 1 s) health-timeout is not bounded by it in the configuration, and a hung
    // backend held the shutdown (which joins this thread) for up to 600 s.
    const auto timeout =
        health ? std::chrono::milliseconds(
                     std::min<std::uint32_t>(cfg().health_timeout_ms, health_ms ? health_ms : 1000))
               : std::chrono::milliseconds(std::clamp<std::uint32_t>(tel_ms * 4 / 5, 100, 5000));
    const std::string path = health ? cfg().health_path : cfg().telemetry_path;
    while (!stop_.load()) {
        std::vector<ProbeTarget> t;
        {
            std::lock_guard lk(mu_);
            t = targets_;
            kick_[k] = false;
        }
        auto begin = std::chrono::steady_clock::now();
        std::vector<HttpRequest> reqs;
        for (const auto &x : t) reqs.push_back({x.ep, path});
        auto res = reqs.empty() ? std::vector<HttpResult>{} : http_get_many(reqs, timeout);
        std::vector<ProbeResult> out;
        for (std::size_t i = 0; i < t.size(); i++) {
            ProbeResult r{kind, t[i].id, t[i].incarnation, t[i].ep, std::move(res[i]), std::nullopt,
                          0,    {}};
            if (!health && r.http.ok && r.http.status == 200) {
                PromParse page;
                Telemetry tel = read_telemetry(r.http.body, &page);
                r.bad_lines = page.bad_lines;
                r.parse_error = page.first_error;
                if (page.truncated) {
                    // Not read whole: sums over part of it would be wrong values, not unknown
                    // ones (before, the cut was neither counted nor logged).
                    r.http.ok = false;
                    r.http.error = "metrics page too large (over " +
                                   std::to_string(kTelemetryMaxSamples) +
                                   " samples of the metrics read, or their labels): not used";
                } else {
                    r.tel = std::move(tel);
                }
            }
            // Nothing reads a body after this: it left with the result and stayed in results_
            // until the loop applied it (a round's pages, up to 8 MiB each, held twice).
            std::string().swap(r.http.body);
            out.push_back(std::move(r));
        }
        {
            std::unique_lock lk(mu_);
            for (auto &r : out) results_.push_back(std::move(r));
        }
        std::uint64_t one = 1;
        [[maybe_unused]] auto w = write(wake_fd_, &one, sizeof one);
        std::unique_lock lk(mu_);
        cv_.wait_until(lk, begin + interval, [&] { return stop_.load() || kick_[k]; });
    }
}

bool Daemon::still_probed(const ProbeResult &r) const {
    const BackendRuntime *b = core_.backend(r.id);
    // Else removed or replaced meanwhile (also when re-added under the same id and address: the
    // result was made for the earlier one, the new one starts from its own checks).
    return b && b->incarnation == r.incarnation && b->spec.ep == r.ep;
}

void Daemon::on_health_check(const ProbeResult &r) {
    if (!still_probed(r)) return;
    const bool ok = r.http.ok && r.http.status >= 200 && r.http.status < 300;
    core_.health_check(r.id, ok, r.http.ok ? "HTTP " + std::to_string(r.http.status) : r.http.error,
                       mono_ns());
}

void Daemon::on_scrape(ProbeResult &r) {
    if (!still_probed(r)) return;
    if (!r.http.ok || r.http.status != 200 || !r.tel)
        core_.scrape_failed(r.id,
                            r.http.ok ? "HTTP " + std::to_string(r.http.status) : r.http.error);
    else
        core_.scrape(r.id, std::move(*r.tel), r.bad_lines, r.parse_error);
}

void Daemon::apply_results() {
    std::deque<ProbeResult> got;
    {
        std::lock_guard lk(mu_);
        got.swap(results_);
    }
    std::size_t local = 0;
    std::string why;
    // The round's health transitions and queue-cap changes are published once, after it (also
    // when a result's handling throws).
    const PublishBatch batch(core_, "probe results");
    for (auto &r : got) {
        // This host could not make the request (out of descriptors or buffers): nothing is known
        // of the backend, so no verdict (a failed check here took healthy backends down).
        if (r.http.local) {
            local++;
            why = r.http.error;
            continue;
        }
        // One result's failure costs only itself (an exception left the loop, and the rest of
        // the round's verdicts were dropped unapplied).
        try {
            if (r.kind == Probe::Health)
                on_health_check(r);
            else
                on_scrape(r);
        } catch (const std::exception &e) {
            spdlog::error("probe result of backend {}: {} (the round's others are applied)", r.id,
                          e.what());
        }
    }
    const auto now = std::chrono::steady_clock::now();
    if (local && now - local_probe_logged_ >= std::chrono::seconds(10)) {
        local_probe_logged_ = now;
        spdlog::warn(
            "probes: {} health check(s) or scrape(s) not made: this host is short of sockets or "
            "buffers ({}); no verdict for them (raise LimitNOFILE / RLIMIT_NOFILE)",
            local, why);
    }
}

}  // namespace kvsteer::control
