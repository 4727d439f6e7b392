// kvsteer as deployed: the dataplane's own choice function (kvsteer/core/choose.h) over
// tables shaped like the pinned maps, fed by first-flight hashing; and the control daemon's
// AffinityPolicy run on the daemon's intervals, seeing only binding reports and scraped counters.
#include <algorithm>
#include <cmath>
#include <optional>

#include "kvsteer/core/flight_key.h"
#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/core/affinity.h"
#include "kvsteer/core/choose.h"
#include "policy.h"
#include "sim_maglev.h"

namespace kvsteer::sim {
namespace {

struct Scrape {  // one backend's /metrics as the daemon last read it
    bool valid = false;
    double running = 0, waiting = 0, kv_usage = 0;
    uint64_t queries = 0, hits = 0;
    std::optional<double> window_hit_rate;
};

class Kvsteer final : public Policy {
   public:
    Kvsteer(uint32_t servers, const PolicyParams &p)
        : p_(p),
          n_(servers),
          backends_(servers),
          load_(servers),
          maglev_(2 * KVS_MAGLEV_SIZE),
          affinity_(2 * KVS_AFFINITY_SLOTS),
          scratch_(std::make_unique<ChooseScratch>()),
          scrapes_(servers),
          daemon_(daemon_params(p)) {
        cfg_.steer_mode = KVS_STEER_PREFIX;
        cfg_.prefix_len = p.prefix_len;
        cfg_.block_size = p.block_size;
        cfg_.max_blocks = std::min<uint32_t>(p.max_blocks, KVS_MAX_REPORT_BLOCKS);
        cfg_.load_factor_milli = uint32_t(std::lround(p.load_factor * 1000));
        cfg_.max_held_bytes = p.first_flight;
        cfg_.hash_seed = HashParams{}.seed;
        cfg_.n_backends = servers;
        for (auto &b : backends_) {
            b.state = KVS_BE_UP;
            b.weight = 1;
        }
        const auto table = sim_maglev(servers);
        std::copy(table.begin(), table.end(), maglev_.begin());
        t_.config = &cfg_;
        t_.backends = backends_.data();
        t_.load = load_.data();
        t_.maglev = maglev_.data();
        t_.affinity = affinity_.data();
        hp_ = hash_params(cfg_);  // as the dataplane reads kvs_config
    }

    std::string name() const override {
        return !p_.affinity ? "kvsteer-maglev" : p_.bound_slack > 0 ? "kvsteer-slack" : "kvsteer";
    }

