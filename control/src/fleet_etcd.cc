// The fleet kept in etcd (fleet_etcd.h): the poller thread, the watch thread, the lease and the
// txns.
#include "kvsteer/control/fleet_etcd.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

#include <nlohmann/json.hpp>

#include "kvsteer/control/config.h"
#include "kvsteer/control/json_bounded.h"
#include "kvsteer/control/etcd.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

constexpr std::int64_t kLeaseTtlS = 3;
constexpr auto kKeepaliveEvery = std::chrono::seconds(1);
constexpr auto kPollEvery = std::chrono::milliseconds(200);  // a round; the reads without a watch
constexpr auto kSafetyPollEvery = std::chrono::seconds(1);   // the reads while a watch is open
constexpr auto kWatchOpenTimeout = std::chrono::seconds(2);  // connect + head + created
constexpr auto kWatchRetryEvery = std::chrono::seconds(1);
constexpr auto kWatchReadSlice = std::chrono::milliseconds(500);
constexpr auto kCallTimeout = std::chrono::milliseconds(500);
constexpr int kTxnAttempts = 5;

MemberSet bit(std::uint8_t id) {
    return static_cast<MemberSet>(1u << id);
}

}  // namespace

std::string fleet_epochs_value(const std::vector<MemberSet> &epochs) {
    json a = json::array();
    for (MemberSet e : epochs) {
        json ids = json::array();
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
            if (e & bit(id)) ids.push_back(id);
        a.push_back(ids);
    }
    return a.dump();
}

std::optional<std::vector<MemberSet>> parse_fleet_epochs_value(const std::string &v,
                                                               std::string *err) {
    json a = parse_json_bounded(v);
    if (!a.is_array() || a.empty() || a.size() > kMaxFleetEpochs) {
        *err = "epochs: not a list of 1 to " + std::to_string(kMaxFleetEpochs) + " id lists";
        return std::nullopt;
    }
    std::vector<MemberSet> out;
    for (const auto &e : a) {
        if (!e.is_array()) {
            *err = "epochs: an epoch is not a list of ids";
            return std::nullopt;
        }
        if (e.empty() && &e == &a.back()) {
            *err = "epochs: the newest epoch is empty (the fleet would have no owner)";
            return std::nullopt;
        }
        MemberSet s = 0;
        for (const auto &id : e) {
            // Read as 64 bits: get<unsigned>() would wrap 4294967296 to appliance 0.
            if (!id.is_number_unsigned() || id.get<std::uint64_t>() >= KVS_MAX_APPLIANCES) {
                *err = "epochs: " + json_brief(id) + " is not an appliance id 0.." +
                       std::to_string(KVS_MAX_APPLIANCES - 1);
                return std::nullopt;
            }
            s |= bit(static_cast<std::uint8_t>(id.get<std::uint64_t>()));
        }
        out.push_back(s);
    }
    return out;
}

std::string fleet_hot_value(const std::vector<FleetHotKey> &keys) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const FleetHotKey &k : keys) {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(k.key));
        const double rate = std::isfinite(k.rate) && k.rate > 0 ? std::round(k.rate * 10) / 10 : 0;
        a.push_back({{"key", hex},
                     {"depth", k.depth},
                     {"rate", rate},
                     {"hot", k.hot},
                     {"holders", k.holders}});
    }
    return a.dump();
}

std::optional<std::vector<FleetHotKey>> parse_fleet_hot_value(const std::string &v,
                                                              std::string *err) {
    json a = parse_json_bounded(v);
    if (!a.is_array() || a.size() > kFleetHotMax) {
        *err = "hot: not a list of at most " + std::to_string(kFleetHotMax) + " prefixes";
        return std::nullopt;
    }
    std::vector<FleetHotKey> out;
    for (const auto &e : a) {
        auto bad = [&](const std::string &why) {
            *err = "hot: " + why + " in " + json_brief(e, 120);
            return std::nullopt;
        };
        if (!e.is_object()) return bad("a prefix is not an object");
        FleetHotKey k;
        auto key = e.find("key");
        if (key == e.end() || !key->is_string() || key->get_ref<const std::string &>().size() != 16)
            return bad("\"key\" is not 16 hex digits");
        for (char c : key->get_ref<const std::string &>()) {
            const int d = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
            if (d < 0) return bad("\"key\" is not 16 hex digits");
            k.key = (k.key << 4) | static_cast<std::uint64_t>(d);
        }
        if (k.key == 0) return bad("\"key\" is 0");
        auto depth = e.find("depth");
        if (depth == e.end() || !depth->is_number_unsigned() || depth->get<std::uint64_t>() > 255)
            return bad("\"depth\" is not 0..255");
        k.depth = static_cast<std::uint8_t>(depth->get<std::uint64_t>());
        auto rate = e.find("rate");
        if (rate == e.end() || !rate->is_number() || !std::isfinite(rate->get<double>()) ||
            rate->get<double>() < 0)
            return bad("\"rate\" is not a number >= 0");
        k.rate = rate->get<double>();
        auto hot = e.find("hot");
        if (hot == e.end() || !hot->is_boolean()) return bad("\"hot\" is not true or false");
        k.hot = hot->get<bool>();
        auto holders = e.find("holders");
        if (holders == e.end() || !holders->is_array() ||
            holders->size() > 2 * static_cast<std::size_t>(KVS_MAX_REPLICAS))
            return bad("\"holders\" is not a list of at most " +
                       std::to_string(2 * KVS_MAX_REPLICAS) + " addresses");
        for (const auto &h : *holders) {
            if (!h.is_string() || h.get_ref<const std::string &>().empty() ||
                h.get_ref<const std::string &>().size() > 64)
                return bad("a holder is not an ADDR:PORT string");
            k.holders.push_back(h.get<std::string>());
        }
        out.push_back(std::move(k));
    }
    return out;
}

