// The fleet's owner table from membership epochs (fleet.h), and its publishing into the maps.
#include "kvsteer/control/fleet.h"

#include <time.h>

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "kvsteer/fleet.h"
#include "mono_clock.h"  // CLOCK_MONOTONIC: bpf_ktime_get_ns()'s clock

namespace kvsteer::control {

namespace {

constexpr MemberSet bit(std::uint8_t id) {
    return static_cast<MemberSet>(1u << id);
}

template <typename T>
std::atomic_ref<T> aref(T &x) {
    return std::atomic_ref<T>(x);
}

// A kvs_appliance as one 8-byte word, so readers never see half a MAC.
static_assert(sizeof(kvs_appliance) == 8 && offsetof(kvs_fleet, members) % 8 == 0);
std::uint64_t appliance_word(const kvs_appliance &a) {
    std::uint64_t w;
    std::memcpy(&w, &a, sizeof w);
    return w;
}

}  // namespace

MemberSet FleetState::alive() const {
    MemberSet a = 0;
    for (MemberSet e : epochs) a |= e;
    return a;
}

std::uint8_t FleetState::state(std::uint8_t id) const {
    if (id >= KVS_MAX_APPLIANCES || !macs[id]) return KVS_APP_EMPTY;
    if (newest() & bit(id)) return KVS_APP_UP;
    if (alive() & bit(id)) return KVS_APP_DRAINING;
    return KVS_APP_EMPTY;
}

bool FleetState::push(MemberSet s, std::string *err) {
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if ((s & bit(id)) && !macs[id]) {
            *err = "appliance " + std::to_string(id) +
                   " is not a member (give its MAC first: fleet member ID MAC)";
            return false;
        }
    }
    if (s == 0) {
        *err = "an epoch needs at least one member";
        return false;
    }
    if (!epochs.empty() && s == epochs.back()) return true;
    if (epochs.size() >= kMaxFleetEpochs) compact_epochs(epochs);
    if (epochs.size() >= kMaxFleetEpochs) {
        *err = "already " + std::to_string(kMaxFleetEpochs) +
               " epochs retained: settle first (fleet settle)";
        return false;
    }
    epochs.push_back(s);
    epoch_no++;
    return true;
}

std::size_t compact_epochs(std::vector<MemberSet> &epochs) {
    const std::size_t before = epochs.size();
    std::vector<MemberSet> kept;
    // Newest first: an epoch is kept unless a newer one has the same members.
    for (std::size_t k = epochs.size(); k-- > 0;)
        if (std::find(kept.begin(), kept.end(), epochs[k]) == kept.end()) kept.push_back(epochs[k]);
    epochs.assign(kept.rbegin(), kept.rend());
    return before - epochs.size();
}

bool append_epoch(std::vector<MemberSet> &epochs, MemberSet s, bool *dropped) {
    if (dropped) *dropped = false;
    if (s == 0) return false;
    if (!epochs.empty() && epochs.back() == s) return true;
    if (epochs.size() >= kMaxFleetEpochs) compact_epochs(epochs);
    if (dropped) *dropped = epochs.size() >= kMaxFleetEpochs;
    if (epochs.size() >= kMaxFleetEpochs)
        epochs.erase(epochs.begin(), epochs.begin() + static_cast<std::ptrdiff_t>(
                                                          epochs.size() - kMaxFleetEpochs + 1));
    epochs.push_back(s);
    return true;
}

MemberSet fleet_leave_epoch(MemberSet newest, std::uint8_t self, MemberSet alive) {
    if (self >= KVS_MAX_APPLIANCES || !(newest & bit(self))) return 0;
    // Members dead now stay in (each computes them out while it is away; taking them out of
    // etcd's newest epoch left them out for good when they came back).
    return newest & alive & ~bit(self) ? static_cast<MemberSet>(newest & ~bit(self)) : 0;
}

MemberSet fleet_return_epoch(MemberSet newest, std::uint8_t self, MemberSet from, MemberSet to) {
    if (self >= KVS_MAX_APPLIANCES || (newest & bit(self))) return 0;
    if (newest == to && (from & bit(self))) return from;
    return static_cast<MemberSet>(newest | bit(self));
}

