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
    // Its weight over the mean weight of its family's eligible backends (core's LoadView::share):
    // loads compare per unit of weight, as the dataplane's choice does. 1 when weights are equal.
    double share = 1.0;
    // Its address family (KVS_AF_INET / KVS_AF_INET6): a flow is bound within its own, so the
    // bound and the replicas are per family, as the dataplane's choice counts them.
    std::uint8_t family = KVS_AF_INET;
};

struct DesiredEntry {
    std::uint64_t key = 0;
    std::uint8_t depth = 0;
    std::uint8_t n = 0;
    std::array<std::uint16_t, KVS_MAX_REPLICAS> backends{};
    bool pinned = false, hot = false;
    bool operator==(const DesiredEntry &) const = default;
};

// What the other appliances of a fleet know of one prefix (fleet-share-hot, control/README.md),
// their holders mapped to this appliance's backend ids.
struct RemoteKey {
    std::uint64_t key = 0;
    std::uint8_t depth = 0;
    double rate = 0;                     // requests/s, summed over the other appliances
    bool hot = false;                    // one of them says it is hot
    std::vector<std::uint16_t> holders;  // local backend ids, in the order given
};

// Depth recorded for the fixed-length prefix hash (it covers no whole block).
inline constexpr std::uint8_t kPrefixDepth = 0xff;

struct PolicyCounters {
    std::uint64_t reports = 0;
    std::uint64_t reports_ignored = 0;  // backend id out of range
    std::uint64_t reports_unkeyed = 0;  // keyed on the 5-tuple: not learned
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
    // Remote state (set_remote). Prefixes that became hot only thanks to the other appliances
    // (their rate added to ours, or one of them says hot); remote holders written into entries
    // (counted each compute); entries written for prefixes this appliance has not seen itself
    // (counted each compute).
    std::uint64_t remote_became_hot = 0;
    std::uint64_t remote_holders_used = 0;
    std::uint64_t remote_entries = 0;
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
    // A backend was removed or its id taken by another: the id leaves every pin (a pin names a
    // backend, not a slot: another backend given the id must not inherit it); a pin left with no
    // backend is dropped. Returns the pins changed. (A cache reset keeps the pins: same backend.)
    std::size_t unpin_backend(std::uint16_t id);

    // Ages the index and returns the entries the table should hold, pins first, then most
    // recently requested prefixes.
    std::vector<DesiredEntry> compute(std::uint64_t now_ns);

    struct KeyInfo {
        std::uint64_t key;
        std::uint8_t depth;
        double rate;  // this appliance's requests only
        bool hot;
        std::vector<std::uint16_t> holders, extra;
        bool own_hot = false;  // hot by this appliance's evidence (not only because remote says so)
    };
    std::optional<KeyInfo> info(std::uint64_t key, std::uint64_t now_ns) const;
    // At most `max` prefixes by this appliance's own rate, highest first (ties by key), of those
    // with a rate >= min_rate or own_hot and something to say (a holder, an extra or own_hot):
    // what this appliance shares with the fleet.
    std::vector<KeyInfo> top(std::size_t max, double min_rate, std::uint64_t now_ns) const;

    // What the other appliances know (replaces the previous remote state; empty: none). At the
    // next compute(): a prefix's rate for the hot decision is the local one plus the remote one;
    // it is hot if remote says so; the remote holders (eligible ones, not there already) follow
    // the local holders (and a hot prefix's replicas kept from before) in its entry, up to K,
    // before any new replica is chosen; a remote prefix unknown here that is hot or has holders
    // gets an entry of its remote holders (after the local entries, highest remote rate first).
    // Nothing remote is learned into the index: remote state is never shared on.
    void set_remote(std::vector<RemoteKey> keys);
    std::size_t remote_size() const { return remote_keys_.size(); }

    const PolicyCounters &counters() const { return c_; }
    // Carries counters over from the policy this one replaces (metrics are counters: they must
    // not go back while the process lives).
    void carry_counters(const PolicyCounters &c) { c_ = c; }
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
        bool own_hot = false;  // hot without counting a remote "hot" (what is shared)
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
        unsigned K = 1;                    // replicas per entry
        std::vector<std::uint16_t> elig;   // may take new flows
        std::array<double, 2> bound{};     // load bound over them, per family (family_slot)
        std::array<unsigned, 2> n_elig{};  // how many of them, per family
        std::vector<double> planned;       // replicas added this round, by id (count as load)
    };
    unsigned family_slot(std::uint16_t id) const;

    void touch(std::uint64_t key, std::uint8_t depth, std::uint16_t backend, std::uint64_t now_ns);
    // compute(), step by step.
    Round begin_round() const;
    void add_pinned(std::vector<DesiredEntry> &out);
    void expire_idle(std::uint64_t now_ns);
    bool age_holders(Node &n, std::uint64_t now_ns);  // false when no holder is left
    DesiredEntry holders_entry(const Node &n, const Round &r, bool *all_over);
    void update_hot(Node &n, const DesiredEntry &e, bool all_over, const Round &r,
                    const RemoteKey *rk, std::uint64_t now_ns);
    void add_replicas(Node &n, DesiredEntry &e, Round &r, const RemoteKey *rk);
    void add_remote(DesiredEntry &e, const RemoteKey &rk, const Round &r);
    void add_remote_only(std::vector<DesiredEntry> &out, const Round &r);
    const RemoteKey *remote(std::uint64_t key) const;
    double rate_at(const Node &n, std::uint64_t now_ns) const;
    bool eligible(std::uint16_t id) const;
    double share_of(std::uint16_t id) const;  // BackendSnapshot::share (1 when not known)
    double load_of(std::uint16_t id) const;
    void erase(Node *n);

    PolicyParams p_;
    PolicyCounters c_;
    std::unordered_map<std::uint64_t, Node> nodes_;  // node-based: Node pointers stay valid
    std::list<Node *> lru_;                          // front = most recently requested
    std::map<std::uint64_t, std::vector<std::uint16_t>> pins_;
    std::vector<BackendState> backends_ = std::vector<BackendState>(KVS_MAX_BACKENDS);  // by id
    std::function<void(const std::string &)> sink_;
    std::vector<RemoteKey> remote_keys_;                     // set_remote, highest rate first
    std::unordered_map<std::uint64_t, std::size_t> remote_;  // key -> its index in remote_keys_
};

}  // namespace kvsteer::control
