// A worker's flows: fixed slots, found by the client's 4-tuple and by the backend leg's; the list
// of flows being bound, oldest first, and how many each client address holds; the worker's share of
// the SNAT port range. One worker owns a table; nothing is locked.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "binder.h"
#include "kvsteer/abi.h"
#include "kvsteer/core/session.h"

struct rte_hash;

namespace kvsteer::dp {

// Shared between workers and the sweeper: which SNAT ports are taken, per backend. A backend
// leg's 4-tuple is (SNAT address, SNAT port, backend address, backend port), so a port only has
// to be unique per backend: bound flows are limited by the range times the backends, not by the
// range alone. A worker takes a free port of the backend it connects to (kPortFree ->
// kPortBinding) for a flow it is binding, and frees it itself if the bind fails (and, in dpdk
// mode, when the flow ends). In xdp mode a bound flow's port becomes kPortInstalled: from then
// on only the sweeper frees it, when the flow's entries are gone from kvs_flows, whoever
// removed them (its own expiry, XDP on a client's port reuse, LRU eviction).
//
// A backend's table (512 KiB) is allocated the first time one of its ports is taken, and kept
// for the process's life: backend ids are the daemon's, reused when a backend comes back.
enum : std::uint8_t { kPortFree = 0, kPortBinding = 1, kPortInstalled = 2 };
// A port's word: its state in the low two bits; above them a generation, bumped each time the
// port becomes kPortInstalled. The sweeper frees a port it saw installed at a pass's start, whose
// entries the pass then did not meet, only if the word is still the one it saw: a leg a request
// moved off goes back to the worker (kPortBinding) and a later flow that draws it installs the
// port again, all within one pass, under a new generation. 30 bits of it: a byte's 6 wrapped
// after 64 installations of one port within a pass (the backend pool redraws its first leg at
// every request that moves), and the sweeper freed a port a live flow used.
using PortWord = std::uint32_t;
inline constexpr PortWord kPortStateMask = 3;
inline constexpr PortWord port_state(PortWord v) {
    return v & kPortStateMask;
}
// from -> to, its generation kept; false when the port is not in `from` (a plain read first: a
// scan passes taken ports unlocked).
inline bool move_port(std::atomic<PortWord> &a, PortWord from, PortWord to) {
    PortWord v = a.load(std::memory_order_acquire);
    return port_state(v) == from &&
           a.compare_exchange_strong(v, (v & ~kPortStateMask) | to, std::memory_order_acq_rel);
}
struct PortBlock {
    std::atomic<PortWord> busy[65536];
    // Session affinity: the session count a port's request holds, (worker << 16) | (slot + 1) in
    // that worker's SessionLimiter (0: none). It goes back when the port is freed, whoever frees
    // it, or when a kept-alive connection's request ends at a boundary.
    std::atomic<std::uint32_t> session[65536];
    PortBlock() {
        for (auto &b : busy) b.store(kPortFree, std::memory_order_relaxed);
        for (auto &v : session) v.store(0, std::memory_order_relaxed);
    }
};
struct PortBusy {
    std::atomic<PortBlock *> blocks[KVS_MAX_BACKENDS];
    std::atomic<SessionLimiter *> limiters[KVS_MAX_WORKERS];

    PortBusy() {
        for (auto &b : blocks) b.store(nullptr, std::memory_order_relaxed);
        for (auto &l : limiters) l.store(nullptr, std::memory_order_relaxed);
    }
    ~PortBusy() {
        for (auto &b : blocks) delete b.load(std::memory_order_relaxed);
    }
    PortBusy(const PortBusy &) = delete;
    PortBusy &operator=(const PortBusy &) = delete;

    // The backend's table, or null when none of its ports was ever taken (or the id is bad).
    PortBlock *find(std::uint16_t backend) const {
        return backend < KVS_MAX_BACKENDS ? blocks[backend].load(std::memory_order_acquire)
                                          : nullptr;
    }
    // The backend's table, allocated on first use (null for a bad id, or when `nothrow` and the
    // allocation fails). Workers allocate their backends' tables off the packet path
    // (Worker::prepare_port_tables): 320 KB written and faulted in for the first binding to a new
    // backend would stall that burst.
    PortBlock *block(std::uint16_t backend, bool nothrow = false);

