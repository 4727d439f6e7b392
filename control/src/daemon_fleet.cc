// kvsteerd's fleet: the owner table recomputed from the membership epochs and written to
// kvs_fleet / kvs_owner on every change, and the fleet.* API commands (control/API.md).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "kvsteer/control/daemon.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

std::string hex64(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(v));
    return b;
}

json ids_json(MemberSet s) {
    json a = json::array();
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (s & (1u << id)) a.push_back(id);
    return a;
}

// An id as a number or a decimal string.
std::optional<std::uint8_t> json_id(const json &j, std::string *err) {
    if (j.is_number_integer()) return parse_appliance_id(j.dump(), err);
    if (j.is_string()) return parse_appliance_id(j.get<std::string>(), err);
    *err = "id must be an appliance id 0.." + std::to_string(KVS_MAX_APPLIANCES - 1);
    return std::nullopt;
}

// "0,1,2" or [0, 1, 2].
std::optional<MemberSet> json_members(const json &j, std::string *err) {
    if (j.is_string()) return parse_member_set(j.get<std::string>(), err);
    if (!j.is_array() || j.empty()) {
        *err = "members must be \"ID[,ID...]\" or a non-empty array of ids";
        return std::nullopt;
    }
    std::string s;
    for (const auto &e : j) {
        auto id = json_id(e, err);
        if (!id) return std::nullopt;
        s += (s.empty() ? "" : ",") + std::to_string(*id);
    }
    return parse_member_set(s, err);
}

}  // namespace

void Daemon::publish_fleet() {
    fleet_table_ = compute_fleet_table(fleet_);
    if (fleet_maps_.fleet && fleet_maps_.owner) fleet_writer_.publish(fleet_, fleet_table_);
    if (!fleet_.enabled()) return;
    std::string members;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (fleet_.macs[id])
            members += fmt::format("{}{}={}", members.empty() ? "" : " ", id,
                                   appliance_state_name(fleet_.state(id)));
    spdlog::info("fleet: self {}, epoch {} ({} retained), members {}, digest {}", fleet_.self,
                 fleet_.epoch_no, fleet_.epochs.size(), members, hex64(fleet_table_.digest));
}

json Daemon::fleet_json() const {
    const bool mapped = fleet_maps_.fleet && fleet_maps_.owner;
    json members = json::array(), epochs = json::array();
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!fleet_.macs[id]) continue;
        members.push_back({{"id", id},
                           {"mac", format_mac(*fleet_.macs[id])},
                           {"state", appliance_state_name(fleet_.state(id))},
                           {"buckets", fleet_table_.owned[id]},
                           {"self", id == fleet_.self}});
    }
    for (MemberSet e : fleet_.epochs) epochs.push_back(ids_json(e));
    return {{"enabled", fleet_.enabled()},
            {"self", fleet_.enabled() ? json(fleet_.self) : json(nullptr)},
            {"epoch", fleet_.epoch_no},
            {"epochs", epochs},
            {"members", members},
            {"buckets", KVS_OWNER_BUCKETS},
            {"digest", hex64(fleet_table_.digest)},
            {"mapped", mapped},
            {"generation", mapped ? json(fleet_writer_.generation()) : json(nullptr)},
            {"owner_active", mapped ? json(fleet_writer_.active()) : json(nullptr)}};
}

std::optional<json> Daemon::handle_fleet(const std::string &cmd, const json &req) {
    auto fail = [](const std::string &e) { return json{{"ok", false}, {"error", e}}; };
    if (cmd == "fleet.status") return json{{"ok", true}, {"fleet", fleet_json()}};
    if (cmd != "fleet.push" && cmd != "fleet.settle" && cmd != "fleet.forget" &&
        cmd != "fleet.member")
        return std::nullopt;
    if (!fleet_.enabled())
        return fail("no fleet: kvsteerd was started without fleet-self (and fleet-member)");
    std::string err;
    FleetState next = fleet_;
    if (cmd == "fleet.push") {
        if (!req.contains("members")) return fail("fleet.push needs \"members\" (ID[,ID...])");
        auto set = json_members(req["members"], &err);
        if (!set || !next.push(*set, &err)) return fail("fleet.push: " + err);
    } else if (cmd == "fleet.settle") {
        next.settle();
    } else {
        if (!req.contains("id")) return fail(cmd + " needs \"id\"");
        auto id = json_id(req["id"], &err);
        if (!id) return fail(cmd + ": " + err);
        if (cmd == "fleet.forget") {
            if (!next.forget(*id, &err)) return fail("fleet.forget: " + err);
        } else {
            if (!req.contains("mac") || !req["mac"].is_string())
                return fail("fleet.member needs \"mac\"");
            auto mac = parse_mac(req["mac"].get<std::string>(), &err);
            if (!mac || !next.set_mac(*id, *mac, &err)) return fail("fleet.member: " + err);
        }
    }
    const bool changed = !(next == fleet_);
    if (changed) {
        spdlog::info("fleet: {} {}", cmd,
                     req.contains("members") ? req["members"].dump()
                     : req.contains("id")    ? req["id"].dump()
                                             : std::string());
        fleet_ = std::move(next);
        publish_fleet();
    }
    return json{{"ok", true}, {"changed", changed}, {"fleet", fleet_json()}};
}

}  // namespace kvsteer::control
