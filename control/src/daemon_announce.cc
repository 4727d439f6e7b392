// kvsteerd's announcement of the VIP (BIRD, from the local dataplane's heartbeats) and the drain:
// withdraw, leave the fleet's owners, wait for this appliance's flows to end (control/API.md).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>

#include "kvsteer/control/daemon.h"
#include "kvsteer/control/json_bounded.h"
#include "mono_clock.h"

namespace kvsteer::control {

using nlohmann::json;

void Daemon::start_announcer() {
    if (cfg().announce_bird_socket.empty()) return;
    announcer_ = std::make_unique<Announcer>(cfg().announce_bird_socket, cfg().announce_protocols);
    spdlog::info("announce: BIRD {} protocol(s) {}: announced while the dataplane is healthy",
                 cfg().announce_bird_socket, fmt::join(cfg().announce_protocols, ", "));
}

void Daemon::stop_announcer() {
    if (announcer_) announcer_->stop();
}

void Daemon::check_dataplane(std::uint64_t now) {
    dp_health_ = dataplane_health(maps_.ring_ctl, KVS_MAX_WORKERS, std::max(now, mono_ns()),
                                  std::uint64_t{cfg().dataplane_stale_ms} * 1000000);
    if (dp_health_.healthy != dp_healthy_logged_) {
        dp_healthy_logged_ = dp_health_.healthy;
        if (dp_health_.healthy)
            spdlog::info("dataplane: healthy ({} worker(s) beating)", dp_health_.workers_alive);
        else
            spdlog::warn("dataplane: not healthy: {}", dp_health_.reason);
    }
    if (dp_health_.healthy) dp_was_healthy_ = true;
    if (etcd_ && fleet_.enabled()) fleet_follow_health(now);
    // In a fleet through etcd, a (re)joining appliance is announced once every member has read
    // its key (they all report this appliance's digest), so that the others accept what it sends
    // on; or after kAnnounceWaitNs whatever they report.
    // In a fleet, only an owner of the newest epoch is announced: a joiner not pushed yet (or one
    // pushed out) runs its XDP with the fleet off, so the live connections the router moved onto
    // it were dropped as bad cookies until someone pushed it in.
    const bool member = !fleet_.enabled() || (fleet_.newest() & (1u << fleet_.self));
    if (member != member_logged_) {
        member_logged_ = member;
        if (!member)
            spdlog::info(
                "announce: not an owner in the fleet's newest epoch: not announced "
                "(`kvsteerctl fleet push` adds it)");
    }
    const bool serving = dp_health_.healthy && !drain_.active && member;
    if (!serving) {
        announce_ok_ = false;
        serving_since_ns_ = 0;
    } else if (!announce_ok_) {
        if (!serving_since_ns_) serving_since_ns_ = now;
        // Never before the fleet was read from etcd once: until then the table is the
        // configuration's (often this appliance alone, the owner of every bucket), which no other
        // member agreed to; announced, the streams the router moved here were reset and two
        // appliances bound new flows for the same buckets.
        // The others get their 3 s from then too (a wait begun before the read was over).
        announce_ok_ =
            !etcd_ || (fleet_etcd_applied_ &&
                       now - std::max(serving_since_ns_, fleet_etcd_read_ns_) >= kAnnounceWaitNs);
        if (etcd_ && !fleet_etcd_applied_ && !etcd_wait_logged_ &&
            now - serving_since_ns_ >= kAnnounceWaitNs) {
            etcd_wait_logged_ = true;
            spdlog::warn(
                "announce: not announced before the fleet is read from etcd (not read yet: "
                "the configuration's table is no fleet's)");
        }
        if (!announce_ok_ && etcd_ && fleet_etcd_applied_) {
            const FleetEtcdView v = etcd_->view();
            announce_ok_ =
                v.reachable && v.alive[fleet_.self] && fleet_members_view(v)["agree"].get<bool>();
        }
    }
    if (announcer_) announcer_->set(announce_ok_);
    if (etcd_) apply_fleet_cookie(etcd_->view());
    // What the fleet reads of this appliance (fleet status; an unhealthy one owns nothing).
    if (etcd_) etcd_->set_report(fleet_report());
    drain_progress(now);
}

// Done only once the leave is taken everywhere and no flow was here for a while. Before, done
// came at the first moment without a bound flow, in the very call that left the owners: peers
// that had not read the leave yet, and the router before the withdrawal reached it, still sent
// new flows here, and flights being bound were not counted (stopped then, those broke).
void Daemon::drain_progress(std::uint64_t now) {
    if (!drain_.active || drain_.done) return;
    drain_.flows_left = flows_in_flight() + dp_health_.binding;
    if (drain_.flows_left)
        drain_.quiet_since_ns = 0;
    else if (!drain_.quiet_since_ns)
        drain_.quiet_since_ns = now;
    if (now - drain_.started_ns < kDrainSettleNs) {
        drain_.waiting_for = "the withdrawal and the leave to settle";
        return;
    }
    if (etcd_ && fleet_.enabled()) {
        // Every live member computes the table without this appliance (its digest is ours).
        const FleetEtcdView v = etcd_->view();
        unsigned behind = 0;
        const std::string want = fleet_digest_hex();
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
            if (!v.alive[id] || id == fleet_.self) continue;
            const json r = parse_json_bounded(v.reports[id]);
            const json *d = r.is_object() && r.contains("digest") ? &r["digest"] : nullptr;
            if (!d || !d->is_string() || d->get<std::string>() != want) behind++;
        }
        if (drain_.fleet_failed || !v.reachable || behind) {
            drain_.waiting_for = drain_.fleet_failed ? "the leave of the owners (failed)"
                                 : !v.reachable
                                     ? "etcd, to see the others take the leave"
                                     : std::to_string(behind) + " appliance(s) to take the leave";
            return;
        }
    }
    if (drain_.flows_left || now - drain_.quiet_since_ns < kDrainQuietNs) {
        drain_.waiting_for = drain_.flows_left ? "the flows here to end" : "a quiet second";
        return;
    }
    drain_.done = true;
    drain_.waiting_for.clear();
    spdlog::info("drain: done after {:.1f} s: no flow left on this appliance",
                 static_cast<double>(now - drain_.started_ns) / 1e9);
}

