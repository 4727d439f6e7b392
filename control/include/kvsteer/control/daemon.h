// kvsteerd: owns the steering tables. One event-loop thread holds all state; two prober threads
// (health checks, telemetry scrapes) only do network I/O and hand results back.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/config.h"
#include "kvsteer/control/health.h"
#include "kvsteer/control/http_client.h"
#include "kvsteer/control/kv_events.h"
#include "kvsteer/control/ring.h"
#include "kvsteer/control/tables.h"
#include "kvsteer/control/telemetry.h"

namespace kvsteer::control {

struct BackendRuntime {
    std::uint16_t id = 0;
    BackendSpec spec;
    bool draining = false;
    HealthState health;
    std::optional<Mac> mac;  // configured or resolved
    std::string last_error;  // latest health / resolution problem
    std::uint64_t checks_ok = 0, checks_failed = 0, passive_failures = 0;
    std::uint64_t base_binds = 0, base_closes = 0;  // kvs_be_load values when this id was taken
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
    bool cache_reset = false;  // set by telemetry or KV events; consumed by publish_affinity
    std::uint64_t kv_resets_seen = 0;  // KvEventStats::resets already acted on
    std::uint32_t queue_max_load = 0;  // dynamic cap from queue-cap; 0 = none
    std::uint8_t written_state = KVS_BE_EMPTY;

    std::uint8_t map_state() const;
    std::uint32_t effective_max_load() const;
};

struct DaemonCounters {
    std::uint64_t api_requests = 0, api_errors = 0;
    std::uint64_t maglev_rebuilds = 0, affinity_publishes = 0, affinity_insert_failed = 0;
    std::uint64_t backend_up = 0, backend_down = 0;
    std::uint64_t mac_resolve_failed = 0;
    std::uint64_t health_checks = 0, health_failures = 0, passive_failures = 0;
    std::uint64_t scrapes = 0, scrape_failures = 0, metrics_unknown = 0,
                  metrics_parse_bad_lines = 0;
    std::uint64_t kv_cache_resets = 0;  // backend caches marked reset because of KV events
};

class Daemon {
   public:
    Daemon(DaemonConfig cfg, const Tables &maps);
    ~Daemon();
    Daemon(const Daemon &) = delete;
    Daemon &operator=(const Daemon &) = delete;

    // Writes the config and backend tables, opens the API socket and metrics listener, starts the
    // probers. false + err when something cannot be set up.
    bool start(std::string *err);
    // Event loop; returns when stop() is called (from any thread or a signal handler).
    void run();
    void stop();

    // One API request (as the socket would receive it); for the socket handler and for tests.
    nlohmann::json handle(const nlohmann::json &req);
    // Prometheus text of the daemon's own metrics.
    std::string metrics_text();
    // Runs one maintenance round now (rings, passive health, affinity); for tests.
    void tick();

   private:
    struct ProbeResult {
        bool health;  // else telemetry
        std::uint16_t id;
        Endpoint ep;
        HttpResult http;
        std::optional<Telemetry> tel;
        std::size_t bad_lines = 0;
        std::string parse_error;
    };
    struct ProbeTarget {
        std::uint16_t id;
        Endpoint ep;
    };

    void write_config();
    void publish_backends(bool force_maglev);
    void publish_affinity(bool force);
    void apply_probe(ProbeResult &r);
    void passive_health();
    std::size_t consume_rings();
    void update_targets(bool kick);
    void prober_loop(bool health);
    std::vector<BackendSnapshot> snapshots() const;
    std::uint64_t in_flight(const BackendRuntime &b) const;
    BackendRuntime *find_backend(const nlohmann::json &sel, std::string *err);
    std::optional<std::uint16_t> add_backend(const BackendSpec &spec, std::string *err);
    void remove_backend(std::uint16_t id);
    nlohmann::json backend_json(const BackendRuntime &b) const;
    nlohmann::json tunables_json() const;
    bool set_tunable(const std::string &name, const nlohmann::json &value, std::string *err);
    PolicyParams policy_params() const;
    void log_backend_transition(const BackendRuntime &b, bool up, const std::string &why);
    bool kv_subscribe(const BackendRuntime &b, std::string *err);
    void apply_kv_resets();
    nlohmann::json kv_json(const BackendRuntime &b) const;

    // Sockets.
    bool open_api(std::string *err);
    bool open_metrics(std::string *err);
    void accept_api();
    void accept_metrics();
    void serve_api_client(std::size_t idx);
    void serve_metrics_client(std::size_t idx);

    DaemonConfig cfg_;
    Tables maps_;
    TableWriter writer_;
    std::map<std::uint16_t, BackendRuntime> backends_;
    std::vector<std::array<std::uint64_t, 3>>
        maglev_input_;  // (id, identity, weight) last published
    bool maglev_published_ = false;
    AffinityPolicy policy_;
    std::vector<DesiredEntry> desired_;  // what the active affinity half holds
    bool affinity_published_ = false;
    RingStats ring_stats_;
    DaemonCounters ctr_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::time_point next_passive_{};
    std::chrono::steady_clock::time_point last_affinity_{};  // last policy compute

    struct Client {
        int fd = -1;
        std::string in, out;
        bool closing = false;
    };
    int api_fd_ = -1, metrics_fd_ = -1, wake_fd_ = -1;
    std::vector<Client> api_clients_, metrics_clients_;

    std::mutex mu_;  // guards targets_, results_
    std::condition_variable cv_;
    std::vector<ProbeTarget> targets_;
    std::deque<ProbeResult> results_;
    bool kick_[2] = {false, false};  // [health, telemetry]: probe now (backend set changed)
    std::atomic<bool> stop_{false};
    std::thread health_thr_, tel_thr_;

    // vLLM KV events (backends with kv-events=): its own thread; created on first use.
    std::unique_ptr<KvEventSubscriber> kv_;
    std::uint64_t kv_resets_total_seen_ = 0;
};

}  // namespace kvsteer::control
