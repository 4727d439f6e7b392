#include "sweeper.h"

#include <algorithm>
#include <cerrno>
#include <vector>

#include <bpf/bpf.h>

#include "flow_install.h"
#include "kvsteer/rewrite.h"

namespace kvsteer::dp {

namespace {
// The appliance-side (SNAT) port of a flow entry.
std::uint16_t snat_port_of(const kvs_flow_key &k, const kvs_flow &f) {
    return kvs_ntohs(f.dir == KVS_DIR_S2C ? k.dport : f.new_sport);
}

constexpr __u32 kBatch = 1024;

enum class Walk { Complete, Unsupported, Broken };

// Reads every entry of the map in batches (one syscall per kBatch entries instead of two per
// entry) and calls visit(key, value) for each. Unsupported: the kernel cannot batch this map
// and nothing was visited (the caller walks it key by key instead); Broken: it failed midway.
template <typename Visit>
Walk walk_batched(int fd, Visit &&visit) {
    std::vector<kvs_flow_key> keys(kBatch);
    std::vector<kvs_flow> vals(kBatch);
    // Hash maps use a bucket index as the batch token; a key-sized buffer is always enough.
    kvs_flow_key in{}, out{};
    bool first = true;
    for (;;) {
        __u32 n = static_cast<__u32>(keys.size());
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        int rc = bpf_map_lookup_batch(fd, first ? nullptr : &in, &out, keys.data(), vals.data(), &n,
                                      &opts);
        int err = rc ? errno : 0;
        if (rc && err == ENOSPC && n == 0) {  // one bucket holds more than the buffer
            keys.resize(keys.size() * 2);
            vals.resize(vals.size() * 2);
            continue;
        }
        if (rc && err != ENOENT) return first ? Walk::Unsupported : Walk::Broken;
        for (__u32 i = 0; i < n; ++i) visit(keys[i], vals[i]);
        if (rc) return Walk::Complete;  // ENOENT: past the last bucket
        in = out;
        first = false;
    }
}

template <typename Visit>
void walk_by_key(int fd, Visit &&visit) {
    kvs_flow_key k{}, next{};
    kvs_flow f{};
    const kvs_flow_key *prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        k = next;
        prev = &k;
        if (bpf_map_lookup_elem(fd, &k, &f) == 0) visit(k, f);
    }
}
}  // namespace

