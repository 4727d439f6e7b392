// Backend choice for one flow, as the dataplane makes it (and the simulator replays it):
// the affinity table, then bounded-load Maglev; or one of the baselines (round robin, 5-tuple
// Maglev), as kvs_config.steer_mode says.
#pragma once

#include <cstdint>
#include <span>

#include "kvsteer/abi.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/core/tables.h"

namespace kvsteer {

struct Choice {
    std::uint16_t backend = KVS_BACKEND_NONE;  // KVS_BACKEND_NONE: no eligible backend
    std::uint8_t via = KVS_VIA_MAGLEV;         // enum kvs_choice_via
};

// Recent PREFIX choices stay valid for this many affinity publishes (kvs_config generations)
// after the one current when they were made: long enough to cover kvsteerd's next report round,
// after which its table knows the prefix.
inline constexpr std::uint32_t kRecentGenerations = 2;

// An affinity-table holder whose match covers every block of the flight may hold at most this
// many times the flow's prompt blocks (PrefixHashes::prompt_blocks) of estimated work in flight
// more than the backend holding the least, while the slack rules its bound (light load) and its
// work is above c x the mean work: a holder busy with very long prompts (whose count of flows
// looks light) loses the requests that would wait behind them (tools/sim/README.md, rounds 4-5).
inline constexpr std::uint32_t kWorkGateRatio = 12;
// The same for a match shorter than the flight (not a fixed-prefix match): looser, since a burst
// of one shared prefix (SGLang's shape: 16 of a flight's 17 blocks) is many flows of one size.
inline constexpr std::uint32_t kWorkGatePartialRatio = 24;

// The dataplane's recent PREFIX choices: chained block hash -> the backend its flight was sent
// to, with kvs_config.generation at the time; direct-mapped by the hash's low bits (a newer key
// overwrites). Lets a burst of one new prefix follow its first request before kvsteerd has learnt
// and published it (the daemon's table lags by a report round). One table is shared by every
// worker of a dataplane (threads of one process): each slot is two relaxed 64-bit atomics, so a
// reader may pair a key with the backend of the slot's previous key; that misleads one choice at
// most, and the backend is still checked for eligibility and load like any affinity holder.
// Also each backend's estimated work in flight (`work`), kept the same way.
struct RecentChoices {
    static constexpr std::uint32_t kSlots = 4096;  // a power of two
    struct Slot {
        std::uint64_t key = 0;    // 0: empty (hashes are never 0)
        std::uint64_t value = 0;  // backend << 32 | generation
    };
    Slot slot[kSlots];
    // Prompt blocks (PrefixHashes::prompt_blocks, else n_blocks; at least 1) of the PREFIX flows
    // bound to a backend and not yet closed, estimated: each choice adds its flow's blocks; when
    // the backend's in-flight count is below `flows` (the count after the last update), closes
    // happened and `blocks` counts as shrunk in proportion (0 when none is in flight).
    struct Work {
        std::uint64_t blocks = 0;
        std::uint64_t flows = 0;
    };
    Work work[KVS_MAX_BACKENDS];
    // Each backend's recent intake: the flows chosen for it, a count that halves every
    // kIntakeHalfLifeNs, x1000, as of `at_ns` (ChooseScratch::now_ns). Kept as `work` is.
    struct Intake {
        std::uint64_t at_ns = 0;
        std::uint64_t milli = 0;
    };
    Intake intake[KVS_MAX_BACKENDS];
    // The same over the backends of each address family (0: IPv4, 1: IPv6; a flow never crosses
    // families): the gate's mean is this over the family's eligible backends (one out of rotation
    // takes no flows, and its share decays away; a retry's tried backends stay in it).
    Intake intake_family[2];
};

// The intake gate (tools/sim/README.md, round 6): an affinity holder (a recent choice or an
// affinity-table replica) whose recent intake (RecentChoices::Intake) with this flow counted, per
// unit of weight, is above c x the mean intake of its family's eligible backends (this flow
// counted) + kIntakeSlack loses the flow; the miss rule places it with that holder left out
// (unless it leaves no one). In-flight counts miss a returning cohort: a holder's conversations
// that finished together (one decode batch) leave it least loaded by count, and their next turns,
// all matching it, come back within a think time and queue their prefills behind each other
// there. Half-life of the counts, and the slack in flows:
inline constexpr std::uint64_t kIntakeHalfLifeNs = 200'000'000;
inline constexpr double kIntakeSlack = 6;

// Per-worker scratch so a choice allocates nothing.
struct ChooseScratch {
    std::uint32_t in_flight[KVS_MAX_BACKENDS];
    std::uint8_t eligible[KVS_MAX_BACKENDS];
    // Each eligible backend's weight over their mean weight (LoadView::share), filled only when the
    // eligible backends' weights differ.
    double share[KVS_MAX_BACKENDS];
    // Flows this caller chose a backend for and has not counted in its binds yet (the dataplane
    // counts a flow once its backend answered): part of each backend's in-flight here, so that a
    // burst chosen within one round trip sees its own earlier choices (it all went to one backend,
    // where the simulator, counting at the choice, spread it). The caller keeps it; zero for one
    // that counts at the choice.
    std::uint32_t pending[KVS_MAX_BACKENDS]{};
    std::uint32_t rr_cursor = 0;
    // The caller's monotonic clock (ns) at this choice, the same clock for every caller sharing
    // `recent`; 0: no intake gate (nor intake kept).
    std::uint64_t now_ns = 0;
    // Where recent choices are kept: the dataplane's shared table, or (null) `own`.
    RecentChoices *recent = nullptr;
    RecentChoices own;
};

// Reads t.config, t.backends, t.load, t.maglev and t.affinity (nothing else). Eligible: state
// KVS_BE_UP and not in `exclude` (the backends this flow already tried; non-empty makes `via`
// KVS_VIA_RETRY). In-flight: binds - closes - idle connections (idle_starts - idle_ends: kept-alive
// connections between requests) (+ s.pending), compared per unit of weight where the
// eligible backends' weights differ (LoadView::share: every bound below scales by the backend's
// weight over the mean, and the least loaded is the least in-flight per weight). PREFIX mode: first
// the recent choice (RecentChoices: s.recent, else s.own) for the deepest of the flight's blocks it
// holds, made at most kRecentGenerations generations ago, when that block is deeper than the
// affinity table's match (a fixed-prefix match counts as shallower than any block) and its backend
// is eligible and within affinity_bound() with the whole slack (not the depth's share, and no work
// gate: a burst of one prefix follows its first request; tools/sim/README round 5; via AFFINITY)
// and passes the intake gate (kIntakeSlack: not when s.now_ns is 0);
// else the least loaded replica of the deepest affinity match whose in_flight + 1 stays within its
// backend's max_load (and, when that is a queue cap, max_load_cap, also the bound below), or, when
// that is 0, within affinity_bound() (load_bound.h: c x the mean,
// never below the least in_flight + 1 + load_slack x the share of the flight's blocks the match
// covers, at least 1; a fixed-prefix match: the whole slack) and, for a match other than a
// fixed-prefix one while that bound is the slack's rather than c x the mean, whose estimated work
// in flight (RecentChoices::Work) is within c x the mean work or within kWorkGateRatio (a match
// covering every block of the flight; else kWorkGatePartialRatio) x the flow's prompt blocks of the
// least, and which passes the intake gate; else choose_least_loaded() over the active Maglev half
// on h.prefix with miss_tolerance(total, n) (the first backend of the walk within floor(mean / 10)
// of the least loaded: the least loaded at light load; via MAGLEV when that is the walk's first
// candidate, else MAGLEV_SPILL), a holder the intake gate refused left out unless no other
// backend is eligible. Every PREFIX choice but a retry is recorded in the recent choices.
// FIVE_TUPLE: Maglev on `five_tuple_hash`, load ignored. ROUND_ROBIN: the next eligible id.
// `family` (enum kvs_family): only backends of that address family are eligible (a flow is never
// translated between IPv4 and IPv6); KVS_AF_NONE: any.
Choice choose_backend(const Tables &t, const PrefixHashes &h, std::uint64_t five_tuple_hash,
                      std::span<const std::uint16_t> exclude, ChooseScratch &s,
                      std::uint8_t family = KVS_AF_NONE) noexcept;

}  // namespace kvsteer
