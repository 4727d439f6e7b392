// kvsteerd core: tables, backends, health, telemetry and affinity (sockets in daemon_io.cc,
// API commands in api.cc, metrics text in daemon_metrics.cc).
#include "kvsteer/control/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kvsteer/control/neigh.h"
#include "kvsteer/core/affinity.h"
#include "kvsteer/core/maglev.h"

namespace kvsteer::control {

namespace {

std::uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

template <typename T>
T load_relaxed(T &x) {
    return std::atomic_ref<T>(x).load(std::memory_order_relaxed);
}

kvs_backend make_slot(const BackendRuntime &b) {
    kvs_backend s{};
    std::memcpy(s.addr, b.spec.ep.addr.data(), sizeof s.addr);
    s.port = b.spec.ep.port_be;
    s.family = b.spec.ep.family;
    s.state = b.map_state();
    if (b.mac) std::memcpy(s.mac, b.mac->data(), 6);
    s.weight = b.spec.weight;
    s.max_load = b.effective_max_load();
    return s;
}

bool same_slot(const kvs_backend &a, const kvs_backend &b) {
    return std::memcmp(a.addr, b.addr, sizeof a.addr) == 0 && a.port == b.port &&
           a.family == b.family && a.state == b.state && std::memcmp(a.mac, b.mac, 6) == 0 &&
           a.weight == b.weight && a.ifindex == b.ifindex && a.max_load == b.max_load;
}

}  // namespace

std::uint32_t BackendRuntime::effective_max_load() const {
    if (!queue_max_load) return spec.max_load;
    return spec.max_load ? std::min(spec.max_load, queue_max_load) : queue_max_load;
}

std::uint8_t BackendRuntime::map_state() const {
    if (!health.up() || !mac) return KVS_BE_DOWN;
    return draining ? KVS_BE_DRAIN : KVS_BE_UP;
}

Daemon::Daemon(DaemonConfig cfg, const Tables &maps)
    : cfg_(std::move(cfg)),
      maps_(maps),
      writer_(maps, std::chrono::milliseconds(cfg_.table_grace_ms)),
      policy_(policy_params()),
      started_(std::chrono::steady_clock::now()) {
    if (spdlog::should_log(spdlog::level::debug))
        policy_.set_decision_sink([](const std::string &s) { spdlog::debug("{}", s); });
}

Daemon::~Daemon() {
    stop();
    kv_.reset();  // its thread writes wake_fd_: gone before the fd is closed
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
        unlink(cfg_.api_socket.c_str());
    }
    if (metrics_fd_ >= 0) close(metrics_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
}

PolicyParams Daemon::policy_params() const {
    PolicyParams p;
    p.replication = cfg_.replication;
    p.hot_rps = cfg_.hot_threshold;
    p.ttl_ns = static_cast<std::uint64_t>(cfg_.affinity_ttl_ms) * 1000000ull;
    p.min_hot_ns = static_cast<std::uint64_t>(cfg_.affinity_min_hot_ms) * 1000000ull;
    p.max_entries = cfg_.affinity_max_entries;
    p.index_max = cfg_.affinity_index_max;
    p.load_factor = cfg_.load_factor;
    return p;
}

void Daemon::write_config() {
    kvs_config *c = maps_.config;
    c->n_vips = static_cast<__u32>(cfg_.vips.size());
    for (unsigned i = 0; i < KVS_MAX_VIPS; i++) {
        kvs_vip v{};
        if (i < cfg_.vips.size()) {
            std::memcpy(v.addr, cfg_.vips[i].addr.data(), sizeof v.addr);
            v.port = cfg_.vips[i].port_be;
            v.family = cfg_.vips[i].family;
        }
        c->vips[i] = v;
    }
    std::memcpy(c->snat_addr, cfg_.snat_addr.addr.data(), sizeof c->snat_addr);
    c->snat_family = cfg_.snat_addr.family;
    c->snat_port_lo = cfg_.snat_port_lo;
    c->snat_port_hi = cfg_.snat_port_hi;
    std::memcpy(c->appliance_mac, cfg_.appliance_mac.data(), 6);
    c->n_workers = cfg_.workers;
    c->cookie_key[0][0] = cfg_.cookie_key[0];
    c->cookie_key[0][1] = cfg_.cookie_key[1];
    c->cookie_key[1][0] = cfg_.cookie_key_prev[0];
    c->cookie_key[1][1] = cfg_.cookie_key_prev[1];
    c->cookie_period_s = cfg_.cookie_period_s;
    c->flags = cfg_.syn_timestamps ? static_cast<__u32>(KVS_CFG_SYN_TIMESTAMPS) : 0u;
    c->syn_mss = cfg_.syn_mss;
    c->syn_wscale = cfg_.syn_wscale;
    c->syn_window = cfg_.syn_window;
    std::atomic_ref<__u32>(c->steer_mode).store(cfg_.steering_mode, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->prefix_len).store(cfg_.prefix_len, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->block_size).store(cfg_.block_size, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->max_blocks).store(cfg_.max_blocks, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->load_factor_milli)
        .store(static_cast<__u32>(std::lround(cfg_.load_factor * 1000)), std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->max_held_bytes).store(cfg_.max_held_bytes, std::memory_order_relaxed);
    std::atomic_ref<__u64>(c->hash_seed).store(cfg_.hash_seed, std::memory_order_relaxed);
    writer_.bump_generation();
}

bool Daemon::start(std::string *err) {
    for (const auto &spec : cfg_.backends) {
        if (!spec.kv_events.empty() && !kv_events_supported()) {
            *err = "backend " + spec.ep.str() + ": kv-events=" + spec.kv_events +
                   ": this kvsteerd was built without KV events support (libzmq was not found at "
                   "build time)";
            return false;
        }
    }
    if (cfg_.cookie_key_random)
        spdlog::warn(
            "cookie-key not set: using a random key (set the same cookie-key on every appliance)");
    write_config();

    // Keep the ids of backends that are already in the table (a daemon restart): flows and load
    // counters stay attributed to the same slot.
    std::map<std::uint16_t, bool> taken;
    std::vector<std::pair<BackendSpec, std::optional<std::uint16_t>>> plan;
    for (const auto &spec : cfg_.backends) {
        std::optional<std::uint16_t> id;
        for (std::uint16_t i = 0; i < KVS_MAX_BACKENDS; i++) {
            const kvs_backend &s = maps_.backends[i];
            if (s.state != KVS_BE_EMPTY && s.family == spec.ep.family &&
                s.port == spec.ep.port_be &&
                std::memcmp(s.addr, spec.ep.addr.data(), sizeof s.addr) == 0 && !taken.count(i)) {
                id = i;
                taken[i] = true;
                break;
            }
        }
        plan.emplace_back(spec, id);
    }
    for (auto &[spec, id] : plan) {
        if (!id) {
            std::uint16_t i = 0;
            while (taken.count(i)) i++;
            id = i;
            taken[i] = true;
            // A fresh slot: whatever the load counters hold belongs to an earlier occupant.
            BackendRuntime b;
            b.base_binds = load_relaxed(maps_.load[i].binds);
            b.base_closes = load_relaxed(maps_.load[i].closes);
            b.id = i;
            backends_[i] = b;
        } else {
            backends_[*id].id = *id;
        }
        BackendRuntime &b = backends_[*id];
        b.spec = spec;
        b.health = HealthState(cfg_.health_interval_ms == 0);
        b.mac = spec.mac;
        b.prev_bind_fails = load_relaxed(maps_.load[*id].bind_fail_rst) +
                            load_relaxed(maps_.load[*id].bind_fail_timeout);
        b.prev_binds = load_relaxed(maps_.load[*id].binds);
        if (!b.mac) {
            std::string e;
            b.mac = resolve_next_hop_mac(spec.ep, &e);
        }
        spdlog::info("backend {} {} weight {}{}", b.id, spec.ep.str(), spec.weight,
                     spec.model.empty() ? "" : " model " + spec.model);
    }
    publish_backends(true);
    publish_affinity(true);

    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
        *err = std::string("eventfd: ") + std::strerror(errno);
        return false;
    }
    if (!open_api(err) || !open_metrics(err)) return false;
    for (const auto &[id, b] : backends_)
        if (!kv_subscribe(b, err)) return false;
    update_targets(false);
    health_thr_ = std::thread([this] { prober_loop(true); });
    if (cfg_.telemetry_interval_ms) tel_thr_ = std::thread([this] { prober_loop(false); });
    spdlog::info("kvsteerd: {} backends, {} vips, steering {}, {} table, maps in {}",
                 backends_.size(), cfg_.vips.size(), steer_mode_name(cfg_.steering_mode),
                 table_algorithm_name(cfg_.table_algorithm), cfg_.bpffs);
    return true;
}

