// The backend connection pool: per worker and backend, a few backend connections opened before
// any client needs them, so a binding whose backend has a ready one skips the backend's
// handshake (its round trip is most of what binding adds to a request's latency:
// dataplane/README.md, "Backend connection pool"). A drawn leg is spliced to its client with
// sequence deltas on both directions (kvs_flowpair_params.leg_*).
//
// One option profile: the pool's SYNs offer MSS (per family), SACK, timestamps and window
// scaling, so a client is served from it only if it negotiated SACK, timestamps and window
// scaling with us and an MSS no smaller than the pool's (else the backend could send it larger
// segments than it takes); other clients are bound as before, with their own SYN.
//
// How many legs a backend gets follows its demand: the bindings that asked it for a leg (drawn
// or not) in the current or the previous max_age period, at least min_per_backend and at most
// per_backend. A backend nobody asked for in two periods keeps min_per_backend legs (0 by
// default: an idle backend costs no connections and no churn); min = max is a fixed pool.
//
// Upkeep: a drawn leg is replaced at the next upkeep while the demand holds; a ready leg older
// than max_age is reset (and replaced while the demand holds: backends close idle connections,
// uvicorn after 5 s by default); a backend that
// closes or resets a ready leg gets a reset back (never a half-close) and the leg is replaced;
// a leg whose SYN goes unanswered or is refused waits retry_after before the next try.
//
// Parked legs: a kept-alive connection's request that moves to another backend leaves its leg at
// a quiescent point (every byte either side sent acknowledged); the worker parks it here (park())
// as a Ready leg whose isn and backend_isn are the bytes before each side's next one, and a later
// binding to that backend draws it like one the pool opened (`reused`, with the MSS and window
// scale its own SYN offered and the newest TSval it carried). Places per backend are shared: the
// pool opens legs into at most open_per_backend of them, counting parked legs (0: it opens none
// and only keeps parked ones, --backend-reuse without --backend-pool).
//
// Pure: no DPDK, no clock of its own. What it sends and which SNAT ports it takes go through a
// PoolHost the worker implements (tests use a fake).
#pragma once

#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "binder.h"
#include "kvsteer/abi.h"

namespace kvsteer::dp {

struct PoolConfig {
    // Places per backend, for legs it opened and legs requests moved off alike (0: no pool).
    std::uint32_t per_backend = 0;
    // Legs kept per backend without demand (clamped to per_backend; the default keeps all:
    // a fixed pool).
    std::uint32_t min_per_backend = ~0u;
    std::uint64_t max_age = 0;         // ticks a ready leg may wait before it is replaced
    std::uint64_t syn_timeout = 0;     // ticks per SYN
    std::uint64_t retry_after = 0;     // ticks after a failed open before the next
    std::uint32_t syn_retries = 0;     // SYNs sent again before an open fails
    std::uint32_t opens_per_tick = 8;  // SYNs a single upkeep may start (no burst at start-up)
    std::uint32_t max_ports = 0;       // SNAT ports the pool's legs may hold at once (0: any)
    // Legs it opens per backend at most (clamped to per_backend; 0: it only keeps legs requests
    // moved off, park()). Parked legs count against it: the pool opens none while they suffice.
    std::uint32_t open_per_backend = ~0u;
    std::uint8_t wscale = 7;
    std::uint16_t mss4 = 1460, mss6 = 1440;
};

// One pooled backend connection (a leg).
struct PoolLeg {
    enum class State : std::uint8_t { Free, SynSent, Ready };
    State state = State::Free;
    std::uint16_t backend = KVS_BACKEND_NONE;
    std::uint16_t port = 0;  // our SNAT port
    // The backend as it was when the leg was opened (a changed address retires the leg).
    std::uint32_t addr[4]{};
    std::uint16_t bport = 0;  // network order
    std::uint8_t family = KVS_AF_INET;
    std::uint8_t tries = 0;
    std::uint8_t backend_wscale = KVS_WSCALE_NONE;
    bool ts = false;      // the backend answered with timestamps
    bool reused = false;  // parked by a request that moved off it (else opened by the pool)
    std::uint8_t wscale = KVS_WSCALE_NONE;  // what its SYN offered
    std::uint16_t mss = 0;                  // what its SYN offered
    // isn and backend_isn: a parked leg's are the bytes before each side's next one.
    std::uint32_t isn = 0, backend_isn = 0, backend_tsval = 0;
    std::uint32_t ts_floor = 0;  // parked: the newest TSval it may have carried
    std::uint64_t since = 0;     // SynSent: the last SYN; Ready: ready since; Free: not before
};

// What the pool sends (the worker builds it from the leg's addresses and its SNAT port).
struct PoolSend {
    enum class Kind : std::uint8_t { Syn, Ack, Rst };
    Kind kind;
    std::uint32_t seq = 0, ack = 0, tsval = 0, tsecr = 0;
    std::uint16_t mss = 0, window = 0;
    std::uint8_t wscale = KVS_WSCALE_NONE;
    bool ts = false;
};

class PoolHost {
   public:
    virtual ~PoolHost() = default;
    // A free SNAT port of this worker's range towards `backend`, or false.
    virtual bool take_port(std::uint16_t backend, std::uint16_t &port) = 0;
    virtual void give_port(std::uint16_t backend, std::uint16_t port) = 0;
    virtual void send(const PoolLeg &leg, const PoolSend &s) = 0;
    virtual std::uint32_t clock_ms() = 0;  // the backend legs' timestamp clock
    virtual std::uint32_t new_isn() = 0;
    virtual void inc(unsigned reason) = 0;
};

class BackendPool {
   public:
    explicit BackendPool(const PoolConfig &cfg);

