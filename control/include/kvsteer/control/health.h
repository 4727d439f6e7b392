// Backend health: rise/fall state machine fed by active checks and passive dataplane signals.
#pragma once

#include <cstdint>
#include <string>

namespace kvsteer::control {

struct HealthParams {
    std::uint32_t rise = 2;
    std::uint32_t fall = 3;
};

class HealthState {
   public:
    // A new backend is down until its first successful check, which brings it up at once (no
    // reason to wait `rise` checks at startup); after it has been up once, rise/fall apply.
    // `assume_up` is for when active checks are off.
    explicit HealthState(bool assume_up = false) : up_(assume_up), ever_up_(assume_up) {}

    // Feeds one check result; returns true when the up/down verdict changed.
    bool observe(bool ok, const HealthParams &p);

    // Passive evidence (the dataplane's binds fail) takes a backend down regardless of the
    // active streaks; it comes back through `rise` active successes.
    void force_down() {
        up_ = false;
        ok_streak_ = 0;
    }

    bool up() const { return up_; }
    bool checked() const { return checked_; }
    std::uint32_t ok_streak() const { return ok_streak_; }
    std::uint32_t fail_streak() const { return fail_streak_; }

   private:
    bool up_;
    bool ever_up_;
    bool checked_ = false;
    std::uint32_t ok_streak_ = 0, fail_streak_ = 0;
};

}  // namespace kvsteer::control
