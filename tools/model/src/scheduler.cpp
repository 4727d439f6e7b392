#include "kvsteer/model/scheduler.h"

#include <algorithm>

namespace kvsteer::model {

Scheduler::Scheduler(SchedulerConfig cfg, CacheConfig cache_cfg, CostConfig cost_cfg)
    : cfg_(cfg), cache_(cache_cfg), cost_(cost_cfg) {
    if (cfg_.max_batch == 0) cfg_.max_batch = 1;
    if (cfg_.max_batched_tokens == 0) cfg_.max_batched_tokens = 1;
}

SubmitResult Scheduler::submit(RequestSpec req, double now, std::vector<Event> &out) {
    advance(now, out);
    if (reqs_.contains(req.id)) return SubmitResult::DuplicateId;
    if (req.max_tokens == 0) req.max_tokens = 1;
    const uint64_t need =
        PrefixCache::blocks_for(req.prompt_tokens + req.max_tokens, cache_.config().block_tokens);
    if (req.prompt_tokens == 0 || need > cache_.total_blocks()) return SubmitResult::TooLarge;
    const uint64_t id = req.id;
    reqs_.emplace(id, Req{std::move(req), {}, 0, 0, false});
    waiting_.push_back(id);
    if (!busy_) start_step(now, out);
    return SubmitResult::Accepted;
}

void Scheduler::advance(double now, std::vector<Event> &out) {
    while (busy_ && step_end_ <= now) {
        const double t = step_end_;
        finish_step(out);
        start_step(t, out);
    }
}

std::optional<double> Scheduler::next_event_time() const {
    if (!busy_) return std::nullopt;
    return step_end_;
}

void Scheduler::remove_running(uint64_t id) {
    auto it = std::find(running_.begin(), running_.end(), id);
    if (it != running_.end()) running_.erase(it);
}

bool Scheduler::abort(uint64_t id, double now, std::vector<Event> &out) {
    advance(now, out);
    auto it = reqs_.find(id);
    if (it == reqs_.end()) return false;
    if (it->second.running) {
        cache_.release(it->second.alloc);
        remove_running(id);
    } else {
        waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
    }
    reqs_.erase(it);
    // The step in flight keeps its end time; finish_step skips ids that are gone.
    if (!busy_ && !waiting_.empty()) start_step(now, out);
    return true;
}

void Scheduler::start_step(double t, std::vector<Event> &out) {
    step_.clear();
    uint64_t budget = cfg_.max_batched_tokens;
    double prefill_work = 0.0;
    uint64_t decode_seqs = 0, decode_ctx = 0;

    // Running requests first (vLLM V1 order): decodes take one token of budget, partial
    // prefills continue with what is left.
    for (uint64_t id : running_) {
        Req &r = reqs_.at(id);
        if (r.computed >= r.spec.prompt_tokens) {
            if (budget == 0) break;
            step_.push_back({id, 0});
            ++decode_seqs;
            decode_ctx += r.spec.prompt_tokens + r.out;
            --budget;
        } else if (budget > 0) {
            const uint64_t chunk = std::min<uint64_t>(budget, r.spec.prompt_tokens - r.computed);
            step_.push_back({id, chunk});
            prefill_work += cost_.prefill_work(r.computed, chunk);
            budget -= chunk;
        }
    }
    // Then admit from the FIFO while a slot, budget and KV blocks remain. The head of the queue
    // blocks the rest (no reordering), as in vLLM.
    while (!waiting_.empty() && budget > 0 && running_.size() < cfg_.max_batch) {
        const uint64_t id = waiting_.front();
        Req &r = reqs_.at(id);
        auto alloc = cache_.allocate(r.spec.block_hashes, r.spec.prompt_tokens, r.spec.max_tokens);
        if (!alloc) break;
        waiting_.pop_front();
        r.alloc = std::move(*alloc);
        r.computed = uint64_t(r.alloc.hit_blocks) * cache_.config().block_tokens;
        r.running = true;
        running_.push_back(id);
        out.push_back({EventType::Admitted, id, t, 0, r.computed});
        const uint64_t chunk = std::min<uint64_t>(budget, r.spec.prompt_tokens - r.computed);
        step_.push_back({id, chunk});
        prefill_work += cost_.prefill_work(r.computed, chunk);
        budget -= chunk;
    }
    if (step_.empty()) {
        busy_ = false;
        return;
    }
    // A step always takes some time, or a zero-cost configuration would spin here forever.
    const double dur = std::max(cost_.step_time(prefill_work, decode_seqs, decode_ctx), 1e-9);
    busy_ = true;
    step_start_ = t;
    step_end_ = t + dur;
    busy_time_ += dur;
    ++steps_;
}

void Scheduler::finish_step(std::vector<Event> &out) {
    const double t = step_end_;
    busy_ = false;
    for (const StepItem &it : step_) {
        auto rit = reqs_.find(it.id);
        if (rit == reqs_.end()) continue;  // aborted meanwhile
        Req &r = rit->second;
        const uint64_t cached = uint64_t(r.alloc.hit_blocks) * cache_.config().block_tokens;
        if (it.prefill > 0) {
            r.computed += it.prefill;
            cache_.commit(r.alloc, r.computed);
            if (r.computed < r.spec.prompt_tokens) continue;
            r.out = 1;
            out.push_back({EventType::FirstToken, it.id, t, r.out, cached});
        } else {
            ++r.out;
            out.push_back({EventType::Token, it.id, t, r.out, cached});
        }
        if (r.out >= r.spec.max_tokens) {
            out.push_back({EventType::Finished, it.id, t, r.out, cached});
            cache_.release(r.alloc);
            remove_running(it.id);
            reqs_.erase(rit);
        }
    }
    step_.clear();
}

}  // namespace kvsteer::model