SweepResult sweep_flows(int fd, std::uint64_t now_ns, std::uint64_t closed_idle_ns,
                        std::uint64_t idle_ns, PortBusy *ports, bool mark_busy,
                        kvs_backend_load *load, const std::function<void()> &after_snapshot,
                        const std::function<void()> &after_walk,
                        const std::function<void(const kvs_flow_key &)> &before_take) {
    SweepResult r;
    struct Doomed {
        kvs_flow_key key;
        std::uint64_t created_ns;  // the installation the walk saw
    };
    std::vector<Doomed> doomed;
    // Ports installed before the pass starts, per backend with a port table: an entry present
    // then is visited by the walk (a hash walk may repeat keys when entries go, it does not skip
    // ones that stay), so a candidate the walk never meets has lost its entries.
    std::vector<std::uint16_t> backends;  // those with a table; bits below in their order
    std::vector<std::int32_t> row(KVS_MAX_BACKENDS, -1);
    std::vector<std::uint64_t> seen;
    // Each candidate's word as it was (PortBusy::free_if frees only that installation).
    struct Candidate {
        std::uint32_t at;  // row * 65536 + port
        PortWord v;
    };
    std::vector<Candidate> candidate;
    constexpr std::size_t kWords = 65536 / 64;
    if (ports && !mark_busy) {
        for (std::uint16_t b = 0; b < KVS_MAX_BACKENDS; ++b)
            if (ports->find(b)) {
                row[b] = static_cast<std::int32_t>(backends.size());
                backends.push_back(b);
            }
        seen.assign(backends.size() * kWords, 0);
        for (std::size_t i = 0; i < backends.size(); ++i) {
            const PortBlock *blk = ports->find(backends[i]);
            for (std::uint32_t p = 0; p < 65536; ++p) {
                const PortWord v = blk->busy[p].load(std::memory_order_acquire);
                if (port_state(v) == kPortInstalled)
                    candidate.push_back({static_cast<std::uint32_t>(i * 65536 + p), v});
            }
        }
    }
    if (after_snapshot) after_snapshot();
    // Whether a flow (an entry and its twin, when there is one) has expired: idle as long as its
    // most recently used direction, closed when a FIN went each way or either side sent a RST.
    // Not KVS_FLOW_CLOSED, which XDP sets when it counts the close, often at the first FIN: a
    // half-closed connection still carries the other way, e.g. a client that shut down its side
    // after the request and waits out a long prefill or a non-streamed answer in silence, and
    // must not lose its flow after the linger.
    auto expired = [&](const kvs_flow &f, const kvs_flow *rf) {
        std::uint64_t last = f.last_seen_ns;
        bool closed = f.state & KVS_FLOW_RST;
        bool fin_both = false;
        if (rf) {
            last = std::max<std::uint64_t>(last, rf->last_seen_ns);
            closed |= (rf->state & KVS_FLOW_RST) != 0;
            fin_both = (f.state & KVS_FLOW_FIN_IN) && (rf->state & KVS_FLOW_FIN_IN);
        } else {
            fin_both = (f.state & KVS_FLOW_FIN_IN) != 0;  // its twin is gone: the end of it
        }
        closed |= fin_both;
        const std::uint64_t idle = now_ns > last ? now_ns - last : 0;
        return (closed && idle >= closed_idle_ns) || idle >= idle_ns;
    };
    // The entry on the reverse key, read into rf, when it is this installation's other half: a
    // key's entry of another installation (a client's port reused, a leg installed since) is not
    // judged or deleted with this one.
    auto twin_of = [&](const kvs_flow &f, const kvs_flow_key &rk, kvs_flow &rf) {
        return same_installation(fd, rk, f.created_ns, &rf);
    };
    auto visit = [&](const kvs_flow_key &k, const kvs_flow &f) {
        ++r.seen;
        const std::uint16_t sp = snat_port_of(k, f);
        if (mark_busy && ports) ports->set_state(f.backend_id, sp, kPortInstalled);
        if (!seen.empty() && f.backend_id < KVS_MAX_BACKENDS && row[f.backend_id] >= 0)
            seen[std::size_t(row[f.backend_id]) * kWords + sp / 64] |= 1ull << (sp % 64);
        // A flow's idle time is that of its most recently used direction: only an entry idle
        // long enough on its own needs its twin read (one lookup per expiring entry, not per
        // entry in the table).
        const std::uint64_t idle = now_ns > f.last_seen_ns ? now_ns - f.last_seen_ns : 0;
        if (idle < closed_idle_ns && idle < idle_ns) return;
        kvs_flow_key rk;
        kvs_flow_reverse_key(&k, &f, &rk);
        kvs_flow rf{};
        if (expired(f, twin_of(f, rk, rf) ? &rf : nullptr)) doomed.push_back({k, f.created_ns});
    };
    Walk w = walk_batched(fd, visit);
    // At startup every live flow's port must be marked (visiting one twice only marks it again).
    if (w == Walk::Unsupported || (w == Walk::Broken && mark_busy)) walk_by_key(fd, visit);
    if (w == Walk::Broken)
        candidate.clear();  // the walk may have missed live entries: reclaim nothing
    if (after_walk) after_walk();
    // Deletes `k`, its value as deleted in *v (bpf_map_lookup_and_delete_elem: hash maps since
    // Linux 5.14); where the kernel has no such call, a plain delete keeps the copy read before.
    bool take_unsupported = false;
    bool took_values = true;  // whether the deletes read the values they took (not copies)
    auto take = [&](const kvs_flow_key &k, kvs_flow *v) {
        if (!take_unsupported) {
            kvs_flow out{};
            if (bpf_map_lookup_and_delete_elem(fd, &k, &out) == 0) {
                *v = out;
                return true;
            }
            if (errno == ENOENT) return false;
            constexpr int kEnotsupp = 524;  // the kernel's ENOTSUPP (not in userspace headers)
            take_unsupported = errno == EINVAL || errno == kEnotsupp || errno == EOPNOTSUPP;
            if (!take_unsupported) return false;
        }
        took_values = false;
        return bpf_map_delete_elem(fd, &k) == 0;
    };
    for (const Doomed &d : doomed) {
        const kvs_flow_key &dk = d.key;
        kvs_flow df{};
        if (bpf_map_lookup_elem(fd, &dk, &df) != 0) continue;  // deleted with its twin already
        kvs_flow_key rk;
        kvs_flow_reverse_key(&dk, &df, &rk);
        kvs_flow rf{};
        const bool twin = twin_of(df, rk, rf);
        // Another installation on the key since the walk, or used again: not the one doomed.
        if (df.created_ns != d.created_ns || !expired(df, twin ? &rf : nullptr)) continue;
        // Judged on the values the deletes take out (the arbiter, client->server, entry first,
        // as kvs_close_pair flips it first): a FIN, RST or client bytes that XDP counted between
        // the read above and the delete (its close, its idle end) were counted twice.
        if (before_take) before_take(dk);
        const bool dk_first = df.dir == KVS_DIR_C2S || !twin;
        bool gone = false, twin_gone = false;
        if (dk_first) {
            gone = take(dk, &df);
            if (twin) twin_gone = take(rk, &rf);
        } else {
            twin_gone = take(rk, &rf);
            gone = take(dk, &df);
        }
        // The deletes took what the entries held at that moment: a packet, or a new installation
        // on the key, between the read above and the delete leaves values that are no longer
        // the expired flow (an idle kept-alive connection sending its next request, say). Those
        // go back, unless something was installed on the key meanwhile; a packet that met the
        // key absent for those few microseconds went to the dataplane as any unknown segment.
        // Only a flow whose every entry was taken here: one whose other half someone deleted
        // meanwhile (the dataplane resetting it, a leg parked in the pool) stays deleted. A pair
        // put back with a boundary's mark on one half only (XDP marks the client entry, then the
        // server's, between the two deletes) is put back unmarked: the request stays on its
        // backend (a marked server entry alone had its answers punted and dropped).
        if (took_values && gone && (!twin || twin_gone)) {
            const bool same =
                df.created_ns == d.created_ns && (!twin || rf.created_ns == d.created_ns);
            if (!same || !expired(df, twin ? &rf : nullptr)) {
                if (twin && ((df.state ^ rf.state) & KVS_FLOW_REBINDING)) {
                    df.state = static_cast<std::uint8_t>(df.state & ~KVS_FLOW_REBINDING);
                    rf.state = static_cast<std::uint8_t>(rf.state & ~KVS_FLOW_REBINDING);
                }
                if (bpf_map_update_elem(fd, &dk, &df, BPF_NOEXIST) == 0) ++r.restored;
                if (twin_gone && bpf_map_update_elem(fd, &rk, &rf, BPF_NOEXIST) == 0) ++r.restored;
                continue;
            }
        }
        r.deleted += gone + twin_gone;
        // (A twin its delete did not find was deleted meanwhile: its copy from before is read.)
        const bool counted = ((df.state | (twin ? rf.state : 0)) & KVS_FLOW_CLOSED) != 0;
        if (gone && !counted && load && df.backend_id < KVS_MAX_BACKENDS) {
            __atomic_fetch_add(&load[df.backend_id].closes, 1, __ATOMIC_RELAXED);
            ++r.closes;
            // An idle kept-alive connection expired: no longer counted idle either.
            if (((df.dir == KVS_DIR_C2S ? df.state : twin ? rf.state : 0) & KVS_FLOW_IDLE) != 0)
                __atomic_fetch_add(&load[df.backend_id].idle_ends, 1, __ATOMIC_RELAXED);
        }
        if (ports) ports->free_installed(df.backend_id, snat_port_of(dk, df));
    }
    for (const Candidate &c : candidate) {
        if (seen[c.at / 64] & (1ull << (c.at % 64))) continue;
        const std::uint16_t be = backends[c.at / 65536];
        // Only while it is the installation seen at the start (not one a flow drew since).
        if (ports->free_if(be, static_cast<std::uint16_t>(c.at % 65536), c.v)) ++r.reclaimed;
    }
    return r;
}

}  // namespace kvsteer::dp