void FleetState::settle() {
    if (epochs.size() > 1) epochs.erase(epochs.begin(), epochs.end() - 1);
}

bool FleetState::forget(std::uint8_t id, std::string *err) {
    if (id >= KVS_MAX_APPLIANCES || !macs[id]) {
        *err = "appliance " + std::to_string(id) + " is not a member";
        return false;
    }
    if (!forget_allowed(id, err)) return false;
    drop(bit(id));
    return true;
}

bool FleetState::forget_allowed(std::uint8_t id, std::string *err) const {
    if (!epochs.empty() && epochs.back() == bit(id)) {
        // An empty newest epoch turns the fleet off on every appliance (no owner anywhere).
        *err = "appliance " + std::to_string(id) +
               " is the only owner in the newest epoch: push the new members first";
        return false;
    }
    return true;
}

void FleetState::drop(MemberSet gone) {
    for (MemberSet &e : epochs) e &= static_cast<MemberSet>(~gone);
}

bool FleetState::set_mac(std::uint8_t id, const Mac &mac, std::string *err) {
    if (id >= KVS_MAX_APPLIANCES) {
        *err = "appliance id " + std::to_string(id) + " is out of range 0.." +
               std::to_string(KVS_MAX_APPLIANCES - 1);
        return false;
    }
    if (mac == Mac{} || (mac[0] & 1)) {
        *err = "appliance " + std::to_string(id) + ": MAC " + format_mac(mac) +
               " is not a unicast address";
        return false;
    }
    macs[id] = mac;
    return true;
}

std::uint8_t fleet_owner(MemberSet set, std::uint32_t bucket) {
    std::uint8_t best = KVS_APPLIANCE_NONE;
    std::uint64_t best_score = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!(set & bit(id))) continue;
        std::uint64_t sc = kvs_fleet_score(id, bucket);
        if (best == KVS_APPLIANCE_NONE || sc > best_score) best = id, best_score = sc;
    }
    return best;
}

FleetTable compute_fleet_table(const FleetState &s) {
    FleetTable t;
    t.owner.assign(KVS_OWNER_BUCKETS, kvs_owner_entry{});
    const MemberSet alive = s.alive();
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        kvs_owner_entry &e = t.owner[b];
        std::memset(e.prev, KVS_APPLIANCE_NONE, sizeof e.prev);
        e.owner = s.enabled() ? fleet_owner(s.newest(), b) : KVS_APPLIANCE_NONE;
        if (e.owner != KVS_APPLIANCE_NONE) t.owned[e.owner]++;
        if (!s.enabled()) continue;
        unsigned n = 0;
        for (std::size_t k = s.epochs.size(); k-- > 1 && n < KVS_OWNER_PREV;) {
            const std::uint8_t o = fleet_owner(s.epochs[k - 1], b);
            if (o == KVS_APPLIANCE_NONE || o == e.owner || !(alive & bit(o))) continue;
            if (std::find(e.prev, e.prev + n, o) != e.prev + n) continue;
            e.prev[n++] = o;
        }
    }
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        kvs_appliance &a = t.members[id];
        if (!s.enabled() || !s.macs[id]) continue;
        std::memcpy(a.mac, s.macs[id]->data(), sizeof a.mac);
        a.state = s.state(id);
    }
    // The digest reads fields, never padding: the same inputs hash the same everywhere.
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    for (const kvs_owner_entry &e : t.owner) {
        const std::uint8_t v[1 + KVS_OWNER_PREV] = {e.owner, e.prev[0], e.prev[1], e.prev[2]};
        static_assert(KVS_OWNER_PREV == 3);
        XXH3_64bits_update(h, v, sizeof v);
    }
    for (const kvs_appliance &a : t.members) {
        XXH3_64bits_update(h, a.mac, sizeof a.mac);
        XXH3_64bits_update(h, &a.state, 1);
    }
    t.digest = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return t;
}

