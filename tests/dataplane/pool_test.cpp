// The backend connection pool without DPDK: a fake host hands out ports and records what the
// pool sends. Opening legs to the backends that can be chosen, the handshake, drawing, refilling,
// retiring old legs, a backend's idle close, unanswered and refused SYNs, a backend that changed.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "backend_pool.h"
#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

namespace kvsteer::dp {
namespace {

constexpr std::uint16_t kLo = 30000, kHi = 30099;
constexpr std::uint64_t kMaxAge = 2000, kSynTimeout = 300, kRetryAfter = 1000;

struct Sent {
    PoolLeg leg;
    PoolSend s;
};

class FakeHost : public PoolHost {
   public:
    // Ports are unique per backend: each backend's legs take the lowest free ones (so legs to
    // different backends share ports, as the worker's may).
    bool take_port(std::uint16_t backend, std::uint16_t &port) override {
        if (taken.size() >= max_taken) return false;
        for (std::uint16_t p = kLo; p <= kHi; ++p)
            if (taken.insert({backend, p}).second) {
                port = p;
                return true;
            }
        return false;
    }
    void give_port(std::uint16_t backend, std::uint16_t port) override {
        EXPECT_EQ(taken.erase({backend, port}), 1u)
            << "a port given back that was not taken: " << backend << ":" << port;
    }
    void send(const PoolLeg &leg, const PoolSend &s) override { sent.push_back({leg, s}); }
    std::uint32_t clock_ms() override { return 5000; }
    std::uint32_t new_isn() override { return next_isn += 0x01000000u; }
    void inc(unsigned reason) override { stats[reason]++; }

    std::vector<Sent> take_sent() {
        std::vector<Sent> v;
        v.swap(sent);
        return v;
    }
    std::set<std::pair<std::uint16_t, std::uint16_t>> taken;  // (backend, port)
    std::size_t max_taken = ~std::size_t{0};
    std::vector<Sent> sent;
    std::uint32_t next_isn = 0;
    std::uint64_t stats[KVS_STATS_MAX]{};
};

// A backend segment's key to a leg (backend -> SNAT, as it arrives).
kvs_flow_key key_of(const PoolLeg &l) {
    kvs_flow_key k{};
    std::memcpy(k.saddr, l.addr, 16);
    k.sport = l.bport;
    k.dport = kvs_htons(l.port);
    k.family = l.family;
    k.proto = KVS_IPPROTO_TCP;
    return k;
}

class PoolTest : public ::testing::Test {
   protected:
    PoolTest() : backends_(KVS_MAX_BACKENDS) {
        use_backends(3);
        config_.snat_family = KVS_AF_INET;  // an IPv4 SNAT address only
        config_.snat_addr[0] = 0x0a0000feu;
        t_.config = &config_;
        t_.backends = backends_.data();
        cfg_.per_backend = 2;
        cfg_.max_age = kMaxAge;
        cfg_.syn_timeout = kSynTimeout;
        cfg_.syn_retries = 1;
        cfg_.retry_after = kRetryAfter;
    }

    // Backends 0..n-1 up (IPv4 10.0.0.i, port 0x5000 in network order), n in the table.
    void use_backends(std::uint32_t n) {
        for (std::uint32_t i = 0; i < n; ++i) {
            backends_[i].state = KVS_BE_UP;
            backends_[i].family = KVS_AF_INET;
            backends_[i].addr[0] = 0x0a000000u + i;
            backends_[i].port = 0x5000;
        }
        config_.n_backends = n;
    }

    // The backend answers every SYN in `sent` with a SYN-ACK.
    void answer_all(BackendPool &pool, const std::vector<Sent> &sent, std::uint64_t now) {
        for (const Sent &x : sent) {
            if (x.s.kind != PoolSend::Kind::Syn) continue;
            BackendSeg b;
            b.flags = KVS_TCP_SYN | KVS_TCP_ACK;
            b.seq = 0x700 + x.leg.port;
            b.ack = x.s.seq + 1;
            b.has_ts = true;
            b.tsval = 99;
            b.wscale = 9;
            pool.segment(key_of(x.leg), b, now, host_);
        }
    }

