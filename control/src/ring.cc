#include "kvsteer/control/ring.h"

#include <atomic>
#include <cstring>

namespace kvsteer::control {

std::size_t consume_reports(kvs_ring_ctl *ctl, const kvs_bind_report *slots, unsigned workers,
                            const std::function<void(const kvs_bind_report &)> &fn, RingStats &st) {
    std::size_t n = 0;
    std::uint64_t dropped = 0;
    if (workers > KVS_MAX_WORKERS) workers = KVS_MAX_WORKERS;
    for (unsigned w = 0; w < workers; w++) {
        std::uint64_t head = std::atomic_ref<__u64>(ctl[w].head).load(std::memory_order_acquire);
        auto tail_ref = std::atomic_ref<__u64>(ctl[w].tail);
        std::uint64_t tail = tail_ref.load(std::memory_order_relaxed);
        dropped += std::atomic_ref<__u64>(ctl[w].dropped).load(std::memory_order_relaxed);
        if (head < tail) {
            st.resets++;
            tail_ref.store(head, std::memory_order_release);
            continue;
        }
        if (head - tail > KVS_BIND_RING_SLOTS) {
            st.overruns += head - tail - KVS_BIND_RING_SLOTS;
            tail = head - KVS_BIND_RING_SLOTS;
        }
        const kvs_bind_report *ring = slots + static_cast<std::size_t>(w) * KVS_BIND_RING_SLOTS;
        for (; tail < head; tail++) {
            kvs_bind_report r;
            std::memcpy(&r, &ring[tail & (KVS_BIND_RING_SLOTS - 1)], sizeof r);
            if (r.backend_id >= KVS_MAX_BACKENDS || r.n_blocks > KVS_MAX_REPORT_BLOCKS) {
                st.invalid++;
                continue;
            }
            fn(r);
            n++;
        }
        // Release: our reads of the slots happen before the producer may reuse them.
        tail_ref.store(tail, std::memory_order_release);
    }
    st.consumed += n;
    st.producer_dropped = dropped;
    return n;
}

}  // namespace kvsteer::control