    // kPortFree -> kPortBinding; false when the port is taken (or the backend's table cannot be
    // allocated).
    bool take(std::uint16_t backend, std::uint16_t port);
    PortWord state(std::uint16_t backend, std::uint16_t port) const {
        return port_state(raw(backend, port));
    }
    // The whole word (state and generation).
    PortWord raw(std::uint16_t backend, std::uint16_t port) const {
        const PortBlock *b = find(backend);
        return b ? b->busy[port].load(std::memory_order_acquire) : PortWord{kPortFree};
    }
    void set_state(std::uint16_t backend, std::uint16_t port, PortWord st) {
        PortBlock *b = block(backend);
        if (!b) return;
        PortWord v = b->busy[port].load(std::memory_order_relaxed), nv;
        do {  // a new installation is a new generation
            nv = ((v & ~kPortStateMask) +
                  (st == kPortInstalled && port_state(v) != kPortInstalled ? 4 : 0)) |
                 st;
        } while (!b->busy[port].compare_exchange_weak(v, nv, std::memory_order_acq_rel));
    }
    void hold_session(std::uint16_t backend, std::uint16_t port, std::uint32_t worker,
                      std::uint32_t slot) {
        release_session(backend, port);
        PortBlock *b = find(backend);
        if (b && slot != SessionLimiter::kNone && worker < KVS_MAX_WORKERS)
            b->session[port].store((worker << 16) | (slot + 1), std::memory_order_release);
    }
    void release_session(std::uint16_t backend, std::uint16_t port) {
        PortBlock *b = find(backend);
        if (b) release_count(b->session[port].exchange(0, std::memory_order_acq_rel));
    }
    // Gives back a session count taken off a port ((worker << 16) | (slot + 1); 0: none).
    void release_count(std::uint32_t v) {
        if (v == 0 || (v >> 16) >= KVS_MAX_WORKERS) return;
        if (SessionLimiter *l = limiters[v >> 16].load(std::memory_order_acquire))
            l->release((v & 0xffff) - 1);
    }
    // kPortInstalled -> kPortBinding: an installed flow's port passes to the worker (a leg the
    // backend pool keeps), only while its word is still `seen` (that installation: the sweeper
    // may have freed it, and another flow installed it since); false otherwise.
    bool reclaim_if(std::uint16_t backend, std::uint16_t port, PortWord seen) {
        PortBlock *b = find(backend);
        return b && port_state(seen) == kPortInstalled &&
               b->busy[port].compare_exchange_strong(seen, (seen & ~kPortStateMask) | kPortBinding,
                                                     std::memory_order_acq_rel);
    }
    // kPortInstalled -> kPortFree (the sweeper, for a flow it deleted), its session count first;
    // a port the worker took back meanwhile (reclaim: the backend pool keeps its leg) stays.
    void free_installed(std::uint16_t backend, std::uint16_t port) {
        const PortWord v = raw(backend, port);
        if (port_state(v) == kPortInstalled) free_if(backend, port, v);
    }
    // Frees the port only while its word is still `seen` (one installation, state and
    // generation: the sweeper's view at a pass's start), its session count first; false when it
    // changed.
    // The session count is taken off the port before the compare-and-swap (once the port is
    // free another flow may take it and hold a count of its own there) and put back when the
    // swap fails: that installation goes on, with its count.
    bool free_if(std::uint16_t backend, std::uint16_t port, PortWord seen) {
        PortBlock *b = find(backend);
        if (!b || b->busy[port].load(std::memory_order_acquire) != seen) return false;
        const std::uint32_t held = b->session[port].exchange(0, std::memory_order_acq_rel);
        if (!b->busy[port].compare_exchange_strong(seen, seen & ~kPortStateMask,
                                                   std::memory_order_acq_rel)) {
            std::uint32_t none = 0;
            if (held)
                b->session[port].compare_exchange_strong(none, held, std::memory_order_acq_rel);
            return false;
        }
        release_count(held);
        return true;
    }
    // The port's session count first: once the port is free another flow may take it.
    void free(std::uint16_t backend, std::uint16_t port) {
        PortBlock *b = find(backend);
        if (!b) return;
        release_session(backend, port);
        b->busy[port].fetch_and(~kPortStateMask,
                                std::memory_order_acq_rel);  // kPortFree, its generation kept
    }
};

struct Slot {
    bool used = false;
    Binder b;             // the binding state machine (and the held first flight)
    kvs_flow_key ckey{};  // client -> VIP, as it arrives
    kvs_flow_key bkey{};  // backend -> SNAT, as it arrives
    std::uint8_t client_mac[6]{};
    // Our SNAT port towards port_backend (0: none); while leg_keyed, bkey finds the slot.
    std::uint16_t snat_port = 0;
    std::uint16_t port_backend = KVS_BACKEND_NONE;
    bool leg_keyed = false;
    std::uint32_t snat_addr[4]{};  // the SNAT address of the client's family, at the flow's start
    // Rebinding a kept-alive connection at a request boundary: its entries as they were; while
    // old_keyed, the previous leg's key (prev_skey) finds the slot too.
    bool rebind = false;
    bool old_keyed = false;
    // The chains of slots by backend leg port (SlotTable::by_port_): next entry after this
    // slot's current leg [0] and previous leg [1].
    std::int32_t leg_next[2] = {-1, -1};
    kvs_flow prev_c2s{}, prev_s2c{};
    PortWord prev_port = 0;  // the previous leg's SNAT port word (its installation) at the boundary
    std::uint32_t prev_tsval = 0;  // the newest TSval the previous leg may have carried
    kvs_flow_key prev_skey{};
    // Bound: the flow pair, and (dpdk mode) how it is closing.
    kvs_flow c2s{}, s2c{};
    std::uint8_t closed = 0, fin_mask = 0;
    std::uint64_t last_seen = 0, linger_until = 0;
    bool listed = false;  // on the binding list
    // Its source's position in source_count_: while listed, and (flows counted) until released.
    std::int32_t src_pos = -1;
    std::int32_t prev = -1, next = -1;  // binding list, oldest first
    std::uint64_t timer_id = 0;         // the worker's live timer entry (0: none)
    std::uint64_t install_id = 0;       // the worker's pending install (0: none)
};

class SlotTable {
   public:
    // `name` names the DPDK hash tables (unique per process); `ports` is shared between the
    // workers and the sweeper (null: the table keeps its own). `count_sources`: held_by() and
    // the packet counts per client source; `count_flows`: flows_by() too (dpdk mode, where
    // bound flows keep their slots).
    SlotTable(const std::string &name, std::uint32_t capacity, bool count_sources,
              std::uint16_t port_lo, std::uint16_t port_hi, PortBusy *ports,
              bool count_flows = false);
    ~SlotTable();
    SlotTable(const SlotTable &) = delete;
    SlotTable &operator=(const SlotTable &) = delete;

