// Request locator: real requests, every truncation point, hostile heads and bodies.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kvsteer/core/locator.h"

namespace kvsteer {
namespace {

RequestView loc(const std::string &s) {
    return locate_request({reinterpret_cast<const std::uint8_t *>(s.data()), s.size()});
}

std::string key_of(const std::string &s, const RequestView &r) {
    return s.substr(r.key_offset, r.key_len);
}

std::string post(const std::string &path, const std::string &body, const std::string &extra = "") {
    return "POST " + path + " HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\n" +
           extra + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Every view the locator returns must lie inside the buffer.
void expect_in_bounds(const std::string &s, const RequestView &r) {
    auto inside = [&](std::string_view v) {
        if (v.empty()) return true;
        return v.data() >= s.data() && v.data() + v.size() <= s.data() + s.size();
    };
    EXPECT_TRUE(inside(r.method));
    EXPECT_TRUE(inside(r.path));
    EXPECT_TRUE(inside(r.host));
    EXPECT_TRUE(inside(r.model));
    EXPECT_LE(r.key_offset + r.key_len, s.size());
    if (r.status == LocateStatus::Ok) {
        EXPECT_LE(r.body_offset + r.body_available, s.size());
    }
}

const std::string kChatBody =
    R"({"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say \"hi\" to C:\\temp\\"}],"stream":true,"max_tokens":64})";

TEST(CoreLocator, ChatRequest) {
    const std::string req = post("/v1/chat/completions", kChatBody);
    const RequestView r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.path, "/v1/chat/completions");
    EXPECT_EQ(r.host, "api.example");
    EXPECT_EQ(r.content_length, static_cast<std::int64_t>(kChatBody.size()));
    EXPECT_EQ(r.body_offset, req.size() - kChatBody.size());
    EXPECT_EQ(r.body_available, kChatBody.size());
    EXPECT_TRUE(r.body_complete);
    EXPECT_EQ(r.model, "meta-llama/Llama-3.1-8B-Instruct");
    const std::string key = key_of(req, r);
    EXPECT_EQ(key.front(), '[');
    EXPECT_EQ(key.back(), ']');
    EXPECT_EQ(
        key,
        R"([{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say \"hi\" to C:\\temp\\"}])");
}

TEST(CoreLocator, CompletionsStringPromptModelAfterPrompt) {
    const std::string body = R"({"prompt":"Once upon a time","model":"m1","max_tokens":5})";
    const std::string req = post("/v1/completions", body);
    const RequestView r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.model, "m1");
    EXPECT_EQ(key_of(req, r), R"("Once upon a time")");
    EXPECT_EQ(req[r.key_offset], '"');  // the value's first byte
}

TEST(CoreLocator, HashModelOnlyWhenItPrecedesTheKey) {
    // openai-python order: messages first. Whether or not the first flight reaches "model",
    // the model mixed into the hash is the same (none), so short and long prompts agree.
    const std::string after = post("/v1/chat/completions",
                                   R"({"messages":[{"role":"user","content":"hi"}],"model":"m"})");
    RequestView r = loc(after);
    EXPECT_EQ(r.model, "m");
    EXPECT_TRUE(r.key_model.empty());
    EXPECT_EQ(r.hash_model(), "");
    r = loc(after.substr(0, after.size() - 8));  // truncated before "model"
    EXPECT_EQ(r.model, "");
    EXPECT_EQ(r.hash_model(), "");
    const std::string before = post("/v1/chat/completions", R"({"model":"m","messages":[]})");
    r = loc(before);
    EXPECT_FALSE(r.key_model.empty());
    EXPECT_EQ(r.hash_model(), "m");
    EXPECT_EQ(loc(post("/other", R"({"model":"m"})")).hash_model(), "");  // BodyPrefix: in the key
}

