#include "binder.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "kvsteer/core/flight_key.h"
#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

namespace kvsteer::dp {

namespace {

// Sequence-space comparison: a before b.
inline bool seq_lt(std::uint32_t a, std::uint32_t b) {
    return static_cast<std::int32_t>(a - b) < 0;
}

Action act(Action::Kind k) {
    Action a{};
    a.kind = k;
    return a;
}

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
}

// Whether the request head (bytes before the blank line) has a header line named `name`
// (lower case, with its colon). Lines end in LF, CRLF or not: as the locator reads them.
bool head_has(std::span<const std::uint8_t> head, std::string_view name) {
    for (std::size_t i = 1; i + name.size() <= head.size(); ++i) {
        if (head[i - 1] != '\n') continue;
        std::size_t k = 0;
        while (k < name.size() && lower(static_cast<char>(head[i + k])) == name[k]) ++k;
        if (k == name.size()) return true;
    }
    return false;
}

// Whether the request line (ending in LF or CRLF) says HTTP/1.0.
bool http10(std::span<const std::uint8_t> head) {
    for (std::size_t i = 0; i < head.size(); ++i)
        if (head[i] == '\n') {
            const std::size_t end = (i > 0 && head[i - 1] == '\r') ? i - 1 : i;
            return end >= 8 && std::string_view(reinterpret_cast<const char *>(&head[end - 8]),
                                                8) == "HTTP/1.0";
        }
    return false;
}

}  // namespace

void Binder::start(const BindEnv &env, const ClientHello &h, std::uint64_t now) {
    clear_pending(env.scratch);  // (released with the previous flow: nothing, normally)
    // Every field a flow reads, reset one by one (not a whole-object copy: the held segments'
    // table and the hashes are large and are written before they are read).
    ncand_ = syn_tries_ = via_ = 0;
    backend_wscale_ = KVS_WSCALE_NONE;
    both_ts_ = full_ = rebind_ = old_closing_ = prechosen_ = counted_close_ = syn_sent_ = false;
    ts_fixed_ = false;
    pooled_ = settling_ = false;
    leg_wscale_ = KVS_WSCALE_NONE;
    leg_isn_ = req_end_ = request_end_ = 0;
    first_syn_at_ = synack_at_ = 0;
    head_incomplete_ = true;
    key_kind_ = KeyKind::FiveTuple;
    backend_ = previous_ = KVS_BACKEND_NONE;
    ts_delta_ = backend_isn_ = backend_tsval_ = prompt_bytes_ = 0;
    session_slot_ = SessionLimiter::kNone;
    phase_ = Phase::Holding;
    ff_.start(h.isn, h.isn_known);
    cookie_isn_ = h.cookie_isn;
    mss_ = h.mss;
    wscale_ = h.wscale;
    sack_ = h.sack;
    ts_ = h.ts != 0;
    ts_ours_ = h.ts_ours;
    tsval_ = tsval_first_ = h.tsval;
    window_ = h.window;
    tuple_hash_ = h.tuple_hash;
    family_ = h.family;
    created_ = last_seg_ = now;
    deadline_ = now + env.cfg.client_idle;
}

void Binder::start_rebind(const BindEnv &env, const RebindHello &r, std::uint64_t now) {
    start(env, r.h, now);
    rebind_ = true;
    previous_ = r.backend;
}

