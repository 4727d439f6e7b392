// kvsteerd's fleet: the owner table recomputed from the membership epochs and written to
// kvs_fleet / kvs_owner on every change, and the fleet.* API commands (control/API.md).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>

#include "publish_batch.h"
#include "kvsteer/control/daemon.h"
#include "kvsteer/control/json_bounded.h"
#include "mono_clock.h"

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

// A fingerprint of a cookie key (the key itself stays out of the API).
std::string key_fingerprint(const __u64 *k) {
    return hex64(XXH3_64bits(k, 2 * sizeof *k));
}

}  // namespace

void Daemon::apply_fleet_etcd() {
    if (!etcd_) return;
    const FleetEtcdView v = etcd_->view();
    if (v.seq == etcd_seq_) return;
    etcd_seq_ = v.seq;
    // One publish for the whole change: applied backend by backend (a removal, a drain, a new
    // spec each rebuilt the lookup table and slept out the table grace twice), a change of many
    // backends stalled the loop for seconds (no tick, no API answer).
    const PublishBatch batch(core_, "fleet from etcd");
    FleetState next = fleet_state_from_etcd(cfg().fleet, v);
    if (v.read && !fleet_etcd_applied_) {
        fleet_etcd_applied_ = true;
        fleet_etcd_read_ns_ = mono_ns();
    }
    if (!(next == fleet_) || (fleet_publish_pending_ && v.read)) {
        fleet_publish_pending_ = false;
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
            const bool was = fleet_.alive() & (1u << id), is = next.alive() & (1u << id);
            if (was && !is && !v.alive[id])
                spdlog::warn(
                    "fleet: appliance {} has no key in etcd (stopped renewing its "
                    "lease): removed from every epoch",
                    id);
        }
        fleet_ = std::move(next);
        publish_fleet();
    }
    apply_fleet_cookie(v);
    apply_fleet_config(v);
    apply_fleet_hot(v);
}

// Also every tick: a rotation's key starts signing at a time, not at a change of etcd.
void Daemon::apply_fleet_cookie(const FleetEtcdView &v) {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    const auto k = fleet_cookie_keys(v, now, cfg().cookie_key);
    if (!k || (cfg().cookie_key == k->sign && cfg().cookie_key_prev == k->accept)) return;
    core_.set_cookie_keys(k->sign, k->accept);
    spdlog::info("fleet: cookie keys from etcd (signing {}, also accepted {})",
                 key_fingerprint(kvs_config_sign_key(maps_.config)),
                 key_fingerprint(kvs_config_prev_key(maps_.config)));
}

std::string Daemon::fleet_digest_hex() const {
    return hex64(fleet_table_.digest);
}

// What the backend lookup table is computed from, independent of the local backend ids: every
// backend's spec, weight, drain and health state (sorted by address), and the tunables.
std::string Daemon::tables_digest_hex() const {
    std::vector<std::string> parts;
    for (const auto &[id, b] : core_.backends())
        parts.push_back(
            fmt::format("{}|{}|{}", backend_spec_str(b.spec), b.draining, b.map_state()));
    std::sort(parts.begin(), parts.end());
    std::string all = tunables_json().dump();
    for (const auto &p : parts) all += "\n" + p;
    return hex64(XXH3_64bits(all.data(), all.size()));
}

std::string Daemon::lookup_digest_hex() const {
    return hex64(core_.lookup_digest());
}

std::string Daemon::fleet_cookie_fingerprint() const {
    return key_fingerprint(kvs_config_sign_key(maps_.config));
}

// Each alive member as it reports itself in etcd, and whether the fleet agrees: every member
// reports the owner-table digest and cookie key this appliance has.
json Daemon::fleet_members_view(const FleetEtcdView &v) const {
    json out = json::array();
    bool agree = true;
    const FleetReportWant want{fleet_digest_hex(), fleet_cookie_fingerprint(), tables_digest_hex(),
                               lookup_digest_hex(), config_generation_};
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!v.alive[id]) continue;
        // A member's report, from etcd, is answered back in fleet.status: bounded in depth.
        json r = parse_json_bounded(v.reports[id]);
        if (!r.is_object()) r = json::object();
        // Typed look-ups (not json::value(), which throws on a field of another type).
        const bool same = fleet_report_agrees(r, want);
        r["id"] = id;
        r["agrees"] = same;
        agree = agree && same;
        out.push_back(r);
    }
    return {{"members", out}, {"agree", agree}};
}

