// How one client connection becomes a bound flow: hold its first flight, decide when the flight
// is worth binding, key it, choose a backend, handshake with it (SYN retries, the next candidate
// on a reset or a timeout), then install and flush. Holding -> SynSent -> Installing -> Bound
// (or Done).
//
// Pure: no DPDK, no sockets, no clock of its own. Each event returns the actions the worker must
// carry out, in order (send a SYN, an ACK or a reset, install the flow pair, flush the held
// segments, arm a timer, release the slot); two of them (Connect, Install) need an answer from
// the worker, which it gives by calling connect() or installed(), and a SYN to a new candidate
// for which the worker has no SNAT port towards that backend is answered with no_port(); the
// worker may answer an Install later (it installs a burst's accepted flows together), and until
// then the flow is Installing: its client segments are held, a repeated SYN-ACK waits for the
// ACK that follows the install. Tests drive it event by event without a port or a mempool.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <new>
#include <span>
#include <type_traits>

#include "first_flight.h"
#include "kvsteer/abi.h"
#include "kvsteer/core/choose.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/core/session.h"
#include "kvsteer/core/tables.h"
#include "kvsteer/parse.h"

namespace kvsteer::dp {

// Times in the worker's clock ticks (TSC in the dataplane; anything monotonic in tests).
struct BinderConfig {
    std::uint64_t gap =
        0;  // client silence after which a window-limited flight binds on what it holds
    // The same for a flight below the client's initial window (10 x MSS), which could have sent
    // more: a slow writer (e.g. head and body written apart on a busy host) or a lost segment.
    // 0: same as gap.
    std::uint64_t slow_gap = 0;
    std::uint64_t syn_timeout = 0;  // per backend SYN
    std::uint64_t client_idle = 0;  // a flight still holding after this is reset
    std::uint64_t unsure_wait = 0;  // a flight whose start is unsure waits this for its head
    std::uint32_t max_held = 0;     // held bytes that make a flight ready (twice that are kept)
    std::uint32_t syn_retries = 0;  // SYNs sent again to one backend before the next candidate
    std::uint32_t max_candidates = 1;
};

// What the binder reads and writes outside itself, shared by every flow of a worker.
struct BindEnv {
    const BinderConfig &cfg;
    const Tables &t;  // the choice, the per-backend load counters
    ChooseScratch &scratch;
    std::uint64_t *stats;         // the worker's counters (KVS_R_*)
    std::span<std::uint8_t> buf;  // room to assemble a flight: at least cfg.max_held bytes
    std::uint32_t clock_ms;       // the backend leg's timestamp clock, now (ms)
    // The worker's per-session-key in-flight counts (session affinity by header); null: the
    // feature is off here whatever kvs_config says.
    SessionLimiter *sessions = nullptr;
    // The worker keeps a backend connection pool: a chosen backend is first asked for a pooled
    // leg (TryPool) before a SYN is sent.
    bool pool = false;
    void inc(unsigned reason) const { stats[reason]++; }
};

// What the client's handshake told us: its first segment and the cookie it acknowledged.
struct ClientHello {
    std::uint32_t isn = 0;  // the client's ISN: for sure when isn_known (timestamp echo)
    bool isn_known = false;
    std::uint32_t cookie_isn = 0;  // our ISN, the cookie
    std::uint16_t mss = 0, window = 0;
    std::uint8_t wscale = KVS_WSCALE_NONE, sack = 0, ts = 0;
    std::uint32_t ts_ours = 0;  // the TSval of our SYN-ACK, which the client echoes
    std::uint32_t tsval = 0;
    std::uint64_t tuple_hash = 0;       // the client 4-tuple's hash (the key when nothing better)
    std::uint8_t family = KVS_AF_INET;  // the client's address family: backends of it only
};

// A kept-alive connection at a request boundary (XDP marked it REBINDING): the bound flow it
// continues. The client's ISN is the boundary's seq - 1 (known for sure); cookie_isn is the
// client-space position of the next server byte - 1; ts_ours the TSval the client-facing clock
// continues from.
struct RebindHello {
    ClientHello h;
    std::uint16_t backend = KVS_BACKEND_NONE;  // the backend the connection is on
};

// A client segment as the binder needs it (the worker parsed it).
struct ClientSeg {
    void *pkt = nullptr;  // the frame, held by the flight until it is flushed or released
    const std::uint8_t *data = nullptr;
    std::uint32_t seq = 0;
    std::uint16_t len = 0, window = 0;
    bool fin = false, has_ts = false;
    std::uint32_t tsval = 0, tsecr = 0;
};

// A pooled backend leg the worker drew for the chosen backend (backend_pool.h): its handshake
// is done, with the pool's options and its own ISN.
struct LegHello {
    std::uint32_t isn = 0;  // our ISN on the leg
    std::uint32_t backend_isn = 0, backend_tsval = 0;
    std::uint8_t backend_wscale = KVS_WSCALE_NONE;
    std::uint8_t wscale = KVS_WSCALE_NONE;  // what the leg's SYN offered
    std::uint16_t mss = 0;                  // what the leg's SYN offered
    bool ts = false;                        // the backend answered with timestamps
    // A leg that served another client: the newest TSval it may have carried (our timestamps
    // on it must not go back: the backend's PAWS check would drop them).
    std::uint32_t ts_floor = 0;
    bool reused = false;
};

// A backend segment to our SNAT port, from the backend being bound.
struct BackendSeg {
    std::uint8_t flags = 0;  // KVS_TCP_*
    std::uint32_t seq = 0, ack = 0;
    bool has_ts = false;
    std::uint32_t tsval = 0;
    std::uint8_t wscale = KVS_WSCALE_NONE;
    std::uint32_t len = 0;  // payload bytes
};

struct Action {
    enum class Kind : std::uint8_t {
        SynToBackend,  // to backend(): seq, tsval; the client's handshake options. A new
                       // candidate's first SYN takes a SNAT port towards it, or no_port()
        AckToBackend,  // seq, ack, window, ts (with tsval, tsecr)
        RstToBackend,  // seq
        RstToClient,   // seq, ack
        Connect,       // keyed: call connect() (the binder picks the candidate)
        Install,       // the backend accepted: install the flow pair, then call installed()
                       // (at once or later: the flow is Installing until then)
        Flush,         // send every held segment through the bound flow
        Report,        // a binding report for the daemon
        Arm,           // call timer() at `when`
        Release,       // the flow is over here: free its slot and its SNAT port
        // Re-binding a kept-alive connection at a request boundary:
        Resume,     // stay on the backend: flush the held request through the flow, unmark it
        RstOldLeg,  // moved: park the previous backend leg in the pool, else reset it (seq);
                    // drop its entry
        // The backend is chosen (backend()): draw a pooled leg to it, then call pooled(), or
        // not_pooled() when there is none (the binder sends a SYN).
        TryPool,
    };
    Kind kind;
    std::uint8_t ts = 0;
    std::uint16_t window = 0;
    std::uint32_t seq = 0, ack = 0, tsval = 0, tsecr = 0;
    std::uint64_t when = 0;
};

// The actions of one event, in order (at most kMax: no event needs more). The storage is left
// uninitialised until pushed to: every event constructs one or more of these, and initialising
// six actions each time was ~7% of a binding's cost.
class Actions {
   public:
    static constexpr unsigned kMax = 6;
    Actions() {}
    void push(const Action &a) {
        if (n_ < kMax) new (&buf_[n_++ * sizeof(Action)]) Action(a);
    }
    const Action *begin() const {
        const auto *p = reinterpret_cast<const Action *>(buf_);
        return n_ ? std::launder(p) : p;  // launder only where an action lives
    }
    const Action *end() const { return begin() + n_; }
    unsigned size() const { return n_; }
    const Action &operator[](unsigned i) const { return begin()[i]; }

