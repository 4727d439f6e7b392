// The fleet kept in etcd (fleet-etcd): this appliance's member key under a lease, the epochs and
// the cookie keys read back by a thread of its own (at once when a watch of the prefix reports a
// change, every 1 s anyway, every 200 ms while the watch is down), and the fleet's operations as
// compare-and-swap txns. Keys under the prefix P (default /kvsteer/):
//   P fleet/members/<id>        {"mac": "..."}, under the member's lease (TTL 3 s, renewed 1/s)
//   P fleet/epochs              [[ids...], ...], oldest first
//   P config/cookie-key         32 hex digits (current), P config/cookie-key-previous
//   P config/backends/<ADDR:PORT>  {"spec": "ADDR:PORT,weight=W...", "drain": false}
//   P config/tunables/<name>    its value (kvsteerctl tune's names)
//   P config/seeded             put with the first appliance's backends and tunables; from then
//                               on etcd's are every appliance's (kvsteerctl changes go there)
//   P config/cookie-key-next    a rotation's new key, and P config/cookie-key-next-at (Unix ms):
//                               accepted by every appliance at once, signed with from next-at on
//   P fleet/hot/<id>            the member's busiest prefixes (fleet-share-hot), under its lease:
//                               [{"key": "16 hex", "depth": d, "rate": r, "hot": b,
//                                 "holders": ["ADDR:PORT", ...]}, ...]
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/fleet.h"
#include "kvsteer/control/net.h"

