// kvsteerd API commands: one JSON object in, one JSON object out ({"ok": true, ...} or
// {"ok": false, "error": "..."}). The protocol is documented in control/API.md.
#include <spdlog/spdlog.h>
#include <time.h>

#include <atomic>
#include <cmath>
#include <cstring>

#include "kvsteer/control/daemon.h"
#include "kvsteer/control/neigh.h"
#include "kvsteer/reasons.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

std::string hex_key(std::uint64_t k) {
    char b[24];
    snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(k));
    return b;
}

// A JSON integer >= 0, whichever way it was built (parsed text gives unsigned; a json made from
// an int in C++ is signed).
bool is_non_negative_integer(const json &j) {
    return j.is_number_unsigned() || (j.is_number_integer() && j.get<std::int64_t>() >= 0);
}

std::optional<std::uint64_t> json_key(const json &j, std::string *err) {
    if (is_non_negative_integer(j)) {
        // As the string "0" is: the dataplane's empty slot, never a key.
        if (j.get<std::uint64_t>() == 0) {
            *err = "key 0 marks an empty slot";
            return std::nullopt;
        }
        return j.get<std::uint64_t>();
    }
    if (j.is_string()) {
        const std::string s = j.get<std::string>();
        // Keys are printed as 0x-hex. Bare digits were read as hex too, and "291" (a decimal
        // hash copied from a log) pinned 0x291: a string must say it is hex.
        if (!s.starts_with("0x") && !s.starts_with("0X")) {
            *err =
                "write the key as 0x<hex> (as affinity.show gives it), or a decimal key as a "
                "JSON number (got '" +
                s + "')";
            return std::nullopt;
        }
        auto v = parse_u64(s, err);
        if (v && *v == 0) {
            *err = "key 0 marks an empty slot";
            return std::nullopt;
        }
        return v;
    }
    *err = "key must be a 0x-hex string or a non-negative integer";
    return std::nullopt;
}

std::string value_string(const json &v) {
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
}

// A request field that becomes one option of a text spec ("ADDR,weight=W,..."): a string or a
// number, without the spec's separator (a "model" of "m,weight=0" added a weight of 0). Empty +
// err otherwise.
std::optional<std::string> spec_field(const json &req, const char *name, std::string *err) {
    const json &v = req[name];
    if (!v.is_string() && !v.is_number()) {
        *err = std::string(name) + " must be a string or a number";
        return std::nullopt;
    }
    std::string s = value_string(v);
    if (s.find(',') != std::string::npos) {
        *err = std::string(name) + " must not contain ','";
        return std::nullopt;
    }
    return s;
}

std::uint64_t mono_ns_api() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

std::optional<std::uint16_t> parse_backend_id(std::string_view s, std::string *err) {
    const std::string shown = s.size() > 24 ? std::string(s.substr(0, 24)) + "..." : std::string(s);
    const std::string range = "0.." + std::to_string(KVS_MAX_BACKENDS - 1);
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) {
        *err = "backend id '" + shown + "' is not a number " + range;
        return std::nullopt;
    }
    // Every digit counts (leading zeros included: "0012" is 12); no overflow however long.
    std::uint64_t v = 0;
    for (char c : s) {
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
        if (v >= KVS_MAX_BACKENDS) {
            *err = "backend id " + shown + " is out of range " + range;
            return std::nullopt;
        }
    }
    return static_cast<std::uint16_t>(v);
}