// What this appliance says of itself in its etcd member key (fleet status reads it).
json Daemon::fleet_report() const {
    return {{"healthy", dp_health_.healthy},
            {"draining", drain_.active},
            {"announced", announcer_ ? json(announcer_->status().announced) : json(nullptr)},
            {"digest", fleet_digest_hex()},
            {"tables", tables_digest_hex()},
            {"lookup", lookup_digest_hex()},
            {"config_generation", config_generation_},
            {"epoch", fleet_.epoch_no},
            {"cookie", fleet_cookie_fingerprint()}};
}

// With etcd, an appliance whose dataplane stops beating leaves the owners by a real epoch in etcd
// (as a drain does) and re-enters by another one when it beats again. The spell's epoch then stays
// a previous epoch, so the flows its buckets' interim owners bound meanwhile are still found after
// its return. Every appliance also computes an epoch without a member that reports itself
// unhealthy (fleet_state_from_etcd): the fallback while this one cannot write to etcd, and at
// startup (a dataplane that never beat yet leaves nothing). An appliance that left the owners at
// its lease grant (FleetEtcd::keep_lease: at its start after a crash, or back after its lease
// expired) re-enters the same way once its dataplane beats. Each leave of its own puts
// P fleet/returning/<self> beside its epoch (the re-entry deletes it in the same txn), so a
// kvsteerd restarted in between still re-enters (before, the state was the process's only).
void Daemon::fleet_follow_health(std::uint64_t now) {
    const FleetEtcdView v = etcd_->view();
    if (drain_.active) {
        left_unhealthy_ = false;  // the drain decides; a recovery must not undo it
        // Its leave failed (etcd away): tried again once etcd answers, every second at most.
        if (drain_.fleet_failed && v.reachable && now >= health_push_retry_ns_) {
            drain_leave_etcd();
            if (drain_.fleet_failed)
                health_push_retry_ns_ = now + 1'000'000'000ull;
            else
                spdlog::info("drain: etcd answers again: {}", drain_.fleet_note);
        }
        // Nor a restart: an earlier leave's marker goes (else a drained appliance restarted
        // would re-enter by it).
        if (v.reachable && v.returning[fleet_.self] && now >= health_push_retry_ns_) {
            FleetEtcd::TxnExtra extra;
            extra.deletes.push_back(FleetEtcd::returning_key(fleet_.self));
            bool changed = false;
            std::string err;
            if (!etcd_->update_epochs([](FleetState &, std::string *) { return true; }, &changed,
                                      &err, &extra)) {
                health_push_retry_ns_ = now + 1'000'000'000ull;
                spdlog::warn("fleet: drain: removing this appliance's returning marker: {}", err);
            }
        }
        return;
    }
    // Not while etcd is unreachable: each try would block the loop for a call's timeout.
    if (now < health_push_retry_ns_ || !v.reachable) return;
    if (!left_unhealthy_ && v.returning[fleet_.self]) {
        left_unhealthy_ = true;
        std::tie(left_from_, left_to_) = *v.returning[fleet_.self];
    }
    // etcd's newest epoch as it is: the computed one leaves out a member that reports itself
    // unhealthy, this one included once its report is read (the leave was then never written).
    const MemberSet cur = v.epochs && !v.epochs->empty() ? v.epochs->back() : fleet_.newest();
    std::function<bool(FleetState &, std::string *)> op;
    FleetEtcd::TxnExtra extra;
    const char *what;
    bool left = false;  // the leave appended an epoch (etcd may have changed since the view)
    if (!dp_health_.healthy && dp_was_healthy_ && !left_unhealthy_ &&
        fleet_leave_epoch(cur, fleet_.self, member_set_of(v.alive))) {
        // Members dead now stay in (they have no MAC in the view, so push() refused the leave
        // while one was dead); a full history drops its oldest epoch rather than refuse.
        op = [this, &extra, &left](FleetState &f, std::string *) {
            extra = {};
            left = false;
            // Not to an epoch of dead members only (every appliance computes it empty: no owner).
            const MemberSet n = fleet_leave_epoch(f.newest(), fleet_.self, member_set_of(f.macs));
            if (!n) return true;
            left_from_ = f.newest();
            left_to_ = n;
            bool dropped = false;
            if (!append_epoch(f.epochs, n, &dropped)) return false;
            if (dropped)
                spdlog::warn("fleet: {} epochs retained: the oldest dropped", kMaxFleetEpochs);
            extra.puts.emplace_back(FleetEtcd::returning_key(fleet_.self),
                                    FleetEtcd::returning_value(left_from_, left_to_));
            left = true;
            return true;
        };
        what = "not healthy: left the owners";
    } else if (dp_health_.healthy && left_unhealthy_ && v.alive[fleet_.self]) {
        // Only with its member key back: a re-entry while the key could not be put would leave
        // again at the next lease grant, two epochs a round.
        op = [this, &extra](FleetState &f, std::string *e) {
            extra = {};
            if (!f.macs[fleet_.self]) {  // the key went since the view above: later
                *e = "this appliance's member key is not in etcd";
                return false;
            }
            extra.deletes.push_back(FleetEtcd::returning_key(fleet_.self));
            const MemberSet back =
                fleet_return_epoch(f.newest(), fleet_.self, left_from_, left_to_);
            bool dropped = false;
            if (back && !append_epoch(f.epochs, back, &dropped)) return false;
            if (dropped)
                spdlog::warn("fleet: {} epochs retained: the oldest dropped", kMaxFleetEpochs);
            return true;
        };
        what = "healthy: back among the owners";
        // The healthy report first: read beside the re-entry's epoch, the old one made every
        // member compute an epoch without this appliance until the thread's next round.
        etcd_->set_report(fleet_report());
        if (std::string err; !etcd_->put_report_now(&err)) {
            health_push_retry_ns_ = now + 1'000'000'000ull;
            spdlog::warn(
                "fleet: dataplane healthy: its report through etcd failed: {} (retrying every "
                "second before the re-entry's epoch)",
                err);
            return;
        }
    } else {
        return;
    }
    bool changed = false;
    std::string err;
    if (!etcd_->update_epochs(op, &changed, &err, &extra)) {
        health_push_retry_ns_ = now + 1'000'000'000ull;
        spdlog::warn(
            "fleet: dataplane {}: the epoch through etcd failed: {} (retrying every second; "
            "meanwhile the others compute one from this appliance's report)",
            what, err);
        return;
    }
    // Left only when the leave wrote its epoch: etcd changed since the view (an operator's push
    // without this appliance) and nothing was written, marked left it was pushed back among the
    // owners at recovery, undoing that push. Nothing written, the next try waits a second.
    left_unhealthy_ = !dp_health_.healthy && left;
    if (!dp_health_.healthy && !left) health_push_retry_ns_ = now + 1'000'000'000ull;
    spdlog::info("fleet: dataplane {} (an epoch through etcd{})",
                 dp_health_.healthy || left ? what : "not healthy: no owner epoch to leave",
                 changed ? "" : ": nothing to change");
    apply_fleet_etcd();
}