TEST(CoreLocator, CompletionsArrayPrompt) {
    const std::string body = R"({"model":"m","prompt":[[1,2,3],[4,5]],"n":1})";
    const std::string req = post("/v1/completions", body);
    const RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(key_of(req, r), "[[1,2,3],[4,5]]");
}

TEST(CoreLocator, EscapesDoNotEndStrings) {
    // The prompt text contains something that looks like a "model" member and brackets.
    const std::string body =
        R"({"prompt":"say \"model\": \"evil\", ] } [ and a backslash \\","model":"good","x":"\\\\"})";
    const std::string req = post("/v1/completions", body);
    const RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.model, "good");
    EXPECT_EQ(key_of(req, r), R"("say \"model\": \"evil\", ] } [ and a backslash \\")");
}

TEST(CoreLocator, WhitespaceEverywhereJsonAllows) {
    const std::string body = "\r\n { \"model\"\t:\n \"m\" ,\r\n\t\"prompt\" : \"p\"\n}\n";
    const std::string req = post("/v1/completions", body);
    const RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.model, "m");
    EXPECT_EQ(key_of(req, r), "\"p\"");
}

TEST(CoreLocator, NestedValuesBeforeTheKeyAreSkipped) {
    const std::string body =
        R"({"logit_bias":{"prompt":"decoy","model":"decoy"},"stop":["]","}"],"so":{"a":[1,{"b":"]\"["}]},"temperature":0.5,"echo":false,"user":null,"prompt":"real","model":"m"})";
    const std::string req = post("/v1/completions", body);
    const RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.model, "m");
    EXPECT_EQ(key_of(req, r), "\"real\"");
}

TEST(CoreLocator, ChatWithManyTurnsKeyCoversEveryTurn) {
    std::string msgs = "[";
    for (int i = 0; i < 300; ++i) {
        if (i) msgs += ",";
        msgs += R"({"role":")" + std::string(i % 2 ? "assistant" : "user") +
                R"(","content":"turn )" + std::to_string(i) +
                R"( with \"quotes\" and [brackets]"})";
    }
    msgs += "]";
    const std::string body = R"({"messages":)" + msgs + R"(,"model":"late-model"})";
    const std::string req = post("/v1/chat/completions", body);
    const RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
    EXPECT_EQ(r.model, "late-model");
    EXPECT_EQ(key_of(req, r), msgs);
}

TEST(CoreLocator, QueryStringAndAbsoluteFormStillMatch) {
    const std::string body = R"({"model":"m","prompt":"p"})";
    for (const char *path :
         {"/v1/completions?x=1", "/v1/completions#frag", "http://api.example/v1/completions?a=b"}) {
        const std::string req = post(path, body);
        const RequestView r = loc(req);
        EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt) << path;
        EXPECT_EQ(r.path, path);
        EXPECT_EQ(key_of(req, r), "\"p\"");
    }
    const std::string req = post("/v1/completions/extra", body);
    EXPECT_EQ(loc(req).kind, KeyKind::BodyPrefix);
    // Percent-encoded, as the servers decode it before routing (it was keyed as the body's bytes).
    for (const char *path :
         {"/v1/%63ompletions", "/v1%2Fcompletions", "/%76%31/completions?x", "/v1/completion%73"}) {
        EXPECT_EQ(loc(post(path, body)).kind, KeyKind::OpenAIPrompt) << path;
    }
    for (const char *path : {"/v1/completions%", "/v1/completions%7", "/v1/%6completions",
                             "/v1/%zzompletions", "/v1/completions%2F"}) {
        EXPECT_EQ(loc(post(path, body)).kind, KeyKind::BodyPrefix) << path;
    }
}

TEST(CoreLocator, Http10AndBareLfAndLeadingEmptyLine) {
    const std::string body = R"({"model":"m","prompt":"p"})";
    std::string req =
        "POST /v1/completions HTTP/1.0\nContent-Length: " + std::to_string(body.size()) + "\n\n" +
        body;
    RequestView r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.body_offset, req.size() - body.size());

    req = "\r\n" + post("/v1/completions", body);
    r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.method, "POST");
}