const BackendRuntime *Daemon::find_backend(const json &sel, std::string *err) {
    if (is_non_negative_integer(sel)) {
        if (sel.get<std::uint64_t>() >= KVS_MAX_BACKENDS) {
            *err = "backend id " + sel.dump() + " is out of range 0.." +
                   std::to_string(KVS_MAX_BACKENDS - 1);
            return nullptr;
        }
        const BackendRuntime *b =
            core_.backend(static_cast<std::uint16_t>(sel.get<std::uint64_t>()));
        if (!b) *err = "no backend with id " + sel.dump();
        return b;
    }
    if (!sel.is_string()) {
        *err = "backend must be ADDR:PORT or an id 0.." + std::to_string(KVS_MAX_BACKENDS - 1);
        return nullptr;
    }
    std::string s = sel.get<std::string>();
    if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) {
        auto id = parse_backend_id(s, err);
        return id ? find_backend(json(*id), err) : nullptr;
    }
    std::string e;
    auto ep = parse_endpoint(s, &e);
    if (!ep) {
        *err = "backend must be ADDR:PORT or an id 0.." + std::to_string(KVS_MAX_BACKENDS - 1) +
               ": " + e;
        return nullptr;
    }
    for (const auto &[id, b] : core_.backends())
        if (b.spec.ep == *ep) return &b;
    *err = "no backend " + ep->str();
    return nullptr;
}

json Daemon::backend_json(const BackendRuntime &b) const {
    auto &l = maps_.load[b.id];
    auto rd = [](const __u64 &x) {
        return std::atomic_ref<__u64>(const_cast<__u64 &>(x)).load(std::memory_order_relaxed);
    };
    json j = {
        {"id", b.id},
        {"addr", b.spec.ep.str()},
        {"weight", b.spec.weight},
        {"model", b.spec.model},
        {"max_load", b.effective_max_load()},
        {"queue_capped", b.queue_max_load != 0},
        {"state", kvs_backend_state_name(b.map_state())},
        {"healthy", b.health.up()},
        {"draining", b.draining},
        {"mac", b.mac ? json(format_mac(*b.mac)) : json(nullptr)},
        {"in_flight", core_.in_flight(b)},
        {"idle", core_.idle(b)},
        {"binds", rd(l.binds) - b.base_binds},
        {"closes", rd(l.closes) - b.base_closes},
        {"bind_fail_rst", rd(l.bind_fail_rst)},
        {"bind_fail_timeout", rd(l.bind_fail_timeout)},
        {"health",
         {{"checks_ok", b.checks_ok},
          {"checks_failed", b.checks_failed},
          {"passive_failures", b.passive_failures},
          {"ok_streak", b.health.ok_streak()},
          {"fail_streak", b.health.fail_streak()},
          {"last_error", b.last_error}}},
    };
    auto opt = [](const std::optional<double> &v) { return v ? json(*v) : json(nullptr); };
    j["telemetry"] = {
        {"valid", b.tel_valid},
        {"flavor", flavor_name(b.tel.flavor)},
        {"running", b.tel_valid ? opt(b.tel.running) : json(nullptr)},
        {"waiting", b.tel_valid ? opt(b.tel.waiting) : json(nullptr)},
        {"kv_usage", b.tel_valid ? opt(b.tel.kv_usage) : json(nullptr)},
        {"hit_rate", opt(b.window_hit_rate)},
        {"scrapes_ok", b.scrapes_ok},
        {"scrapes_failed", b.scrapes_failed},
        {"metrics_unknown", b.metrics_unknown},
    };
    j["kv_events"] = kv_json(b);
    return j;
}

json Daemon::kv_json(const BackendRuntime &b) const {
    if (b.spec.kv_events.empty()) return nullptr;
    std::optional<KvEventStats> st;
    if (kv_) st = kv_->stats(b.id);
    if (!st) {
        st.emplace();
        st->endpoint = b.spec.kv_events;
    }
    auto opt_u = [](const std::optional<std::uint64_t> &v) { return v ? json(*v) : json(nullptr); };
    json age = nullptr;
    if (st->last_message)
        age = std::chrono::duration<double>(std::chrono::steady_clock::now() - *st->last_message)
                  .count();
    return {
        {"endpoint", st->endpoint},
        {"messages", st->messages},
        {"resident_blocks", st->resident_blocks},
        {"blocks_stored", st->blocks_stored},
        {"blocks_removed", st->blocks_removed},
        {"clears", st->clears},
        {"publisher_restarts", st->publisher_restarts},
        {"decode_errors", st->decode_errors},
        {"seq_gaps", st->seq_gaps},
        {"missed_batches", st->missed_batches},
        {"other_medium_blocks", st->other_medium_blocks},
        {"unknown_events", st->unknown_events},
        {"last_seq", opt_u(st->last_seq)},
        {"last_batch_ts", st->last_batch_ts ? json(*st->last_batch_ts) : json(nullptr)},
        {"last_event_age_s", age},
        {"last_error", st->last_error},
    };
}

