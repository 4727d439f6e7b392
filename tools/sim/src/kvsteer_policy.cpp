// kvsteer as deployed: the dataplane's own choice function (kvsteer/core/choose.h) over
// tables shaped like the pinned maps, fed by first-flight hashing; and kvsteerd's DaemonCore
// (control/: backend registry, AffinityPolicy, the tick, table publishing) writing those tables,
// run on the daemon's intervals and seeing only binding reports and scraped counters.
#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_map>

#include "kvsteer/control/config.h"
#include "kvsteer/control/daemon_core.h"
#include "kvsteer/core/choose.h"
#include "kvsteer/core/flight_key.h"
#include "policy.h"
#include "sim_maglev.h"

namespace kvsteer::sim {
namespace {

class Kvsteer final : public Policy {
   public:
    Kvsteer(uint32_t servers, const PolicyParams &p)
        : p_(p),
          n_(servers),
          backends_(KVS_MAX_BACKENDS),
          load_(KVS_MAX_BACKENDS),
          maglev_(2 * KVS_MAGLEV_SIZE),
          affinity_(2 * KVS_AFFINITY_SLOTS),
          t_(tables()),
          scratch_(std::make_unique<ChooseScratch>()),
          daemon_(daemon_config(servers, p), t_) {
        daemon_.start(dns(0));    // kvs_config, backend slots, lookup table, an empty affinity half
        hp_ = hash_params(cfg_);  // as the dataplane reads kvs_config
    }

    std::string name() const override {
        if (!p_.affinity) return "kvsteer-maglev";
        if (p_.bound_slack > 0) return "kvsteer-slack";
        return p_.session_headers.empty() ? "kvsteer" : "kvsteer-session";
    }

    uint32_t choose(uint32_t idx, const SimRequest &r, double now, const Cluster &) override {
        const uint64_t tuple_hash = (uint64_t(idx) + 1) * 0x9e3779b97f4a7c15ULL;
        auto bytes = flight_bytes(r.first_flight, cfg_.max_held_bytes);
        RequestView v = locate_request(bytes);
        if (v.chunked) {  // keyed without the chunk framing, as the dataplane does
            dechunked_.assign(bytes.begin(), bytes.end());
            dechunk_request(dechunked_, v);
            bytes = dechunked_;
        }
        const FlightKey k = key_flight(hp_, session_headers(cfg_), v, bytes, tuple_hash | 1);
        std::uint32_t slot = SessionLimiter::kNone;
        const PrefixHashes h = steering_hashes(k, limiter_, session_cap(cfg_), slot);
        const bool counted = slot != SessionLimiter::kNone;
        if (counted) session_of_[idx] = slot;
        // The intake gate's clock: the dataplane's is real time, as the daemon's (dns).
        scratch_->now_ns = dns(now) + 1;
        const Choice ch = choose_backend(t_, h, tuple_hash, {}, *scratch_);
        const uint32_t id = ch.backend < n_ ? ch.backend : 0;
        ++via_[std::min<uint32_t>(ch.via, 4)];
        ++kinds_[std::min<uint32_t>(uint32_t(k.kind), 3)];
        ++session_[uint32_t(k.session.status)];
        session_counted_ += counted;
        if (p_.affinity) {
            // Steered by its session key: the key is learnt as the prefix, and the prompt's
            // blocks too (that backend now caches them, for requests without the header).
            kvs_bind_report rep{};
            rep.ts_ns = dns(now);
            rep.prefix_hash = h.prefix;
            std::copy(k.hashes.blocks.begin(), k.hashes.blocks.end(), rep.block_hash);
            rep.prompt_bytes = k.prompt_bytes;
            rep.n_blocks = uint16_t(k.hashes.n_blocks);
            rep.backend_id = uint16_t(id);
            rep.key_kind = uint8_t(k.kind);
            rep.via = ch.via;
            pending_.push_back(rep);
        }
        return id;
    }

