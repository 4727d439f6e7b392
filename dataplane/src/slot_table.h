// A worker's flows: fixed slots, found by the client's 4-tuple and by our SNAT port; the list of
// flows being bound, oldest first, and how many each client address holds; the worker's share
// of the SNAT port range. One worker owns a table; nothing is locked.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "binder.h"
#include "kvsteer/abi.h"
#include "kvsteer/core/session.h"

struct rte_hash;

namespace kvsteer::dp {

// Shared between workers and the sweeper: which SNAT ports are taken. A worker takes a free
// port (kPortFree -> kPortBinding) for a flow it is binding, and frees it itself if the bind
// fails (and, in dpdk mode, when the flow ends). In xdp mode a bound flow's port becomes
// kPortInstalled: from then on only the sweeper frees it, when the flow's entries are gone from
// kvs_flows, whoever removed them (its own expiry, XDP on a client's port reuse, LRU eviction).
enum : std::uint8_t { kPortFree = 0, kPortBinding = 1, kPortInstalled = 2 };
struct PortBusy {
    std::atomic<std::uint8_t> busy[65536];
    // Session affinity: the session count a port's request holds, (worker << 16) | (slot + 1) in
    // that worker's SessionLimiter (0: none). It goes back when the port is freed, whoever frees
    // it, or when a kept-alive connection's request ends at a boundary.
    std::atomic<std::uint32_t> session[65536];
    std::atomic<SessionLimiter *> limiters[KVS_MAX_WORKERS];

    void hold_session(std::uint16_t port, std::uint32_t worker, std::uint32_t slot) {
        release_session(port);
        if (slot != SessionLimiter::kNone && worker < KVS_MAX_WORKERS)
            session[port].store((worker << 16) | (slot + 1), std::memory_order_release);
    }
    void release_session(std::uint16_t port) {
        const std::uint32_t v = session[port].exchange(0, std::memory_order_acq_rel);
        if (v == 0 || (v >> 16) >= KVS_MAX_WORKERS) return;
        if (SessionLimiter *l = limiters[v >> 16].load(std::memory_order_acquire))
            l->release((v & 0xffff) - 1);
    }
    // The port's session count first: once the port is free another flow may take it.
    void free(std::uint16_t port) {
        release_session(port);
        busy[port].store(kPortFree, std::memory_order_release);
    }
};

struct Slot {
    bool used = false;
    Binder b;             // the binding state machine (and the held first flight)
    kvs_flow_key ckey{};  // client -> VIP, as it arrives
    kvs_flow_key bkey{};  // backend -> SNAT, as it arrives
    std::uint8_t client_mac[6]{};
    std::uint16_t snat_port = 0;
    std::uint32_t snat_addr[4]{};  // the SNAT address of the client's family, at the flow's start
    // Rebinding a kept-alive connection at a request boundary: its entries as they were, and the
    // previous leg's SNAT port (also found by by_port while the request is held).
    bool rebind = false;
    std::uint16_t old_port = 0;
    kvs_flow prev_c2s{}, prev_s2c{};
    kvs_flow_key prev_skey{};
    // Bound: the flow pair, and (dpdk mode) how it is closing.
    kvs_flow c2s{}, s2c{};
    std::uint8_t closed = 0, fin_mask = 0;
    std::uint64_t last_seen = 0, linger_until = 0;
    bool listed = false;                // on the binding list
    std::int32_t prev = -1, next = -1;  // binding list, oldest first
    std::uint64_t timer_id = 0;         // the worker's live timer entry (0: none)
    std::uint64_t install_id = 0;       // the worker's pending install (0: none)
};

class SlotTable {
   public:
    // `name` names the DPDK hash tables (unique per process); `ports` is shared (may be null:
    // then only this table's own bookkeeping says which ports are taken).
    SlotTable(const std::string &name, std::uint32_t capacity, bool count_sources,
              std::uint16_t port_lo, std::uint16_t port_hi, PortBusy *ports);
    ~SlotTable();
    SlotTable(const SlotTable &) = delete;
    SlotTable &operator=(const SlotTable &) = delete;

    Slot &operator[](std::uint32_t i) { return slots_[i]; }
    const Slot &operator[](std::uint32_t i) const { return slots_[i]; }
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

    // A SNAT port for slot `idx` (sets its snat_port); false when the range is exhausted.
    bool alloc_port(std::uint32_t idx);
    // The slot using our SNAT port `port`, or -1 (also for ports outside this table's range).
    std::int32_t by_port(std::uint16_t port) const {
        return port >= port_lo_ && port <= port_hi_ ? by_port_[port - port_lo_] : -1;
    }
    void mark_installed(std::uint16_t port);
    // A port no slot uses yet (the backend pool's legs; by_port() gives kUnslotted for it):
    // false when the range is exhausted. give_port() returns it; adopt_port() hands it to a slot
    // (whose own port, if any, goes back).
    bool take_port(std::uint16_t &port);
    void give_port(std::uint16_t port);
    void adopt_port(std::uint32_t idx, std::uint16_t port);
    static constexpr std::int32_t kNoSlot = -1, kUnslotted = -2;
    // Rebinding: the previous leg's port finds the slot too (when it is in this table's range).
    void attach_old_port(std::uint32_t idx, std::uint16_t port);
    // Gives the slot's SNAT port back (a move that did not happen).
    void free_port(std::uint32_t idx);
    std::uint16_t port_lo() const { return port_lo_; }
    std::uint16_t port_hi() const { return port_hi_; }

    // Slots being bound that a client source holds (0 when sources are not counted): its IPv4
    // address, or its IPv6 /64 (source_key).
    unsigned held_by(const kvs_flow_key &ckey) const;
    static std::uint64_t source_key(const kvs_flow_key &ckey);
    // The binding list, oldest first: -1 ends it.
    std::int32_t oldest_binding() const { return list_head_; }
    std::int32_t next_binding(std::uint32_t idx) const { return slots_[idx].next; }

    // Round-robin cursor over every slot (the bound-flow sweep, reclaiming a lingering slot).
    std::uint32_t next_cursor() { return sweep_cursor_++ % capacity(); }

   private:
    bool find_port(std::uint16_t &port);
    void list_add(std::uint32_t idx);
    void list_del(std::uint32_t idx);

    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_;
    std::vector<std::int32_t> by_port_;  // snat port - port_lo_ -> slot
    rte_hash *by_client_ = nullptr;
    rte_hash *by_source_ = nullptr;  // client address -> slots it holds while binding
    PortBusy *ports_;
    std::uint16_t port_lo_, port_hi_, port_cursor_;
    std::int32_t list_head_ = -1, list_tail_ = -1;
    unsigned n_binding_ = 0, n_used_ = 0;
    std::uint32_t sweep_cursor_ = 0;
};

}  // namespace kvsteer::dp