FirstFlight::Add Binder::segment(const BindEnv &env, const ClientSeg &c, bool room,
                                 std::uint64_t now, Actions &out, std::uint16_t no_room) {
    if (c.has_ts && !seq_lt(c.tsval, tsval_)) tsval_ = c.tsval;
    // The leg's first TSval, until the SYN (or a pooled leg) fixed the mapping on it: lowered
    // after, the handshake's ACK carried a TSval below the SYN's, which the backend drops (PAWS).
    if (c.has_ts && !ts_fixed_ && seq_lt(c.tsval, tsval_first_)) tsval_first_ = c.tsval;
    window_ = c.window;
    // max_held triggers the bind; segments the client keeps sending while the backend handshake
    // runs are still held (up to twice that, and at least an initial window of 10 segments of the
    // client's MSS: with jumbo frames twice the default held 3, and the rest of the window was
    // dropped and retransmitted) so they need no retransmission.
    const std::uint32_t budget = std::max<std::uint32_t>(2 * env.cfg.max_held, 10u * mss_);
    // Without room (the worker's or the source's packets) a duplicate is still one, and a lost
    // head still takes the place of later segments (before, both were refused as Full: the
    // duplicate also made a flight whose head was incomplete bind on the 5-tuple, and the head
    // never got in while the cap held).
    const FirstFlight::Add r = ff_.add(c.pkt, c.data, c.seq, c.len, c.fin, budget, room);
    switch (r) {
        case FirstFlight::Add::Held:
            last_seg_ = now;
            if (settling_ && flight_settled()) settle(now, out);
            if (phase_ == Phase::Holding) check_ready(env, now, false, out);
            if (phase_ == Phase::Holding) arm_holding(env, now, out);
            break;
        case FirstFlight::Add::Duplicate:
            env.inc(KVS_R_DP_DUP_SEGMENT);
            break;
        case FirstFlight::Add::Stale:
            env.inc(KVS_R_DP_STALE_SEGMENT);
            break;
        case FirstFlight::Add::Full:
            env.inc(room ? unsigned{KVS_R_DP_HOLD_FULL} : no_room);
            if (phase_ == Phase::Holding) {
                full_ = true;
                check_ready(env, now, true, out);
            }
            break;
    }
    return r;
}

void Binder::pure_ack(const ClientSeg &c) {
    if (c.has_ts && !seq_lt(c.tsval, tsval_)) tsval_ = c.tsval;
    window_ = c.window;
}

