// The binding state machine without DPDK: events in, actions out. Segment handling (duplicates,
// reordering, stale retransmissions), readiness, backend SYN retries and timeouts, backend
// resets and challenge ACKs, the next candidate, install success and failure, the client's
// reset, the idle timeout.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "binder.h"
#include "kvsteer/core/flight_key.h"
#include "kvsteer/core/maglev.h"
#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

namespace kvsteer::dp {
namespace {

using Kind = Action::Kind;
using Phase = Binder::Phase;

const std::string kBody = R"({"model":"m","prompt":"tell me a story about a cat","max_tokens":8})";
const std::string kReq =
    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(kBody.size()) +
    "\r\n\r\n" + kBody;
// A head that never completes (no blank line): the slowloris shape.
const std::string kPartialHead = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-A: ";

constexpr std::uint32_t kIsn = 0x10000000u, kCookie = 0xc0c0c0c0u, kBackendIsn = 0x5000u;
constexpr std::uint32_t kTsOurs = 777, kTsClient = 5000, kClockMs = 100000;
constexpr std::uint64_t kGap = 100, kSynTimeout = 1000, kIdle = 50000, kUnsure = 1500;

class BinderTest : public ::testing::Test {
   protected:
    BinderTest() : backends_(KVS_MAX_BACKENDS), load_(KVS_MAX_BACKENDS), buf_(64 * 1024) {
        cfg_.gap = kGap;
        cfg_.syn_timeout = kSynTimeout;
        cfg_.client_idle = kIdle;
        cfg_.unsure_wait = kUnsure;
        cfg_.max_held = 14600;
        cfg_.syn_retries = 2;
        cfg_.max_candidates = 3;
        config_.steer_mode = KVS_STEER_PREFIX;
        config_.prefix_len = 16;
        config_.block_size = 64;
        config_.max_blocks = 1;
        config_.load_factor_milli = 1250;
        config_.max_held_bytes = 14600;
        config_.hash_seed = 42;
        std::vector<MaglevBackend> mb;
        for (std::uint32_t i = 0; i < 4; ++i) {
            backends_[i].state = KVS_BE_UP;
            backends_[i].weight = 1;
            backends_[i].family = KVS_AF_INET;
            mb.push_back({i, 1000 + i, 1});
        }
        config_.n_backends = 4;
        maglev_ = build_maglev(mb);
        maglev_.resize(2 * KVS_MAGLEV_SIZE, KVS_BACKEND_NONE);
        affinity_.resize(2 * KVS_AFFINITY_SLOTS);
        t_.config = &config_;
        t_.backends = backends_.data();
        t_.load = load_.data();
        t_.maglev = maglev_.data();
        t_.affinity = affinity_.data();
    }

    BindEnv env() {
        BindEnv e{cfg_, t_, scratch_, stats_, std::span<std::uint8_t>(buf_), kClockMs, sessions_};
        e.pool = pool_;
        return e;
    }

    // The client's handshake: its ISN from the timestamp echo (known for sure) unless told
    // otherwise.
    static ClientHello hello(bool isn_known = true) {
        ClientHello h;
        h.isn = kIsn;
        h.isn_known = isn_known;
        h.cookie_isn = kCookie;
        h.mss = 1460;
        h.wscale = 7;
        h.sack = 1;
        h.ts = 1;
        h.ts_ours = kTsOurs;
        h.tsval = kTsClient;
        h.window = 502;
        h.tuple_hash = 0x1234;
        return h;
    }
    void start(bool isn_known = true, std::uint64_t now = 0) {
        b_.start(env(), hello(isn_known), now);
    }

    // Bytes [off, off+len) of `data` as a client segment (payload pointers stay valid: the
    // strings are static).
    static ClientSeg client(const std::string &data, std::uint32_t off, std::uint32_t len,
                            bool fin = false) {
        ClientSeg c;
        c.pkt = reinterpret_cast<void *>(static_cast<std::uintptr_t>(off + 1));  // its offset
        c.data = reinterpret_cast<const std::uint8_t *>(data.data()) + off;
        c.seq = kIsn + 1 + off;
        c.len = static_cast<std::uint16_t>(len);
        c.window = 502;
        c.fin = fin;
        c.has_ts = true;
        c.tsval = kTsClient + 1;
        c.tsecr = kTsOurs;
        return c;
    }
    FirstFlight::Add seg(const std::string &data, std::uint32_t off, std::uint32_t len,
                         std::uint64_t now, Actions &out, bool fin = false) {
        return b_.segment(env(), client(data, off, len, fin), true, now, out);
    }

    // Holding -> Connect -> connect(): the first SYN.
    Actions bind_whole_request(std::uint64_t now = 10) {
        Actions out;
        EXPECT_EQ(seg(kReq, 0, static_cast<std::uint32_t>(kReq.size()), now, out),
                  FirstFlight::Add::Held);
        EXPECT_EQ(kinds(out), std::vector<Kind>{Kind::Connect}) << "a whole request binds at once";
        EXPECT_EQ(b_.phase(), Phase::SynSent);
        Actions syn;
        b_.connect(env(), now, syn);
        return syn;
    }

    BackendSeg from_backend(std::uint8_t flags, std::uint32_t ack) const {
        BackendSeg s;
        s.flags = flags;
        s.seq = kBackendIsn;
        s.ack = ack;
        s.has_ts = true;
        s.tsval = 424242;
        s.wscale = 9;
        return s;
    }

    static std::vector<Kind> kinds(const Actions &a) {
        std::vector<Kind> v;
        for (const Action &x : a) v.push_back(x.kind);
        return v;
    }
    std::uint64_t stat(unsigned r) const { return stats_[r]; }

    BinderConfig cfg_;
    kvs_config config_{};
    std::vector<kvs_backend> backends_;
    std::vector<kvs_backend_load> load_;
    std::vector<std::uint32_t> maglev_;
    std::vector<kvs_affinity_entry> affinity_;
    Tables t_;
    ChooseScratch scratch_;
    SessionLimiter *sessions_ = nullptr;  // session affinity off unless a test sets it
    bool pool_ = false;                   // the worker keeps a backend pool
    std::uint64_t stats_[KVS_STATS_MAX]{};
    std::vector<std::uint8_t> buf_;
    Binder b_;
};

TEST_F(BinderTest, WholeRequestBindsInstallsAcksAndFlushes) {
    start();
    const Actions syn = bind_whole_request();
    ASSERT_EQ(kinds(syn), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    EXPECT_EQ(syn[0].seq, kIsn) << "the backend leg keeps the client's sequence space";
    EXPECT_EQ(syn[0].tsval, kClockMs) << "backend-leg timestamps run on our clock";
    EXPECT_EQ(syn[1].when, 10 + kSynTimeout);
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_PROMPT), 1u);
    const std::uint16_t chosen = b_.backend();
    ASSERT_LT(chosen, 4);