json Daemon::fleet_etcd_json() const {
    if (!etcd_) return nullptr;
    const FleetEtcdView v = etcd_->view();
    json alive = json::array();
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (v.alive[id]) alive.push_back({{"id", id}, {"mac", format_mac(*v.alive[id])}});
    // Members that left the owners by an epoch of their own and re-enter when their dataplane
    // beats (P fleet/returning/<id>): "FROM;TO".
    json returning = json::object();
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (v.returning[id])
            returning[std::to_string(id)] =
                FleetEtcd::returning_value(v.returning[id]->first, v.returning[id]->second);
    const FleetEtcdWatch w = etcd_->watch_status();
    const json watch = {{"active", w.active},
                        {"events", w.events},
                        {"reopened", w.reopened},
                        {"refused", w.refused},
                        {"error", w.error.empty() ? json(nullptr) : json(w.error)}};
    return {{"endpoint", "http://" + etcd_->endpoint().str()},
            {"prefix", etcd_->prefix()},
            {"reachable", v.reachable},
            {"read", v.read},
            {"revision", v.revision},
            {"alive", alive},
            {"returning", returning},
            {"reported", fleet_members_view(v)},
            {"epochs_version", v.epochs_version},
            {"epochs_error", v.epochs_error.empty() ? json(nullptr) : json(v.epochs_error)},
            {"hot", hot_share_json(v)},
            {"lease", etcd_->lease() ? json(hex64(static_cast<std::uint64_t>(etcd_->lease())))
                                     : json(nullptr)},
            {"error", v.reachable ? json(nullptr) : json(v.error)},
            {"watch", watch},
            {"self_conflict", v.self_conflict.empty() ? json(nullptr) : json(v.self_conflict)}};
}

// The table is computed from the shared state less the members that stopped answering pings and
// that no member answering us still hears (fleet_ping.h corroborated_silence): every appliance
// that hears the same silence computes the same table. A silent member keeps its MAC (so its
// pongs are still heard) and comes back when it answers again or a member answering us hears it.
void Daemon::publish_fleet() {
    FleetState eff = fleet_;
    eff.drop(fleet_silent_);
    fleet_table_ = compute_fleet_table(eff);
    if (fleet_maps_.fleet && fleet_maps_.owner) fleet_writer_.publish(eff, fleet_table_);
    if (pinger_) pinger_->set_members(fleet_.self, fleet_.macs);
    if (!fleet_.enabled()) return;
    std::string members;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (fleet_.macs[id])
            members += fmt::format("{}{}={}{}", members.empty() ? "" : " ", id,
                                   appliance_state_name(eff.state(id)),
                                   (fleet_silent_ & (1u << id)) ? "(silent)" : "");
    spdlog::info("fleet: self {}, epoch {} ({} retained), members {}, digest {}", fleet_.self,
                 fleet_.epoch_no, fleet_.epochs.size(), members, hex64(fleet_table_.digest));
}

void Daemon::start_pinger() {
    if (!fleet_.enabled() || !cfg().fleet_ping_ms) return;
    if (cfg().interface.empty()) {
        spdlog::warn(
            "fleet: no pings (fleet-ping needs interface, not appliance-mac): a crashed appliance "
            "is noticed only when its etcd lease expires or by fleet forget");
        return;
    }
    if (!fleet_maps_.heard) return;  // no maps (tests): nothing would hear the pongs
    auto p = std::make_unique<FleetPinger>(
        cfg().interface, std::chrono::milliseconds(cfg().fleet_ping_ms), cfg().fleet_ping_misses,
        fleet_maps_.heard, fleet_maps_.fleet, [this] {
            std::uint64_t one = 1;
            [[maybe_unused]] auto w = write(wake_fd_, &one, sizeof one);
        });
    p->set_members(fleet_.self, fleet_.macs);
    std::string err;
    if (!p->start(&err)) {
        spdlog::warn(
            "{}: a crashed appliance is noticed only when its etcd lease expires or by "
            "fleet forget",
            err);
        return;
    }
    pinger_ = std::move(p);
    spdlog::info("fleet: pinging the other appliances on {} every {} ms ({} unanswered: silent)",
                 cfg().interface, cfg().fleet_ping_ms, cfg().fleet_ping_misses);
}

