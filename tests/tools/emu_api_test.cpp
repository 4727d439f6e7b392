// The emulator's OpenAI layer: which bytes are the prompt, vLLM's error codes, SSE framing,
// the metrics text; and SHA-256 against FIPS test vectors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "json_scan.h"
#include "kvsteer/model/sha256.h"
#include "metrics.h"
#include "openai.h"

using namespace kvsteer::emu;

namespace {
ApiLimits limits() {
    ApiLimits l;
    l.models = {"m1", "m2"};
    l.max_model_len = 1000;
    return l;
}
ParsedRequest ok(Api api, const std::string &body) {
    auto r = parse_request(api, body, limits());
    if (auto *e = std::get_if<ApiError>(&r)) ADD_FAILURE() << "unexpected error: " << e->message;
    return std::get<ParsedRequest>(r);
}
ApiError err(Api api, const std::string &body) {
    auto r = parse_request(api, body, limits());
    EXPECT_TRUE(std::holds_alternative<ApiError>(r)) << body;
    return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
}
}  // namespace

TEST(JsonScan, RawTopLevelValue) {
    const std::string b =
        R"( {"model" : "x", "nested": {"messages": [1]}, "messages" :[ {"role":"user","content":"a]\"}"} ] , "z":1})";
    auto v = raw_top_level_value(b, "messages");
    ASSERT_TRUE(v);
    EXPECT_EQ(*v, R"([ {"role":"user","content":"a]\"}"} ])");
    EXPECT_EQ(*raw_top_level_value(b, "z"), "1");
    EXPECT_EQ(*raw_top_level_value(b, "model"), "\"x\"");
    EXPECT_FALSE(raw_top_level_value(b, "absent"));
    EXPECT_FALSE(raw_top_level_value("[1,2]", "messages"));
    // Duplicate keys: the last one, as JSON parsers keep it.
    EXPECT_EQ(*raw_top_level_value(R"({"k":[1],"k":[2]})", "k"), "[2]");
}

TEST(OpenAiParse, ChatPromptIsRawMessagesBytes) {
    const std::string msgs =
        R"([{"role":"system","content":"Be brief."}, {"role":"user","content":"caf\u00e9"}])";
    auto r =
        ok(Api::Chat, R"({"model":"m2","messages":)" + msgs + R"(,"max_tokens":7,"stream":true})");
    EXPECT_EQ(r.prompt_bytes, msgs);
    EXPECT_EQ(r.model, "m2");
    EXPECT_EQ(r.max_tokens, 7u);
    EXPECT_TRUE(r.stream);
    EXPECT_EQ(r.prompt_tokens, (msgs.size() + 3) / 4);
}

TEST(OpenAiParse, CompletionPromptForms) {
    auto a = ok(Api::Completions, R"({"prompt":"ab\ncd"})");
    EXPECT_EQ(a.prompt_bytes, "ab\ncd");  // decoded string
    EXPECT_EQ(a.model, "m1");             // default model
    EXPECT_EQ(a.max_tokens, 16u);         // default max_tokens
    EXPECT_EQ(a.prompt_tokens, 2u);
    auto b = ok(Api::Completions, R"({"prompt":["ab","cd"]})");
    EXPECT_EQ(b.prompt_bytes, "abcd");
    auto c = ok(Api::Completions, R"({"prompt":[1,2,258]})");
    EXPECT_EQ(c.prompt_tokens, 3u);
    EXPECT_EQ(c.prompt_bytes.size(), 12u);
    EXPECT_EQ(c.prompt_bytes.substr(8, 4), std::string("\x02\x01\x00\x00", 4));
    auto d =
        ok(Api::Chat, R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":3})");
    EXPECT_EQ(d.max_tokens, 3u);
}