    // Opens the pool's legs at `now` and answers them: the SYNs sent (their ACKs drained).
    std::vector<Sent> open_ready(BackendPool &pool, std::uint64_t now) {
        pool.upkeep(t_, now, host_);
        std::vector<Sent> syns = host_.take_sent();
        answer_all(pool, syns, now + 1);
        host_.take_sent();
        return syns;
    }

    // How many resets and SYNs the pool sent.
    static std::pair<unsigned, unsigned> resets_and_syns(const std::vector<Sent> &v) {
        unsigned rst = 0, syn = 0;
        for (const Sent &x : v) {
            rst += x.s.kind == PoolSend::Kind::Rst;
            syn += x.s.kind == PoolSend::Kind::Syn;
        }
        return {rst, syn};
    }

    BackendSeg seg(std::uint8_t flags, std::uint32_t ack = 0) {
        BackendSeg b;
        b.flags = flags;
        b.ack = ack;
        return b;
    }

    kvs_config config_{};
    std::vector<kvs_backend> backends_;
    Tables t_;
    PoolConfig cfg_;
    FakeHost host_;
};

TEST_F(PoolTest, OpensLegsToChoosableBackendsAndDrawsReadyOnes) {
    backends_[2].state = KVS_BE_DOWN;  // not chosen: no legs
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    std::vector<Sent> syns = host_.take_sent();
    ASSERT_EQ(syns.size(), 4u) << "2 legs to each of the 2 backends that are up";
    for (const Sent &x : syns) {
        EXPECT_EQ(x.s.kind, PoolSend::Kind::Syn);
        EXPECT_LT(x.leg.backend, 2);
        EXPECT_EQ(x.s.mss, 1460);
        EXPECT_EQ(x.s.wscale, 7);
        EXPECT_TRUE(x.s.ts);
        EXPECT_EQ(x.s.tsval, 5000u) << "the leg's timestamps run on our clock";
        EXPECT_TRUE(pool.owns(key_of(x.leg)));
    }
    std::set<std::uint16_t> distinct;
    for (const Sent &x : syns) distinct.insert(x.leg.port);
    EXPECT_EQ(distinct.size(), 2u) << "ports are unique per backend: both backends' legs share two";
    EXPECT_EQ(pool.open(), 4u);
    EXPECT_EQ(pool.ready(0), 0u);
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 0, 1460, 10, leg)) << "none ready before the SYN-ACK";

    answer_all(pool, syns, 20);
    const std::vector<Sent> acks = host_.take_sent();
    ASSERT_EQ(acks.size(), 4u);
    for (const Sent &x : acks) {
        EXPECT_EQ(x.s.kind, PoolSend::Kind::Ack);
        EXPECT_EQ(x.s.ack, 0x700u + x.leg.port + 1);
        EXPECT_EQ(x.s.tsecr, 99u);
    }
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_OPENED], 4u);
    EXPECT_EQ(pool.ready(0), 2u);

    ASSERT_TRUE(pool.draw(t_, 1, 1460, 30, leg));
    EXPECT_EQ(leg.backend, 1);
    EXPECT_EQ(leg.backend_isn, 0x700u + leg.port);
    EXPECT_EQ(leg.backend_wscale, 9);
    EXPECT_TRUE(leg.ts);
    EXPECT_FALSE(pool.owns(key_of(leg))) << "the port went with the leg";
    EXPECT_TRUE(host_.taken.count({leg.backend, leg.port}))
        << "and is still taken: the flow has it";
    ASSERT_TRUE(pool.draw(t_, 1, 1460, 30, leg));
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 30, leg)) << "backend 1 has no third leg";
    EXPECT_FALSE(pool.draw(t_, 2, 1460, 30, leg)) << "a backend that is down has none";

    pool.upkeep(t_, 40, host_);  // refills backend 1
    const std::vector<Sent> refill = host_.take_sent();
    ASSERT_EQ(refill.size(), 2u);
    for (const Sent &x : refill) EXPECT_EQ(x.leg.backend, 1);
}