TEST(CoreLocator, HeaderNamesCaseInsensitiveValuesTrimmed) {
    const std::string body = R"({"model":"m","prompt":"p"})";
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nhOsT: \t h:8000 \t\r\ncontent-LENGTH:   " +
        std::to_string(body.size()) + "  \r\n\r\n" + body;
    const RequestView r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.host, "h:8000");
    EXPECT_EQ(r.content_length, static_cast<std::int64_t>(body.size()));
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
}

TEST(CoreLocator, TruncatedAtEveryOffset) {
    const std::string req = post("/v1/chat/completions", kChatBody);
    const std::size_t head_end = req.size() - kChatBody.size();
    const std::size_t bracket = req.find("\"messages\":[") + std::string("\"messages\":").size();
    const std::size_t model_end = req.find("Instruct\"") + std::string("Instruct\"").size();
    for (std::size_t cut = 0; cut <= req.size(); ++cut) {
        const std::string part = req.substr(0, cut);
        const RequestView r = loc(part);
        SCOPED_TRACE("cut at " + std::to_string(cut));
        expect_in_bounds(part, r);
        if (cut < head_end) {
            ASSERT_EQ(r.status, LocateStatus::NeedMoreHead);
            continue;
        }
        ASSERT_EQ(r.status, LocateStatus::Ok);
        EXPECT_EQ(r.body_offset, head_end);
        EXPECT_EQ(r.body_available, cut - head_end);
        EXPECT_EQ(r.body_complete, cut == req.size());
        EXPECT_EQ(r.model.empty(), cut < model_end);
        if (cut == head_end) {
            EXPECT_EQ(r.kind, KeyKind::FiveTuple);
        } else if (cut <= bracket) {
            EXPECT_EQ(r.kind, KeyKind::BodyPrefix);
            EXPECT_EQ(r.key_offset, head_end);
            EXPECT_EQ(r.key_len, cut - head_end);
        } else {
            EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
            EXPECT_EQ(r.key_offset, bracket);
            EXPECT_LE(r.key_offset + r.key_len, cut);
        }
    }
}

TEST(CoreLocator, BadContentLengths) {
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: h\r\n";
    for (const char *cl :
         {"Content-Length: abc\r\n", "Content-Length: -1\r\n", "Content-Length: +5\r\n",
          "Content-Length: 1 2\r\n", "Content-Length:\r\n", "Content-Length: 5, 6\r\n",
          "Content-Length: 5,,5\r\n", "Content-Length: 0x10\r\n",
          "Content-Length: 99999999999999999999\r\n", "Content-Length: 9223372036854775808\r\n",
          "Content-Length: 5\r\nContent-Length: 6\r\n"}) {
        EXPECT_EQ(loc(head + cl + "\r\n").status, LocateStatus::BadHeaders) << cl;
    }
    // Identical repeats are one length (RFC 9110 8.6).
    RequestView r = loc(head + "Content-Length: 5, 5\r\nContent-Length: 5\r\n\r\nabcde");
    EXPECT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.content_length, 5);
    EXPECT_TRUE(r.body_complete);
    // Huge but representable: accepted, never complete.
    r = loc(head + "Content-Length: 9223372036854775807\r\n\r\n{\"prompt\":\"x");
    EXPECT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.content_length, 9223372036854775807LL);
    EXPECT_FALSE(r.body_complete);
    EXPECT_EQ(r.kind, KeyKind::OpenAIPrompt);
    EXPECT_EQ(r.key_len, 2u);  // the opening quote and x, truncated
}

