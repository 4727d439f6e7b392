// Which backend holds which prefix, and what the affinity table should say: a pure class fed
// with binding reports and backend snapshots (no maps, no sockets), so a simulator can reuse it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/core/load_bound.h"

namespace kvsteer::control {

struct PolicyParams {
    std::uint32_t replication = 2;  // K: replicas of a hot prefix (<= KVS_MAX_REPLICAS)
    double hot_rps = 20.0;          // request rate on one prefix that makes it hot
    double cool_ratio = 0.5;        // a hot prefix cools below hot_rps * cool_ratio (hysteresis)
    // A prefix that became hot stays hot (keeps its replicas) at least this long, whatever its
    // rate and its holders' load say meanwhile: saturated holders hover around the load bound,
    // and without it the entry flips hot/cool on nearly every compute. 0 = off, the default:
    // in the simulator the flipping costs less than holding replicas (control/README.md).
    std::uint64_t min_hot_ns = 0;
    double rate_tau_s = 5.0;  // time constant of the request-rate average
    std::uint64_t ttl_ns =
        300'000'000'000ull;             // a backend forgets a prefix not requested for this long
    std::uint32_t max_entries = 32768;  // entries written to the table
    std::uint32_t index_max = 131072;   // prefixes remembered (LRU beyond); ~150 B each
    double load_factor = kDefaultLoadFactor;  // bounded load c (load_bound.h)
    // The bound's absolute slack: a holder counts as over the bound only past the least loaded
    // backend's load + 1 + this (affinity_bound, load_bound.h; abi.h holds the default).
    std::uint32_t load_slack = KVS_DEFAULT_LOAD_SLACK;
};

// What the policy knows about one backend at a point in time.
struct BackendSnapshot {
    std::uint16_t id = 0;
    bool eligible = false;           // up and not draining
    std::uint64_t in_flight = 0;     // binds - closes
    std::optional<double> queue;     // backend's own waiting queue (telemetry)
    std::optional<double> kv_usage;  // 0..1 (telemetry)
    std::optional<double> hit_rate;  // prefix-cache hit rate over the last window (telemetry)
    bool cache_reset = false;        // counters went backwards: the backend restarted, cache empty
};

struct DesiredEntry {
    std::uint64_t key = 0;
    std::uint8_t depth = 0;
    std::uint8_t n = 0;
    std::array<std::uint16_t, KVS_MAX_REPLICAS> backends{};
    bool pinned = false, hot = false;
    bool operator==(const DesiredEntry &) const = default;
};

// Depth recorded for the fixed-length prefix hash (it covers no whole block).
inline constexpr std::uint8_t kPrefixDepth = 0xff;

struct PolicyCounters {
    std::uint64_t reports = 0;
    std::uint64_t reports_ignored = 0;  // backend id out of range
    std::uint64_t keys_learned = 0;     // new prefix keys in the index
    std::uint64_t holders_added = 0;    // a backend newly known to hold a key
    std::uint64_t became_hot = 0;
    std::uint64_t cooled = 0;
    std::uint64_t held_hot = 0;        // computes that kept a prefix hot only for min_hot_ns
    std::uint64_t replicas_added = 0;  // extra replicas given to hot / overloaded prefixes
    std::uint64_t replicas_dropped = 0;
    std::uint64_t over_bound = 0;  // entries whose every holder was over its load bound
    std::uint64_t holders_expired = 0;
    std::uint64_t keys_expired = 0;
    std::uint64_t keys_evicted = 0;         // LRU beyond index_max
    std::uint64_t excluded_ineligible = 0;  // holder left out because down/draining
    std::uint64_t entries_no_backend = 0;   // nothing eligible: entry not written
    std::uint64_t entries_truncated = 0;    // beyond max_entries
    std::uint64_t holders_flushed = 0;      // dropped because the backend's cache was reset
    std::uint64_t ttl_shortened = 0;        // backend-rounds with a shortened TTL (cache pressure)
};

class AffinityPolicy {
   public:
    explicit AffinityPolicy(const PolicyParams &p = {});

