// kvsteerd: DaemonCore (daemon_core.h: backends, reports, tables) plus its I/O. One event-loop
// thread holds all state and serves the API and /metrics; two prober threads (health checks,
// telemetry scrapes) only do network I/O and parsing and hand results back; a KV events thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kvsteer/control/announce.h"
#include "kvsteer/control/config.h"
#include "kvsteer/control/daemon_core.h"
#include "kvsteer/control/fleet.h"
#include "kvsteer/control/fleet_etcd.h"
#include "kvsteer/control/fleet_ping.h"
#include "kvsteer/control/http_client.h"
#include "kvsteer/control/kv_events.h"
#include "kvsteer/control/ring.h"

namespace kvsteer::control {

// What only the I/O side counts: the API, and KV events (the core counts the rest).
struct DaemonCounters {
    std::uint64_t api_requests = 0, api_errors = 0;
    // Connections to the API socket / metrics listener over their slots (64 / 32): the oldest
    // one with nothing pending closed to make room, or, none such, the new one refused.
    std::uint64_t clients_evicted = 0, clients_refused = 0;
    std::uint64_t kv_cache_resets = 0;  // backend caches marked reset because of KV events
};

// backend.add's request ("spec", or "addr" with "weight", "model", ...) as a spec; err (one line).
std::optional<BackendSpec> backend_spec_from_request(const nlohmann::json &req, std::string *err);

// tune.set's request: the name, and the value's text (a string as is, a number as printed).
// nullopt + err (one line) without either, or for a value neither a string nor a number (null,
// meant as "off", turned session affinity on, keyed on a header named "null").
struct TuneSetRequest {
    std::string name, value;
};
std::optional<TuneSetRequest> tune_set_from_request(const nlohmann::json &req, std::string *err);

// A backend named by its id in the API ("12"; what kvsteerctl sends): decimal digits only,
// every one of them ("0012" is 12), 0..KVS_MAX_BACKENDS-1; else nullopt + err (one line).
std::optional<std::uint16_t> parse_backend_id(std::string_view s, std::string *err);

// A backend's value under P config/backends/ in etcd (fleet_etcd.h): {"spec": "ADDR:PORT,...",
// "drain": BOOL}. Every appliance reads it, so a bad value must never throw: nullopt + err (one
// line) when it is not an object with a string "spec" that parses. "drain" missing: false; of
// another type: nullopt (the drain state is left as it is) and *warning says why.
struct SharedBackend {
    BackendSpec spec;
    std::optional<bool> drain = false;
};
std::optional<SharedBackend> parse_shared_backend_value(const std::string &v, std::string *err,
                                                        std::string *warning);

// etcd's tunables applied in passes until a pass applies none: a value refused only because of
// another not yet applied (max-held-bytes below the prefix-length etcd lowers too) is taken in
// a later pass, whatever the names' order. `apply(name, value, &err)`; returns those refused
// in the end, each with its error.
using TunableApply = std::function<bool(const std::string &, const std::string &, std::string *)>;
std::map<std::string, std::pair<std::string, std::string>> apply_tunables_in_passes(
    std::map<std::string, std::string> pending, const TunableApply &apply);

class Daemon {
   public:
    // `fleet`: the kvs_fleet / kvs_owner maps (none: the fleet is computed but not written).
    Daemon(DaemonConfig cfg, const Tables &maps, const FleetMaps &fleet = {});
    ~Daemon();
    Daemon(const Daemon &) = delete;
    Daemon &operator=(const Daemon &) = delete;

    // Writes the config and backend tables, opens the API socket and metrics listener, starts the
    // probers. false + err when something cannot be set up.
    bool start(std::string *err);
    // After start() failed: whether the configuration itself cannot work (kv-events= on a build
    // without libzmq), as opposed to something that may clear (a port in use): kvsteerd exits 2
    // for it, which systemd does not retry every second forever.
    bool start_failed_on_config() const { return start_config_error_; }
    // Event loop; returns when stop() is called (from any thread or a signal handler).
    void run();
    void stop();

    // One API request (as the socket would receive it); for the socket handler and for tests.
    nlohmann::json handle(const nlohmann::json &req);
    // Prometheus text of the daemon's own metrics.
    std::string metrics_text();
    // Runs one maintenance round now (KV resets, report rings, then DaemonCore::tick); for tests.
    void tick();