   private:
    static_assert(std::is_trivially_copyable_v<Action> && std::is_trivially_destructible_v<Action>);
    alignas(Action) unsigned char buf_[kMax * sizeof(Action)];
    unsigned n_ = 0;
};

class Binder {
   public:
    enum class Phase : std::uint8_t { Holding, SynSent, Installing, Bound, Done };
    static constexpr unsigned kMaxCand = 8;

    // A new flow; its first segment goes to segment() next.
    void start(const BindEnv &env, const ClientHello &h, std::uint64_t now);
    // A bound connection at a request boundary: the same machine holds and keys the request,
    // then resumes on the backend (Resume) or moves it to a new backend leg (Connect...).
    void start_rebind(const BindEnv &env, const RebindHello &r, std::uint64_t now);
    // The previous backend leg closed (FIN/RST) while the request was held: it moves.
    void old_leg_closing() { old_closing_ = true; }
    // Rebinding: the previous backend leg sent a FIN, a RST or bytes past its response meanwhile
    // (the request moves to a new leg, and that one is not kept for reuse).
    bool old_leg_closed() const { return old_closing_; }
    bool rebinding() const { return rebind_; }
    std::uint16_t previous_backend() const { return previous_; }

    // A client segment with payload or FIN, while binding (Holding to Installing). `room`: the
    // worker can hold one more packet (else Full, counted as `no_room`: the worker's packets, or
    // the client source's share of them). Held: the flight keeps `c.pkt`; otherwise the worker
    // frees it.
    FirstFlight::Add segment(const BindEnv &env, const ClientSeg &c, bool room, std::uint64_t now,
                             Actions &out, std::uint16_t no_room = KVS_R_DP_HOLD_FULL);
    // A client pure ACK while binding: its window and timestamp are the client's latest.
    void pure_ack(const ClientSeg &c);
    // The flow's pending count (ChooseScratch::pending) moves to `backend` / goes: set at each
    // choice, cleared when the backend's binds count it, or when the flow ends here.
    void set_pending(ChooseScratch &s, std::uint16_t backend);
    void clear_pending(ChooseScratch &s);
    // A client segment that echoes another SYN-ACK than ours: a new connection on this 4-tuple.
    bool from_other_connection(const ClientSeg &c) const {
        return !rebind_ && c.has_ts && ts_ && c.tsecr != ts_ours_;
    }
    // A client RST's seq could be the client's: within KVS_SEQ_SLACK past the stream's start (the
    // client cannot have sent further; its RST carries its next byte), XDP's bound for a close.
    // One from anywhere else (blind, off path) does not end the binding.
    bool rst_in_window(std::uint32_t seq) const { return seq - (ff_.isn() + 1) <= KVS_SEQ_SLACK; }
    // The client reset or left (its 4-tuple reused): abort the backend leg if one is open.
    void abort(const BindEnv &env, Actions &out);
    // Full: whether this flow is the slowloris shape (holding a head still incomplete after a
    // silent gap), and making room by resetting it. A flight that holds bytes beyond a hole
    // (a segment lost or refused, e.g. its head while the table was full) is a client waiting
    // to retransmit, not a slow one: it is evicted second, and silently (its segments are
    // dropped and come again with the retransmission), never reset.
    bool evictable(const BindEnv &env, std::uint64_t now) const {
        return phase_ == Phase::Holding && head_incomplete_ && now - last_seg_ >= env.cfg.gap;
    }
    bool waits_for_retransmission() const { return ff_.held_bytes() > ff_.contiguous(); }
    // The silence after which this flight binds on what it holds (BinderConfig::slow_gap).
    std::uint64_t bind_gap(const BindEnv &env) const;
    void evict(const BindEnv &env, Actions &out);