// A drain leaving the owners through etcd: etcd's newest epoch less this appliance, members dead
// now kept (a push of the computed one took them out, and they stayed out when they came back).
// A failure is retried from fleet_follow_health once etcd answers.
void Daemon::drain_leave_etcd() {
    MemberSet to = 0;
    bool changed = false;
    std::string err;
    const auto op = [&](FleetState &f, std::string *) {
        to = fleet_leave_epoch(f.newest(), fleet_.self, member_set_of(f.macs));
        return !to || append_epoch(f.epochs, to);
    };
    // Known unreachable (its last poll failed): not waited for on the event loop (etcd's
    // timeouts, while it hangs).
    const FleetEtcdView v = etcd_->view();
    const bool down = !v.reachable && !v.error.empty();
    if (down) err = "etcd is unreachable (" + v.error + ")";
    drain_.fleet_failed = down || !etcd_->update_epochs(op, &changed, &err);
    drain_.fleet_note = drain_.fleet_failed ? "leaving the owners failed: " + err
                        : to                ? "left the owners: " + member_set_str(to)
                             : std::string("not an owner, or the last one alive: stays");
    apply_fleet_etcd();
}

std::uint64_t Daemon::flows_in_flight() const {
    if (!maps_.load) return 0;
    std::uint64_t n = core_.retired_in_flight();  // removed backends' flows are still ours
    for (const auto &[id, b] : core_.backends()) n += core_.in_flight(b);
    return n;
}

