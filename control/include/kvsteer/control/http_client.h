// Minimal HTTP/1.1 GET client for health checks and metric scrapes: many requests at once,
// one deadline, non-blocking sockets and poll(); no threads, no allocation beyond the bodies.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kvsteer/control/net.h"

namespace kvsteer::control {

struct HttpRequest {
    Endpoint ep;
    std::string path;
};

struct HttpResult {
    bool ok = false;   // a complete HTTP response was read (any status)
    int status = 0;    // HTTP status code
    std::string body;  // de-chunked
    std::string error; // transport or protocol problem when !ok
};

// Runs every request concurrently; returns when all finished or `timeout` passed.
std::vector<HttpResult> http_get_many(const std::vector<HttpRequest> &reqs, std::chrono::milliseconds timeout,
                                      std::size_t max_body = 8u << 20);

// Parses a raw HTTP/1.x response (head + body, as read until EOF). Exposed for tests.
HttpResult parse_http_response(const std::string &raw, bool eof);

}  // namespace kvsteer::control