void Daemon::apply_fleet_silence() {
    if (!pinger_) return;
    const PingStatus ps = pinger_->status();  // both sets from one round
    const MemberSet s = ps.silent, here = ps.silent_here;
    if (s == fleet_silent_ && here == fleet_silent_here_) return;
    const bool table_changes = s != fleet_silent_;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        const auto bit = static_cast<MemberSet>(1u << id);
        const bool was = fleet_silent_ & bit, is = s & bit;
        const bool was_here = fleet_silent_here_ & bit, is_here = here & bit;
        if (is && !was)
            spdlog::warn(
                "fleet: appliance {} left {} pings in a row unanswered{}: out of the owner table "
                "(clients of its flows get RSTs)",
                id, cfg().fleet_ping_misses,
                was_here ? ", and no appliance that answers us hears it now" : "");
        else if (is_here && !was_here)
            spdlog::warn(
                "fleet: appliance {} left {} pings in a row unanswered here, but an appliance "
                "that answers us still hears it: kept in the owner table (its flows are sent on "
                "to it)",
                id, cfg().fleet_ping_misses);
        else if (was && !is_here)
            spdlog::info("fleet: appliance {} answers pings again: back in the owner table", id);
        else if (was && !is)
            spdlog::warn(
                "fleet: appliance {} is heard by an appliance that answers us: back in the owner "
                "table (unanswered here still)",
                id);
        else if (was_here && !is_here)
            spdlog::info("fleet: appliance {} answers pings here again", id);
    }
    fleet_silent_ = s;
    fleet_silent_here_ = here;
    if (!table_changes) return;
    // A restart over live maps keeps them until etcd is read (start): the table here is still the
    // configuration's, and written now it undid what the pending wait protects. The silence is
    // applied with etcd's fleet then.
    if (fleet_publish_pending_) return;
    publish_fleet();
}

json Daemon::fleet_json() const {
    const bool mapped = fleet_maps_.fleet && fleet_maps_.owner;
    json members = json::array(), epochs = json::array();
    const PingStatus ps = pinger_ ? pinger_->status() : PingStatus{};
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!fleet_.macs[id]) continue;
        members.push_back(
            {{"id", id},
             {"mac", format_mac(*fleet_.macs[id])},
             {"state", appliance_state_name(fleet_table_.members[id].state)},
             {"buckets", fleet_table_.owned[id]},
             {"self", id == fleet_.self},
             {"silent", static_cast<bool>(fleet_silent_ & (1u << id))},
             {"silent_here", static_cast<bool>(fleet_silent_here_ & (1u << id))},
             {"unanswered", ps.unanswered[id] ? json(*ps.unanswered[id]) : json(nullptr)}});
    }
    for (MemberSet e : fleet_.epochs) epochs.push_back(ids_json(e));
    return {
        {"enabled", fleet_.enabled()},
        {"self", fleet_.enabled() ? json(fleet_.self) : json(nullptr)},
        {"epoch", fleet_.epoch_no},
        {"epochs", epochs},
        {"members", members},
        {"buckets", KVS_OWNER_BUCKETS},
        {"digest", hex64(fleet_table_.digest)},
        {"lookup_digest", lookup_digest_hex()},
        {"config_generation", config_generation_ >= 0 ? json(config_generation_) : json(nullptr)},
        {"mapped", mapped},
        {"generation", mapped ? json(fleet_writer_.generation()) : json(nullptr)},
        {"owner_active", mapped ? json(fleet_writer_.active()) : json(nullptr)},
        {"etcd", fleet_etcd_json()},
        {"ping",
         pinger_ ? json{{"every_ms", cfg().fleet_ping_ms},
                        {"misses", cfg().fleet_ping_misses},
                        {"rounds", ps.rounds},
                        {"send_errors", ps.send_errors},
                        {"answered_by_kvsteerd", ps.answered_here},
                        {"heard_by_kvsteerd", ps.heard_here},
                        {"last_error", ps.last_error.empty() ? json(nullptr) : json(ps.last_error)}}
                 : json(nullptr)},
        {"cookie_keys",
         {{"current", key_fingerprint(kvs_config_sign_key(maps_.config))},
          {"previous", key_fingerprint(kvs_config_prev_key(maps_.config))}}}};
}