    Actions inst;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 20, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    EXPECT_EQ(b_.backend_isn(), kBackendIsn);
    EXPECT_EQ(b_.backend_wscale(), 9);
    EXPECT_TRUE(b_.both_ts());

    Actions done;
    b_.installed(env(), true, done);
    ASSERT_EQ(kinds(done), (std::vector<Kind>{Kind::AckToBackend, Kind::Flush, Kind::Report}));
    EXPECT_EQ(done[0].seq, kIsn + 1);
    EXPECT_EQ(done[0].ack, kBackendIsn + 1);
    EXPECT_EQ(done[0].tsecr, 424242u);
    EXPECT_EQ(b_.phase(), Phase::Bound);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);
    EXPECT_EQ(load_[chosen].binds, 1u);

    // Our ACK was lost: the repeated SYN-ACK is acknowledged again, nothing else changes.
    Actions again;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 30, again);
    ASSERT_EQ(kinds(again), std::vector<Kind>{Kind::AckToBackend});
    EXPECT_EQ(again[0].ack, kBackendIsn + 1);
    EXPECT_EQ(b_.phase(), Phase::Bound);
}

// A reused leg (one a request moved off, kept by the pool): the client's timestamps move onto
// our clock as for any pooled leg, but never below what the leg already carried (the backend
// would drop segments older than its last TSval: PAWS); its MSS is the one its SYN offered.
TEST_F(BinderTest, AReusedLegsTimestampsNeverGoBack) {
    for (const std::uint32_t floor : {kClockMs - 100, kClockMs + 5000}) {
        pool_ = true;
        start();
        const Actions tp = bind_whole_request(10);
        ASSERT_EQ(kinds(tp), std::vector<Kind>{Kind::TryPool});
        LegHello leg;
        leg.isn = 0x90000000u;
        leg.backend_isn = 0x7000u;
        leg.backend_tsval = 31337;
        leg.backend_wscale = 9;
        leg.wscale = 8;
        leg.mss = 1400;
        leg.ts = true;
        leg.reused = true;
        leg.ts_floor = floor;
        Actions inst;
        b_.pooled(env(), leg, 15, inst);
        ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
        const std::uint32_t first = kTsClient + b_.ts_delta();  // the flight's earliest, moved
        if (floor < kClockMs)
            EXPECT_EQ(first, kClockMs) << "a floor behind our clock changes nothing";
        else
            EXPECT_EQ(first, floor + 1) << "past the newest TSval the leg carried";
        EXPECT_EQ(b_.leg_mss(), 1400);
        EXPECT_EQ(b_.leg_wscale(), 8);
    }
}

// A pooled leg: no SYN, the flow installs at once, and the backend leg's sequence space is the
// leg's own (its ISN), not the client's.
TEST_F(BinderTest, PooledLegInstallsAtOnceInItsOwnSequenceSpace) {
    pool_ = true;
    start();
    const Actions tp = bind_whole_request(10);
    ASSERT_EQ(kinds(tp), std::vector<Kind>{Kind::TryPool}) << "the pool is asked before a SYN";
    const std::uint16_t chosen = b_.backend();
    ASSERT_LT(chosen, 4);
    LegHello leg;
    leg.isn = 0x90000000u;
    leg.backend_isn = 0x7000u;
    leg.backend_tsval = 31337;
    leg.backend_wscale = 9;
    leg.wscale = 7;
    leg.ts = true;
    Actions inst;
    b_.pooled(env(), leg, 15, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    EXPECT_TRUE(b_.pooled());
    EXPECT_EQ(b_.leg_seq_delta(), 0x90000000u - kIsn);
    EXPECT_EQ(b_.leg_wscale(), 7);
    EXPECT_EQ(b_.backend_isn(), 0x7000u);
    EXPECT_EQ(b_.backend_tsval(), 31337u);
    EXPECT_TRUE(b_.both_ts());
    EXPECT_EQ(b_.ts_delta(), kClockMs - kTsClient) << "the flight's earliest TSval onto our clock";
    EXPECT_EQ(b_.synack_at() - b_.first_syn_at(), 0u) << "no handshake to wait for";

    Actions done;
    b_.installed(env(), true, done);
    ASSERT_EQ(kinds(done), (std::vector<Kind>{Kind::Flush, Kind::Report}))
        << "the leg acknowledged its SYN-ACK when it was opened";
    EXPECT_EQ(load_[chosen].binds, 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);

    // The backend repeats the leg's SYN-ACK (the pool's ACK was lost): acknowledged in the
    // leg's space.
    Actions again;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, 0x90000001u), 30, again);
    ASSERT_EQ(kinds(again), std::vector<Kind>{Kind::AckToBackend});
    EXPECT_EQ(again[0].seq, 0x90000001u);
}

// A pooled leg installs once the client's first flight is all here, never while part of it is
// still on its way (XDP would forward the next segments ahead of it).
TEST_F(BinderTest, PooledLegWaitsForTheRestOfTheFlight) {
    static const std::string body = R"({"model":"m","prompt":")" + std::string(3000, 'x') + R"("})";
    static const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\n\r\n" + body;
    pool_ = true;
    for (int via_timer = 0; via_timer < 2; ++via_timer) {
        start();
        Actions a;
        ASSERT_EQ(seg(req, 0, 1400, 10, a), FirstFlight::Add::Held);
        ASSERT_EQ(kinds(a), std::vector<Kind>{Kind::Connect}) << "the key's depth is here";
        Actions tp;
        b_.connect(env(), 10, tp);
        ASSERT_EQ(kinds(tp), std::vector<Kind>{Kind::TryPool});
        LegHello leg;
        leg.isn = 0x42;
        leg.ts = true;
        Actions wait;
        b_.pooled(env(), leg, 11, wait);
        ASSERT_EQ(kinds(wait), std::vector<Kind>{Kind::Arm}) << "1,400 of " << req.size();
        EXPECT_EQ(wait[0].when, 11 + kGap);
        EXPECT_EQ(b_.phase(), Phase::SynSent);
        Actions more;
        ASSERT_EQ(seg(req, 1400, 1400, 12, more), FirstFlight::Add::Held);
        EXPECT_EQ(more.size(), 0u);
        Actions inst;
        if (via_timer) {
            b_.timer(env(), 11 + kGap - 1, inst);
            EXPECT_EQ(inst.size(), 0u);
            b_.timer(env(), 11 + kGap, inst);
        } else {
            const auto rest = static_cast<std::uint32_t>(req.size() - 2800);
            ASSERT_EQ(seg(req, 2800, rest, 13, inst), FirstFlight::Add::Held);
        }
        ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install}) << "via timer " << via_timer;
        EXPECT_EQ(b_.phase(), Phase::Installing);
        EXPECT_EQ(b_.first_syn_at(), 11u);
    }
}

