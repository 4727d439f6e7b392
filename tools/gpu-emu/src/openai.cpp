#include "openai.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "json_scan.h"

namespace kvsteer::emu {
namespace {

using nlohmann::json;

ApiError bad(std::string msg) {
    return ApiError{400, "BadRequestError", std::move(msg)};
}

// Appends a token id as bytes_per_token little-endian bytes (the id is the token, so equal id
// sequences give equal bytes and equal block hashes).
void append_token_id(std::string &out, uint64_t id, uint32_t bpt) {
    for (uint32_t k = 0; k < bpt; ++k) out.push_back(char(k < 8 ? (id >> (8 * k)) & 0xff : 0));
}

std::optional<ApiError> completion_prompt(const json &p, const ApiLimits &lim, std::string &out) {
    if (p.is_string()) {
        out = p.get<std::string>();
        return std::nullopt;
    }
    if (!p.is_array() || p.empty()) return bad("'prompt' must be a string or a non-empty array");
    if (p[0].is_string()) {
        for (const auto &e : p) {
            if (!e.is_string()) return bad("'prompt' array must hold only strings");
            out += e.get_ref<const std::string &>();
        }
        return std::nullopt;
    }
    if (p[0].is_number_integer()) {
        for (const auto &e : p) {
            if (!e.is_number_integer() || e.get<int64_t>() < 0)
                return bad("'prompt' token ids must be non-negative integers");
            append_token_id(out, e.get<uint64_t>(), lim.bytes_per_token);
        }
        return std::nullopt;
    }
    return bad("'prompt' must be a string, an array of strings or an array of token ids");
}

std::string usage_json(const ResponseCtx &c) {
    return json{{"prompt_tokens", c.prompt_tokens},
                {"total_tokens", c.prompt_tokens + c.completion_tokens},
                {"completion_tokens", c.completion_tokens}}
        .dump();
}

std::string chunk_head(const ResponseCtx &c) {
    const char *obj = c.api == Api::Chat ? "chat.completion.chunk" : "text_completion";
    return "data: {\"id\":\"" + c.id + "\",\"object\":\"" + obj +
           "\",\"created\":" + std::to_string(c.created) + ",\"model\":" + json(c.model).dump() +
           ",\"choices\":";
}

std::string content_event(const ResponseCtx &c, const std::string &text, bool last) {
    const std::string fin = last ? "\"length\"" : "null";
    std::string s = chunk_head(c);
    if (c.api == Api::Chat)
        s += "[{\"index\":0,\"delta\":{\"content\":" + json(text).dump() +
             "},\"logprobs\":null,\"finish_reason\":" + fin + "}]}\n\n";
    else
        s += "[{\"index\":0,\"text\":" + json(text).dump() +
             ",\"logprobs\":null,\"finish_reason\":" + fin + ",\"stop_reason\":null}]}\n\n";
    return s;
}

}  // namespace

std::variant<ParsedRequest, ApiError> parse_request(Api api, std::string_view body,
                                                    const ApiLimits &lim) {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) return bad("Invalid JSON in request body");
    if (!j.is_object()) return bad("Request body must be a JSON object");

    ParsedRequest r;
    r.api = api;
    if (j.contains("model") && !j["model"].is_null()) {
        if (!j["model"].is_string()) return bad("'model' must be a string");
        r.model = j["model"].get<std::string>();
        if (std::find(lim.models.begin(), lim.models.end(), r.model) == lim.models.end())
            return ApiError{404, "NotFoundError", "The model `" + r.model + "` does not exist."};
    } else {
        r.model = lim.models.empty() ? std::string() : lim.models.front();
    }

    if (api == Api::Completions) {
        if (!j.contains("prompt")) return bad("Field required: 'prompt'");
        if (auto e = completion_prompt(j["prompt"], lim, r.prompt_bytes)) return *e;
    } else {
        if (!j.contains("messages")) return bad("Field required: 'messages'");
        const json &m = j["messages"];
        if (!m.is_array() || m.empty()) return bad("'messages' must be a non-empty array");
        for (const auto &msg : m)
            if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string())
                return bad("each message must be an object with a string 'role'");
        auto raw = raw_top_level_value(body, "messages");
        if (!raw) return bad("cannot locate 'messages' in the request body");
        r.prompt_bytes.assign(raw->data(), raw->size());
    }
    r.prompt_tokens = (r.prompt_bytes.size() + lim.bytes_per_token - 1) / lim.bytes_per_token;
    if (r.prompt_tokens == 0) return bad("The prompt is empty");

    r.max_tokens = lim.default_max_tokens;
    for (const char *k : {"max_tokens", "max_completion_tokens"}) {
        if (!j.contains(k) || j[k].is_null()) continue;
        if (!j[k].is_number_integer()) return bad(std::string("'") + k + "' must be an integer");
        const int64_t v = j[k].get<int64_t>();
        if (v < 1)
            return bad(std::string(k) + " must be at least 1, got " + std::to_string(v) + ".");
        r.max_tokens = uint32_t(std::min<uint64_t>(uint64_t(v), lim.max_model_len));
        if (std::string_view(k) == "max_tokens") break;
    }
    if (r.prompt_tokens + r.max_tokens > lim.max_model_len)
        return bad("This model's maximum context length is " + std::to_string(lim.max_model_len) +
                   " tokens. However, you requested " +
                   std::to_string(r.prompt_tokens + r.max_tokens) + " tokens (" +
                   std::to_string(r.prompt_tokens) + " in the messages, " +
                   std::to_string(r.max_tokens) +
                   " in the completion). Please reduce the length of the messages or completion.");

    if (j.contains("stream") && !j["stream"].is_null()) {
        if (!j["stream"].is_boolean()) return bad("'stream' must be a boolean");
        r.stream = j["stream"].get<bool>();
    }
    if (j.contains("stream_options") && j["stream_options"].is_object()) {
        if (!r.stream) return bad("Stream options can only be defined when `stream=True`.");
        const json &so = j["stream_options"];
        if (so.contains("include_usage") && so["include_usage"].is_boolean())
            r.include_usage = so["include_usage"].get<bool>();
    }
    return r;
}

