#include "slot_table.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

#include "kvsteer/proto.h"

namespace kvsteer::dp {

namespace {

rte_hash *make_hash(const std::string &name, std::uint32_t entries, std::uint32_t key_len) {
    rte_hash_parameters hp{};
    hp.name = name.c_str();
    hp.entries = entries;
    hp.key_len = key_len;
    hp.hash_func = rte_hash_crc;
    hp.socket_id = SOCKET_ID_ANY;
    rte_hash *h = rte_hash_create(&hp);
    if (!h)
        throw std::runtime_error(
            fmt::format("rte_hash_create {}: {}", name, rte_strerror(rte_errno)));
    return h;
}

void *as_data(std::uintptr_t v) {
    return reinterpret_cast<void *>(v);
}

}  // namespace

PortBlock *PortBusy::block(std::uint16_t backend, bool nothrow) {
    if (backend >= KVS_MAX_BACKENDS) return nullptr;
    PortBlock *b = blocks[backend].load(std::memory_order_acquire);
    if (b) return b;
    std::unique_ptr<PortBlock> fresh(nothrow ? new (std::nothrow) PortBlock : new PortBlock);
    if (!fresh) return nullptr;
    if (blocks[backend].compare_exchange_strong(b, fresh.get(), std::memory_order_acq_rel))
        return fresh.release();
    return b;  // another thread's, published first
}

bool PortBusy::take(std::uint16_t backend, std::uint16_t port) {
    PortBlock *b = block(backend, true);
    return b && move_port(b->busy[port], kPortFree, kPortBinding);
}

SlotTable::SlotTable(const std::string &name, std::uint32_t capacity, bool count_sources,
                     std::uint16_t port_lo, std::uint16_t port_hi, PortBusy *ports,
                     bool count_flows)
    : slots_(capacity),
      count_flows_(count_flows),
      own_ports_(ports ? nullptr : std::make_unique<PortBusy>()),
      ports_(ports ? ports : own_ports_.get()),
      port_lo_(port_lo),
      port_hi_(port_hi) {
    free_.reserve(capacity);
    for (std::uint32_t i = capacity; i-- > 0;) free_.push_back(i);
    const std::uint32_t span = port_hi >= port_lo ? std::uint32_t(port_hi - port_lo) + 1 : 0;
    by_port_.assign(span, -1);
    // Start anywhere in the range: a restarted dataplane should not reuse first the 4-tuples
    // its previous run just closed (backends keep them in TIME_WAIT).
    port_cursor_ = static_cast<std::uint16_t>(port_lo_ + (span ? rte_rdtsc() % span : 0));
    const std::uint32_t entries = std::max<std::uint32_t>(capacity * 2, 64);
    by_client_ = make_hash("kvs_c" + name, entries, sizeof(kvs_flow_key));
    if (count_sources || count_flows) {
        try {
            by_source_ = make_hash("kvs_s" + name, entries, sizeof(std::uint64_t));
            source_count_.assign(static_cast<std::size_t>(rte_hash_max_key_id(by_source_)) + 1,
                                 SourceCount{});
        } catch (...) {
            rte_hash_free(by_client_);
            throw;
        }
    }
}

SlotTable::~SlotTable() {
    if (by_client_) rte_hash_free(by_client_);
    if (by_source_) rte_hash_free(by_source_);
}

std::int32_t SlotTable::find(const kvs_flow_key &ckey) const {
    void *data = nullptr;
    if (rte_hash_lookup_data(by_client_, &ckey, &data) < 0) return -1;
    return static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(data));
}

std::int32_t SlotTable::take(const kvs_flow_key &ckey) {
    if (free_.empty()) return -1;
    const std::uint32_t idx = free_.back();
    if (rte_hash_add_key_data(by_client_, &ckey, as_data(idx)) < 0) return -1;
    free_.pop_back();
    Slot &s = slots_[idx];
    // Field by field: the binder (its held-segment table) and the flow entries are large and
    // are written before they are read.
    s.used = true;
    s.ckey = ckey;
    s.bkey = kvs_flow_key{};
    std::memset(s.client_mac, 0, sizeof s.client_mac);
    s.snat_port = 0;
    s.port_backend = KVS_BACKEND_NONE;
    s.rebind = s.leg_keyed = s.old_keyed = false;
    s.leg_next[0] = s.leg_next[1] = -1;
    s.closed = s.fin_mask = 0;
    s.last_seen = s.linger_until = s.timer_id = s.install_id = 0;
    ++n_used_;
    list_add(idx);
    return static_cast<std::int32_t>(idx);
}

void SlotTable::release(std::uint32_t idx, bool free_port) {
    Slot &s = slots_[idx];
    if (!s.used) return;
    const bool bound = s.b.phase() == Binder::Phase::Bound;
    if (s.listed) list_del(idx);
    source_unref(idx);
    rte_hash_del_key(by_client_, &s.ckey);
    if (s.old_keyed) unlink(idx, 1);
    s.old_keyed = false;
    if (s.leg_keyed) unlink(idx, 0);
    s.leg_keyed = false;
    // In xdp mode a bound flow keeps its port until the sweeper deletes the flow.
    if (s.snat_port && (free_port || !bound)) ports_->free(s.port_backend, s.snat_port);
    s.snat_port = 0;
    s.used = false;
    free_.push_back(idx);
    --n_used_;
}