TEST_F(BinderTest, NoPooledLegSendsTheSynAndAFailedPooledInstallResetsTheLeg) {
    pool_ = true;
    start();
    ASSERT_EQ(kinds(bind_whole_request(10)), std::vector<Kind>{Kind::TryPool});
    Actions syn;
    b_.not_pooled(env(), 12, syn);
    ASSERT_EQ(kinds(syn), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    EXPECT_EQ(syn[0].seq, kIsn);
    EXPECT_FALSE(b_.pooled());
    EXPECT_EQ(b_.leg_seq_delta(), 0u);

    // Another flow: a pooled leg whose install fails is reset at the leg's next sequence.
    start();
    ASSERT_EQ(kinds(bind_whole_request(20)), std::vector<Kind>{Kind::TryPool});
    LegHello leg;
    leg.isn = 0x1234u;
    leg.ts = true;
    Actions inst, fail;
    b_.pooled(env(), leg, 21, inst);
    b_.installed(env(), false, fail);
    ASSERT_FALSE(fail.size() == 0);
    EXPECT_EQ(fail[0].kind, Kind::RstToBackend);
    EXPECT_EQ(fail[0].seq, 0x1235u);
    EXPECT_EQ(fail[1].kind, Kind::RstToClient);
}

// A head written a few ms before its body: the backend leg starts from the flight's earliest
// TSval, so the held head is not older than what the SYN and the ACK told the backend (PAWS).
TEST_F(BinderTest, TheBackendLegStartsFromTheFlightsEarliestTimestamp) {
    start();
    const std::size_t head = kReq.find("\r\n\r\n") + 4;
    ClientSeg c;
    c.pkt = reinterpret_cast<void *>(std::uintptr_t{1});
    c.data = reinterpret_cast<const std::uint8_t *>(kReq.data());
    c.seq = kIsn + 1;
    c.len = static_cast<std::uint16_t>(head);
    c.window = 502;
    c.has_ts = true;
    c.tsval = kTsClient + 1;
    c.tsecr = kTsOurs;
    Actions a1;
    ASSERT_EQ(b_.segment(env(), c, true, 1, a1), FirstFlight::Add::Held);
    ASSERT_EQ(a1.size() > 0 ? a1[0].kind : Kind::Release, Kind::Arm) << "the head alone waits";
    c.pkt = reinterpret_cast<void *>(std::uintptr_t{2});
    c.data += head;
    c.seq += static_cast<std::uint32_t>(head);
    c.len = static_cast<std::uint16_t>(kReq.size() - head);
    c.tsval = kTsClient + 6;  // 5 ms later
    Actions a2;
    ASSERT_EQ(b_.segment(env(), c, true, 6, a2), FirstFlight::Add::Held);
    ASSERT_EQ(kinds(a2), std::vector<Kind>{Kind::Connect});
    Actions syn;
    b_.connect(env(), 6, syn);
    ASSERT_EQ(syn[0].kind, Kind::SynToBackend);
    EXPECT_EQ(syn[0].tsval, kClockMs) << "the SYN carries our clock";
    EXPECT_EQ(b_.ts_delta(), kClockMs - kTsClient) << "mapped from the earliest TSval, the start's";
    Actions inst, done;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 7, inst);
    b_.installed(env(), true, done);
    ASSERT_EQ(done[0].kind, Kind::AckToBackend);
    EXPECT_EQ(done[0].tsval, kClockMs) << "the ACK before the flush is no later than the head";
    // Later (bound): the repeated SYN-ACK is answered with the client's latest, mapped.
    Actions again;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 8, again);
    EXPECT_EQ(again[0].tsval, kClockMs + 6);
}

// A segment with an older TSval arriving after the SYN (a reordered copy) no longer moves the
// leg's first TSval: the handshake's ACK stays at the SYN's (below it, the backend dropped the ACK
// as a PAWS failure).
TEST_F(BinderTest, AnOlderTimestampAfterTheSynLeavesTheLegsStartAlone) {
    start();
    ClientSeg c;
    c.pkt = reinterpret_cast<void *>(std::uintptr_t{1});
    c.data = reinterpret_cast<const std::uint8_t *>(kReq.data());
    c.seq = kIsn + 1;
    c.len = static_cast<std::uint16_t>(kReq.size());
    c.window = 502;
    c.has_ts = true;
    c.tsval = kTsClient;
    c.tsecr = kTsOurs;
    Actions a1;
    ASSERT_EQ(b_.segment(env(), c, true, 1, a1), FirstFlight::Add::Held);
    Actions syn;
    b_.connect(env(), 1, syn);
    ASSERT_EQ(syn[0].kind, Kind::SynToBackend);
    EXPECT_EQ(syn[0].tsval, kClockMs);
    c.pkt = reinterpret_cast<void *>(std::uintptr_t{2});
    c.tsval = kTsClient - 3;  // a copy sent 3 ms earlier, reordered behind the first
    Actions a2;
    EXPECT_EQ(b_.segment(env(), c, true, 2, a2), FirstFlight::Add::Duplicate);
    Actions inst, done;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 3, inst);
    b_.installed(env(), true, done);
    ASSERT_EQ(done[0].kind, Kind::AckToBackend);
    EXPECT_EQ(done[0].tsval, kClockMs) << "no older than the SYN's";
}

TEST_F(BinderTest, DuplicateAndOutOfOrderSegmentsBindOnceInSequence) {
    start();
    const std::uint32_t cut = 40, n = static_cast<std::uint32_t>(kReq.size());
    Actions a1, a2, a3;
    // The tail first: nothing from the stream's start yet, so nothing binds.
    EXPECT_EQ(seg(kReq, cut, n - cut, 1, a1), FirstFlight::Add::Held);
    EXPECT_EQ(kinds(a1), std::vector<Kind>{Kind::Arm}) << "held, waiting for the head";
    EXPECT_EQ(b_.phase(), Phase::Holding);
    // The same tail again: a duplicate, counted, not held.
    EXPECT_EQ(seg(kReq, cut, n - cut, 2, a2), FirstFlight::Add::Duplicate);
    EXPECT_EQ(a2.size(), 0u);
    EXPECT_EQ(stat(KVS_R_DP_DUP_SEGMENT), 1u);
    // The head: the whole request is there, it binds.
    EXPECT_EQ(seg(kReq, 0, cut, 3, a3), FirstFlight::Add::Held);
    EXPECT_EQ(kinds(a3), std::vector<Kind>{Kind::Connect});
    // The flight hands its packets over in sequence order.
    std::vector<std::uintptr_t> order;
    b_.flight().drain([&](void *p) { order.push_back(reinterpret_cast<std::uintptr_t>(p)); });
    EXPECT_EQ(order, (std::vector<std::uintptr_t>{1, cut + 1}));
}

TEST_F(BinderTest, SegmentBeforeTheKnownStartIsStale) {
    start();
    ClientSeg c;
    c.data = reinterpret_cast<const std::uint8_t *>(kReq.data());
    c.seq = kIsn - 100;  // an old retransmission
    c.len = 50;
    Actions out;
    EXPECT_EQ(b_.segment(env(), c, true, 1, out), FirstFlight::Add::Stale);
    EXPECT_EQ(out.size(), 0u);
    EXPECT_EQ(stat(KVS_R_DP_STALE_SEGMENT), 1u);
}

