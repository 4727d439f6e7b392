// Session affinity by header: the header found in a located head, its value hashed, the prompt
// kept as the key without it, bad values refused, and the per-key in-flight cap.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kvsteer/core/flight_key.h"
#include "kvsteer/core/session.h"

namespace kvsteer {
namespace {

std::span<const std::uint8_t> as_bytes(const std::string &s) {
    return {reinterpret_cast<const std::uint8_t *>(s.data()), s.size()};
}

kvs_config with_headers(const char *list) {
    kvs_config c{};
    std::strncpy(c.session_headers, list, sizeof c.session_headers - 1);
    return c;
}

std::string chat(const std::string &extra_headers, const std::string &prompt = "hello there") {
    const std::string body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" + prompt + "\"}]}";
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n" + extra_headers +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
}

FlightKey key_of(const kvs_config &c, const std::string &req) {
    const auto b = as_bytes(req);
    return key_flight(hash_params(c), session_headers(c), locate_request(b), b, 77);
}

TEST(CoreFlightKey, PromptBlocksComeFromTheDeclaredLength) {
    // The prompt's blocks in all: the body from the key's first byte to Content-Length, even
    // when the flight holds only its start (kvs_config{}: 512-byte blocks).
    const std::string req = chat("", std::string(5000, 'a'));
    const std::size_t body = req.find("\r\n\r\n") + 4;
    const std::size_t key = req.find("[{");
    const std::uint32_t want = static_cast<std::uint32_t>((req.size() - key) / 512);
    EXPECT_EQ(key_of(kvs_config{}, req).hashes.prompt_blocks, want);
    EXPECT_EQ(key_of(kvs_config{}, req.substr(0, body + 1200)).hashes.prompt_blocks, want);
    EXPECT_GT(want, key_of(kvs_config{}, req.substr(0, body + 1200)).hashes.n_blocks);
    // No Content-Length (chunked): unknown.
    const std::string chunked =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "40\r\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    EXPECT_EQ(key_of(kvs_config{}, chunked).hashes.prompt_blocks, 0u);
    // A declared length beyond reason (the client's word) counts kMaxPromptBlocks, not 4e9.
    std::string huge = req.substr(0, body + 1200);
    const std::size_t cl = huge.find("Content-Length: ") + 16;
    huge.replace(cl, huge.find("\r\n", cl) - cl, "999999999999999");
    EXPECT_EQ(key_of(kvs_config{}, huge).hashes.prompt_blocks, kMaxPromptBlocks);
}

// The prompt's value ends within the flight: its own length in blocks, not the declared body's
// (members after it counted too, and a Content-Length of 8 MiB for a short prompt held open
// weighed its backend 16,383 blocks more in the work estimate). Expect: 100-continue with no body
// is keyed on the 5-tuple (the request target gave every such request of a path one key).
TEST(CoreFlightKey, ACompletePromptWeighsItsOwnLength) {
    std::string req = chat("", "hi");
    const std::size_t cl = req.find("Content-Length: ") + 16;
    req.replace(cl, req.find("\r\n", cl) - cl, "8388608");
    EXPECT_EQ(key_of(kvs_config{}, req).hashes.prompt_blocks, 0u) << "a 2-word prompt";
    const std::string body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" +
                             std::string(1100, 'a') + "\"}],\"user\":\"" + std::string(20000, 'x') +
                             "\"}";
    const std::string padded = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\n\r\n" + body;
    const std::size_t key_len = body.find("],") + 1 - body.find("[{");
    EXPECT_EQ(key_of(kvs_config{}, padded).hashes.prompt_blocks, key_len / 512)
        << "not the 20,000 bytes after it";
    const std::string expect =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        "Content-Length: 5000\r\n\r\n";
    const FlightKey e = key_of(kvs_config{}, expect);
    EXPECT_EQ(e.kind, KeyKind::FiveTuple);
    EXPECT_EQ(e.hashes.prefix, 77u);
}

TEST(CoreSession, HeaderListParsed) {
    auto h = session_headers(with_headers("x-session-id, x-user ,,"));
    ASSERT_EQ(h.n, 2u);
    EXPECT_EQ(h.name(0), "x-session-id");
    EXPECT_EQ(h.name(1), "x-user");
    const SessionHeaders copy = h;  // names are offsets: a copy reads its own text
    h.text.fill('z');
    EXPECT_EQ(copy.name(1), "x-user");
    EXPECT_EQ(session_headers(kvs_config{}).n, 0u);
    kvs_config full{};
    std::memset(full.session_headers, 'a',
                sizeof full.session_headers);  // no NUL: cut, not overrun
    const auto f = session_headers(full);
    ASSERT_EQ(f.n, 1u);
    EXPECT_EQ(f.name(0).size(), KVS_SESSION_HEADERS_LEN - 1);
    EXPECT_EQ(session_cap(kvs_config{}), KVS_DEFAULT_SESSION_CAP);
    full.session_cap = 9;
    EXPECT_EQ(session_cap(full), 9u);
}

TEST(CoreSession, HeaderFoundCaseInsensitivelyAndValueHashed) {
    const kvs_config c = with_headers("x-session-id");
    const FlightKey a = key_of(c, chat("X-Session-ID: conv-42\r\n"));
    const FlightKey b = key_of(c, chat("x-session-id:conv-42  \r\n", "another prompt entirely"));
    const FlightKey d = key_of(c, chat("X-SESSION-ID: conv-43\r\n"));
    ASSERT_EQ(a.session.status, SessionStatus::Key);
    ASSERT_EQ(b.session.status, SessionStatus::Key);
    EXPECT_NE(a.session.hash, 0u);
    EXPECT_EQ(a.session.hash, b.session.hash);  // same value, other prompt: same key
    EXPECT_NE(a.session.hash, d.session.hash);
    EXPECT_NE(a.hashes.prefix, b.hashes.prefix);  // the prompt hashes are still computed
    // The seed and the header's name are mixed in.
    kvs_config seeded = c;
    seeded.hash_seed = 5;
    EXPECT_NE(key_of(seeded, chat("X-Session-ID: conv-42\r\n")).session.hash, a.session.hash);
    const kvs_config two = with_headers("x-user,x-session-id");
    const FlightKey e = key_of(two, chat("X-Session-ID: conv-42\r\n"));
    ASSERT_EQ(e.session.status, SessionStatus::Key);
    EXPECT_EQ(e.session.hash, a.session.hash);
    const FlightKey u = key_of(two, chat("X-User: conv-42\r\n"));
    EXPECT_NE(u.session.hash, a.session.hash);
    // With both present, the first in the list wins.
    const FlightKey both = key_of(two, chat("X-Session-ID: conv-42\r\nX-User: conv-42\r\n"));
    EXPECT_EQ(both.session.hash, u.session.hash);
    // Bare LF line ends.
    const FlightKey lf = key_of(c,
                                "POST /v1/completions HTTP/1.1\nX-Session-Id: conv-42\n"
                                "Content-Length: 13\n\n{\"prompt\":\"x\"}");
    EXPECT_EQ(lf.session.hash, a.session.hash);
}

TEST(CoreSession, AbsentHeaderOrFeatureOffKeepsThePromptKey) {
    const std::string req = chat("X-Request-ID: r1\r\n");
    const FlightKey on = key_of(with_headers("x-session-id"), req);
    const FlightKey off = key_of(kvs_config{}, chat("X-Session-ID: conv-42\r\n"));
    EXPECT_EQ(on.session.status, SessionStatus::None);
    EXPECT_EQ(off.session.status, SessionStatus::None);
    const auto b = as_bytes(req);
    EXPECT_EQ(on.hashes.prefix, key_flight(hash_params(kvs_config{}), b, 77).hashes.prefix);
    SessionLimiter lim;
    std::uint32_t slot = 0;
    EXPECT_EQ(steering_hashes(on, lim, 4, slot).prefix, on.hashes.prefix);
    EXPECT_EQ(slot, SessionLimiter::kNone);
    // A header name that only prefixes another, or the value of another header, is no match.
    EXPECT_EQ(key_of(with_headers("x-session"), chat("X-Session-ID: a\r\n")).session.status,
              SessionStatus::None);
    EXPECT_EQ(
        key_of(with_headers("x-session-id"), chat("X-Other: x-session-id: a\r\n")).session.status,
        SessionStatus::None);
    // The request line is not a header; nor is the body.
    EXPECT_EQ(key_of(with_headers("post /v1/chat/completions http/1.1"), chat("")).session.status,
              SessionStatus::None);
    EXPECT_EQ(key_of(with_headers("\"content\""), chat("")).session.status, SessionStatus::None);
    // A head not yet complete gives no key (the request is keyed as before).
    const std::string cut = "POST /v1/completions HTTP/1.1\r\nX-Session-ID: conv-42\r\n";
    const auto cb = as_bytes(cut);
    const kvs_config c = with_headers("x-session-id");
    EXPECT_EQ(
        key_flight(hash_params(c), session_headers(c), locate_request(cb), cb, 77).session.status,
        SessionStatus::None);
}

TEST(CoreSession, MalformedOrOversizedValuesAreNotKeys) {
    const kvs_config c = with_headers("x-session-id");
    EXPECT_EQ(key_of(c, chat("X-Session-ID:   \r\n")).session.status, SessionStatus::Bad);
    EXPECT_EQ(
        key_of(c, chat("X-Session-ID: " + std::string(KVS_SESSION_VALUE_MAX + 1, 'v') + "\r\n"))
            .session.status,
        SessionStatus::Bad);
    EXPECT_EQ(key_of(c, chat("X-Session-ID: " + std::string(KVS_SESSION_VALUE_MAX, 'v') + "\r\n"))
                  .session.status,
              SessionStatus::Key);
    EXPECT_EQ(key_of(c, chat("X-Session-ID: a\r\nX-Session-ID: b\r\n")).session.status,
              SessionStatus::Bad);
    EXPECT_EQ(key_of(c, chat("X-Session-ID: a\r\nX-Session-ID: a\r\n")).session.status,
              SessionStatus::Key);
    // A bad value steers by the prompt.
    const FlightKey bad = key_of(c, chat("X-Session-ID: a\r\nX-Session-ID: b\r\n"));
    SessionLimiter lim;
    std::uint32_t slot = 0;
    EXPECT_EQ(steering_hashes(bad, lim, 4, slot).prefix, bad.hashes.prefix);
    EXPECT_EQ(slot, SessionLimiter::kNone);
    // Heads the locator refuses (a NUL in a value) give no key at all.
    EXPECT_EQ(key_of(c, chat(std::string("X-Session-ID: a\0b\r\n", 20))).session.status,
              SessionStatus::None);
}

TEST(CoreSession, InFlightCapFallsBackToThePrompt) {
    const kvs_config c = with_headers("x-session-id");
    const FlightKey k = key_of(c, chat("X-Session-ID: conv-42\r\n"));
    SessionLimiter lim;
    std::uint32_t slot = SessionLimiter::kNone, first = SessionLimiter::kNone;
    for (int i = 0; i < 3; ++i) {
        const PrefixHashes h = steering_hashes(k, lim, 3, slot);
        ASSERT_NE(slot, SessionLimiter::kNone);
        if (i == 0) first = slot;
        EXPECT_EQ(slot, first);  // one key, one slot
        EXPECT_EQ(h.prefix, k.session.hash);
        EXPECT_EQ(h.n_blocks, 0u);
    }
    EXPECT_EQ(lim.in_flight(k.session.hash), 3u);
    const PrefixHashes over = steering_hashes(k, lim, 3, slot);  // the fourth: over the cap
    EXPECT_EQ(slot, SessionLimiter::kNone);
    EXPECT_EQ(over.prefix, k.hashes.prefix);
    EXPECT_EQ(over.n_blocks, k.hashes.n_blocks);
    lim.release(first);  // one completes: the key steers again
    steering_hashes(k, lim, 3, slot);
    EXPECT_EQ(slot, first);
    for (int i = 0; i < 3; ++i) lim.release(first);
    EXPECT_EQ(lim.in_flight(k.session.hash), 0u);
    lim.release(first);  // a stray release never goes below 0
    lim.release(SessionLimiter::kNone);
    EXPECT_EQ(lim.in_flight(k.session.hash), 0u);
    EXPECT_EQ(lim.acquire(0, 3), SessionLimiter::kNone);
    EXPECT_EQ(lim.acquire(5, 0), SessionLimiter::kNone);
}

TEST(CoreSession, LimiterSlotsAreReusedAndAFullWindowRefuses) {
    SessionLimiter lim;
    const std::uint64_t base = 0x1000 * SessionLimiter::kSlots + 7;  // every key homes on slot 7
    std::vector<std::uint32_t> slots;
    for (std::uint32_t i = 0; i < SessionLimiter::kMaxProbe; ++i) {
        slots.push_back(lim.acquire(base + i * SessionLimiter::kSlots, 1));
        EXPECT_EQ(slots.back(), 7 + i);
    }
    const std::uint64_t extra = base + SessionLimiter::kMaxProbe * SessionLimiter::kSlots;
    EXPECT_EQ(lim.acquire(extra, 1), SessionLimiter::kNone);  // no room to count it
    // A key in the middle of the window completes; its slot takes the new key, and keys placed
    // after it are still found.
    lim.release(slots[3]);
    EXPECT_EQ(lim.acquire(extra, 1), slots[3]);
    EXPECT_EQ(lim.in_flight(extra), 1u);
    const std::uint64_t last = base + (SessionLimiter::kMaxProbe - 1) * SessionLimiter::kSlots;
    EXPECT_EQ(lim.in_flight(last), 1u);
    EXPECT_EQ(lim.acquire(last, 1), SessionLimiter::kNone);  // at its cap of 1
    EXPECT_EQ(lim.acquire(last, 2), slots.back());
    EXPECT_EQ(lim.in_flight(last), 2u);
}

}  // namespace
}  // namespace kvsteer