json Daemon::announce_json() const {
    json dp = {{"healthy", dp_health_.healthy},
               {"workers_alive", dp_health_.workers_alive},
               {"workers_stale", dp_health_.workers_stale},
               {"reason", dp_health_.healthy ? json(nullptr) : json(dp_health_.reason)},
               {"stale_ms", cfg().dataplane_stale_ms}};
    json a = nullptr;
    if (announcer_) {
        const AnnounceStatus s = announcer_->status();
        a = {{"bird_socket", announcer_->socket()},
             {"protocols", announcer_->protocols()},
             {"want", s.want},
             {"announced", s.announced},
             {"confirmed", s.confirmed},
             {"changes", s.changes},
             {"errors", s.errors},
             {"error", s.last_error.empty() ? json(nullptr) : json(s.last_error)}};
    }
    json d = {{"active", drain_.active}};
    if (drain_.active) {
        d["done"] = drain_.done;
        d["flows_left"] = drain_.flows_left;  // bound here, or being bound
        d["waiting_for"] = drain_.done ? json(nullptr) : json(drain_.waiting_for);
        d["elapsed_s"] = static_cast<double>(mono_ns() - drain_.started_ns) / 1e9;
        d["fleet"] = drain_.fleet_note;
        // Still failed while this appliance is still an owner: a push without it (what the
        // warning asks for) ends it.
        const bool owner = fleet_.enabled() && !fleet_.epochs.empty() &&
                           (fleet_.epochs.back() & static_cast<MemberSet>(1u << fleet_.self));
        d["fleet_failed"] = drain_.fleet_failed && owner;
    }
    return {{"dataplane", dp}, {"announce", a}, {"drain", d}};
}