   private:
    enum class Probe { Health, Telemetry };
    struct ProbeResult {
        Probe kind;
        std::uint16_t id;
        std::uint64_t incarnation;  // BackendRuntime::incarnation when it was a target
        Endpoint ep;
        HttpResult http;
        std::optional<Telemetry> tel;  // scrapes: the parsed page
        std::size_t bad_lines = 0;
        std::string parse_error;
    };
    struct ProbeTarget {
        std::uint16_t id;
        std::uint64_t incarnation;
        Endpoint ep;
    };

    const DaemonConfig &cfg() const { return core_.config(); }
    // Probes (probes.cc): the prober threads, and their results applied on the loop.
    void update_targets(bool kick);
    void prober_loop(Probe kind);
    bool still_probed(const ProbeResult &r) const;
    void on_health_check(const ProbeResult &r);
    void on_scrape(ProbeResult &r);
    void apply_results();

    const BackendRuntime *find_backend(const nlohmann::json &sel, std::string *err);
    std::optional<std::uint16_t> add_backend(const BackendSpec &spec, std::string *err);
    // What add_backend refuses before it changes anything (the address's family or route, a
    // kv-events endpoint in use or unsupported, no free id): checked before a backend is written
    // to etcd too, where no appliance could then add it and neither add nor remove clear it.
    bool backend_addable(const BackendSpec &spec, std::string *err) const;
    void remove_backend(std::uint16_t id);
    nlohmann::json backend_json(const BackendRuntime &b) const;
    nlohmann::json tunables_json() const;
    bool kv_subscribe(std::uint16_t id, const BackendSpec &spec, std::string *err);
    void apply_kv_resets();
    nlohmann::json kv_json(const BackendRuntime &b) const;
    // The fleet (daemon_fleet.cc): the owner table recomputed and written; the fleet.* commands
    // (nullopt: not one of them).
    void publish_fleet();
    nlohmann::json fleet_json() const;
    std::optional<nlohmann::json> handle_fleet(const std::string &cmd, const nlohmann::json &req);
    // fleet-etcd: what the poller read last applied (table and cookie keys) when it changed.
    void apply_fleet_etcd();
    void apply_fleet_cookie(const FleetEtcdView &v);
    // fleet-ping: the members that stopped answering left out of the owner table, and back.
    void start_pinger();
    void apply_fleet_silence();
    // The shared configuration in etcd (daemon_shared_config.cc): what this appliance puts when
    // etcd has none, etcd's applied here, and the backend.* / tune.set commands written there.
    std::vector<std::pair<std::string, std::string>> config_seed() const;
    void apply_fleet_config(const FleetEtcdView &v);
    nlohmann::json handle_config_etcd(const std::string &cmd, const nlohmann::json &req);
    nlohmann::json handle_fleet_etcd(const std::string &cmd, const nlohmann::json &req);
    nlohmann::json fleet_etcd_json() const;
    nlohmann::json fleet_members_view(const FleetEtcdView &v) const;
    std::string fleet_digest_hex() const;
    std::string fleet_cookie_fingerprint() const;
    std::string tables_digest_hex() const;
    std::string lookup_digest_hex() const;
    // fleet-share-hot (daemon_hot_share.cc): this appliance's busiest prefixes handed to FleetEtcd
    // (at most once a second, from the tick), the other members' lists as read from etcd mapped
    // to local backend ids for the policy (when the view changes, and once a second: backends
    // may have come or gone).
    bool hot_share_on() const;
    void share_hot(std::uint64_t now_ns);
    void apply_fleet_hot(const FleetEtcdView &v);
    void map_remote_hot();
    nlohmann::json hot_share_json(const FleetEtcdView &v) const;
    // The VIP's announcement and the drain (daemon_announce.cc): the dataplane's health checked
    // every tick, BIRD told; the drain.* commands (nullopt: not one of them).
    void start_announcer();
    void stop_announcer();
    void check_dataplane(std::uint64_t now_ns);
    nlohmann::json fleet_report() const;  // this appliance's etcd member report
    void fleet_follow_health(std::uint64_t now_ns);
    std::uint64_t flows_in_flight() const;
    nlohmann::json announce_json() const;
    std::optional<nlohmann::json> handle_drain(const std::string &cmd, const nlohmann::json &req);