// Binds the flight once it is worth binding: the contiguous bytes from the stream's start cover
// the hash depth, the request is complete (or waits for 100-continue), the held bytes reach
// max_held, the head is not HTTP; or, after a silent gap (`gap`), on what is held. Never from a
// flight whose start is unsure (no timestamp proof and no request line) before unsure_wait: its
// head was most likely lost and is on its way.
void Binder::check_ready(const BindEnv &env, std::uint64_t now, bool gap, Actions &out) {
    const std::uint32_t max_held =
        std::min<std::uint32_t>(env.cfg.max_held, static_cast<std::uint32_t>(env.buf.size()));
    std::span<const std::uint8_t> bytes = ff_.bytes(env.buf.data(), max_held);
    const auto n = static_cast<std::uint32_t>(bytes.size());
    if (n == 0) {  // nothing from the stream's start yet
        head_incomplete_ = true;
        return;
    }
    const bool sure = ff_.isn_known() || begins_request(bytes.data(), n);
    if (!sure && now - created_ < env.cfg.unsure_wait) return;
    RequestView v = locate_request(bytes);
    // A chunked body is keyed on its chunks' data with the framing taken out, in env.buf: a flight
    // whose first segment holds it all is read in place (a held packet's payload), so it is copied
    // there first; the held packets are never touched.
    if (v.chunked) {
        if (bytes.data() != env.buf.data()) {
            std::memcpy(env.buf.data(), bytes.data(), bytes.size());
            bytes = {env.buf.data(), bytes.size()};
            v = locate_request(bytes);
        }
        dechunk_request(std::span<std::uint8_t>(env.buf.data(), bytes.size()), v);
    }
    head_incomplete_ = v.status == LocateStatus::NeedMoreHead;
    if (head_incomplete_ && ff_.complete_to_fin() && n == ff_.contiguous()) {
        // Closed before its request head was complete (a slowloris connection going away):
        // nothing to bind, and a backend connection would only carry a broken head.
        reset_client(env, out, {KVS_R_DP_RST_FIN_INCOMPLETE_HEAD});
        return;
    }
    const HashParams hp = hash_params(*env.t.config);
    // The client's FIN makes the flight ready only with every byte before it held: a FIN behind a
    // hole (a segment lost before the appliance) waits for the retransmission, as any hole does
    // (before, it bound at once on the bytes before the hole: a head or prompt cut short).
    bool ready = gap || full_ || ff_.complete_to_fin() || n + 1460 > max_held;
    if (v.status == LocateStatus::Ok)
        ready |= v.body_complete || v.expect_continue || v.key_len >= bind_depth(hp);
    else if (v.status != LocateStatus::NeedMoreHead)
        ready = true;  // not HTTP: nothing to wait for
    else if (gap && !full_)
        ready = false;  // silent with an incomplete head: wait for more (or the idle timeout)
    if (!ready) return;
    if (!sure) env.inc(KVS_R_DP_START_UNSURE);
    // Where the request ends in the stream, when its head says (a pooled leg waits for it), or,
    // chunked, when its last chunk and trailers are in the flight (the locator walked them: the
    // framed body is body_available bytes; before, a chunked request's end was always unknown,
    // so no later request of its connection was steered).
    const bool chunked_whole = v.status == LocateStatus::Ok && v.chunked && v.body_complete;
    if (v.status == LocateStatus::Ok && v.expect_continue)
        req_end_ = static_cast<std::uint32_t>(v.body_offset);
    else if (v.status == LocateStatus::Ok && !v.chunked)  // no Content-Length: no body
        req_end_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(
            v.body_offset + static_cast<std::uint64_t>(std::max<std::int64_t>(v.content_length, 0)),
            0xffffffffu));
    else if (chunked_whole)
        req_end_ = static_cast<std::uint32_t>(v.body_offset + v.body_available);
    request_end_ = 0;
    if (v.status == LocateStatus::Ok && !v.chunked && v.content_length < (1ll << 30))
        request_end_ = static_cast<std::uint32_t>(
            v.body_offset +
            static_cast<std::uint64_t>(std::max<std::int64_t>(v.content_length, 0)));
    else if (chunked_whole)
        request_end_ = static_cast<std::uint32_t>(v.body_offset + v.body_available);

    const kvs_config &cfg = *env.t.config;
    const FlightKey k = key_flight(hp, session_headers(cfg), v, bytes, tuple_hash_);
    // A session header's key steers this request while its key has room under session-cap.
    hashes_ = env.sessions ? steering_hashes(k, *env.sessions, session_cap(cfg), session_slot_)
                           : k.hashes;
    report_ = k.hashes;
    report_.prefix = hashes_.prefix;
    if (k.session.status == SessionStatus::Bad) env.inc(KVS_R_DP_SESSION_BAD);
    if (k.session.status == SessionStatus::Key)
        env.inc(session_slot_ != SessionLimiter::kNone ? KVS_R_DP_SESSION_KEY
                                                       : KVS_R_DP_SESSION_OVER_CAP);
    prompt_bytes_ = k.prompt_bytes;
    key_kind_ = k.kind;
    switch (k.kind) {
        case KeyKind::OpenAIPrompt:
            env.inc(KVS_R_DP_KEY_OPENAI_PROMPT);
            break;
        case KeyKind::OpenAIChat:
            env.inc(KVS_R_DP_KEY_OPENAI_CHAT);
            break;
        case KeyKind::BodyPrefix:
            env.inc(KVS_R_DP_KEY_BODY_PREFIX);
            break;
        default:
            env.inc(KVS_R_DP_KEY_FIVE_TUPLE);
            break;
    }
    // Keyed: where the stream starts is settled (a backend SYN carries it); an inferred start that
    // moved back afterwards no longer matched the backend's SYN-ACK.
    ff_.fix_start();
    if (rebind_) {
        decide_rebind(env, v, bytes, out);
        return;
    }
    phase_ = Phase::SynSent;
    ncand_ = 0;
    out.push(act(Action::Kind::Connect));
}