std::vector<RemoteKey> fleet_remote_keys(
    const std::array<std::optional<std::vector<FleetHotKey>>, KVS_MAX_APPLIANCES> &lists,
    std::uint8_t self, const std::map<std::string, std::uint16_t> &by_addr, std::size_t *unknown) {
    std::vector<RemoteKey> keys;
    *unknown = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (id == self || !lists[id]) continue;
        for (const FleetHotKey &h : *lists[id]) {
            RemoteKey k;
            k.key = h.key;
            k.depth = h.depth;
            k.rate = h.rate;
            k.hot = h.hot;
            for (const std::string &addr : h.holders) {
                auto it = by_addr.find(addr);
                if (it == by_addr.end())
                    ++*unknown;
                else
                    k.holders.push_back(it->second);
            }
            keys.push_back(std::move(k));
        }
    }
    return keys;
}

namespace {

constexpr const char *kReportStrings[] = {"digest", "cookie", "tables", "lookup"};
constexpr const char *kReportBools[] = {"healthy", "draining"};

}  // namespace

bool fleet_report_agrees(const json &report, const FleetReportWant &want) {
    if (!report.is_object()) return false;
    auto same = [&](const char *key, const std::string &v) {
        auto it = report.find(key);
        return it != report.end() && it->is_string() && it->get_ref<const std::string &>() == v;
    };
    auto gen = report.find("config_generation");
    return same("digest", want.digest) && same("cookie", want.cookie) &&
           same("tables", want.tables) && same("lookup", want.lookup) && gen != report.end() &&
           gen->is_number_integer() && gen->get<std::int64_t>() == want.config_generation;
}

std::string fleet_report_problems(const json &report) {
    if (!report.is_object()) return "not a JSON object";
    std::string out;
    auto bad = [&](const char *key, const char *want) {
        auto it = report.find(key);
        out += (out.empty() ? "" : ", ") + std::string("\"") + key + "\": " + json_brief(*it) +
               " is not " + want;
    };
    for (const char *k : kReportStrings)
        if (report.contains(k) && !report[k].is_string()) bad(k, "a string");
    for (const char *k : kReportBools)
        if (report.contains(k) && !report[k].is_boolean()) bad(k, "true or false");
    if (report.contains("config_generation") && !report["config_generation"].is_number_integer())
        bad("config_generation", "an integer");
    if (report.contains("epoch") &&
        !(report["epoch"].is_number_unsigned() ||
          (report["epoch"].is_number_integer() && report["epoch"].get<std::int64_t>() >= 0)))
        bad("epoch", "a number >= 0");
    return out;
}

std::string cookie_key_hex(const std::array<std::uint64_t, 2> &k) {
    static const char d[] = "0123456789abcdef";
    std::string s;
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 8; i++) {
            const unsigned b = (k[w] >> (8 * i)) & 0xff;
            s += d[b >> 4];
            s += d[b & 15];
        }
    return s;
}

std::optional<CookieKeys> fleet_cookie_keys(const FleetEtcdView &v, std::int64_t now_unix_ms,
                                            const std::array<std::uint64_t, 2> &fallback_prev) {
    if (!v.cookie_key) return std::nullopt;
    if (v.cookie_key_next && v.cookie_next_at_ms > 0) {
        if (now_unix_ms < v.cookie_next_at_ms) return CookieKeys{*v.cookie_key, *v.cookie_key_next};
        return CookieKeys{*v.cookie_key_next, *v.cookie_key};
    }
    return CookieKeys{*v.cookie_key, v.cookie_key_prev ? *v.cookie_key_prev : fallback_prev};
}

FleetState fleet_state_from_etcd(const FleetState &local, const FleetEtcdView &v) {
    if (!v.read) return local;
    FleetState s;
    s.self = local.self;
    s.macs = v.alive;
    s.epochs = v.epochs ? *v.epochs : local.epochs;
    s.epoch_no = v.epochs ? static_cast<std::uint64_t>(v.epochs_version) : local.epoch_no;
    MemberSet sick = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (s.macs[id] && v.unhealthy[id]) sick |= bit(id);
    MemberSet dead = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (!s.macs[id]) dead |= bit(id);
    s.drop(dead);
    const MemberSet healthy = static_cast<MemberSet>(s.newest() & ~sick);
    if ((s.newest() & sick) && healthy) s.epochs.push_back(healthy);
    return s;
}

