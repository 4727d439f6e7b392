// kvsteerd's share of the fleet's configuration in etcd (fleet_etcd.h, keys under P config/):
// the backends and the tunables. The first appliance puts its own; from then on etcd's are
// applied on every appliance, and kvsteerctl's backends / tune changes are written to etcd, so
// one command changes the whole fleet. Bindings and learned prefixes never go through etcd.
#include <spdlog/spdlog.h>

#include <map>
#include <set>
#include <string>

#include "kvsteer/control/daemon.h"
#include "kvsteer/control/json_bounded.h"
#include "mono_clock.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

// Tunables shared through etcd: those tune.set changes (table-algorithm and affinity-min-hot
// are fixed at start).
bool shared_tunable(const std::string &name) {
    return name != "table-algorithm" && name != "affinity-min-hot";
}

std::string tunable_text(const json &v) {
    return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string backend_value(const BackendSpec &spec, bool drain) {
    return json{{"spec", backend_spec_str(spec)}, {"drain", drain}}.dump();
}

}  // namespace

std::optional<SharedBackend> parse_shared_backend_value(const std::string &v, std::string *err,
                                                        std::string *warning) {
    warning->clear();
    json j = parse_json_bounded(v);
    if (!j.is_object() || !j.contains("spec") || !j["spec"].is_string()) {
        *err = "not {\"spec\": \"ADDR:PORT,...\", \"drain\": BOOL}";
        return std::nullopt;
    }
    auto spec = parse_backend_spec(j["spec"].get<std::string>(), err);
    if (!spec) return std::nullopt;
    SharedBackend b{*spec, false};
    if (auto d = j.find("drain"); d != j.end()) {
        if (d->is_boolean()) {
            b.drain = d->get<bool>();
        } else {
            // Not json::value(): it throws on another type, on every appliance at once.
            b.drain = std::nullopt;
            *warning = "\"drain\": " + json_brief(*d) +
                       " is not true or false (ignored: the drain state stays as it is)";
        }
    }
    return b;
}

std::vector<std::pair<std::string, std::string>> Daemon::config_seed() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto &[id, b] : core_.backends())
        out.emplace_back("backends/" + b.spec.ep.str(), backend_value(b.spec, b.draining));
    const json tunables = tunables_json();
    for (const auto &[name, v] : tunables.items())
        if (shared_tunable(name)) out.emplace_back("tunables/" + name, tunable_text(v));
    return out;
}

std::map<std::string, std::pair<std::string, std::string>> apply_tunables_in_passes(
    std::map<std::string, std::string> pending, const TunableApply &apply) {
    std::map<std::string, std::pair<std::string, std::string>> refused;
    bool progress = true;
    while (progress && !pending.empty()) {
        progress = false;
        refused.clear();
        for (auto it = pending.begin(); it != pending.end();) {
            std::string err;
            if (apply(it->first, it->second, &err)) {
                progress = true;
                it = pending.erase(it);
            } else {
                refused[it->first] = {it->second, err};
                ++it;
            }
        }
    }
    return refused;
}