// A keyed request at a boundary of a bound connection: left on its backend when the protocol
// ties it there or the choice is the same backend (the common case: no new connection), else
// moved to a new backend leg.
void Binder::decide_rebind(const BindEnv &env, const RequestView &v,
                           std::span<const std::uint8_t> bytes, Actions &out) {
    // The previous request is complete: it leaves its backend's in-flight count (requests, not
    // connections, are what the load bound weighs), and this one is counted where it goes.
    count_close(env);
    const auto head = bytes.first(v.status == LocateStatus::Ok
                                      ? std::min<std::size_t>(v.body_offset, bytes.size())
                                      : bytes.size());
    // A request the protocol ties to its backend stays there; when that backend's leg closed
    // while the request was held (its FIN or RST not passed on), on a new leg to the same backend.
    unsigned kept = 0;
    if (v.status == LocateStatus::Ok && v.expect_continue)
        kept = KVS_R_DP_REQ_KEPT_EXPECT;
    else if (head_has(head, "upgrade:"))
        kept = KVS_R_DP_REQ_KEPT_UPGRADE;
    else if (http10(head))
        kept = KVS_R_DP_REQ_KEPT_HTTP10;
    if (kept) {
        env.inc(kept);
        if (!old_closing_) return resume(env, out);
    }
    // Kept with its leg closed: the same backend while it takes new flows (a backend closing
    // its legs may be draining or going away; weight 0 is out of rotation: it took one anyway),
    // else wherever the policy sends it.
    const bool previous_up =
        previous_ < KVS_MAX_BACKENDS &&
        __atomic_load_n(&env.t.backends[previous_].state, __ATOMIC_ACQUIRE) == KVS_BE_UP &&
        __atomic_load_n(&env.t.backends[previous_].weight, __ATOMIC_RELAXED) != 0;
    const Choice ch = kept && previous_up ? Choice{previous_, via_}
                                          : choose_backend(env.t, hashes_, hashes_.prefix, {},
                                                           env.scratch, family_);
    if (old_closing_) {
        env.inc(KVS_R_DP_REQ_BACKEND_CLOSING);  // moves, to a new leg even on the same backend
    } else if (ch.backend == previous_) {
        env.inc(KVS_R_DP_REQ_SAME_BACKEND);
        via_ = ch.via;
        resume(env, out);
        out.push(act(Action::Kind::Report));  // the daemon learns from every request's binding
        return;
    }
    if (ch.backend == KVS_BACKEND_NONE) {
        reset_client(env, out, {KVS_R_DP_NO_BACKEND, KVS_R_DP_BIND_FAIL_RST_CLIENT});
        return;
    }
    tried_[0] = ch.backend;
    ncand_ = 1;
    backend_ = ch.backend;
    via_ = ch.via;
    set_pending(env.scratch, ch.backend);
    prechosen_ = true;
    phase_ = Phase::SynSent;
    out.push(act(Action::Kind::Connect));
}

void Binder::set_pending(ChooseScratch &s, std::uint16_t backend) {
    clear_pending(s);
    if (backend >= KVS_MAX_BACKENDS) return;
    ++s.pending[backend];
    pending_ = backend;
}

void Binder::clear_pending(ChooseScratch &s) {
    if (pending_ < KVS_MAX_BACKENDS && s.pending[pending_]) --s.pending[pending_];
    pending_ = KVS_BACKEND_NONE;
}

void Binder::count_close(const BindEnv &env) {
    if (counted_close_) return;
    counted_close_ = true;
    if (env.t.load && previous_ < KVS_MAX_BACKENDS)
        __atomic_fetch_add(&env.t.load[previous_].closes, 1, __ATOMIC_RELAXED);
}

void Binder::resume(const BindEnv &env, Actions &out) {
    clear_pending(env.scratch);
    if (counted_close_ && env.t.load && previous_ < KVS_MAX_BACKENDS)
        __atomic_fetch_add(&env.t.load[previous_].binds, 1, __ATOMIC_RELAXED);
    backend_ = previous_;
    phase_ = Phase::Bound;
    out.push(act(Action::Kind::Resume));
}

void Binder::connect(const BindEnv &env, std::uint64_t now, Actions &out) {
    if (!prechosen_) return next_candidate(env, now, out);
    prechosen_ = false;  // rebinding: the candidate decide_rebind chose
    syn_tries_ = 0;
    open_leg(env, now, out);
}