FleetEtcd::FleetEtcd(Endpoint ep, std::string prefix, FleetState local,
                     std::function<void()> changed)
    : ep_(ep), prefix_(std::move(prefix)), local_(std::move(local)), changed_(std::move(changed)) {}

FleetEtcd::~FleetEtcd() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
        stopping_ = true;  // the watch's socket waits end within 100 ms
    }
    cv_.notify_all();
    if (watch_thr_.joinable()) watch_thr_.join();
    if (thr_.joinable()) thr_.join();
}

void FleetEtcd::start() {
    thr_ = std::thread([this] { loop(); });
    watch_thr_ = std::thread([this] { watch_loop(); });
}

FleetEtcdWatch FleetEtcd::watch_status() const {
    std::lock_guard lk(mu_);
    return watch_;
}

// One watch of the prefix at a time, from just after the revision last read. Every message with
// events wakes the poller (which reads the prefix as ever: the view is never built from events).
// Lost (closed, etcd gone, canceled or compacted, a refused answer): the poller falls back to a
// read every 200 ms, and the watch is opened again every second; logged once per outage.
void FleetEtcd::watch_loop() {
    bool down_logged = false, opened_before = false;
    auto wake = [this] {
        {
            std::lock_guard lk(mu_);
            wake_ = true;
        }
        cv_.notify_all();
    };
    while (!stopping_) {
        std::int64_t from;
        {
            std::lock_guard lk(mu_);
            from = view_.read ? view_.revision + 1 : 0;
        }
        EtcdWatchConn conn(&stopping_);
        std::vector<EtcdWatchMessage> msgs;
        std::string err;
        bool ok = conn.open(ep_, etcd_watch_request(prefix_, from).dump(), kWatchOpenTimeout, &msgs,
                            &err);
        if (ok && from > 0 && msgs[0].revision > 0 && msgs[0].revision + 1 < from) {
            // The store is behind what was read (etcd's data replaced): a watch from `from` would
            // be silent until etcd caught up. Watch from now (the wake below reads it again).
            spdlog::warn("fleet: etcd revision {} is behind the {} read: watching from now",
                         msgs[0].revision, from - 1);
            msgs.clear();
            ok = conn.open(ep_, etcd_watch_request(prefix_, 0).dump(), kWatchOpenTimeout, &msgs,
                           &err);
        }
        if (ok) {
            {
                std::lock_guard lk(mu_);
                watch_.active = true;
                if (opened_before) watch_.reopened++;
            }
            watch_active_ = true;
            if (down_logged)
                spdlog::info("fleet: etcd {} watch of {} open again (from revision {})", ep_.str(),
                             prefix_, from);
            down_logged = false;
            opened_before = true;
            wake();  // anything between the last read and the watch's start
            while (ok && !stopping_) {
                std::size_t events = 0;
                for (const auto &m : msgs) {
                    if (m.kind == EtcdWatchMessage::Kind::Events) events += m.events;
                    if (m.kind == EtcdWatchMessage::Kind::Canceled ||
                        m.kind == EtcdWatchMessage::Kind::Error) {
                        err = "etcd " + ep_.str() + " /v3/watch: " + m.error;
                        ok = false;
                    }
                }
                msgs.clear();
                if (events) {
                    {
                        std::lock_guard lk(mu_);
                        watch_.events += events;
                    }
                    wake();
                }
                if (ok) ok = conn.read(kWatchReadSlice, &msgs, &err);
            }
            if (stopping_) break;
        }
        conn.close();
        {
            std::lock_guard lk(mu_);
            watch_.active = false;
            watch_.error = err;
            if (conn.refused()) watch_.refused++;
        }
        watch_active_ = false;
        wake();  // back to a read every 200 ms from now on
        if (!down_logged && !stopping_)
            spdlog::warn("fleet: {}: reading etcd every {} ms, reopening the watch every {} s", err,
                         kPollEvery.count(), kWatchRetryEvery.count());
        down_logged = true;
        std::unique_lock lk(mu_);
        if (cv_.wait_for(lk, kWatchRetryEvery, [this] { return stop_; })) break;
    }
    watch_active_ = false;
}

FleetEtcdView FleetEtcd::view() const {
    std::lock_guard lk(mu_);
    return view_;
}

std::string FleetEtcd::member_key(std::uint8_t id) const {
    return prefix_ + "fleet/members/" + std::to_string(id);
}