void Daemon::apply_fleet_config(const FleetEtcdView &v) {
    if (!v.config_seeded) return;
    config_generation_ = v.config_generation;
    const std::uint64_t now = mono_ns();
    std::string err;
    // New values, and those refused before (what refused one may have changed since: tried
    // again, warned about once). Before, the names' order decided: max-held-bytes was refused
    // below a prefix-length etcd lowered too but not yet applied, and never tried again.
    std::map<std::string, std::string> pending;
    // A name gone from etcd is forgotten: put back later with the value last seen (refused then,
    // deleted, its dependency changed meanwhile), it was skipped as seen, without a word, and this
    // appliance kept another value than the fleet's.
    for (auto it = etcd_tunables_.begin(); it != etcd_tunables_.end();)
        it = v.tunables.count(it->first) ? std::next(it) : etcd_tunables_.erase(it);
    for (auto it = etcd_tunables_refused_.begin(); it != etcd_tunables_refused_.end();) {
        auto now_v = v.tunables.find(it->first);
        it = now_v == v.tunables.end() || now_v->second != it->second
                 ? etcd_tunables_refused_.erase(it)
                 : std::next(it);
    }
    for (const auto &[name, value] : v.tunables) {
        auto &seen = etcd_tunables_[name];
        if (seen == value && !etcd_tunables_refused_.count(name)) continue;
        seen = value;
        if (tunable_text(tunables_json().value(name, json())) == value) {
            etcd_tunables_refused_.erase(name);
            continue;
        }
        pending.emplace(name, value);
    }
    const auto refused = apply_tunables_in_passes(
        std::move(pending), [&](const std::string &name, const std::string &value, std::string *e) {
            if (!core_.set_tunable(name, value, e, now)) return false;
            spdlog::info("fleet: tune {} = {} (etcd)", name, value);
            if (etcd_tunables_refused_.erase(name))
                spdlog::info("fleet: etcd's tunable {} = '{}' applied now", name, value);
            return true;
        });
    for (const auto &[name, r] : refused) {
        // Warned once per value: an entry of another value was dropped above.
        if (etcd_tunables_refused_.emplace(name, r.first).second)
            spdlog::warn("fleet: etcd's tunable {} = '{}' not applied: {}", name, r.first,
                         r.second);
    }
    if (etcd_backends_ && v.backends == *etcd_backends_) return;
    etcd_backends_ = v.backends;
    std::map<std::string, SharedBackend> want;
    // Keys whose value this kvsteerd cannot take (a newer one's option, a typo): such a backend
    // here is left as it is. Taken as absent, it was removed from every appliance at once (the
    // log said "ignored"), and kvsteerctl could then neither add it (in etcd) nor remove it.
    std::set<std::string> unreadable;
    for (const auto &[ep, value] : v.backends) {
        std::string warning;
        auto b = parse_shared_backend_value(value, &err, &warning);
        if (!b || b->spec.ep.str() != ep) {
            spdlog::warn(
                "fleet: etcd's backend {} not applied (a backend here at that address "
                "is left as it is): {}",
                ep, b ? "its key and its address differ" : err);
            unreadable.insert(ep);
            continue;
        }
        if (!warning.empty()) spdlog::warn("fleet: etcd's backend {}: {}", ep, warning);
        want.emplace(ep, std::move(*b));
    }
    std::vector<std::uint16_t> gone;
    for (const auto &[id, b] : core_.backends()) {
        auto w = want.find(b.spec.ep.str());
        if (w == want.end()) {
            if (!unreadable.count(b.spec.ep.str())) gone.push_back(id);
            continue;
        }
        BackendSpec same_weight = w->second.spec;
        same_weight.weight = b.spec.weight;
        if (!(same_weight == b.spec)) gone.push_back(id);  // re-added below with the new spec
    }
    for (std::uint16_t id : gone) remove_backend(id);
    for (const auto &[ep, w] : want) {
        const BackendRuntime *b = nullptr;
        for (const auto &[id, r] : core_.backends())
            if (r.spec.ep == w.spec.ep) b = &r;
        if (!b) {
            auto id = add_backend(w.spec, &err);
            if (!id) {
                spdlog::warn("fleet: etcd's backend {} not added here: {}", ep, err);
                continue;
            }
            b = core_.backend(*id);
        }
        if (b->spec.weight != w.spec.weight) {
            core_.set_weight(b->id, w.spec.weight, now);
            spdlog::info("fleet: backend {} weight {} (etcd)", ep, w.spec.weight);
        }
        if (w.drain && b->draining != *w.drain) {
            core_.set_draining(b->id, *w.drain, now);
            spdlog::info("fleet: backend {} {} (etcd)", ep,
                         *w.drain ? "draining" : "drain cancelled");
        }
    }
}