std::string error_body(const ApiError &e) {
    return json{{"object", "error"},
                {"message", e.message},
                {"type", e.type},
                {"param", nullptr},
                {"code", e.status}}
        .dump();
}

std::string_view filler_token(uint32_t i) {
    static constexpr std::string_view words[] = {
        " the", " cache", " holds", " a",  " prefix", " of",    " every", " prompt",
        " and", " each",  " token", " is", " four",   " bytes", " long",  "."};
    return words[i % (sizeof(words) / sizeof(words[0]))];
}

std::string padding(uint64_t offset, uint64_t n) {
    static constexpr std::string_view alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string s(n, ' ');
    for (uint64_t k = 0; k < n; ++k) s[k] = alphabet[(offset + k) % alphabet.size()];
    return s;
}

std::string full_response(const ResponseCtx &c, uint64_t pad_bytes) {
    std::string text;
    for (uint32_t i = 0; i < c.completion_tokens; ++i) text += filler_token(i);
    json j;
    j["id"] = c.id;
    j["created"] = c.created;
    j["model"] = c.model;
    if (c.api == Api::Chat) {
        j["object"] = "chat.completion";
        j["choices"] = json::array({json{
            {"index", 0},
            {"message", {{"role", "assistant"}, {"content", text}, {"tool_calls", json::array()}}},
            {"logprobs", nullptr},
            {"finish_reason", "length"},
            {"stop_reason", nullptr}}});
    } else {
        j["object"] = "text_completion";
        j["choices"] = json::array({json{{"index", 0},
                                         {"text", text},
                                         {"logprobs", nullptr},
                                         {"finish_reason", "length"},
                                         {"stop_reason", nullptr}}});
    }
    j["usage"] = json::parse(usage_json(c));
    if (pad_bytes > 0) j["kvsteer_padding"] = padding(0, pad_bytes);
    return j.dump();
}

StreamRender::StreamRender(ResponseCtx c, uint32_t chunk_tokens, uint64_t pad_bytes)
    : c_(std::move(c)),
      n_(std::max<uint32_t>(c_.completion_tokens, 1)),
      k_(std::max<uint32_t>(chunk_tokens, 1)),
      emissions_((n_ + k_ - 1) / k_),
      pad_total_(pad_bytes) {}

uint32_t StreamRender::next_tokens_out() const {
    return e_ < emissions_ ? std::min(n_, (e_ + 1) * k_) : n_;
}

std::string StreamRender::next() {
    if (e_ == emissions_) {  // the tail: its own HTTP chunk, as uvicorn writes it
        std::string tail;
        if (c_.include_usage) tail += chunk_head(c_) + "[],\"usage\":" + usage_json(c_) + "}\n\n";
        tail += "data: [DONE]\n\n";
        done_ = true;
        return tail;
    }
    if (!pad_started_) {
        pad_left_ = pad_total_ / emissions_ + (e_ == 0 ? pad_total_ % emissions_ : 0);
        pad_started_ = true;
    }
    std::string data;
    // Padding first, as SSE comments that every client ignores.
    if (pad_left_ > 0) {
        const uint64_t pad = std::min(pad_left_, StreamRender::kMaxPadLine);
        data += ": ";
        data += padding(pad_off_, pad);
        data += "\n\n";
        pad_off_ += pad;
        pad_left_ -= pad;
        return data;
    }
    const uint32_t upto = next_tokens_out();
    if (e_ == 0 && c_.api == Api::Chat)
        data += chunk_head(c_) +
                "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                "\"logprobs\":null,\"finish_reason\":null}]}\n\n";
    std::string text;
    for (; tok_ < upto; ++tok_) text += filler_token(tok_);
    data += content_event(c_, text, upto == n_);
    ++e_;
    pad_started_ = false;
    return data;
}

std::vector<StreamPiece> stream_pieces(const ResponseCtx &c, uint32_t chunk_tokens,
                                       uint64_t pad_bytes) {
    std::vector<StreamPiece> out;
    StreamRender r(c, chunk_tokens, pad_bytes);
    while (!r.done()) {
        const uint32_t t = r.next_tokens_out();
        out.push_back({t, r.next()});
    }
    return out;
}

}  // namespace kvsteer::emu
