// kvsteerd: DaemonCore wired to its I/O. Startup and shutdown, the maintenance tick and vLLM KV
// events (probes in probes.cc, sockets and the loop in daemon_io.cc, API commands in api.cc,
// metrics text in daemon_metrics.cc).
#include "mono_clock.h"
#include "kvsteer/control/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "kvsteer/control/neigh.h"

namespace kvsteer::control {

Daemon::Daemon(DaemonConfig cfg, const Tables &maps, const FleetMaps &fleet)
    : core_(std::move(cfg), maps, resolve_next_hop_mac),
      maps_(maps),
      fleet_maps_(fleet),
      fleet_(core_.config().fleet),
      fleet_writer_(fleet, std::chrono::milliseconds(core_.config().table_grace_ms)),
      started_(std::chrono::steady_clock::now()) {
    if (spdlog::should_log(spdlog::level::debug))
        core_.set_decision_sink([](const std::string &s) { spdlog::debug("{}", s); });
}

Daemon::~Daemon() {
    stop();
    announcer_.reset();  // its thread (BIRD left as it is: run() withdrew on a clean stop)
    etcd_.reset();       // its thread writes wake_fd_ too
    pinger_.reset();     // and so does this one's
    kv_.reset();         // its thread writes wake_fd_: gone before the fd is closed
    {
        std::lock_guard lk(mu_);
        cv_.notify_all();
    }
    if (health_thr_.joinable()) health_thr_.join();
    if (tel_thr_.joinable()) tel_thr_.join();
    for (auto &c : api_clients_) close(c.fd);
    for (auto &c : metrics_clients_) close(c.fd);
    if (api_fd_ >= 0) {
        close(api_fd_);
        unlink(cfg().api_socket.c_str());
    }
    if (metrics_fd_ >= 0) close(metrics_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
}

bool Daemon::start(std::string *err) {
    for (const auto &spec : cfg().backends) {
        if (!spec.kv_events.empty() && !kv_events_supported()) {
            *err = "backend " + spec.ep.str() + ": kv-events=" + spec.kv_events +
                   ": this kvsteerd was built without KV events support (libzmq was not found at "
                   "build time)";
            start_config_error_ = true;
            return false;
        }
    }
    for (const auto &w : config_warnings(cfg())) spdlog::warn("{}", w);
    {
        auto slurp = [](const char *path) {
            std::ifstream f(path);
            return std::string((std::istreambuf_iterator<char>(f)),
                               std::istreambuf_iterator<char>());
        };
        if (auto w = snat_port_overlap(cfg(), slurp("/proc/sys/net/ipv4/ip_local_port_range"),
                                       slurp("/proc/sys/net/ipv4/ip_local_reserved_ports")))
            spdlog::warn("{}", *w);
    }
    if (cfg().cookie_key_random)
        spdlog::warn(
            "cookie-key not set: using a random key (set the same cookie-key on every appliance)");
    // The API socket first: a second kvsteerd (started by hand beside the running one) finds it
    // taken before it writes anything. It rewrote the running one's config, tables, affinity
    // entries, owner table and drains file first, and only then said "another kvsteerd".
    if (!open_api(err)) return false;
    core_.start(mono_ns());
    restore_backend_drains();
    // A restart over live maps in a fleet through etcd: the maps hold the fleet the previous
    // instance read from etcd; the configuration's (often this appliance alone) is not written
    // over them before etcd is read (it made this appliance the owner of every bucket and zeroed
    // the others' MACs: their frames dropped, their flows reset, for as long as etcd was away).
    fleet_publish_pending_ = cfg().fleet_etcd && fleet_maps_.fleet && fleet_.enabled() &&
                             __atomic_load_n(&fleet_maps_.fleet->generation, __ATOMIC_ACQUIRE) &&
                             fleet_maps_.fleet->self == fleet_.self;
    if (fleet_publish_pending_)
        spdlog::info(
            "fleet: the maps hold this appliance's fleet (a restart): kept until etcd "
            "is read");
    else
        publish_fleet();
    for (const auto &[id, b] : core_.backends())
        spdlog::info("backend {} {} weight {}{}", id, b.spec.ep.str(), b.spec.weight,
                     b.spec.model.empty() ? "" : " model " + b.spec.model);

    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
        *err = std::string("eventfd: ") + std::strerror(errno);
        return false;
    }
    if (!open_metrics(err)) return false;
    if (cfg().fleet_etcd) {
        etcd_ = std::make_unique<FleetEtcd>(
            *cfg().fleet_etcd, cfg().fleet_etcd_prefix, cfg().fleet, [this] {
                std::uint64_t one = 1;
                [[maybe_unused]] auto w = write(wake_fd_, &one, sizeof one);
            });
        etcd_->set_seed(config_seed());
        etcd_->set_cookie_seed(cfg().cookie_key);
        etcd_->start();
        spdlog::info(
            "fleet: etcd {} prefix {} carries the fleet (watched; read at each change, every 1 s "
            "anyway, every 200 ms while the watch is down)",
            cfg().fleet_etcd->str(), cfg().fleet_etcd_prefix);
    }
    for (const auto &[id, b] : core_.backends())
        if (!kv_subscribe(id, b.spec, err)) return false;
    update_targets(false);
    start_pinger();
    start_announcer();
    health_thr_ = std::thread([this] { prober_loop(Probe::Health); });
    if (cfg().telemetry_interval_ms)
        tel_thr_ = std::thread([this] { prober_loop(Probe::Telemetry); });
    spdlog::info("kvsteerd: {} backends, {} vips, steering {}, {} table, maps in {}",
                 core_.backends().size(), cfg().vips.size(), steer_mode_name(cfg().steering_mode),
                 table_algorithm_name(cfg().table_algorithm), cfg().bpffs);
    if (drain_marked()) {
        spdlog::warn(
            "drain: {} says a drain was started before this restart: draining again (the VIP "
            "stays withdrawn; kvsteerctl drain --cancel announces it)",
            drain_marker());
        handle_drain("drain.start", nlohmann::json{{"force", true}});
        drain_.fleet_note += " (drained again after a kvsteerd restart)";
    }
    return true;
}

void Daemon::stop() {
    stop_.store(true);
    if (wake_fd_ >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto r = write(wake_fd_, &one, sizeof one);
    }
}

void Daemon::tick() {
    apply_kv_resets();  // normally done on the subscriber's wake-up already
    const std::uint64_t now = mono_ns();
    if (maps_.ring_ctl && maps_.ring)
        consume_reports(
            maps_.ring_ctl, maps_.ring, KVS_MAX_WORKERS,
            [&](const kvs_bind_report &r) { core_.on_report(r, now); }, ring_stats_);
    core_.tick(now);
    apply_fleet_silence();
    share_hot(now);
    check_dataplane(now);
}

bool Daemon::backend_addable(const BackendSpec &spec, std::string *err) const {
    if (auto why = backend_unreachable(cfg(), spec.ep)) {
        *err = "backend " + *why;
        return false;
    }
    if (!spec.kv_events.empty()) {
        for (const auto &[id, b] : core_.backends()) {
            if (b.spec.kv_events == spec.kv_events) {
                *err =
                    "kv-events=" + spec.kv_events + " is already backend " + b.spec.ep.str() + "'s";
                return false;
            }
        }
        if (!kv_events_supported()) {
            *err =
                "kv-events: this kvsteerd was built without KV events support (libzmq was not "
                "found at build time)";
            return false;
        }
    }
    return core_.free_id(spec.ep, err).has_value();
}

std::optional<std::uint16_t> Daemon::add_backend(const BackendSpec &spec, std::string *err) {
    if (!backend_addable(spec, err)) return std::nullopt;
    auto id = core_.free_id(spec.ep, err);
    if (!id || !kv_subscribe(*id, spec, err)) return std::nullopt;
    kv_resets_.erase(*id);
    core_.add_backend(*id, spec, mono_ns());
    update_targets(true);
    spdlog::info("backend {} {} added (weight {})", *id, spec.ep.str(), spec.weight);
    return id;
}

void Daemon::remove_backend(std::uint16_t id) {
    if (const BackendRuntime *b = core_.backend(id))
        spdlog::info("backend {} {} removed", id, b->spec.ep.str());
    if (kv_) kv_->remove(id);
    if (auto r = kv_resets_.find(id); r != kv_resets_.end()) {
        if (r->second.since)
            spdlog::info("backend {}: {} more KV-event cache resets since the last such line", id,
                         r->second.since);
        kv_resets_.erase(r);
    }
    core_.remove_backend(id, mono_ns());
    save_backend_drains();
    update_targets(true);
}

bool Daemon::kv_subscribe(std::uint16_t id, const BackendSpec &spec, std::string *err) {
    if (spec.kv_events.empty()) return true;
    if (!kv_) {
        auto k = std::make_unique<KvEventSubscriber>([this] {
            std::uint64_t one = 1;
            if (wake_fd_ >= 0) [[maybe_unused]]
                auto w = write(wake_fd_, &one, sizeof one);
        });
        if (!k->start(err)) return false;
        kv_ = std::move(k);
    }
    kv_->set(id, spec.kv_events);
    spdlog::info("backend {} {}: subscribed to KV events on {}", id, spec.ep.str(), spec.kv_events);
    return true;
}

void Daemon::apply_kv_resets() {
    if (!kv_) return;
    // Two bounds at two depths on a flood of resets: the KV-event transport wakes this loop at
    // most every 50 ms (kv_events_zmq.cc kWakeGap: loop wakes), and the affinity table is
    // recomputed at most every kKvResetPublishNs here (policy computes).
    constexpr std::uint64_t kKvResetPublishNs = 100'000'000, kKvResetLogNs = 10'000'000'000;
    const std::uint64_t now = mono_ns(), total = kv_->reset_events();
    auto log_line = [&](std::uint16_t id, const BackendRuntime &b, const KvEventStats &st,
                        KvResets &r) {
        spdlog::info(
            "backend {} {}: KV events say its cache was emptied ({} AllBlocksCleared, {} "
            "publisher restarts in all; {} since the last such line): forgetting its prefixes",
            id, b.spec.ep.str(), st.clears, st.publisher_restarts, r.since);
        r.last_ns = now;
        r.since = 0;
    };
    const bool new_resets = total != kv_resets_total_seen_;
    bool held_lines = false;
    for (const auto &[id, r] : kv_resets_)
        held_lines |= r.since > 0 && now - r.last_ns >= kKvResetLogNs;
    if (new_resets || held_lines) {
        kv_resets_total_seen_ = total;
        for (const auto &[id, st] : kv_->all_stats()) {
            const BackendRuntime *b = core_.backend(id);
            if (!b) continue;
            KvResets &r = kv_resets_[id];
            if (st.resets > r.seen) {
                r.since += st.resets - r.seen;
                r.seen = st.resets;
                core_.mark_cache_reset(id);
                kv_publish_pending_ = true;
                ctr_.kv_cache_resets++;
            }
            if (r.since && (!r.last_ns || now - r.last_ns >= kKvResetLogNs))
                log_line(id, *b, st, r);
        }
    }
    // The tick calls this too: a publish held back goes out within a tick of becoming due.
    if (kv_publish_pending_ && now - kv_last_publish_ns_ >= kKvResetPublishNs) {
        kv_publish_pending_ = false;
        kv_last_publish_ns_ = now;
        core_.publish_affinity(false, now);
    }
}

std::string Daemon::boot_id() {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(f, id);
    return id;
}

void Daemon::save_backend_drains() {
    if (cfg().fleet_etcd) return;  // etcd holds them
    std::string text;
    for (const auto &[id, b] : core_.backends())
        if (b.draining) text += b.spec.ep.str() + "\n";
    const std::string path = backend_drains_file();
    if (text.empty()) {
        unlink(path.c_str());
        return;
    }
    if (!write_this_boots(path, text))
        spdlog::warn(
            "backend drains: cannot write {} ({}): a kvsteerd restart keeps them only for "
            "backends up at the time",
            path, std::strerror(errno));
}

bool Daemon::write_this_boots(const std::string &path, const std::string &body) {
    // Whole or not at all: written beside, then renamed over.
    const std::string tmp = path + ".tmp";
    bool ok = false;
    if (std::FILE *f = std::fopen(tmp.c_str(), "w")) {
        ok = std::fprintf(f, "%s\n%s", boot_id().c_str(), body.c_str()) > 0;
        ok = std::fclose(f) == 0 && ok && std::rename(tmp.c_str(), path.c_str()) == 0;
    }
    if (!ok) {
        const int e = errno;
        unlink(tmp.c_str());
        errno = e;
    }
    return ok;
}

void Daemon::restore_backend_drains() {
    const std::string path = backend_drains_file();
    if (cfg().fleet_etcd) {
        unlink(path.c_str());  // etcd holds the drains
        return;
    }
    std::ifstream f;
    if (!open_this_boots(path, f, "not applied")) return;
    std::string line;
    while (std::getline(f, line)) {
        for (const auto &[id, b] : core_.backends()) {
            if (b.spec.ep.str() != line) continue;
            if (!b.draining) {
                spdlog::info("backend {} {}: drained before kvsteerd restarted: draining", id,
                             line);
                core_.set_draining(id, true, mono_ns());
            }
            break;
        }
    }
    save_backend_drains();  // without the backends the configuration no longer has
}

bool Daemon::open_this_boots(const std::string &path, std::ifstream &f, const char *what) {
    f.open(path);
    if (!f) return false;
    std::string id;
    std::getline(f, id);
    if (id == boot_id()) return true;
    spdlog::warn("{} is from another boot: removed, {}", path, what);
    unlink(path.c_str());
    return false;
}

bool Daemon::drain_marked() {
    std::ifstream f;
    return open_this_boots(drain_marker(), f, "not drained");
}

}  // namespace kvsteer::control
