// fleet-share-hot (control/README.md "Hot prefixes across the fleet"): this appliance's busiest
// prefixes put into etcd once a second, with their holders as backend addresses; the other
// members' lists read back, mapped to this appliance's backend ids and handed to AffinityPolicy
// as remote state (their rate added to the local one, their holders joining the entries).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <map>
#include <vector>

#include "kvsteer/control/daemon.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

constexpr std::uint64_t kShareEveryNs = 1'000'000'000ull;

}  // namespace

bool Daemon::hot_share_on() const {
    return etcd_ && cfg().fleet_share_hot;
}

void Daemon::share_hot(std::uint64_t now_ns) {
    if (!hot_share_on() || now_ns < hot_.next_ns) return;
    hot_.next_ns = now_ns + kShareEveryNs;
    const PolicyParams &p = core_.policy().params();
    std::vector<FleetHotKey> list;
    for (const auto &k : core_.policy().top(kFleetHotMax, p.hot_rps / 4, now_ns)) {
        FleetHotKey h;
        h.key = k.key;
        h.depth = k.depth;
        h.rate = k.rate;
        h.hot = k.own_hot;  // a remote "hot" is never passed on
        for (const auto *ids : {&k.holders, &k.extra})
            for (std::uint16_t id : *ids) {
                const BackendRuntime *b = core_.backend(id);
                if (!b) continue;
                std::string addr = b->spec.ep.str();
                if (std::find(h.holders.begin(), h.holders.end(), addr) == h.holders.end())
                    h.holders.push_back(std::move(addr));
            }
        list.push_back(std::move(h));
    }
    hot_.shared = list.size();
    etcd_->set_hot(fleet_hot_value(list));  // put by FleetEtcd's thread only when it changed
    map_remote_hot();                       // the backends may have changed since
}

void Daemon::apply_fleet_hot(const FleetEtcdView &v) {
    if (!hot_share_on()) return;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        // An unreachable etcd: nothing remote (it would only go stale).
        hot_.lists[id] = v.reachable && id != cfg().fleet.self ? v.hot[id] : std::nullopt;
    map_remote_hot();
}

void Daemon::map_remote_hot() {
    std::map<std::string, std::uint16_t> by_addr;
    for (const auto &[id, b] : core_.backends()) by_addr.emplace(b.spec.ep.str(), id);
    std::size_t unknown = 0, from = 0;
    for (const auto &l : hot_.lists) from += l ? 1 : 0;
    auto keys = fleet_remote_keys(hot_.lists, cfg().fleet.self, by_addr, &unknown);
    if (unknown && unknown != hot_.unknown_holders)
        spdlog::debug(
            "fleet: {} holder addresses in the other appliances' hot lists are not backends "
            "here (skipped)",
            unknown);
    hot_.from = from;
    hot_.unknown_holders = unknown;
    core_.set_remote_hot(std::move(keys));  // merged per key (rates summed) by the policy
}

json Daemon::hot_share_json(const FleetEtcdView &v) const {
    if (!hot_share_on()) return {{"enabled", false}};
    return {{"enabled", true},
            {"shared", hot_.shared},
            {"remote_keys", core_.policy().remote_size()},
            {"from_members", hot_.from},
            {"unknown_holders", hot_.unknown_holders},
            {"bad_values", v.hot_bad}};
}

}  // namespace kvsteer::control