TEST(CoreLocator, MalformedHeads) {
    const std::string ok = "POST /x HTTP/1.1\r\n";
    EXPECT_EQ(loc(ok + "Host : h\r\n\r\n").status, LocateStatus::BadHeaders);  // space before ':'
    EXPECT_EQ(loc(ok + "Host: h\r\n  folded\r\n\r\n").status,
              LocateStatus::BadHeaders);  // obs-fold
    EXPECT_EQ(loc(ok + "Host: a\r\nHost: b\r\n\r\n").status,
              LocateStatus::BadHeaders);  // two Hosts
    EXPECT_EQ(loc(ok + "Bad\x01Name: v\r\n\r\n").status, LocateStatus::BadHeaders);
    EXPECT_EQ(loc(ok + "X: a\rb\r\n\r\n").status, LocateStatus::BadHeaders);  // bare CR
    EXPECT_EQ(loc(ok + std::string("X: a\0b\r\n\r\n", 10)).status, LocateStatus::BadHeaders);
    EXPECT_EQ(loc(ok + "NoColon\r\n\r\n").status, LocateStatus::BadHeaders);
    EXPECT_EQ(loc(ok + "\r\r\n").status, LocateStatus::BadHeaders);
    EXPECT_EQ(loc(ok + "Host: h\r\n").status, LocateStatus::NeedMoreHead);
}

TEST(CoreLocator, NotHttp) {
    EXPECT_EQ(loc("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status, LocateStatus::NotHttp);
    EXPECT_EQ(loc("GET /\r\n").status, LocateStatus::NotHttp);  // HTTP/0.9
    EXPECT_EQ(loc("GET / HTTP/1.2\r\n").status, LocateStatus::NotHttp);
    EXPECT_EQ(loc("GET  / HTTP/1.1\r\n").status, LocateStatus::NotHttp);
    EXPECT_EQ(loc("\x16\x03\x01\x02\x00\x01\x00").status,
              LocateStatus::NotHttp);  // TLS ClientHello
    EXPECT_EQ(loc(std::string(40, 'A') + " / HTTP/1.1\r\n").status, LocateStatus::NotHttp);
    EXPECT_EQ(loc("GET / HTTP/1.1\rX").status, LocateStatus::NotHttp);
    // A prefix of a valid request line is not "not HTTP" yet.
    EXPECT_EQ(loc("GET / HTT").status, LocateStatus::NeedMoreHead);
}

TEST(CoreLocator, EmptyInput) {
    const RequestView r = locate_request({});
    EXPECT_EQ(r.status, LocateStatus::NeedMoreHead);
    EXPECT_EQ(r.kind, KeyKind::FiveTuple);
    EXPECT_EQ(r.key_len, 0u);
}

TEST(CoreLocator, FallbackKinds) {
    // Non-OpenAI path with a body: the body's leading bytes.
    std::string req = post("/generate", R"({"prompt":"x"})");
    RequestView r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::BodyPrefix);
    EXPECT_EQ(r.key_offset, r.body_offset);
    EXPECT_EQ(key_of(req, r), R"({"prompt":"x"})");
    // No body at all.
    r = loc("GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n");
    EXPECT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.kind, KeyKind::FiveTuple);
    EXPECT_TRUE(r.body_complete);
    EXPECT_EQ(loc("POST /v1/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n").kind,
              KeyKind::FiveTuple);
    // OpenAI path, but no usable key: wrong type, missing, not an object, chat with a string.
    for (const char *body : {R"({"model":"m","prompt":42})", R"({"model":"m"})",
                             R"(["prompt","x"])", "not json at all"}) {
        req = post("/v1/completions", body);
        r = loc(req);
        EXPECT_EQ(r.kind, KeyKind::BodyPrefix) << body;
        EXPECT_EQ(r.key_offset, r.body_offset);
    }
    req = post("/v1/chat/completions", R"({"model":"m","messages":"hello"})");
    r = loc(req);
    EXPECT_EQ(r.kind, KeyKind::BodyPrefix);
    EXPECT_EQ(r.model, "m");  // the model is still reported
    // Member names are compared as sent (no unescaping).
    EXPECT_EQ(loc(post("/v1/completions", R"({"pro\u006dpt":"x"})")).kind, KeyKind::BodyPrefix);
}