// The flight holds at least an initial window (10 segments of the client's MSS) however small
// max_held is: with jumbo frames twice the default held 3 segments, and the rest of the window
// was dropped and retransmitted after the bind.
TEST_F(BinderTest, TheFlightHoldsAnInitialWindowOfTheClientsMss) {
    cfg_.max_held = 1000;  // twice that holds one 1400-byte segment
    start();               // the client's MSS: 1460
    static const std::string big = [] {
        const std::string body(16000, 'a');
        return "POST /v1/completions HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body;
    }();
    Actions out;
    for (std::uint32_t i = 0; i < 10; ++i)
        ASSERT_EQ(seg(big, 1400 * i, 1400, 1 + i, out), FirstFlight::Add::Held) << i;
    EXPECT_EQ(seg(big, 14000, 1400, 20, out), FirstFlight::Add::Full) << "beyond 10 x 1460";
    EXPECT_EQ(b_.flight().size(), 10u);
}

TEST_F(BinderTest, NoRoomMeansNotHeldAndBindsOnWhatIsThere) {
    start();
    Actions out;
    ClientSeg c;
    c.data = reinterpret_cast<const std::uint8_t *>(kReq.data());
    c.seq = kIsn + 1;
    c.len = static_cast<std::uint16_t>(kReq.size());
    EXPECT_EQ(b_.segment(env(), c, false, 1, out), FirstFlight::Add::Full);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 1u);
    EXPECT_EQ(out.size(), 0u) << "nothing held from the start: nothing to bind yet";
}

TEST_F(BinderTest, SynRetriesThenTheNextCandidate) {
    start();
    const Actions first = bind_whole_request(0);
    const std::uint16_t b0 = b_.backend();
    std::uint64_t now = first[1].when;
    // syn_retries = 2: two more SYNs to the same backend, each re-arming the timer.
    for (int i = 0; i < 2; ++i) {
        Actions out;
        b_.timer(env(), now, out);
        ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
        EXPECT_EQ(out[0].seq, kIsn);
        EXPECT_EQ(b_.backend(), b0);
        now = out[1].when;
    }
    EXPECT_EQ(stat(KVS_R_DP_BACKEND_TIMEOUT), 0u);
    // Then the backend has timed out: the next candidate, never the same one.
    Actions out;
    b_.timer(env(), now, out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    EXPECT_NE(b_.backend(), b0);
    EXPECT_EQ(stat(KVS_R_DP_BACKEND_TIMEOUT), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_RETRY), 1u);
    EXPECT_EQ(load_[b0].bind_fail_timeout, 1u);
}

// The worker sums where each binding's time went (dp_bind_hold_ns, _handshake_ns, _install_ns):
// from the flight's start to the first SYN, from it to the SYN-ACK accepted (SYNs repeated and
// other candidates included), from that to the install.
TEST_F(BinderTest, TheBindingsTimesAreItsFirstSynAndTheSynAckItAccepted) {
    start(true, 3);
    EXPECT_EQ(b_.created(), 3u);
    const Actions first = bind_whole_request(10);
    EXPECT_EQ(b_.first_syn_at(), 10u);
    std::uint64_t now = first[1].when;
    for (int i = 0; i < 3; ++i) {  // two more SYNs, then the next candidate's
        Actions out;
        b_.timer(env(), now, out);
        ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
        now = out[1].when;
    }
    EXPECT_EQ(stat(KVS_R_DP_BIND_RETRY), 1u);
    EXPECT_EQ(b_.first_syn_at(), 10u) << "the binding's first SYN, not the candidate's";
    Actions stray;  // a segment that is not the SYN-ACK leaves the times alone
    b_.backend_segment(env(), from_backend(KVS_TCP_RST | KVS_TCP_ACK, kIsn + 7), now - 5, stray);
    EXPECT_EQ(b_.synack_at(), 0u);
    Actions inst;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), now - 2, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    EXPECT_EQ(b_.synack_at(), now - 2);
    EXPECT_EQ(b_.first_syn_at(), 10u);

    // A new flow on the same binder starts with no times of the last one.
    start(true, now + 100);
    EXPECT_EQ(b_.first_syn_at(), 0u);
    EXPECT_EQ(b_.synack_at(), 0u);
    bind_whole_request(now + 150);
    EXPECT_EQ(b_.first_syn_at(), now + 150);
}

TEST_F(BinderTest, BackendResetsTryEachCandidateThenResetTheClient) {
    start();
    bind_whole_request(0);
    std::vector<std::uint16_t> tried{b_.backend()};
    // A reset that does not answer our SYN (wrong ack) is ignored.
    Actions stray;
    b_.backend_segment(env(), from_backend(KVS_TCP_RST | KVS_TCP_ACK, kIsn + 7), 1, stray);
    EXPECT_EQ(stray.size(), 0u);
    EXPECT_EQ(stat(KVS_R_PUNT_BACKEND_OTHER), 1u);
    for (int i = 0; i < 2; ++i) {
        Actions out;
        b_.backend_segment(env(), from_backend(KVS_TCP_RST | KVS_TCP_ACK, kIsn + 1), 2, out);
        ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
        for (std::uint16_t t : tried) EXPECT_NE(b_.backend(), t) << "a refused backend again";
        tried.push_back(b_.backend());
    }
    EXPECT_EQ(stat(KVS_R_DP_BACKEND_RST), 2u);
    // max_candidates = 3 are used up: the client is reset at the end of what it sent.
    Actions out;
    b_.backend_segment(env(), from_backend(KVS_TCP_RST | KVS_TCP_ACK, kIsn + 1), 3, out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(out[0].seq, kCookie + 1);
    EXPECT_EQ(out[0].ack, kIsn + 1 + kReq.size());
    EXPECT_EQ(b_.phase(), Phase::Done);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 1u);
}

TEST_F(BinderTest, ChallengeAckResetsTheOldConnectionAndResendsTheSyn) {
    start();
    bind_whole_request(0);
    Actions out;
    b_.backend_segment(env(), from_backend(KVS_TCP_ACK, 0xabcdef), 5, out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstToBackend, Kind::SynToBackend}));
    EXPECT_EQ(out[0].seq, 0xabcdefu) << "RFC 793: the reset's seq is the ACK's ack";
    EXPECT_EQ(out[1].seq, kIsn);
    EXPECT_EQ(b_.phase(), Phase::SynSent);
    EXPECT_EQ(stat(KVS_R_DP_CHALLENGE_ACK), 1u);
}

