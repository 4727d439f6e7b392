// A scope whose table changes are published once, when it ends (DaemonCore::begin_batch /
// end_batch), also when the work in it throws.
#pragma once

#include <spdlog/spdlog.h>

#include <exception>

#include "kvsteer/control/daemon_core.h"
#include "mono_clock.h"

namespace kvsteer::control {

class PublishBatch {
   public:
    // `what` names the work in the log line of a publish that failed.
    PublishBatch(DaemonCore &core, const char *what) : core_(core), what_(what) {
        core_.begin_batch();
    }
    ~PublishBatch() {
        try {
            core_.end_batch(mono_ns());
        } catch (const std::exception &e) {  // a destructor must not throw
            spdlog::error("{}: publishing failed: {} (kvsteerd goes on)", what_, e.what());
        }
    }
    PublishBatch(const PublishBatch &) = delete;
    PublishBatch &operator=(const PublishBatch &) = delete;

   private:
    DaemonCore &core_;
    const char *what_;
};

}  // namespace kvsteer::control