    // The timer armed by the last Arm action is due.
    void timer(const BindEnv &env, std::uint64_t now, Actions &out);

    // After Connect: the first candidate (or the one a request boundary chose).
    void connect(const BindEnv &env, std::uint64_t now, Actions &out);
    // The worker has no SNAT port towards backend(): counted; the next candidate, or the
    // client is reset when none is left (a request at a boundary stays on its old leg).
    void no_port(const BindEnv &env, std::uint64_t now, Actions &out);
    // After TryPool: the worker drew a leg (the flow installs at once) or has none.
    void pooled(const BindEnv &env, const LegHello &leg, std::uint64_t now, Actions &out);
    void not_pooled(const BindEnv &env, std::uint64_t now, Actions &out);

    // A segment from the backend being bound (SynSent), or its repeated SYN-ACK (Bound).
    void backend_segment(const BindEnv &env, const BackendSeg &b, std::uint64_t now, Actions &out);
    // After Install (Installing): whether both flow entries are in place.
    void installed(const BindEnv &env, bool ok, Actions &out);

    Phase phase() const { return phase_; }
    bool binding() const {
        return phase_ == Phase::Holding || phase_ == Phase::SynSent || phase_ == Phase::Installing;
    }
    FirstFlight &flight() { return ff_; }
    const FirstFlight &flight() const { return ff_; }
    std::uint32_t isn() const { return ff_.isn(); }
    std::uint32_t cookie_isn() const { return cookie_isn_; }
    std::uint16_t backend() const { return backend_; }
    std::uint8_t via() const { return via_; }
    KeyKind key_kind() const { return key_kind_; }
    // The hashes the choice used (a session key's, or the prompt's), and what the binding report
    // carries: that prefix, with the prompt's chained blocks (the backend now caches them).
    const PrefixHashes &hashes() const { return hashes_; }
    const PrefixHashes &report_hashes() const { return report_; }
    // The session count this request holds in env.sessions (SessionLimiter::kNone: none). The
    // worker takes it over once the request is on a backend (hand_over_session), and releases it
    // itself when the slot goes before that.
    std::uint32_t session_slot() const { return session_slot_; }
    void hand_over_session() { session_slot_ = SessionLimiter::kNone; }
    std::uint32_t prompt_bytes() const { return prompt_bytes_; }
    // Where the bound request ends in the client's stream, bytes from its first one (its head's
    // Content-Length; a request without one or Transfer-Encoding has no body); 0 when unknown
    // (chunked, not HTTP, a head not read whole). XDP takes the next request to start there.
    std::uint32_t request_end() const { return request_end_; }
    std::uint64_t created() const { return created_; }
    // Where the binding's time went (worker clock): when its first backend SYN (of any
    // candidate) was sent and when the SYN-ACK it accepted came; valid from Install on.
    std::uint64_t first_syn_at() const { return first_syn_at_; }
    std::uint64_t synack_at() const { return synack_at_; }
    std::uint16_t client_mss() const { return mss_; }
    std::uint8_t client_wscale() const { return wscale_; }
    std::uint8_t client_sack() const { return sack_; }
    bool client_ts() const { return ts_; }
    std::uint16_t client_window() const { return window_; }
    std::uint8_t family() const { return family_; }
    std::uint32_t ts_ours() const { return ts_ours_; }
    // Client TSval -> the backend leg's (our millisecond clock), fixed at the first SYN.
    std::uint32_t ts_delta() const { return ts_delta_; }
    // The accepted backend's handshake (valid from Install on).
    std::uint32_t backend_isn() const { return backend_isn_; }
    std::uint32_t backend_tsval() const { return backend_tsval_; }
    std::uint8_t backend_wscale() const { return backend_wscale_; }
    bool both_ts() const { return both_ts_; }
    // A pooled leg: its ISN less the client's (added to the client's sequence numbers on the
    // backend leg; 0 otherwise), and the window scale its SYN offered.
    bool pooled() const { return pooled_; }
    std::uint32_t leg_seq_delta() const { return pooled_ ? leg_isn_ - ff_.isn() : 0; }
    std::uint8_t leg_wscale() const { return leg_wscale_; }
    // The MSS the backend leg's SYN offered (the client's, or a pooled leg's).
    std::uint16_t leg_mss() const { return pooled_ ? leg_mss_ : mss_; }