    // The dataplane counts binds, XDP counts closes.
    void on_bound(uint32_t, uint32_t s, double) override { ++load_[s].binds; }
    void on_finished(uint32_t idx, uint32_t s, double) override {
        ++load_[s].closes;
        release_session(idx);
    }
    // Its session's in-flight count goes (it was held for good). Its report stays: the
    // dataplane reports a binding before the server answers.
    void on_rejected(uint32_t idx, uint32_t, double) override { release_session(idx); }
    void release_session(uint32_t idx) {
        if (auto it = session_of_.find(idx); it != session_of_.end()) {
            limiter_.release(it->second);
            session_of_.erase(it);
        }
    }

    double next_tick() const override {
        if (!p_.affinity) return Policy::next_tick();
        return std::min(next_report_, next_scrape_);  // (kvsteer-slack retunes on the report tick)
    }

    // kvsteerd's loop: scrapes on the telemetry interval; on the report interval the reports
    // since the last round (its rings), then DaemonCore::tick (which decides whether to recompute).
    void tick(double now, const Cluster &c) override {
        if (now >= next_scrape_) {
            scrape(c);
            next_scrape_ += p_.telemetry_interval_s * p_.daemon_time_scale;
        }
        if (now >= next_report_) {
            if (p_.bound_slack > 0) retune_load_factor();
            for (const auto &r : pending_) daemon_.on_report(r, dns(now));
            pending_.clear();
            next_report_ += p_.report_interval_s * p_.daemon_time_scale;
            daemon_.tick(dns(now));
        }
    }

    std::map<std::string, double> counters() const override {
        std::map<std::string, double> m{{"via_affinity", double(via_[KVS_VIA_AFFINITY])},
                                        {"via_maglev", double(via_[KVS_VIA_MAGLEV])},
                                        {"via_maglev_spill", double(via_[KVS_VIA_MAGLEV_SPILL])},
                                        {"key_openai", double(kinds_[0] + kinds_[1])},
                                        {"key_fallback", double(kinds_[2] + kinds_[3])}};
        if (!p_.session_headers.empty()) {
            m["session_key"] = double(session_[uint32_t(SessionStatus::Key)]);
            m["session_bad"] = double(session_[uint32_t(SessionStatus::Bad)]);
            m["session_steered"] = double(session_counted_);
        }
        if (p_.affinity) {
            const auto &pc = daemon_.policy().counters();
            const auto &dc = daemon_.counters();
            m["affinity_publishes"] = double(dc.affinity_publishes);
            m["affinity_computes"] = double(dc.affinity_computes);
            m["daemon_index_keys"] = double(daemon_.policy().index_size());
            m["affinity_entries_last"] = double(daemon_.desired().size());
            m["affinity_insert_failed"] = double(dc.affinity_insert_failed);
            m["daemon_replicas_added"] = double(pc.replicas_added);
            m["daemon_became_hot"] = double(pc.became_hot);
            m["daemon_keys_evicted"] = double(pc.keys_evicted);
            m["daemon_ttl_shortened"] = double(pc.ttl_shortened);
        }
        return m;
    }

   private:
    static uint64_t ns(double s) { return uint64_t(std::llround(s * 1e9)) + 1; }
    // The daemon's clock at simulated time `s` (its intervals are in its own time).
    uint64_t dns(double s) const { return ns(s / p_.daemon_time_scale); }

    // The pinned maps' shape in ordinary memory (no report rings: reports go straight in).
    Tables tables() {
        Tables t;
        t.config = &cfg_;
        t.backends = backends_.data();
        t.load = load_.data();
        t.maglev = maglev_.data();
        t.affinity = affinity_.data();
        return t;
    }