std::string member_set_str(MemberSet s) {
    std::string out;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (s & bit(id)) out += (out.empty() ? "" : ",") + std::to_string(id);
    return out;
}

std::optional<std::uint8_t> parse_appliance_id(std::string_view s, std::string *err) {
    const bool digits = !s.empty() && s.size() <= 3 && s.find_first_not_of("0123456789") == s.npos;
    unsigned v = 0;
    for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
    if (!digits || v >= KVS_MAX_APPLIANCES) {
        if (err)
            *err = "appliance id must be in 0.." + std::to_string(KVS_MAX_APPLIANCES - 1) +
                   " (got '" + std::string(s) + "')";
        return std::nullopt;
    }
    return static_cast<std::uint8_t>(v);
}

std::optional<MemberSet> parse_member_set(std::string_view s, std::string *err) {
    MemberSet set = 0;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = std::min(s.find(',', start), s.size());
        auto id = parse_appliance_id(s.substr(start, end - start), err);
        if (!id) return std::nullopt;
        if (set & bit(*id)) {
            if (err) *err = "appliance " + std::to_string(*id) + " is listed twice";
            return std::nullopt;
        }
        set |= bit(*id);
        if (end == s.size()) return set;
        start = end + 1;
    }
}

const char *appliance_state_name(std::uint8_t state) {
    switch (state) {
        case KVS_APP_UP:
            return "up";
        case KVS_APP_DRAINING:
            return "draining";
        default:
            return "empty";
    }
}

void FleetWriter::publish(const FleetState &s, const FleetTable &t) {
    kvs_fleet &f = *m_.fleet;
    // A change starts the settle time before XDP can see any part of it (a member's new state,
    // the new half): in between, a table half-written here with a stale changed_ns, and a sender
    // whose table tag happens to equal ours, made this appliance reset a live flow. Set again
    // after the flip: the settle time counts from the whole change.
    const bool changes = aref(f.digest).load(std::memory_order_relaxed) != t.digest;
    if (changes) aref(f.changed_ns).store(mono_ns(), std::memory_order_release);
    // Members that become or stay alive first: the new half may send packets to them.
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (t.members[id].state != KVS_APP_EMPTY)
            aref(*reinterpret_cast<std::uint64_t *>(&f.members[id]))
                .store(appliance_word(t.members[id]), std::memory_order_release);

    auto until = last_flip_ + grace_;
    if (auto now = std::chrono::steady_clock::now(); now < until)
        std::this_thread::sleep_for(until - now);
    const std::uint8_t next = static_cast<std::uint8_t>(active() ^ 1u);
    std::memcpy(static_cast<void *>(m_.owner + static_cast<std::size_t>(next) * KVS_OWNER_BUCKETS),
                t.owner.data(), KVS_OWNER_BUCKETS * sizeof(kvs_owner_entry));
    std::atomic_thread_fence(std::memory_order_release);
    aref(f.self).store(s.self, std::memory_order_release);
    aref(f.owner_active).store(next, std::memory_order_release);
    last_flip_ = std::chrono::steady_clock::now();
    flips_++;

    // Members no longer alive: nothing in the active half names them now.
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (t.members[id].state == KVS_APP_EMPTY)
            aref(*reinterpret_cast<std::uint64_t *>(&f.members[id]))
                .store(appliance_word(t.members[id]), std::memory_order_release);
    if (changes) aref(f.changed_ns).store(mono_ns(), std::memory_order_relaxed);
    aref(f.digest).store(t.digest, std::memory_order_relaxed);
    aref(f.epoch).store(s.epoch_no, std::memory_order_relaxed);
    aref(f.generation).fetch_add(1, std::memory_order_acq_rel);
}

std::uint32_t FleetWriter::generation() const {
    return aref(m_.fleet->generation).load(std::memory_order_acquire);
}

std::uint32_t FleetWriter::active() const {
    return aref(m_.fleet->owner_active).load(std::memory_order_acquire) & 1u;
}

std::uint64_t FleetWriter::digest() const {
    return aref(m_.fleet->digest).load(std::memory_order_acquire);
}

}  // namespace kvsteer::control