std::optional<TuneSetRequest> tune_set_from_request(const json &req, std::string *err) {
    if (!req.contains("name") || !req["name"].is_string() || !req.contains("value")) {
        *err = "tune.set needs \"name\" and \"value\"";
        return std::nullopt;
    }
    if (!req["value"].is_string() && !req["value"].is_number()) {
        *err = "tune.set: \"value\" must be a string or a number";
        return std::nullopt;
    }
    return TuneSetRequest{req["name"].get<std::string>(), value_string(req["value"])};
}

std::optional<BackendSpec> backend_spec_from_request(const json &req, std::string *err) {
    std::string s;
    constexpr std::pair<const char *, const char *> kFields[] = {{"weight", "weight"},
                                                                 {"model", "model"},
                                                                 {"mac", "mac"},
                                                                 {"max_load", "max_load"},
                                                                 {"kv_events", "kv-events"}};
    if (req.contains("spec")) {
        // Fields beside a spec were dropped (weight 0 beside it: added in rotation, answered ok).
        const auto beside = [&]() -> const char * {
            if (req.contains("addr")) return "addr";
            for (const auto &[field, option] : kFields)
                if (req.contains(field)) return field;
            return nullptr;
        };
        if (const char *f = beside()) {
            *err = std::string(
                       "backend.add: give \"spec\" or \"addr\" with its fields, not "
                       "both (\"") +
                   f + "\" beside \"spec\": put it in the spec)";
            return std::nullopt;
        }
        if (!req["spec"].is_string()) {
            *err =
                "spec must be a string ADDR:PORT[,weight=W][,model=NAME][,mac=MAC][,max_load=N]"
                "[,kv-events=tcp://HOST:PORT]";
            return std::nullopt;
        }
        s = req["spec"].get<std::string>();
    } else if (req.contains("addr") && req["addr"].is_string()) {
        auto addr = spec_field(req, "addr", err);
        if (!addr) return std::nullopt;
        s = *addr;
        for (const auto &[field, option] : kFields) {
            if (!req.contains(field)) continue;
            auto v = spec_field(req, field, err);
            if (!v) return std::nullopt;
            s += std::string(",") + option + "=" + *v;
        }
    } else {
        *err = "backend.add needs \"spec\" or \"addr\"";
        return std::nullopt;
    }
    auto spec = parse_backend_spec(s, err);
    if (!spec) *err = "backend: " + *err;
    return spec;
}

json Daemon::tunables_json() const {
    return {
        {"prefix-length", cfg().prefix_len},
        {"block-size", cfg().block_size},
        {"max-blocks", cfg().max_blocks},
        {"load-factor", cfg().load_factor},
        {"load-slack", cfg().load_slack},
        {"replication", cfg().replication},
        {"hot-threshold", cfg().hot_threshold},
        {"steering-mode", steer_mode_name(cfg().steering_mode)},
        {"affinity-ttl", cfg().affinity_ttl_ms},
        {"max-held-bytes", cfg().max_held_bytes},
        {"per-request", cfg().per_request ? "on" : "off"},
        {"session-headers", cfg().session_headers},
        {"session-cap", cfg().session_cap},
        // Read-only here (fixed at start): shown so `kvsteerctl status` tells the whole setup.
        {"table-algorithm", table_algorithm_name(cfg().table_algorithm)},
        {"affinity-min-hot", cfg().affinity_min_hot_ms},
    };
}