// A lease, renewed every second; a lost lease (expired during an outage) is granted again and
// the member key put under it.
bool FleetEtcd::keep_lease(std::string *err) {
    const auto now = std::chrono::steady_clock::now();
    if (lease_ && now - last_keepalive_ < kKeepaliveEvery) return true;
    if (lease_) {
        auto r = etcd_call(ep_, "/v3/lease/keepalive", etcd_lease_keepalive_request(lease_),
                           kCallTimeout);
        if (!r.ok()) {
            *err = r.error;
            return false;
        }
        last_keepalive_ = now;
        if (etcd_keepalive_ttl(*r.json) > 0) return true;
        spdlog::warn("fleet: etcd lease {:x} expired: granting a new one", lease_.load());
        lease_ = 0;
    }
    // Before the member key is put again after it was gone (a start after a crash, or back after
    // the lease expired: the others computed the table without this appliance meanwhile and bound
    // its buckets' new flows), it
    // leaves the owners by a real epoch, the newest without it of the members alive. The key then
    // brings it back as a previous owner only, and the daemon re-enters by another epoch once its
    // dataplane beats (Daemon::fleet_follow_health): the interim owners stay previous owners, so
    // the flows they bound are still found after its return. Before, the key alone made it the
    // owner again at once, and those flows were reset as orphans.
    MemberSet from = 0, to = 0;
    bool left = false;
    TxnExtra marker;
    const auto leave = [&](FleetState &f, std::string *e) {
        from = to = 0;
        marker = {};
        // Its key still there (a restart within the TTL): the others never left it out.
        if (f.macs[local_.self]) return true;
        from = f.newest();
        to = fleet_leave_epoch(from, local_.self, member_set_of(f.macs));
        if (!to) return true;
        bool dropped = false;
        if (!append_epoch(f.epochs, to, &dropped)) {
            *e = "no epoch to leave by";
            return false;
        }
        if (dropped) spdlog::warn("fleet: {} epochs retained: the oldest dropped", kMaxFleetEpochs);
        marker.puts.emplace_back(returning_key(local_.self), returning_value(from, to));
        return true;
    };
    if (!update_epochs(leave, &left, err, &marker)) return false;
    if (to)
        spdlog::info(
            "fleet: member {} left the owners before its key is put (epoch {}; it re-enters "
            "when its dataplane beats)",
            local_.self, member_set_str(to));
    auto g = etcd_call(ep_, "/v3/lease/grant", etcd_lease_grant_request(kLeaseTtlS), kCallTimeout);
    if (!g.ok()) {
        *err = g.error;
        return false;
    }
    auto id = etcd_lease_id(*g.json, err);
    if (!id) return false;
    std::lock_guard put(put_mu_);
    const std::string value = member_value();
    auto p = etcd_call(ep_, "/v3/kv/put", etcd_put_request(member_key(local_.self), value, *id),
                       kCallTimeout);
    if (!p.ok()) {
        *err = p.error;
        return false;
    }
    report_put_ = value;
    self_put_rev_ = p.revision;
    hot_put_.clear();  // the old lease's hot key went with it
    lease_ = *id;
    last_keepalive_ = now;
    spdlog::info("fleet: member {} in etcd under lease {:x} (TTL {} s)", local_.self, *id,
                 kLeaseTtlS);
    return true;
}

std::string FleetEtcd::member_value() const {
    json v;
    {
        std::lock_guard lk(mu_);
        v = report_;
    }
    v["mac"] = format_mac(*local_.macs[local_.self]);
    return v.dump();
}

void FleetEtcd::set_seed(std::vector<std::pair<std::string, std::string>> config) {
    seed_ = std::move(config);
}

bool FleetEtcd::put_config(const std::string &suffix, const std::string &value, std::string *err) {
    return change_config("/v3/kv/put", etcd_put_request(prefix_ + "config/" + suffix, value), err);
}

bool FleetEtcd::delete_config(const std::string &suffix, std::string *err) {
    return change_config("/v3/kv/deleterange", etcd_delete_request(prefix_ + "config/" + suffix),
                         err);
}

bool FleetEtcd::put_config_if(const std::string &suffix, const std::string &value, std::int64_t mod,
                              std::string *err) {
    const std::string key = prefix_ + "config/" + suffix;
    return change_config("/v3/kv/txn", etcd_txn_request({{key, mod}}, {{key, value}}), err);
}

bool FleetEtcd::delete_config_if(const std::string &suffix, std::int64_t mod, std::string *err) {
    const std::string key = prefix_ + "config/" + suffix;
    return change_config("/v3/kv/txn", etcd_txn_request({{key, mod}}, {}, {key}), err);
}

bool FleetEtcd::change_config(const std::string &path, const json &body, std::string *err) {
    auto r = etcd_call(ep_, path, body, kCallTimeout);
    if (!r.ok()) {
        *err = r.error;
        return false;
    }
    if (path == "/v3/kv/txn" && !etcd_txn_succeeded(*r.json)) {
        *err =
            "changed in etcd meanwhile (another appliance's change, or one not read here yet): "
            "nothing written; try again";
        std::string e;
        poll(&e);  // the next try starts from etcd's present state
        return false;
    }
    // One more version of config/generation: the configuration's generation number.
    auto g = etcd_call(ep_, "/v3/kv/put", etcd_put_request(prefix_ + "config/generation", path, 0),
                       kCallTimeout);
    if (!g.ok()) spdlog::warn("fleet: etcd: bumping config/generation: {}", g.error);
    std::string e;
    poll(&e);  // the answer shows the change
    return true;
}