std::optional<json> Daemon::handle_fleet(const std::string &cmd, const json &req) {
    auto fail = [](const std::string &e) { return json{{"ok", false}, {"error", e}}; };
    if (cmd == "fleet.status") return json{{"ok", true}, {"fleet", fleet_json()}};
    if (cmd != "fleet.push" && cmd != "fleet.settle" && cmd != "fleet.forget" &&
        cmd != "fleet.member" && cmd != "fleet.rotate_cookie")
        return std::nullopt;
    if (!fleet_.enabled())
        return fail("no fleet: kvsteerd was started without fleet-self (and fleet-member)");
    std::string err;
    if (etcd_) return handle_fleet_etcd(cmd, req);
    if (cmd == "fleet.rotate_cookie")
        return fail(
            "fleet.rotate_cookie needs fleet-etcd (without it: set cookie-key and "
            "cookie-key-previous on every appliance)");
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
            // This appliance's own entry is its interface's MAC (config.cc build_fleet says why).
            if (mac && *id == fleet_.self && cfg().appliance_mac != Mac{} &&
                *mac != cfg().appliance_mac)
                return fail("fleet.member: appliance " + std::to_string(*id) +
                            " is this one: its MAC is " + format_mac(cfg().appliance_mac) +
                            ", not " + format_mac(*mac));
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

// The same operations on the epochs etcd holds; every appliance (this one included) applies
// the result when it reads it.
json Daemon::handle_fleet_etcd(const std::string &cmd, const json &req) {
    auto fail = [](const std::string &e) { return json{{"ok", false}, {"error", e}}; };
    std::string err;
    bool changed = false;
    // etcd known unreachable (its last poll failed): refused at once. Before, each call waited
    // out etcd's timeouts on the event loop (0.5-5.5 s while etcd hangs), every other API call,
    // health check and report with it. Before the first poll ended, tried as before.
    if (const FleetEtcdView v = etcd_->view();
        !v.reachable && !v.error.empty() && cmd != "fleet.member")
        return fail(cmd + ": etcd is unreachable (" + v.error + "): nothing changed");
    if (cmd == "fleet.member")
        return fail(
            "fleet.member: with fleet-etcd every appliance puts its own MAC (its fleet-member) "
            "into etcd");
    if (cmd == "fleet.rotate_cookie") {
        const auto hold_ms = 2 * static_cast<std::int64_t>(cfg().cookie_period_s) * 1000;
        if (!etcd_->rotate_cookie(cfg().cookie_key, hold_ms, &err)) return fail(cmd + ": " + err);
        changed = true;
    } else {
        std::function<bool(FleetState &, std::string *)> op;
        FleetEtcd::TxnExtra extra;
        if (cmd == "fleet.push") {
            if (!req.contains("members")) return fail("fleet.push needs \"members\" (ID[,ID...])");
            auto set = json_members(req["members"], &err);
            if (!set) return fail("fleet.push: " + err);
            op = [s = *set](FleetState &f, std::string *e) { return f.push(s, e); };
        } else if (cmd == "fleet.settle") {
            op = [](FleetState &f, std::string *) {
                f.settle();
                return true;
            };
        } else {
            if (!req.contains("id")) return fail(cmd + " needs \"id\"");
            auto id = json_id(req["id"], &err);
            if (!id) return fail(cmd + ": " + err);
            // A dead member has no MAC in etcd's view any more: its id is removed all the same,
            // and its returning marker with it (else a box later started under that id would
            // re-enter the owners by it, without the push a new member needs).
            extra.deletes.push_back(FleetEtcd::returning_key(*id));
            op = [id = *id](FleetState &f, std::string *e) {
                // As FleetState::forget refuses it: an empty newest epoch, which every appliance
                // refuses to read (before, it was written and answered as done). Not forget
                // itself: etcd's epochs keep members dead now, with no MAC here.
                if (!f.forget_allowed(id, e)) return false;
                f.drop(static_cast<MemberSet>(1u << id));
                return true;
            };
        }
        if (!etcd_->update_epochs(op, &changed, &err, &extra)) return fail(cmd + ": " + err);
    }
    if (changed)
        spdlog::info("fleet: {} {} written to etcd", cmd,
                     req.contains("members") ? req["members"].dump()
                     : req.contains("id")    ? req["id"].dump()
                                             : std::string());
    apply_fleet_etcd();
    return json{{"ok", true}, {"changed", changed}, {"fleet", fleet_json()}};
}

}  // namespace kvsteer::control