void Daemon::stop() {
    stop_.store(true);
    if (wake_fd_ >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto r = write(wake_fd_, &one, sizeof one);
    }
}

void Daemon::publish_backends(bool force_maglev) {
    bool changed = false;
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < KVS_MAX_BACKENDS; i++) {
        auto it = backends_.find(static_cast<std::uint16_t>(i));
        if (it == backends_.end()) {
            if (maps_.backends[i].state != KVS_BE_EMPTY) {
                writer_.set_backend_state(i, KVS_BE_EMPTY);
                changed = true;
            }
            continue;
        }
        n = i + 1;
        kvs_backend want = make_slot(it->second);
        if (!same_slot(want, maps_.backends[i])) {
            writer_.write_backend(i, want);
            changed = true;
        }
        it->second.written_state = want.state;
    }
    if (maps_.config->n_backends != n) {
        writer_.set_n_backends(n);
        changed = true;
    }
    std::vector<std::array<std::uint64_t, 3>> input;
    std::vector<MaglevBackend> mb;
    for (const auto &[id, b] : backends_) {
        if (b.map_state() != KVS_BE_UP || b.spec.weight == 0) continue;
        auto ident = backend_identity(b.spec.ep);
        input.push_back({id, ident, b.spec.weight});
        mb.push_back(MaglevBackend{id, ident, b.spec.weight});
    }
    if (force_maglev || !maglev_published_ || input != maglev_input_) {
        // Runs on the event loop, only when the up set or a weight changes: rendezvous is
        // O(slots x backends), ~0.14-0.27 s at 1024 backends (Maglev ~3 ms), see README.md.
        auto t0 = std::chrono::steady_clock::now();
        auto table = cfg_.table_algorithm == TableAlgorithm::Maglev
                         ? build_maglev(mb, KVS_MAGLEV_SIZE)
                         : build_rendezvous_table(mb, KVS_MAGLEV_SIZE);
        auto build_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        writer_.publish_maglev(table);  // bumps the generation
        maglev_input_ = std::move(input);
        maglev_published_ = true;
        ctr_.maglev_rebuilds++;
        spdlog::debug("maglev: {} table rebuilt over {} backends in {:.1f} ms (flip {})",
                      table_algorithm_name(cfg_.table_algorithm), mb.size(), build_ms,
                      writer_.maglev_flips());
    } else if (changed) {
        writer_.bump_generation();
    }
}

