#include "kvsteer/control/fleet_ping.h"

#include <linux/if_packet.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "kvsteer/fleetpkt.h"
#include "mono_clock.h"

namespace kvsteer::control {

std::optional<std::uint64_t> judged_answer(std::uint64_t newest, std::uint64_t from, bool earlier) {
    if (newest >= from) return newest;
    if (earlier && from) return from - 1;
    return std::nullopt;
}

MemberSet silent_members(MemberSet members, std::uint64_t base, std::uint64_t sent,
                         const std::uint64_t *heard, unsigned misses, const std::uint64_t *since,
                         std::uint64_t *newest, const std::vector<std::uint64_t> *unsent,
                         MemberSet earlier) {
    MemberSet s = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!(members & (1u << id))) continue;
        std::uint64_t h = __atomic_load_n(&heard[id], __ATOMIC_RELAXED);
        const std::uint64_t from = since ? std::max(base, since[id]) : base;
        if (newest) {
            if (h >= from && h <= sent && h > newest[id]) newest[id] = h;
            h = newest[id];
        }
        if (h > sent) continue;  // not one of our pings
        const auto judged = judged_answer(h, from, earlier & (1u << id));
        if (!judged || *judged > sent) continue;  // never answered (or not pinged yet)
        h = *judged;
        std::uint64_t asked = sent - h;  // pings since its newest answer, less those never sent
        if (unsent)
            for (std::uint64_t u : unsent[id]) asked -= u > h && u <= sent;
        if (asked >= misses) s |= static_cast<MemberSet>(1u << id);
    }
    return s;
}

MemberSet corroborated_silence(MemberSet local, MemberSet answering, const MemberSet *hears) {
    const MemberSet witnesses = static_cast<MemberSet>(answering & ~local);
    MemberSet out = 0;
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        const auto bit = static_cast<MemberSet>(1u << id);
        if (!(local & bit)) continue;
        bool vouched = false;  // (a witness is never `id` itself: `id` is in `local`)
        for (std::uint8_t w = 0; w < KVS_MAX_APPLIANCES && !vouched; w++)
            vouched = (witnesses & (1u << w)) && (hears[w] & bit);
        if (!vouched) out |= bit;
    }
    return out;
}

MemberSet pong_says(std::uint64_t says, std::uint64_t sent, unsigned misses) {
    // How many pings ago the one it answered was sent, modulo 2^32 (a forged or old word is far).
    const auto ago = static_cast<std::uint32_t>(static_cast<std::uint32_t>(sent) -
                                                static_cast<std::uint32_t>(says >> 32));
    return ago < misses ? static_cast<MemberSet>(says & 0xffffu) : MemberSet{0};
}

FleetPinger::FleetPinger(std::string ifname, std::chrono::milliseconds every, unsigned misses,
                         std::uint64_t *heard, kvs_fleet *fleet, std::function<void()> changed)
    : ifname_(std::move(ifname)),
      every_(every),
      misses_(misses),
      heard_(heard),
      fleet_(fleet),
      changed_(std::move(changed)) {}

FleetPinger::~FleetPinger() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    if (thr_.joinable()) thr_.join();
    // Our pongs vouch for nobody from now on (kvsteerd stopping while XDP answers on).
    if (fleet_) __atomic_store_n(&fleet_->heard_until_ns, std::uint64_t{0}, __ATOMIC_RELEASE);
    if (fd_ >= 0) close(fd_);
    if (rx_fd_ >= 0) close(rx_fd_);
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
    // The fleet's frames that no XDP program took (none attached: the dataplane restarting).
    rx_fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(KVS_ETH_P_FLEET));
    sockaddr_ll rx{};
    rx.sll_family = AF_PACKET;
    rx.sll_protocol = htons(KVS_ETH_P_FLEET);
    rx.sll_ifindex = ifindex_;
    if (rx_fd_ < 0 || bind(rx_fd_, reinterpret_cast<const sockaddr *>(&rx), sizeof rx) != 0) {
        *err = "fleet ping: receive socket on " + ifname_ + ": " + std::strerror(errno);
        return false;
    }
    // Sequence numbers start at the monotonic clock: above whatever an earlier kvsteerd of this
    // boot left in kvs_fleet_heard, so those answers never count as ours.
    base_ = mono_ns();
    sent_ = base_ - 1;
    // The members that answered a pinger of this boot before us (this kvsteerd restarted; the
    // map outlives it): judged on `misses` unanswered pings of ours, as if they had answered
    // just before (before, one that had crashed meanwhile was never silent here, and stayed in
    // this appliance's owner table while the others left it out).
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        const std::uint64_t h = __atomic_load_n(&heard_[id], __ATOMIC_RELAXED);
        if (h && h < base_) earlier_ |= static_cast<MemberSet>(1u << id);
    }
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
    for (;;) {
        {
            std::lock_guard lk(mu_);
            if (stop_) return;
        }
        round();
        // Until the next round: what reaches the kernel (at most every_ between stop checks).
        const auto next = std::chrono::steady_clock::now() + every_;
        for (auto now = std::chrono::steady_clock::now(); now < next;
             now = std::chrono::steady_clock::now()) {
            pollfd p{rx_fd_, POLLIN, 0};
            const int ms = static_cast<int>(
                std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1);
            if (poll(&p, 1, ms) > 0 && (p.revents & POLLIN)) receive();
            std::lock_guard lk(mu_);
            if (stop_) return;
        }
    }
}