TEST_F(BinderTest, FailedInstallResetsBothSides) {
    start();
    bind_whole_request(0);
    Actions inst, out;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 1, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    b_.installed(env(), false, out);
    ASSERT_EQ(kinds(out),
              (std::vector<Kind>{Kind::RstToBackend, Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(out[0].seq, kIsn + 1);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_FAIL), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 0u);
    EXPECT_EQ(load_[b_.backend()].binds, 0u);
}

// Between Install and installed() (the worker installs a burst's flows together) the flow is
// Installing: a repeated SYN-ACK is counted and waits for the ACK after the install, a timer
// does nothing, a client segment is still held, and a client reset aborts the backend leg.
TEST_F(BinderTest, InstallingWaitsForTheInstallAndAbortsOnAClientReset) {
    start();
    bind_whole_request(0);
    Actions inst, again, tick, more, out;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 1, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    EXPECT_EQ(b_.phase(), Phase::Installing);
    EXPECT_TRUE(b_.binding());
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 2, again);
    EXPECT_EQ(again.size(), 0u);
    EXPECT_EQ(stat(KVS_R_PUNT_BACKEND_SYNACK), 2u);
    b_.timer(env(), 10 + kSynTimeout * 10, tick);
    EXPECT_EQ(tick.size(), 0u) << "no SYN retry, no next candidate while installing";
    const std::string longer = kReq + " trailing";
    EXPECT_EQ(seg(longer, static_cast<std::uint32_t>(kReq.size()), 9, 3, more),
              FirstFlight::Add::Held);
    EXPECT_EQ(more.size(), 0u);
    b_.abort(env(), out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstToBackend, Kind::Release}));
    EXPECT_EQ(out[0].seq, kIsn + 1);
    EXPECT_EQ(b_.phase(), Phase::Done);
}

TEST_F(BinderTest, ClientResetWhileSynSentAbortsTheBackendLeg) {
    start();
    bind_whole_request(0);
    Actions out;
    b_.abort(env(), out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstToBackend, Kind::Release}));
    EXPECT_EQ(out[0].seq, kIsn + 1);
    Binder holding;
    Actions out2;
    holding.abort(env(), out2);
    EXPECT_EQ(kinds(out2), std::vector<Kind>{Kind::Release}) << "no backend leg yet";
}

// Ports are per backend: no port towards a candidate sends the SYN to the next one (counted),
// and the client is reset only when the candidates (max_candidates = 3) are used up.
TEST_F(BinderTest, NoSnatPortTriesTheNextCandidateThenResetsTheClient) {
    start();
    Actions out, c;
    seg(kReq, 0, static_cast<std::uint32_t>(kReq.size()), 1, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Connect});
    b_.connect(env(), 1, c);
    ASSERT_EQ(kinds(c), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    std::vector<std::uint16_t> tried{b_.backend()};
    for (int k = 0; k < 2; ++k) {
        Actions np;
        b_.no_port(env(), 2, np);
        ASSERT_EQ(kinds(np), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
        EXPECT_EQ(std::count(tried.begin(), tried.end(), b_.backend()), 0) << "a new candidate";
        tried.push_back(b_.backend());
    }
    Actions last;
    b_.no_port(env(), 3, last);
    EXPECT_EQ(kinds(last), (std::vector<Kind>{Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(stat(KVS_R_DP_PORTS_EXHAUSTED), 3u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_RETRY), 2u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 1u);
}

TEST_F(BinderTest, IncompleteHeadWaitsThroughGapsThenIsResetWhenIdle) {
    start();
    Actions out;
    seg(kPartialHead, 0, static_cast<std::uint32_t>(kPartialHead.size()), 0, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Arm});
    EXPECT_EQ(out[0].when, kGap) << "the next look: after the silent gap";
    Actions gap;
    b_.timer(env(), kGap, gap);
    ASSERT_EQ(kinds(gap), std::vector<Kind>{Kind::Arm}) << "an incomplete head does not bind";
    EXPECT_EQ(gap[0].when, kIdle);
    EXPECT_TRUE(b_.evictable(env(), kGap));
    Actions idle;
    b_.timer(env(), kIdle, idle);
    ASSERT_EQ(kinds(idle), (std::vector<Kind>{Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(idle[0].ack, kIsn + 1 + kPartialHead.size());
    EXPECT_EQ(stat(KVS_R_DP_CLIENT_IDLE_DROP), 1u);
}

TEST_F(BinderTest, FullTableResetsASlowHeadButDropsAFlightMissingItsHeadSilently) {
    // The slowloris shape: a head that stays incomplete. Evicted with a reset.
    start();
    Actions out;
    seg(kPartialHead, 0, static_cast<std::uint32_t>(kPartialHead.size()), 0, out);
    Actions gap;
    b_.timer(env(), kGap, gap);
    ASSERT_TRUE(b_.evictable(env(), kGap));
    EXPECT_FALSE(b_.waits_for_retransmission());
    Actions ev;
    b_.evict(env(), ev);
    EXPECT_EQ(kinds(ev), (std::vector<Kind>{Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED), 1u);

    // A client whose head segment was refused (the table was full) and whose body got in: the
    // bytes held start after a hole. It waits for its retransmission; evicting it must not
    // reset it (a reset loses a legitimate request), only drop what is held.
    b_ = Binder{};
    start();
    Actions body;
    seg(kReq, 60, static_cast<std::uint32_t>(kReq.size() - 60), 0, body);
    Actions gap2;
    b_.timer(env(), kGap, gap2);
    ASSERT_TRUE(b_.evictable(env(), kGap)) << "nothing from the stream's start: head incomplete";
    EXPECT_TRUE(b_.waits_for_retransmission());
    Actions ev2;
    b_.evict(env(), ev2);
    EXPECT_EQ(kinds(ev2), std::vector<Kind>{Kind::Release}) << "no RstToClient";
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED_GAP), 1u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED), 1u) << "only the slow head was reset";
}

TEST_F(BinderTest, CompleteHeadWithPartOfTheBodyBindsAfterTheGap) {
    config_.prefix_len = 4096;  // the key wants more than the client has sent so far
    start();
    const std::uint32_t part = static_cast<std::uint32_t>(kReq.size()) - 10;
    Actions out;
    seg(kReq, 0, part, 0, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Arm});
    EXPECT_FALSE(b_.evictable(env(), kGap)) << "a complete head is never evicted";
    Actions gap;
    b_.timer(env(), kGap, gap);
    EXPECT_EQ(kinds(gap), std::vector<Kind>{Kind::Connect})
        << "window-limited: bind on what is held";
}

TEST_F(BinderTest, PartialBodyBelowTheInitialWindowWaitsTheSlowGap) {
    // A complete head with part of the body, far below the client's initial window: the client
    // could have sent more (its writes came apart on a busy host, or a segment was lost), so a
    // short silence does not bind it on a partial request; the slow gap does.
    config_.prefix_len = 4096;
    cfg_.slow_gap = 20 * kGap;
    start();
    const std::uint32_t part = static_cast<std::uint32_t>(kReq.size()) - 10;
    Actions out;
    seg(kReq, 0, part, 0, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Arm});
    EXPECT_EQ(out[0].when, 20 * kGap);
    Actions early;
    b_.timer(env(), kGap, early);
    EXPECT_EQ(kinds(early), std::vector<Kind>{Kind::Arm}) << "not bound after the short gap";
    Actions late;
    b_.timer(env(), 20 * kGap, late);
    EXPECT_EQ(kinds(late), std::vector<Kind>{Kind::Connect}) << "bound after the slow gap";
}

TEST_F(BinderTest, FinBeforeTheHeadIsCompleteResetsInsteadOfBinding) {
    start();
    Actions out;
    seg(kPartialHead, 0, static_cast<std::uint32_t>(kPartialHead.size()), 0, out, true);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstToClient, Kind::Release}));
    EXPECT_EQ(stat(KVS_R_DP_RST_FIN_INCOMPLETE_HEAD), 1u);
}