TEST(CoreLocator, DuplicateMembersLastWins) {
    const std::string req =
        post("/v1/completions", R"({"prompt":"a","model":"m1","prompt":"b","model":"m2"})");
    const RequestView r = loc(req);
    EXPECT_EQ(key_of(req, r), "\"b\"");
    EXPECT_EQ(r.model, "m2");
}

TEST(CoreLocator, PipelinedBytesAreNotBody) {
    const std::string body = R"({"model":"m","prompt":"p"})";
    const std::string req = post("/v1/completions", body) + "GET / HTTP/1.1\r\n\r\n";
    const RequestView r = loc(req);
    EXPECT_EQ(r.body_available, body.size());
    EXPECT_TRUE(r.body_complete);
    EXPECT_EQ(key_of(req, r), "\"p\"");
    // Body-prefix keys stop at Content-Length too.
    const std::string other = post("/other", "abc") + "XYZ";
    const RequestView o = loc(other);
    EXPECT_EQ(key_of(other, o), "abc");
}

TEST(CoreLocator, ChunkedKeyIsFirstChunkData) {
    const std::string c1 = R"({"model":"m","messages":[{"role":"user","content":"hello"}])";
    const std::string c2 = R"(,"stream":true})";
    auto hex = [](std::size_t n) {
        char b[32];
        snprintf(b, sizeof b, "%zx", n);
        return std::string(b);
    };
    const std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string body =
        hex(c1.size()) + ";ext=1\r\n" + c1 + "\r\n" + hex(c2.size()) + "\r\n" + c2 + "\r\n0\r\n";
    std::string req = head + body + "\r\n";
    RequestView r = loc(req);
    ASSERT_EQ(r.status, LocateStatus::Ok);
    EXPECT_TRUE(r.chunked);
    EXPECT_EQ(r.content_length, -1);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
    EXPECT_EQ(r.model, "m");
    EXPECT_EQ(key_of(req, r), R"([{"role":"user","content":"hello"}])");
    EXPECT_TRUE(r.body_complete);
    EXPECT_EQ(r.body_available, req.size() - head.size());

    // With a trailer field, and then without the final empty line: not complete.
    req = head + body + "X-Trailer: 1\r\n\r\n";
    EXPECT_TRUE(loc(req).body_complete);
    req = head + body;
    r = loc(req);
    EXPECT_FALSE(r.body_complete);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
    // Chunk header not complete yet: no body bytes to hash.
    EXPECT_EQ(loc(head + "3").kind, KeyKind::FiveTuple);
    // Malformed chunk size: hashed as raw body.
    EXPECT_EQ(loc(head + "zz\r\nabc").kind, KeyKind::BodyPrefix);
    // gzip, chunked is still chunked framing.
    EXPECT_EQ(loc("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").status,
              LocateStatus::Ok);
}