    uint32_t choose(uint32_t idx, const SimRequest &r, double now, const Cluster &) override {
        const uint64_t tuple_hash = (uint64_t(idx) + 1) * 0x9e3779b97f4a7c15ULL;
        const FlightKey k =
            key_flight(hp_, flight_bytes(r.first_flight, cfg_.max_held_bytes), tuple_hash | 1);
        const Choice ch = choose_backend(t_, k.hashes, tuple_hash, {}, *scratch_);
        const uint32_t id = ch.backend < n_ ? ch.backend : 0;
        ++via_[std::min<uint32_t>(ch.via, 4)];
        ++kinds_[std::min<uint32_t>(uint32_t(k.kind), 3)];
        if (p_.affinity) {
            kvs_bind_report rep{};
            rep.ts_ns = ns(now);
            rep.prefix_hash = k.hashes.prefix;
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
    void on_finished(uint32_t, uint32_t s, double) override { ++load_[s].closes; }

    double next_tick() const override {
        if (!p_.affinity) return Policy::next_tick();
        return std::min(next_report_, next_scrape_);  // (kvsteer-slack retunes on the report tick)
    }

    // Daemon::tick: drain the report rings; recompute the table when reports arrived, else once a
    // second (aging). Scrapes only refresh what the next recomputation sees.
    void tick(double now, const Cluster &c) override {
        if (now >= next_scrape_) {
            scrape(c);
            next_scrape_ += p_.telemetry_interval_s;
        }
        if (now >= next_report_) {
            if (p_.bound_slack > 0) retune_load_factor();
            const bool fresh = !pending_.empty();
            for (const auto &r : pending_) daemon_.on_report(r, r.ts_ns);
            pending_.clear();
            next_report_ += p_.report_interval_s;
            if (fresh || !published_ || now - last_publish_ >= 1.0) publish(now);
        }
    }

    std::map<std::string, double> counters() const override {
        std::map<std::string, double> m{{"via_affinity", double(via_[KVS_VIA_AFFINITY])},
                                        {"via_maglev", double(via_[KVS_VIA_MAGLEV])},
                                        {"via_maglev_spill", double(via_[KVS_VIA_MAGLEV_SPILL])},
                                        {"key_openai", double(kinds_[0] + kinds_[1])},
                                        {"key_fallback", double(kinds_[2] + kinds_[3])}};
        if (p_.affinity) {
            const auto &pc = daemon_.counters();
            m["affinity_publishes"] = double(publishes_);
            m["affinity_computes"] = double(computes_);
            m["daemon_index_keys"] = double(daemon_.index_size());
            m["affinity_entries_last"] = double(desired_.size());
            m["affinity_insert_failed"] = double(insert_failed_);
            m["daemon_replicas_added"] = double(pc.replicas_added);
            m["daemon_became_hot"] = double(pc.became_hot);
            m["daemon_keys_evicted"] = double(pc.keys_evicted);
            m["daemon_ttl_shortened"] = double(pc.ttl_shortened);
        }
        return m;
    }

   private:
    static uint64_t ns(double s) { return uint64_t(std::llround(s * 1e9)) + 1; }

    static control::PolicyParams daemon_params(const PolicyParams &p) {
        control::PolicyParams d;
        d.replication = p.replication;
        d.hot_rps = p.hot_rps;
        d.min_hot_ns = static_cast<std::uint64_t>(p.min_hot_s * 1e9);
        d.load_factor = p.load_factor;
        return d;
    }

    // What the daemon reads from each backend's vLLM-named /metrics.
    void scrape(const Cluster &c) {
        for (uint32_t i = 0; i < n_; ++i) {
            const model::Scheduler &s = *c.servers[i];
            Scrape &x = scrapes_[i];
            const auto &st = s.cache().stats();
            if (x.valid) {
                const uint64_t dq = st.queries_tokens - x.queries, dh = st.hits_tokens - x.hits;
                x.window_hit_rate =
                    dq ? std::optional<double>(std::min(1.0, double(dh) / double(dq)))
                       : std::nullopt;
            }
            x.valid = true;
            x.running = s.num_running();
            x.waiting = s.num_waiting();
            x.kv_usage = s.cache().usage();
            x.queries = st.queries_tokens;
            x.hits = st.hits_tokens;
        }
    }

    // Proposal, not shipped (kvsteer-slack): the daemon raises the live load factor so the bound
    // is never below mean + slack requests; c x mean alone allows ~1 request when servers hold ~1.
    void retune_load_factor() {
        uint64_t total = 0;
        for (const auto &l : load_) total += l.binds > l.closes ? l.binds - l.closes : 0;
        const double c =
            std::max(p_.load_factor, 1.0 + p_.bound_slack * n_ / (double(total) + 1.0));
        cfg_.load_factor_milli = uint32_t(std::lround(std::min(c, 4e6) * 1000));
    }

    // Daemon::publish_affinity: snapshots -> AffinityPolicy -> table half -> flip.
    void publish(double now) {
        std::vector<control::BackendSnapshot> snaps(n_);
        for (uint32_t i = 0; i < n_; ++i) {
            auto &s = snaps[i];
            s.id = uint16_t(i);
            s.eligible = backends_[i].state == KVS_BE_UP;
            s.in_flight = load_[i].binds > load_[i].closes ? load_[i].binds - load_[i].closes : 0;
            if (scrapes_[i].valid) {
                s.queue = scrapes_[i].waiting;
                s.kv_usage = scrapes_[i].kv_usage;
            }
            s.hit_rate = scrapes_[i].window_hit_rate;
        }
        daemon_.update_backends(snaps, ns(now));
        last_publish_ = now;
        ++computes_;
        auto want = daemon_.compute(ns(now));
        std::sort(want.begin(), want.end(),
                  [](const control::DesiredEntry &a, const control::DesiredEntry &b) {
                      return a.key < b.key;
                  });
        if (published_ && want == desired_) return;
        AffinityBuilder builder(KVS_AFFINITY_SLOTS);
        for (const auto &e : want)
            if (!builder.insert(e.key, std::span<const std::uint16_t>(e.backends.data(), e.n),
                                e.depth))
                ++insert_failed_;
        const uint32_t next = (cfg_.affinity_active & 1) ^ 1;
        std::copy(builder.table().begin(), builder.table().end(),
                  affinity_.begin() + size_t(next) * KVS_AFFINITY_SLOTS);
        cfg_.affinity_active = next;
        ++cfg_.generation;
        desired_ = std::move(want);
        published_ = true;
        ++publishes_;
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
    HashParams hp_;
    uint64_t via_[5] = {};
    uint64_t kinds_[4] = {};
    // Daemon side.
    std::vector<Scrape> scrapes_;
    control::AffinityPolicy daemon_;
    std::vector<kvs_bind_report> pending_;
    std::vector<control::DesiredEntry> desired_;
    bool published_ = false;
    double next_report_ = 0, next_scrape_ = 0;
    uint64_t publishes_ = 0, insert_failed_ = 0, computes_ = 0;
    double last_publish_ = 0;
};

}  // namespace

std::unique_ptr<Policy> make_kvsteer(uint32_t servers, const PolicyParams &p) {
    return std::make_unique<Kvsteer>(servers, p);
}

}  // namespace kvsteer::sim