std::string FleetEtcd::returning_key(std::uint8_t id) {
    return "fleet/returning/" + std::to_string(id);
}

std::string FleetEtcd::returning_value(MemberSet from, MemberSet to) {
    return member_set_str(from) + ";" + member_set_str(to);
}

void FleetEtcd::set_report(const json &report) {
    if (!report.is_object()) return;
    std::lock_guard lk(mu_);
    report_ = report;  // put by the thread at its next round (200 ms)
}

bool FleetEtcd::put_report_now(std::string *err) {
    return put_report(err);
}

bool FleetEtcd::put_report(std::string *err) {
    std::lock_guard put(put_mu_);
    const std::string value = member_value();
    // One read of the lease: zeroed meanwhile by another thread (an expiry), a second read put
    // the key with no lease, and a put without one detaches the key from its TTL for good.
    const auto lease = lease_.load();
    if (!lease || value == report_put_) return true;
    // Put either way; when the key is not as we left it, first read who wrote it (one txn).
    auto p =
        etcd_call(ep_, "/v3/kv/txn",
                  etcd_put_read_moved_request(member_key(local_.self), value, lease, self_put_rev_),
                  kCallTimeout);
    if (!p.ok()) {
        *err = p.error;
        return false;
    }
    report_put_ = value;
    self_put_rev_ = p.revision;
    if (!etcd_txn_succeeded(*p.json)) {
        // The range's answer: the key as someone else left it (none: it was deleted, no conflict).
        std::string e;
        auto kvs = etcd_txn_range_kvs(*p.json, 0, &e);
        if (kvs && !kvs->empty() && (*kvs)[0].lease != lease)
            note_self_conflict(
                self_conflict_text((*kvs)[0].lease, parse_json_bounded((*kvs)[0].value)));
    }
    return true;
}

std::string FleetEtcd::self_conflict_text(std::int64_t lease, const json &value) {
    return fmt::format(
        "lease {:x}, mac {}", lease,
        value.is_object() && value.contains("mac") ? json_brief(value["mac"]) : "none");
}

// Kept once seen (our next put hides it until the other writes again): an operator error to be
// fixed in a configuration. Logged once per writer.
void FleetEtcd::note_self_conflict(const std::string &what) {
    {
        std::lock_guard lk(mu_);
        if (view_.self_conflict == what) return;
        view_.self_conflict = what;
        view_.seq++;
    }
    spdlog::error(
        "fleet: another appliance wrote this appliance's member key {} ({}): two appliances are "
        "configured with fleet-self {}; each overwrites the other's MAC and report, and the fleet "
        "sends this id's frames to whichever wrote last. Give each appliance its own id (fleet "
        "status shows it under etcd.self_conflict)",
        member_key(local_.self), what, local_.self);
}

void FleetEtcd::set_hot(std::string value) {
    std::lock_guard lk(mu_);
    hot_ = std::move(value);  // put by the thread at its next round (200 ms)
}

bool FleetEtcd::put_hot(std::string *err) {
    std::string value;
    {
        std::lock_guard lk(mu_);
        value = hot_;
    }
    const auto lease = lease_.load();  // one read, as in put_report
    if (!lease || value.empty() || value == hot_put_) return true;
    auto p = etcd_call(
        ep_, "/v3/kv/put",
        etcd_put_request(prefix_ + "fleet/hot/" + std::to_string(local_.self), value, lease),
        kCallTimeout);
    if (!p.ok()) {
        *err = p.error;
        return false;
    }
    hot_put_ = std::move(value);
    return true;
}

