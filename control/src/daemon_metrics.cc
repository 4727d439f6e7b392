// Prometheus text of kvsteerd's own state: backends, decisions, tables, and the dataplane's
// per-reason counters summed over its workers (read from the mmapped kvs_dp_stats).
#include <fmt/format.h>

#include "kvsteer/control/daemon.h"
#include "kvsteer/reasons.h"

namespace kvsteer::control {

std::string Daemon::metrics_text() {
    const auto &backends = core_.backends();
    const auto &c = core_.counters();
    const auto &rs = ring_stats_;
    std::string o;
    auto head = [&](const char *name, const char *type, const char *help) {
        o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    auto val = [&](const std::string &name, const std::string &labels, double v) {
        o += labels.empty() ? fmt::format("{} {}\n", name, v)
                            : fmt::format("{}{{{}}} {}\n", name, labels, v);
    };
    head("kvsteerd_uptime_seconds", "gauge", "Seconds since kvsteerd started.");
    val("kvsteerd_uptime_seconds", "",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    head("kvsteerd_generation", "gauge", "kvs_config generation (bumped on every table change).");
    val("kvsteerd_generation", "", core_.writer().generation());

    head("kvsteerd_backend_up", "gauge",
         "1 when the backend takes new flows (healthy, MAC known, not draining).");
    for (const auto &[id, b] : backends)
        val("kvsteerd_backend_up", fmt::format("backend=\"{}\",id=\"{}\"", b.spec.ep.str(), id),
            b.map_state() == KVS_BE_UP);
    head("kvsteerd_backend_draining", "gauge", "1 when the backend is draining.");
    for (const auto &[id, b] : backends)
        val("kvsteerd_backend_draining", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            b.draining);
    head("kvsteerd_backend_in_flight", "gauge",
         "Bound flows not yet closed (dataplane binds - closes).");
    for (const auto &[id, b] : backends)
        val("kvsteerd_backend_in_flight", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            static_cast<double>(core_.in_flight(b)));
    head("kvsteerd_backend_idle", "gauge",
         "Of those, kept-alive connections idle between requests (not counted as load).");
    for (const auto &[id, b] : backends)
        val("kvsteerd_backend_idle", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            static_cast<double>(core_.idle(b)));
    head("kvsteerd_backend_weight", "gauge", "Maglev weight.");
    for (const auto &[id, b] : backends)
        val("kvsteerd_backend_weight", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            b.spec.weight);
    head("kvsteerd_backend_telemetry", "gauge",
         "Backend's own metrics as last scraped (absent when unknown).");
    for (const auto &entry : backends) {
        // A named reference, not a structured binding: clang 14 cannot capture bindings in lambdas.
        const auto &b = entry.second;
        if (!b.tel_valid) continue;
        auto one = [&](const char *what, const std::optional<double> &v) {
            if (v)
                val("kvsteerd_backend_telemetry",
                    fmt::format("backend=\"{}\",metric=\"{}\"", b.spec.ep.str(), what), *v);
        };
        one("running", b.tel.running);
        one("waiting", b.tel.waiting);
        one("kv_usage", b.tel.kv_usage);
        one("hit_rate", b.window_hit_rate);
    }
    head("kvsteerd_health_checks_total", "counter", "Active health checks by result.");
    for (const auto &[id, b] : backends) {
        val("kvsteerd_health_checks_total",
            fmt::format("backend=\"{}\",result=\"ok\"", b.spec.ep.str()),
            static_cast<double>(b.checks_ok));
        val("kvsteerd_health_checks_total",
            fmt::format("backend=\"{}\",result=\"fail\"", b.spec.ep.str()),
            static_cast<double>(b.checks_failed));
    }
    head("kvsteerd_passive_failures_total", "counter",
         "Intervals with dataplane bind failures counted as failed checks.");
    for (const auto &[id, b] : backends)
        val("kvsteerd_passive_failures_total", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            static_cast<double>(b.passive_failures));
    head("kvsteerd_scrapes_total", "counter", "Backend /metrics scrapes by result.");
    for (const auto &[id, b] : backends) {
        val("kvsteerd_scrapes_total", fmt::format("backend=\"{}\",result=\"ok\"", b.spec.ep.str()),
            static_cast<double>(b.scrapes_ok));
        val("kvsteerd_scrapes_total",
            fmt::format("backend=\"{}\",result=\"fail\"", b.spec.ep.str()),
            static_cast<double>(b.scrapes_failed));
    }
    head("kvsteerd_metrics_unknown_total", "counter",
         "Backend metrics present but unusable, or missing.");
    for (const auto &[id, b] : backends)
        val("kvsteerd_metrics_unknown_total", fmt::format("backend=\"{}\"", b.spec.ep.str()),
            static_cast<double>(b.metrics_unknown));

    // vLLM KV events, only for backends with kv-events=. Block counts are the server's own blocks
    // (token-id hashes): they cannot be matched to the daemon's byte-hash prefixes.
    if (kv_) {
        const auto kv = kv_->all_stats();
        auto each = [&](const char *name, const char *type, const char *help, auto get) {
            head(name, type, help);
            for (const auto &[id, st] : kv) {
                if (const BackendRuntime *b = core_.backend(id))
                    val(name, fmt::format("backend=\"{}\"", b->spec.ep.str()),
                        static_cast<double>(get(st)));
            }
        };
        each("kvsteerd_backend_kv_resident_blocks", "gauge",
             "GPU KV blocks the server holds by its events (stored - removed since the last reset, "
             "floored at 0).",
             [](const KvEventStats &st) { return st.resident_blocks; });
        head("kvsteerd_backend_kv_blocks_total", "counter",
             "GPU KV blocks in the server's BlockStored / BlockRemoved events.");
        for (const auto &[id, st] : kv) {
            const BackendRuntime *b = core_.backend(id);
            if (!b) continue;
            val("kvsteerd_backend_kv_blocks_total",
                fmt::format("backend=\"{}\",event=\"stored\"", b->spec.ep.str()),
                static_cast<double>(st.blocks_stored));
            val("kvsteerd_backend_kv_blocks_total",
                fmt::format("backend=\"{}\",event=\"removed\"", b->spec.ep.str()),
                static_cast<double>(st.blocks_removed));
        }
        each("kvsteerd_backend_kv_clears_total", "counter",
             "AllBlocksCleared events (the server's cache was emptied).",
             [](const KvEventStats &st) { return st.clears; });
        each("kvsteerd_backend_kv_publisher_restarts_total", "counter",
             "KV event sequence numbers that went backwards (the server restarted: cache empty).",
             [](const KvEventStats &st) { return st.publisher_restarts; });
        each("kvsteerd_backend_kv_messages_total", "counter", "KV event messages received.",
             [](const KvEventStats &st) { return st.messages; });
        each("kvsteerd_backend_kv_decode_errors_total", "counter",
             "KV event messages that could not be decoded (skipped).",
             [](const KvEventStats &st) { return st.decode_errors; });
        each("kvsteerd_backend_kv_seq_gaps_total", "counter",
             "Forward jumps in the KV event sequence (batches lost).",
             [](const KvEventStats &st) { return st.seq_gaps; });
        each("kvsteerd_backend_kv_missed_batches_total", "counter",
             "KV event batches skipped by those jumps.",
             [](const KvEventStats &st) { return st.missed_batches; });
        head("kvsteerd_backend_kv_last_event_age_seconds", "gauge",
             "Seconds since the last KV event message (absent before the first).");
        const auto now = std::chrono::steady_clock::now();
        for (const auto &[id, st] : kv) {
            const BackendRuntime *b = core_.backend(id);
            if (b && st.last_message)
                val("kvsteerd_backend_kv_last_event_age_seconds",
                    fmt::format("backend=\"{}\"", b->spec.ep.str()),
                    std::chrono::duration<double>(now - *st.last_message).count());
        }
    }

    auto counter = [&](const char *name, const char *help, std::uint64_t v) {
        head(name, "counter", help);
        val(name, "", static_cast<double>(v));
    };
    counter("kvsteerd_api_requests_total", "API requests.", ctr_.api_requests);
    counter("kvsteerd_api_errors_total", "API requests answered with an error.", ctr_.api_errors);
    counter("kvsteerd_maglev_rebuilds_total", "Maglev tables published.", c.maglev_rebuilds);
    counter("kvsteerd_affinity_publishes_total", "Affinity tables published.",
            c.affinity_publishes);
    counter("kvsteerd_affinity_computes_total",
            "Affinity policy runs (a table is published only when its entries changed).",
            c.affinity_computes);
    counter("kvsteerd_affinity_insert_failed_total", "Affinity entries dropped: probe window full.",
            c.affinity_insert_failed);
    counter("kvsteerd_kv_cache_resets_total",
            "Backend caches marked reset because of KV events (affinity dropped).",
            ctr_.kv_cache_resets);
    counter("kvsteerd_mac_resolve_failed_total", "Backend next-hop MAC lookups that failed.",
            c.mac_resolve_failed);
    counter("kvsteerd_reports_consumed_total", "Binding reports read from the dataplane rings.",
            rs.consumed);
    counter("kvsteerd_reports_invalid_total", "Binding reports with out-of-range fields.",
            rs.invalid);
    head("kvsteerd_reports_dropped_by_dataplane", "gauge",
         "Reports the dataplane dropped on full rings (its counter).");
    val("kvsteerd_reports_dropped_by_dataplane", "", static_cast<double>(rs.producer_dropped));
    head("kvsteerd_affinity_entries", "gauge", "Entries in the active affinity table half.");
    val("kvsteerd_affinity_entries", "", static_cast<double>(core_.desired().size()));
    head("kvsteerd_affinity_index_size", "gauge", "Prefixes the daemon remembers.");
    val("kvsteerd_affinity_index_size", "", static_cast<double>(core_.policy().index_size()));

    const auto &p = core_.policy().counters();
    head("kvsteerd_affinity_decisions_total", "counter", "Affinity policy decisions by kind.");
    const std::pair<const char *, std::uint64_t> dec[] = {
        {"report", p.reports},
        {"report_ignored", p.reports_ignored},
        {"report_unkeyed", p.reports_unkeyed},
        {"key_learned", p.keys_learned},
        {"holder_added", p.holders_added},
        {"became_hot", p.became_hot},
        {"cooled", p.cooled},
        {"held_hot", p.held_hot},
        {"replica_added", p.replicas_added},
        {"replica_dropped", p.replicas_dropped},
        {"over_bound", p.over_bound},
        {"holder_expired", p.holders_expired},
        {"key_expired", p.keys_expired},
        {"key_evicted", p.keys_evicted},
        {"excluded_ineligible", p.excluded_ineligible},
        {"entry_no_backend", p.entries_no_backend},
        {"entry_truncated", p.entries_truncated},
        {"holder_flushed", p.holders_flushed},
        {"ttl_shortened", p.ttl_shortened},
        {"remote_became_hot", p.remote_became_hot},
        {"remote_holder_used", p.remote_holders_used},
        {"remote_entry", p.remote_entries}};
    for (const auto &[k, v] : dec)
        val("kvsteerd_affinity_decisions_total", fmt::format("decision=\"{}\"", k),
            static_cast<double>(v));

    if (std::uint64_t *dp = maps_.dp_stats) {
        head("kvsteer_dataplane_reason_total", "counter",
             "Dataplane counters by reason, summed over workers.");
        for (unsigned r = 0; r < KVS_R__COUNT && r < KVS_STATS_MAX; r++) {
            std::uint64_t sum = 0;
            for (unsigned w = 0; w < KVS_MAX_WORKERS; w++)
                sum += std::atomic_ref<std::uint64_t>(dp[w * KVS_STATS_MAX + r])
                           .load(std::memory_order_relaxed);
            if (sum)
                val("kvsteer_dataplane_reason_total",
                    fmt::format("reason=\"{}\"", kvs_reason_name(r)), static_cast<double>(sum));
        }
    }
    return o;
}

}  // namespace kvsteer::control
