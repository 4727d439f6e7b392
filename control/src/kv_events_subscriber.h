// KvEventSubscriber's state shared by its parts: the subscription table and the accounting of
// received messages (kv_events_account.cc), and the transport that receives them: libzmq
// (kv_events_zmq.cc) or, when kvsteerd is built without it, a stub (kv_events_nozmq.cc).
// CMake compiles exactly one of the two.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kvsteer/control/kv_events.h"

namespace kvsteer::control {

struct KvEventSubscriber::Impl {
    std::function<void()> wake;
    mutable std::mutex mu;  // guards subs, next_serial, changes
    struct Sub {
        std::uint64_t serial;  // tells a socket of an earlier subscription of the same id apart
        KvEventStats st;
    };
    std::map<std::uint16_t, Sub> subs;
    std::uint64_t next_serial = 1;
    std::uint64_t changes = 0;  // bumped by every set and remove: the transport syncs on a change
    std::atomic<std::uint64_t> resets{0};

    // The transport's own state (defined by the transport file).
    struct Transport;
    std::unique_ptr<Transport> transport;

    Impl();  // both in the transport file, where Transport is complete
    ~Impl();

    // Tells the transport the subscription set changed (transport file).
    void poke();

    // One received message of subscription (id, serial), as frames (at most a few kept) plus
    // `extra_frames` dropped beyond them: decoded off the lock, then counted. Reset: it said the
    // server's cache was emptied (the caller wakes the daemon). Gone: the subscription was
    // replaced or removed meanwhile; the message is dropped.
    enum class Delivered { Counted, Reset, Gone };
    Delivered deliver(std::uint16_t id, std::uint64_t serial,
                      const std::vector<std::string> &frames, std::size_t extra_frames);
    // Records a transport problem (connect failed) on subscription (id, serial); logged unless
    // `log` is false (a retry failing again the same way).
    void report(std::uint16_t id, std::uint64_t serial, const std::string &err, bool log = true);
};

}  // namespace kvsteer::control