TEST(OpenAiParse, ErrorsLikeVllm) {
    EXPECT_EQ(err(Api::Completions, "{bad").status, 400);
    EXPECT_EQ(err(Api::Completions, "[1]").status, 400);
    EXPECT_EQ(err(Api::Completions, R"({"model":"m1"})").status, 400);        // missing prompt
    EXPECT_EQ(err(Api::Chat, R"({"model":"m1","prompt":"x"})").status, 400);  // missing messages
    EXPECT_EQ(err(Api::Chat, R"({"messages":[]})").status, 400);
    EXPECT_EQ(err(Api::Chat, R"({"messages":[{"content":"x"}]})").status, 400);
    EXPECT_EQ(err(Api::Completions, R"({"prompt":"x","max_tokens":0})").status, 400);
    EXPECT_EQ(err(Api::Completions, R"({"prompt":"x","max_tokens":"5"})").status, 400);
    EXPECT_EQ(err(Api::Completions, R"({"prompt":"x","stream":"yes"})").status, 400);
    EXPECT_EQ(
        err(Api::Completions, R"({"prompt":"x","stream_options":{"include_usage":true}})").status,
        400);
    EXPECT_EQ(err(Api::Completions, R"({"prompt":[1,"a"]})").status, 400);
    const auto tooLong =
        err(Api::Completions, R"({"prompt":")" + std::string(4000, 'x') + R"(","max_tokens":10})");
    EXPECT_EQ(tooLong.status, 400);
    EXPECT_NE(tooLong.message.find("maximum context length is 1000"), std::string::npos);
    const auto nf = err(Api::Completions, R"({"model":"nope","prompt":"x"})");
    EXPECT_EQ(nf.status, 404);
    EXPECT_EQ(nf.type, "NotFoundError");
    auto body = nlohmann::json::parse(error_body(nf));
    EXPECT_EQ(body["object"], "error");
    EXPECT_EQ(body["code"], 404);
    EXPECT_TRUE(body["param"].is_null());
    EXPECT_EQ(body["message"], "The model `nope` does not exist.");
}

TEST(OpenAiResponse, StreamPiecesAreValidSse) {
    ResponseCtx c{Api::Chat, "chatcmpl-1", 1700000000, "m1", 12, 5, true};
    auto pieces = stream_pieces(c, 2, 0);
    // 5 tokens in chunks of 2: emissions at 2, 4, 5, then usage + [DONE].
    ASSERT_EQ(pieces.size(), 4u);
    EXPECT_EQ(pieces[0].tokens_out, 2u);
    EXPECT_EQ(pieces[2].tokens_out, 5u);
    std::string all;
    for (const auto &p : pieces) all += p.data;
    std::string content;
    int events = 0;
    bool done = false, usage = false, finish = false;
    size_t pos = 0;
    while (pos < all.size()) {
        const size_t end = all.find("\n\n", pos);
        ASSERT_NE(end, std::string::npos) << "unterminated event";
        const std::string ev = all.substr(pos, end - pos);
        pos = end + 2;
        ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        const std::string payload = ev.substr(6);
        ++events;
        if (payload == "[DONE]") {
            done = true;
            continue;
        }
        ASSERT_FALSE(done) << "event after [DONE]";
        auto j = nlohmann::json::parse(payload);
        EXPECT_EQ(j["object"], "chat.completion.chunk");
        EXPECT_EQ(j["id"], "chatcmpl-1");
        if (j.contains("usage")) {
            usage = true;
            EXPECT_EQ(j["usage"]["prompt_tokens"], 12);
            EXPECT_EQ(j["usage"]["completion_tokens"], 5);
            continue;
        }
        const auto &d = j["choices"][0]["delta"];
        if (d.contains("content")) content += d["content"].get<std::string>();
        if (!j["choices"][0]["finish_reason"].is_null()) finish = true;
    }
    EXPECT_TRUE(done && usage && finish);
    std::string expect;
    for (uint32_t i = 0; i < 5; ++i) expect += filler_token(i);
    EXPECT_EQ(content, expect);
    // role chunk + 3 content chunks + usage + [DONE]
    EXPECT_EQ(events, 6);
}