TEST_F(PoolTest, LegsFollowTheDemandBetweenTheBounds) {
    cfg_.per_backend = 3;
    cfg_.min_per_backend = 0;
    BackendPool pool(cfg_);
    pool.upkeep(t_, 1, host_);
    EXPECT_TRUE(host_.take_sent().empty()) << "nobody asked: no legs";
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 2, leg)) << "the first flow to backend 1 finds none";
    EXPECT_EQ(pool.target(1), 1u);
    EXPECT_EQ(pool.target(0), 0u);
    std::vector<Sent> syns = open_ready(pool, 3);
    ASSERT_EQ(syns.size(), 1u) << "one leg for the one flow that asked";
    EXPECT_EQ(syns[0].leg.backend, 1);
    ASSERT_TRUE(pool.draw(t_, 1, 1460, 10, leg));
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 10, leg));
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 10, leg));
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 10, leg));
    EXPECT_EQ(pool.target(1), 3u) << "four asked this period; three at most";
    syns = open_ready(pool, 11);
    EXPECT_EQ(syns.size(), 3u);
    EXPECT_EQ(pool.ready(1), 3u);
    EXPECT_EQ(pool.open(), 3u) << "the other backends still have none";

    // A period with no demand: the last period's still counts, so old legs are replaced.
    pool.upkeep(t_, kMaxAge + 12, host_);  // ready since 12
    std::vector<Sent> v = host_.take_sent();
    auto [rst, syn] = resets_and_syns(v);
    EXPECT_EQ(rst, 3u) << "retired at their max age";
    EXPECT_EQ(syn, 3u) << "and replaced: backend 1 was asked for legs in the last period";
    EXPECT_EQ(pool.target(1), 3u);
    answer_all(pool, v, kMaxAge + 12);
    host_.take_sent();

    // A second period with no demand: retired and not replaced.
    pool.upkeep(t_, 2 * kMaxAge + 12, host_);
    std::tie(rst, syn) = resets_and_syns(host_.take_sent());
    EXPECT_EQ(pool.target(1), 0u);
    EXPECT_EQ(rst, 3u);
    EXPECT_EQ(syn, 0u) << "two quiet periods: an idle backend costs no connections";
    EXPECT_EQ(pool.open(), 0u);
    EXPECT_EQ(host_.taken.size(), 1u) << "every port back but the drawn leg's (its flow has it)";
}

TEST_F(PoolTest, AFloorKeepsLegsWithoutDemand) {
    cfg_.per_backend = 3;
    cfg_.min_per_backend = 1;
    BackendPool pool(cfg_);
    std::vector<Sent> syns = open_ready(pool, 1);
    ASSERT_EQ(syns.size(), 3u) << "one leg to each of the 3 backends, nobody asked";
    PoolLeg leg;
    ASSERT_TRUE(pool.draw(t_, 0, 1460, 5, leg));
    ASSERT_FALSE(pool.draw(t_, 0, 1460, 5, leg));
    syns = open_ready(pool, 6);
    EXPECT_EQ(syns.size(), 2u) << "backend 0 asked twice: two legs";
    EXPECT_EQ(pool.ready(0), 2u);
    EXPECT_EQ(pool.ready(1), 1u);
}

TEST_F(PoolTest, HoldsNoMorePortsThanItsShare) {
    cfg_.max_ports = 3;  // 2 legs to each of 3 backends would hold 6
    BackendPool pool(cfg_);
    std::vector<Sent> syns = open_ready(pool, 1);
    EXPECT_EQ(syns.size(), 3u);
    EXPECT_EQ(pool.open(), 3u);
    EXPECT_EQ(host_.taken.size(), 3u);
    PoolLeg leg;
    ASSERT_TRUE(pool.draw(t_, syns[0].leg.backend, 1460, 5, leg));
    EXPECT_EQ(pool.open(), 2u) << "a drawn leg's port is the flow's, not the pool's";
    syns = open_ready(pool, 6);
    EXPECT_EQ(syns.size(), 1u) << "one more, back to the share";
    EXPECT_EQ(pool.open(), 3u);
    EXPECT_EQ(host_.taken.size(), 4u) << "3 legs' ports and the drawn one";
}

