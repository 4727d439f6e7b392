// The held first flight, without DPDK: order, duplicates, holes, the stream start.
#include <gtest/gtest.h>

#include <string>

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

TEST(FirstFlight, KnownStartRefusesEarlierBytes) {
    FirstFlight f;
    f.start(1000, true);
    EXPECT_EQ(f.add(nullptr, kData, 1000, 5, false, 1 << 20), FirstFlight::Add::Stale)
        << "seq = ISN: before the data";
    EXPECT_EQ(add(f, 1000, 30, 10), FirstFlight::Add::Held);
    EXPECT_EQ(f.isn(), 1000u) << "a known ISN never moves";
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
}

}  // namespace