   private:
    void check_ready(const BindEnv &env, std::uint64_t now, bool gap, Actions &out);
    void next_candidate(const BindEnv &env, std::uint64_t now, Actions &out);
    void syn(const BindEnv &env, Actions &out);
    void syn_and_arm(const BindEnv &env, std::uint64_t now, Actions &out);
    void open_leg(const BindEnv &env, std::uint64_t now, Actions &out);
    bool flight_settled() const;
    void settle(std::uint64_t now, Actions &out);
    void arm_holding(const BindEnv &env, std::uint64_t now, Actions &out) const;
    // `why`: reasons counted only when the client is reset (a request at a boundary resumed on
    // its old leg instead counts dp_request_move_failed: it was counted a client reset).
    void reset_client(const BindEnv &env, Actions &out, std::initializer_list<unsigned> why = {});
    // Rebinding, keyed: resume on the backend or move (Connect to a chosen one).
    void decide_rebind(const BindEnv &env, const RequestView &v,
                       std::span<const std::uint8_t> bytes, Actions &out);
    void resume(const BindEnv &env, Actions &out);
    void count_close(const BindEnv &env);
    Action ack_to_backend(std::uint32_t backend_seq, bool ts, std::uint32_t tsecr) const;

    FirstFlight ff_;  // ff_.isn() is the client's ISN
    Phase phase_ = Phase::Done;
    std::uint8_t ncand_ = 0, syn_tries_ = 0, via_ = 0;
    std::uint8_t wscale_ = KVS_WSCALE_NONE, sack_ = 0, backend_wscale_ = KVS_WSCALE_NONE;
    std::uint8_t family_ = KVS_AF_INET;
    bool ts_ = false, both_ts_ = false;
    bool full_ = false;           // a segment found the flight full: bind on the next look
    bool rebind_ = false;         // a request boundary of a bound connection
    bool old_closing_ = false;    // rebinding: the previous backend leg is closing
    bool prechosen_ = false;      // rebinding: the first candidate is already chosen
    bool counted_close_ = false;  // rebinding: the previous request left its backend's load
    // The backend this flow counts as pending in the worker's ChooseScratch (chosen, not yet in
    // its binds), or KVS_BACKEND_NONE.
    std::uint16_t pending_ = KVS_BACKEND_NONE;
    bool head_incomplete_ = true;  // the held bytes do not yet hold a whole request head
    KeyKind key_kind_ = KeyKind::FiveTuple;
    std::uint16_t mss_ = 0, window_ = 0, backend_ = KVS_BACKEND_NONE;
    std::uint16_t previous_ = KVS_BACKEND_NONE;  // rebinding: the backend the connection was on
    std::uint32_t cookie_isn_ = 0, tsval_ = 0, ts_ours_ = 0, ts_delta_ = 0;
    std::uint32_t tsval_first_ = 0;  // the earliest TSval of the flight (the backend leg's start)
    std::uint32_t backend_isn_ = 0, backend_tsval_ = 0, prompt_bytes_ = 0;
    std::uint64_t tuple_hash_ = 0, created_ = 0, last_seg_ = 0, deadline_ = 0;
    std::uint64_t first_syn_at_ = 0, synack_at_ = 0;
    bool syn_sent_ = false;
    bool ts_fixed_ = false;      // ts_delta_ fixed on tsval_first_ (a SYN sent, or a pooled leg)
    bool pooled_ = false;        // the backend leg came from the pool
    bool settling_ = false;      // pooled, SynSent: waiting for the rest of the client's flight
    std::uint32_t req_end_ = 0;  // the request's end in the stream (0: unknown)
    std::uint32_t request_end_ = 0;  // the same for XDP's tracking (request_end())
    std::uint8_t leg_wscale_ = KVS_WSCALE_NONE;
    std::uint16_t leg_mss_ = 0;
    std::uint32_t leg_isn_ = 0;
    std::uint16_t tried_[kMaxCand]{};
    std::uint32_t session_slot_ = SessionLimiter::kNone;
    PrefixHashes hashes_, report_;
};

}  // namespace kvsteer::dp