TEST_F(PoolTest, FitsOnlyClientsWithThePoolsOptions) {
    BackendPool pool(cfg_);
    EXPECT_TRUE(pool.fits(KVS_AF_INET, 1460, 7, true, true));
    EXPECT_TRUE(pool.fits(KVS_AF_INET, 8960, 0, true, true));
    EXPECT_FALSE(pool.fits(KVS_AF_INET, 1440, 7, true, true)) << "the backend could send 1460";
    EXPECT_TRUE(pool.fits(KVS_AF_INET6, 1440, 7, true, true));
    EXPECT_FALSE(pool.fits(KVS_AF_INET, 1460, KVS_WSCALE_NONE, true, true));
    EXPECT_FALSE(pool.fits(KVS_AF_INET, 1460, 7, false, true));
    EXPECT_FALSE(pool.fits(KVS_AF_INET, 1460, 7, true, false));
}

TEST_F(PoolTest, OldLegsAreResetAndReplaced) {
    BackendPool pool(cfg_);
    open_ready(pool, 9);  // ready at 10
    pool.upkeep(t_, 10 + kMaxAge - 1, host_);
    EXPECT_TRUE(host_.take_sent().empty()) << "young enough";
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 0, 1460, 10 + kMaxAge, leg)) << "too old to draw";
    pool.upkeep(t_, 10 + kMaxAge, host_);
    const std::vector<Sent> v = host_.take_sent();
    unsigned rst = 0, syn = 0;
    for (const Sent &x : v) {
        if (x.s.kind == PoolSend::Kind::Rst) {
            ++rst;
            EXPECT_EQ(x.s.seq, x.leg.isn + 1) << "reset at the leg's next sequence";
        }
        syn += x.s.kind == PoolSend::Kind::Syn;
    }
    EXPECT_EQ(rst, 6u);
    EXPECT_EQ(syn, 6u);
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_RETIRED], 6u);
    EXPECT_EQ(host_.taken.size(), 6u) << "old ports back, new ones taken";
}

TEST_F(PoolTest, BackendClosingAnIdleLegGetsAResetAndTheLegIsReplaced) {
    cfg_.per_backend = 1;
    config_.n_backends = 1;
    BackendPool pool(cfg_);
    std::vector<Sent> syns = open_ready(pool, 0);
    ASSERT_EQ(syns.size(), 1u);
    const kvs_flow_key first = key_of(syns[0].leg);

    BackendSeg fin = seg(KVS_TCP_FIN | KVS_TCP_ACK, syns[0].s.seq + 1);
    pool.segment(first, fin, 50, host_);
    std::vector<Sent> v = host_.take_sent();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].s.kind, PoolSend::Kind::Rst) << "never half-closed";
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_CLOSED_BY_BACKEND], 1u);
    EXPECT_FALSE(pool.owns(first));
    EXPECT_TRUE(host_.taken.empty());

    syns = open_ready(pool, 51);  // replaced at once
    ASSERT_EQ(syns.size(), 1u);
    pool.segment(key_of(syns[0].leg), seg(KVS_TCP_RST), 60, host_);  // a reset: nothing to answer
    EXPECT_TRUE(host_.take_sent().empty());
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_CLOSED_BY_BACKEND], 2u);
    EXPECT_TRUE(host_.taken.empty());

    // Anything else on a ready leg is counted and dropped.
    syns = open_ready(pool, 61);
    ASSERT_EQ(syns.size(), 1u);
    pool.segment(key_of(syns[0].leg), seg(KVS_TCP_ACK), 63, host_);
    EXPECT_EQ(host_.stats[KVS_R_PUNT_BACKEND_OTHER], 1u);
    EXPECT_EQ(pool.ready(0), 1u);
}

