// kvsteerd's state and decisions, without sockets or threads: the backend registry, binding
// reports into AffinityPolicy, what the backends' health checks, bind failures and scrapes mean,
// the tick, and the tables it publishes through a TableWriter. kvsteerd (daemon.h) feeds it from
// its probes, rings and API; kvsteer-sim (tools/sim) runs the same class over tables in memory.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/config.h"
#include "kvsteer/control/health.h"
#include "kvsteer/control/tables.h"
#include "kvsteer/control/telemetry.h"
#include "kvsteer/core/maglev.h"

namespace kvsteer::control {

struct BackendRuntime {
    std::uint16_t id = 0;
    // Which add this is (DaemonCore counts them): a probe result carries it, so a result made
    // for a backend removed meanwhile is not applied to one re-added under its id and address.
    std::uint64_t incarnation = 0;
    BackendSpec spec;
    bool draining = false;
    HealthState health;
    std::optional<Mac> mac;  // configured or resolved
    // Unresolved: the next health check that tries again (the lookup is a neighbour-table dump
    // on the event loop) and the wait after it: 250 ms, doubled each failure up to 2 s.
    std::uint64_t mac_retry_ns = 0, mac_retry_gap_ns = 0;
    std::string last_error;  // latest health / resolution problem
    std::uint64_t checks_ok = 0, checks_failed = 0, passive_failures = 0;
    std::uint64_t base_binds = 0, base_closes = 0;  // kvs_be_load values when this id was taken
    std::uint64_t base_idle_starts = 0, base_idle_ends = 0;  // the same
    std::uint64_t prev_bind_fails = 0, prev_binds = 0;
    std::uint32_t passive_streak = 0;  // consecutive health intervals with bind failures
    std::uint32_t passive_hold = 0;    // intervals spent down by passive evidence (checks off)
    // Telemetry.
    Telemetry tel;
    bool tel_valid = false;
    std::uint64_t scrapes_ok = 0, scrapes_failed = 0, metrics_unknown = 0;
    bool tel_problem_logged = false;
    HitRateTracker hit;
    std::optional<double> window_hit_rate;
    bool cache_reset = false;  // set by telemetry or KV events; consumed by the next compute
    std::uint32_t queue_max_load = 0;  // dynamic cap from queue-cap; 0 = none
    std::uint8_t written_state = KVS_BE_EMPTY;

    std::uint8_t map_state() const;
    std::uint32_t effective_max_load() const;
};

struct CoreCounters {
    std::uint64_t maglev_rebuilds = 0, affinity_publishes = 0, affinity_insert_failed = 0;
    std::uint64_t affinity_computes = 0;  // policy runs, published or not (unchanged table)
    std::uint64_t backend_up = 0, backend_down = 0;
    std::uint64_t mac_resolve_failed = 0;
    std::uint64_t health_checks = 0, health_failures = 0, passive_failures = 0;
    std::uint64_t scrapes = 0, scrape_failures = 0, metrics_unknown = 0,
                  metrics_parse_bad_lines = 0;
};

// Next-hop MAC of a backend (kvsteerd: rtnetlink, neigh.h). nullopt + err when unknown.
using MacResolver = std::function<std::optional<Mac>(const Endpoint &, std::string *err)>;

// The lookup table `a` builds over `backends` (KVS_MAGLEV_SIZE slots).
std::vector<std::uint32_t> build_lookup_table(TableAlgorithm a,
                                              std::span<const MaglevBackend> backends);

// AffinityPolicy's parameters as the configuration sets them.
PolicyParams policy_params(const DaemonConfig &cfg);

class DaemonCore {
   public:
    // Writes into `tables` (the pinned maps, or memory of the same shape) through a TableWriter
    // with cfg.table_grace_ms. Without `resolve_mac` a backend without a configured MAC stays down.
    DaemonCore(DaemonConfig cfg, const Tables &tables, MacResolver resolve_mac = {});

    // Startup: writes kvs_config, takes the configured backends (keeping the ids of those already
    // in the table, a daemon restart: flows and load counters stay attributed to the same slot),
    // then publishes every table.
    void start(std::uint64_t now_ns);

    const DaemonConfig &config() const { return cfg_; }
    const Tables &tables() const { return maps_; }
    const TableWriter &writer() const { return writer_; }
    const AffinityPolicy &policy() const { return policy_; }
    // XXH3-64 of the published lookup table (Maglev or rendezvous) with every slot's backend id
    // replaced by the backend's identity (its address): independent of the local ids, so
    // appliances with the same backends, weights and health show the same digest. 0: none yet.
    std::uint64_t lookup_digest() const { return lookup_digest_; }
    // What the active affinity half holds, by key.
    const std::vector<DesiredEntry> &desired() const { return desired_; }
    const CoreCounters &counters() const { return ctr_; }
    // Sets kvs_config's cookie keys (current, previous) and bumps generation (fleet-etcd).
    void set_cookie_keys(const std::array<std::uint64_t, 2> &cur,
                         const std::array<std::uint64_t, 2> &prev);
    // Receives AffinityPolicy's decision lines (kept across a rehash). Off when empty.
    void set_decision_sink(std::function<void(const std::string &)> sink);
    // Tests: called right after a new lookup table is published, before the backend slots that
    // became eligible with it are written.
    std::function<void()> on_lookup_published;
    // What the other appliances of the fleet know (AffinityPolicy::set_remote; fleet-share-hot):
    // used from the next compute on.
    void set_remote_hot(std::vector<RemoteKey> keys) { policy_.set_remote(std::move(keys)); }

