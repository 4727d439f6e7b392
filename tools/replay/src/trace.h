// Workloads for the replayer: Mooncake-format traces and SGLang's generated-shared-prefix shape,
// turned into prompts whose bytes are equal exactly as far as their block ids are equal.
#pragma once
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

namespace kvsteer::replay {

// A run of prompt text: `bytes` bytes of the deterministic text of `id`.
struct Segment {
    uint64_t id;
    uint64_t bytes;
};

struct WorkItem {
    double t_s = 0;             // send time, seconds from the start (before any speed-up)
    uint64_t input_tokens = 0;  // as the trace says
    uint32_t output_tokens = 0;
    std::vector<Segment> segments;  // the prompt, in order
    uint64_t line = 0;              // source line (trace) or index (synthetic)
    uint64_t session = 0;           // conversation it belongs to, 1-based (0: none known)
};

struct TextGeometry {
    uint32_t block_tokens = 512;  // Mooncake hash ids cover 512-token blocks
    uint32_t bytes_per_token = 4;
};

struct ParseResult {
    std::vector<WorkItem> items;
    std::vector<std::string> errors;  // "line N: what", at most max_errors of them
};

// Mooncake lines: {"timestamp": ms, "input_length": tokens, "output_length": tokens,
// "hash_ids": [...]}. Each hash id is a block of block_tokens tokens; the last block is cut so
// the prompt is input_length tokens. Blank lines are skipped; bad lines are reported by number
// and left out. Reads at most `limit` requests (0: all).
ParseResult parse_mooncake(std::istream &in, const TextGeometry &g, uint64_t limit = 0,
                           size_t max_errors = 20);

// The requests a replay of a parsed trace sends, as kvsteer-replay and the simulator both take
// them: those of more than `max_input_tokens` input tokens dropped (0: none), sorted by arrival
// (stable: ties keep file order), the first `limit` (0: all), times from the first arrival (a
// trace in epoch milliseconds starts at 0). Returns how many were dropped for their size.
size_t select_trace(std::vector<WorkItem> &items, uint64_t max_input_tokens, uint64_t limit);

struct SharedPrefixSpec {  // SGLang bench_serving --dataset-name generated-shared-prefix
    uint32_t groups = 64;
    uint32_t prompts_per_group = 16;
    uint32_t system_prompt_len = 2048;  // tokens
    uint32_t question_len = 128;        // tokens
    uint32_t output_len = 256;          // tokens
    uint64_t seed = 1;                  // shuffles the order, as SGLang does
};

// groups * prompts_per_group prompts: a group's system prompt followed by its own question,
// shuffled; all at t = 0 (give them arrival times with --qps).
std::vector<WorkItem> shared_prefix_workload(const SharedPrefixSpec &s, const TextGeometry &g);

// The first `n` bytes of the deterministic text of block `id`: JSON-safe ASCII words, opened
// by a tag unique to the id so different ids differ from their first bytes. Prefix-stable:
// block_text(id, n) is a prefix of block_text(id, m) for n <= m.
void append_block_text(std::string &out, uint64_t id, uint64_t n);

// The prompt of an item: its segments' texts concatenated.
std::string prompt_text(const WorkItem &w);

enum class ApiKind { Chat, Completions };

struct BodyOptions {
    ApiKind api = ApiKind::Chat;
    std::string model = "meta-llama/Llama-3.1-8B-Instruct";
    bool stream = true;
};

// The request body, with the prompt as early as possible ("model" then "messages"/"prompt"),
// so a router reading the first packets sees it. Chat: one user message holding the prompt.
std::string request_body(const WorkItem &w, const BodyOptions &o);

// Poisson arrivals at `qps` (deterministic for a seed): overwrites every item's t_s.
void poisson_arrivals(std::vector<WorkItem> &items, double qps, uint64_t seed);

}  // namespace kvsteer::replay