// Chunked framing is CRLF exactly (RFC 9112 7.1): a bare LF after chunk data, a bare CR in a
// chunk-size line, a bare-LF size or trailer line leave the body not complete (no request end:
// never re-bound there). Parsers disagree on such framing: h11 before 0.16 skips the two bytes
// after chunk data unread, so "1\r\nx\n100\r\n..." ended elsewhere for it than here, and the
// rest of the body was a request of its own on a leg kvsteer took for quiescent.
TEST(CoreLocator, ChunkFramingOtherThanCrlfHasNoEnd) {
    const std::string head =
        "POST /v1/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string d(256, 'd');
    EXPECT_TRUE(loc(head + "1\r\nx\r\n100\r\n" + d + "\r\n0\r\n\r\n").body_complete)
        << "the same framing with CRLF";
    for (const std::string &body : std::vector<std::string>{
             "1\r\nx\n100\r\n" + d + "\r\n0\r\n\r\n",  // bare LF after chunk data
             "1\r\nx\r\n100\n" + d + "\r\n0\r\n\r\n",  // bare LF ends a size line
             "1\rjunk\nx\r\n0\r\n\r\n",                // bare CR in a size line
             "1;a=\rb\r\nx\r\n0\r\n\r\n",              // ... in an extension
             "1\r\nx\r\n0\r\nT: 1\n\r\n",              // bare-LF trailer line
             "1\r\nx\r\n0\r\n\n",                      // bare-LF final line
             "1\r\nxy\r\n0\r\n\r\n",                   // data longer than its size
         }) {
        const RequestView r = loc(head + body);
        SCOPED_TRACE(body);
        EXPECT_EQ(r.status, LocateStatus::Ok);
        EXPECT_FALSE(r.body_complete);
    }
}

// A chunked body keyed without its framing (dechunk_request, in place): the same prompt in any
// chunking, or with Content-Length, has the same key bytes; a client that writes `{` first is
// keyed on its whole JSON, not on "{" (before, every such prompt shared one key).
TEST(CoreLocator, DechunkedBodyKeyedLikeAContentLengthOne) {
    const std::string json =
        R"({"model":"m","messages":[{"role":"user","content":"summarise the attached report"}]})";
    auto hex = [](std::size_t n) {
        char b[32];
        snprintf(b, sizeof b, "%zx", n);
        return std::string(b);
    };
    const RequestView cl = loc(post("/v1/chat/completions", json));
    const std::string want = post("/v1/chat/completions", json).substr(cl.key_offset, cl.key_len);
    const std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (const std::vector<std::size_t> &cuts :
         {std::vector<std::size_t>{1}, {1, 7, 30}, {json.size()}, {5, 6}}) {
        std::string body;
        std::size_t at = 0;
        for (std::size_t c : cuts) {
            body +=
                hex(c - at) + (at == 0 ? ";ext=a" : "") + "\r\n" + json.substr(at, c - at) + "\r\n";
            at = c;
        }
        if (at < json.size()) body += hex(json.size() - at) + "\r\n" + json.substr(at) + "\r\n";
        for (const bool complete : {true, false}) {
            std::string req = head + body + (complete ? "0\r\n\r\n" : "");
            if (!complete) req.resize(req.size() - 2);  // the last chunk's CRLF not here yet
            std::vector<std::uint8_t> buf(req.begin(), req.end());
            RequestView r = locate_request(buf);
            SCOPED_TRACE(req);
            ASSERT_TRUE(r.chunked);
            if (cuts[0] == 1) {
                EXPECT_EQ(r.kind, KeyKind::BodyPrefix) << "the first chunk is \"{\"";
            }
            const std::size_t n = dechunk_request(buf, r);
            EXPECT_EQ(n, json.size());
            EXPECT_TRUE(r.dechunked);
            EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
            EXPECT_EQ(r.model, "m");
            EXPECT_FALSE(r.key_model.empty());
            EXPECT_EQ(
                std::string(buf.begin() + static_cast<std::ptrdiff_t>(r.key_offset),
                            buf.begin() + static_cast<std::ptrdiff_t>(r.key_offset + r.key_len)),
                want);
            EXPECT_EQ(r.body_complete, complete);
            EXPECT_EQ(r.path, "/v1/chat/completions") << "the head's views stay";
        }
    }
    // A chunk cut off by the buffer's end: its present bytes count.
    std::string cut = head + hex(json.size()) + "\r\n" + json.substr(0, 40);
    std::vector<std::uint8_t> buf(cut.begin(), cut.end());
    RequestView r = locate_request(buf);
    EXPECT_EQ(dechunk_request(buf, r), 40u);
    // Nothing to take out: not chunked, no chunk data yet, a malformed first chunk.
    std::string plain = post("/v1/chat/completions", json);
    std::vector<std::uint8_t> pb(plain.begin(), plain.end());
    RequestView p = locate_request(pb);
    EXPECT_EQ(dechunk_request(pb, p), 0u);
    EXPECT_FALSE(p.dechunked);
    for (const std::string &bad : {head + "3", head + "zz\r\nabc"}) {
        std::vector<std::uint8_t> b(bad.begin(), bad.end());
        RequestView v = locate_request(b);
        const RequestView before = v;
        EXPECT_EQ(dechunk_request(b, v), 0u) << bad;
        EXPECT_EQ(v.kind, before.kind);
        EXPECT_EQ(v.key_offset, before.key_offset);
    }
}

