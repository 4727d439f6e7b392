#include "kvsteer/control/tables.h"

#include <atomic>
#include <cstring>
#include <thread>

namespace kvsteer::control {

namespace {
template <typename T>
std::atomic_ref<T> aref(T &x) {
    return std::atomic_ref<T>(x);
}
}  // namespace

std::uint32_t TableWriter::active_maglev(const kvs_config *c) {
    return aref(const_cast<kvs_config *>(c)->maglev_active).load(std::memory_order_acquire) & 1u;
}

std::uint32_t TableWriter::active_affinity(const kvs_config *c) {
    return aref(const_cast<kvs_config *>(c)->affinity_active).load(std::memory_order_acquire) & 1u;
}

void TableWriter::wait_grace(std::chrono::steady_clock::time_point last_flip) {
    auto until = last_flip + grace_;
    auto now = std::chrono::steady_clock::now();
    if (now < until) std::this_thread::sleep_for(until - now);
}

void TableWriter::publish_maglev(std::span<const std::uint32_t> table) {
    wait_grace(maglev_flip_);
    std::uint32_t next = active_maglev(v_.config) ^ 1u;
    std::memcpy(v_.maglev + static_cast<std::size_t>(next) * KVS_MAGLEV_SIZE, table.data(),
                std::min<std::size_t>(table.size(), KVS_MAGLEV_SIZE) * sizeof(std::uint32_t));
    // Release: the half's contents are visible before any reader can load the new index.
    std::atomic_thread_fence(std::memory_order_release);
    aref(v_.config->maglev_active).store(next, std::memory_order_release);
    maglev_flip_ = std::chrono::steady_clock::now();
    maglev_flips_++;
    bump_generation();
}

void TableWriter::publish_affinity(std::span<const kvs_affinity_entry> half) {
    wait_grace(affinity_flip_);
    std::uint32_t next = active_affinity(v_.config) ^ 1u;
    std::memcpy(
        static_cast<void *>(v_.affinity + static_cast<std::size_t>(next) * KVS_AFFINITY_SLOTS),
        half.data(),
        std::min<std::size_t>(half.size(), KVS_AFFINITY_SLOTS) * sizeof(kvs_affinity_entry));
    std::atomic_thread_fence(std::memory_order_release);
    aref(v_.config->affinity_active).store(next, std::memory_order_release);
    affinity_flip_ = std::chrono::steady_clock::now();
    affinity_flips_++;
    bump_generation();
}

void TableWriter::write_backend(std::uint32_t id, const kvs_backend &b) {
    kvs_backend &slot = v_.backends[id];
    if (std::memcmp(slot.addr, b.addr, sizeof slot.addr) == 0 && slot.port == b.port &&
        slot.family == b.family && std::memcmp(slot.mac, b.mac, sizeof slot.mac) == 0) {
        // Same backend, same next hop: single-field updates need no EMPTY window.
        aref(slot.weight).store(b.weight, std::memory_order_relaxed);
        aref(slot.ifindex).store(b.ifindex, std::memory_order_relaxed);
        // A cap's flag before its value, a value's removal before its flag's: a reader between
        // the two stores never takes a queue cap for a static max_load (in place of the bound).
        if (b.max_load_cap) aref(slot.max_load_cap).store(1, std::memory_order_relaxed);
        aref(slot.max_load).store(b.max_load, std::memory_order_relaxed);
        if (!b.max_load_cap) aref(slot.max_load_cap).store(0, std::memory_order_relaxed);
        aref(slot.state).store(b.state, std::memory_order_release);
        return;
    }
    aref(slot.state).store(KVS_BE_EMPTY, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::memcpy(slot.addr, b.addr, sizeof slot.addr);
    slot.port = b.port;
    slot.family = b.family;
    std::memcpy(slot.mac, b.mac, sizeof slot.mac);
    slot.weight = b.weight;
    slot.ifindex = b.ifindex;
    slot.max_load = b.max_load;
    slot.max_load_cap = b.max_load_cap;
    aref(slot.state).store(b.state, std::memory_order_release);
}

void TableWriter::set_backend_state(std::uint32_t id, std::uint8_t state) {
    aref(v_.backends[id].state).store(state, std::memory_order_release);
}

void TableWriter::set_n_backends(std::uint32_t n) {
    aref(v_.config->n_backends).store(n, std::memory_order_release);
}

void TableWriter::bump_generation() {
    aref(v_.config->generation).fetch_add(1, std::memory_order_acq_rel);
}

std::uint32_t TableWriter::generation() const {
    return aref(v_.config->generation).load(std::memory_order_acquire);
}

}  // namespace kvsteer::control