TEST(OpenAiResponse, PaddingMakesLargeBodies) {
    ResponseCtx c{Api::Completions, "cmpl-1", 1, "m1", 3, 4, false};
    auto pieces = stream_pieces(c, 1, 1000003);
    size_t total = 0;
    for (const auto &p : pieces) total += p.data.size();
    EXPECT_GT(total, 1000003u);
    EXPECT_EQ(pieces[0].data.rfind(": abcdef", 0), 0u);
    const auto full = nlohmann::json::parse(full_response(c, 5000));
    EXPECT_EQ(full["kvsteer_padding"].get<std::string>().size(), 5000u);
    EXPECT_EQ(full["usage"]["completion_tokens"], 4);
    EXPECT_EQ(full["choices"][0]["finish_reason"], "length");
}

// A long stream is rendered a bounded piece at a time, the same bytes both times, each piece
// written once its tokens exist (the server hashes it up front, then writes it as tokens come).
TEST(OpenAiResponse, StreamRenderIsBoundedAndRepeatable) {
    ResponseCtx c{Api::Chat, "chatcmpl-2", 1, "m1", 3, 1000, true};
    const uint64_t pad = 5 * StreamRender::kMaxPadLine + 17;
    StreamRender a(c, 7, pad), b(c, 7, pad);
    std::string all;
    uint32_t last_tokens = 0, pieces = 0;
    uint64_t comment_bytes = 0;
    while (!a.done()) {
        ASSERT_FALSE(b.done());
        const uint32_t t = a.next_tokens_out();
        EXPECT_GE(t, last_tokens);
        EXPECT_LE(t, 1000u);
        last_tokens = t;
        const std::string p = a.next();
        ASSERT_FALSE(p.empty());
        EXPECT_LE(p.size(), StreamRender::kMaxPadLine + 4096) << "piece " << pieces;
        EXPECT_EQ(p, b.next());
        if (p.rfind(": ", 0) == 0) comment_bytes += p.size() - 4;
        all += p;
        ++pieces;
    }
    EXPECT_TRUE(b.done());
    EXPECT_EQ(last_tokens, 1000u);
    EXPECT_EQ(comment_bytes, pad);
    std::string joined;
    for (const auto &p : stream_pieces(c, 7, pad)) joined += p.data;
    EXPECT_EQ(joined, all);
    EXPECT_EQ(all.substr(all.size() - 14), "data: [DONE]\n\n");
}

TEST(Metrics, VllmNamesAndHistogram) {
    Histogram h(ttft_buckets());
    h.observe(0.003);
    h.observe(0.3);
    h.observe(9999);
    MetricsSnapshot s;
    s.model_name = "m1";
    s.prefix_queries = 100;
    s.prefix_hits = 40;
    s.running = 3;
    s.ttft = &h;
    const std::string t = render_metrics(s);
    for (const char *needle :
         {"# TYPE vllm:prefix_cache_queries_total counter\n",
          "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"m1\"} 100\n",
          "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m1\"} 40\n",
          "vllm:num_requests_running{engine=\"0\",model_name=\"m1\"} 3\n",
          "vllm:num_requests_waiting{", "vllm:kv_cache_usage_perc{", "vllm:request_success_total{",
          "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m1\",le=\"0.005\"} "
          "1\n",
          "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m1\",le=\"0.5\"} 2\n",
          "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m1\",le=\"+Inf\"} 3\n",
          "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m1\"} 3\n"})
        EXPECT_NE(t.find(needle), std::string::npos) << needle;
}

TEST(Sha256, FipsVectors) {
    using kvsteer::model::sha256_hex;
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    kvsteer::model::Sha256 s;  // one million 'a', fed in uneven pieces
    const std::string chunk(997, 'a');
    size_t n = 0;
    while (n + chunk.size() <= 1000000) {
        s.update(chunk);
        n += chunk.size();
    }
    s.update(std::string(1000000 - n, 'a'));
    EXPECT_EQ(s.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
