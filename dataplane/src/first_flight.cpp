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
    conflict_ = false;
}

FirstFlight::Add FirstFlight::add(void *pkt, const std::uint8_t *data, std::uint32_t seq,
                                  std::uint16_t len, bool fin, std::uint32_t max_bytes,
                                  bool may_grow) {
    std::uint32_t rel = seq - (isn_ + 1), shift = 0;
    if (rel >= (1u << 30)) {
        // Before the first data byte. With an inferred ISN and nothing bound yet, an earlier
        // segment than the first one seen (reordering) starts the stream; otherwise it is old.
        // The shift is only committed once the segment is kept (a refused one moved the start
        // and left a hole at the front).
        shift = isn_ + 1 - seq;
        if (isn_known_ || shift > 65535) return Add::Stale;
        rel = 0;
    } else if (rel > KVS_SEQ_SLACK) {
        // Past any window the client could have been given (our SYN-ACK's is 64 KiB; a kept-alive
        // connection's, its backend's): not this stream's (before, up to 1 GiB ahead was held).
        return Add::Stale;
    }
    std::uint32_t covered = rel, front = 0;  // front: the contiguous bytes from the start
    for (unsigned i = 0; i < n_; ++i) {
        const Seg &g = segs_[i];
        const std::uint32_t r = g.rel + shift;
        if (r <= covered && r + g.len > covered) covered = r + g.len;
        if (r <= front) front = std::max(front, r + g.len);
        // Bytes both copies carry must be the same (a retransmission repeats them).
        const std::uint32_t lo = std::max(r, rel), hi = std::min(r + g.len, rel + len);
        if (lo < hi && std::memcmp(g.data + (lo - r), data + (lo - rel), hi - lo) != 0)
            conflict_ = true;
    }
    if (n_ > 0 && covered >= rel + len && (!fin || fin_)) return Add::Duplicate;
    if (n_ == kMaxSegs || bytes_ + len > max_bytes || !may_grow) {
        // A segment at the front (a lost head retransmitted, while what followed it filled the
        // flight, or the worker's or source's packets) takes the place of the farthest held
        // segments, which the client sends again: refused, it never fitted and the connection
        // was reset at the idle timeout.
        if (rel > front) return Add::Full;
        unsigned keep = n_;
        std::uint32_t bytes = bytes_;
        const auto over = [&] {
            return keep == kMaxSegs || bytes + len > max_bytes || (!may_grow && keep == n_);
        };
        while (keep > 0 && segs_[keep - 1].rel + shift > rel && over()) bytes -= segs_[--keep].len;
        if (over()) return Add::Full;
        for (unsigned i = keep; i < n_; ++i) evicted_[n_evicted_++] = segs_[i].pkt;
        n_ = static_cast<std::uint8_t>(keep);
        bytes_ = bytes;
        fin_ = false;
        for (unsigned i = 0; i < n_; ++i) fin_ |= segs_[i].fin != 0;
    }
    if (shift) {
        for (unsigned i = 0; i < n_; ++i) segs_[i].rel += shift;
        if (fin_) fin_end_ += shift;
        isn_ = seq - 1;
    }
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
    if (i < 3 || i > 16 || data[i] != ' ') return false;
    // Then the request target: origin form (/...), asterisk (OPTIONS *) or absolute (http...).
    // Body text such as "THE END of ..." is no request line.
    return i + 1 == n || data[i + 1] == '/' || data[i + 1] == '*' || data[i + 1] == 'h';
}

}  // namespace kvsteer::dp
