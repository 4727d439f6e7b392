// The held first flight, without DPDK: order, duplicates, holes, the stream start.
#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "first_flight.h"

using kvsteer::dp::begins_request;
using kvsteer::dp::FirstFlight;

namespace {

const std::string kReq = "POST /v1/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
const auto *kData = reinterpret_cast<const std::uint8_t *>(kReq.data());

FirstFlight::Add add(FirstFlight &f, std::uint32_t isn, std::uint32_t off, std::uint32_t len,
                     bool fin = false) {
    return f.add(nullptr, kData + off, isn + 1 + off, static_cast<std::uint16_t>(len), fin,
                 1 << 20);
}

std::string assembled(const FirstFlight &f) {
    std::string out(kReq.size(), '\0');
    out.resize(f.assemble(reinterpret_cast<std::uint8_t *>(out.data()),
                          static_cast<std::uint32_t>(out.size())));
    return out;
}

TEST(FirstFlight, ReordersAbsorbsDuplicatesAndStopsAtHoles) {
    FirstFlight f;
    const std::uint32_t isn = 0xfffffff0u;  // wraps inside the request
    f.start(isn, true);
    EXPECT_EQ(add(f, isn, 20, 15, true), FirstFlight::Add::Held);
    EXPECT_EQ(assembled(f), "") << "nothing from the start yet";
    EXPECT_FALSE(f.complete_to_fin()) << "a FIN after a hole";
    EXPECT_EQ(add(f, isn, 0, 10), FirstFlight::Add::Held);
    EXPECT_EQ(assembled(f), kReq.substr(0, 10)) << "a hole stops the assembly";
    EXPECT_EQ(f.contiguous(), 10u);
    EXPECT_EQ(add(f, isn, 0, 10), FirstFlight::Add::Duplicate);
    EXPECT_EQ(add(f, isn, 10, 10), FirstFlight::Add::Held);
    EXPECT_EQ(add(f, isn, 35, kReq.size() - 35, true), FirstFlight::Add::Held);
    EXPECT_EQ(assembled(f), kReq);
    EXPECT_TRUE(f.has_fin());
    EXPECT_TRUE(f.complete_to_fin());
    EXPECT_EQ(add(f, isn, 5, 20), FirstFlight::Add::Duplicate) << "every byte already held";
    EXPECT_EQ(f.size(), 4u);
    unsigned n = 0;
    f.drain([&](void *) { ++n; });
    EXPECT_EQ(n, 4u);
    EXPECT_EQ(f.size(), 0u);
}

// What a binding flushes: the segments up to the first hole, in order; those past it (and a FIN
// among them) are handed back to be freed, never sent on (the client sends them again).
TEST(FirstFlight, DrainToHoleGivesBackWhatLiesPastTheHole) {
    FirstFlight f;
    const std::uint32_t isn = 1000;
    f.start(isn, true);
    auto tag = [](std::uintptr_t i) { return reinterpret_cast<void *>(i); };
    auto put = [&](std::uintptr_t id, std::uint32_t off, std::uint32_t len, bool fin = false) {
        return f.add(tag(id), kData + off, isn + 1 + off, static_cast<std::uint16_t>(len), fin,
                     1 << 20);
    };
    ASSERT_EQ(put(3, 30, 10, true), FirstFlight::Add::Held);
    ASSERT_EQ(put(1, 0, 10), FirstFlight::Add::Held);
    ASSERT_EQ(put(2, 5, 15), FirstFlight::Add::Held);  // overlaps the first: contiguous to 20
    ASSERT_EQ(put(4, 45, 5), FirstFlight::Add::Held);
    EXPECT_EQ(f.contiguous(), 20u);
    EXPECT_TRUE(f.has_fin());
    EXPECT_FALSE(f.complete_to_fin());
    std::vector<std::uintptr_t> sent, past;
    f.drain_to_hole([&](void *p) { sent.push_back(reinterpret_cast<std::uintptr_t>(p)); },
                    [&](void *p) { past.push_back(reinterpret_cast<std::uintptr_t>(p)); });
    EXPECT_EQ(sent, (std::vector<std::uintptr_t>{1, 2}));
    EXPECT_EQ(past, (std::vector<std::uintptr_t>{3, 4}));
    EXPECT_EQ(f.size(), 0u);
    EXPECT_FALSE(f.has_fin());
    // No hole: everything is sent.
    f.start(isn, true);
    ASSERT_EQ(put(5, 0, 10), FirstFlight::Add::Held);
    ASSERT_EQ(put(6, 10, 5, true), FirstFlight::Add::Held);
    sent.clear();
    past.clear();
    f.drain_to_hole([&](void *p) { sent.push_back(reinterpret_cast<std::uintptr_t>(p)); },
                    [&](void *p) { past.push_back(reinterpret_cast<std::uintptr_t>(p)); });
    EXPECT_EQ(sent, (std::vector<std::uintptr_t>{5, 6}));
    EXPECT_TRUE(past.empty());
}

// bytes(): the first segment's own payload when it holds every contiguous byte (no copy), the
// assembled copy once another segment continues it; the same bytes either way.
TEST(FirstFlight, BytesAreTheFirstSegmentUntilAnotherContinuesIt) {
    FirstFlight f;
    const std::uint32_t isn = 500;
    f.start(isn, true);
    std::string buf(kReq.size(), '\0');
    auto *b = reinterpret_cast<std::uint8_t *>(buf.data());
    const auto cap = static_cast<std::uint32_t>(buf.size());
    auto text = [](std::span<const std::uint8_t> v) {
        return std::string(reinterpret_cast<const char *>(v.data()), v.size());
    };
    EXPECT_TRUE(f.bytes(b, cap).empty());
    EXPECT_EQ(add(f, isn, 30, 10), FirstFlight::Add::Held);
    EXPECT_TRUE(f.bytes(b, cap).empty()) << "nothing from the start yet";
    EXPECT_EQ(add(f, isn, 0, 20), FirstFlight::Add::Held);
    auto v = f.bytes(b, cap);
    EXPECT_EQ(v.data(), kData) << "one segment, a hole after it: its own payload";
    EXPECT_EQ(text(v), kReq.substr(0, 20));
    v = f.bytes(b, 8);
    EXPECT_EQ(v.data(), kData);
    EXPECT_EQ(v.size(), 8u) << "at most cap";
    EXPECT_EQ(add(f, isn, 20, 10), FirstFlight::Add::Held);
    v = f.bytes(b, cap);
    EXPECT_EQ(v.data(), b) << "continued by another segment: assembled in buf";
    EXPECT_EQ(text(v), kReq.substr(0, 40));
    EXPECT_EQ(v.size(), f.contiguous());
    v = f.bytes(b, 15);
    EXPECT_EQ(v.data(), kData) << "the first segment alone covers cap";
    EXPECT_EQ(text(v), kReq.substr(0, 15));
}

TEST(FirstFlight, KnownStartRefusesEarlierBytes) {
    FirstFlight f;
    f.start(1000, true);
    EXPECT_EQ(f.add(nullptr, kData, 1000, 5, false, 1 << 20), FirstFlight::Add::Stale)
        << "seq = ISN: before the data";
    EXPECT_EQ(add(f, 1000, 30, 10), FirstFlight::Add::Held);
    EXPECT_EQ(f.isn(), 1000u) << "a known ISN never moves";
}

// A segment beyond any window the client could have (KVS_SEQ_SLACK past the start) is not this
// stream's: stale, not held (before, up to 1 GiB ahead was).
TEST(FirstFlight, SegmentsPastAnyWindowAreStale) {
    FirstFlight f;
    f.start(1000, true);
    EXPECT_EQ(add(f, 1000, 0, 5), FirstFlight::Add::Held);
    EXPECT_EQ(f.add(nullptr, kData, 1001 + KVS_SEQ_SLACK + 1, 5, false, 1 << 20),
              FirstFlight::Add::Stale);
    EXPECT_EQ(f.add(nullptr, kData, 1001 + (1u << 29), 5, false, 1 << 20), FirstFlight::Add::Stale);
    EXPECT_EQ(f.add(nullptr, kData, 1001 + KVS_SEQ_SLACK, 5, false, 1 << 20),
              FirstFlight::Add::Held);
    EXPECT_EQ(f.size(), 2u);
}

TEST(FirstFlight, InferredStartMovesBackForAnEarlierSegment) {
    FirstFlight f;
    const std::uint32_t real_isn = 5000;
    // The body arrived first: its seq - 1 is taken as the ISN for now.
    f.start(real_isn + 30, false);
    EXPECT_EQ(add(f, real_isn, 30, 20), FirstFlight::Add::Held);
    EXPECT_EQ(assembled(f), kReq.substr(30, 20));
    EXPECT_EQ(add(f, real_isn, 0, 30), FirstFlight::Add::Held);
    EXPECT_EQ(f.isn(), real_isn);
    EXPECT_EQ(assembled(f), kReq.substr(0, 50));
}

TEST(FirstFlight, FullWhenOverBudgetOrSegments) {
    FirstFlight f;
    f.start(0, true);
    EXPECT_EQ(f.add(nullptr, kData, 1, 30, false, 40), FirstFlight::Add::Held);
    EXPECT_EQ(f.add(nullptr, kData + 30, 31, 20, false, 40), FirstFlight::Add::Full);
    FirstFlight g;
    g.start(0, true);
    for (unsigned i = 0; i < FirstFlight::kMaxSegs; ++i)
        ASSERT_EQ(g.add(nullptr, kData, 1 + i, 1, false, 1 << 20), FirstFlight::Add::Held);
    EXPECT_EQ(g.add(nullptr, kData, 1 + FirstFlight::kMaxSegs, 1, false, 1 << 20),
              FirstFlight::Add::Full);
}

TEST(FirstFlight, BeginsRequest) {
    auto b = [](const std::string &s) {
        return begins_request(reinterpret_cast<const std::uint8_t *>(s.data()), s.size());
    };
    EXPECT_TRUE(b("POST /v1 HTTP/1.1\r\n"));
    EXPECT_TRUE(b("GET / HTTP/1.1"));
    EXPECT_TRUE(b("PO")) << "a prefix of a method";
    EXPECT_FALSE(b("{\"model\": \"m\"}"));
    EXPECT_FALSE(b("ab cdef"));
    EXPECT_FALSE(b("X /"));
    EXPECT_FALSE(b("POST/"));
    // Then a request target: body text in capitals is no request line.
    EXPECT_TRUE(b("OPTIONS * HTTP/1.1"));
    EXPECT_TRUE(b("GET http://h/ HTTP/1.1"));
    EXPECT_TRUE(b("POST ")) << "the target not here yet";
    EXPECT_FALSE(b("THE END of the story"));
    EXPECT_FALSE(b("SQL query: SELECT"));
}

// A lost head retransmitted while the segments after it fill the flight: it takes the place of
// the farthest ones (handed back to be freed; the client sends them again). Before, it was
// refused every time (Full) and the connection was reset at the idle timeout.
TEST(FirstFlight, AHeadAtTheFrontOfAFullFlightEvictsTheFarthest) {
    FirstFlight f;
    const std::uint32_t isn = 1000;
    f.start(isn, true);
    int pk[4];
    for (unsigned i = 1; i < 4; ++i)  // segments 1..3 of 10 bytes; segment 0 lost
        ASSERT_EQ(f.add(&pk[i], kData + 10 * i, isn + 1 + 10 * i, 10, false, 30),
                  FirstFlight::Add::Held);
    EXPECT_EQ(f.add(&pk[3], kData + 40, isn + 41, 10, false, 30), FirstFlight::Add::Full)
        << "past the front: refused as before";
    std::vector<void *> gone;
    f.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_TRUE(gone.empty());
    EXPECT_EQ(f.add(&pk[0], kData, isn + 1, 10, false, 30), FirstFlight::Add::Held);
    f.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_EQ(gone, std::vector<void *>{&pk[3]}) << "the farthest segment gave way";
    EXPECT_EQ(f.contiguous(), 30u);
    EXPECT_EQ(f.held_bytes(), 30u);
    EXPECT_EQ(assembled(f), kReq.substr(0, 30));
    f.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_EQ(gone.size(), 1u) << "handed back once";
    // A head too long for the budget even alone: refused, nothing evicted.
    FirstFlight g;
    g.start(isn, true);
    ASSERT_EQ(g.add(&pk[1], kData + 10, isn + 11, 10, false, 30), FirstFlight::Add::Held);
    EXPECT_EQ(g.add(&pk[0], kData, isn + 1, 40, false, 30), FirstFlight::Add::Full);
    g.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_EQ(gone.size(), 1u);
    EXPECT_EQ(g.size(), 1u);
}

// No room for another packet (the worker's or the source's share, may_grow false): a duplicate
// or stale segment is still told apart (it was refused as Full, and a flight whose head was
// incomplete then bound on the 5-tuple), a lost head still takes a later segment's place (one
// in, one out), and a segment that would hold one more packet is refused.
TEST(FirstFlight, WithoutRoomAHeadSwapsAndDuplicatesAreDuplicates) {
    FirstFlight f;
    const std::uint32_t isn = 1000;
    f.start(isn, true);
    int pk[4];
    for (unsigned i = 1; i < 3; ++i)  // segments 1 and 2 held; segment 0 lost
        ASSERT_EQ(f.add(&pk[i], kData + 10 * i, isn + 1 + 10 * i, 10, false, 1 << 20),
                  FirstFlight::Add::Held);
    EXPECT_EQ(f.add(&pk[3], kData + 10, isn + 11, 10, false, 1 << 20, false),
              FirstFlight::Add::Duplicate);
    EXPECT_EQ(f.add(&pk[3], kData + 30, isn + 31, 10, false, 1 << 20, false),
              FirstFlight::Add::Full)
        << "one more packet: refused";
    std::vector<void *> gone;
    f.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_TRUE(gone.empty());
    EXPECT_EQ(f.add(&pk[0], kData, isn + 1, 10, false, 1 << 20, false), FirstFlight::Add::Held);
    f.take_evicted([&](void *p) { gone.push_back(p); });
    EXPECT_EQ(gone, std::vector<void *>{&pk[2]}) << "the farthest segment gave way";
    EXPECT_EQ(f.size(), 2u) << "as many packets as before";
    EXPECT_EQ(f.contiguous(), 20u);
    EXPECT_EQ(assembled(f), kReq.substr(0, 20));
    // A flight holding nothing has nothing to give way: refused.
    FirstFlight g;
    g.start(isn, true);
    EXPECT_EQ(g.add(&pk[0], kData, isn + 1, 10, false, 1 << 20, false), FirstFlight::Add::Full);
}

// An inferred start moves back only for a segment that is kept (a refused one left a hole at the
// front), and not at all once the flight is keyed (fix_start: a backend SYN carries it).
TEST(FirstFlight, TheInferredStartMovesOnlyForAKeptSegmentAndUntilKeyed) {
    FirstFlight f;
    f.start(1009, false);  // first seen: the byte at 1010
    ASSERT_EQ(f.add(nullptr, kData + 10, 1010, 10, false, 30), FirstFlight::Add::Held);
    EXPECT_EQ(f.add(nullptr, kData, 1000, 40, false, 30), FirstFlight::Add::Full);
    EXPECT_EQ(f.isn(), 1009u) << "refused: the start did not move";
    EXPECT_EQ(f.contiguous(), 10u);
    EXPECT_EQ(f.add(nullptr, kData, 1005, 5, false, 30), FirstFlight::Add::Held);
    EXPECT_EQ(f.isn(), 1004u);
    EXPECT_EQ(f.contiguous(), 15u);
    f.fix_start();
    EXPECT_EQ(f.add(nullptr, kData, 1000, 5, false, 30), FirstFlight::Add::Stale);
    EXPECT_EQ(f.isn(), 1004u);
}

}  // namespace