void Daemon::publish_affinity(bool force) {
    last_affinity_ = std::chrono::steady_clock::now();
    auto now = mono_ns();
    policy_.update_backends(snapshots(), now);
    for (auto &[id, b] : backends_) b.cache_reset = false;
    auto want = policy_.compute(now);
    std::sort(want.begin(), want.end(),
              [](const DesiredEntry &a, const DesiredEntry &b) { return a.key < b.key; });
    if (!force && affinity_published_ && want == desired_) return;
    AffinityBuilder builder(KVS_AFFINITY_SLOTS);
    for (const auto &e : want) {
        if (!builder.insert(e.key, std::span<const std::uint16_t>(e.backends.data(), e.n),
                            e.depth)) {
            ctr_.affinity_insert_failed++;
            spdlog::debug("affinity: {:016x} not written (probe window full)", e.key);
        }
    }
    writer_.publish_affinity(builder.table());
    desired_ = std::move(want);
    affinity_published_ = true;
    ctr_.affinity_publishes++;
}

std::uint64_t Daemon::in_flight(const BackendRuntime &b) const {
    auto &l = maps_.load[b.id];
    std::uint64_t binds = load_relaxed(l.binds) - b.base_binds;
    std::uint64_t closes = load_relaxed(l.closes) - b.base_closes;
    return binds > closes ? binds - closes : 0;
}