TEST_F(PoolTest, UnansweredAndRefusedSynsWaitBeforeTheNextTry) {
    cfg_.per_backend = 1;
    config_.n_backends = 2;
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    std::vector<Sent> syns = host_.take_sent();
    ASSERT_EQ(syns.size(), 2u);
    // Backend 1 refuses.
    const Sent &to1 = syns[0].leg.backend == 1 ? syns[0] : syns[1];
    pool.segment(key_of(to1.leg), seg(KVS_TCP_RST | KVS_TCP_ACK, to1.s.seq + 1), 5, host_);
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_OPEN_FAILED], 1u);
    EXPECT_TRUE(host_.take_sent().empty()) << "a refused SYN needs no reset";
    // Backend 0 never answers: one retry, then the open fails and is reset.
    pool.upkeep(t_, kSynTimeout, host_);
    std::vector<Sent> v = host_.take_sent();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].s.kind, PoolSend::Kind::Syn);
    EXPECT_EQ(v[0].leg.backend, 0);
    pool.upkeep(t_, 2 * kSynTimeout, host_);
    v = host_.take_sent();
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].s.kind, PoolSend::Kind::Rst);
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_OPEN_FAILED], 2u);
    EXPECT_TRUE(host_.taken.empty());
    // Neither is tried again before retry_after.
    pool.upkeep(t_, 5 + kRetryAfter - 1, host_);
    EXPECT_TRUE(host_.take_sent().empty());
    pool.upkeep(t_, 2 * kSynTimeout + kRetryAfter, host_);
    EXPECT_EQ(host_.take_sent().size(), 2u);
}

TEST_F(PoolTest, AChallengeAckResetsTheOldConnectionAndResendsTheSyn) {
    cfg_.per_backend = 1;
    cfg_.syn_retries = 3;
    config_.n_backends = 1;
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    const std::vector<Sent> syns = host_.take_sent();
    ASSERT_EQ(syns.size(), 1u);
    pool.segment(key_of(syns[0].leg), seg(KVS_TCP_ACK, 0xabcd), 1, host_);
    const std::vector<Sent> v = host_.take_sent();
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0].s.kind, PoolSend::Kind::Rst);
    EXPECT_EQ(v[0].s.seq, 0xabcdu);
    EXPECT_EQ(v[1].s.kind, PoolSend::Kind::Syn);
    EXPECT_EQ(host_.stats[KVS_R_DP_CHALLENGE_ACK], 1u);
    // A backend (or a forger) answering every SYN so: the SYN goes again as often as a
    // timed-out one does (syn_retries), then the open fails and waits retry_after; it never
    // loops at the answers' pace.
    unsigned again = 0;
    for (int i = 0; i < 300; ++i) {
        pool.segment(key_of(syns[0].leg), seg(KVS_TCP_ACK, 0xabcd), 1, host_);
        for (const Sent &x : host_.take_sent()) again += x.s.kind == PoolSend::Kind::Syn;
    }
    EXPECT_EQ(again, cfg_.syn_retries - 1) << "the first answer's SYN was a try again already";
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_OPEN_FAILED], 1u);
    EXPECT_EQ(host_.stats[KVS_R_DP_CHALLENGE_ACK], 1u + cfg_.syn_retries)
        << "answers for a leg no longer opening are not the pool's";
    EXPECT_TRUE(host_.taken.empty()) << "its port given back";
    pool.upkeep(t_, 2, host_);
    EXPECT_TRUE(host_.take_sent().empty()) << "not before retry_after";
}

TEST_F(PoolTest, ABackendThatChangedOrWentAwayLosesItsLegs) {
    BackendPool pool(cfg_);
    open_ready(pool, 0);
    backends_[0].addr[0] = 0x0b000001u;  // backend 0 moved
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 0, 1460, 2, leg)) << "never a leg to the old address";
    config_.n_backends = 1;  // backend 1 and 2 are gone
    pool.upkeep(t_, 3, host_);
    std::vector<Sent> v = host_.take_sent();
    unsigned rst = 0, syn = 0;
    for (const Sent &x : v) {
        rst += x.s.kind == PoolSend::Kind::Rst;
        if (x.s.kind == PoolSend::Kind::Syn) {
            ++syn;
            EXPECT_EQ(x.leg.backend, 0);
            EXPECT_EQ(x.leg.addr[0], 0x0b000001u);
        }
    }
    EXPECT_EQ(rst, 6u) << "backend 0's two old legs and the gone backends' four";
    EXPECT_EQ(syn, 2u);
    EXPECT_EQ(pool.open(), 2u);
}

