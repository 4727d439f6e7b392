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
    // !ok because this host ran short (no file descriptor or buffer for the socket or its
    // connect: local_resource_error): the request never reached the backend, so it says nothing
    // of the backend's health (the probers give no verdict for it).
    bool local = false;
};

// An errno from socket() or connect() that is this host's shortage, not the peer's answer:
// EMFILE, ENFILE (file descriptors), ENOBUFS, ENOMEM (kernel memory).
bool local_resource_error(int errno_value);

// Raises the soft RLIMIT_NOFILE to the hard limit (the probers open a socket per backend at once:
// with many backends the usual soft limit of 1024 runs out). Returns the soft limit in force
// afterwards; *err set when it could not be raised (the limit is then as it was).
std::uint64_t raise_nofile_limit(std::string *err);

// Runs every request concurrently; returns when all finished or `timeout` passed.
// (Named for its first users; a request with `post` is a POST.)
std::vector<HttpResult> http_get_many(const std::vector<HttpRequest> &reqs,
                                      std::chrono::milliseconds timeout,
                                      std::size_t max_body = 8u << 20);

// Parses a raw HTTP/1.x response (head + body; `eof`: nothing more will come), with the same
// parser as http_get_many. Exposed for tests.
HttpResult parse_http_response(const std::string &raw, bool eof);

}  // namespace kvsteer::control
