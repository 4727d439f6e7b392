// Session affinity by header: a configured request header (X-Session-ID, ...) whose value, when
// present, is the affinity key instead of the prompt, for a bounded number of requests in flight.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>

#include "kvsteer/abi.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"

namespace kvsteer {

// The header names of kvs_config.session_headers, copied (the writer may change the field while
// a reader holds this) and split at ','. Empty names are skipped; at most
// KVS_SESSION_MAX_HEADERS. n == 0: the feature is off.
struct SessionHeaders {
    std::array<char, KVS_SESSION_HEADERS_LEN> text{};
    std::array<std::uint8_t, KVS_SESSION_MAX_HEADERS> off{}, len{};  // names within `text`
    std::uint32_t n = 0;

    std::string_view name(std::uint32_t i) const { return {text.data() + off[i], len[i]}; }
};
SessionHeaders session_headers(const kvs_config &c) noexcept;

// session_cap with its default applied.
std::uint32_t session_cap(const kvs_config &c) noexcept;

enum class SessionStatus : std::uint8_t {
    None,  // feature off, head not located, or none of the headers present
    Key,   // `hash` is the key
    Bad,   // a header present but unusable: empty value, longer than KVS_SESSION_VALUE_MAX, or
           // given twice with different values (the prompt is the key, as without the header)
};

struct SessionKey {
    SessionStatus status = SessionStatus::None;
    std::uint64_t hash = 0;  // never 0 when status == Key
};

// The first header of `hs` (in list order) present in the located head (`v.status == Ok`),
// names compared case-insensitively, the value's surrounding whitespace dropped; the value is
// hashed with the seed and the header name (so one value under two names gives two keys).
// Allocates nothing; reads only bytes[0 .. v.body_offset).
SessionKey find_session_key(const HashParams &hp, const SessionHeaders &hs, const RequestView &v,
                            std::span<const std::uint8_t> bytes) noexcept;

// The hashes a session's request is steered by: the session key as the prefix hash, no blocks
// (choose_backend then follows the key's affinity entry, or hashes the key on a miss).
PrefixHashes session_hashes(std::uint64_t key) noexcept;

// In-flight requests per session key, so one key cannot pile more than the cap onto its
// backend: acquire before steering by the key (kNone: over the cap, or no room to count it; steer
// by the prompt instead), release the slot it returned once that request completes. Fixed size,
// no allocation. acquire and in_flight belong to one owner thread; release may come from any
// thread, once per slot acquired (a slot keeps its key while it holds a count, so a release
// never races with the slot's reuse). A key whose count is back to 0 frees its slot.
class SessionLimiter {
   public:
    static constexpr std::uint32_t kSlots = 4096;  // power of two
    static constexpr std::uint32_t kMaxProbe = 32;
    static constexpr std::uint32_t kNone = ~0u;

    std::uint32_t acquire(std::uint64_t key, std::uint32_t cap) noexcept;
    void release(std::uint32_t slot) noexcept;
    std::uint32_t in_flight(std::uint64_t key) const noexcept;

   private:
    struct Slot {
        std::uint64_t key = 0;            // 0: never used; written by the owner only
        std::atomic<std::uint32_t> n{0};  // 0: free for any key
    };
    std::array<Slot, kSlots> slots_{};
};

}  // namespace kvsteer