    Slot &operator[](std::uint32_t i) { return slots_[i]; }
    const Slot &operator[](std::uint32_t i) const { return slots_[i]; }
    std::uint32_t index_of(const Slot &s) const {
        return static_cast<std::uint32_t>(&s - slots_.data());
    }
    std::uint32_t capacity() const { return static_cast<std::uint32_t>(slots_.size()); }
    unsigned used() const { return n_used_; }
    unsigned binding() const { return n_binding_; }
    bool full() const { return free_.empty(); }

    // The slot of a client 4-tuple, or -1.
    std::int32_t find(const kvs_flow_key &ckey) const;
    // A fresh slot for `ckey`, on the binding list; -1 when there is none.
    std::int32_t take(const kvs_flow_key &ckey);
    // Frees a slot (its held packets must be gone). Its SNAT port returns to the pool unless the
    // flow is installed in xdp mode and `free_port` is false (the sweeper frees it then).
    void release(std::uint32_t idx, bool free_port);
    // Leaves the binding list (the flow is bound).
    void bound(std::uint32_t idx) { list_del(idx); }

    // A SNAT port towards `backend` for slot `idx` (its snat_port and port_backend; a port it
    // held goes back first): false when that backend's share of the range is exhausted. Unique
    // per backend only: key_leg() then makes the leg's 4-tuple find the slot.
    bool alloc_port(std::uint32_t idx, std::uint16_t backend);
    // The slot's backend leg finds it from now on: s.bkey becomes the leg's key as the backend's
    // segments arrive (backend address and port, network order, -> s.snat_addr:s.snat_port, a
    // port of this table's range).
    void key_leg(std::uint32_t idx, const std::uint32_t *backend_addr, std::uint16_t backend_port,
                 std::uint8_t family);
    // The slot whose backend leg (current, or previous while rebinding) is `bkey`, or -1.
    std::int32_t by_leg(const kvs_flow_key &bkey) const;
    void mark_installed(std::uint16_t backend, std::uint16_t port);
    // A port towards `backend` no slot uses yet (the backend pool's legs): false when that
    // backend's share is exhausted. give_port() returns it; adopt_port() hands it to a slot
    // (whose own port, if any, goes back; the caller keys the leg).
    bool take_port(std::uint16_t backend, std::uint16_t &port);
    void give_port(std::uint16_t backend, std::uint16_t port);
    void adopt_port(std::uint32_t idx, std::uint16_t backend, std::uint16_t port);
    static constexpr std::int32_t kNoSlot = -1;
    // Rebinding: the previous leg's key (s.prev_skey) finds the slot too.
    void attach_old_leg(std::uint32_t idx);
    // The previous leg no longer finds the slot (it went to the backend pool).
    void detach_old_leg(std::uint32_t idx);
    // An installed flow's port (this table's range) back to binding: the pool keeps its leg.
    bool reclaim_port(std::uint16_t backend, std::uint16_t port, PortWord seen);
    // The port's word (state and generation; kPortFree without a table).
    PortWord port_word(std::uint16_t backend, std::uint16_t port) const {
        return ports_->raw(backend, port);
    }
    // Gives the slot's SNAT port back (a move that did not happen; the next candidate).
    void free_port(std::uint32_t idx);
    std::uint16_t port_lo() const { return port_lo_; }
    std::uint16_t port_hi() const { return port_hi_; }