json Daemon::handle_config_etcd(const std::string &cmd, const json &req) {
    auto fail = [](const std::string &e) { return json{{"ok", false}, {"error", e}}; };
    std::string err;
    // A tune.set kvsteerd refuses anyway (an unknown name, a bad value) says so first, etcd or
    // not (kvsteerctl reads "unknown tunable" as a usage error).
    if (cmd == "tune.set") {
        auto t = tune_set_from_request(req, &err);
        if (!t) return fail(err);
        DaemonConfig check = cfg();
        if (!apply_tunable(check, t->name, t->value, &err)) return fail(err);
    }
    const FleetEtcdView v = etcd_->view();
    if (!v.reachable)
        return fail(cmd + ": etcd is unreachable (" +
                    (v.error.empty() ? std::string("not reached yet since the start") : v.error) +
                    "): nothing changed");
    if (!v.config_seeded)
        return fail(cmd +
                    ": etcd has no configuration yet (the first appliance puts its own within a "
                    "second): try again");
    if (cmd == "tune.set") {
        auto t = tune_set_from_request(req, &err);
        if (!t) return fail(err);
        const std::string &name = t->name, &value = t->value;
        DaemonConfig check = cfg();
        // The local handler's check and error (what it refuses, table-algorithm and
        // affinity-min-hot among them, is refused here the same way).
        if (!apply_tunable(check, name, value, &err)) return fail(err);
        if (!etcd_->put_config("tunables/" + name, value, &err)) return fail("tune.set: " + err);
        spdlog::info("fleet: tune {} = {} written to etcd", name, value);
        apply_fleet_etcd();
        return {{"ok", true}, {"etcd", true}, {"tunables", tunables_json()}};
    }
    if (cmd == "backend.add") {
        auto spec = backend_spec_from_request(req, &err);
        if (!spec) return fail(err);
        const std::string ep = spec->ep.str();
        if (v.backends.count(ep)) return fail("backend " + ep + " exists already");
        if (!backend_addable(*spec, &err)) return fail(err);
        // Only while still absent: two appliances adding it at once with different specs both
        // answered ok, the last put winning.
        if (!etcd_->put_config_if("backends/" + ep, backend_value(*spec, false), 0, &err))
            return fail("backend.add: " + err);
        spdlog::info("fleet: backend {} added in etcd", ep);
        apply_fleet_etcd();
        for (const auto &[id, b] : core_.backends())
            if (b.spec.ep == spec->ep)
                return {{"ok", true}, {"etcd", true}, {"backend", backend_json(b)}};
        return fail("backend " + ep + " written to etcd but not added here (see kvsteerd's log)");
    }
    // remove, drain, weight: the backend named by address or by this appliance's id.
    if (!req.contains("backend")) return fail(cmd + " needs \"backend\" (ADDR:PORT or id)");
    const BackendRuntime *b = find_backend(req["backend"], &err);
    if (!b) return fail(err);
    const std::string ep = b->spec.ep.str();
    auto it = v.backends.find(ep);
    if (it == v.backends.end()) return fail("backend " + ep + " is not in etcd's configuration");
    // Written only if nobody changed the key since it was read (a concurrent weight and drain
    // on two appliances each put the whole value: one change was lost, both answered ok).
    const auto mod_it = v.backends_mod.find(ep);
    const std::int64_t mod = mod_it == v.backends_mod.end() ? 0 : mod_it->second;
    // A remove needs no readable value (one this kvsteerd cannot read is removed too).
    if (cmd == "backend.remove") {
        json j = backend_json(*b);
        if (!etcd_->delete_config_if("backends/" + ep, mod, &err))
            return fail("backend.remove: " + err);
        spdlog::info("fleet: backend {} removed from etcd", ep);
        apply_fleet_etcd();
        return {{"ok", true}, {"etcd", true}, {"removed", j}};
    }
    std::string warning;
    auto shared = parse_shared_backend_value(it->second, &err, &warning);
    if (!shared) return fail("etcd's backend " + ep + ": " + err);
    // A "drain" of the wrong type in etcd: this appliance's state is written back in its place.
    if (!shared->drain) shared->drain = b->draining;
    if (cmd == "backend.drain") {
        if (req.contains("drain") && !req["drain"].is_boolean())
            return fail("drain must be true or false");
        shared->drain = !req.contains("drain") || req["drain"].get<bool>();
    } else {
        if (!req.contains("weight")) return fail("backend.weight needs \"weight\"");
        const json &w = req["weight"];
        auto n = parse_uint_in("weight", w.is_string() ? w.get<std::string>() : w.dump(),
                               {0, 65535}, &err);
        if (!n) return fail(err);
        shared->spec.weight = static_cast<std::uint16_t>(*n);
    }
    if (!etcd_->put_config_if("backends/" + ep, backend_value(shared->spec, *shared->drain), mod,
                              &err))
        return fail(cmd + ": " + err);
    spdlog::info("fleet: backend {} {} written to etcd", ep,
                 cmd == "backend.drain" ? (*shared->drain ? "draining" : "drain cancelled")
                                        : "weight " + std::to_string(shared->spec.weight));
    apply_fleet_etcd();
    // Found by address: where etcd's spec differed from this appliance's in more than the field
    // written, the backend was re-added, maybe under another id (the answer said "backend": null).
    for (const auto &[bid, now] : core_.backends())
        if (now.spec.ep.str() == ep)
            return {{"ok", true}, {"etcd", true}, {"backend", backend_json(now)}};
    return fail("backend " + ep + " written to etcd but not kept here (see kvsteerd's log)");
}

}  // namespace kvsteer::control
