#include "kvsteer/control/health.h"

namespace kvsteer::control {

bool HealthState::observe(bool ok, const HealthParams &p) {
    bool was = up_;
    if (ok) {
        ok_streak_++;
        fail_streak_ = 0;
        if (!up_ && (!ever_up_ || ok_streak_ >= p.rise)) up_ = ever_up_ = true;
    } else {
        fail_streak_++;
        ok_streak_ = 0;
        if (up_ && fail_streak_ >= p.fall) up_ = false;
    }
    checked_ = true;
    return was != up_;
}

}  // namespace kvsteer::control
