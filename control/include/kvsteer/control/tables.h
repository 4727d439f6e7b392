// Writes the shared tables: config, backends, and the double-buffered Maglev and affinity halves.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "kvsteer/abi.h"
#include "kvsteer/core/tables.h"

namespace kvsteer::control {

// Single writer. Readers load the active index (acquire) and read that half; a half is never
// written while active, and a retired half is left alone for `grace` so that a reader that
// picked it just before the flip finishes first (the dataplane reads the active half in place,
// one lookup per choice: microseconds, well within it).
class TableWriter {
   public:
    TableWriter(const Tables &v, std::chrono::milliseconds grace) : v_(v), grace_(grace) {}

    // `table` has KVS_MAGLEV_SIZE entries.
    void publish_maglev(std::span<const std::uint32_t> table);
    // `half` has KVS_AFFINITY_SLOTS entries.
    void publish_affinity(std::span<const kvs_affinity_entry> half);

    // Writes a whole backend slot: readers see the slot EMPTY while it changes, then the new state.
    void write_backend(std::uint32_t id, const kvs_backend &b);
    void set_backend_state(std::uint32_t id, std::uint8_t state);
    void set_n_backends(std::uint32_t n);
    void bump_generation();
    std::uint32_t generation() const;

    std::uint64_t maglev_flips() const { return maglev_flips_; }
    std::uint64_t affinity_flips() const { return affinity_flips_; }

    static std::uint32_t active_maglev(const kvs_config *c);
    static std::uint32_t active_affinity(const kvs_config *c);

   private:
    void wait_grace(std::chrono::steady_clock::time_point last_flip);

    Tables v_;
    std::chrono::milliseconds grace_;
    std::chrono::steady_clock::time_point maglev_flip_{}, affinity_flip_{};
    std::uint64_t maglev_flips_ = 0, affinity_flips_ = 0;
};

}  // namespace kvsteer::control