// Ports are unique per backend: none left towards this candidate, the next one may have some
// (a request at a boundary stays on its old leg instead, unless that leg is closing).
void Binder::no_port(const BindEnv &env, std::uint64_t now, Actions &out) {
    env.inc(KVS_R_DP_PORTS_EXHAUSTED);
    if (phase_ == Phase::SynSent && (!rebind_ || old_closing_))
        return next_candidate(env, now, out);
    reset_client(env, out);
}

void Binder::next_candidate(const BindEnv &env, std::uint64_t now, Actions &out) {
    if (ncand_ >= env.cfg.max_candidates || ncand_ >= kMaxCand) {
        reset_client(env, out, {KVS_R_DP_BIND_FAIL_RST_CLIENT});
        return;
    }
    const Choice ch =
        choose_backend(env.t, hashes_, hashes_.prefix,
                       std::span<const std::uint16_t>(tried_, ncand_), env.scratch, family_);
    if (ch.backend == KVS_BACKEND_NONE) {
        reset_client(env, out, {KVS_R_DP_NO_BACKEND, KVS_R_DP_BIND_FAIL_RST_CLIENT});
        return;
    }
    if (ncand_ > 0) env.inc(KVS_R_DP_BIND_RETRY);
    tried_[ncand_++] = ch.backend;
    backend_ = ch.backend;
    via_ = ch.via;
    set_pending(env.scratch, ch.backend);
    syn_tries_ = 0;
    open_leg(env, now, out);
}

// A leg to the chosen backend: a pooled one if the worker has one, else a SYN.
void Binder::open_leg(const BindEnv &env, std::uint64_t now, Actions &out) {
    if (env.pool) {
        out.push(act(Action::Kind::TryPool));
        return;
    }
    syn_and_arm(env, now, out);
}

void Binder::not_pooled(const BindEnv &env, std::uint64_t now, Actions &out) {
    syn_and_arm(env, now, out);
}

// A pooled leg: its handshake is done, so the flow installs as soon as the client's first
// flight is all here. Its own sequence space is spliced to the client's (leg_seq_delta); the
// client's timestamps move onto our clock as a SYN's would.
//
// Why wait for the flight: once the pair is installed XDP forwards the client's segments
// itself, while the flight's segments still on their way to the worker are forwarded by it,
// later; the backend then sees the client's next window overtake them (a burst of duplicate
// ACKs and a spurious retransmission). Without a pool the backend's round trip covers that
// wait. Settled: the request is whole, the client's FIN, or its initial window (10 segments) is
// here; else after the bind gap.
void Binder::pooled(const BindEnv &env, const LegHello &leg, std::uint64_t now, Actions &out) {
    pooled_ = true;
    leg_isn_ = leg.isn;
    leg_wscale_ = leg.wscale;
    leg_mss_ = leg.mss;
    // As syn() maps them, onto our clock; a reused leg's never below what it already carried.
    std::uint32_t start = env.clock_ms;
    if (leg.reused && seq_lt(start, leg.ts_floor + 1)) start = leg.ts_floor + 1;
    ts_delta_ = start - tsval_first_;
    ts_fixed_ = true;
    backend_isn_ = leg.backend_isn;
    backend_tsval_ = leg.backend_tsval;
    backend_wscale_ = leg.backend_wscale;
    both_ts_ = ts_ && leg.ts;
    if (!syn_sent_) first_syn_at_ = now;
    if (flight_settled()) return settle(now, out);
    settling_ = true;  // SynSent until then: segments are held, the timer bounds the wait
    deadline_ = now + env.cfg.gap;
    Action a = act(Action::Kind::Arm);
    a.when = deadline_;
    out.push(a);
}

bool Binder::flight_settled() const {
    if (ff_.complete_to_fin() || ff_.size() >= 10) return true;
    if (req_end_ && ff_.contiguous() >= req_end_) return true;
    const std::uint32_t seg = mss_ > 100 ? mss_ - 40u : 536u;  // payload, less any options
    return ff_.contiguous() >= 10u * seg;
}

