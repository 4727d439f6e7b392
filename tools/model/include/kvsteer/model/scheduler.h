// Continuous-batching scheduler of one emulated GPU, shaped like vLLM V1's: a bounded running
// batch, a FIFO waiting queue, and steps that mix decodes with (chunked) prefills under a token
// budget. Discrete-event API: submit()/advance(now) return what happened up to `now`; the caller
// sleeps until next_event_time(). Pure: time is always a parameter (seconds, model time).
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvsteer/model/cost_model.h"
#include "kvsteer/model/prefix_cache.h"

namespace kvsteer::model {

struct SchedulerConfig {
    uint32_t max_batch = 256;            // vLLM max_num_seqs
    uint32_t max_batched_tokens = 8192;  // vLLM max_num_batched_tokens (per step)
};

struct RequestSpec {
    uint64_t id = 0;
    uint64_t prompt_tokens = 0;
    std::vector<uint64_t> block_hashes;  // chained hashes of the prompt's full blocks
    uint32_t max_tokens = 16;            // output tokens (always generated in full)
};

enum class EventType : uint8_t {
    Admitted,    // moved from waiting to running; cached_tokens known
    FirstToken,  // prefill done, token 1 out
    Token,       // a later output token
    Finished,    // last token out, blocks released
};

struct Event {
    EventType type;
    uint64_t id;
    double time;
    uint32_t tokens_out = 0;     // output tokens produced so far
    uint64_t cached_tokens = 0;  // prefix cache hit of this request
};

enum class SubmitResult : uint8_t { Accepted, DuplicateId, TooLarge };

class Scheduler {
   public:
    Scheduler(SchedulerConfig cfg, CacheConfig cache_cfg, CostConfig cost_cfg);

    // Runs the model up to `now`, then queues the request. Events up to `now` are appended to
    // `out`. TooLarge: prompt + output can never fit the KV cache.
    SubmitResult submit(RequestSpec req, double now, std::vector<Event> &out);

    // Runs every step that ends at or before `now`; appends their events in time order.
    void advance(double now, std::vector<Event> &out);

    // Drops a request (client went away): its blocks are released at once. False if unknown.
    // A step already running still takes the time it was scheduled with.
    bool abort(uint64_t id, double now, std::vector<Event> &out);

    // When the running step ends (the next time advance() has something to do).
    std::optional<double> next_event_time() const;

    uint32_t num_running() const { return uint32_t(running_.size()); }
    uint32_t num_waiting() const { return uint32_t(waiting_.size()); }
    const PrefixCache &cache() const { return cache_; }
    PrefixCache &cache() { return cache_; }  // e.g. to record and take block events
    const CostModel &cost() const { return cost_; }
    const SchedulerConfig &config() const { return cfg_; }
    uint64_t steps() const { return steps_; }
    double busy_time() const { return busy_time_; }

   private:
    struct Req {
        RequestSpec spec;
        Allocation alloc;
        uint64_t computed = 0;  // prompt tokens in the KV cache (hit + prefilled)
        uint32_t out = 0;       // output tokens produced
        bool running = false;
    };
    struct StepItem {
        uint64_t id;
        uint64_t prefill = 0;  // prompt tokens prefilled in this step (0: a decode)
    };

    void start_step(double t, std::vector<Event> &out);
    void finish_step(std::vector<Event> &out);
    void remove_running(uint64_t id);

    SchedulerConfig cfg_;
    PrefixCache cache_;
    CostModel cost_;
    std::unordered_map<uint64_t, Req> reqs_;
    std::deque<uint64_t> waiting_;
    std::vector<uint64_t> running_;  // admission order
    bool busy_ = false;
    double step_start_ = 0.0;
    double step_end_ = 0.0;
    std::vector<StepItem> step_;
    uint64_t steps_ = 0;
    double busy_time_ = 0.0;
};

}  // namespace kvsteer::model
