// HTTP/1.1 client for health checks, metric scrapes (GET) and etcd's JSON gateway (POST) on
// Boost.Beast: many requests at once on one io_context in the calling thread, one deadline for
// all; no extra threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kvsteer/control/net.h"

namespace kvsteer::control {

struct HttpRequest {
    // A constructor (not an aggregate): {ep, path} stays a GET without missing-initializer noise.
    HttpRequest(Endpoint e, std::string p, std::string b = {}, bool is_post = false)
        : ep(e), path(std::move(p)), body(std::move(b)), post(is_post) {}
    Endpoint ep;
    std::string path;
    std::string body;  // sent with POST (Content-Type: application/json) when `post`
    bool post = false;
};

struct HttpResult {
    bool ok = false;    // a complete HTTP response was read (any status)
    int status = 0;     // HTTP status code
    std::string body;   // de-chunked
    std::string error;  // when !ok, one line: "connect: Connection refused", "connect timeout",
                        // "timeout reading the response", "bad response: ...", "response larger
                        // than N bytes"
};

// Runs every request concurrently; returns when all finished or `timeout` passed.
// (Named for its first users; a request with `post` is a POST.)
std::vector<HttpResult> http_get_many(const std::vector<HttpRequest> &reqs,
                                      std::chrono::milliseconds timeout,
                                      std::size_t max_body = 8u << 20);

// Parses a raw HTTP/1.x response (head + body; `eof`: nothing more will come), with the same
// parser as http_get_many. Exposed for tests.
HttpResult parse_http_response(const std::string &raw, bool eof);

}  // namespace kvsteer::control
