// The fleet kept in etcd (fleet-etcd): this appliance's member key under a lease, the epochs and
// the cookie keys read back every 200 ms by a thread of its own, and the fleet's operations as
// compare-and-swap txns. Keys under the prefix P (default /kvsteer/):
//   P fleet/members/<id>        {"mac": "..."}, under the member's lease (TTL 3 s, renewed 1/s)
//   P fleet/epochs              [[ids...], ...], oldest first
//   P config/cookie-key         32 hex digits (current), P config/cookie-key-previous
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/control/fleet.h"
#include "kvsteer/control/net.h"

namespace kvsteer::control {

// What the appliance last read from etcd.
struct FleetEtcdView {
    bool read = false;       // at least one complete read so far
    bool reachable = false;  // the last poll succeeded
    std::int64_t revision = 0;
    std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> alive{};  // members whose key exists
    std::optional<std::vector<MemberSet>> epochs;                // nullopt: no key yet
    std::int64_t epochs_version = 0, epochs_mod = 0;
    std::optional<std::array<std::uint64_t, 2>> cookie_key, cookie_key_prev;
    std::string error;      // the last error while unreachable
    std::uint64_t seq = 0;  // bumped whenever anything above changes
};

// The fleet every appliance computes from the same view: the members are those alive in etcd
// (their MACs), the epochs etcd's without the dead ones (as fleet.forget), epoch_no the epochs
// key's version; only `self` comes from `local`. Before the first read: `local` itself.
FleetState fleet_state_from_etcd(const FleetState &local, const FleetEtcdView &v);

// The epochs key's value and back.
std::string fleet_epochs_value(const std::vector<MemberSet> &epochs);
std::optional<std::vector<MemberSet>> parse_fleet_epochs_value(const std::string &v,
                                                               std::string *err);
// A cookie key as kvs_config holds it (two little-endian words) -> 32 hex digits (the reverse is
// parse_cookie_key_hex, net.h).
std::string cookie_key_hex(const std::array<std::uint64_t, 2> &k);

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

    // fleet.push / settle / forget: `op` applied to the state etcd holds now, written back with
    // a txn on the epochs key's mod_revision, retried on conflict. Blocks (500 ms a call; 5
    // attempts). false + err (one line); `changed` false when `op` left the epochs as they were.
    bool update_epochs(const std::function<bool(FleetState &, std::string *)> &op, bool *changed,
                       std::string *err);
    // A fresh random cookie key becomes the current one, the current one the previous (none in
    // etcd yet: `local_current`).
    bool rotate_cookie(const std::array<std::uint64_t, 2> &local_current, std::string *err);

   private:
    void loop();
    bool poll(std::string *err);  // one range of the prefix into view_
    bool keep_lease(std::string *err);
    std::string member_key(std::uint8_t id) const;

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
    std::thread thr_;
};

}  // namespace kvsteer::control