// A FIN behind a hole (a middle segment lost before the appliance): the flight waits for the
// retransmission instead of binding on the bytes before the hole. Before, the FIN made it ready at
// once: bound on a head cut short (the request keyed on nothing), the rest sent on after.
TEST_F(BinderTest, FinBehindAHoleWaitsForTheMissingBytes) {
    start();
    const auto n = static_cast<std::uint32_t>(kReq.size());
    const std::uint32_t a = 40, b = 80;  // [a, b) lost: inside the request head
    Actions a1, a2, a3;
    seg(kReq, 0, a, 0, a1);
    EXPECT_EQ(kinds(a1), std::vector<Kind>{Kind::Arm});
    seg(kReq, b, n - b, 1, a2, true);  // the rest, with the client's FIN
    EXPECT_EQ(kinds(a2), std::vector<Kind>{Kind::Arm}) << "held: the hole comes again";
    EXPECT_EQ(b_.phase(), Phase::Holding);
    EXPECT_EQ(stat(KVS_R_DP_RST_FIN_INCOMPLETE_HEAD), 0u);
    seg(kReq, a, b - a, 2, a3);  // the retransmission
    EXPECT_EQ(kinds(a3), std::vector<Kind>{Kind::Connect}) << "the whole request: it binds";
}

TEST_F(BinderTest, UnsureStartWaitsForTheHead) {
    start(/*isn_known=*/false);
    // A body without its head and no proof of the stream's start: not bound before the wait.
    Actions out;
    seg(kBody, 0, static_cast<std::uint32_t>(kBody.size()), 0, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Arm});
    EXPECT_EQ(out[0].when, kGap);
    Actions gap;
    b_.timer(env(), kGap, gap);
    ASSERT_EQ(kinds(gap), std::vector<Kind>{Kind::Arm});
    EXPECT_EQ(gap[0].when, kUnsure) << "the next look: when the unsure-start wait ends";
    Actions later;
    b_.timer(env(), kUnsure, later);
    EXPECT_EQ(kinds(later), std::vector<Kind>{Kind::Connect});
    EXPECT_EQ(stat(KVS_R_DP_START_UNSURE), 1u);
}

TEST_F(BinderTest, AnotherTimestampEchoIsAnotherConnection) {
    start();
    ClientSeg c;
    c.has_ts = true;
    c.tsecr = kTsOurs;
    EXPECT_FALSE(b_.from_other_connection(c));
    c.tsecr = kTsOurs + 99;
    EXPECT_TRUE(b_.from_other_connection(c));
    c.has_ts = false;
    EXPECT_FALSE(b_.from_other_connection(c)) << "no timestamps: cannot tell";
}

// ---- per-request steering: a request boundary of a bound connection --------------------------

class RebindTest : public BinderTest {
   protected:
    // Where a fresh connection with kReq goes: the policy's choice.
    std::uint16_t fresh_choice() {
        Binder fresh;
        ClientHello h;
        h.isn = kIsn;
        h.isn_known = true;
        fresh.start(env(), h, 0);
        Actions out, syn;
        ClientSeg c;
        c.data = reinterpret_cast<const std::uint8_t *>(kReq.data());
        c.seq = kIsn + 1;
        c.len = static_cast<std::uint16_t>(kReq.size());
        fresh.segment(env(), c, true, 0, out);
        fresh.connect(env(), 0, syn);
        std::fill(std::begin(stats_), std::end(stats_), 0);
        fresh.clear_pending(scratch_);  // the probe goes (as the worker releases a flow)
        return fresh.backend();
    }
    void start_rebind(std::uint16_t on) {
        RebindHello r;
        r.h.isn = kIsn;
        r.h.isn_known = true;
        r.h.cookie_isn = kCookie;
        r.h.mss = 1460;
        r.h.wscale = 7;
        r.h.ts = 1;
        r.h.ts_ours = kTsOurs;
        r.h.tsval = kTsClient;
        r.h.tuple_hash = 0x1234;
        r.backend = on;
        b_.start_rebind(env(), r, 0);
    }
    Actions request(const std::string &req) {
        Actions out;
        EXPECT_EQ(seg(req, 0, static_cast<std::uint32_t>(req.size()), 1, out),
                  FirstFlight::Add::Held);
        return out;
    }
};

TEST_F(RebindTest, SameChoiceStaysOnTheConnectionsBackend) {
    const std::uint16_t b0 = fresh_choice();
    start_rebind(b0);
    const Actions out = request(kReq);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::Resume, Kind::Report})) << "no new connection";
    EXPECT_EQ(b_.phase(), Phase::Bound);
    EXPECT_EQ(b_.backend(), b0);
    EXPECT_EQ(stat(KVS_R_DP_REQ_SAME_BACKEND), 1u);
    // The previous request left the in-flight count and this one joined it: same backend.
    EXPECT_EQ(load_[b0].closes, 1u);
    EXPECT_EQ(load_[b0].binds, 1u);
}

TEST_F(RebindTest, OtherChoiceMovesToANewLegAndResetsTheOldOne) {
    const std::uint16_t b0 = fresh_choice();
    const std::uint16_t was = static_cast<std::uint16_t>((b0 + 1) % 4);
    start_rebind(was);
    ASSERT_EQ(kinds(request(kReq)), std::vector<Kind>{Kind::Connect});
    Actions syn;
    b_.connect(env(), 1, syn);
    ASSERT_EQ(kinds(syn), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    EXPECT_EQ(b_.backend(), b0) << "the policy's choice for this request";
    EXPECT_EQ(syn[0].seq, kIsn) << "the new leg keeps the client's sequence space";
    Actions inst, done;
    b_.backend_segment(env(), from_backend(KVS_TCP_SYN | KVS_TCP_ACK, kIsn + 1), 2, inst);
    ASSERT_EQ(kinds(inst), std::vector<Kind>{Kind::Install});
    b_.installed(env(), true, done);
    ASSERT_EQ(kinds(done),
              (std::vector<Kind>{Kind::AckToBackend, Kind::RstOldLeg, Kind::Flush, Kind::Report}));
    EXPECT_EQ(done[1].seq, kIsn + 1) << "the old leg's next expected byte: in its window";
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 1u);
    EXPECT_EQ(load_[was].closes, 1u);
    EXPECT_EQ(load_[was].binds, 0u);
    EXPECT_EQ(load_[b0].binds, 1u);
}