std::vector<BackendSnapshot> Daemon::snapshots() const {
    std::vector<BackendSnapshot> v;
    for (const auto &[id, b] : backends_) {
        BackendSnapshot s;
        s.id = id;
        s.eligible = b.map_state() == KVS_BE_UP;
        s.in_flight = in_flight(b);
        if (b.tel_valid) {
            s.queue = b.tel.waiting;
            s.kv_usage = b.tel.kv_usage;
        }
        s.hit_rate = b.window_hit_rate;
        s.cache_reset = b.cache_reset;
        v.push_back(s);
    }
    return v;
}

void Daemon::log_backend_transition(const BackendRuntime &b, bool up, const std::string &why) {
    if (up) {
        ctr_.backend_up++;
        spdlog::info("backend {} {} is up", b.id, b.spec.ep.str());
    } else {
        ctr_.backend_down++;
        spdlog::warn("backend {} {} is down: {}", b.id, b.spec.ep.str(), why);
    }
}

bool Daemon::kv_subscribe(const BackendRuntime &b, std::string *err) {
    if (b.spec.kv_events.empty()) return true;
    if (!kv_) {
        auto k = std::make_unique<KvEventSubscriber>([this] {
            std::uint64_t one = 1;
            if (wake_fd_ >= 0) [[maybe_unused]]
                auto w = write(wake_fd_, &one, sizeof one);
        });
        if (!k->start(err)) return false;
        kv_ = std::move(k);
    }
    kv_->set(b.id, b.spec.kv_events);
    spdlog::info("backend {} {}: subscribed to KV events on {}", b.id, b.spec.ep.str(),
                 b.spec.kv_events);
    return true;
}

void Daemon::apply_kv_resets() {
    if (!kv_) return;
    const std::uint64_t total = kv_->reset_events();
    if (total == kv_resets_total_seen_) return;
    kv_resets_total_seen_ = total;
    bool any = false;
    for (const auto &[id, st] : kv_->all_stats()) {
        auto it = backends_.find(id);
        if (it == backends_.end() || st.resets <= it->second.kv_resets_seen) continue;
        BackendRuntime &b = it->second;
        b.kv_resets_seen = st.resets;
        b.cache_reset = true;
        any = true;
        ctr_.kv_cache_resets++;
        spdlog::info(
            "backend {} {}: KV events say its cache was emptied ({} AllBlocksCleared, {} publisher "
            "restarts): "
            "forgetting its prefixes",
            b.id, b.spec.ep.str(), st.clears, st.publisher_restarts);
    }
    if (any) publish_affinity(false);
}