void Binder::settle(std::uint64_t now, Actions &out) {
    settling_ = false;
    synack_at_ = now;
    phase_ = Phase::Installing;
    out.push(act(Action::Kind::Install));
}

// A SYN to the backend (the first or a retry) and the timer for its answer.
void Binder::syn_and_arm(const BindEnv &env, std::uint64_t now, Actions &out) {
    if (!syn_sent_) first_syn_at_ = now;
    syn_sent_ = true;
    syn(env, out);
    deadline_ = now + env.cfg.syn_timeout;
    Action a = act(Action::Kind::Arm);
    a.when = deadline_;
    out.push(a);
}

void Binder::syn(const BindEnv &env, Actions &out) {
    // The backend leg's timestamps run on our monotonic millisecond clock, not the client's: a
    // backend that still holds this SNAT 4-tuple in TIME_WAIT from an earlier flow accepts a SYN
    // with a newer timestamp (RFC 6191) instead of answering with a challenge ACK.
    //
    // The flight's earliest TSval maps to now, and the SYN carries it: the backend's ts_recent
    // must not pass the held segments' TSvals, or it drops the older ones as PAWS failures (a
    // head written a few ms before its body).
    if (syn_tries_ == 0) ts_delta_ = env.clock_ms - tsval_first_;
    ts_fixed_ = true;
    ++syn_tries_;  // a SYN the worker could not build counts as sent: the timer retries it
    Action a = act(Action::Kind::SynToBackend);
    a.seq = ff_.isn();  // the client's own ISN: no sequence translation client -> backend
    a.tsval = tsval_first_ + ts_delta_;
    a.ts = ts_;
    out.push(a);
}

// Acknowledges the backend's SYN-ACK (sequence `backend_seq`) as the client would have.
Action Binder::ack_to_backend(std::uint32_t backend_seq, bool ts, std::uint32_t tsecr) const {
    Action a = act(Action::Kind::AckToBackend);
    a.seq = ff_.isn() + 1 + leg_seq_delta();
    a.ack = backend_seq + 1;
    a.window = window_;
    a.ts = ts;
    // Before the flush, no later than the held segments' TSvals (see syn()).
    a.tsval = (phase_ == Phase::Bound ? tsval_ : tsval_first_) + ts_delta_;
    a.tsecr = tsecr;
    return a;
}

