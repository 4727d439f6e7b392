// vLLM KV events without a transport: kvsteerd was built without libzmq (control/CMakeLists.txt
// compiles this instead of kv_events_zmq.cc). Decoding and accounting still build and test; a
// backend with kv-events= is refused at startup.
#include "kv_events_subscriber.h"

namespace kvsteer::control {

bool kv_events_supported() {
    return false;
}

struct KvEventSubscriber::Impl::Transport {};

KvEventSubscriber::Impl::Impl() = default;
KvEventSubscriber::Impl::~Impl() = default;

void KvEventSubscriber::Impl::poke() {}

KvEventSubscriber::~KvEventSubscriber() = default;

bool KvEventSubscriber::start(std::string *err) {
    *err =
        "kv-events: this kvsteerd was built without KV events support (libzmq was not found at "
        "build time)";
    return false;
}

}  // namespace kvsteer::control
