// SipHash-2-4 against the reference vectors; SYN-cookie roundtrip, rejection and key rotation.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "kvsteer/cookie.h"

namespace {

// Straightforward byte-wise SipHash-2-4 from the paper, independent of kvs_siphash24_words.
std::uint64_t rotl(std::uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}
std::uint64_t ref_siphash(const std::uint8_t key[16], const std::uint8_t *m, std::size_t n) {
    std::uint64_t k0, k1;
    std::memcpy(&k0, key, 8);
    std::memcpy(&k1, key + 8, 8);
    std::uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    std::uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    auto round = [&] {
        v0 += v1;
        v1 = rotl(v1, 13);
        v1 ^= v0;
        v0 = rotl(v0, 32);
        v2 += v3;
        v3 = rotl(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = rotl(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = rotl(v1, 17);
        v1 ^= v2;
        v2 = rotl(v2, 32);
    };
    std::size_t full = n / 8 * 8;
    for (std::size_t i = 0; i < full; i += 8) {
        std::uint64_t w = 0;
        for (int j = 0; j < 8; j++) w |= std::uint64_t(m[i + j]) << (8 * j);
        v3 ^= w;
        round();
        round();
        v0 ^= w;
    }
    std::uint64_t b = std::uint64_t(n & 0xff) << 56;
    for (std::size_t j = 0; j < n - full; j++) b |= std::uint64_t(m[full + j]) << (8 * j);
    v3 ^= b;
    round();
    round();
    v0 ^= b;
    v2 ^= 0xff;
    round();
    round();
    round();
    round();
    return v0 ^ v1 ^ v2 ^ v3;
}

std::uint8_t kKey[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

TEST(BpfSiphash, ReferenceVectors) {
    std::uint8_t msg[64];
    for (int i = 0; i < 64; i++) msg[i] = static_cast<std::uint8_t>(i);
    // From the SipHash paper / reference implementation (vectors.h).
    EXPECT_EQ(ref_siphash(kKey, msg, 0), 0x726fdb47dd0e0e31ull);
    EXPECT_EQ(ref_siphash(kKey, msg, 15), 0xa129ca6149be45e5ull);
}

TEST(BpfSiphash, WordsEqualsReference) {
    std::uint64_t k0, k1;
    std::memcpy(&k0, kKey, 8);
    std::memcpy(&k1, kKey + 8, 8);
    std::mt19937_64 rng(1);
    for (unsigned n = 0; n <= 6; n++) {
        for (int trial = 0; trial < 50; trial++) {
            __u64 w[6];
            for (auto &x : w) x = rng();
            std::uint8_t bytes[48];
            std::memcpy(bytes, w, sizeof w);  // little-endian host
            EXPECT_EQ(kvs_siphash24_words(k0, k1, w, n), ref_siphash(kKey, bytes, 8 * n)) << n;
        }
    }
}

struct BpfCookie : ::testing::Test {
    __u64 keys[2][2] = {{0x0123456789abcdefull, 0xfedcba9876543210ull}, {0, 0}};
    kvs_cookie_tuple t{};
    std::uint64_t slot = 27000000;
    void SetUp() override {
        t.saddr[0] = 0x0100000a;
        t.daddr[0] = 0x0200000a;
        t.sport = 0x3412;
        t.dport = 0x5000;
    }
    std::uint32_t make(std::uint8_t data, std::uint64_t s, const __u64 *key = nullptr) {
        return kvs_cookie_make(key ? key : keys[0], &t, s, data);
    }
    bool check(std::uint32_t c, std::uint64_t now, kvs_cookie_opts *o) {
        return kvs_cookie_check(&keys[0][0], &t, c, now, o) != 0;
    }
};

TEST_F(BpfCookie, RoundtripCarriesOptions) {
    const std::uint16_t mss_in[] = {0,    300,  536,  1000, 1220, 1300, 1359,
                                    1360, 1400, 1440, 1459, 1460, 9000};
    const std::uint16_t mss_out[] = {536,  536,  536,  536,  1220, 1300, 1300,
                                     1360, 1400, 1440, 1440, 1460, 8960};
    for (std::size_t i = 0; i < sizeof mss_in / sizeof mss_in[0]; i++) {
        for (std::uint8_t ws : {std::uint8_t(0), std::uint8_t(7), std::uint8_t(14),
                                std::uint8_t(15), std::uint8_t(KVS_WSCALE_NONE)}) {
            for (std::uint8_t sack : {0, 1}) {
                std::uint8_t d = kvs_cookie_pack_opts(mss_in[i], ws, sack);
                std::uint32_t c = make(d, slot);
                kvs_cookie_opts o{};
                ASSERT_TRUE(check(c, slot, &o));
                EXPECT_EQ(o.mss, mss_out[i]) << mss_in[i];
                EXPECT_EQ(o.wscale, ws == KVS_WSCALE_NONE ? KVS_WSCALE_NONE : (ws > 14 ? 14 : ws));
                EXPECT_EQ(o.sack_perm, sack);
            }
        }
    }
}

// The SYN-ACK's TSval hides the client's ISN under the cookie's hash: every first-flight
// segment echoes it, so the checker knows where the stream starts whichever segment it sees.
TEST_F(BpfCookie, TimestampEchoGivesTheClientIsn) {
    const std::uint8_t d = kvs_cookie_pack_opts(1460, 7, 1);
    for (std::uint32_t client_isn : {0u, 1u, 0x7fffffffu, 0xfffffff0u, 0xffffffffu}) {
        std::uint32_t cookie = 0, tsval = 0;
        kvs_cookie_sign(keys[0], &t, slot, d, client_isn, &cookie, &tsval);
        EXPECT_EQ(cookie, make(d, slot));  // the cookie itself does not depend on the ISN
        kvs_cookie_opts o{};
        ASSERT_TRUE(check(cookie, slot, &o));
        for (std::uint32_t off : {0u, 1u, 1448u, 14600u}) {
            std::uint32_t isn = 0;
            ASSERT_TRUE(kvs_cookie_client_isn(&o, tsval, client_isn + 1 + off, 65535, &isn)) << off;
            EXPECT_EQ(isn, client_isn);
        }
        // A TSecr that is not ours (a middlebox rewrote it) gives no ISN rather than a wrong one
        // (unless by chance it lands within the window: 1 in 65536).
        std::uint32_t isn = 0;
        EXPECT_FALSE(kvs_cookie_client_isn(&o, tsval + 0x40000000u, client_isn + 1, 65535, &isn));
        // A sequence number before the recovered ISN + 1 is not consistent with it.
        EXPECT_FALSE(kvs_cookie_client_isn(&o, tsval, client_isn, 65535, &isn));
    }
    // Different ISNs, different TSvals (they differ by exactly the ISN difference).
    std::uint32_t c1, t1, c2, t2;
    kvs_cookie_sign(keys[0], &t, slot, d, 1000, &c1, &t1);
    kvs_cookie_sign(keys[0], &t, slot, d, 3000, &c2, &t2);
    EXPECT_EQ(c1, c2);
    EXPECT_EQ(t2 - t1, 2000u);
}

TEST_F(BpfCookie, SlotAgeing) {
    std::uint32_t c = make(kvs_cookie_pack_opts(1460, 7, 1), slot);
    kvs_cookie_opts o{};
    EXPECT_TRUE(check(c, slot, &o));
    EXPECT_TRUE(check(c, slot + 1, &o));   // previous slot still accepted
    EXPECT_FALSE(check(c, slot + 2, &o));  // too old
    EXPECT_FALSE(check(c, slot + 3, &o));
    EXPECT_FALSE(check(c, slot + 4, &o));  // same low bits, different slot: MAC differs
    EXPECT_TRUE(check(c, slot - 1, &o));   // signed by a clock up to a slot ahead: accepted
    EXPECT_FALSE(check(c, slot - 2, &o));  // two ahead: refused
    EXPECT_FALSE(check(c, slot - 3, &o));  // (the tag reads one behind; the MAC differs)
    // At slot 0 nothing is a slot older; a cookie of slot 1 is one ahead.
    EXPECT_FALSE(check(make(kvs_cookie_pack_opts(1460, 7, 1), ~0ull), 0, &o));
    EXPECT_TRUE(check(make(kvs_cookie_pack_opts(1460, 7, 1), 1), 0, &o));
}

TEST_F(BpfCookie, TimeSlots) {
    EXPECT_EQ(kvs_cookie_slot(0, 64), 0u);
    EXPECT_EQ(kvs_cookie_slot(63999999999ull, 64), 0u);
    EXPECT_EQ(kvs_cookie_slot(64000000000ull, 64), 1u);
    EXPECT_EQ(kvs_cookie_slot(64000000000ull, 0), 1u);  // 0 = default period 64 s
    EXPECT_EQ(kvs_cookie_slot(10000000000ull, 5), 2u);
}

TEST_F(BpfCookie, WrongTupleRejected) {
    std::uint32_t c = make(kvs_cookie_pack_opts(1460, 7, 1), slot);
    kvs_cookie_opts o{};
    kvs_cookie_tuple orig = t;
    t.saddr[0] ^= 0x01000000;
    EXPECT_FALSE(check(c, slot, &o));
    t = orig;
    t.daddr[0] ^= 1;
    EXPECT_FALSE(check(c, slot, &o));
    t = orig;
    t.sport ^= 1;
    EXPECT_FALSE(check(c, slot, &o));
    t = orig;
    t.dport ^= 0x100;
    EXPECT_FALSE(check(c, slot, &o));
    t = orig;
    t.saddr[3] = 1;
    EXPECT_FALSE(check(c, slot, &o));
    t = orig;
    EXPECT_TRUE(check(c, slot, &o));
}

TEST_F(BpfCookie, WrongKeyAndRotation) {
    __u64 other[2] = {1, 2};
    std::uint32_t c_old = make(kvs_cookie_pack_opts(1460, 7, 1), slot, other);
    kvs_cookie_opts o{};
    EXPECT_FALSE(check(c_old, slot, &o));  // unknown key
    // Rotation: the key that made the cookie is now the previous one.
    keys[1][0] = other[0];
    keys[1][1] = other[1];
    EXPECT_TRUE(check(c_old, slot, &o));
    EXPECT_EQ(o.mss, 1460);
    // Rotated out entirely.
    keys[1][0] = 99;
    EXPECT_FALSE(check(c_old, slot, &o));
}

TEST_F(BpfCookie, ZeroKeyNeverAccepted) {
    __u64 zero[2] = {0, 0};
    std::uint32_t c = make(kvs_cookie_pack_opts(1460, 7, 1), slot, zero);
    kvs_cookie_opts o{};
    EXPECT_FALSE(check(c, slot, &o));  // keys[1] is all-zero (unset): skipped
}

TEST_F(BpfCookie, BitFlipsAndRandomGuessesRejected) {
    std::uint32_t c = make(kvs_cookie_pack_opts(1460, 7, 1), slot);
    kvs_cookie_opts o{};
    for (int bit = 0; bit < 22; bit++) EXPECT_FALSE(check(c ^ (1u << bit), slot, &o)) << bit;
    std::mt19937 rng(7);
    int accepted = 0;
    for (int i = 0; i < 200000; i++) accepted += check(rng(), slot, &o);
    // 22-bit MAC, 2 of 4 slot tags valid: expected 200000 / 2^23 ~ 0.02.
    EXPECT_LE(accepted, 3);
}

}  // namespace
