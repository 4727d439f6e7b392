#include "mono_clock.h"
#include "ctl_maps.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "kvsteer/control/net.h"
#include "kvsteer/reasons.h"

namespace kvsteer::control {

using nlohmann::json;

namespace {

std::string ep_str(const __u32 *addr, __u16 port_be, __u8 family) {
    Endpoint e;
    e.family = family == KVS_AF_INET6 ? KVS_AF_INET6 : KVS_AF_INET;
    std::memcpy(e.addr.data(), addr, 16);
    e.port_be = port_be;
    return e.str();
}

}  // namespace

json read_flows(const bpf::PinnedMaps &m, std::size_t limit, bool list, std::string *err) {
    json out = {{"entries", 0}, {"flows", 0}};
    json arr = json::array();
    std::uint64_t entries = 0, c2s = 0;
    std::uint64_t now = mono_ns();
    // In batches, bucket by bucket: a key-by-key walk started over from the first entry whenever
    // its current key was evicted or closed meanwhile (the kernel's get_next_key of a missing
    // key), counting entries twice and running on for long on a busy appliance.
    constexpr __u32 kBatch = 4096;  // above any bucket's length: ENOSPC otherwise
    std::vector<kvs_flow_key> keys(kBatch);
    std::vector<kvs_flow> vals(kBatch);
    kvs_flow_key token{};  // the kernel's position (a bucket index for a hash map)
    bool first = true, last = false;
    while (!last) {
        __u32 count = kBatch;
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        int rc = bpf_map_lookup_batch(m.flows_fd, first ? nullptr : &token, &token, keys.data(),
                                      vals.data(), &count, &opts);
        first = false;
        if (rc != 0 && errno != ENOENT) {
            *err = std::string("kvs_flows: ") + std::strerror(errno);
            return nullptr;
        }
        last = rc != 0;  // ENOENT: the last batch (count holds its entries)
        for (__u32 i = 0; i < count; i++) {
            const kvs_flow_key &key = keys[i];
            const kvs_flow &f = vals[i];
            entries++;
            c2s += f.dir == KVS_DIR_C2S;
            if (list && arr.size() < limit) {
                arr.push_back({
                    {"dir", f.dir == KVS_DIR_C2S   ? "c2s"
                            : f.dir == KVS_DIR_S2C ? "s2c"
                                                   : "?"},
                    {"src", ep_str(key.saddr, key.sport, key.family)},
                    {"dst", ep_str(key.daddr, key.dport, key.family)},
                    {"new_src", ep_str(f.new_saddr, f.new_sport, key.family)},
                    {"new_dst", ep_str(f.new_daddr, f.new_dport, key.family)},
                    {"backend", f.backend_id},
                    {"worker", f.worker},
                    {"state",
                     {{"fin", (f.state & KVS_FLOW_FIN_IN) != 0},
                      {"rst", (f.state & KVS_FLOW_RST) != 0},
                      {"closed", (f.state & KVS_FLOW_CLOSED) != 0}}},
                    {"packets", f.packets},
                    {"bytes", f.bytes},
                    {"age_s", f.created_ns && now > f.created_ns
                                  ? static_cast<double>(now - f.created_ns) * 1e-9
                                  : 0.0},
                    {"idle_s", f.last_seen_ns && now > f.last_seen_ns
                                   ? static_cast<double>(now - f.last_seen_ns) * 1e-9
                                   : 0.0},
                });
            }
        }
    }
    out["entries"] = entries;
    out["flows"] = c2s;
    if (list) out["list"] = arr;
    return out;
}

json read_counters(const bpf::PinnedMaps &m, std::string *err) {
    json out;
    std::vector<std::uint64_t> xdp(KVS_STATS_MAX);
    json xj = json::object();
    if (bpf::read_xdp_stats(m, xdp.data(), KVS_STATS_MAX, err)) {
        for (unsigned r = 0; r < KVS_R__COUNT; r++) xj[kvs_reason_name(r)] = xdp[r];
    } else {
        return nullptr;
    }
    out["xdp"] = xj;
    json dj = json::object(), workers = json::array();
    for (unsigned r = 0; r < KVS_R__COUNT; r++) dj[kvs_reason_name(r)] = 0;
    for (unsigned w = 0; w < KVS_MAX_WORKERS; w++) {
        json row = json::object();
        bool any = false;
        for (unsigned r = 0; r < KVS_R__COUNT; r++) {
            auto v = std::atomic_ref<std::uint64_t>(m.dp_stats[w * KVS_STATS_MAX + r])
                         .load(std::memory_order_relaxed);
            if (v) {
                row[kvs_reason_name(r)] = v;
                any = true;
            }
            dj[kvs_reason_name(r)] = dj[kvs_reason_name(r)].get<std::uint64_t>() + v;
        }
        if (any) workers.push_back({{"worker", w}, {"counters", row}});
    }
    out["dataplane"] = dj;
    out["dataplane_workers"] = workers;
    json bj = json::array();
    std::uint32_t n = std::min<std::uint32_t>(m.config->n_backends, KVS_MAX_BACKENDS);
    for (std::uint32_t i = 0; i < n; i++) {
        const kvs_backend &b = m.backends[i];
        const kvs_backend_load &l = m.load[i];
        if (b.state == KVS_BE_EMPTY && !l.binds) continue;
        bj.push_back({{"id", i},
                      {"addr", ep_str(b.addr, b.port, b.family)},
                      {"state", kvs_backend_state_name(b.state)},
                      {"weight", b.weight},
                      {"binds", l.binds},
                      {"closes", l.closes},
                      {"in_flight", l.binds > l.closes ? l.binds - l.closes : 0},
                      {"idle", backend_idle(l)},
                      {"bind_fail_rst", l.bind_fail_rst},
                      {"bind_fail_timeout", l.bind_fail_timeout},
                      {"ext_queue", l.ext_queue},
                      {"ext_running", l.ext_running}});
    }
    out["backends"] = bj;
    std::uint64_t dropped = 0;
    for (unsigned w = 0; w < KVS_MAX_WORKERS; w++) dropped += m.ring_ctl[w].dropped;
    out["report_ring_dropped"] = dropped;
    out["generation"] = m.config->generation;
    return out;
}

}  // namespace kvsteer::control