namespace kvsteer::control {

// One prefix of an appliance's P fleet/hot/<id> (fleet-share-hot): its hash, depth (kPrefixDepth
// for the prefix hash), the appliance's own decayed request rate (1 decimal), whether it is hot by
// the appliance's own evidence, and its holders and extra replicas as backend addresses (backend
// ids are each appliance's own).
struct FleetHotKey {
    std::uint64_t key = 0;
    std::uint8_t depth = 0;
    double rate = 0;
    bool hot = false;
    std::vector<std::string> holders;  // ADDR:PORT (BackendSpec.ep.str())
    bool operator==(const FleetHotKey &) const = default;
};
// The most prefixes one appliance shares.
inline constexpr std::size_t kFleetHotMax = 64;
// The list as P fleet/hot/<id> holds it (compact JSON) and back. The parser refuses anything but
// an array of at most kFleetHotMax such objects (unknown fields are ignored).
std::string fleet_hot_value(const std::vector<FleetHotKey> &keys);
std::optional<std::vector<FleetHotKey>> parse_fleet_hot_value(const std::string &v,
                                                              std::string *err);

// The other members' hot lists (all but `self`'s) as AffinityPolicy's remote state: holders mapped
// by address to this appliance's backend ids (`by_addr`), addresses it has no backend for skipped
// and counted in *unknown. One RemoteKey per member and prefix, in member order (set_remote
// merges them: rates summed, holders in that order).
std::vector<RemoteKey> fleet_remote_keys(
    const std::array<std::optional<std::vector<FleetHotKey>>, KVS_MAX_APPLIANCES> &lists,
    std::uint8_t self, const std::map<std::string, std::uint16_t> &by_addr, std::size_t *unknown);

// What the appliance last read from etcd.
struct FleetEtcdView {
    bool read = false;       // at least one complete read so far
    bool reachable = false;  // the last poll succeeded
    std::int64_t revision = 0;
    std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> alive{};  // members whose key exists
    // nullopt: no key yet (or none that parsed so far). A value that does not parse keeps the
    // last good epochs here, its error in epochs_error; epochs_mod is the key's own (0: no key).
    std::optional<std::vector<MemberSet>> epochs;
    std::int64_t epochs_version = 0, epochs_mod = 0;
    std::string epochs_error;
    std::optional<std::array<std::uint64_t, 2>> cookie_key, cookie_key_prev, cookie_key_next;
    std::int64_t cookie_next_at_ms = 0;  // Unix ms
    std::int64_t cookie_mod = 0;         // cookie-key's mod_revision
    // The shared configuration (config/...): meaningful once config_seeded.
    bool config_seeded = false;
    std::map<std::string, std::string> backends;       // ADDR:PORT -> its value
    std::map<std::string, std::int64_t> backends_mod;  // ADDR:PORT -> its key's mod_revision
    std::map<std::string, std::string> tunables;       // name -> value
    // The configuration's generation: the version of P config/generation, put after every change
    // of the shared configuration (0: none since it was seeded). The same number everywhere.
    std::int64_t config_generation = 0;
    // What each alive member says of itself (its member key's value: mac, healthy, digest, ...),
    // and whether it says its dataplane is unhealthy (such a member owns no bucket).
    std::array<std::string, KVS_MAX_APPLIANCES> reports{};
    std::array<bool, KVS_MAX_APPLIANCES> unhealthy{};
    // Each member's P fleet/hot/<id>, parsed (nullopt: none, or a value that did not parse).
    std::array<std::optional<std::vector<FleetHotKey>>, KVS_MAX_APPLIANCES> hot{};
    // P fleet/returning/<id>: the member left the owners by its own epoch (`to`, from `from`) and
    // re-enters when its dataplane beats; kept in etcd so that a kvsteerd restarted meanwhile
    // still re-enters (Daemon::fleet_follow_health). Value "FROM;TO" (member_set_str each).
    std::array<std::optional<std::pair<MemberSet, MemberSet>>, KVS_MAX_APPLIANCES> returning{};
    std::uint64_t hot_bad = 0;  // hot values refused so far (each key and version once)
    // Our own member key written by someone else since our newest put of it: another appliance
    // configured with this one's fleet-self (it overwrites our MAC and report). Its lease and
    // MAC, the last such write seen since this kvsteerd started; empty: none.
    std::string self_conflict;
    std::string error;      // the last error while unreachable
    std::uint64_t seq = 0;  // bumped whenever anything above changes
};

// What a member reports of itself besides its MAC (its member key's value; Daemon's
// check_dataplane sets it) compared with this appliance's own: the fleet agrees when every alive
// member reports the same owner-table digest, cookie fingerprint, tables and lookup digests
// (strings) and configuration generation (an integer). Any member can put anything there, so
// neither function throws: a field missing or of another type disagrees.
struct FleetReportWant {
    std::string digest, cookie, tables, lookup;
    std::int64_t config_generation = -1;
};
bool fleet_report_agrees(const nlohmann::json &report, const FleetReportWant &want);
// The fields of a report that have the wrong type, one line ("" when none): logged when read.
std::string fleet_report_problems(const nlohmann::json &report);

// The fleet every appliance computes from the same view: the members are those alive in etcd
// (their MACs), the epochs etcd's without the dead ones (as fleet.forget), epoch_no the epochs
// key's version; only `self` comes from `local`. Before the first read: `local` itself.
// Members that say their dataplane is unhealthy own nothing while they say so: an epoch without
// them is appended (they stay previous owners, for the flows their XDP still carries), unless
// that would leave no owner at all.
FleetState fleet_state_from_etcd(const FleetState &local, const FleetEtcdView &v);

// The epochs key's value and back.
std::string fleet_epochs_value(const std::vector<MemberSet> &epochs);
std::optional<std::vector<MemberSet>> parse_fleet_epochs_value(const std::string &v,
                                                               std::string *err);
// The cookie keys an appliance uses at `now_unix_ms` (wall clock: the cookies' time slots assume
// the appliances' clocks agree already): [0] signs, [1] is accepted too. A rotation is two-phase
// so that no handshake fails however the polls of the appliances interleave: until next-at every
// appliance signs with the current key and accepts the next one; from next-at it signs with the
// next one and accepts the current one. `fallback_prev`: the accepted key when etcd has no
// previous. nullopt: etcd has no cookie key.
struct CookieKeys {
    std::array<std::uint64_t, 2> sign{}, accept{};
};
std::optional<CookieKeys> fleet_cookie_keys(const FleetEtcdView &v, std::int64_t now_unix_ms,
                                            const std::array<std::uint64_t, 2> &fallback_prev);
// How long after a rotation its key signs (every appliance reads etcd at a change it watches, and
// every 1 s anyway; every 200 ms while its watch is down).
inline constexpr std::int64_t kCookieActivateMs = 2000;

// A cookie key as kvs_config holds it (two little-endian words) -> 32 hex digits (the reverse is
// parse_cookie_key_hex, net.h).
std::string cookie_key_hex(const std::array<std::uint64_t, 2> &k);

// The watch of the prefix (a second thread): while it is open, a change is read at once and the
// prefix is otherwise read every second; while it is not, every 200 ms (and it is reopened every
// second).
struct FleetEtcdWatch {
    bool active = false;         // a watch is open (etcd said it is created)
    std::uint64_t events = 0;    // events it delivered
    std::uint64_t reopened = 0;  // opened again after one was lost
    std::uint64_t refused = 0;   // answers refused (bad head or framing, oversized, not JSON)
    std::string error;           // the last reason one was lost or could not be opened ("": none)
};

class FleetEtcd {
   public:
    // `local`: the configured fleet (self, its MAC, the epochs put when etcd has none yet).
    // `changed` is called from the thread when the view changed.
    FleetEtcd(Endpoint ep, std::string prefix, FleetState local, std::function<void()> changed);
    ~FleetEtcd();
    FleetEtcd(const FleetEtcd &) = delete;
    FleetEtcd &operator=(const FleetEtcd &) = delete;

