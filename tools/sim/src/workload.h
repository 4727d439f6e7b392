// Simulated requests: what each policy may see (first flight, whole prompt) and what a server
// computes on (token counts, KV block hashes), built once from a trace or the synthetic generator.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "trace.h"

namespace kvsteer::sim {

struct SimRequest {
    double base_t = 0;           // arrival in the source (seconds), before any speed-up
    uint64_t prompt_tokens = 0;  // tokens the server counts (its prompt bytes / bytes_per_token)
    uint32_t output_tokens = 1;
    uint64_t prompt_bytes = 0;  // bytes the server hashes (chat: the "messages" value)
    // The server's chained KV block hashes (as the emulator computes them): the cache keys, and
    // for whole-prompt policies the prompt itself (chained hashes identify every prefix).
    std::vector<uint64_t> blocks;
    uint64_t tail = 0;  // hash of the partial last block (0: none); radix symbols only
    // HTTP head + body, cut at the workload's first-flight capacity: all kvsteer may read.
    std::string first_flight;
    uint64_t source_line = 0;
    // Closed loop (a conversation's later turn): sent once request `after` (an index into the
    // workload) finished, its arrival then that finish plus the gap the arrivals put between the
    // two (the think time, scaled as they are); -1: at its own arrival.
    int64_t after = -1;
};

struct WorkloadOptions {
    replay::ApiKind api = replay::ApiKind::Chat;
    std::string model = "meta-llama/Llama-3.1-8B-Instruct";
    uint32_t bytes_per_token = 4;       // the emulator's tokenizer
    uint32_t kv_block_tokens = 16;      // the servers' KV block (vLLM default)
    uint32_t first_flight_cap = 65536;  // bytes of head+body kept (>= any first flight simulated)
    // Header carrying each request's conversation id ("X-Session-ID: conv-N"), for workloads
    // that know it (conversation); empty: none sent.
    std::string session_header;
    // true: every request sends its own value in that header (a client that puts a request id
    // there), whatever the workload; false: the conversation id, where the workload has one.
    bool session_per_request = false;
    // Mooncake traces: skip requests with more input tokens than this (0: keep all), then take
    // the first `limit` by arrival, as kvsteer-replay's --max-input-tokens does.
    uint64_t max_input_tokens = 0;
};

struct Workload {
    std::string name;
    std::vector<SimRequest> reqs;
    double span_s = 0;  // last base arrival
};

// Reads a Mooncake-format trace (the first `limit` requests; with o.max_input_tokens, the
// replayer's request set: the longer ones skipped, the first `limit` of the rest by arrival,
// times relative to the first). Throws std::runtime_error naming the file and the first bad
// lines when the file cannot be read, has bad lines, or holds no request.
Workload load_mooncake(const std::string &path, uint64_t limit, const WorkloadOptions &o);

// SGLang's generated-shared-prefix shape (all at t = 0; give arrivals with --qps).
Workload make_shared_prefix(const replay::SharedPrefixSpec &s, const WorkloadOptions &o);

// Multi-turn conversations (chat sessions): every request opens with the same system prompt (so
// all share their first block), then its session's history (each earlier user turn and the
// reply to it) and a new user turn. Sessions start as a Poisson process; a session's turns follow
// each other after exponential think times. Deterministic for the seed; arrivals in base_t (give
// load with --speed).
struct ConversationSpec {
    uint32_t sessions = 256;
    uint32_t turns = 6;                 // mean turns per session: uniform in 1 .. 2 x turns - 1
    uint32_t system_prompt_len = 2048;  // tokens, identical in every request
    uint32_t user_len = 128;            // mean tokens of a user turn: uniform in 0.5x .. 1.5x
    uint32_t output_len = 256;          // tokens of each reply (and of its text in the history)
    double session_rate = 1.0;          // sessions started per second
    double think_s = 10.0;              // mean seconds from one turn's arrival to the next's
    uint64_t seed = 1;
};

// The conversation workload as replay items, sorted by arrival (line: the index).
std::vector<replay::WorkItem> conversation_items(const ConversationSpec &s,
                                                 const replay::TextGeometry &g);
Workload make_conversation(const ConversationSpec &s, const WorkloadOptions &o);

// Builds the simulator's view of already-parsed items (tests use this with hand-made items).
Workload from_items(std::string name, std::vector<replay::WorkItem> items,
                    const WorkloadOptions &o);

// Arrival times of a run: the source's times divided by `speed`, or Poisson at `qps` when
// qps > 0 (in the workload's order, deterministic for the seed). Sorted by construction when the
// source is sorted; the simulator sorts anyway.
std::vector<double> arrivals(const Workload &w, double speed, double qps, uint64_t seed);

}  // namespace kvsteer::sim
