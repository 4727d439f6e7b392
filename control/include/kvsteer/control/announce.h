// Announcing the VIP: the local dataplane's health (its workers' heartbeats) decides whether this
// appliance asks BIRD to announce the VIP's routes (a BIRD protocol enabled) or to withdraw them
// (disabled). Backend health never does: an appliance whose backends are down still forwards its
// bound flows and refuses new ones with RSTs, which beats a blackhole. A drain withdraws whatever
// the health says.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/abi.h"

namespace kvsteer::control {

struct DataplaneHealth {
    bool healthy = false;
    unsigned workers_alive = 0;   // heartbeat within the stale limit
    unsigned workers_stale = 0;   // a heartbeat, too old (stuck or killed)
    std::uint64_t newest_ns = 0;  // the freshest heartbeat (0: none)
    std::uint64_t binding = 0;    // flows the beating workers are binding (kvs_ring_ctl.binding)
    std::string reason;           // why not healthy
};

// From the heartbeats in ring_ctl[0..n): healthy when at least one worker beats and none of the
// workers that beat has gone stale (a worker that stopped cleanly writes 0 and is not counted).
DataplaneHealth dataplane_health(const kvs_ring_ctl *ctl, unsigned n, std::uint64_t now_ns,
                                 std::uint64_t stale_ns);

// One command on BIRD's control socket (the birdc protocol: a greeting, then reply lines
// "NNNN-text", the last one "NNNN text"; codes 8000 and up are errors). `reply`: the text of the
// reply lines. false + err when the socket cannot be used, the reply is an error, or it takes
// longer than timeout_ms.
bool bird_command(const std::string &socket, const std::string &cmd, std::string *reply,
                  std::string *err, int timeout_ms = 1000);

struct AnnounceStatus {
    bool want = false;       // what the appliance asks for
    bool announced = false;  // what BIRD last confirmed (enabled)
    bool confirmed = false;  // BIRD answered the last command
    std::uint64_t changes = 0, errors = 0;
    std::string last_error;
};

// Applies the wanted state to BIRD on its own thread, so that the daemon's loop never waits on
// BIRD: every change at once, and every `reassert_ms` again (a restarted BIRD starts from its
// configuration, where the protocols are `disabled`).
class Announcer {
   public:
    Announcer(std::string socket, std::vector<std::string> protocols, int reassert_ms = 2000);
    ~Announcer();  // leaves BIRD as it is (stop() withdraws)
    Announcer(const Announcer &) = delete;
    Announcer &operator=(const Announcer &) = delete;

    void set(bool announce);
    // Withdraws synchronously and stops the thread (the daemon's shutdown).
    void stop();
    AnnounceStatus status() const;
    const std::string &socket() const { return socket_; }
    const std::vector<std::string> &protocols() const { return protocols_; }

   private:
    void loop();
    bool apply(bool announce, std::string *err);

    const std::string socket_;
    const std::vector<std::string> protocols_;
    const int reassert_ms_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    AnnounceStatus st_;
    bool dirty_ = false, stop_ = false;
    std::thread thr_;
};

}  // namespace kvsteer::control