std::optional<json> Daemon::handle_drain(const std::string &cmd, const json &req) {
    auto ok = [this](json extra) {
        json r = announce_json();
        r["ok"] = true;
        for (auto &[k, v] : extra.items()) r[k] = v;
        return r;
    };
    if (cmd == "drain.status") return ok(json::object());
    if (cmd == "drain.cancel") {
        if (!drain_.active) return json{{"ok", false}, {"error", "no drain in progress"}};
        drain_ = {};
        unlink(drain_marker().c_str());
        spdlog::info("drain: cancelled: announced again while the dataplane is healthy{}",
                     fleet_.enabled() ? " (push this appliance back into the fleet's owners)" : "");
        check_dataplane(mono_ns());
        return ok(json::object());
    }
    if (cmd != "drain.start") return std::nullopt;
    if (req.is_object() && req.contains("force") && !req["force"].is_boolean())
        return json{{"ok", false}, {"error", "drain: force must be true or false"}};
    if (drain_.active) return ok({{"started", false}});
    // Nothing here withdraws the appliance: new connections keep coming (a static route, DNS),
    // and "drained" at the first moment without flows did not mean safe to stop (the streams
    // begun after it broke). Withdrawn upstream, `force` drains anyway.
    if (!announcer_ && !fleet_.enabled() && !(req.is_object() && req.value("force", false)))
        return json{{"ok", false},
                    {"error",
                     "drain: nothing withdraws this appliance (no announce-bird-socket, no fleet): "
                     "new connections keep coming; withdraw it upstream, then drain with force "
                     "(kvsteerctl drain --force) to wait for its flows to end"}};
    drain_ = {};
    drain_.active = true;
    drain_.started_ns = mono_ns();
    // Kept beside the API socket: a kvsteerd restarted meanwhile (a crash, the memory limit)
    // drains again (it announced the VIP again, the drain forgotten).
    // The boot it was made in heads it: one left from an earlier boot (an api-socket outside
    // /run) is not taken for this one's.
    if (!write_this_boots(drain_marker(),
                          "kvsteerctl drain started; kvsteerctl drain --cancel removes this\n"))
        spdlog::warn("drain: cannot write {} ({}): a kvsteerd restart would forget this drain",
                     drain_marker(), std::strerror(errno));
    // Leave the fleet's owners: the others bind the new flows of this appliance's buckets and
    // send this appliance's flows on to it (a previous owner) while they last.
    if (fleet_.enabled()) {
        const MemberSet self = static_cast<MemberSet>(1u << fleet_.self);
        const MemberSet now = fleet_.epochs.empty() ? MemberSet{0} : fleet_.epochs.back();
        if (etcd_) {
            // Decided from etcd's epochs, never the table in hand: a drain restarted from its
            // marker runs before etcd is read, with the configuration's table (there "not an
            // owner" or "the last owner" dropped a leave etcd still needed, unreported).
            drain_leave_etcd();
        } else if (!(now & self)) {
            drain_.fleet_note = "not an owner";
        } else if (!(now & ~self)) {
            drain_.fleet_note = "the last owner: stays one";
        } else {
            const json req = {{"members", member_set_str(static_cast<MemberSet>(now & ~self))}};
            const json r = *handle_fleet("fleet.push", req);
            drain_.fleet_failed = !r.value("ok", false);
            // Without etcd every appliance is given the same pushes: this one's is no one else's.
            drain_.fleet_note =
                drain_.fleet_failed
                    ? "leaving the owners failed: " + r.value("error", "")
                    : "left the owners here: " + req.at("members").get<std::string>() +
                          " (push the same on every other appliance: `kvsteerctl fleet push " +
                          req.at("members").get<std::string>() + "`)";
        }
    } else {
        drain_.fleet_note = "no fleet";
    }
    if (drain_.fleet_failed)
        spdlog::warn(
            "drain: {}: the other appliances still send new flows of this one's buckets "
            "here (fix it, then push the fleet without it; drain --cancel announces again)",
            drain_.fleet_note);
    check_dataplane(mono_ns());  // withdraws the VIP (the fleet was left first, above)
    spdlog::info("drain: started: VIP withdrawn{}; fleet: {}; waiting for {} flow(s) to end",
                 announcer_ ? "" : " (nothing announced here: no announce-bird-socket)",
                 drain_.fleet_note, flows_in_flight());
    return ok({{"started", true}});
}

}  // namespace kvsteer::control
