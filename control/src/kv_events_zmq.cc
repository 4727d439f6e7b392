// vLLM KV events over libzmq: one thread, one SUB socket per subscribed backend. Built when
// libzmq is found (control/CMakeLists.txt); kv_events_nozmq.cc otherwise.
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "kv_events_subscriber.h"
#include "kvsteer/abi.h"

namespace kvsteer::control {

namespace {

// A frame is at most this big: libzmq drops the connection of a peer that sends more (it
// reconnects; what was lost shows as a sequence gap). Still far above a real batch (a few KB to a
// few hundred: a hash is at most 9 bytes). libzmq applies it per frame, not per message, and
// counts a message against kRcvHwm only once complete: with a well-formed message's 3 frames a
// socket holds at most kRcvHwm x 3 MiB queued (~200 MiB; it was 1000 x 3 x 4 MiB, past the unit's
// MemoryMax). A publisher that never ends a message (MORE set on every frame) is not bounded by
// libzmq (control/README.md, "KV events": not fixed).
constexpr std::int64_t kMaxMessage = 1ll << 20;
// Messages libzmq queues per socket before it drops new ones (a sequence gap, as an overrun):
// vLLM publishes a batch per engine step (milliseconds to tens of them), so 64 is a second or
// more of events while this thread is busy; a gap only costs an approximation of the cache,
// never a wrong route.
constexpr int kRcvHwm = 64;
// Messages read from one socket before looking at the others and at subscription changes; and
// the time one socket's turn may take (a batch costs up to tens of ms to decode: a publisher of
// 1 MiB batches of tiny events held the thread for seconds per turn of 256, and every other
// backend's batches, their cache resets among them, were dropped at kRcvHwm meanwhile).
constexpr int kBurst = 256;
constexpr auto kTurn = std::chrono::milliseconds(5);
// ZMTP heartbeats on each SUB connection: a PING every second, the connection dropped (and made
// again) when nothing came back in 5 s. A SUB sends nothing else, so a publisher host that died
// or rebooted, or a firewall that forgot the idle flow, left it connected to nothing for good,
// and the restarted engine (its sequence reset) was never heard.
constexpr int kHeartbeatIvlMs = 1000, kHeartbeatTimeoutMs = 5000;
// The daemon is woken for cache resets at most this often (a backend flooding resets woke it
// every round); a reset meanwhile wakes it when the gap has passed. (The daemon bounds its
// policy computes on resets apart: Daemon::apply_kv_resets, kKvResetPublishNs.)
constexpr auto kWakeGap = std::chrono::milliseconds(50);
// Frames kept per message: a well-formed one has 3; more are read, counted and dropped.
constexpr std::size_t kMaxFrames = 8;

}  // namespace

bool kv_events_supported() {
    return true;
}

struct KvEventSubscriber::Impl::Transport {
    std::atomic<bool> stop{false};
    int ctl_fd = -1;  // eventfd: the subscription set changed, or stop
    void *ctx = nullptr;
    std::thread thr;

