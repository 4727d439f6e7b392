// Liveness between the appliances of a fleet (abi.h, "liveness between appliances"): kvsteerd
// pings every other appliance's XDP program through a packet socket on the fleet's interface,
// the XDP program of this appliance stores the sequence number each pong echoes in
// kvs_fleet_heard (with the set of members the answerer hears), and a member that answered before
// and leaves the last few pings unanswered is silent here. Unless another member still hears it
// (corroborated_silence) the daemon leaves it out of its owner table (daemon_fleet.cc), so its
// orphaned clients get RSTs at their next packet instead of waiting for its etcd lease (or an
// operator) to expire; a silence heard here alone (one-way loss, an ACL between two appliances)
// leaves a live member's flows alone.
// While no XDP program is attached (the dataplane restarting swaps it), the fleet's frames reach
// the kernel: the pinger answers pings and records pongs itself through a second packet socket,
// so a planned restart does not make the appliance silent; a crash of the machine or its link
// silences both.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/control/fleet.h"
#include "kvsteer/control/net.h"

namespace kvsteer::control {

// The members (bits of `members`) that answered a ping of this pinger's life (heard[id] >= base)
// but none of the last `misses` sent (sent - heard[id] >= misses, where `sent` is the newest
// sequence number sent). A member that never answered is not silent: a new one may not run its
// XDP program yet, and its etcd lease (or the operator) decides. Unless it is in `earlier`: it
// answered an earlier pinger of this boot (this kvsteerd restarted) and is a member of the first
// set this pinger was given, and is judged as if it had answered just before `from` (a member
// that crashed while kvsteerd was down is silent after `misses` pings of ours, as it is at the
// other appliances; judged_answer). `since` (optional, per id): the first sequence number sent
// to that member since it last entered the ping set; an answer from before counts as none (a
// member back after its etcd key expired is judged on new pings, not on the answer it gave
// before it left: that made it silent before its first new ping).
// `newest` (optional, per id, kept by the caller): the newest answer to one of our pings seen so
// far, judged on instead of heard[id] alone; it keeps an answer that a value no ping of ours
// carried (a forged pong's, above `sent`) then overwrote in heard[] (before, a forged pong
// with a huge sequence number kept a dead member from ever being silent).
// `unsent` (optional, per id): the sequence numbers whose ping to that member failed to leave this
// host (ascending); they are no misses (a ping that failed to send, ENOBUFS or a local link flap,
// is no question the member left unanswered: four such rounds made every live member silent, and
// their flows reaching this appliance were reset).
// The answer a member is judged on: its newest (`newest`) if it answered since `from` (our first
// ping to it), else, for one that answered an earlier pinger (`earlier`), the ping just before
// `from`; else none (never answered). silent_members and PingStatus.unanswered both use it.
std::optional<std::uint64_t> judged_answer(std::uint64_t newest, std::uint64_t from, bool earlier);

MemberSet silent_members(MemberSet members, std::uint64_t base, std::uint64_t sent,
                         const std::uint64_t *heard, unsigned misses,
                         const std::uint64_t *since = nullptr, std::uint64_t *newest = nullptr,
                         const std::vector<std::uint64_t> *unsent = nullptr, MemberSet earlier = 0);

// Of the members silent here (`local`), those no witness vouches for. A witness is a member that
// answers our pings (`answering`, less `local`); `hears[w]` is the set member w's pong to one of
// our last few pings said it hears (members that answered its own recent pings; empty when its
// pinger is not running). A member silent here stays in the owner table while some witness
// hears it: the loss may be between this appliance and that member alone (one-way loss, an
// ACL), and its flows that reach this appliance are still sent on to it instead of being reset.
// Only a positive word keeps it: a witness that knows nothing of it (restarted, new, without a
// pinger) does not.
MemberSet corroborated_silence(MemberSet local, MemberSet answering, const MemberSet *hears);
// What member w's newest pong said (kvs_fleet_heard[KVS_FLEET_HEARD_SAYS(w)]: its sequence
// number's low 32 bits << 32 | its heard set), if it answered one of our last `misses` pings
// (`sent` the newest sequence number sent); else nothing (0).
MemberSet pong_says(std::uint64_t says, std::uint64_t sent, unsigned misses);

struct PingStatus {
    bool running = false;
    std::uint64_t rounds = 0, send_errors = 0;
    // Handled here because no XDP program took them (the dataplane restarting).
    std::uint64_t answered_here = 0, heard_here = 0;
    std::string last_error;
    // Per member: pings sent since its newest answer (or, for one that answered only an earlier
    // pinger of this boot, since our first ping to it); nullopt: not pinged or never answered.
    std::array<std::optional<std::uint64_t>, KVS_MAX_APPLIANCES> unanswered{};
    MemberSet silent = 0;       // out of the owner table (corroborated_silence)
    MemberSet silent_here = 0;  // this pinger's own judgement (silent_members)
};

class FleetPinger {
   public:
    // `heard`: kvs_fleet_heard (mmapped, KVS_FLEET_HEARD_ENTRIES); `fleet`: kvs_fleet (mmapped;
    // who may ping us; the pinger writes only its `heard` and `heard_until_ns`, which our pongs
    // carry). `changed` runs on the pinger's thread whenever either silent set changes.
    FleetPinger(std::string ifname, std::chrono::milliseconds every, unsigned misses,
                std::uint64_t *heard, kvs_fleet *fleet, std::function<void()> changed);
    ~FleetPinger();
    FleetPinger(const FleetPinger &) = delete;
    FleetPinger &operator=(const FleetPinger &) = delete;

    // Opens the packet socket on the interface and starts the thread. false + err.
    bool start(std::string *err);
    // Who to ping: every member with a MAC but `self` (whose MAC is the pings' source).
    void set_members(std::uint8_t self,
                     const std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> &macs);
    // status().silent and .silent_here: what the owner table leaves out (corroborated_silence)
    // and the members unanswered here, from one round.
    PingStatus status() const;

   private:
    void loop();
    void round();
    void receive();  // what reached the kernel: pings answered, pongs recorded

    std::string ifname_;
    std::chrono::milliseconds every_;
    unsigned misses_;
    std::uint64_t *heard_;
    kvs_fleet *fleet_;
    std::function<void()> changed_;
    int fd_ = -1, rx_fd_ = -1;
    int ifindex_ = 0;
    std::uint64_t base_ = 0, sent_ = 0;
    MemberSet pinged_ = 0;    // the members the last round pinged
    MemberSet earlier_ = 0;   // silent_members' `earlier`: answered a pinger before us (start()),
    bool first_set_ = false;  // and in the first member set we were given (round())
    std::array<std::uint64_t, KVS_MAX_APPLIANCES> since_{};   // silent_members' `since`
    std::array<std::uint64_t, KVS_MAX_APPLIANCES> newest_{};  // and its `newest`
    // And its `unsent`: per member, the newest kKeepUnsent pings that failed to send.
    static constexpr std::size_t kKeepUnsent = 1024;
    std::array<std::vector<std::uint64_t>, KVS_MAX_APPLIANCES> unsent_{};
    MemberSet silent_ = 0, silent_here_ = 0;  // the last round's (the pinger's thread's)

    mutable std::mutex mu_;
    bool stop_ = false;
    std::uint8_t self_ = KVS_APPLIANCE_NONE;
    std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> macs_{};
    PingStatus st_;
    std::thread thr_;
};

}  // namespace kvsteer::control