void Daemon::apply_probe(ProbeResult &r) {
    auto it = backends_.find(r.id);
    if (it == backends_.end() || !(it->second.spec.ep == r.ep))
        return;  // removed or replaced meanwhile
    BackendRuntime &b = it->second;
    if (r.health) {
        bool ok = r.http.ok && r.http.status >= 200 && r.http.status < 300;
        bool had_mac = b.mac.has_value();
        if (!b.mac) {
            std::string e;
            b.mac = resolve_next_hop_mac(b.spec.ep, &e);
            if (!b.mac && ok) {
                ctr_.mac_resolve_failed++;
                b.last_error = "next-hop MAC: " + e;
                spdlog::warn("backend {} {}: cannot resolve its MAC: {}", b.id, b.spec.ep.str(), e);
            } else if (b.mac) {
                spdlog::info("backend {} {}: next-hop MAC {}", b.id, b.spec.ep.str(),
                             format_mac(*b.mac));
            }
        }
        bool changed = b.mac.has_value() != had_mac;
        if (cfg_.health_interval_ms) {
            ctr_.health_checks++;
            std::string why = r.http.ok ? "HTTP " + std::to_string(r.http.status) : r.http.error;
            if (ok) {
                b.checks_ok++;
                if (b.mac && b.health.up()) b.last_error.clear();  // shows only a current problem
            } else {
                b.checks_failed++;
                ctr_.health_failures++;
                b.last_error = "health: " + why;
            }
            if (b.health.observe(ok, {cfg_.health_rise, cfg_.health_fall})) {
                changed = true;
                log_backend_transition(b, b.health.up(), why);
            }
        }
        if (changed) {
            publish_backends(false);
            publish_affinity(false);
        }
        return;
    }
    // Telemetry.
    ctr_.scrapes++;
    if (!r.http.ok || r.http.status != 200 || !r.tel) {
        b.scrapes_failed++;
        ctr_.scrape_failures++;
        if (b.tel_valid || b.scrapes_failed == 1)
            spdlog::warn("backend {} {}: metrics scrape failed: {}", b.id, b.spec.ep.str(),
                         r.http.ok ? "HTTP " + std::to_string(r.http.status) : r.http.error);
        b.tel_valid = false;
        b.window_hit_rate.reset();
    } else {
        b.scrapes_ok++;
        b.tel = std::move(*r.tel);
        b.tel_valid = true;
        ctr_.metrics_parse_bad_lines += r.bad_lines;
        std::size_t unknown =
            b.tel.problems.size() + (b.tel.flavor == ServerFlavor::Unknown ? 1 : 0);
        if (unknown) {
            b.metrics_unknown += unknown;
            ctr_.metrics_unknown += unknown;
            if (!b.tel_problem_logged) {
                b.tel_problem_logged = true;
                spdlog::warn(
                    "backend {} {}: metrics partly unknown ({}{}{}); further problems are only "
                    "counted",
                    b.id, b.spec.ep.str(),
                    b.tel.flavor == ServerFlavor::Unknown ? "no vllm: or sglang: metrics" : "",
                    b.tel.problems.empty() ? "" : b.tel.problems.front(),
                    r.parse_error.empty() ? "" : "; " + r.parse_error);
            }
        }
        auto u = b.hit.update(b.tel);
        b.window_hit_rate = u.window_hit_rate;
        if (u.reset) {
            b.cache_reset = true;
            spdlog::info("backend {} {}: cache counters reset (restart?): forgetting its prefixes",
                         b.id, b.spec.ep.str());
        }
    }
    // One writer per field: kvsteerd owns ext_queue / ext_running; unknown writes 0.
    auto &l = maps_.load[b.id];
    auto q =
        b.tel_valid && b.tel.waiting ? static_cast<std::uint64_t>(std::llround(*b.tel.waiting)) : 0;
    auto run =
        b.tel_valid && b.tel.running ? static_cast<std::uint64_t>(std::llround(*b.tel.running)) : 0;
    std::atomic_ref<__u64>(l.ext_queue).store(q, std::memory_order_relaxed);
    std::atomic_ref<__u64>(l.ext_running).store(run, std::memory_order_relaxed);
    // queue-cap: a backend that queues requests itself takes no new affinity flows beyond
    // what it has (max_load = in-flight, at least 1) until its queue drains.
    std::uint32_t cap = 0;
    if (cfg_.queue_cap && b.tel_valid && b.tel.waiting && *b.tel.waiting >= cfg_.queue_cap)
        cap = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(in_flight(b), 1, 0xffffffffu));
    if (cap != b.queue_max_load) {
        spdlog::debug("backend {} {}: queue {} -> max_load {}", b.id, b.spec.ep.str(), q,
                      cap ? std::to_string(cap) : "bound");
        b.queue_max_load = cap;
        publish_backends(false);
    }
}

void Daemon::passive_health() {
    bool changed = false;
    for (auto &[id, b] : backends_) {
        auto &l = maps_.load[id];
        std::uint64_t fails = load_relaxed(l.bind_fail_rst) + load_relaxed(l.bind_fail_timeout);
        std::uint64_t binds = load_relaxed(l.binds);
        std::uint64_t delta = fails >= b.prev_bind_fails ? fails - b.prev_bind_fails : 0;
        std::uint64_t bound = binds >= b.prev_binds ? binds - b.prev_binds : 0;
        b.prev_bind_fails = fails;
        b.prev_binds = binds;
        if (!cfg_.health_passive_fails) continue;
        if (!b.health.up()) {
            // With active checks off nothing else can bring it back: retry after `rise` intervals.
            if (!cfg_.health_interval_ms && ++b.passive_hold >= cfg_.health_rise) {
                b.passive_hold = 0;
                b.health = HealthState(true);
                log_backend_transition(b, true, "passive hold over");
                changed = true;
            }
            continue;
        }
        if (delta >= cfg_.health_passive_fails) {
            b.passive_streak++;
            b.passive_failures++;
            ctr_.passive_failures++;
            b.last_error = "passive: " + std::to_string(delta) +
                           " backend SYN failures (RST/timeout) in one interval";
            spdlog::debug("backend {} {}: {} dataplane bind failures in one interval ({} in a row)",
                          id, b.spec.ep.str(), delta, b.passive_streak);
        } else if (bound > 0) {
            b.passive_streak = 0;  // flows bound fine: the failures were transient
        }
        if (b.passive_streak >= cfg_.health_fall) {
            b.passive_streak = 0;
            b.passive_hold = 0;
            b.health.force_down();
            log_backend_transition(b, false, b.last_error);
            changed = true;
        }
    }
    if (changed) {
        publish_backends(false);
        publish_affinity(false);
    }
}

