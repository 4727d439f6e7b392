// A fleet of appliances: membership epochs -> the owner table (kvs_owner) and kvs_fleet. Pure:
// every appliance given the same members and epochs computes the same table and digest.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/control/net.h"

namespace kvsteer::control {

// A set of appliance ids (bit i: id i).
using MemberSet = std::uint16_t;
static_assert(KVS_MAX_APPLIANCES <= 16, "MemberSet holds 16 ids");

// Epochs retained at most (pushes beyond need a settle first).
inline constexpr std::size_t kMaxFleetEpochs = 16;

// What the fleet's appliances share (all but `self`): the members' MACs and the membership
// epochs, oldest first. The operations keep it valid: every epoch names only members with a MAC.
struct FleetState {
    std::uint8_t self = KVS_APPLIANCE_NONE;  // KVS_APPLIANCE_NONE: no fleet
    std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> macs{};
    std::vector<MemberSet> epochs;  // oldest first
    // Number of the newest epoch: the configured epochs are 1..n, each push adds one.
    std::uint64_t epoch_no = 0;
    bool operator==(const FleetState &) const = default;

    bool enabled() const { return self != KVS_APPLIANCE_NONE; }
    MemberSet newest() const { return epochs.empty() ? 0 : epochs.back(); }
    MemberSet alive() const;                    // members of any retained epoch
    std::uint8_t state(std::uint8_t id) const;  // enum kvs_appliance_state

    // The operations (the same sequence on every appliance). false + err (one line), unchanged,
    // when refused.
    // A new newest epoch (a join: newest() | id; a planned drain: newest() & ~id). Pushing the
    // newest epoch again changes nothing.
    bool push(MemberSet s, std::string *err);
    // Drops every epoch but the newest: previous owners are no longer consulted.
    void settle();
    // Removes `id` from every epoch (it crashed); its MAC stays, for a later push.
    bool forget(std::uint8_t id, std::string *err);
    // forget's refusal, for epochs whose members may have no MAC here (etcd's): false + err when
    // `id` is the newest epoch's only owner (an empty newest epoch turns the fleet off).
    bool forget_allowed(std::uint8_t id, std::string *err) const;
    // Removes `gone` from every epoch, unchecked: forget's change, and what kvsteerd computes
    // its table with for members silent or dead now (MACs kept).
    void drop(MemberSet gone);
    // Sets (or adds) a member's MAC.
    bool set_mac(std::uint8_t id, const Mac &mac, std::string *err);
};

// Appends `s` as the newest epoch, for kvsteerd's own moves through etcd (leaving the owners and
// coming back: Daemon::fleet_follow_health, FleetEtcd's lease grant). Unlike push, its members
// need no MAC (etcd's epochs keep members dead now, which have none in the view), and with
// kMaxFleetEpochs retained the oldest goes: a refused leave orphans every flow its buckets' interim
// owners bind, while the oldest epoch only names previous owners of flows that old. s == the
// newest: unchanged, true. s empty: false (an empty newest epoch turns the fleet off).
// `dropped` (optional): set when the oldest epoch went.
bool append_epoch(std::vector<MemberSet> &epochs, MemberSet s, bool *dropped = nullptr);
// Drops every epoch a newer one repeats (the same members): its buckets' owners are that newer
// one's, already among every bucket's previous owners (or its owner), so the table and its digest
// are unchanged. A full history of leaves and returns ([E, E-X, E, E-X, ...]) shrinks to its
// distinct epochs. push() and append_epoch() compact a full history before refusing or dropping
// the oldest. Returns how many went.
std::size_t compact_epochs(std::vector<MemberSet> &epochs);

// The epoch appliance `self` leaves the owners by before its member key is put in etcd (at its
// start, or back after its lease expired): the newest epoch without it (members dead now stay
// in), when it owns in the newest epoch and another member alive (`alive`) does; else 0
// (nothing to record). The others computed that set while it was away, and bound its buckets' new
// flows: recorded, they stay previous owners when it re-enters by another epoch.
MemberSet fleet_leave_epoch(MemberSet newest, std::uint8_t self, MemberSet alive);

// The epoch an appliance that left the owners by `to` (from `from`) re-enters by: `from` when the
// newest epoch is still `to` and `from` holds it (members dead meanwhile stay in, to rejoin where
// they were), else the newest with it added; 0 when it already owns in the newest.
MemberSet fleet_return_epoch(MemberSet newest, std::uint8_t self, MemberSet from, MemberSet to);

// The table and kvs_fleet's contents (less generation and owner_active) computed from a state.
struct FleetTable {
    std::vector<kvs_owner_entry> owner;  // KVS_OWNER_BUCKETS
    std::array<kvs_appliance, KVS_MAX_APPLIANCES> members{};
    std::array<std::uint32_t, KVS_MAX_APPLIANCES> owned{};  // buckets owned per member
    std::uint64_t digest = 0;  // of the table, members' MACs and states (not of self)
};

// owner(b): the member of the newest epoch with the highest kvs_fleet_score (ties: the lower id);
// prev(b): the owners under the older epochs, newest first, without the owner, repeats and
// members not alive, at most KVS_OWNER_PREV. No fleet or no epoch: every entry KVS_APPLIANCE_NONE.
FleetTable compute_fleet_table(const FleetState &s);

// The owner of `bucket` among `set` (KVS_APPLIANCE_NONE when empty).
std::uint8_t fleet_owner(MemberSet set, std::uint32_t bucket);

// The members with a MAC in `macs` (a FleetState's macs, an etcd view's alive): those alive.
template <class Macs>
MemberSet member_set_of(const Macs &macs) {
    MemberSet s = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES && id < macs.size(); id++)
        if (macs[id]) s |= static_cast<MemberSet>(1u << id);
    return s;
}

// "0,1,3" (ascending ids) and back: ids 0..KVS_MAX_APPLIANCES-1, no repeats. nullopt + err.
std::string member_set_str(MemberSet s);
std::optional<MemberSet> parse_member_set(std::string_view s, std::string *err);
// One appliance id, 0..KVS_MAX_APPLIANCES-1.
std::optional<std::uint8_t> parse_appliance_id(std::string_view s, std::string *err);
const char *appliance_state_name(std::uint8_t state);

// A view of the two fleet maps (kvs_fleet[1], kvs_owner[2 * KVS_OWNER_BUCKETS]; in kvsteerd those
// of bpf::PinnedMaps), like Tables (core/tables.h); null pointers: no fleet maps.
struct FleetMaps {
    kvs_fleet *fleet = nullptr;
    kvs_owner_entry *owner = nullptr;
    std::uint64_t *heard = nullptr;  // kvs_fleet_heard[KVS_FLEET_HEARD_ENTRIES] (fleet_ping.h)
};

// Publishes tables into FleetMaps (single writer): the new members first, then the inactive
// owner half, release fence, owner_active flipped, then members no longer alive emptied, digest
// and epoch written and generation bumped. A retired half is left alone for `grace` (as
// TableWriter's halves).
class FleetWriter {
   public:
    FleetWriter(const FleetMaps &m, std::chrono::milliseconds grace) : m_(m), grace_(grace) {}
    void publish(const FleetState &s, const FleetTable &t);
    std::uint32_t generation() const;
    std::uint32_t active() const;  // owner_active
    std::uint64_t digest() const;
    std::uint64_t flips() const { return flips_; }

   private:
    FleetMaps m_;
    std::chrono::milliseconds grace_;
    std::chrono::steady_clock::time_point last_flip_{};
    std::uint64_t flips_ = 0;
};

}  // namespace kvsteer::control