std::int32_t *SlotTable::chain(const kvs_flow_key &k) {
    const std::uint16_t port = kvs_ntohs(k.dport);
    return port >= port_lo_ && port <= port_hi_ ? &by_port_[port - port_lo_] : nullptr;
}

bool SlotTable::link(std::uint32_t idx, int which) {
    const std::int32_t e = static_cast<std::int32_t>(idx << 1) | which;
    std::int32_t *head = chain(entry_key(e));
    if (!head) return false;
    entry_next(e) = *head;
    *head = e;
    return true;
}

void SlotTable::unlink(std::uint32_t idx, int which) {
    const std::int32_t e = static_cast<std::int32_t>(idx << 1) | which;
    std::int32_t *p = chain(entry_key(e));
    for (; p && *p >= 0; p = &entry_next(*p))
        if (*p == e) {
            *p = entry_next(e);
            break;
        }
    entry_next(e) = -1;
}

bool SlotTable::alloc_port(std::uint32_t idx, std::uint16_t backend) {
    free_port(idx);
    std::uint16_t p = 0;
    if (!find_port(backend, p)) return false;
    slots_[idx].snat_port = p;
    slots_[idx].port_backend = backend;
    return true;
}

void SlotTable::key_leg(std::uint32_t idx, const std::uint32_t *backend_addr,
                        std::uint16_t backend_port, std::uint8_t family) {
    Slot &s = slots_[idx];
    if (s.leg_keyed) unlink(idx, 0);
    s.bkey = kvs_flow_key{};
    std::memcpy(s.bkey.saddr, backend_addr, sizeof s.bkey.saddr);
    std::memcpy(s.bkey.daddr, s.snat_addr, sizeof s.bkey.daddr);
    s.bkey.sport = backend_port;
    s.bkey.dport = kvs_htons(s.snat_port);
    s.bkey.family = family;
    s.bkey.proto = KVS_IPPROTO_TCP;
    s.leg_keyed = link(idx, 0);  // the port is one of ours: always in range
}

// The newest entry with this key: a new flow's leg before a lingering slot's that held the
// same 4-tuple until the sweeper freed its port.
std::int32_t SlotTable::by_leg(const kvs_flow_key &bkey) const {
    const std::uint16_t port = kvs_ntohs(bkey.dport);
    if (port < port_lo_ || port > port_hi_) return kNoSlot;
    for (std::int32_t e = by_port_[port - port_lo_]; e >= 0;
         e = slots_[static_cast<std::uint32_t>(e) >> 1].leg_next[e & 1])
        if (std::memcmp(&entry_key(e), &bkey, sizeof bkey) == 0)
            return static_cast<std::int32_t>(static_cast<std::uint32_t>(e) >> 1);
    return kNoSlot;
}

bool SlotTable::find_port(std::uint16_t backend, std::uint16_t &port) {
    const std::uint32_t span = port_hi_ >= port_lo_ ? std::uint32_t(port_hi_ - port_lo_) + 1 : 0;
    // The whole range if need be: after a restart the ports of the previous instance's lingering
    // flows stay taken until the sweeper sees them go, and the cursor may start among them (a
    // bounded scan there refused new flows while most of the range was free).
    for (std::uint32_t k = 0; k < span; ++k) {
        const std::uint16_t p = port_cursor_;
        port_cursor_ = p == port_hi_ ? port_lo_ : static_cast<std::uint16_t>(p + 1);
        if (!ports_->take(backend, p)) continue;
        port = p;
        return true;
    }
    return false;
}

bool SlotTable::take_port(std::uint16_t backend, std::uint16_t &port) {
    return find_port(backend, port);
}

void SlotTable::give_port(std::uint16_t backend, std::uint16_t port) {
    if (port < port_lo_ || port > port_hi_) return;
    ports_->free(backend, port);
}

void SlotTable::adopt_port(std::uint32_t idx, std::uint16_t backend, std::uint16_t port) {
    free_port(idx);
    slots_[idx].snat_port = port;
    slots_[idx].port_backend = backend;
}

void SlotTable::attach_old_leg(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (s.old_keyed) return;
    // The key is absent unless another slot still holds that leg (a slot lingering after its
    // install): that one keeps it.
    if (by_leg(s.prev_skey) != kNoSlot) return;
    s.old_keyed = link(idx, 1);
}

void SlotTable::detach_old_leg(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (s.old_keyed) unlink(idx, 1);
    s.old_keyed = false;
}

bool SlotTable::reclaim_port(std::uint16_t backend, std::uint16_t port, PortWord seen) {
    return port >= port_lo_ && port <= port_hi_ && ports_->reclaim_if(backend, port, seen);
}

void SlotTable::free_port(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (s.leg_keyed) unlink(idx, 0);
    s.leg_keyed = false;
    if (!s.snat_port) return;
    ports_->free(s.port_backend, s.snat_port);
    s.snat_port = 0;
    s.port_backend = KVS_BACKEND_NONE;
}