void Binder::backend_segment(const BindEnv &env, const BackendSeg &b, std::uint64_t now,
                             Actions &out) {
    const std::uint8_t fl = b.flags;
    const bool synack = (fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK);
    if (phase_ == Phase::Bound && synack) {
        // Our ACK was lost: the backend repeats its SYN-ACK. Acknowledge it again.
        env.inc(KVS_R_PUNT_BACKEND_SYNACK);
        out.push(ack_to_backend(b.seq, ts_ && b.has_ts, b.tsval));
        return;
    }
    if (phase_ == Phase::Installing && synack) {
        env.inc(KVS_R_PUNT_BACKEND_SYNACK);
        // The ACK that follows the install answers it too; a pooled leg has none to follow.
        if (pooled_) out.push(ack_to_backend(b.seq, ts_ && b.has_ts, b.tsval));
        return;
    }
    if (phase_ != Phase::SynSent) {
        env.inc(KVS_R_PUNT_BACKEND_OTHER);
        return;
    }
    if (settling_) {
        if (fl & (KVS_TCP_FIN | KVS_TCP_RST)) {
            // The pooled leg closed under us (a backend's idle close crossing the draw): reset
            // it, and this backend gets a SYN of its own from the same port.
            env.inc(KVS_R_DP_POOL_CLOSED_BY_BACKEND);
            if (!(fl & KVS_TCP_RST)) {
                Action r = act(Action::Kind::RstToBackend);
                r.seq = ff_.isn() + 1 + leg_seq_delta();
                out.push(r);
            }
            pooled_ = settling_ = false;
            syn_and_arm(env, now, out);
            return;
        }
        env.inc(KVS_R_PUNT_BACKEND_OTHER);
        return;
    }
    if ((fl & KVS_TCP_RST) && (fl & KVS_TCP_ACK) && b.ack == ff_.isn() + 1) {
        env.inc(KVS_R_DP_BACKEND_RST);
        if (env.t.load)
            __atomic_fetch_add(&env.t.load[backend_].bind_fail_rst, 1, __ATOMIC_RELAXED);
        next_candidate(env, now, out);
        return;
    }
    if (synack && b.ack == ff_.isn() + 1) {
        env.inc(KVS_R_PUNT_BACKEND_SYNACK);
        backend_isn_ = b.seq;
        backend_tsval_ = b.tsval;
        backend_wscale_ = b.wscale;
        both_ts_ = ts_ && b.has_ts;
        synack_at_ = now;
        phase_ = Phase::Installing;
        out.push(act(Action::Kind::Install));
        return;
    }
    if ((fl & (KVS_TCP_SYN | KVS_TCP_RST | KVS_TCP_ACK)) == KVS_TCP_ACK) {
        // A challenge ACK: the backend still holds this 4-tuple in TIME_WAIT (an earlier flow,
        // or a previous dataplane run). Reset that old connection as a TCP client does (RFC 793:
        // RST with seq = the ACK's ack) and send our SYN again at once.
        env.inc(KVS_R_DP_CHALLENGE_ACK);
        Action r = act(Action::Kind::RstToBackend);
        r.seq = b.ack;
        out.push(r);
        if (syn_tries_ <= env.cfg.syn_retries + 2) syn(env, out);
        return;
    }
    env.inc(KVS_R_PUNT_BACKEND_OTHER);
}

void Binder::installed(const BindEnv &env, bool ok, Actions &out) {
    if (!ok) {
        env.inc(KVS_R_DP_FLOW_INSTALL_FAIL);
        Action r = act(Action::Kind::RstToBackend);
        r.seq = ff_.isn() + 1 + leg_seq_delta();
        out.push(r);
        reset_client(env, out, {KVS_R_DP_BIND_FAIL_RST_CLIENT});
        return;
    }
    // A pooled leg acknowledged its SYN-ACK when it was opened.
    if (!pooled_) out.push(ack_to_backend(backend_isn_, both_ts_, backend_tsval_));
    if (rebind_) {
        // The request moved: the previous leg is parked for reuse or reset in its window
        // (Worker::park_old_leg), and no longer counted.
        Action r = act(Action::Kind::RstOldLeg);
        r.seq = ff_.isn() + 1;
        out.push(r);
        env.inc(KVS_R_DP_REQ_MOVED);
    }
    phase_ = Phase::Bound;
    out.push(act(Action::Kind::Flush));
    out.push(act(Action::Kind::Report));
    if (env.t.load) __atomic_fetch_add(&env.t.load[backend_].binds, 1, __ATOMIC_RELAXED);
    clear_pending(env.scratch);  // counted in its binds now
    env.inc(KVS_R_DP_BIND_OK);
    switch (via_) {
        case KVS_VIA_AFFINITY:
            env.inc(KVS_R_DP_VIA_AFFINITY);
            break;
        case KVS_VIA_MAGLEV:
            env.inc(KVS_R_DP_VIA_MAGLEV);
            break;
        case KVS_VIA_MAGLEV_SPILL:
            env.inc(KVS_R_DP_VIA_MAGLEV_SPILL);
            break;
        case KVS_VIA_ROUND_ROBIN:
            env.inc(KVS_R_DP_VIA_ROUND_ROBIN);
            break;
        default:
            break;
    }
}