TEST_F(RebindTest, ProtocolTiesTheRequestToItsBackend) {
    const std::uint16_t b0 = fresh_choice();
    const std::uint16_t was = static_cast<std::uint16_t>((b0 + 1) % 4);
    const std::string expect =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: "
        "500\r\n\r\n";
    const std::string upgrade =
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    const std::string http10 = "GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    // Heads with bare LF line ends (the locator reads them): the same (before, they moved).
    const std::string upgrade_lf =
        "GET /ws HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: websocket\n\n";
    const std::string http10_lf = "GET /v1/models HTTP/1.0\nConnection: keep-alive\n\n";
    const struct {
        const std::string &req;
        unsigned reason;
    } cases[] = {{expect, KVS_R_DP_REQ_KEPT_EXPECT},
                 {upgrade, KVS_R_DP_REQ_KEPT_UPGRADE},
                 {http10, KVS_R_DP_REQ_KEPT_HTTP10},
                 {upgrade_lf, KVS_R_DP_REQ_KEPT_UPGRADE},
                 {http10_lf, KVS_R_DP_REQ_KEPT_HTTP10}};
    for (const auto &c : cases) {
        b_ = Binder{};
        start_rebind(was);
        const std::uint64_t before = stat(c.reason);
        EXPECT_EQ(kinds(request(c.req)), std::vector<Kind>{Kind::Resume}) << c.req;
        EXPECT_EQ(stat(c.reason) - before, 1u) << c.req;
        EXPECT_EQ(b_.backend(), was);
    }
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 0u);
    // Its leg closed while the request was held (the FIN or RST not passed on): the same backend
    // on a new leg. Before, it went onto the closed leg.
    for (const auto &c : cases) {
        b_ = Binder{};
        start_rebind(was);
        b_.old_leg_closing();
        const std::uint64_t closing = stat(KVS_R_DP_REQ_BACKEND_CLOSING);
        ASSERT_EQ(kinds(request(c.req)), std::vector<Kind>{Kind::Connect}) << c.req;
        EXPECT_EQ(stat(KVS_R_DP_REQ_BACKEND_CLOSING) - closing, 1u) << c.req;
        Actions syn;
        b_.connect(env(), 1, syn);
        ASSERT_EQ(kinds(syn), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm})) << c.req;
        EXPECT_EQ(b_.backend(), was) << c.req;
    }
    // ... unless that backend takes no new flows (draining): wherever the policy sends it.
    backends_[was].state = KVS_BE_DRAIN;
    b_ = Binder{};
    start_rebind(was);
    b_.old_leg_closing();
    ASSERT_EQ(kinds(request(expect)), std::vector<Kind>{Kind::Connect});
    Actions syn;
    b_.connect(env(), 1, syn);
    EXPECT_NE(b_.backend(), was);
    backends_[was].state = KVS_BE_UP;
    // ... nor when it is out of rotation (weight 0: it took the request anyway).
    const std::uint16_t weight = backends_[was].weight;
    backends_[was].weight = 0;
    b_ = Binder{};
    start_rebind(was);
    b_.old_leg_closing();
    ASSERT_EQ(kinds(request(expect)), std::vector<Kind>{Kind::Connect});
    Actions syn0;
    b_.connect(env(), 1, syn0);
    EXPECT_NE(b_.backend(), was);
    backends_[was].weight = weight;
}

TEST_F(RebindTest, FailedMoveResumesOnTheOldLeg) {
    cfg_.max_candidates = 1;
    const std::uint16_t b0 = fresh_choice();
    const std::uint16_t was = static_cast<std::uint16_t>((b0 + 1) % 4);
    start_rebind(was);
    ASSERT_EQ(kinds(request(kReq)), std::vector<Kind>{Kind::Connect});
    Actions syn, out;
    b_.connect(env(), 1, syn);
    b_.backend_segment(env(), from_backend(KVS_TCP_RST | KVS_TCP_ACK, kIsn + 1), 2, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Resume}) << "the request is not lost";
    EXPECT_EQ(b_.backend(), was);
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVE_FAILED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 0u) << "no client was reset";
    EXPECT_EQ(load_[was].closes, 1u);
    EXPECT_EQ(load_[was].binds, 1u) << "back on its backend: counted there again";
}

TEST_F(RebindTest, OldLegClosingMovesEvenToTheSameBackend) {
    const std::uint16_t b0 = fresh_choice();
    start_rebind(b0);
    b_.old_leg_closing();  // the backend's idle-close FIN crossed the request
    ASSERT_EQ(kinds(request(kReq)), std::vector<Kind>{Kind::Connect});
    EXPECT_EQ(stat(KVS_R_DP_REQ_BACKEND_CLOSING), 1u);
    Actions syn;
    b_.connect(env(), 1, syn);
    ASSERT_EQ(kinds(syn), (std::vector<Kind>{Kind::SynToBackend, Kind::Arm}));
    EXPECT_EQ(b_.backend(), b0) << "a new leg to the chosen backend";
}

TEST_F(RebindTest, ClientResetEndsTheWholeConnection) {
    start_rebind(2);
    ClientSeg partial;
    partial.data = reinterpret_cast<const std::uint8_t *>(kPartialHead.data());
    partial.seq = kIsn + 1;
    partial.len = 10;
    partial.has_ts = true;
    partial.tsecr = kTsOurs + 12345;  // an old echo: never "another connection" here
    EXPECT_FALSE(b_.from_other_connection(partial));
    Actions out;
    b_.abort(env(), out);
    ASSERT_EQ(kinds(out), (std::vector<Kind>{Kind::RstOldLeg, Kind::Release}));
    EXPECT_EQ(load_[2].closes, 1u) << "the connection left its backend";
}