void FleetPinger::receive() {
    std::uint8_t buf[256];
    for (int i = 0; i < 64; i++) {  // bounded: the rest waits for the next wake-up
        const ssize_t n = recv(rx_fd_, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) return;
        if (static_cast<std::size_t>(n) > sizeof buf || !fleet_ ||
            !__atomic_load_n(&fleet_->generation, __ATOMIC_ACQUIRE))
            continue;
        kvs_fleet fl;
        std::memcpy(&fl, fleet_, sizeof fl);  // a snapshot: kvsteerd may be writing it
        std::uint8_t from = 0;
        __u64 seq = 0;
        __u16 says = 0;
        const int b = kvs_fleet_beat(buf, buf + n, &fl, mono_ns(), &from, &seq, &says);
        if (b == KVS_FLEET_BEAT_ANSWER) {
            if (send(fd_, buf, static_cast<std::size_t>(n), MSG_DONTWAIT) == n) {
                std::lock_guard lk(mu_);
                st_.answered_here++;
            }
        } else if (b == KVS_FLEET_BEAT_HEARD && from < KVS_MAX_APPLIANCES) {
            __atomic_store_n(&heard_[KVS_FLEET_HEARD_SAYS(from)], (seq << 32) | says,
                             __ATOMIC_RELAXED);
            __atomic_store_n(&heard_[from], seq, __ATOMIC_RELAXED);
            std::lock_guard lk(mu_);
            st_.heard_here++;
        }
    }
}

// One round: what the last pings told (answers arrive within microseconds on a segment), then
// the next ping to every member.
void FleetPinger::round() {
    std::uint8_t self;
    std::array<Mac, KVS_MAX_APPLIANCES> macs{};
    MemberSet known = 0;  // ids with a MAC
    {
        std::lock_guard lk(mu_);
        self = self_;
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
            if (macs_[id]) {
                macs[id] = *macs_[id];
                known |= static_cast<MemberSet>(1u << id);
            }
    }
    MemberSet members = 0;
    if (self < KVS_MAX_APPLIANCES && (known & (1u << self)))
        members = static_cast<MemberSet>(known & ~(1u << self));
    // `earlier_` holds only for the first member set this pinger is given (the configuration's,
    // or etcd's first view): an id that joins later is a new member (a box that took the id of
    // one dead before this kvsteerd started), whatever an earlier kvsteerd heard under that id.
    if (members && !first_set_) {
        earlier_ &= members;
        first_set_ = true;
    }
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if ((members & ~pinged_) & (1u << id)) since_[id] = sent_ + 1;  // this round's ping
    // A member that left the ping set comes back judged as a new one (it answered nobody since).
    earlier_ = static_cast<MemberSet>(earlier_ & ~(pinged_ & ~members));
    pinged_ = members;
    const MemberSet here = silent_members(members, base_, sent_, heard_, misses_, since_.data(),
                                          newest_.data(), unsent_.data(), earlier_);
    MemberSet answering = 0;  // answered one of this pinger's pings since it was first pinged
    MemberSet vouch = 0;  // and one of the last misses_ sent (evidence, whatever failed to send)
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if ((members & (1u << id)) && newest_[id] >= std::max(base_, since_[id]) &&
            newest_[id] <= sent_) {
            answering |= static_cast<MemberSet>(1u << id);
            if (sent_ - newest_[id] < misses_) vouch |= static_cast<MemberSet>(1u << id);
        }
    // What our pongs tell the others (whom we hear now), valid for a few rounds. Not `answering
    // & ~here`: pings that failed to send are no misses there, but no evidence either (a pinger
    // whose sends fail while XDP still answers vouched for a crashed member for up to 1,024
    // rounds).
    if (fleet_) {
        const auto valid = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(every_).count());
        __atomic_store_n(&fleet_->heard, static_cast<__u16>(vouch), __ATOMIC_RELAXED);
        __atomic_store_n(&fleet_->heard_until_ns, mono_ns() + 4 * valid, __ATOMIC_RELEASE);
    }
    std::array<MemberSet, KVS_MAX_APPLIANCES> hears{};
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++)
        if (answering & (1u << id))
            hears[id] =
                pong_says(__atomic_load_n(&heard_[KVS_FLEET_HEARD_SAYS(id)], __ATOMIC_RELAXED),
                          sent_, misses_);
    const MemberSet silent = corroborated_silence(here, answering, hears.data());
    const MemberSet was = std::exchange(silent_, silent);
    const MemberSet was_here = std::exchange(silent_here_, here);

    const std::uint64_t seq = ++sent_;
    std::uint64_t errors = 0;
    std::string last_error;
    std::uint8_t frame[KVS_FLEET_PING_LEN];
    for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
        if (!(members & (1u << id))) continue;
        const std::uint32_t len =
            kvs_fleet_ping_write(frame, macs[id].data(), macs[self].data(), self, seq);
        if (send(fd_, frame, len, MSG_DONTWAIT) != static_cast<ssize_t>(len)) {
            // Kept while they may matter: after its newest answer, the newest kKeepUnsent.
            auto &u = unsent_[id];
            std::erase_if(u, [&](std::uint64_t x) { return x <= newest_[id]; });
            if (u.size() >= kKeepUnsent) u.erase(u.begin());
            u.push_back(seq);
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
        st_.silent_here = here;
        for (std::uint8_t id = 0; id < KVS_MAX_APPLIANCES; id++) {
            const auto h =
                judged_answer(newest_[id], std::max(base_, since_[id]), earlier_ & (1u << id));
            st_.unanswered[id] = (members & (1u << id)) && h && *h < seq
                                     ? std::optional<std::uint64_t>(seq - 1 - *h)
                                     : std::nullopt;
        }
    }
    if (first_error) spdlog::warn("fleet ping: {}", last_error);
    if ((silent != was || here != was_here) && changed_) changed_();
}

}  // namespace kvsteer::control