// Copies of a range that differ (a retransmission with other bytes, or one copy with a bad
// checksum the backend drops): the flight says so, whether the new copy is kept (partly new) or
// not (every byte already held). Repeated bytes alone are no conflict.
TEST(FirstFlight, DifferingCopiesOfARangeAreAConflict) {
    const std::uint32_t isn = 5000;
    {
        FirstFlight f;
        f.start(isn, true);
        EXPECT_EQ(add(f, isn, 0, 30), FirstFlight::Add::Held);
        EXPECT_EQ(add(f, isn, 10, 30), FirstFlight::Add::Held) << "partly new";
        EXPECT_EQ(add(f, isn, 0, 20), FirstFlight::Add::Duplicate);
        EXPECT_FALSE(f.conflicting()) << "the same bytes again";
    }
    std::string other = kReq;
    other[kReq.find("10")] = '9';  // "Content-Length: 90"
    const auto *o = reinterpret_cast<const std::uint8_t *>(other.data());
    for (const bool covered : {false, true}) {
        SCOPED_TRACE(covered ? "every byte already held" : "partly new");
        FirstFlight f;
        f.start(isn, true);
        EXPECT_EQ(add(f, isn, 0, 52), FirstFlight::Add::Held);
        const std::uint32_t len = covered ? 52 : static_cast<std::uint32_t>(other.size());
        f.add(nullptr, o, isn + 1, static_cast<std::uint16_t>(len), false, 1 << 20);
        EXPECT_TRUE(f.conflicting());
        f.start(isn, true);
        EXPECT_FALSE(f.conflicting()) << "a new flight starts clean";
    }
}