    void loop(Impl &im);
    void *open(Impl &im, std::uint16_t id, std::uint64_t serial, const std::string &ep,
               bool log = true);
};

KvEventSubscriber::Impl::Impl() = default;
KvEventSubscriber::Impl::~Impl() = default;

void KvEventSubscriber::Impl::poke() {
    std::uint64_t one = 1;
    if (transport && transport->ctl_fd >= 0) [[maybe_unused]]
        auto w = write(transport->ctl_fd, &one, sizeof one);
}

// A SUB socket connected to `ep`, subscribed to every topic (vLLM's default topic is ""); null
// when it cannot be made (reported on the subscription, logged when `log`; the loop retries).
void *KvEventSubscriber::Impl::Transport::open(Impl &im, std::uint16_t id, std::uint64_t serial,
                                               const std::string &ep, bool log) {
    void *s = zmq_socket(ctx, ZMQ_SUB);
    if (!s) {
        im.report(id, serial, std::string("zmq_socket: ") + zmq_strerror(zmq_errno()), log);
        return nullptr;
    }
    const int linger = 0, hwm = kRcvHwm, ivl = 100, ivl_max = 5000, ipv6 = 1;
    const std::int64_t max_msg = kMaxMessage;
    // Each option matters (the bounds above, the subscription itself): one that cannot be set is
    // an error reported on the subscription, never a socket without it (they were unchecked).
    const char *failed = nullptr;
    auto set = [&](int opt, const void *v, std::size_t n, const char *name) {
        if (!failed && zmq_setsockopt(s, opt, v, n) != 0) failed = name;
    };
    set(ZMQ_LINGER, &linger, sizeof linger, "ZMQ_LINGER");
    set(ZMQ_RCVHWM, &hwm, sizeof hwm, "ZMQ_RCVHWM");
    set(ZMQ_RECONNECT_IVL, &ivl, sizeof ivl, "ZMQ_RECONNECT_IVL");
    set(ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max, "ZMQ_RECONNECT_IVL_MAX");
    set(ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg, "ZMQ_MAXMSGSIZE");
    set(ZMQ_IPV6, &ipv6, sizeof ipv6, "ZMQ_IPV6");  // tcp://[v6]:port (v4 still works)
    set(ZMQ_HEARTBEAT_IVL, &kHeartbeatIvlMs, sizeof kHeartbeatIvlMs, "ZMQ_HEARTBEAT_IVL");
    set(ZMQ_HEARTBEAT_TIMEOUT, &kHeartbeatTimeoutMs, sizeof kHeartbeatTimeoutMs,
        "ZMQ_HEARTBEAT_TIMEOUT");
    set(ZMQ_SUBSCRIBE, "", 0, "ZMQ_SUBSCRIBE");
    if (failed) {
        im.report(id, serial,
                  std::string("zmq_setsockopt ") + failed + ": " + zmq_strerror(zmq_errno()), log);
        zmq_close(s);
        return nullptr;
    }
    if (zmq_connect(s, ep.c_str()) != 0) {
        im.report(id, serial, "connect " + ep + ": " + zmq_strerror(zmq_errno()), log);
        zmq_close(s);
        return nullptr;
    }
    return s;
}

void KvEventSubscriber::Impl::Transport::loop(Impl &im) {
    struct Sock {
        std::uint16_t id;
        std::uint64_t serial;
        std::string ep;
        void *s;  // null: could not be made (reported): tried again after `backoff`
        std::chrono::steady_clock::time_point tried{};
        std::chrono::milliseconds backoff{1000};
    };
    using Key = std::pair<std::uint16_t, std::uint64_t>;  // (id, serial)
    std::vector<Sock> socks;
    std::vector<zmq_pollitem_t> items;
    std::vector<std::size_t> polled;  // items[j + 1] is socks[polled[j]]
    std::vector<std::string> frames;
    std::uint64_t synced = ~std::uint64_t{0};  // the subscription table's `changes` followed
    bool wake_owed = false;                    // a reset the daemon was not woken for yet
    std::chrono::steady_clock::time_point woke{};
    while (!stop.load()) {
        // Follow the wanted subscriptions, when they changed (read every wake, the table was
        // copied under the lock and matched pairwise: O(subscriptions^2) a wake, 1.8 s of CPU in
        // 3.5 s with 1,024 of them).
        std::map<Key, std::string> want;
        bool changed = false;
        {
            std::lock_guard lk(im.mu);
            if (im.changes != synced) {
                changed = true;
                synced = im.changes;
                for (const auto &[id, sub] : im.subs)
                    want.emplace(Key{id, sub.serial}, sub.st.endpoint);
            }
        }
        const auto now = std::chrono::steady_clock::now();
        if (changed) {
            std::erase_if(socks, [&](Sock &s) {
                if (want.erase(Key{s.id, s.serial})) return false;  // kept (and not opened again)
                if (s.s) zmq_close(s.s);
                return true;
            });
            for (auto &[key, ep] : want)  // the new ones
                socks.push_back(
                    {key.first, key.second, ep, open(im, key.first, key.second, ep), now});
        }
        // A socket that could not be made (a transient EMFILE, libzmq's socket limit) is tried
        // again, 1 s after the failure and doubling to 60 s, logged only when the error changes
        // or it comes back. Before, the subscription stayed dead until it was re-added.
        std::chrono::milliseconds wait{-1};
        for (Sock &have : socks) {
            if (have.s) continue;
            if (now - have.tried >= have.backoff) {
                have.s = open(im, have.id, have.serial, have.ep, false);
                have.tried = now;
                if (have.s)
                    spdlog::info("kv-events: backend {}: subscribed to {} again", have.id, have.ep);
                else
                    have.backoff = std::min(have.backoff * 2, std::chrono::milliseconds(60000));
            }
            if (!have.s) {
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    have.tried + have.backoff - now);
                const auto ms = std::max(left, std::chrono::milliseconds(1));
                if (wait.count() < 0 || ms < wait) wait = ms;
            }
        }

        items.clear();
        polled.clear();
        items.push_back({nullptr, ctl_fd, ZMQ_POLLIN, 0});
        for (std::size_t k = 0; k < socks.size(); k++) {
            if (socks[k].s) {
                items.push_back({socks[k].s, -1, ZMQ_POLLIN, 0});
                polled.push_back(k);
            }
        }
        if (wake_owed) {
            const auto ms = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         woke + kWakeGap - std::chrono::steady_clock::now()),
                                     std::chrono::milliseconds(1));
            if (wait.count() < 0 || ms < wait) wait = ms;
        }
        if (zmq_poll(items.data(), static_cast<int>(items.size()),
                     static_cast<long>(wait.count())) < 0) {
            if (zmq_errno() == ETERM) break;
            continue;  // EINTR
        }
        if (items[0].revents) {
            std::uint64_t v;
            [[maybe_unused]] auto r = read(ctl_fd, &v, sizeof v);
        }
        bool any_reset = false;
        for (std::size_t j = 0; j < polled.size(); j++) {
            if (!(items[j + 1].revents & ZMQ_POLLIN)) continue;
            const Sock &sk = socks[polled[j]];
            const auto turn_end = std::chrono::steady_clock::now() + kTurn;
            for (int n = 0; n < kBurst && (n == 0 || std::chrono::steady_clock::now() < turn_end);
                 n++) {
                frames.clear();
                std::size_t extra = 0;  // frames beyond kMaxFrames: counted, not kept
                bool more = true, got = false;
                while (more) {
                    zmq_msg_t msg;
                    zmq_msg_init(&msg);
                    if (zmq_msg_recv(&msg, sk.s, ZMQ_DONTWAIT) < 0) {
                        zmq_msg_close(&msg);
                        break;  // EAGAIN: nothing more (parts of one message arrive together)
                    }
                    got = true;
                    if (frames.size() < kMaxFrames)
                        frames.emplace_back(static_cast<const char *>(zmq_msg_data(&msg)),
                                            zmq_msg_size(&msg));
                    else
                        extra++;
                    more = zmq_msg_more(&msg);
                    zmq_msg_close(&msg);
                }
                if (!got) break;
                const auto d = im.deliver(sk.id, sk.serial, frames, extra);
                if (d == Impl::Delivered::Gone)
                    break;  // unsubscribed meanwhile: the socket closes on the next round
                any_reset |= d == Impl::Delivered::Reset;
            }
        }
        wake_owed |= any_reset && im.wake;
        if (wake_owed && std::chrono::steady_clock::now() - woke >= kWakeGap) {
            im.wake();
            woke = std::chrono::steady_clock::now();
            wake_owed = false;
        }
    }
    for (auto &s : socks)
        if (s.s) zmq_close(s.s);
}

