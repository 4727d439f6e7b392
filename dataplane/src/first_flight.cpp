#include "first_flight.h"

#include <algorithm>
#include <cstring>

namespace kvsteer::dp {

void FirstFlight::start(std::uint32_t isn, bool known) {
    isn_ = isn;
    isn_known_ = known;
    n_ = 0;
    bytes_ = 0;
    fin_ = false;
}

FirstFlight::Add FirstFlight::add(void *pkt, const std::uint8_t *data, std::uint32_t seq,
                                  std::uint16_t len, bool fin, std::uint32_t max_bytes) {
    std::uint32_t rel = seq - (isn_ + 1);
    if (rel >= (1u << 30)) {
        // Before the first data byte. With an inferred ISN and nothing bound yet, an earlier
        // segment than the first one seen (reordering) starts the stream; otherwise it is old.
        const std::uint32_t shift = isn_ + 1 - seq;
        if (isn_known_ || shift > 65535) return Add::Stale;
        for (unsigned i = 0; i < n_; ++i) segs_[i].rel += shift;
        if (fin_) fin_end_ += shift;
        isn_ = seq - 1;
        rel = 0;
    }
    std::uint32_t covered = rel;
    for (unsigned i = 0; i < n_; ++i) {
        const Seg &g = segs_[i];
        if (g.rel <= covered && g.rel + g.len > covered) covered = g.rel + g.len;
    }
    if (n_ > 0 && covered >= rel + len && (!fin || fin_)) return Add::Duplicate;
    if (n_ == kMaxSegs || bytes_ + len > max_bytes) return Add::Full;
    unsigned pos = n_;
    while (pos > 0 && segs_[pos - 1].rel > rel) {
        segs_[pos] = segs_[pos - 1];
        --pos;
    }
    segs_[pos] = Seg{pkt, data, rel, len, static_cast<std::uint8_t>(fin ? 1 : 0)};
    ++n_;
    bytes_ += len;
    if (fin) fin_end_ = rel + len;
    fin_ |= fin;
    return Add::Held;
}

std::uint32_t FirstFlight::assemble(std::uint8_t *buf, std::uint32_t cap) const {
    std::uint32_t pos = 0;
    for (unsigned i = 0; i < n_ && pos < cap; ++i) {
        const Seg &g = segs_[i];
        if (g.rel > pos) break;  // hole
        const std::uint32_t end = std::min(g.rel + g.len, cap);
        if (end > pos) {
            std::memcpy(buf + pos, g.data + (pos - g.rel), end - pos);
            pos = end;
        }
    }
    return pos;
}

std::span<const std::uint8_t> FirstFlight::bytes(std::uint8_t *buf, std::uint32_t cap) const {
    if (n_ > 0 && segs_[0].rel == 0) {
        const Seg &g = segs_[0];
        // Segments are in order and none lies wholly inside another: the next one continues
        // the stream only if it starts within or right after the first.
        if (n_ == 1 || segs_[1].rel > g.len || g.len >= cap)
            return {g.data, std::min<std::uint32_t>(g.len, cap)};
    }
    return {buf, assemble(buf, cap)};
}

std::uint32_t FirstFlight::contiguous() const {
    std::uint32_t pos = 0;
    for (unsigned i = 0; i < n_; ++i) {
        if (segs_[i].rel > pos) break;
        pos = std::max(pos, segs_[i].rel + segs_[i].len);
    }
    return pos;
}

bool begins_request(const std::uint8_t *data, std::uint32_t n) {
    // RFC 9110 method token: upper-case letters in practice (GET, POST, ..., OPTIONS); 3..16.
    std::uint32_t i = 0;
    while (i < n && i < 17 && data[i] >= 'A' && data[i] <= 'Z') ++i;
    if (i == n) return i <= 16;  // a prefix of a method token (or nothing yet)
    return i >= 3 && i <= 16 && data[i] == ' ';
}

}  // namespace kvsteer::dp