TEST_F(PoolTest, OpensArePacedAndBoundedByPortsAndCloseAllResetsEverything) {
    cfg_.per_backend = 4;
    cfg_.opens_per_tick = 5;
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    EXPECT_EQ(host_.take_sent().size(), 5u);
    host_.max_taken = 8;  // only 8 ports in all
    pool.upkeep(t_, 1, host_);
    pool.upkeep(t_, 2, host_);
    EXPECT_EQ(host_.take_sent().size(), 3u);
    EXPECT_EQ(pool.open(), 8u);
    pool.close_all(host_);
    const std::vector<Sent> v = host_.take_sent();
    EXPECT_EQ(v.size(), 8u);
    for (const Sent &x : v) EXPECT_EQ(x.s.kind, PoolSend::Kind::Rst);
    EXPECT_TRUE(host_.taken.empty());
    EXPECT_EQ(pool.open(), 0u);
}

TEST_F(PoolTest, NoSnatAddressOfTheBackendsFamilyNoLegs) {
    backends_[0].family = KVS_AF_INET6;
    config_.n_backends = 1;
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    EXPECT_TRUE(host_.take_sent().empty());
}

// A leg a request moved off, as the worker parks it: at a quiescent point of its connection.
PoolLeg parked_leg(const kvs_backend &b, std::uint16_t backend, std::uint16_t port) {
    PoolLeg l;
    l.backend = backend;
    l.port = port;
    std::memcpy(l.addr, b.addr, 16);
    l.bport = b.port;
    l.family = b.family;
    l.backend_wscale = 9;
    l.wscale = 8;  // the client's that opened it, not the pool's
    l.mss = 1400;
    l.ts = true;
    l.isn = 0x11110000u;  // our next byte on it is 0x11110001
    l.backend_isn = 0x22220000u;
    l.backend_tsval = 777;
    l.ts_floor = 6000;
    return l;
}

TEST_F(PoolTest, AParkedLegIsDrawnAsItWasParked) {
    cfg_.open_per_backend = 0;  // --backend-reuse without a pool: keeps parked legs, opens none
    BackendPool pool(cfg_);
    pool.upkeep(t_, 0, host_);
    EXPECT_TRUE(host_.take_sent().empty()) << "a pool that only keeps parked legs opens none";
    host_.taken.insert({1, 30050});  // the worker reclaimed the flow's port for the pool
    const PoolLeg in = parked_leg(backends_[1], 1, 30050);
    ASSERT_TRUE(pool.park(t_, in, 10));
    EXPECT_TRUE(pool.owns(key_of(in))) << "the backend's segments to it reach the pool";
    EXPECT_EQ(pool.ready(1), 1u);
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 0, 1460, 20, leg)) << "another backend's";
    EXPECT_FALSE(pool.draw(t_, 1, 1380, 20, leg)) << "a client whose MSS is below the leg's";
    ASSERT_TRUE(pool.draw(t_, 1, 1400, 20, leg));
    EXPECT_TRUE(leg.reused);
    EXPECT_EQ(leg.port, 30050);
    EXPECT_EQ(leg.isn, in.isn);
    EXPECT_EQ(leg.backend_isn, in.backend_isn);
    EXPECT_EQ(leg.backend_tsval, 777u);
    EXPECT_EQ(leg.ts_floor, 6000u);
    EXPECT_EQ(leg.wscale, 8) << "the window scale its own SYN offered";
    EXPECT_EQ(leg.backend_wscale, 9);
    EXPECT_FALSE(pool.owns(key_of(in))) << "drawn: the port went with it";
    EXPECT_FALSE(pool.draw(t_, 1, 1460, 20, leg));
    EXPECT_EQ(pool.open(), 0u) << "the port went with the drawn leg";
    host_.taken.erase({1, 30050});  // the drawing flow's now
}

