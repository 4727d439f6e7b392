// The OpenAI API as vLLM serves it: request validation (status codes and error bodies as vLLM
// sends them) and response bodies (JSON and SSE chunks) with deterministic filler text.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kvsteer::emu {

enum class Api : uint8_t { Completions, Chat };

struct ApiLimits {
    std::vector<std::string> models;  // served names; the first is the default
    uint32_t bytes_per_token = 4;
    uint64_t max_model_len = 131072;
    uint32_t default_max_tokens = 16;
};

struct ApiError {
    int status = 400;
    std::string type = "BadRequestError";
    std::string message;
};

struct ParsedRequest {
    Api api = Api::Completions;
    std::string model;
    // Bytes the prefix cache sees. Completions: the decoded "prompt" string (array of strings:
    // concatenated; token-id arrays: each id as bytes_per_token little-endian bytes). Chat: the
    // raw bytes of the "messages" value exactly as sent, from its '['.
    std::string prompt_bytes;
    uint64_t prompt_tokens = 0;
    uint32_t max_tokens = 16;
    bool stream = false;
    bool include_usage = false;
};

std::variant<ParsedRequest, ApiError> parse_request(Api api, std::string_view body,
                                                    const ApiLimits &lim);

// vLLM's error body: {"object":"error","message":...,"type":...,"param":null,"code":N}.
std::string error_body(const ApiError &e);

// Output token i (0-based) of every response: a fixed word list, so bodies are deterministic.
std::string_view filler_token(uint32_t i);

// Deterministic padding bytes for large-response tests: byte k is "a..z0..9"[(offset+k) % 36].
std::string padding(uint64_t offset, uint64_t n);

struct ResponseCtx {
    Api api = Api::Completions;
    std::string id;       // "cmpl-..." / "chatcmpl-..."
    int64_t created = 0;  // unix seconds
    std::string model;
    uint64_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    bool include_usage = false;
};

// Non-streaming JSON body; pad_bytes > 0 adds a "kvsteer_padding" string member of that length.
std::string full_response(const ResponseCtx &c, uint64_t pad_bytes);

// One SSE emission of a streaming response: it is written when `tokens_out` output tokens exist.
struct StreamPiece {
    uint32_t tokens_out;
    std::string data;  // one or more complete SSE events ("data: ...\n\n") or comment lines
};

// A streaming response rendered piece by piece, in order: the content chunks (chunk_tokens
// tokens per event; chat opens with vLLM's role chunk; the last carries finish_reason
// "length"), the usage chunk when asked for, and "data: [DONE]". pad_bytes of SSE comment lines
// (": ...\n\n", at most kMaxPadLine bytes of padding each, a piece of their own) are spread over
// the token emissions, the remainder on the first. It holds only its position: a response of
// any length (max_tokens, padding) is never in memory whole; rendering it twice gives the same
// bytes (the server hashes it once for its header, then writes it as tokens come).
class StreamRender {
   public:
    static constexpr uint64_t kMaxPadLine = 64 * 1024;
    StreamRender(ResponseCtx c, uint32_t chunk_tokens, uint64_t pad_bytes);
    bool done() const { return done_; }
    // Output tokens that must exist before the next piece is written (!done() only).
    uint32_t next_tokens_out() const;
    // The next piece (never empty); call only while !done().
    std::string next();

   private:
    ResponseCtx c_;
    uint32_t n_, k_, emissions_;
    uint64_t pad_total_;
    uint32_t e_ = 0;            // current emission; == emissions_: the tail
    uint32_t tok_ = 0;          // tokens already rendered
    uint64_t pad_off_ = 0;      // padding bytes rendered
    uint64_t pad_left_ = 0;     // padding left in the current emission
    bool pad_started_ = false;  // pad_left_ set for emission e_
    bool done_ = false;
};

// Every piece of a streaming response, in order (StreamRender run to its end).
std::vector<StreamPiece> stream_pieces(const ResponseCtx &c, uint32_t chunk_tokens,
                                       uint64_t pad_bytes);

}  // namespace kvsteer::emu
