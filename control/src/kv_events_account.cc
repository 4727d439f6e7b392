// vLLM KV events: what each server's events say (KvEventStats), and the subscriber's table of
// subscriptions that the transport delivers into. No sockets here.
#include <spdlog/spdlog.h>

#include "kv_events_subscriber.h"

namespace kvsteer::control {

bool KvEventStats::account(const KvReceived &m, std::chrono::steady_clock::time_point now) {
    messages++;
    last_message = now;
    bool reset = false;
    // The sequence is read even when the payload is not: a batch we could not decode is still
    // not a gap.
    if (m.seq) {
        if (last_seq && *m.seq <= *last_seq) {
            // Numbering starts at 0 per publisher: it restarted, so did the engine and its cache.
            publisher_restarts++;
            reset = true;
        } else if (last_seq && *m.seq - *last_seq > 1) {
            seq_gaps++;
            // Saturated: the numbers are the publisher's (jumps of 2^63 back and forth wrapped
            // it, and the exported counter went backwards).
            const std::uint64_t d = *m.seq - *last_seq - 1;
            missed_batches = d > UINT64_MAX - missed_batches ? UINT64_MAX : missed_batches + d;
        }
        last_seq =
            m.seq;  // the first one seen is the baseline: batches before we joined are not gaps
    }
    if (reset) resident_blocks = 0;
    if (!m.ok) {
        decode_errors++;
        last_error = m.error;
    } else {
        last_batch_ts = m.batch.ts;
        for (const auto &e : m.batch.events) {
            switch (e.kind) {
                case KvEvent::Kind::Stored:
                    if (!e.gpu) {
                        other_medium_blocks += e.blocks;
                        break;
                    }
                    blocks_stored += e.blocks;
                    resident_blocks += e.blocks;
                    break;
                case KvEvent::Kind::Removed:
                    if (!e.gpu) {
                        other_medium_blocks += e.blocks;
                        break;
                    }
                    blocks_removed += e.blocks;
                    // Floored: removals of blocks stored before we subscribed.
                    resident_blocks = resident_blocks > e.blocks ? resident_blocks - e.blocks : 0;
                    break;
                case KvEvent::Kind::Cleared:
                    clears++;
                    resident_blocks = 0;
                    reset = true;
                    break;
                case KvEvent::Kind::Unknown:
                    unknown_events++;
                    break;
            }
        }
    }
    if (reset) resets++;
    return reset;
}

bool KvEventStats::on_message(const std::vector<std::string> &frames,
                              std::chrono::steady_clock::time_point now) {
    return account(decode_kv_frames(frames), now);
}

KvEventSubscriber::Impl::Delivered KvEventSubscriber::Impl::deliver(
    std::uint16_t id, std::uint64_t serial, const std::vector<std::string> &frames,
    std::size_t extra_frames) {
    // Decoded off the lock: the daemon's reads wait only for the counting.
    KvReceived m;
    if (extra_frames)
        m.error = "message has " + std::to_string(frames.size() + extra_frames) + " frames, not 3";
    else
        m = decode_kv_frames(frames);
    std::lock_guard lk(mu);
    auto it = subs.find(id);
    if (it == subs.end() || it->second.serial != serial) return Delivered::Gone;
    KvEventStats &st = it->second.st;
    const bool had_errors = st.decode_errors != 0;
    const bool reset = st.account(m, std::chrono::steady_clock::now());
    if (reset) resets.fetch_add(1);
    if (!m.ok && !had_errors)  // the first bad message per subscription; later ones are counted
        spdlog::warn("kv-events: backend {} ({}): undecodable message skipped: {}", id, st.endpoint,
                     m.error);
    return reset ? Delivered::Reset : Delivered::Counted;
}

void KvEventSubscriber::Impl::report(std::uint16_t id, std::uint64_t serial, const std::string &err,
                                     bool log) {
    if (log) spdlog::warn("kv-events: backend {}: {}", id, err);
    std::lock_guard lk(mu);
    auto it = subs.find(id);
    if (it != subs.end() && it->second.serial == serial) it->second.st.last_error = err;
}

KvEventSubscriber::KvEventSubscriber(std::function<void()> wake) : impl_(std::make_unique<Impl>()) {
    impl_->wake = std::move(wake);
}

void KvEventSubscriber::set(std::uint16_t id, const std::string &endpoint) {
    {
        std::lock_guard lk(impl_->mu);
        auto &sub = impl_->subs[id];
        sub.serial = impl_->next_serial++;
        sub.st = KvEventStats{};
        sub.st.endpoint = endpoint;
        ++impl_->changes;
    }
    impl_->poke();
}

void KvEventSubscriber::remove(std::uint16_t id) {
    {
        std::lock_guard lk(impl_->mu);
        if (impl_->subs.erase(id)) ++impl_->changes;
    }
    impl_->poke();
}

std::optional<KvEventStats> KvEventSubscriber::stats(std::uint16_t id) const {
    std::lock_guard lk(impl_->mu);
    auto it = impl_->subs.find(id);
    if (it == impl_->subs.end()) return std::nullopt;
    return it->second.st;
}

std::map<std::uint16_t, KvEventStats> KvEventSubscriber::all_stats() const {
    std::map<std::uint16_t, KvEventStats> out;
    std::lock_guard lk(impl_->mu);
    for (const auto &[id, sub] : impl_->subs) out.emplace(id, sub.st);
    return out;
}

std::uint64_t KvEventSubscriber::reset_events() const {
    return impl_->resets.load();
}

}  // namespace kvsteer::control
