#include "kvsteer/core/session.h"

#include <xxhash.h>

#include <algorithm>

namespace kvsteer {

namespace {

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

std::uint64_t nonzero(std::uint64_t h) {
    return h ? h : 0x9e3779b97f4a7c15ULL;
}

}  // namespace

SessionHeaders session_headers(const kvs_config &c) noexcept {
    SessionHeaders h;
    // Off (the default): an empty list. Every binding asks, so answer without the copy.
    if (__atomic_load_n(&c.session_headers[0], __ATOMIC_RELAXED) == '\0') return h;
    // Byte by byte, as kvsteerd writes it: the list may change under us (a mix of the two lists
    // keys one flight by neither; the last byte is NUL whatever the writer does).
    for (std::size_t i = 0; i + 1 < h.text.size(); ++i)
        h.text[i] = __atomic_load_n(&c.session_headers[i], __ATOMIC_RELAXED);
    h.text.back() = '\0';
    const std::string_view all(h.text.data());
    std::size_t start = 0;
    while (start <= all.size() && h.n < KVS_SESSION_MAX_HEADERS) {
        std::size_t end = all.find(',', start);
        if (end == std::string_view::npos) end = all.size();
        const std::string_view name = trim(all.substr(start, end - start));
        if (!name.empty()) {
            h.off[h.n] = static_cast<std::uint8_t>(name.data() - h.text.data());
            h.len[h.n] = static_cast<std::uint8_t>(name.size());
            ++h.n;
        }
        start = end + 1;
    }
    return h;
}

std::uint32_t session_cap(const kvs_config &c) noexcept {
    return c.session_cap ? c.session_cap : KVS_DEFAULT_SESSION_CAP;
}

SessionKey find_session_key(const HashParams &hp, const SessionHeaders &hs, const RequestView &v,
                            std::span<const std::uint8_t> bytes) noexcept {
    SessionKey k;
    if (hs.n == 0 || v.status != LocateStatus::Ok) return k;
    const std::string_view head(reinterpret_cast<const char *>(bytes.data()),
                                std::min(v.body_offset, bytes.size()));
    for (std::uint32_t h = 0; h < hs.n; ++h) {
        std::string_view value;
        bool seen = false, bad = false;
        // The locator accepted this head: lines end in LF (CR optional), no obs-fold, no
        // whitespace before ':'. Empty lines before the request line, then the request line.
        std::size_t pos = 0;
        bool request_line = true;
        while (pos < head.size()) {
            std::size_t eol = head.find('\n', pos);
            if (eol == std::string_view::npos) eol = head.size();
            const std::string_view line = trim(head.substr(pos, eol - pos));
            pos = eol + 1;
            if (line.empty()) {
                if (request_line) continue;
                break;  // end of the header section
            }
            if (request_line) {
                request_line = false;
                continue;
            }
            const std::size_t colon = line.find(':');
            if (colon == std::string_view::npos || !iequal(line.substr(0, colon), hs.name(h)))
                continue;
            const std::string_view val = trim(line.substr(colon + 1));
            if (seen && val != value) bad = true;
            if (!seen) value = val;
            seen = true;
        }
        if (!seen) continue;
        if (bad || value.empty() || value.size() > KVS_SESSION_VALUE_MAX) {
            k.status = SessionStatus::Bad;
            return k;
        }
        const std::uint64_t name_seed =
            XXH3_64bits_withSeed(hs.name(h).data(), hs.name(h).size(), hp.seed);
        k.status = SessionStatus::Key;
        k.hash = nonzero(XXH3_64bits_withSeed(value.data(), value.size(), hp.seed ^ name_seed));
        return k;
    }
    return k;
}

PrefixHashes session_hashes(std::uint64_t key) noexcept {
    PrefixHashes h;
    h.prefix = key;
    return h;
}

std::uint32_t SessionLimiter::in_flight(std::uint64_t key) const noexcept {
    for (std::uint32_t i = 0; key && i < kMaxProbe; ++i) {
        const Slot &s = slots_[(key + i) & (kSlots - 1)];
        const std::uint32_t n = s.n.load(std::memory_order_relaxed);
        if (s.key == key && n > 0) return n;
        if (s.key == 0) break;
    }
    return 0;
}

std::uint32_t SessionLimiter::acquire(std::uint64_t key, std::uint32_t cap) noexcept {
    if (key == 0 || cap == 0) return kNone;
    std::uint32_t free = kNone;
    for (std::uint32_t i = 0; i < kMaxProbe; ++i) {
        const std::uint32_t at = (key + i) & (kSlots - 1);
        Slot &s = slots_[at];
        std::uint32_t n = s.n.load(std::memory_order_acquire);
        if (s.key == key && n > 0) {
            // Releases may lower n meanwhile, never raise it: the cap holds.
            while (n < cap && !s.n.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) {
            }
            return n < cap ? at : kNone;
        }
        if (n == 0 && free == kNone) free = at;
        if (s.key == 0) break;  // never used: the key is not further on
    }
    if (free == kNone) return kNone;  // the probe window is full of other live keys
    slots_[free].key = key;
    slots_[free].n.store(1, std::memory_order_release);
    return free;
}

void SessionLimiter::release(std::uint32_t slot) noexcept {
    if (slot >= kSlots) return;
    std::atomic<std::uint32_t> &n = slots_[slot].n;
    std::uint32_t v = n.load(std::memory_order_relaxed);
    while (v > 0 && !n.compare_exchange_weak(v, v - 1, std::memory_order_acq_rel)) {
    }
}

}  // namespace kvsteer