bool FleetEtcd::poll(std::string *err) {
    // The etcd thread and the event loop (update_epochs) both poll: a read that started before
    // the one stored last is older than it and is not stored (the view never goes backwards: an
    // older read showed a returning marker the re-entry had just deleted).
    const std::uint64_t ticket = ++poll_ticket_;
    auto r = etcd_call(ep_, "/v3/kv/range", etcd_range_request(prefix_, true), kCallTimeout);
    if (!r.ok()) {
        *err = r.error;
        return false;
    }
    auto kvs = etcd_range_kvs(*r.json, err);
    if (!kvs) {
        *err = "etcd " + ep_.str() + ": " + *err;
        return false;
    }
    FleetEtcdView v;
    v.read = v.reachable = true;
    v.revision = r.revision;
    const std::string members = prefix_ + "fleet/members/", hot = prefix_ + "fleet/hot/";
    std::vector<std::string> hot_bad;     // refused values, logged once each (key and version)
    std::vector<std::string> report_bad;  // member reports with wrongly typed fields (each once)
    std::string conflict;                 // our member key written by another (self_conflict)
    for (const auto &kv : *kvs) {
        std::string e;
        if (kv.key.starts_with(members)) {
            auto id = parse_appliance_id(std::string_view(kv.key).substr(members.size()), &e);
            json j = parse_json_bounded(kv.value);
            auto mac = j.is_object() && j.contains("mac") && j["mac"].is_string()
                           ? parse_mac(j["mac"].get<std::string>(), &e)
                           : std::nullopt;
            // The config path's rule (FleetState::set_mac): a zero or group MAC is no member's
            // (a broadcast one made every appliance bind what was sent on to that member).
            if (mac && (*mac == Mac{} || ((*mac)[0] & 1))) {
                spdlog::debug("fleet: etcd key {} ignored (not a unicast MAC)", kv.key);
                mac.reset();
            }
            // Our key, written after our newest put under a lease not ours: another appliance
            // with our fleet-self (a read begun before our put shows an older mod_revision).
            const auto lease = lease_.load();
            const auto ours = self_put_rev_.load();
            if (id && *id == local_.self && lease && ours && kv.lease != lease &&
                kv.mod_revision > ours)
                conflict = self_conflict_text(kv.lease, j);
            if (id && mac) {
                v.alive[*id] = *mac;
                v.reports[*id] = kv.value;
                v.unhealthy[*id] =
                    j.contains("healthy") && j["healthy"].is_boolean() && !j["healthy"].get<bool>();
                // Wrongly typed fields disagree (fleet_report_agrees): said once per value.
                const std::string why = fleet_report_problems(j);
                std::lock_guard lk(mu_);
                auto [seen, fresh] = report_bad_seen_.try_emplace(kv.key);
                if (!why.empty() && (fresh || seen->second != kv.value))
                    report_bad.push_back(kv.key + ": " + why);
                seen->second = why.empty() ? std::string() : kv.value;
            } else
                spdlog::debug("fleet: etcd key {} ignored (not a member)", kv.key);
        } else if (kv.key.starts_with(hot)) {
            auto id = parse_appliance_id(std::string_view(kv.key).substr(hot.size()), &e);
            auto list = id ? parse_fleet_hot_value(kv.value, &e) : std::nullopt;
            if (list) {
                v.hot[*id] = std::move(list);
            } else {
                std::lock_guard lk(mu_);
                auto [seen, fresh] = hot_bad_seen_.try_emplace(kv.key, kv.mod_revision);
                if (fresh || seen->second != kv.mod_revision) {
                    seen->second = kv.mod_revision;
                    hot_bad_++;
                    hot_bad.push_back(kv.key + ": " + e);
                }
            }
        } else if (kv.key.starts_with(prefix_ + "fleet/returning/")) {
            auto id = parse_appliance_id(std::string_view(kv.key).substr(prefix_.size() + 16), &e);
            const std::size_t semi = kv.value.find(';');
            auto from = semi == std::string::npos
                            ? std::nullopt
                            : parse_member_set(std::string_view(kv.value).substr(0, semi), &e);
            auto to = from ? parse_member_set(std::string_view(kv.value).substr(semi + 1), &e)
                           : std::nullopt;
            if (id && from && to) v.returning[*id] = std::make_pair(*from, *to);
        } else if (kv.key == prefix_ + "fleet/epochs") {
            // A value that does not parse keeps the last good epochs (below), not the config's:
            // every appliance falling back to its own configured epochs made each the owner of
            // every bucket. Its mod_revision is kept so that push/settle/forget can replace it.
            v.epochs_mod = kv.mod_revision;
            if (auto ep = parse_fleet_epochs_value(kv.value, &e)) {
                v.epochs = std::move(ep);
                v.epochs_version = kv.version;
            } else {
                v.epochs_error = kv.key + ": " + e;
            }
        } else if (kv.key == prefix_ + "config/cookie-key") {
            v.cookie_key = parse_cookie_key_hex(kv.value, &e);
            v.cookie_mod = kv.mod_revision;
        } else if (kv.key == prefix_ + "config/cookie-key-previous") {
            v.cookie_key_prev = parse_cookie_key_hex(kv.value, &e);
        } else if (kv.key.starts_with(prefix_ + "config/backends/")) {
            v.backends[kv.key.substr(prefix_.size() + 16)] = kv.value;
            v.backends_mod[kv.key.substr(prefix_.size() + 16)] = kv.mod_revision;
        } else if (kv.key.starts_with(prefix_ + "config/tunables/")) {
            v.tunables[kv.key.substr(prefix_.size() + 16)] = kv.value;
        } else if (kv.key == prefix_ + "config/seeded") {
            v.config_seeded = true;
        } else if (kv.key == prefix_ + "config/generation") {
            v.config_generation = kv.version;
        } else if (kv.key == prefix_ + "config/cookie-key-next") {
            v.cookie_key_next = parse_cookie_key_hex(kv.value, &e);
        } else if (kv.key == prefix_ + "config/cookie-key-next-at") {
            // Milliseconds since 1970, before 2100: INT64_MAX overflowed the rotation guard.
            auto at = parse_uint_in("cookie-key-next-at", kv.value, {0, 4102444800000ull}, &e);
            v.cookie_next_at_ms = at ? static_cast<std::int64_t>(*at) : 0;
        }
    }
    bool changed, epochs_warn = false;
    {
        std::lock_guard lk(mu_);
        if (ticket < stored_ticket_) return true;
        stored_ticket_ = ticket;
        v.self_conflict = view_.self_conflict;  // note_self_conflict's
        // Our own key gone (etcd lost it, or the lease expired): put it again at once. Not from a
        // read older than the one stored (begun before the key was put, done after): it dropped a
        // fresh lease, granted again for nothing.
        if (!v.alive[local_.self]) lease_ = 0;
        if (!v.epochs) {  // a bad value, or the key deleted: the last good epochs stay in force
            v.epochs = view_.epochs;  // (none read yet: the configured ones are used)
            v.epochs_version = view_.epochs_version;
            epochs_warn = !v.epochs_error.empty() &&
                          (v.epochs_mod != view_.epochs_mod || view_.epochs_error.empty());
        }
        changed = v.revision != view_.revision || !view_.reachable;
        v.seq = view_.seq + (changed ? 1 : 0);
        v.hot_bad = hot_bad_;
        view_ = std::move(v);
    }
    if (epochs_warn)
        spdlog::warn(
            "fleet: etcd {} (keeping {}; `kvsteerctl fleet push|settle` writes a good "
            "value)",
            view().epochs_error,
            view().epochs ? "the last good epochs " + fleet_epochs_value(*view().epochs)
                          : std::string("the configured epochs: none read yet"));
    if (!conflict.empty()) note_self_conflict(conflict);
    for (const auto &b : hot_bad) spdlog::warn("fleet: etcd {} (ignored)", b);
    for (const auto &b : report_bad)
        spdlog::warn("fleet: etcd {} (the fleet does not agree with that member)", b);
    if (changed && changed_) changed_();
    return true;
}