    void start();
    FleetEtcdView view() const;
    const Endpoint &endpoint() const { return ep_; }
    const std::string &prefix() const { return prefix_; }
    std::int64_t lease() const { return lease_.load(); }
    FleetEtcdWatch watch_status() const;

    // fleet.push / settle / forget: `op` applied to the state etcd holds now, written back with
    // a txn on the epochs key's mod_revision, retried on conflict. Blocks (500 ms a call; 5
    // attempts). false + err (one line); `changed` false when `op` left the epochs as they were.
    // `extra` (optional), which `op` may fill: more puts and deletes (keys under the prefix) in
    // the same txn, made even when the epochs are unchanged.
    struct TxnExtra {
        std::vector<std::pair<std::string, std::string>> puts;
        std::vector<std::string> deletes;
        bool empty() const { return puts.empty() && deletes.empty(); }
    };
    bool update_epochs(const std::function<bool(FleetState &, std::string *)> &op, bool *changed,
                       std::string *err, TxnExtra *extra = nullptr);
    // The returning marker's key suffix and value (FleetEtcdView::returning).
    static std::string returning_key(std::uint8_t id);
    static std::string returning_value(MemberSet from, MemberSet to);
    // A fresh random cookie key becomes the next one, signing kCookieActivateMs from now (the
    // effective current one then the previous; fleet_cookie_keys). None in
    // etcd yet: `local_current`).
    // Refused until the last rotation's key has signed for `hold_ms` more (twice the cookie
    // period: a cookie it signed last stays valid that long, and a second rotation drops it).
    bool rotate_cookie(const std::array<std::uint64_t, 2> &local_current, std::int64_t hold_ms,
                       std::string *err);
    // The configuration put under P config/ (key suffix, value) when etcd has none yet (no
    // config/seeded): call before start().
    void set_seed(std::vector<std::pair<std::string, std::string>> config);
    // The cookie key put as P config/cookie-key when etcd has none (this appliance's, configured
    // or drawn): every appliance then signs with the same one (random keys of their own made the
    // owner refuse most handshakes another appliance answered). Call before start().
    void set_cookie_seed(const std::array<std::uint64_t, 2> &key) { cookie_seed_ = key; }
    // One key under P config/ put or deleted (a kvsteerctl change in a fleet), then read back.
    bool put_config(const std::string &suffix, const std::string &value, std::string *err);
    bool delete_config(const std::string &suffix, std::string *err);
    // The same, only while the key's mod_revision is still `mod` (0: it does not exist): a
    // change made from what this appliance read. false + err naming the conflict when another
    // appliance changed the key meanwhile (a plain put lost one of two concurrent changes).
    bool put_config_if(const std::string &suffix, const std::string &value, std::int64_t mod,
                       std::string *err);
    bool delete_config_if(const std::string &suffix, std::int64_t mod, std::string *err);
    // What this appliance says of itself in its member key besides its MAC (an object: healthy,
    // digest, ...); put again (same lease) when it changes.
    void set_report(const nlohmann::json &report);
    // Puts the report set last now, on the caller's thread, instead of at the thread's next round
    // (nothing to do when it was put already or there is no lease). A re-entry puts its healthy
    // report before its epoch: the members that read the epoch with this appliance in it beside a
    // report still saying unhealthy each computed an epoch without it, for up to a round (its
    // buckets' owner changing twice). false + err when the put failed.
    bool put_report_now(std::string *err);
    // This appliance's P fleet/hot/<self> (fleet_hot_value), put under its lease by the thread at
    // its next round when it differs from the last put (again after a new lease). Empty: none.
    void set_hot(std::string value);