    // Slots being bound that a client source holds (0 when sources are not counted): its IPv4
    // address, or its IPv6 /64 (source_key).
    unsigned held_by(const kvs_flow_key &ckey) const;
    // Slots a client source holds, bound or being bound (0 unless flows are counted).
    unsigned flows_by(const kvs_flow_key &ckey) const;
    // Packets the flights of slot `idx`'s source hold, and their change by `delta` (the worker
    // counts each packet a flight keeps or lets go). 0 / nothing when sources are not counted.
    unsigned packets_held_by_source_of(std::uint32_t idx) const;
    unsigned packets_held_by(const kvs_flow_key &ckey) const;
    void source_packets(std::uint32_t idx, std::int32_t delta);
    PortBusy &ports() { return *ports_; }  // shared between workers, or this table's own
    static std::uint64_t source_key(const kvs_flow_key &ckey);
    // The binding list, oldest first: -1 ends it.
    std::int32_t oldest_binding() const { return list_head_; }
    std::int32_t next_binding(std::uint32_t idx) const { return slots_[idx].next; }

    // Round-robin cursor over every slot (the bound-flow sweep, reclaiming a lingering slot).
    std::uint32_t next_cursor() { return sweep_cursor_++ % capacity(); }

   private:
    bool find_port(std::uint16_t backend, std::uint16_t &port);
    // Legs by SNAT port: by_port_[port - port_lo_] heads a chain of entries (slot << 1 | 0 for
    // its current leg, | 1 for its previous one), newest first. A port is unique per backend, so
    // a chain holds at most one live leg per backend (plus slots lingering after their install):
    // a lookup is an array read and a key compare or two, cheaper than a hash of the 4-tuple.
    const kvs_flow_key &entry_key(std::int32_t e) const {
        const Slot &s = slots_[static_cast<std::uint32_t>(e) >> 1];
        return (e & 1) ? s.prev_skey : s.bkey;
    }
    std::int32_t &entry_next(std::int32_t e) {
        return slots_[static_cast<std::uint32_t>(e) >> 1].leg_next[e & 1];
    }
    std::int32_t *chain(const kvs_flow_key &k);
    bool link(std::uint32_t idx, int which);
    void unlink(std::uint32_t idx, int which);
    void list_add(std::uint32_t idx);
    void list_del(std::uint32_t idx);
    // The slot no longer counts for its source (whose entry goes once it counts nothing).
    void source_unref(std::uint32_t idx);

    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_;
    std::vector<std::int32_t> by_port_;  // SNAT port - port_lo_ -> first leg entry (-1: none)
    rte_hash *by_client_ = nullptr;
    rte_hash *by_source_ = nullptr;  // client address -> its position in source_count_
    struct SourceCount {
        std::uint32_t slots = 0;    // slots the client address holds being bound
        std::uint32_t packets = 0;  // packets their flights hold
        std::uint32_t flows = 0;    // slots it holds, bound or not (count_flows_)
    };
    bool count_flows_ = false;
    std::vector<SourceCount> source_count_;
    std::unique_ptr<PortBusy> own_ports_;  // when none is shared
    PortBusy *ports_;
    std::uint16_t port_lo_, port_hi_, port_cursor_;
    std::int32_t list_head_ = -1, list_tail_ = -1;
    unsigned n_binding_ = 0, n_used_ = 0;
    std::uint32_t sweep_cursor_ = 0;
};

}  // namespace kvsteer::dp