void FleetEtcd::loop() {
    bool outage = false, woken = false;
    std::chrono::steady_clock::time_point last_poll{};
    for (;;) {
        std::string err;
        bool ok = keep_lease(&err) && put_report(&err) && put_hot(&err);
        // The lease and the puts every round; the prefix read at a change the watch reports, every
        // second anyway, and every round while there is no watch (or etcd was unreachable).
        const auto now = std::chrono::steady_clock::now();
        if (ok && (woken || outage || !watch_active_ || now - last_poll >= kSafetyPollEvery)) {
            last_poll = now;
            ok = poll(&err);
            if (ok) {
                auto v = view();
                if (!v.config_seeded && !seed_.empty()) {
                    // The first appliance up puts its backends and tunables (only if none yet).
                    std::vector<std::pair<std::string, std::string>> puts = {
                        {prefix_ + "config/seeded", "1"}};
                    for (const auto &[k, val] : seed_)
                        puts.emplace_back(prefix_ + "config/" + k, val);
                    auto t = etcd_call(ep_, "/v3/kv/txn",
                                       etcd_txn_request({{prefix_ + "config/seeded", 0}}, puts),
                                       kCallTimeout);
                    if (t.ok() && etcd_txn_succeeded(*t.json))
                        spdlog::info(
                            "fleet: etcd had no configuration: put this appliance's ({} keys)",
                            seed_.size());
                }
                if (!v.cookie_key && cookie_seed_) {
                    // No fleet cookie key yet: this appliance's (a txn: only if none yet).
                    const std::string ck = prefix_ + "config/cookie-key";
                    auto t = etcd_call(
                        ep_, "/v3/kv/txn",
                        etcd_txn_request({{ck, 0}}, {{ck, cookie_key_hex(*cookie_seed_)}}),
                        kCallTimeout);
                    if (t.ok() && etcd_txn_succeeded(*t.json))
                        spdlog::info("fleet: etcd had no cookie key: put this appliance's");
                }
                if (!v.epochs_mod) {
                    // No epochs key: the first appliance up puts the configured epochs, or, when
                    // the key was deleted, the last ones read (a txn: only if none yet).
                    const std::string value =
                        fleet_epochs_value(v.epochs ? *v.epochs : local_.epochs);
                    auto t = etcd_call(ep_, "/v3/kv/txn",
                                       etcd_txn_request({{prefix_ + "fleet/epochs", 0}},
                                                        {{prefix_ + "fleet/epochs", value}}),
                                       kCallTimeout);
                    if (t.ok() && etcd_txn_succeeded(*t.json))
                        spdlog::info("fleet: etcd had no epochs: put {} ones ({})",
                                     v.epochs ? "the last read" : "the configured", value);
                }
            }
        }
        if (ok && outage) {
            spdlog::info("fleet: etcd {} reachable again (revision {})", ep_.str(),
                         view().revision);
            outage = false;
        } else if (!ok) {
            bool notify = false;
            {
                std::lock_guard lk(mu_);
                notify = view_.reachable || view_.error != err;
                view_.reachable = false;
                view_.error = err;
                if (notify) view_.seq++;
            }
            if (!outage)
                spdlog::warn("fleet: {}: keeping the last fleet state, retrying every {} ms", err,
                             kPollEvery.count());
            outage = true;
            if (notify && changed_) changed_();
        }
        std::unique_lock lk(mu_);
        if (cv_.wait_for(lk, kPollEvery, [this] { return stop_ || wake_; }) && stop_) return;
        woken = std::exchange(wake_, false);
    }
}