// A chunked request binds on the same key as the same request with Content-Length, however it
// is chunked: its framing is taken out of the assembled flight (the held packets are untouched).
// Before, a client that wrote "{" first was keyed on "{": every prompt one key.
TEST_F(BinderTest, AChunkedRequestIsKeyedLikeItsContentLengthTwin) {
    static const std::string body =
        R"({"model":"m","prompt":"tell me a story about a cat who sails around the world in a )"
        R"(small boat with a parrot","max_tokens":8})";
    static const std::string cl = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                  std::to_string(body.size()) + "\r\n\r\n" + body;
    auto hex = [](std::size_t n) {
        char b[32];
        std::snprintf(b, sizeof b, "%zx", n);
        return std::string(b);
    };
    static const std::string chunked =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n" +
        hex(20) + "\r\n" + body.substr(1, 20) + "\r\n" + hex(body.size() - 21) + "\r\n" +
        body.substr(21) + "\r\n0\r\n\r\n";
    start();
    Actions out;
    seg(cl, 0, static_cast<std::uint32_t>(cl.size()), 10, out);
    ASSERT_EQ(kinds(out), std::vector<Kind>{Kind::Connect});
    const PrefixHashes want = b_.hashes();
    ASSERT_GT(want.n_blocks, 0u);
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_PROMPT), 1u);

    // In one segment (the binder reads it in the held packet: copied out before the framing
    // goes, the packet left as it is), and in two: the head with the "{" chunk, then the rest.
    const std::size_t first = chunked.find("{\r\n") + 3;
    const std::string sent = chunked;
    unsigned keyed = 1;
    for (const std::vector<std::size_t> &cuts :
         {std::vector<std::size_t>{0}, std::vector<std::size_t>{0, first}}) {
        Binder second;
        second.start(env(), hello(), 0);
        Actions out2;
        for (std::size_t i = 0; i < cuts.size(); ++i) {
            const auto off = static_cast<std::uint32_t>(cuts[i]);
            const std::size_t end = i + 1 < cuts.size() ? cuts[i + 1] : chunked.size();
            ASSERT_EQ(
                second.segment(env(), client(chunked, off, static_cast<std::uint32_t>(end - off)),
                               true, 10, out2),
                FirstFlight::Add::Held);
        }
        SCOPED_TRACE(cuts.size());
        ASSERT_FALSE(kinds(out2).empty());
        ASSERT_EQ(kinds(out2).back(), Kind::Connect) << "bound once the whole request is held";
        EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_PROMPT), ++keyed) << "the prompt past the \"{\" chunk";
        EXPECT_EQ(second.hashes().prefix, want.prefix);
        EXPECT_EQ(second.hashes().n_blocks, want.n_blocks);
        EXPECT_EQ(second.hashes().blocks[0], want.blocks[0]);
        EXPECT_EQ(chunked, sent) << "the held payload is untouched";
        // Its end in the stream (after the last chunk's empty line), for XDP's tracking of the
        // next request: before, a chunked request's end was unknown and nothing after it was
        // steered.
        EXPECT_EQ(second.request_end(), chunked.size());
        second.clear_pending(scratch_);  // its choice never reaches a backend here
    }
    // The last chunk not yet in the flight: the end stays unknown.
    Binder third;
    third.start(env(), hello(), 0);
    Actions out3;
    const auto cut = static_cast<std::uint32_t>(chunked.size() - 5);  // without "0\r\n\r\n"
    ASSERT_EQ(third.segment(env(), client(chunked, 0, cut), true, 10, out3),
              FirstFlight::Add::Held);
    if (kinds(out3).empty() || kinds(out3).back() != Kind::Connect)
        third.timer(env(), 10 + 60'000'000'000ull, out3);  // binds on what it holds
    ASSERT_FALSE(kinds(out3).empty());
    ASSERT_EQ(kinds(out3).back(), Kind::Connect);
    EXPECT_EQ(third.request_end(), 0u);
    third.clear_pending(scratch_);
}

// Session affinity by header: with session-headers configured, a request carrying one is
// steered by the header's key while the key has room under session-cap, and by its prompt
// beyond; the binding report carries the key with the prompt's blocks; a slot whose request never
// reached a backend still holds the count (the worker gives it back).
TEST_F(BinderTest, SessionHeaderKeysTheChoiceUpToTheCap) {
    // A prompt over one 64-byte block, so the report has a block to carry.
    static const std::string body =
        R"({"model":"m","prompt":"tell me a story about a cat who sails around the world in a )"
        R"(small boat with a parrot","max_tokens":8})";
    static const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Session-Id: conv-9\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    SessionLimiter lim;
    sessions_ = &lim;
    std::strcpy(config_.session_headers, "x-session-id");
    config_.session_cap = 1;
    const auto bytes = std::span<const std::uint8_t>(
        reinterpret_cast<const std::uint8_t *>(req.data()), req.size());
    const FlightKey k = key_flight(hash_params(config_), session_headers(config_),
                                   locate_request(bytes), bytes, 0x1234);
    ASSERT_EQ(k.session.status, SessionStatus::Key);
    ASSERT_GT(k.hashes.n_blocks, 0u);

    start();
    Actions out;
    seg(req, 0, static_cast<std::uint32_t>(req.size()), 10, out);
    EXPECT_EQ(kinds(out), std::vector<Kind>{Kind::Connect});
    EXPECT_EQ(b_.hashes().prefix, k.session.hash);
    EXPECT_EQ(b_.hashes().n_blocks, 0u);
    EXPECT_EQ(b_.report_hashes().prefix, k.session.hash);
    EXPECT_EQ(b_.report_hashes().n_blocks, k.hashes.n_blocks);
    EXPECT_EQ(b_.report_hashes().blocks[0], k.hashes.blocks[0]);
    const std::uint32_t held = b_.session_slot();
    ASSERT_NE(held, SessionLimiter::kNone);
    EXPECT_EQ(lim.in_flight(k.session.hash), 1u);
    EXPECT_EQ(stat(KVS_R_DP_SESSION_KEY), 1u);

    // A second request of the key while the first is in flight: over the cap of 1.
    Binder second;
    ClientHello h;
    h.isn = kIsn;
    h.isn_known = true;
    h.tuple_hash = 0x99;
    second.start(env(), h, 0);
    ClientSeg c;
    c.pkt = reinterpret_cast<void *>(std::uintptr_t{1});
    c.data = reinterpret_cast<const std::uint8_t *>(req.data());
    c.seq = kIsn + 1;
    c.len = static_cast<std::uint16_t>(req.size());
    Actions out2;
    second.segment(env(), c, true, 10, out2);
    EXPECT_EQ(kinds(out2), std::vector<Kind>{Kind::Connect});
    EXPECT_EQ(second.session_slot(), SessionLimiter::kNone);
    EXPECT_EQ(second.hashes().prefix, k.hashes.prefix);
    EXPECT_EQ(second.hashes().n_blocks, k.hashes.n_blocks);
    EXPECT_EQ(stat(KVS_R_DP_SESSION_OVER_CAP), 1u);

    // The first completes (the worker releases what the slot or its port held): room again.
    lim.release(held);
    b_.hand_over_session();
    start();
    EXPECT_EQ(b_.session_slot(), SessionLimiter::kNone);  // a reused binder starts with none
    Actions out3;
    seg(req, 0, static_cast<std::uint32_t>(req.size()), 10, out3);
    EXPECT_EQ(b_.session_slot(), held);
    EXPECT_EQ(b_.hashes().prefix, k.session.hash);

    // Without the limiter (no shared port table), the header is not used.
    sessions_ = nullptr;
    start();
    Actions out4;
    seg(req, 0, static_cast<std::uint32_t>(req.size()), 10, out4);
    EXPECT_EQ(b_.session_slot(), SessionLimiter::kNone);
    EXPECT_EQ(b_.hashes().prefix, k.hashes.prefix);
}

}  // namespace
}  // namespace kvsteer::dp