void Binder::timer(const BindEnv &env, std::uint64_t now, Actions &out) {
    if (phase_ == Phase::Holding) {
        if (now >= deadline_) {
            reset_client(env, out, {KVS_R_DP_CLIENT_IDLE_DROP});
            return;
        }
        // The client is window-limited and silent: bind on what we have, unless not even the
        // request head is complete (or its start is unsure and the wait is not over).
        if (now - last_seg_ >= bind_gap(env)) check_ready(env, now, true, out);
        if (phase_ == Phase::Holding) arm_holding(env, now, out);
    } else if (phase_ == Phase::SynSent && settling_) {
        if (now >= deadline_) settle(now, out);  // the rest of the flight never came
    } else if (phase_ == Phase::SynSent && now >= deadline_) {
        if (syn_tries_ <= env.cfg.syn_retries) {
            syn_and_arm(env, now, out);
        } else {
            env.inc(KVS_R_DP_BACKEND_TIMEOUT);
            if (env.t.load)
                __atomic_fetch_add(&env.t.load[backend_].bind_fail_timeout, 1, __ATOMIC_RELAXED);
            next_candidate(env, now, out);
        }
    }
}

std::uint64_t Binder::bind_gap(const BindEnv &env) const {
    const std::uint32_t initial_window = 10u * (mss_ ? mss_ : 536u);
    if (env.cfg.slow_gap <= env.cfg.gap || ff_.contiguous() >= initial_window) return env.cfg.gap;
    return env.cfg.slow_gap;
}

// When a holding flight next needs a look: its idle deadline, the end of its silent gap, or the
// end of the unsure-start wait, whichever comes first.
void Binder::arm_holding(const BindEnv &env, std::uint64_t now, Actions &out) const {
    std::uint64_t when = std::min(deadline_, last_seg_ + bind_gap(env));
    if (when <= now) when = deadline_;
    if (!ff_.isn_known() && created_ + env.cfg.unsure_wait > now)
        when = std::min(when, created_ + env.cfg.unsure_wait);
    Action a = act(Action::Kind::Arm);
    a.when = std::max(when, now + 1);
    out.push(a);
}

void Binder::abort(const BindEnv &env, Actions &out) {
    if (phase_ == Phase::SynSent || phase_ == Phase::Installing) {
        Action r = act(Action::Kind::RstToBackend);
        r.seq = ff_.isn() + 1 + leg_seq_delta();
        out.push(r);
    }
    if (rebind_) {  // the whole connection is over: its previous leg too
        count_close(env);
        Action r = act(Action::Kind::RstOldLeg);
        r.seq = ff_.isn() + 1;
        out.push(r);
    }
    phase_ = Phase::Done;
    out.push(act(Action::Kind::Release));
}

void Binder::evict(const BindEnv &env, Actions &out) {
    if (!rebind_ && waits_for_retransmission()) {
        // The client retransmits what is missing and, once we no longer ACK anything, the rest:
        // dropping what we hold loses nothing, a reset would lose the connection.
        env.inc(KVS_R_DP_HOLD_EVICTED_GAP);
        phase_ = Phase::Done;
        out.push(act(Action::Kind::Release));
        return;
    }
    env.inc(KVS_R_DP_HOLD_EVICTED);
    reset_client(env, out);
}

// Resets the client at the end of what it sent that we hold, and ends the flow. A request at a
// boundary is left on its backend instead while that leg is open (nothing is lost: the
// connection goes on as it would without per-request steering).
void Binder::reset_client(const BindEnv &env, Actions &out, std::initializer_list<unsigned> why) {
    if (rebind_) {
        if (!old_closing_) {
            env.inc(KVS_R_DP_REQ_MOVE_FAILED);
            return resume(env, out);
        }
        count_close(env);
        Action o = act(Action::Kind::RstOldLeg);
        o.seq = ff_.isn() + 1;
        out.push(o);
    }
    for (unsigned r : why) env.inc(r);
    const std::uint32_t max_held =
        std::min<std::uint32_t>(env.cfg.max_held, static_cast<std::uint32_t>(env.buf.size()));
    Action r = act(Action::Kind::RstToClient);
    r.seq = cookie_isn_ + 1;
    r.ack = ff_.isn() + 1 + std::min(ff_.contiguous(), max_held);
    out.push(r);
    phase_ = Phase::Done;
    out.push(act(Action::Kind::Release));
}

}  // namespace kvsteer::dp
