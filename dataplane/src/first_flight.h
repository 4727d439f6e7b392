// The first flight of one client connection as the dataplane holds it: segments in sequence
// order from the client's first data byte, duplicates absorbed, the stream start known for sure.
// Pure (no DPDK): a segment is an opaque packet handle plus a pointer to its payload.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "kvsteer/abi.h"

namespace kvsteer::dp {

class FirstFlight {
   public:
    static constexpr unsigned kMaxSegs = 32;
    // A client that lost its request head retransmits it within about a second (RTO); a flight
    // whose start is not known is not bound before this unless it begins an HTTP request.
    static constexpr std::uint32_t kUnsureStartWaitMs = 1500;

    struct Seg {
        void *pkt;                 // the frame (an rte_mbuf in the dataplane)
        const std::uint8_t *data;  // its payload
        std::uint32_t rel;         // sequence offset from the first data byte
        std::uint16_t len;         // payload bytes
        std::uint8_t fin;
    };

    enum class Add : std::uint8_t {
        Held,       // kept
        Duplicate,  // every byte (and the FIN) already held
        Stale,      // before the first data byte: an old retransmission
        Full,       // no room (segment count or byte budget): not kept
    };

    // `isn`: the client's ISN. `known`: recovered from the cookie's timestamp echo, so the stream
    // starts at isn + 1 for sure; otherwise it is the earliest segment's seq - 1 and moves back
    // when an earlier segment arrives.
    void start(std::uint32_t isn, bool known);

    // Holds a segment unless it is a duplicate or stale or the flight is full (max_bytes held).
    // A segment at the front of a full flight is held in place of the farthest segments, which
    // the caller then frees (take_evicted): the client sends them again. `may_grow` false (the
    // worker or the client's source holds all the packets it may): only such a swap, which holds
    // no more packets than before, takes a segment; duplicates and stale ones are told apart all
    // the same.
    Add add(void *pkt, const std::uint8_t *data, std::uint32_t seq, std::uint16_t len, bool fin,
            std::uint32_t max_bytes, bool may_grow = true);
    // Hands the packets add() gave up to f and forgets them.
    template <class F>
    void take_evicted(F &&f) {
        for (unsigned i = 0; i < n_evicted_; ++i) f(evicted_[i]);
        n_evicted_ = 0;
    }

    // Copies the contiguous bytes from the first data byte (at most cap) into buf; returns how
    // many.
    std::uint32_t assemble(std::uint8_t *buf, std::uint32_t cap) const;
    // The contiguous bytes from the first data byte (at most cap): the first segment's own
    // payload when it holds all of them (the common one-segment request: no copy), else a copy
    // in buf (assemble). Valid while the flight holds its segments and buf is not reused.
    std::span<const std::uint8_t> bytes(std::uint8_t *buf, std::uint32_t cap) const;
    // Contiguous bytes held from the first data byte (no copy).
    std::uint32_t contiguous() const;

    std::uint32_t isn() const { return isn_; }
    bool isn_known() const { return isn_known_; }
    // The flight is keyed (a SYN carries its ISN): its start no longer moves; an earlier segment
    // is stale.
    void fix_start() { isn_known_ = true; }
    bool has_fin() const { return fin_; }
    // Two copies of some byte range held or offered differed (a retransmission with other bytes,
    // or one of them with a bad checksum the backend will drop): the bytes the backend parses
    // may not be those located here, so no request end taken from them is vouched for.
    bool conflicting() const { return conflict_; }
    // Every byte up to the client's FIN is held: the client has sent all it ever will.
    bool complete_to_fin() const { return fin_ && contiguous() >= fin_end_; }
    unsigned size() const { return n_; }
    // Payload bytes held (contiguous or not).
    std::uint32_t held_bytes() const { return bytes_; }

    // Shows every held packet to f (the flight keeps them).
    template <class F>
    void each(F &&f) const {
        for (unsigned i = 0; i < n_; ++i) f(segs_[i].pkt);
    }

    // Hands every held packet to f (in sequence order) and empties the flight.
    template <class F>
    void drain(F &&f) {
        for (unsigned i = 0; i < n_; ++i) f(segs_[i].pkt);
        n_ = 0;
        bytes_ = 0;
        fin_ = false;
    }

    // Hands the held packets up to the first hole to f (in sequence order), those past it to
    // `past` (never sent on: a receiver would keep them out of order, and the client sends them
    // again), and empties the flight.
    template <class F, class G>
    void drain_to_hole(F &&f, G &&past) {
        std::uint32_t pos = 0;
        bool hole = false;
        for (unsigned i = 0; i < n_; ++i) {
            hole = hole || segs_[i].rel > pos;
            if (hole) {
                past(segs_[i].pkt);
                continue;
            }
            pos = std::max(pos, segs_[i].rel + segs_[i].len);
            f(segs_[i].pkt);
        }
        n_ = 0;
        bytes_ = 0;
        fin_ = false;
    }

   private:
    Seg segs_[kMaxSegs];
    void *evicted_[kMaxSegs];
    std::uint8_t n_evicted_ = 0;
    std::uint32_t isn_ = 0, bytes_ = 0, fin_end_ = 0;
    std::uint8_t n_ = 0;
    bool isn_known_ = false, fin_ = false, conflict_ = false;
};

// Whether the bytes at the start of a flight begin an HTTP/1.x request line (a method token and
// a space, or a prefix of one): evidence that the flight's start is the stream's start.
bool begins_request(const std::uint8_t *data, std::uint32_t n);

}  // namespace kvsteer::dp