json Daemon::handle(const json &req) {
    ctr_.api_requests++;
    auto fail = [&](const std::string &e) {
        ctr_.api_errors++;
        return json{{"ok", false}, {"error", e}};
    };
    if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
        return fail("request must be a JSON object with a string \"cmd\"");
    const std::string cmd = req["cmd"].get<std::string>();
    std::string err;
    try {
        if (cmd == "status") {
            unsigned up = 0, down = 0, drain = 0;
            for (const auto &[id, b] : core_.backends()) {
                auto s = b.map_state();
                up += s == KVS_BE_UP;
                down += s == KVS_BE_DOWN;
                drain += s == KVS_BE_DRAIN;
            }
            auto uptime =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
            // KV events summed over the backends that have them.
            static constexpr std::pair<const char *, std::uint64_t KvEventStats::*> kv_sums[] = {
                {"resident_blocks", &KvEventStats::resident_blocks},
                {"clears", &KvEventStats::clears},
                {"publisher_restarts", &KvEventStats::publisher_restarts},
                {"decode_errors", &KvEventStats::decode_errors},
                {"seq_gaps", &KvEventStats::seq_gaps}};
            const auto kv_all = kv_ ? kv_->all_stats() : std::map<std::uint16_t, KvEventStats>{};
            json kv = {{"supported", kv_events_supported()},
                       {"backends", kv_all.size()},
                       {"cache_resets", ctr_.kv_cache_resets}};
            for (const auto &[name, field] : kv_sums) {
                std::uint64_t sum = 0;
                for (const auto &[id, st] : kv_all) sum += st.*field;
                kv[name] = sum;
            }
            // The dataplane's own health, from its counters (summed over workers).
            auto dp_sum = [&](unsigned r) {
                std::uint64_t sum = 0;
                if (std::uint64_t *dp = maps_.dp_stats)
                    for (unsigned w = 0; w < KVS_MAX_WORKERS; w++)
                        sum += std::atomic_ref<std::uint64_t>(dp[w * KVS_STATS_MAX + r])
                                   .load(std::memory_order_relaxed);
                return sum;
            };
            json dataplane = {{"rx_stalls", dp_sum(KVS_R_DP_RX_STALL)},
                              {"rx_recoveries", dp_sum(KVS_R_DP_RX_RECOVERED)},
                              {"rx_mbufs_reclaimed", dp_sum(KVS_R_DP_RX_MBUFS_RECLAIMED)},
                              {"binds", dp_sum(KVS_R_DP_BIND_OK)},
                              {"hold_full", dp_sum(KVS_R_DP_HOLD_FULL)},
                              {"no_mbuf", dp_sum(KVS_R_DP_NO_MBUF)},
                              {"requests_moved", dp_sum(KVS_R_DP_REQ_MOVED)},
                              {"requests_same_backend", dp_sum(KVS_R_DP_REQ_SAME_BACKEND)}};
            const json ann = announce_json();
            dataplane["healthy"] = ann["dataplane"]["healthy"];
            dataplane["workers_alive"] = ann["dataplane"]["workers_alive"];
            dataplane["workers_stale"] = ann["dataplane"]["workers_stale"];
            dataplane["health_reason"] = ann["dataplane"]["reason"];
            return {{"ok", true},
                    {"daemon", "kvsteerd"},
                    {"dataplane", dataplane},
                    {"announce", ann["announce"]},
                    {"drain", ann["drain"]},
                    {"pid", getpid()},
                    {"uptime_s", uptime},
                    {"bpffs", cfg().bpffs},
                    {"generation", core_.writer().generation()},
                    {"maglev_active", TableWriter::active_maglev(maps_.config)},
                    {"affinity_active", TableWriter::active_affinity(maps_.config)},
                    {"maglev_rebuilds", core_.counters().maglev_rebuilds},
                    {"affinity_publishes", core_.counters().affinity_publishes},
                    {"vips",
                     [&] {
                         json a = json::array();
                         for (auto &v : cfg().vips) a.push_back(v.str());
                         return a;
                     }()},
                    // Both addresses on a dual-stack appliance: "10.0.1.1, fd00::1 ports LO-HI".
                    {"snat", cfg().snat_addr.addr_str() +
                                 (cfg().snat2_addr.family ? ", " + cfg().snat2_addr.addr_str()
                                                          : std::string()) +
                                 " ports " + std::to_string(cfg().snat_port_lo) + "-" +
                                 std::to_string(cfg().snat_port_hi)},
                    {"snat_addrs",
                     [&] {
                         json a = json::array({cfg().snat_addr.addr_str()});
                         if (cfg().snat2_addr.family) a.push_back(cfg().snat2_addr.addr_str());
                         return a;
                     }()},
                    {"appliance_mac", format_mac(cfg().appliance_mac)},
                    {"backends",
                     {{"total", core_.backends().size()},
                      {"up", up},
                      {"down", down},
                      {"drain", drain}}},
                    {"affinity",
                     {{"entries", core_.desired().size()},
                      {"index", core_.policy().index_size()},
                      {"pins", core_.policy().pins().size()}}},
                    {"reports",
                     {{"consumed", ring_stats_.consumed},
                      {"invalid", ring_stats_.invalid},
                      {"dropped_by_dataplane", ring_stats_.producer_dropped}}},
                    {"kv_events", kv},
                    {"tunables", tunables_json()}};
        }
        if (cmd == "backends" || cmd == "backend.list") {
            json a = json::array();
            for (const auto &[id, b] : core_.backends()) a.push_back(backend_json(b));
            return {{"ok", true}, {"backends", a}};
        }
        // In a fleet through etcd, the shared configuration changes there (every appliance).
        if (etcd_ && (cmd == "backend.add" || cmd == "backend.remove" || cmd == "backend.drain" ||
                      cmd == "backend.weight" || cmd == "tune.set")) {
            json r = handle_config_etcd(cmd, req);
            if (!r["ok"].get<bool>()) ctr_.api_errors++;
            return r;
        }
        if (cmd == "backend.add") {
            auto spec = backend_spec_from_request(req, &err);
            if (!spec) return fail(err);
            auto id = add_backend(*spec, &err);
            if (!id) return fail(err);
            return {{"ok", true}, {"backend", backend_json(*core_.backend(*id))}};
        }
        if (cmd == "backend.remove" || cmd == "backend.drain" || cmd == "backend.weight") {
            if (!req.contains("backend")) return fail(cmd + " needs \"backend\" (ADDR:PORT or id)");
            const BackendRuntime *b = find_backend(req["backend"], &err);
            if (!b) return fail(err);
            if (cmd == "backend.remove") {
                json j = backend_json(*b);
                remove_backend(b->id);
                return {{"ok", true}, {"removed", j}};
            }
            if (cmd == "backend.drain") {
                bool d = !req.contains("drain") ||
                         (req["drain"].is_boolean() && req["drain"].get<bool>());
                if (req.contains("drain") && !req["drain"].is_boolean())
                    return fail("drain must be true or false");
                core_.set_draining(b->id, d, mono_ns_api());
                save_backend_drains();
                spdlog::info("backend {} {}: {}", b->id, b->spec.ep.str(),
                             d ? "draining" : "drain cancelled");
            } else {
                if (!req.contains("weight")) return fail("backend.weight needs \"weight\"");
                auto w = parse_uint_in("weight", value_string(req["weight"]), {0, 65535}, &err);
                if (!w) return fail(err);
                core_.set_weight(b->id, static_cast<std::uint16_t>(*w), mono_ns_api());
                spdlog::info("backend {} {}: weight {}", b->id, b->spec.ep.str(), *w);
            }
            return {{"ok", true}, {"backend", backend_json(*b)}};
        }
        if (cmd == "affinity.show") {
            if (req.contains("limit") && !req["limit"].is_number_unsigned())
                return fail("affinity.show: \"limit\" must be a whole number >= 0");
            const std::size_t limit =
                req.contains("limit") ? req["limit"].get<std::size_t>() : std::size_t{100};
            json a = json::array();
            auto now = mono_ns_api();
            for (const auto &e : core_.desired()) {
                if (a.size() >= limit) break;
                json ids = json::array(), addrs = json::array();
                for (unsigned i = 0; i < e.n; i++) {
                    ids.push_back(e.backends[i]);
                    const BackendRuntime *b = core_.backend(e.backends[i]);
                    addrs.push_back(b ? b->spec.ep.str() : "?");
                }
                json j = {{"key", hex_key(e.key)},
                          {"depth", e.depth == kPrefixDepth ? json("prefix") : json(e.depth)},
                          {"backends", ids},
                          {"addrs", addrs},
                          {"pinned", e.pinned},
                          {"hot", e.hot}};
                if (auto inf = core_.policy().info(e.key, now)) j["rate"] = inf->rate;
                a.push_back(j);
            }
            return {{"ok", true},
                    {"entries", a},
                    {"total", core_.desired().size()},
                    {"index", core_.policy().index_size()}};
        }
        if (cmd == "affinity.pin" || cmd == "affinity.unpin") {
            if (!req.contains("key")) return fail(cmd + " needs \"key\"");
            auto key = json_key(req["key"], &err);
            if (!key) return fail("key: " + err);
            if (cmd == "affinity.unpin") {
                if (!core_.unpin(*key, mono_ns_api()))
                    return fail("key " + hex_key(*key) + " is not pinned");
                return {{"ok", true}, {"key", hex_key(*key)}};
            }
            if (!req.contains("backends") || !req["backends"].is_array() ||
                req["backends"].empty() || req["backends"].size() > KVS_MAX_REPLICAS)
                return fail("affinity.pin needs \"backends\": 1.." +
                            std::to_string(KVS_MAX_REPLICAS) + " backends");
            std::vector<std::uint16_t> ids;
            for (const auto &s : req["backends"]) {
                const BackendRuntime *b = find_backend(s, &err);
                if (!b) return fail(err);
                if (std::find(ids.begin(), ids.end(), b->id) != ids.end())
                    return fail("affinity.pin: backend " + std::to_string(b->id) + " listed twice");
                ids.push_back(b->id);
            }
            // At most a quarter of the table: pins are written before learned prefixes, so
            // unbounded they pushed every learned one out (each still answered ok).
            // affinity-max-entries 0 writes no entry: a pin was answered ok and never written.
            if (cfg().affinity_max_entries == 0)
                return fail(
                    "affinity.pin: affinity-max-entries is 0 (no affinity entry is written)");
            const auto &pins = core_.policy().pins();
            const std::size_t max_pins = std::max<std::uint32_t>(1, cfg().affinity_max_entries / 4);
            if (!pins.count(*key) && pins.size() >= max_pins)
                return fail("affinity.pin: " + std::to_string(pins.size()) +
                            " pins already, at most " + std::to_string(max_pins) +
                            " (a quarter of affinity-max-entries): unpin some first");
            core_.pin(*key, ids, mono_ns_api());
            return {{"ok", true}, {"key", hex_key(*key)}, {"backends", ids}};
        }
        if (cmd == "tune.get") return {{"ok", true}, {"tunables", tunables_json()}};
        if (cmd == "tune.set") {
            auto t = tune_set_from_request(req, &err);
            if (!t) return fail(err);
            if (!core_.set_tunable(t->name, t->value, &err, mono_ns_api())) return fail(err);
            spdlog::info("tune: {} = {}", t->name, t->value);
            return {{"ok", true}, {"tunables", tunables_json()}};
        }
        if (cmd == "counters") {
            const auto &p = core_.policy().counters();
            const auto &c = core_.counters();
            const auto &rs = ring_stats_;
            return {{"ok", true},
                    {"daemon",
                     {{"api_requests", ctr_.api_requests},
                      {"api_errors", ctr_.api_errors},
                      {"clients_evicted", ctr_.clients_evicted},
                      {"clients_refused", ctr_.clients_refused},
                      {"maglev_rebuilds", c.maglev_rebuilds},
                      {"affinity_publishes", c.affinity_publishes},
                      {"affinity_computes", c.affinity_computes},
                      {"affinity_insert_failed", c.affinity_insert_failed},
                      {"backend_up", c.backend_up},
                      {"backend_down", c.backend_down},
                      {"mac_resolve_failed", c.mac_resolve_failed},
                      {"health_checks", c.health_checks},
                      {"health_failures", c.health_failures},
                      {"passive_failures", c.passive_failures},
                      {"scrapes", c.scrapes},
                      {"scrape_failures", c.scrape_failures},
                      {"metrics_unknown", c.metrics_unknown},
                      {"metrics_parse_bad_lines", c.metrics_parse_bad_lines},
                      {"kv_cache_resets", ctr_.kv_cache_resets}}},
                    {"reports",
                     {{"consumed", rs.consumed},
                      {"invalid", rs.invalid},
                      {"resets", rs.resets},
                      {"overruns", rs.overruns},
                      {"dropped_by_dataplane", rs.producer_dropped}}},
                    {"affinity",
                     {{"reports", p.reports},
                      {"reports_ignored", p.reports_ignored},
                      {"reports_unkeyed", p.reports_unkeyed},
                      {"keys_learned", p.keys_learned},
                      {"holders_added", p.holders_added},
                      {"became_hot", p.became_hot},
                      {"cooled", p.cooled},
                      {"held_hot", p.held_hot},
                      {"replicas_added", p.replicas_added},
                      {"replicas_dropped", p.replicas_dropped},
                      {"over_bound", p.over_bound},
                      {"holders_expired", p.holders_expired},
                      {"keys_expired", p.keys_expired},
                      {"keys_evicted", p.keys_evicted},
                      {"excluded_ineligible", p.excluded_ineligible},
                      {"entries_no_backend", p.entries_no_backend},
                      {"entries_truncated", p.entries_truncated},
                      {"holders_flushed", p.holders_flushed},
                      {"ttl_shortened", p.ttl_shortened},
                      {"remote_became_hot", p.remote_became_hot},
                      {"remote_holders_used", p.remote_holders_used},
                      {"remote_entries", p.remote_entries}}}};
        }
        if (cmd.starts_with("drain.")) {
            if (auto r = handle_drain(cmd, req)) {
                if (!(*r)["ok"].get<bool>()) ctr_.api_errors++;
                return *r;
            }
        }
        if (cmd.starts_with("fleet.")) {
            if (auto r = handle_fleet(cmd, req)) {
                if (!(*r)["ok"].get<bool>()) ctr_.api_errors++;
                return *r;
            }
        }
    } catch (const json::exception &e) {
        return fail(std::string("bad request: ") + e.what());
    } catch (const std::exception &e) {
        // Not the request's fault (a thread that could not start, memory): answered, and the
        // daemon goes on; it escaped the loop and ended kvsteerd.
        spdlog::error("API {}: {}", cmd, e.what());
        return fail(std::string("failed: ") + e.what());
    }
    return fail(
        "unknown command '" + cmd +
        "' (status, backends, backend.add, backend.remove, backend.drain, backend.weight, "
        "affinity.show, "
        "affinity.pin, affinity.unpin, tune.get, tune.set, counters, fleet.status, fleet.push, "
        "fleet.settle, fleet.forget, fleet.member, fleet.rotate_cookie, drain.start, drain.status, "
        "drain.cancel)");
}

}  // namespace kvsteer::control