    // One step of the event loop (the wake-up's apply_* steps, tick) run so that an exception
    // escaping it (data from etcd or a peer that a check missed) is logged and the loop goes on:
    // every appliance reads the same etcd, so a throw there would crash-loop them all. The same
    // error is logged at most every 10 s.
    void loop_step(const char *what, const std::function<void()> &step);

    // Sockets.
    bool open_api(std::string *err);
    bool open_metrics(std::string *err);
    void accept_api();
    void accept_metrics();
    void serve_api_client(std::size_t idx);
    void serve_metrics_client(std::size_t idx);

    DaemonCore core_;
    DaemonCounters ctr_;
    Tables maps_;  // for the report rings and the dataplane's counters
    RingStats ring_stats_;
    FleetMaps fleet_maps_;
    bool fleet_publish_pending_ = false;  // the maps kept as found until etcd is read (start)
    // The fleet was read from etcd at least once (announced only then); said once while not.
    bool fleet_etcd_applied_ = false, etcd_wait_logged_ = false;
    std::uint64_t fleet_etcd_read_ns_ = 0;  // when it was (mono_ns)
    FleetState fleet_;
    FleetTable fleet_table_;               // as last published
    MemberSet fleet_silent_ = 0;           // left out of fleet_table_ (fleet_ping.h)
    MemberSet fleet_silent_here_ = 0;      // unanswered here, corroborated or not
    std::unique_ptr<FleetPinger> pinger_;  // fleet-ping
    FleetWriter fleet_writer_;
    std::unique_ptr<FleetEtcd> etcd_;                           // fleet-etcd
    std::uint64_t etcd_seq_ = 0;                                // FleetEtcdView::seq applied
    std::map<std::string, std::string> etcd_tunables_;          // values applied
    std::map<std::string, std::string> etcd_tunables_refused_;  // refused, tried again each read
    std::optional<std::map<std::string, std::string>> etcd_backends_;  // nullopt: none yet
    std::int64_t config_generation_ = -1;  // FleetEtcdView::config_generation applied (-1: none)
    struct HotShare {
        std::uint64_t next_ns = 0;  // next share_hot round
        std::array<std::optional<std::vector<FleetHotKey>>, KVS_MAX_APPLIANCES> lists{};  // others'
        std::size_t shared = 0;           // prefixes in this appliance's last list
        std::size_t from = 0;             // members whose lists are used
        std::size_t unknown_holders = 0;  // holder addresses with no backend here (last mapping)
    } hot_;
    std::chrono::steady_clock::time_point started_;
    std::unique_ptr<Announcer> announcer_;  // announce-bird-socket
    DataplaneHealth dp_health_;
    bool dp_healthy_logged_ = false;
    // fleet_follow_health: the dataplane beat at least once; this appliance left the owners
    // through etcd (its dataplane stopped, or at its lease grant: P fleet/returning/<self>) and
    // re-enters when it beats (again), by `left_from_` when the newest epoch is still
    // `left_to_`; next try after a failed etcd write.
    bool dp_was_healthy_ = false, left_unhealthy_ = false;
    MemberSet left_from_ = 0, left_to_ = 0;
    std::uint64_t health_push_retry_ns_ = 0;
    bool announce_ok_ = false;   // serving, and the fleet knows this appliance
    bool member_logged_ = true;  // last said: an owner of the fleet's newest epoch (or no fleet)
    std::uint64_t serving_since_ns_ = 0;
    static constexpr std::uint64_t kAnnounceWaitNs = 3'000'000'000ull;
    bool start_config_error_ = false;
    // The file saying a drain is on (the API socket's path + ".draining"): written by
    // drain.start, removed by drain.cancel, read by start().
    std::string drain_marker() const { return cfg().api_socket + ".draining"; }
    // This boot's id (/proc/sys/kernel/random/boot_id), the marker's first line.
    static std::string boot_id();
    // Whether the marker says a drain is on in this boot (one from another boot is removed).
    bool drain_marked();
    // Opens `path`, a file whose first line is the boot id it was written in: true (the rest
    // left to read in `f`) when it is this boot's; one from another boot is removed, said with
    // `what` ("not drained", "not applied").
    static bool open_this_boots(const std::string &path, std::ifstream &f, const char *what);
    // Writes such a file whole (beside, then renamed over): this boot's id, then `body`. false
    // with errno set when it could not.
    static bool write_this_boots(const std::string &path, const std::string &body);
    // Backends an operator drained (API_SOCKET + ".backend-drains": this boot's id, then a line
    // ADDR:PORT each; no file when none). The backend map says only DRAIN or DOWN: a drained
    // backend that was down when kvsteerd restarted took new flows again once up. Written at each
    // drain change, read by start() (without fleet-etcd: etcd holds the drains there).
    std::string backend_drains_file() const { return cfg().api_socket + ".backend-drains"; }
    void save_backend_drains();
    void drain_leave_etcd();
    void restore_backend_drains();
    struct Drain {
        bool active = false, done = false;
        bool fleet_failed = false;  // leaving the fleet's owners failed (fleet_note says why)
        std::uint64_t started_ns = 0, flows_left = 0;
        std::uint64_t quiet_since_ns = 0;  // no flow left since (0: some)
        std::string fleet_note;
        std::string waiting_for;  // what it waits for now (empty once done)
    } drain_;
    // A drain is done once the router and the other appliances have taken the leave (at least
    // kDrainSettleNs after it began; with etcd every live member reports the table without this
    // appliance) and no flow was left here, bound or being bound, for kDrainQuietNs on end.
    static constexpr std::uint64_t kDrainSettleNs = 3'000'000'000ull;
    static constexpr std::uint64_t kDrainQuietNs = 1'000'000'000ull;
    void drain_progress(std::uint64_t now);