    // kvsteerd's configuration for this run: the sim's servers as backends (MACs configured, no
    // active health checks: they are up), the sim's parameters where kvsteerd has the key.
    static control::DaemonConfig daemon_config(uint32_t servers, const PolicyParams &p) {
        control::DaemonConfig d;
        d.prefix_len = p.prefix_len;
        d.block_size = p.block_size;
        d.max_blocks = std::min<uint32_t>(p.max_blocks, KVS_MAX_REPORT_BLOCKS);
        d.max_held_bytes = p.first_flight;
        d.load_factor = p.load_factor;
        d.load_slack = p.load_slack;
        d.session_headers = p.session_headers;
        d.session_cap = p.session_cap;
        d.replication = p.replication;
        d.hot_threshold = p.hot_rps;
        d.affinity_min_hot_ms = uint32_t(std::lround(p.min_hot_s * 1000));
        d.report_interval_ms = uint32_t(std::lround(p.report_interval_s * 1000));
        d.telemetry_interval_ms = uint32_t(std::lround(p.telemetry_interval_s * 1000));
        d.health_interval_ms = 0;
        d.table_grace_ms = 0;  // the one reader runs between writes
        for (uint32_t i = 0; i < servers; ++i) {
            control::BackendSpec b;
            b.ep = sim_endpoint(i);
            b.mac = control::Mac{2, 0, 0, 0, uint8_t(i >> 8), uint8_t(i)};
            d.backends.push_back(b);
        }
        return d;
    }

    // What kvsteerd reads from each backend's vLLM-named /metrics (running, waiting, KV usage,
    // prefix-cache queries and hits); DaemonCore turns it into load and a window hit rate.
    void scrape(const Cluster &c) {
        for (uint32_t i = 0; i < n_; ++i) {
            const model::Scheduler &s = *c.servers[i];
            const auto &st = s.cache().stats();
            control::Telemetry t;
            t.flavor = control::ServerFlavor::Vllm;
            t.running = double(s.num_running());
            t.waiting = double(s.num_waiting());
            t.kv_usage = s.cache().usage();
            t.prefix_queries = double(st.queries_tokens);
            t.prefix_hits = double(st.hits_tokens);
            daemon_.scrape(uint16_t(i), std::move(t), 0, {});
        }
    }

    // Proposal, not shipped (kvsteer-slack): the daemon raises the live load factor so the bound
    // is never below mean + slack requests; c x mean alone allows ~1 request when servers hold ~1.
    // Written straight into kvs_config, the dataplane's copy: AffinityPolicy keeps its own factor
    // (kvsteerd's tune load-factor would set both, and caps it at 100).
    void retune_load_factor() {
        uint64_t total = 0;
        for (const auto &l : load_) total += l.binds > l.closes ? l.binds - l.closes : 0;
        const double c =
            std::max(p_.load_factor, 1.0 + p_.bound_slack * n_ / (double(total) + 1.0));
        cfg_.load_factor_milli = uint32_t(std::lround(std::min(c, 4e6) * 1000));
    }

    PolicyParams p_;
    uint32_t n_;
    kvs_config cfg_{};
    std::vector<kvs_backend> backends_;
    std::vector<kvs_backend_load> load_;
    std::vector<uint32_t> maglev_;
    std::vector<kvs_affinity_entry> affinity_;
    Tables t_;
    std::unique_ptr<ChooseScratch> scratch_;
    std::vector<std::uint8_t> dechunked_;  // a chunked flight, its framing taken out
    HashParams hp_;
    uint64_t via_[5] = {};
    uint64_t kinds_[4] = {};
    // Session affinity: requests of one key in flight (the dataplane's SessionLimiter), and the
    // key each counted request holds until it finishes.
    std::unique_ptr<SessionLimiter> limiter_holder_ = std::make_unique<SessionLimiter>();
    SessionLimiter &limiter_ = *limiter_holder_;
    std::unordered_map<uint32_t, uint32_t> session_of_;  // request -> limiter slot
    uint64_t session_[3] = {};
    uint64_t session_counted_ = 0;
    // Daemon side.
    control::DaemonCore daemon_;
    std::vector<kvs_bind_report> pending_;  // the report rings
    double next_report_ = 0, next_scrape_ = 0;
};

}  // namespace

std::unique_ptr<Policy> make_kvsteer(uint32_t servers, const PolicyParams &p) {
    return std::make_unique<Kvsteer>(servers, p);
}

}  // namespace kvsteer::sim