// Bytes a kept leg's backend sends unasked would be read by the next request as its response:
// the leg is reset and given up instead.
TEST_F(PoolTest, AParkedLegThatReceivesNewBytesIsReset) {
    cfg_.open_per_backend = 0;
    BackendPool pool(cfg_);
    host_.taken.insert({0, 30001});
    const PoolLeg in = parked_leg(backends_[0], 0, 30001);
    ASSERT_TRUE(pool.park(t_, in, 10));
    BackendSeg late = seg(KVS_TCP_ACK | KVS_TCP_PSH, in.isn + 1);
    late.seq = in.backend_isn + 1;  // the byte it owes next, and more
    late.len = 120;
    pool.segment(key_of(in), late, 20, host_);
    const std::vector<Sent> sent = host_.take_sent();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].s.kind, PoolSend::Kind::Rst);
    EXPECT_EQ(pool.open(), 0u);
    EXPECT_TRUE(host_.taken.empty());
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_CLOSED_BY_BACKEND], 1u);
    PoolLeg leg;
    EXPECT_FALSE(pool.draw(t_, 0, 1460, 30, leg));
}

TEST_F(PoolTest, AParkedLegAgesOutOrClosesWithAResetInItsWindow) {
    cfg_.open_per_backend = 0;
    BackendPool pool(cfg_);
    host_.taken.insert({0, 30001});
    host_.taken.insert({1, 30002});
    const PoolLeg a = parked_leg(backends_[0], 0, 30001), b = parked_leg(backends_[1], 1, 30002);
    ASSERT_TRUE(pool.park(t_, a, 10));
    ASSERT_TRUE(pool.park(t_, b, 10 + kMaxAge / 2));
    pool.upkeep(t_, 10 + kMaxAge, host_);  // a is max_age old, b is not
    std::vector<Sent> sent = host_.take_sent();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].s.kind, PoolSend::Kind::Rst);
    EXPECT_EQ(sent[0].leg.backend, 0);
    EXPECT_EQ(sent[0].s.seq, a.isn + 1) << "the reset is at our next byte: in the backend's window";
    EXPECT_EQ(host_.taken.count({0, 30001}), 0u) << "its port given back";
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_RETIRED], 1u);
    // The backend closes b while it waits (an idle close): a reset back, the port given back.
    BackendSeg fin = seg(KVS_TCP_FIN | KVS_TCP_ACK, b.isn + 1);
    pool.segment(key_of(b), fin, 10 + kMaxAge, host_);
    sent = host_.take_sent();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].s.kind, PoolSend::Kind::Rst);
    EXPECT_EQ(sent[0].s.seq, b.isn + 1);
    EXPECT_TRUE(host_.taken.empty());
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_CLOSED_BY_BACKEND], 1u);
    EXPECT_EQ(pool.open(), 0u);
}

// A large table, reuse only: the upkeep passes over backends with no leg and nothing to open,
// and still reaches every backend that has one, wherever it is (a leg drawn and one parked again
// on the same backend are counted right).
TEST_F(PoolTest, UpkeepOfALargeTableReachesEveryBackendWithALeg) {
    cfg_.open_per_backend = 0;
    use_backends(1000);
    BackendPool pool(cfg_);
    for (std::uint16_t b : {2, 500, 999}) host_.taken.insert({b, 30001});
    host_.taken.insert({999, 30002});
    ASSERT_TRUE(pool.park(t_, parked_leg(backends_[2], 2, 30001), 10));
    ASSERT_TRUE(pool.park(t_, parked_leg(backends_[500], 500, 30001), 10));
    ASSERT_TRUE(pool.park(t_, parked_leg(backends_[999], 999, 30001), 10));
    PoolLeg got;
    ASSERT_TRUE(pool.draw(t_, 999, 1460, 20, got));
    EXPECT_EQ(got.port, 30001);
    host_.taken.erase({999, 30001});  // the drawn leg's port is the flow's now
    ASSERT_TRUE(pool.park(t_, parked_leg(backends_[999], 999, 30002), 30));
    EXPECT_EQ(pool.open(), 3u);
    pool.upkeep(t_, 10 + kMaxAge / 2, host_);
    EXPECT_TRUE(host_.take_sent().empty()) << "nothing old yet, nothing opened";
    pool.upkeep(t_, 30 + kMaxAge, host_);
    std::vector<Sent> sent = host_.take_sent();
    ASSERT_EQ(sent.size(), 3u) << "every kept leg aged out, wherever its backend is";
    std::set<std::uint16_t> where;
    for (const Sent &x : sent) {
        EXPECT_EQ(x.s.kind, PoolSend::Kind::Rst);
        where.insert(x.leg.backend);
    }
    EXPECT_EQ(where, (std::set<std::uint16_t>{2, 500, 999}));
    EXPECT_EQ(host_.stats[KVS_R_DP_POOL_RETIRED], 3u);
    EXPECT_EQ(pool.open(), 0u);
    EXPECT_TRUE(host_.taken.empty());
}