    std::string loop_error_;  // loop_step: the last error logged, and when
    std::chrono::steady_clock::time_point loop_error_at_{};

    struct Client {
        int fd = -1;
        std::string in, out;
        bool closing = false;
        bool backlog = false;  // API: complete requests in `in` left for the next turn
        std::chrono::steady_clock::time_point opened{}, active{};  // accepted; last bytes read
        std::chrono::steady_clock::time_point drained{};           // `out` last empty or shrunk
        std::chrono::steady_clock::time_point line_started{};  // API: the partial line's first byte
    };
    // A new connection on a listener whose `slots` are taken: the client idle longest (nothing
    // read for 1 s at least, nothing pending: no request bytes, no reply queued) makes room, else
    // the new one is refused; both counted, logged at most once in 10 s. Before, the new one was
    // closed silently: 32 idle connections to the metrics listener stopped every scrape.
    void admit(std::vector<Client> &list, std::size_t slots, int fd, const char *what);
    std::chrono::steady_clock::time_point admit_logged_{};
    int api_fd_ = -1, metrics_fd_ = -1, wake_fd_ = -1;
    std::vector<Client> api_clients_, metrics_clients_;

    std::mutex mu_;  // guards targets_, results_
    std::condition_variable cv_;
    std::vector<ProbeTarget> targets_;
    std::deque<ProbeResult> results_;
    bool kick_[2] = {false, false};  // [Probe]: probe now (backend set changed)
    std::atomic<bool> stop_{false};
    std::thread health_thr_, tel_thr_;
    // apply_results: probes this host could not make (HttpResult::local) last logged.
    std::chrono::steady_clock::time_point local_probe_logged_{};

    // vLLM KV events (backends with kv-events=): its own thread; created on first use.
    std::unique_ptr<KvEventSubscriber> kv_;
    std::uint64_t kv_resets_total_seen_ = 0;
    // A reset's affinity publish waits while the last one is under kKvResetPublishNs old (a
    // publisher resetting in every message made each wake-up a full policy compute), and its log
    // line is written at most every 10 s a backend, with the count since (the last count of a
    // flood is written by the tick once those 10 s are over).
    bool kv_publish_pending_ = false;
    std::uint64_t kv_last_publish_ns_ = 0;
    struct KvResets {
        std::uint64_t seen = 0;     // KvEventStats::resets acted on
        std::uint64_t last_ns = 0;  // its last log line
        std::uint64_t since = 0;    // resets not in a log line yet
    };
    std::map<std::uint16_t, KvResets> kv_resets_;  // by backend id; gone with the backend
};

}  // namespace kvsteer::control
