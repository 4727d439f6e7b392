// DaemonCore's tables: backend slots, the lookup table and the affinity table, each published
// only when what it would hold changed.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <unordered_map>
#include <xxhash.h>

#include "kvsteer/control/daemon_core.h"
#include "kvsteer/core/affinity.h"

namespace kvsteer::control {

namespace {

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
    // A static max_load replaces the load-factor bound; the queue cap alone applies with it.
    s.max_load_cap = !b.spec.max_load && b.queue_max_load ? 1 : 0;
    return s;
}

bool same_slot(const kvs_backend &a, const kvs_backend &b) {
    return std::memcmp(a.addr, b.addr, sizeof a.addr) == 0 && a.port == b.port &&
           a.family == b.family && a.state == b.state && std::memcmp(a.mac, b.mac, 6) == 0 &&
           a.weight == b.weight && a.ifindex == b.ifindex && a.max_load == b.max_load &&
           a.max_load_cap == b.max_load_cap;
}

}  // namespace

std::vector<std::uint32_t> build_lookup_table(TableAlgorithm a,
                                              std::span<const MaglevBackend> backends) {
    return a == TableAlgorithm::Maglev ? build_maglev(backends, KVS_MAGLEV_SIZE)
                                       : build_rendezvous_table(backends, KVS_MAGLEV_SIZE);
}

std::uint64_t DaemonCore::in_flight(const BackendRuntime &b) const {
    return in_flight_since(b.id, b.base_binds, b.base_closes);
}

std::uint64_t DaemonCore::idle(const BackendRuntime &b) const {
    auto &l = maps_.load[b.id];
    std::uint64_t ends = load_relaxed(l.idle_ends) - b.base_idle_ends;
    std::uint64_t starts = load_relaxed(l.idle_starts) - b.base_idle_starts;
    return starts > ends ? starts - ends : 0;
}

std::uint64_t DaemonCore::active(const BackendRuntime &b) const {
    const std::uint64_t n = in_flight(b), i = idle(b);
    return n > i ? n - i : 0;
}

std::uint64_t DaemonCore::in_flight_since(std::uint16_t id, std::uint64_t base_binds,
                                          std::uint64_t base_closes) const {
    auto &l = maps_.load[id];
    std::uint64_t binds = load_relaxed(l.binds) - base_binds;
    std::uint64_t closes = load_relaxed(l.closes) - base_closes;
    return binds > closes ? binds - closes : 0;
}

std::uint64_t DaemonCore::retired_in_flight() const {
    std::uint64_t n = 0;
    for (const auto &[id, r] : retired_) n += in_flight_since(id, r.base_binds, r.base_closes);
    return n;
}

void DaemonCore::expire_retired() {
    for (auto it = retired_.begin(); it != retired_.end();) {
        if (in_flight_since(it->first, it->second.base_binds, it->second.base_closes) == 0) {
            spdlog::info("backend id {}: the removed backend's last flow closed; the id is free",
                         it->first);
            it = retired_.erase(it);
        } else {
            ++it;
        }
    }
}

std::vector<BackendSnapshot> DaemonCore::snapshots() const {
    std::vector<BackendSnapshot> v;
    // Per address family, as the dataplane's choice counts them (a flow is bound within its own).
    double weights[2] = {0, 0};
    unsigned n_eligible[2] = {0, 0};
    auto fam = [](const BackendRuntime &b) { return b.spec.ep.family == KVS_AF_INET6 ? 1 : 0; };
    for (const auto &[id, b] : backends_)
        if (b.map_state() == KVS_BE_UP && b.spec.weight != 0) {
            weights[fam(b)] += b.spec.weight;
            ++n_eligible[fam(b)];
        }
    for (const auto &[id, b] : backends_) {
        BackendSnapshot s;
        s.id = id;
        s.family = b.spec.ep.family;
        s.eligible = b.map_state() == KVS_BE_UP && b.spec.weight != 0;  // weight 0: no new flows
        if (s.eligible) s.share = b.spec.weight * n_eligible[fam(b)] / weights[fam(b)];
        s.in_flight = active(b);  // as the dataplane's choice counts it
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

void DaemonCore::publish_backends(bool force_maglev) {
    bool changed = false;
    std::uint32_t n = 0;
    // A slot that becomes eligible (UP with a weight) is written after the lookup table that
    // includes it is published: the least-loaded choice then finds it in the table. Before, a
    // backend come up was the least loaded (none in flight) and absent from the table still in
    // force, so every miss walked all 65,537 slots (~70 us a choice) for as long as the rebuild
    // took (0.14-0.27 s at 1024 backends). A slot leaving rotation is written first, before the
    // table drops it.
    std::vector<std::pair<std::uint32_t, kvs_backend>> after_table;
    auto eligible = [](const kvs_backend &b) { return b.state == KVS_BE_UP && b.weight != 0; };
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
            if (eligible(want) && !eligible(maps_.backends[i]))
                after_table.emplace_back(i, want);
            else
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
        auto table = build_lookup_table(cfg_.table_algorithm, mb);
        auto build_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        writer_.publish_maglev(table);  // bumps the generation
        {
            std::unordered_map<std::uint32_t, std::uint64_t> ident;
            for (const auto &b : mb) ident.emplace(b.id, b.identity);
            std::vector<std::uint64_t> by_addr(table.size());
            for (std::size_t i = 0; i < table.size(); i++) {
                auto it = ident.find(table[i]);
                by_addr[i] = it == ident.end() ? 0 : it->second;
            }
            lookup_digest_ = XXH3_64bits(by_addr.data(), by_addr.size() * sizeof(std::uint64_t));
        }
        maglev_input_ = std::move(input);
        maglev_published_ = true;
        ctr_.maglev_rebuilds++;
        spdlog::debug("maglev: {} table rebuilt over {} backends in {:.1f} ms (flip {})",
                      table_algorithm_name(cfg_.table_algorithm), mb.size(), build_ms,
                      writer_.maglev_flips());
        if (on_lookup_published) on_lookup_published();
        // No second generation bump for them: readers read slot states at every choice, and
        // each bump ages the recent choices (kRecentGenerations).
        for (const auto &[i, want] : after_table) writer_.write_backend(i, want);
    } else {
        for (const auto &[i, want] : after_table) writer_.write_backend(i, want);
        if (changed) writer_.bump_generation();
    }
}

void DaemonCore::publish_affinity(bool force, std::uint64_t now_ns) {
    last_affinity_ns_ = now_ns;
    policy_.update_backends(snapshots(), now_ns);
    for (auto &[id, b] : backends_) b.cache_reset = false;
    auto want = policy_.compute(now_ns);
    ctr_.affinity_computes++;
    std::sort(want.begin(), want.end(),
              [](const DesiredEntry &a, const DesiredEntry &b) { return a.key < b.key; });
    if (!force && affinity_published_ && want == desired_) return;
    AffinityBuilder builder(KVS_AFFINITY_SLOTS);
    std::vector<AffinityItem> items;
    items.reserve(want.size());
    for (const auto &e : want)
        items.push_back({e.key, std::span<const std::uint16_t>(e.backends.data(), e.n), e.depth});
    std::vector<std::uint64_t> dropped;
    ctr_.affinity_insert_failed += builder.insert_all(items, &dropped);
    for (const std::uint64_t k : dropped)
        spdlog::debug("affinity: {:#018x} not written (probe window full)", k);
    writer_.publish_affinity(builder.table());
    desired_ = std::move(want);
    affinity_published_ = true;
    ctr_.affinity_publishes++;
}

}  // namespace kvsteer::control