    // Backend registry.
    const std::map<std::uint16_t, BackendRuntime> &backends() const { return backends_; }
    const BackendRuntime *backend(std::uint16_t id) const;
    // The id a new backend `ep` would take; nullopt + err when it exists or the table is full.
    // Not a retired id (below) while another is free.
    std::optional<std::uint16_t> free_id(const Endpoint &ep, std::string *err) const;
    // Adds `spec` as `id` (from free_id) and publishes.
    void add_backend(std::uint16_t id, const BackendSpec &spec, std::uint64_t now_ns);
    void remove_backend(std::uint16_t id, std::uint64_t now_ns);
    void set_draining(std::uint16_t id, bool draining, std::uint64_t now_ns);
    void set_weight(std::uint16_t id, std::uint16_t weight, std::uint64_t now_ns);
    // Bound flows not yet closed: the dataplane's binds - closes since this id was taken.
    std::uint64_t in_flight(const BackendRuntime &b) const;
    // Of those, the kept-alive connections idle between requests (XDP's idle_starts - idle_ends
    // since this id was taken), and the rest: requests in flight, the load the choice compares.
    std::uint64_t idle(const BackendRuntime &b) const;
    std::uint64_t active(const BackendRuntime &b) const;
    // A removed backend whose flows are still open (the dataplane keeps them; they close against
    // its id's counters): its id is retired, not given to a new backend, until they are closed
    // (tick), so the new one's in-flight count is not eaten by the old one's closes, and a drain
    // counts them (retired_in_flight).
    struct Retired {
        std::uint64_t base_binds = 0, base_closes = 0;
    };
    const std::map<std::uint16_t, Retired> &retired() const { return retired_; }
    std::uint64_t retired_in_flight() const;
    // What AffinityPolicy is told about every backend.
    std::vector<BackendSnapshot> snapshots() const;

    // One binding report (kvsteerd: from the dataplane's rings). `now_ns` stands in for a missing
    // or future timestamp.
    void on_report(const kvs_bind_report &r, std::uint64_t now_ns);

    // What the backends say. One active health check: `ok` or why not.
    void health_check(std::uint16_t id, bool ok, const std::string &why, std::uint64_t now_ns);
    // One scrape of the backend's /metrics: the parsed page, or why there is none.
    void scrape(std::uint16_t id, Telemetry tel, std::size_t bad_lines,
                const std::string &parse_error);
    void scrape_failed(std::uint16_t id, const std::string &why);
    // The backend's cache was emptied (KV events): its prefixes go at the next compute.
    void mark_cache_reset(std::uint16_t id);

    // One maintenance round (kvsteerd runs it every report-interval): passive health once per
    // health interval; the affinity table recomputed when reports arrived since the last round,
    // else once a second (the policy walks its whole index: aging only).
    void tick(std::uint64_t now_ns);
    // Backends table, then the lookup table when the up set or a weight changed.
    void publish_backends(bool force_maglev);
    // Policy compute -> entries sorted by key -> (when they differ from the active half's, or
    // `force`) one half built -> written inactive -> flipped -> generation bumped.
    void publish_affinity(bool force, std::uint64_t now_ns);

    // Operator pins (republished at once).
    void pin(std::uint64_t key, std::vector<std::uint16_t> backends, std::uint64_t now_ns);
    bool unpin(std::uint64_t key, std::uint64_t now_ns);
    // Sets the live tunable NAME (config.h apply_tunable), rewrites kvs_config and the policy's
    // parameters; a new prefix length or block size clears the prefix index (pins stay).
    bool set_tunable(const std::string &name, const std::string &value, std::string *err,
                     std::uint64_t now_ns);
    // What health checks and scrapes change while a batch is open (begin_batch .. end_batch: a
    // probe round's results) is published once, at end_batch. Before, each health transition
    // rebuilt the lookup table on the event loop (~46 ms at 256 backends: 100 backends failing
    // in one round stalled it ~4.6 s), and each queue-cap change bumped the generation (which
    // ages the recent choices).
    void begin_batch() { ++batch_depth_; }
    void end_batch(std::uint64_t now_ns);

   private:
    void write_config();
    void write_cookie_keys(kvs_config *c) const;
    BackendRuntime fresh_backend(std::uint16_t id, const BackendSpec &spec);
    void resolve_mac(BackendRuntime &b);
    void passive_health(std::uint64_t now_ns);
    void after_scrape(BackendRuntime &b);
    void log_transition(const BackendRuntime &b, bool up, const std::string &why);
    void republish(std::uint64_t now_ns);
    void new_policy();
    // The id leaves the operator's pins (its backend is gone, or another took the id); logged.
    void unpin_backend(std::uint16_t id);

    DaemonConfig cfg_;
    Tables maps_;
    TableWriter writer_;
    MacResolver resolve_mac_;
    std::map<std::uint16_t, BackendRuntime> backends_;
    std::map<std::uint16_t, Retired> retired_;
    std::uint64_t in_flight_since(std::uint16_t id, std::uint64_t base_binds,
                                  std::uint64_t base_closes) const;
    void expire_retired();
    std::vector<std::array<std::uint64_t, 3>>
        maglev_input_;  // (id, identity, weight) last published
    bool maglev_published_ = false;
    std::uint64_t lookup_digest_ = 0;  // lookup_digest()
    std::uint64_t incarnations_ = 0;   // backends added (BackendRuntime::incarnation)
    AffinityPolicy policy_;
    std::function<void(const std::string &)> sink_;
    std::vector<DesiredEntry> desired_;
    bool affinity_published_ = false;
    CoreCounters ctr_;
    std::size_t reports_since_tick_ = 0;
    std::uint64_t next_passive_ns_ = 0;
    std::uint64_t last_affinity_ns_ = 0;  // last policy compute
    unsigned batch_depth_ = 0;
    bool batch_republish_ = false, batch_backends_ = false;  // owed at end_batch
};

}  // namespace kvsteer::control
