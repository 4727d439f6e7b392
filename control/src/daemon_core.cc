// DaemonCore: configuration, the backend registry, binding reports, the tick and live tunables
// (tables in table_publish.cc, health and telemetry in backend_signals.cc).
#include "kvsteer/control/daemon_core.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

namespace kvsteer::control {

namespace {

template <typename T>
T load_relaxed(T &x) {
    return std::atomic_ref<T>(x).load(std::memory_order_relaxed);
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

PolicyParams policy_params(const DaemonConfig &cfg) {
    PolicyParams p;
    p.replication = cfg.replication;
    p.hot_rps = cfg.hot_threshold;
    p.ttl_ns = static_cast<std::uint64_t>(cfg.affinity_ttl_ms) * 1000000ull;
    p.min_hot_ns = static_cast<std::uint64_t>(cfg.affinity_min_hot_ms) * 1000000ull;
    p.max_entries = cfg.affinity_max_entries;
    p.index_max = cfg.affinity_index_max;
    p.load_factor = cfg.load_factor;
    p.load_slack = cfg.load_slack;
    return p;
}

DaemonCore::DaemonCore(DaemonConfig cfg, const Tables &tables, MacResolver resolve_mac)
    : cfg_(std::move(cfg)),
      maps_(tables),
      writer_(tables, std::chrono::milliseconds(cfg_.table_grace_ms)),
      resolve_mac_(std::move(resolve_mac)),
      policy_(policy_params(cfg_)) {}

void DaemonCore::set_decision_sink(std::function<void(const std::string &)> sink) {
    sink_ = std::move(sink);
    policy_.set_decision_sink(sink_);
}

void DaemonCore::new_policy() {
    policy_ = AffinityPolicy(policy_params(cfg_));
    policy_.set_decision_sink(sink_);
}

void DaemonCore::write_config() {
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
    // Dual stack: the other family's address (family KVS_AF_NONE and zeros when single-stack).
    std::memcpy(c->snat2_addr, cfg_.snat2_addr.addr.data(), sizeof c->snat2_addr);
    c->snat2_family = cfg_.snat2_addr.family;
    c->snat_port_lo = cfg_.snat_port_lo;
    c->snat_port_hi = cfg_.snat_port_hi;
    std::memcpy(c->appliance_mac, cfg_.appliance_mac.data(), 6);
    c->n_workers = cfg_.workers;
    write_cookie_keys(c);
    c->cookie_period_s = cfg_.cookie_period_s;
    c->flags = (cfg_.syn_timestamps ? static_cast<__u32>(KVS_CFG_SYN_TIMESTAMPS) : 0u) |
               (cfg_.per_request ? static_cast<__u32>(KVS_CFG_PER_REQUEST) : 0u);
    c->syn_mss = cfg_.syn_mss;
    c->syn_wscale = cfg_.syn_wscale;
    c->syn_window = cfg_.syn_window;
    c->syn_rate_per_prefix = cfg_.syn_rate_per_prefix;
    c->syn_burst_per_prefix = cfg_.syn_burst_per_prefix;
    std::atomic_ref<__u32>(c->steer_mode).store(cfg_.steering_mode, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->prefix_len).store(cfg_.prefix_len, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->block_size).store(cfg_.block_size, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->max_blocks).store(cfg_.max_blocks, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->load_factor_milli)
        .store(static_cast<__u32>(std::lround(cfg_.load_factor * 1000)), std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->max_held_bytes).store(cfg_.max_held_bytes, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->load_slack).store(cfg_.load_slack, std::memory_order_relaxed);
    std::atomic_ref<__u32>(c->session_cap).store(cfg_.session_cap, std::memory_order_relaxed);
    // Byte by byte (the dataplane copies it the same way): a flight read during a change may see
    // a mix of the two lists, never bytes outside the field (the last stays NUL).
    for (std::size_t i = 0; i + 1 < sizeof c->session_headers; ++i)
        std::atomic_ref<char>(c->session_headers[i])
            .store(i < cfg_.session_headers.size() ? cfg_.session_headers[i] : '\0',
                   std::memory_order_relaxed);
    std::atomic_ref<__u64>(c->hash_seed).store(cfg_.hash_seed, std::memory_order_relaxed);
    writer_.bump_generation();
}

// XDP and the dataplane sign SYN-ACKs with cookie_key[cookie_sign] while this runs, word by word:
// the signing slot is never rewritten in place. A rotation (the new previous key is the one
// signing now) writes the other slot, then flips cookie_sign; checks accept either slot
// throughout. When both keys are new (a reload with other keys), the old signing slot is
// rewritten after the flip, once nothing should start signing with it.
void DaemonCore::write_cookie_keys(kvs_config *c) const {
    using Key = std::array<std::uint64_t, 2>;
    const auto slot = [c](unsigned i) {
        return Key{load_relaxed(c->cookie_key[i][0]), load_relaxed(c->cookie_key[i][1])};
    };
    const auto put = [c](unsigned i, const Key &k) {
        std::atomic_ref<__u64>(c->cookie_key[i][0]).store(k[0], std::memory_order_relaxed);
        std::atomic_ref<__u64>(c->cookie_key[i][1]).store(k[1], std::memory_order_relaxed);
    };
    std::atomic_ref<__u8> sign(c->cookie_sign);
    const unsigned s = sign.load(std::memory_order_relaxed) & 1u;
    const Key &cur = cfg_.cookie_key, &prev = cfg_.cookie_key_prev;
    if (slot(s) == cur || slot(s) == Key{}) {  // no change of the signing key, or none yet
        if (slot(s) != cur) put(s, cur);
        if (slot(s ^ 1u) != prev) put(s ^ 1u, prev);
        return;
    }
    put(s ^ 1u, cur);
    sign.store(static_cast<__u8>(s ^ 1u), std::memory_order_release);
    if (slot(s) != prev) put(s, prev);
}

void DaemonCore::set_cookie_keys(const std::array<std::uint64_t, 2> &cur,
                                 const std::array<std::uint64_t, 2> &prev) {
    if (cfg_.cookie_key == cur && cfg_.cookie_key_prev == prev) return;
    cfg_.cookie_key = cur;
    cfg_.cookie_key_prev = prev;
    cfg_.cookie_key_random = false;
    write_config();
}

BackendRuntime DaemonCore::fresh_backend(std::uint16_t id, const BackendSpec &spec) {
    BackendRuntime b;
    b.id = id;
    b.incarnation = ++incarnations_;
    b.spec = spec;
    b.health = HealthState(cfg_.health_interval_ms == 0);
    b.mac = spec.mac;
    // Whatever the load counters hold belongs to an earlier occupant of the slot.
    auto &l = maps_.load[id];
    b.base_binds = load_relaxed(l.binds);
    b.base_closes = load_relaxed(l.closes);
    b.base_idle_starts = load_relaxed(l.idle_starts);
    b.base_idle_ends = load_relaxed(l.idle_ends);
    b.prev_bind_fails = load_relaxed(l.bind_fail_rst) + load_relaxed(l.bind_fail_timeout);
    b.prev_binds = b.base_binds;
    return b;
}

void DaemonCore::resolve_mac(BackendRuntime &b) {
    if (b.mac || !resolve_mac_) return;
    std::string e;
    b.mac = resolve_mac_(b.spec.ep, &e);
}

void DaemonCore::start(std::uint64_t now_ns) {
    // A restart on maps a previous instance filled: a random cookie key (none configured) is
    // that instance's, so handshakes under way stay valid (a new key drops their ACKs).
    // With etcd the fleet's keys (rotated since the configured one) are the previous instance's
    // too, until etcd is read: the configured key put back made the appliance refuse the cookies
    // the others signed (their clients reset) for as long as etcd was out of reach.
    const kvs_config &was = *maps_.config;
    const __u64 *was_key = kvs_config_sign_key(&was);
    if ((cfg_.cookie_key_random || cfg_.fleet_etcd) && (was_key[0] | was_key[1])) {
        const __u64 *was_prev = kvs_config_prev_key(&was);
        cfg_.cookie_key = {was_key[0], was_key[1]};
        cfg_.cookie_key_prev = {was_prev[0], was_prev[1]};
        spdlog::info("cookie key: the previous instance's ({})",
                     cfg_.fleet_etcd ? "the fleet's, until etcd is read" : "none configured");
    }
    write_config();
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
    // A slot no configured backend matched whose flows are still open (a backend the previous
    // instance had and the configuration no longer names, or one it removed while its flows went
    // on): retired, as remove_backend leaves one. Before, a new backend took the lowest such id:
    // its slot was rewritten, and the old flows' segments the dataplane builds from the slot
    // (address, MAC) went to the new server, their closes counted against it.
    for (std::uint16_t i = 0; i < KVS_MAX_BACKENDS; i++)
        if (!taken.count(i) && in_flight_since(i, 0, 0) > 0) retired_[i] = Retired{0, 0};
    for (auto &[spec, id] : plan) {
        BackendRuntime b;
        if (!id) {
            std::uint16_t i = 0;
            while (i < KVS_MAX_BACKENDS && (taken.count(i) || retired_.count(i))) i++;
            if (i >= KVS_MAX_BACKENDS) {  // only retired ids left: the lowest, as free_id does
                i = 0;
                while (taken.count(i)) i++;
                retired_.erase(i);
                spdlog::warn(
                    "backend id {} reused while flows of its earlier backend are open (no other "
                    "id free): their closes count against {}",
                    i, spec.ep.str());
            }
            id = i;
            taken[i] = true;
            b = fresh_backend(i, spec);
        } else {
            // The slot's flows are this backend's: in-flight counts from zero, as they did. A
            // backend the previous instance had up stays up until our own checks say otherwise
            // (starting it down would make the dataplane refuse new flows until the first check).
            const std::uint8_t was_state = maps_.backends[*id].state;
            b = fresh_backend(*id, spec);
            b.base_binds = b.base_closes = b.base_idle_starts = b.base_idle_ends = 0;
            if (was_state == KVS_BE_UP || was_state == KVS_BE_DRAIN) b.health = HealthState(true);
            // A backend the operator drained stays drained (the map is the only record of it
            // without etcd; it went back to taking new flows). A drained backend that was down
            // is not told apart from a down one here: Daemon::restore_backend_drains drains it
            // again from its file.
            b.draining = was_state == KVS_BE_DRAIN;
        }
        resolve_mac(b);
        backends_[*id] = std::move(b);
    }
    publish_backends(true);
    publish_affinity(true, now_ns);
}

const BackendRuntime *DaemonCore::backend(std::uint16_t id) const {
    auto it = backends_.find(id);
    return it == backends_.end() ? nullptr : &it->second;
}

std::optional<std::uint16_t> DaemonCore::free_id(const Endpoint &ep, std::string *err) const {
    for (const auto &[id, b] : backends_) {
        if (b.spec.ep == ep) {
            *err = "backend " + ep.str() + " exists (id " + std::to_string(id) + ")";
            return std::nullopt;
        }
    }
    std::uint16_t id = 0;
    while (id < KVS_MAX_BACKENDS && (backends_.count(id) || retired_.count(id))) id++;
    if (id < KVS_MAX_BACKENDS) return id;
    // Only retired ids left: the lowest (its old flows' closes then count against the new one).
    id = 0;
    while (id < KVS_MAX_BACKENDS && backends_.count(id)) id++;
    if (id >= KVS_MAX_BACKENDS) {
        *err = "backend table full (" + std::to_string(KVS_MAX_BACKENDS) + ")";
        return std::nullopt;
    }
    return id;
}

void DaemonCore::add_backend(std::uint16_t id, const BackendSpec &spec, std::uint64_t now_ns) {
    if (retired_.erase(id))
        spdlog::warn(
            "backend id {} reused while flows of its removed backend are open (no other "
            "id free): their closes count against {}",
            id, spec.ep.str());
    BackendRuntime b = fresh_backend(id, spec);
    resolve_mac(b);
    backends_[id] = std::move(b);
    policy_.forget_backend(id);  // nothing the id's earlier occupant held applies
    unpin_backend(id);           // nor its pins (a remove already dropped them)
    republish(now_ns);
}

void DaemonCore::remove_backend(std::uint16_t id, std::uint64_t now_ns) {
    auto it = backends_.find(id);
    if (it != backends_.end() && in_flight(it->second) > 0)
        retired_[id] = Retired{it->second.base_binds, it->second.base_closes};
    if (it != backends_.end()) backends_.erase(it);
    policy_.forget_backend(id);
    unpin_backend(id);
    republish(now_ns);
}

void DaemonCore::unpin_backend(std::uint16_t id) {
    if (const std::size_t n = policy_.unpin_backend(id))
        spdlog::info("affinity: backend id {} left {} pin(s) (a pin with no backend left is gone)",
                     id, n);
}

void DaemonCore::set_draining(std::uint16_t id, bool draining, std::uint64_t now_ns) {
    auto it = backends_.find(id);
    if (it == backends_.end()) return;
    it->second.draining = draining;
    republish(now_ns);
}

void DaemonCore::set_weight(std::uint16_t id, std::uint16_t weight, std::uint64_t now_ns) {
    auto it = backends_.find(id);
    if (it == backends_.end()) return;
    it->second.spec.weight = weight;
    republish(now_ns);
}

void DaemonCore::end_batch(std::uint64_t now_ns) {
    if (batch_depth_ == 0 || --batch_depth_ > 0) return;
    if (batch_republish_) {
        republish(now_ns);
    } else if (batch_backends_) {
        publish_backends(false);
    }
    batch_republish_ = batch_backends_ = false;
}

void DaemonCore::republish(std::uint64_t now_ns) {
    if (batch_depth_) {
        batch_republish_ = true;
        return;
    }
    publish_backends(false);
    publish_affinity(false, now_ns);
}

void DaemonCore::on_report(const kvs_bind_report &r, std::uint64_t now_ns) {
    policy_.on_report(r, r.ts_ns && r.ts_ns <= now_ns ? r.ts_ns : now_ns);
    reports_since_tick_++;
}

void DaemonCore::tick(std::uint64_t now_ns) {
    expire_retired();
    if (now_ns >= next_passive_ns_) {
        passive_health(now_ns);
        next_passive_ns_ =
            now_ns + (cfg_.health_interval_ms ? cfg_.health_interval_ms : 1000) * 1000000ull;
    }
    const bool reports = reports_since_tick_ > 0;
    reports_since_tick_ = 0;
    if (reports || now_ns - last_affinity_ns_ >= 1000000000ull) publish_affinity(false, now_ns);
}

void DaemonCore::pin(std::uint64_t key, std::vector<std::uint16_t> backends, std::uint64_t now_ns) {
    policy_.pin(key, std::move(backends));
    publish_affinity(false, now_ns);
}

bool DaemonCore::unpin(std::uint64_t key, std::uint64_t now_ns) {
    if (!policy_.unpin(key)) return false;
    publish_affinity(false, now_ns);
    return true;
}

bool DaemonCore::set_tunable(const std::string &name, const std::string &value, std::string *err,
                             std::uint64_t now_ns) {
    // The same parse and checks as the config file (config.cc), on the live configuration.
    const std::uint32_t prefix_len = cfg_.prefix_len, block_size = cfg_.block_size;
    if (!apply_tunable(cfg_, name, value, err)) return false;
    bool rehash = cfg_.prefix_len != prefix_len || cfg_.block_size != block_size;
    write_config();
    policy_.set_params(policy_params(cfg_));
    if (rehash) {
        // Every prefix and block hash changes: what the index knows no longer matches any request.
        auto pins = policy_.pins();
        const PolicyCounters counted = policy_.counters();
        new_policy();
        policy_.carry_counters(counted);  // the index is cleared, not what it counted
        for (auto &[k, ids] : pins) policy_.pin(k, ids);
        spdlog::info("tune: {} changed: prefix index cleared", name);
    }
    publish_affinity(rehash, now_ns);
    return true;
}

}  // namespace kvsteer::control
