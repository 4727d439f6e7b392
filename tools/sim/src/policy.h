// The routing-policy interface of the simulator and the factory of every policy it knows.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/core/load_bound.h"
#include "kvsteer/model/scheduler.h"
#include "workload.h"

namespace kvsteer::sim {

// What a policy may look at when it decides. Policies read only what their real counterpart
// could know: in_flight is the balancer's own count of bound, unfinished requests; `servers` is
// there for the oracle and for scraping telemetry (kvsteer's daemon reads only counters).
struct Cluster {
    std::span<const uint32_t> in_flight;
    std::span<const std::unique_ptr<model::Scheduler>> servers;
    uint32_t size() const { return uint32_t(in_flight.size()); }
};

// The first `max` bytes of a request: what a balancer holds of it when it decides.
inline std::span<const std::uint8_t> flight_bytes(
    std::string_view s, std::size_t max = std::numeric_limits<std::size_t>::max()) {
    return {reinterpret_cast<const std::uint8_t *>(s.data()), std::min(s.size(), max)};
}

// kvsteer's defaults are the shipped ones: abi.h's KVS_DEFAULT_*, the daemon's PolicyParams.
struct PolicyParams {
    uint32_t prefix_len =
        KVS_DEFAULT_PREFIX_LEN;  // bytes hashed for the fixed prefix (kvsteer, CH, CH-BL)
    uint32_t block_size = KVS_DEFAULT_BLOCK_SIZE;        // bytes per chained block (kvsteer)
    uint32_t max_blocks = KVS_MAX_REPORT_BLOCKS;         // chained blocks hashed (kvsteer)
    uint32_t first_flight = KVS_DEFAULT_MAX_HELD_BYTES;  // bytes kvsteer holds before binding
    double load_factor = kDefaultLoadFactor;             // bounded load c (kvsteer, CH-BL)
    uint32_t load_slack = KVS_DEFAULT_LOAD_SLACK;  // kvsteer: affinity bound >= least + 1 + this
    uint32_t replication =
        control::PolicyParams{}.replication;  // K replicas of a hot prefix (kvsteer daemon)
    double hot_rps =
        control::PolicyParams{}.hot_rps;  // kvsteer daemon: rate that makes a prefix hot
    // kvsteer daemon: a prefix that became hot stays hot this long
    double min_hot_s = double(control::PolicyParams{}.min_hot_ns) / 1e9;
    double report_interval_s = 0.150;   // kvsteer daemon: binding reports drained + table published
    double telemetry_interval_s = 1.0;  // kvsteer daemon: backend /metrics scrape
    // kvsteer daemon: its clock runs this many times slower than the servers' (a kvsteerd in front
    // of servers emulated N times faster than real time): its intervals, TTLs and rates, in its own
    // seconds, last N times longer in the servers' time.
    double daemon_time_scale = 1.0;
    bool affinity = true;    // kvsteer: run the daemon's affinity policy (else Maglev only)
    double bound_slack = 0;  // kvsteer-slack (a proposal): bound >= mean + this many requests
    // kvsteer: session affinity by header (kvsteerd's session-headers / session-cap); the
    // kvsteer-session policy sets session_headers to the workload's header, kvsteer leaves it off.
    std::string session_headers;
    std::string session_header_sent;  // the header the workload sends (--session-header)
    uint32_t session_cap = KVS_DEFAULT_SESSION_CAP;
    // Radix-tree (SGLang Model Gateway cache_aware) parameters, the gateway's current defaults.
    double cache_threshold = 0.3;
    uint32_t balance_abs_threshold = 64;
    double balance_rel_threshold = 1.5;
    // A weak match (<= cache_threshold) goes to the least loaded worker (the gateway's rule);
    // true: to the worker with the smallest tree (the older sgl-router's rule).
    bool radix_weak_to_smallest_tree = false;
    double eviction_interval_s = 60.0;
    uint64_t max_tree_size = uint64_t(1) << 24;  // characters per worker tree
    uint32_t kv_block_bytes = 64;  // bytes per server KV block (radix tree symbol size)
    uint64_t seed = 1;
};

class Policy {
   public:
    virtual ~Policy() = default;
    virtual std::string name() const = 0;
    // Picks a server for request `idx` arriving at `now`.
    virtual uint32_t choose(uint32_t idx, const SimRequest &r, double now, const Cluster &c) = 0;
    virtual void on_bound(uint32_t /*idx*/, uint32_t /*server*/, double /*now*/) {}
    virtual void on_finished(uint32_t /*idx*/, uint32_t /*server*/, double /*now*/) {}
    // The chosen server refused the request (larger than its whole cache): it never ran.
    virtual void on_rejected(uint32_t /*idx*/, uint32_t /*server*/, double /*now*/) {}
    // Periodic work (daemon ticks, tree eviction): the simulator calls tick() at next_tick().
    virtual double next_tick() const { return std::numeric_limits<double>::infinity(); }
    virtual void tick(double /*now*/, const Cluster & /*c*/) {}
    // Policy-specific counters for the report (how decisions were made).
    virtual std::map<std::string, double> counters() const { return {}; }
};

// Names: rr, least-loaded, ch, ch-bl, kvsteer, kvsteer-maglev, kvsteer-slack, kvsteer-session,
// radix, oracle.
const std::vector<std::string> &policy_names();
// nullptr for an unknown name.
std::unique_ptr<Policy> make_policy(const std::string &name, uint32_t servers,
                                    const PolicyParams &p);

std::unique_ptr<Policy> make_round_robin();
std::unique_ptr<Policy> make_least_loaded();
std::unique_ptr<Policy> make_consistent_hash(uint32_t servers, const PolicyParams &p, bool bounded);
std::unique_ptr<Policy> make_kvsteer(uint32_t servers, const PolicyParams &p);
std::unique_ptr<Policy> make_radix(uint32_t servers, const PolicyParams &p);
std::unique_ptr<Policy> make_oracle();

}  // namespace kvsteer::sim