    void set_params(const PolicyParams &p) { p_ = p; }
    const PolicyParams &params() const { return p_; }

    // One binding: `backend_id` now holds (or will hold) the prefix and every chained block.
    void on_report(const kvs_bind_report &r, std::uint64_t now_ns);
    // Latest view of the backends (replaces the previous one).
    void update_backends(std::span<const BackendSnapshot> backends, std::uint64_t now_ns);
    // Operator pins: always written (with only eligible backends) until unpinned.
    void pin(std::uint64_t key, std::vector<std::uint16_t> backends);
    bool unpin(std::uint64_t key);
    const std::map<std::uint64_t, std::vector<std::uint16_t>> &pins() const { return pins_; }
    // A backend was removed (or its id reused): forget everything it held.
    void forget_backend(std::uint16_t id);

    // Ages the index and returns the entries the table should hold, pins first, then most
    // recently requested prefixes.
    std::vector<DesiredEntry> compute(std::uint64_t now_ns);

    struct KeyInfo {
        std::uint64_t key;
        std::uint8_t depth;
        double rate;
        bool hot;
        std::vector<std::uint16_t> holders, extra;
    };
    std::optional<KeyInfo> info(std::uint64_t key, std::uint64_t now_ns) const;

    const PolicyCounters &counters() const { return c_; }
    std::size_t index_size() const { return nodes_.size(); }
    // Receives one line per decision (for debug logging). Off when empty.
    void set_decision_sink(std::function<void(const std::string &)> sink) {
        sink_ = std::move(sink);
    }

   private:
    struct Holder {
        std::uint16_t id;
        std::uint64_t last_ns;
    };
    struct Node {
        std::uint8_t depth = 0;
        bool hot = false;
        std::uint8_t n_holders = 0, n_extra = 0;
        double rate = 0;  // requests/s at rate_ns
        std::uint64_t rate_ns = 0;
        std::uint64_t hot_since_ns = 0;  // when it last became hot
        std::uint64_t last_ns = 0;
        std::array<Holder, KVS_MAX_REPLICAS> holders{};  // most recent servers of the prefix
        std::array<std::uint16_t, KVS_MAX_REPLICAS> extra{};
        std::uint64_t key = 0;
        std::list<Node *>::iterator lru;
    };
    struct BackendState {
        bool present = false;
        BackendSnapshot snap;
        std::optional<double> prev_hit_rate;
        double ttl_factor = 1.0;
        double load = 0;  // in_flight + queue
    };

    // One compute's view of the backends.
    struct Round {
        unsigned K = 1;                   // replicas per entry
        std::vector<std::uint16_t> elig;  // may take new flows
        double bound = 0;                 // load bound over them
        std::vector<double> planned;      // replicas added this round, by id (count as load)
    };

    void touch(std::uint64_t key, std::uint8_t depth, std::uint16_t backend, std::uint64_t now_ns);
    // compute(), step by step.
    Round begin_round() const;
    void add_pinned(std::vector<DesiredEntry> &out);
    void expire_idle(std::uint64_t now_ns);
    bool age_holders(Node &n, std::uint64_t now_ns);  // false when no holder is left
    DesiredEntry holders_entry(const Node &n, const Round &r, bool *all_over);
    void update_hot(Node &n, const DesiredEntry &e, bool all_over, const Round &r,
                    std::uint64_t now_ns);
    void add_replicas(Node &n, DesiredEntry &e, Round &r);
    double rate_at(const Node &n, std::uint64_t now_ns) const;
    bool eligible(std::uint16_t id) const;
    double load_of(std::uint16_t id) const;
    void erase(Node *n);

    PolicyParams p_;
    PolicyCounters c_;
    std::unordered_map<std::uint64_t, Node> nodes_;  // node-based: Node pointers stay valid
    std::list<Node *> lru_;                          // front = most recently requested
    std::map<std::uint64_t, std::vector<std::uint16_t>> pins_;
    std::vector<BackendState> backends_ = std::vector<BackendState>(KVS_MAX_BACKENDS);  // by id
    std::function<void(const std::string &)> sink_;
};

}  // namespace kvsteer::control