// From now on the sweeper frees the port, when the flow's entries are gone.
void SlotTable::mark_installed(std::uint16_t backend, std::uint16_t port) {
    ports_->set_state(backend, port, kPortInstalled);
}

void SlotTable::list_add(std::uint32_t idx) {
    Slot &s = slots_[idx];
    s.listed = true;
    s.prev = list_tail_;
    s.next = -1;
    if (list_tail_ >= 0)
        slots_[list_tail_].next = static_cast<std::int32_t>(idx);
    else
        list_head_ = static_cast<std::int32_t>(idx);
    list_tail_ = static_cast<std::int32_t>(idx);
    ++n_binding_;
    if (by_source_) {
        const std::uint64_t src = source_key(s.ckey);
        const std::int32_t pos = rte_hash_add_key(by_source_, &src);  // the key's position
        s.src_pos = pos;
        if (pos < 0) return;
        ++source_count_[static_cast<std::uint32_t>(pos)].slots;
        if (count_flows_) ++source_count_[static_cast<std::uint32_t>(pos)].flows;
    }
}

void SlotTable::list_del(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (!s.listed) return;
    s.listed = false;
    if (s.prev >= 0)
        slots_[s.prev].next = s.next;
    else
        list_head_ = s.next;
    if (s.next >= 0)
        slots_[s.next].prev = s.prev;
    else
        list_tail_ = s.prev;
    s.prev = s.next = -1;
    --n_binding_;
    if (by_source_ && s.src_pos >= 0) {
        SourceCount &n = source_count_[static_cast<std::uint32_t>(s.src_pos)];
        // What its flight still holds stops counting for the source here (a bound flow's flight
        // is sent on after this; a released one's was given back already).
        n.packets -= std::min<std::uint32_t>(n.packets, s.b.flight().size());
        if (n.slots) --n.slots;
        if (!count_flows_) source_unref(idx);  // else it counts as a flow until released
    }
}

void SlotTable::source_unref(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (!by_source_ || s.src_pos < 0) return;
    SourceCount &n = source_count_[static_cast<std::uint32_t>(s.src_pos)];
    s.src_pos = -1;
    if (count_flows_ && n.flows) --n.flows;
    if (n.slots == 0 && n.flows == 0) {
        // A free position counts 0: a key added there later starts from it. Its packets are 0
        // by now (the worker gives a flight's back before the slot).
        n = SourceCount{};
        const std::uint64_t src = source_key(s.ckey);
        rte_hash_del_key(by_source_, &src);
    }
}

std::uint64_t SlotTable::source_key(const kvs_flow_key &k) {
    // IPv4: the address (tagged above any IPv4 value; bit 63 clear). IPv6: its /64, one subnet's
    // share, as an IPv6 client controls the low 64 bits of its own address, with bit 63 set: the
    // families never share a count (an XOR tag let the /64 whose bytes 4..7 are 03 00 00 00 take
    // the quota of a chosen IPv4 address). The /64s that differ only in that bit share one.
    if (k.family != KVS_AF_INET6) return (1ull << 32) | k.saddr[0];
    return (static_cast<std::uint64_t>(k.saddr[1]) << 32 | k.saddr[0]) | (1ull << 63);
}

unsigned SlotTable::held_by(const kvs_flow_key &ckey) const {
    const std::uint64_t src = source_key(ckey);
    const std::int32_t pos = by_source_ ? rte_hash_lookup(by_source_, &src) : -1;
    return pos < 0 ? 0 : source_count_[static_cast<std::uint32_t>(pos)].slots;
}

unsigned SlotTable::flows_by(const kvs_flow_key &ckey) const {
    const std::uint64_t src = source_key(ckey);
    const std::int32_t pos = by_source_ && count_flows_ ? rte_hash_lookup(by_source_, &src) : -1;
    return pos < 0 ? 0 : source_count_[static_cast<std::uint32_t>(pos)].flows;
}

unsigned SlotTable::packets_held_by(const kvs_flow_key &ckey) const {
    const std::uint64_t src = source_key(ckey);
    const std::int32_t pos = by_source_ ? rte_hash_lookup(by_source_, &src) : -1;
    return pos < 0 ? 0 : source_count_[static_cast<std::uint32_t>(pos)].packets;
}

unsigned SlotTable::packets_held_by_source_of(std::uint32_t idx) const {
    const std::int32_t pos = slots_[idx].src_pos;
    return by_source_ && pos >= 0 ? source_count_[static_cast<std::uint32_t>(pos)].packets : 0;
}

void SlotTable::source_packets(std::uint32_t idx, std::int32_t delta) {
    const std::int32_t pos = slots_[idx].src_pos;
    if (!by_source_ || pos < 0 || !slots_[idx].listed) return;  // a bound flow's are not held
    std::uint32_t &n = source_count_[static_cast<std::uint32_t>(pos)].packets;
    if (delta < 0)
        n -= std::min(n, static_cast<std::uint32_t>(-delta));
    else
        n += static_cast<std::uint32_t>(delta);
}

}  // namespace kvsteer::dp