std::size_t Daemon::consume_rings() {
    if (!maps_.ring_ctl || !maps_.ring) return 0;
    std::uint64_t now = mono_ns();
    return consume_reports(
        maps_.ring_ctl, maps_.ring, KVS_MAX_WORKERS,
        [&](const kvs_bind_report &r) {
            policy_.on_report(r, r.ts_ns && r.ts_ns <= now ? r.ts_ns : now);
        },
        ring_stats_);
}

void Daemon::tick() {
    apply_kv_resets();  // normally done on the subscriber's wake-up already
    std::size_t reports = consume_rings();
    auto now = std::chrono::steady_clock::now();
    if (now >= next_passive_) {
        passive_health();
        next_passive_ = now + std::chrono::milliseconds(
                                  cfg_.health_interval_ms ? cfg_.health_interval_ms : 1000);
    }
    // The policy walks its whole index: do it when reports arrived, else once a second (aging).
    if (reports || now - last_affinity_ >= std::chrono::seconds(1)) publish_affinity(false);
}

void Daemon::update_targets(bool kick) {
    std::lock_guard lk(mu_);
    if (kick) kick_[0] = kick_[1] = true;
    targets_.clear();
    for (const auto &[id, b] : backends_) targets_.push_back({id, b.spec.ep});
    cv_.notify_all();
}

void Daemon::prober_loop(bool health) {
    const auto interval = std::chrono::milliseconds(
        health ? (cfg_.health_interval_ms ? cfg_.health_interval_ms : 1000)
               : cfg_.telemetry_interval_ms);
    const auto timeout = health ? std::chrono::milliseconds(cfg_.health_timeout_ms)
                                : std::chrono::milliseconds(std::clamp<std::uint32_t>(
                                      cfg_.telemetry_interval_ms * 4 / 5, 100, 5000));
    const std::string &path = health ? cfg_.health_path : cfg_.telemetry_path;
    while (!stop_.load()) {
        std::vector<ProbeTarget> t;
        {
            std::lock_guard lk(mu_);
            t = targets_;
            kick_[health ? 0 : 1] = false;
        }
        auto begin = std::chrono::steady_clock::now();
        std::vector<HttpRequest> reqs;
        for (const auto &x : t) reqs.push_back({x.ep, path});
        auto res = reqs.empty() ? std::vector<HttpResult>{} : http_get_many(reqs, timeout);
        std::vector<ProbeResult> out;
        for (std::size_t i = 0; i < t.size(); i++) {
            ProbeResult r{health, t[i].id, t[i].ep, std::move(res[i]), std::nullopt, 0, {}};
            if (!health && r.http.ok && r.http.status == 200) {
                auto page = parse_prometheus(r.http.body);
                r.bad_lines = page.bad_lines;
                r.parse_error = page.first_error;
                r.tel = extract_telemetry(page);
            }
            out.push_back(std::move(r));
        }
        {
            std::unique_lock lk(mu_);
            for (auto &r : out) results_.push_back(std::move(r));
        }
        std::uint64_t one = 1;
        [[maybe_unused]] auto w = write(wake_fd_, &one, sizeof one);
        std::unique_lock lk(mu_);
        cv_.wait_until(lk, begin + interval, [&] { return stop_.load() || kick_[health ? 0 : 1]; });
    }
}

}  // namespace kvsteer::control