bool FleetEtcd::update_epochs(const std::function<bool(FleetState &, std::string *)> &op,
                              bool *changed, std::string *err, TxnExtra *extra) {
    const std::string key = prefix_ + "fleet/epochs";
    for (int attempt = 0; attempt < kTxnAttempts; attempt++) {
        // The state as the fleet sees it, but with etcd's epochs as they are (dead members in).
        if (!poll(err)) return false;
        FleetEtcdView v = view();
        FleetState s = fleet_state_from_etcd(local_, v);
        // Etcd's epochs as they are (an epoch computed for unhealthy members is never written).
        s.epochs = v.epochs ? *v.epochs : local_.epochs;
        const std::vector<MemberSet> before = s.epochs;
        if (!op(s, err)) return false;
        *changed = s.epochs != before;
        // Unchanged, but etcd's value did not parse (the last good epochs stood in): write them.
        const bool write = *changed || !v.epochs_error.empty();
        if (!write && (!extra || extra->empty())) return true;
        std::vector<std::pair<std::string, std::string>> puts;
        std::vector<std::string> deletes;
        if (write) puts.emplace_back(key, fleet_epochs_value(s.epochs));
        if (extra) {
            for (const auto &[k, val] : extra->puts) puts.emplace_back(prefix_ + k, val);
            for (const auto &k : extra->deletes) deletes.push_back(prefix_ + k);
        }
        auto t = etcd_call(ep_, "/v3/kv/txn",
                           etcd_txn_request({{key, v.epochs_mod}},  // 0: no key yet
                                            puts, deletes),
                           kCallTimeout);
        if (!t.ok()) {
            *err = t.error;
            return false;
        }
        if (etcd_txn_succeeded(*t.json)) {
            std::string e;
            poll(&e);  // the answer shows the new state
            return true;
        }
        spdlog::info("fleet: the epochs changed in etcd meanwhile: retrying");
    }
    *err = "etcd: the epochs kept changing under " + std::to_string(kTxnAttempts) + " attempts";
    return false;
}

bool FleetEtcd::rotate_cookie(const std::array<std::uint64_t, 2> &local_current,
                              std::int64_t hold_ms, std::string *err) {
    const std::string cur = prefix_ + "config/cookie-key",
                      prev = prefix_ + "config/cookie-key-previous",
                      next = prefix_ + "config/cookie-key-next",
                      next_at = prefix_ + "config/cookie-key-next-at";
    for (int attempt = 0; attempt < kTxnAttempts; attempt++) {
        if (!poll(err)) return false;
        const FleetEtcdView v = view();
        const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();
        // Not while the last rotation may still be under way somewhere: before its key signs,
        // and for as long again after (an appliance switches at its own tick and reads etcd at
        // its own poll): replacing the keys then could fail a handshake signed by a late one.
        // Nor while a cookie the key before it signed last may still be valid (hold_ms: two
        // cookie periods): the new rotation drops that key (before, 2 s after the last one was
        // allowed, and a pooled client's first request on such a handshake was reset).
        const std::int64_t until = v.cookie_next_at_ms + kCookieActivateMs + hold_ms;
        if (v.cookie_key_next && v.cookie_next_at_ms > 0 && now < until) {
            *err = "the last rotation is still under way: try again in " +
                   std::to_string(until - now) + " ms";
            return false;
        }
        // The keys in force now: the signing one stays current until the fresh one signs, the
        // accepted one is kept as the previous (for the record: the next key is read first).
        const CookieKeys k = fleet_cookie_keys(v, now, local_current)
                                 .value_or(CookieKeys{local_current, local_current});
        const std::array<std::uint64_t, 2> in_force = k.sign, before = k.accept;
        std::array<std::uint64_t, 2> fresh{};
        if (getrandom(fresh.data(), sizeof fresh, 0) != static_cast<ssize_t>(sizeof fresh)) {
            *err = "no random bytes for a cookie key";
            return false;
        }
        auto t = etcd_call(ep_, "/v3/kv/txn",
                           etcd_txn_request({{cur, v.cookie_key ? v.cookie_mod : 0}},
                                            {{cur, cookie_key_hex(in_force)},
                                             {prev, cookie_key_hex(before)},
                                             {next, cookie_key_hex(fresh)},
                                             {next_at, std::to_string(now + kCookieActivateMs)}}),
                           kCallTimeout);
        if (!t.ok()) {
            *err = t.error;
            return false;
        }
        if (etcd_txn_succeeded(*t.json)) {
            std::string e;
            poll(&e);
            return true;
        }
    }
    *err = "etcd: the cookie key kept changing under " + std::to_string(kTxnAttempts) + " attempts";
    return false;
}

}  // namespace kvsteer::control
