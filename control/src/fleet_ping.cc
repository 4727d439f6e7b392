#include "kvsteer/control/fleet_ping.h"

#include <linux/if_packet.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvsteer/fleetpkt.h"
#include "mono_clock.h"

namespace kvsteer::control {

MemberSet silent_members(MemberSet members, std::uint64_t base, std::uint64_t sent,
                         const std::uint64_t *heard, unsigned misses) {
    MemberSet s = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!(members & (1u << id))) continue;
        const std::uint64_t h = __atomic_load_n(&heard[id], __ATOMIC_RELAXED);
        if (h < base || h > sent) continue;  // never answered (or not one of our pings)
        if (sent - h >= misses) s |= static_cast<MemberSet>(1u << id);
    }
    return s;
}

FleetPinger::FleetPinger(std::string ifname, std::chrono::milliseconds every, unsigned misses,
                         const std::uint64_t *heard, std::function<void()> changed)
    : ifname_(std::move(ifname)),
      every_(every),
      misses_(misses),
      heard_(heard),
      changed_(std::move(changed)) {}

FleetPinger::~FleetPinger() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thr_.joinable()) thr_.join();
    if (fd_ >= 0) close(fd_);
}

bool FleetPinger::start(std::string *err) {
    ifindex_ = static_cast<int>(if_nametoindex(ifname_.c_str()));
    if (!ifindex_) {
        *err = "fleet ping: no interface '" + ifname_ + "' in this network namespace";
        return false;
    }
    // Protocol 0: the socket sends, it receives nothing (the pongs are the XDP program's).
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        *err = std::string("fleet ping: packet socket: ") + std::strerror(errno) +
               " (needs CAP_NET_RAW)";
        return false;
    }
    sockaddr_ll sa{};
    sa.sll_family = AF_PACKET;
    sa.sll_ifindex = ifindex_;
    if (bind(fd_, reinterpret_cast<const sockaddr *>(&sa), sizeof sa) != 0) {
        *err = "fleet ping: binding to " + ifname_ + ": " + std::strerror(errno);
        return false;
    }
    // Sequence numbers start at the monotonic clock: above whatever an earlier kvsteerd of this
    // boot left in kvs_fleet_heard, so those answers never count as ours.
    base_ = mono_ns();
    sent_ = base_ - 1;
    {
        std::lock_guard lk(mu_);
        st_.running = true;
    }
    thr_ = std::thread([this] { loop(); });
    return true;
}

void FleetPinger::set_members(std::uint8_t self,
                              const std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> &macs) {
    std::lock_guard lk(mu_);
    self_ = self;
    macs_ = macs;
}

PingStatus FleetPinger::status() const {
    std::lock_guard lk(mu_);
    return st_;
}

void FleetPinger::loop() {
    std::unique_lock lk(mu_);
    while (!stop_) {
        lk.unlock();
        round();
        lk.lock();
        cv_.wait_for(lk, every_, [this] { return stop_; });
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12 at -O2: a false "may be used uninitialized" on the copied optionals of `macs`.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// One round: what the last pings told (answers arrive within microseconds on a segment), then
// the next ping to every member.
void FleetPinger::round() {
    std::uint8_t self;
    std::array<std::optional<Mac>, KVS_MAX_APPLIANCES> macs;
    {
        std::lock_guard lk(mu_);
        self = self_;
        macs = macs_;
    }
    MemberSet members = 0;
    if (self < KVS_MAX_APPLIANCES && macs[self])
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
            if (id != self && macs[id]) members |= static_cast<MemberSet>(1u << id);
    const MemberSet silent = silent_members(members, base_, sent_, heard_, misses_);
    const MemberSet was = silent_.exchange(silent, std::memory_order_acq_rel);

    const std::uint64_t seq = ++sent_;
    std::uint64_t errors = 0;
    std::string last_error;
    std::uint8_t frame[KVS_FLEET_PING_LEN];
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!(members & (1u << id))) continue;
        const std::uint32_t len =
            kvs_fleet_ping_write(frame, macs[id]->data(), macs[self]->data(), self, seq);
        if (send(fd_, frame, len, MSG_DONTWAIT) != static_cast<ssize_t>(len)) {
            errors++;
            last_error = std::string("sending a ping on ") + ifname_ + ": " + std::strerror(errno);
        }
    }
    bool first_error = false;
    {
        std::lock_guard lk(mu_);
        st_.rounds++;
        first_error = errors && !st_.send_errors;
        st_.send_errors += errors;
        if (errors) st_.last_error = last_error;
        st_.silent = silent;
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
            const std::uint64_t h = __atomic_load_n(&heard_[id], __ATOMIC_RELAXED);
            st_.unanswered[id] = (members & (1u << id)) && h >= base_ && h < seq
                                     ? std::optional<std::uint64_t>(seq - 1 - h)
                                     : std::nullopt;
        }
    }
    if (first_error) spdlog::warn("fleet ping: {}", last_error);
    if (silent != was && changed_) changed_();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace kvsteer::control