    bool enabled() const { return cfg_.per_backend > 0; }
    bool opens_legs() const { return enabled() && cfg_.open_per_backend > 0; }
    const PoolConfig &config() const { return cfg_; }
    // The pool's MSS for a family: a client's MSS must be at least this to draw.
    std::uint16_t mss(std::uint8_t family) const {
        return family == KVS_AF_INET6 ? cfg_.mss6 : cfg_.mss4;
    }
    // Whether a client with these options can be served from the pool (a pool that only keeps
    // parked legs leaves the MSS to draw(): each leg's is the client's that opened it).
    bool fits(std::uint8_t family, std::uint16_t client_mss, std::uint8_t client_wscale,
              bool client_sack, bool client_ts) const {
        return client_ts && client_sack && client_wscale != KVS_WSCALE_NONE &&
               (!opens_legs() || client_mss >= mss(family));
    }

    // Opens, retries, retires and replaces legs against the backends as `t` has them now.
    void upkeep(const Tables &t, std::uint64_t now, PoolHost &host);
    // A ready leg to `backend` (as `t` has it now) whose SYN offered an MSS no larger than
    // `client_mss`, taken out of the pool with its port (the caller owns the port from now on);
    // false when there is none. Either way it counts as the backend's demand.
    bool draw(const Tables &t, std::uint16_t backend, std::uint16_t client_mss, std::uint64_t now,
              PoolLeg &out);
    // Keeps a leg a request moved off (Ready, at a quiescent point: each side's next byte is one
    // past isn / backend_isn) for a later draw, with its port (the pool owns it from now on);
    // false when the backend has no free place or cannot be chosen now (the caller resets the
    // leg and keeps its port).
    bool park(const Tables &t, const PoolLeg &leg, std::uint64_t now);
    // Legs the backend should have now (its demand, clamped to the configured bounds).
    std::uint32_t target(std::uint16_t backend) const;
    // Whether a backend segment with this key (backend -> SNAT) is to one of the pool's legs
    // (it goes to segment() then).
    bool owns(const kvs_flow_key &k) const { return by_leg_.count(LegKey::of(k)) != 0; }
    // A segment from the backend to one of the pool's legs.
    void segment(const kvs_flow_key &k, const BackendSeg &b, std::uint64_t now, PoolHost &host);
    // Resets every open leg and gives its port back (shutdown).
    void close_all(PoolHost &host);

    unsigned ready(std::uint16_t backend) const;
    unsigned open() const { return held_; }  // legs SynSent or Ready (each holds a port)

   private:
    PoolLeg &leg(std::uint16_t backend, std::uint32_t i) {
        return legs_[static_cast<std::size_t>(backend) * cfg_.per_backend + i];
    }
    void start(const Tables &t, PoolLeg &l, std::uint16_t backend, std::uint64_t now,
               PoolHost &host);
    void syn(PoolLeg &l, std::uint64_t now, PoolHost &host);
    void drop(PoolLeg &l, std::uint64_t not_before, PoolHost &host, bool rst);
    static bool same_backend(const PoolLeg &l, const kvs_backend &b);

    // A leg as the backend's segments name it: its address and port, our SNAT port (ports are
    // unique per backend only).
    struct LegKey {
        std::uint32_t addr[4];
        std::uint16_t bport, port;  // network order, host order
        std::uint8_t family;
        static LegKey of(const kvs_flow_key &k);
        static LegKey of(const PoolLeg &l);
        bool operator==(const LegKey &o) const {
            return bport == o.bport && port == o.port && family == o.family &&
                   std::memcmp(addr, o.addr, sizeof addr) == 0;
        }
    };
    struct LegKeyHash {
        std::size_t operator()(const LegKey &k) const;
    };

    PoolConfig cfg_;
    std::vector<PoolLeg> legs_;
    std::unordered_map<LegKey, std::int32_t, LegKeyHash> by_leg_;  // -> index in legs_
    std::uint32_t span_ = 0;  // backends [0, span_) may have legs
    // Draws asked of each backend in the current and the previous max_age period.
    std::vector<std::uint32_t> demand_, demand_prev_;
    std::uint64_t period_start_ = 0;
    std::uint32_t held_ = 0;           // legs SynSent or Ready
    std::vector<std::uint16_t> live_;  // the same per backend: upkeep skips backends at 0
};

}  // namespace kvsteer::dp
