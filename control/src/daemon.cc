// kvsteerd: DaemonCore wired to its I/O. Startup and shutdown, the maintenance tick and vLLM KV
// events (probes in probes.cc, sockets and the loop in daemon_io.cc, API commands in api.cc,
// metrics text in daemon_metrics.cc).
#include "mono_clock.h"
#include "kvsteer/control/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

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
    core_.start(mono_ns());
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
    if (!open_api(err) || !open_metrics(err)) return false;
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
    kv_resets_seen_.erase(*id);
    core_.add_backend(*id, spec, mono_ns());
    update_targets(true);
    spdlog::info("backend {} {} added (weight {})", *id, spec.ep.str(), spec.weight);
    return id;
}

void Daemon::remove_backend(std::uint16_t id) {
    if (const BackendRuntime *b = core_.backend(id))
        spdlog::info("backend {} {} removed", id, b->spec.ep.str());
    if (kv_) kv_->remove(id);
    kv_resets_seen_.erase(id);
    core_.remove_backend(id, mono_ns());
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
    const std::uint64_t total = kv_->reset_events();
    if (total == kv_resets_total_seen_) return;
    kv_resets_total_seen_ = total;
    bool any = false;
    for (const auto &[id, st] : kv_->all_stats()) {
        const BackendRuntime *b = core_.backend(id);
        if (!b) continue;
        std::uint64_t &seen = kv_resets_seen_[id];
        if (st.resets <= seen) continue;
        seen = st.resets;
        core_.mark_cache_reset(id);
        any = true;
        ctr_.kv_cache_resets++;
        spdlog::info(
            "backend {} {}: KV events say its cache was emptied ({} AllBlocksCleared, {} publisher "
            "restarts): "
            "forgetting its prefixes",
            id, b->spec.ep.str(), st.clears, st.publisher_restarts);
    }
    if (any) core_.publish_affinity(false, mono_ns());
}

}  // namespace kvsteer::control