   private:
    void loop();
    void watch_loop();            // the watch thread
    bool poll(std::string *err);  // one range of the prefix into view_
    bool keep_lease(std::string *err);
    std::string member_key(std::uint8_t id) const;
    // FleetEtcdView::self_conflict: what another writer of our member key left there.
    static std::string self_conflict_text(std::int64_t lease, const nlohmann::json &value);
    void note_self_conflict(const std::string &what);
    std::string member_value() const;  // mac + report_
    // One put or delete under P config/, then a poll.
    bool change_config(const std::string &path, const nlohmann::json &body, std::string *err);
    bool put_report(std::string *err);  // when report_ changed since the last put
    bool put_hot(std::string *err);     // when hot_ changed since the last put

    Endpoint ep_;
    std::string prefix_;
    FleetState local_;
    std::function<void()> changed_;
    std::atomic<std::int64_t> lease_{0};
    std::chrono::steady_clock::time_point last_keepalive_{};

    mutable std::mutex mu_;  // guards view_, stop_
    std::condition_variable cv_;
    FleetEtcdView view_;
    bool stop_ = false;
    std::vector<std::pair<std::string, std::string>> seed_;    // set before start()
    std::optional<std::array<std::uint64_t, 2>> cookie_seed_;  // set before start()
    nlohmann::json report_ = nlohmann::json::object();         // guarded by mu_
    std::string report_put_;                                   // member_value() last put (put_mu_)
    // The store revision of our newest put of our member key (its mod_revision then): a later
    // one under another lease is someone else's write (FleetEtcdView::self_conflict).
    std::atomic<std::int64_t> self_put_rev_{0};
    std::mutex put_mu_;    // the member key's puts: the thread's and put_report_now's
    std::string hot_;      // guarded by mu_
    std::string hot_put_;  // hot_ last put (thread)
    std::map<std::string, std::int64_t> hot_bad_seen_;    // key -> mod_revision (mu_)
    std::map<std::string, std::string> report_bad_seen_;  // member key -> value logged (mu_)
    std::uint64_t hot_bad_ = 0;                           // guarded by mu_
    std::atomic<std::uint64_t> poll_ticket_{0};  // poll(): each read's place in start order
    std::uint64_t stored_ticket_ = 0;            // the read view_ holds (mu_)
    std::thread thr_;
    // The watch: wake_ (mu_) asks the poller to read the prefix now; stopping_ ends the watch's
    // waits (its socket is polled in slices).
    bool wake_ = false;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> watch_active_{false};
    FleetEtcdWatch watch_;  // guarded by mu_
    std::thread watch_thr_;
};

}  // namespace kvsteer::control