TEST(CoreLocator, ExpectContinue) {
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n";
    RequestView r = loc(head + "Expect:  100-Continue \r\n\r\n");
    EXPECT_EQ(r.status, LocateStatus::Ok);
    EXPECT_TRUE(r.expect_continue);
    EXPECT_EQ(r.kind, KeyKind::FiveTuple);  // no body bytes yet, and none will come unasked
    EXPECT_FALSE(loc(head + "\r\n").expect_continue);
    EXPECT_FALSE(loc(head + "Expect: something-else\r\n\r\n").expect_continue);
}

// A duplicate "model" after the key does not change the model the key is hashed with: the first
// flight cut inside the key saw "a", the whole body saw "b" last (two hashes for one request).
TEST(CoreLocator, ADuplicateModelAfterTheKeyKeepsTheKeysModel) {
    const std::string body = "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"" +
                             std::string(600, 'x') + "\"}],\"model\":\"b\"}";
    const std::string req = post("/v1/chat/completions", body);
    const RequestView whole = loc(req), cut = loc(req.substr(0, req.size() - 30));
    EXPECT_EQ(whole.hash_model(), "a");
    EXPECT_EQ(cut.hash_model(), "a");
    EXPECT_TRUE(whole.key_complete);
    EXPECT_FALSE(cut.key_complete);
    expect_in_bounds(req, whole);
    // Only a model after the key: none hashed, whole or cut.
    const std::string late = post("/v1/chat/completions",
                                  "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                                  "\"model\":\"b\"}");
    EXPECT_EQ(loc(late).hash_model(), "");
    EXPECT_EQ(loc(late).model, "b");
}

// Chunk sizes: leading zeros do not count towards the 15-digit limit (h11 and llhttp take 16 or
// more digits of a valid size; the key was the raw framed bytes, the body's end never known);
// 16 significant digits are still refused.
TEST(CoreLocator, ChunkSizeLeadingZerosAreNotDigitsOfTheSize) {
    const std::string body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
    char size[32];
    std::snprintf(size, sizeof size, "%016zx", body.size());
    const std::string head =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string req = head + size + "\r\n" + body + "\r\n0\r\n\r\n";
    RequestView r = loc(req);
    EXPECT_EQ(r.status, LocateStatus::Ok);
    EXPECT_EQ(r.kind, KeyKind::OpenAIChat);
    EXPECT_TRUE(r.body_complete);
    const RequestView big = loc(head + "1000000000000000\r\n" + body);
    EXPECT_EQ(big.kind, KeyKind::BodyPrefix);
    EXPECT_FALSE(big.body_complete);
}

// A CR that starts the head's last line and is followed by anything but LF can never end the
// head: BadHeaders at once (it was NeedMoreHead, held until a LF or the flight's cap). A CR as
// the buffer's last byte may still be one.
TEST(CoreLocator, ABareCrEndingTheHeadIsBad) {
    EXPECT_EQ(loc("POST /x HTTP/1.1\r\nHost: a\r\n\rXXXXXXXX").status, LocateStatus::BadHeaders);
    EXPECT_EQ(loc("POST /x HTTP/1.1\r\nHost: a\r\n\r").status, LocateStatus::NeedMoreHead);
}