KvEventSubscriber::~KvEventSubscriber() {
    auto &t = impl_->transport;
    if (!t) return;
    t->stop.store(true);
    impl_->poke();
    if (t->thr.joinable()) t->thr.join();
    if (t->ctx) zmq_ctx_term(t->ctx);  // every socket is closed with linger 0: returns at once
    if (t->ctl_fd >= 0) close(t->ctl_fd);
}

bool KvEventSubscriber::start(std::string *err) {
    auto t = std::make_unique<Impl::Transport>();
    t->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->ctl_fd < 0) {
        *err = std::string("kv-events: eventfd: ") + std::strerror(errno);
        return false;
    }
    t->ctx = zmq_ctx_new();
    if (!t->ctx) {
        *err = std::string("kv-events: zmq_ctx_new: ") + zmq_strerror(zmq_errno());
        close(t->ctl_fd);
        return false;
    }
    zmq_ctx_set(t->ctx, ZMQ_IO_THREADS, 1);
    // One SUB socket a backend: libzmq's default limit (1023) is below KVS_MAX_BACKENDS.
    zmq_ctx_set(t->ctx, ZMQ_MAX_SOCKETS, KVS_MAX_BACKENDS + 64);
    impl_->transport = std::move(t);
    auto *tp = impl_->transport.get();
    tp->thr = std::thread([tp, im = impl_.get()] { tp->loop(*im); });
    return true;
}

}  // namespace kvsteer::control
