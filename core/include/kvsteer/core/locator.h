// Request locator: finds the HTTP/1.1 request and the OpenAI prompt in a first flight's bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "kvsteer/abi.h"

namespace kvsteer {

enum class KeyKind : std::uint8_t {
    OpenAIPrompt = KVS_KEY_OPENAI_PROMPT,  // /v1/completions "prompt" (string or array)
    OpenAIChat = KVS_KEY_OPENAI_CHAT,      // /v1/chat/completions "messages" (array from '[')
    BodyPrefix = KVS_KEY_BODY_PREFIX,      // fallback: the body's leading bytes
    FiveTuple = KVS_KEY_FIVE_TUPLE,        // fallback: nothing usable, hash the connection
};

enum class LocateStatus : std::uint8_t {
    Ok,            // head parsed; body (or part of it) located
    NeedMoreHead,  // request line/headers not complete within the bytes given
    NotHttp,       // not an HTTP/1.x request line
    BadHeaders,    // malformed header block (bad Content-Length, conflicting lengths, ...)
};

// Everything is a view into the caller's buffer; offsets are from the buffer's start.
struct RequestView {
    LocateStatus status = LocateStatus::NotHttp;
    KeyKind kind = KeyKind::FiveTuple;
    std::string_view method;
    std::string_view path;  // request target as sent (no query stripping)
    std::string_view host;
    std::int64_t content_length = -1;  // -1: absent
    bool chunked = false;              // Transfer-Encoding: chunked
    bool expect_continue = false;      // Expect: 100-continue: the client sends no body until
                                       // the server answers, so waiting for body bytes is futile
    std::size_t body_offset = 0;       // first body byte (valid when status == Ok)
    std::size_t body_available = 0;    // body bytes present in the buffer
    bool body_complete = false;        // Content-Length reached within the buffer
    std::string_view model;            // "model" value bytes, escapes as sent; empty if not seen
    std::size_t key_offset = 0;        // first byte to hash: prompt value / messages '[' / body
    std::size_t key_len = 0;           // bytes from key_offset available in the buffer
    bool key_complete = false;         // OpenAI kinds: the key member's value ends in the buffer
    std::string_view key_model;  // OpenAI kinds: the "model" before the key member (the last one)
    bool dechunked = false;      // dechunk_request took the body's chunk framing out

    // The model to mix into hash_prompt: only one that precedes the key. A trailing "model"
    // (openai-python sends "messages" first) is seen only when the whole prompt fits the first
    // flight, so using it would give one prompt two hashes depending on its length; so would a
    // duplicate "model" after the key (the last one seen was used: the first when the flight was
    // cut inside the key, the second when it held the whole body).
    std::string_view hash_model() const { return key_model; }
};

// Bounded scan, no allocation, never reads outside `buf`. `buf` is the concatenation of the
// held segments' payloads in sequence order (possibly truncated anywhere).
// A chunked body's key is the first chunk's data.
RequestView locate_request(std::span<const std::uint8_t> buf) noexcept;

// For a chunked body (`r` = locate_request(buf), status Ok, chunked): takes the chunk framing out
// of the body in place (buf from r.body_offset becomes the data of the chunks present, in order,
// a chunk cut off by the buffer's end with its present bytes; leftovers follow), then locates the
// key in those bytes as in a Content-Length body: r.kind, key_offset, key_len and model index the
// de-chunked body, and r.dechunked is set. Returns its length; 0 (r unchanged) when there is
// nothing to take out (not chunked, no chunk data, a malformed first chunk). Before, only the
// first chunk's data was keyed: a client that writes `{` first sent every prompt to one key, and
// one prompt chunked two ways hashed two ways. The head, and r's views into it, are untouched.
std::size_t dechunk_request(std::span<std::uint8_t> buf, RequestView &r) noexcept;

const char *key_kind_name(KeyKind k) noexcept;
const char *locate_status_name(LocateStatus s) noexcept;

}  // namespace kvsteer