// Every prefix of a valid request: never NotHttp/BadHeaders, views inside the prefix, and the
// located key's start never moves once found.
TEST(CoreLocator, EveryPrefixOfValidRequestsIsConsistent) {
    const std::string chunk = R"({"model":"m","messages":[{"role":"user","content":"x\"y"}]})";
    char size_line[16];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
    const std::vector<std::string> requests = {
        post("/v1/completions", R"({"prompt":["a\\",[1,2]],"temperature":0.1,"model":"m2"})"),
        post("/v1/completions?stream=1", R"( { "stop" : { "x" : [ "]" ] } , "prompt" : "p" } )"),
        post("/embeddings", R"({"input":"text"})"),
        "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
            std::string(size_line) + chunk + "\r\n0\r\n\r\n",
        "GET /health HTTP/1.0\n\n",
    };
    for (const std::string &req : requests) {
        const RequestView full = loc(req);
        ASSERT_EQ(full.status, LocateStatus::Ok) << req;
        ASSERT_TRUE(full.body_complete) << req;
        for (std::size_t cut = 0; cut <= req.size(); ++cut) {
            const std::string part = req.substr(0, cut);
            const RequestView r = loc(part);
            SCOPED_TRACE(req + " cut at " + std::to_string(cut));
            expect_in_bounds(part, r);
            ASSERT_TRUE(r.status == LocateStatus::Ok || r.status == LocateStatus::NeedMoreHead);
            if (r.status == LocateStatus::Ok) {
                EXPECT_EQ(r.body_offset, full.body_offset);
                if (r.kind == full.kind) {
                    EXPECT_EQ(r.key_offset, full.key_offset);
                }
            }
        }
    }
}

TEST(CoreLocator, RefusedFramings) {
    EXPECT_EQ(
        loc("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n").status,
        LocateStatus::BadHeaders);
    EXPECT_EQ(loc("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").status,
              LocateStatus::BadHeaders);
    EXPECT_EQ(loc("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").status,
              LocateStatus::BadHeaders);
    EXPECT_EQ(loc("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status,
              LocateStatus::BadHeaders);
}

TEST(CoreLocator, BinaryGarbageNeverEscapesTheBuffer) {
    std::mt19937_64 rng(12345);
    const std::string real = post("/v1/chat/completions", kChatBody);
    int ok = 0;
    for (int iter = 0; iter < 3000; ++iter) {
        std::string s;
        if (iter % 2 == 0) {  // pure noise
            s.resize(rng() % 300);
            for (char &c : s) c = static_cast<char>(rng());
        } else {  // a real request with a few bytes flipped
            s = real.substr(0, rng() % (real.size() + 1));
            for (int k = 0; k < 3 && !s.empty(); ++k)
                s[rng() % s.size()] = static_cast<char>(rng());
        }
        const RequestView r = loc(s);
        expect_in_bounds(s, r);
        if (r.status == LocateStatus::Ok) {
            ++ok;
            EXPECT_LE(r.body_offset, s.size());
            if (r.kind != KeyKind::FiveTuple) {
                EXPECT_GT(r.key_len, 0u);
            }
        } else {
            EXPECT_EQ(r.kind, KeyKind::FiveTuple);
        }
    }
    EXPECT_GT(ok, 0);  // the mutated real requests do get through sometimes
}

TEST(CoreLocator, Names) {
    EXPECT_STREQ(key_kind_name(KeyKind::OpenAIChat), "openai_chat");
    EXPECT_STREQ(key_kind_name(KeyKind::FiveTuple), "five_tuple");
    EXPECT_STREQ(locate_status_name(LocateStatus::BadHeaders), "bad_headers");
    EXPECT_STREQ(locate_status_name(LocateStatus::NeedMoreHead), "need_more_head");
}

}  // namespace
}  // namespace kvsteer