// The ACK that parked a leg was lost: the backend resends its last bytes (or probes the idle
// connection); the pool acknowledges them again in the leg's spaces, timestamps never back.
TEST_F(PoolTest, AParkedLegAcknowledgesARetransmissionAgain) {
    cfg_.open_per_backend = 0;
    BackendPool pool(cfg_);
    host_.taken.insert({0, 30001});
    const PoolLeg in = parked_leg(backends_[0], 0, 30001);  // ts_floor 6000, ahead of the clock
    ASSERT_TRUE(pool.park(t_, in, 10));
    BackendSeg again = seg(KVS_TCP_ACK | KVS_TCP_PSH, in.isn + 1);
    again.seq = in.backend_isn - 99;  // its last 100 bytes, again
    again.len = 100;
    again.has_ts = true;
    again.tsval = 800;
    pool.segment(key_of(in), again, 20, host_);
    std::vector<Sent> sent = host_.take_sent();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].s.kind, PoolSend::Kind::Ack);
    EXPECT_EQ(sent[0].s.seq, in.isn + 1);
    EXPECT_EQ(sent[0].s.ack, in.backend_isn + 1);
    EXPECT_TRUE(sent[0].s.ts);
    EXPECT_EQ(sent[0].s.tsval, 6000u) << "the leg's newest TSval, our clock (5000) being behind";
    EXPECT_EQ(sent[0].s.tsecr, 800u);
    EXPECT_EQ(pool.ready(0), 1u) << "still kept";
    BackendSeg ahead = seg(KVS_TCP_ACK, in.isn + 1);
    ahead.seq = in.backend_isn + 1;  // nothing owed: not answered
    pool.segment(key_of(in), ahead, 30, host_);
    EXPECT_TRUE(host_.take_sent().empty());
    pool.close_all(host_);
}

TEST_F(PoolTest, ParkingIsRefusedWhenTheBackendHasNoPlaceOrCannotBeChosen) {
    cfg_.open_per_backend = 0;
    cfg_.per_backend = 2;
    BackendPool pool(cfg_);
    for (std::uint16_t p = 30000; p < 30003; ++p) host_.taken.insert({0, p});
    EXPECT_TRUE(pool.park(t_, parked_leg(backends_[0], 0, 30000), 1));
    EXPECT_TRUE(pool.park(t_, parked_leg(backends_[0], 0, 30001), 1));
    EXPECT_FALSE(pool.park(t_, parked_leg(backends_[0], 0, 30002), 1)) << "two places a backend";
    backends_[1].state = KVS_BE_DOWN;
    host_.taken.insert({1, 30000});
    EXPECT_FALSE(pool.park(t_, parked_leg(backends_[1], 1, 30000), 1)) << "not up: not kept";
    PoolLeg moved = parked_leg(backends_[2], 2, 30000);
    moved.addr[0] ^= 1;  // the backend's address changed since the leg was opened
    EXPECT_FALSE(pool.park(t_, moved, 1));
    EXPECT_EQ(pool.open(), 2u);
    // A pool that opens its own legs counts parked ones against what it opens: it opens fewer.
    PoolConfig opening = cfg_;
    opening.open_per_backend = 2;
    BackendPool mixed(opening);
    FakeHost h2;
    h2.taken.insert({2, 30010});
    ASSERT_TRUE(mixed.park(t_, parked_leg(backends_[2], 2, 30010), 0));
    mixed.upkeep(t_, 0, h2);
    unsigned to2 = 0;
    for (const Sent &x : h2.take_sent()) to2 += x.leg.backend == 2;
    EXPECT_EQ(to2, 1u) << "backend 2 had one of its two places taken by the parked leg";
    mixed.close_all(h2);
}

}  // namespace
}  // namespace kvsteer::dp
