// The replay engine: one single-threaded Asio loop sending each work item as a real HTTP
// request at its time (one TCP connection per request unless keep-alive is asked for), with a
// concurrency cap, and measuring TTFT at the first SSE data event.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "trace.h"

namespace kvsteer::replay {

struct Target {
    std::string host;  // as given (Host header)
    boost::asio::ip::tcp::endpoint ep;
};

struct ReplayConfig {
    std::vector<Target> targets;  // requests go round-robin over these (client-side baseline)
    BodyOptions body;
    bool keep_alive = false;
    uint32_t max_concurrency = 256;
    double speed = 1.0;       // trace time / speed = send time
    double time_scale = 1.0;  // backends run this much faster: send times / N, latencies * N
    double duration_s = 0;    // stop sending new requests after this (wall seconds); 0: no cap
    double timeout_s = 600;   // per request (wall seconds)
    std::vector<std::pair<std::string, std::string>> headers;  // extra request headers
    bool verify = true;  // check x-body-sha256 / x-response-sha256 when the server sends them
    bool progress = true;
};

struct Result {
    uint64_t index = 0;
    uint64_t line = 0;
    bool sent = false;
    bool ok = false;
    int status = 0;
    std::string error;
    double sched_s = 0;   // planned send time (wall, from start)
    double start_s = -1;  // actual connect start (wall, from start)
    double ttft_s = -1;   // first SSE data event - start (scaled by time_scale)
    double e2e_s = -1;    // last byte - start (scaled)
    uint64_t prompt_bytes = 0;
    uint64_t body_bytes = 0;
    uint64_t input_tokens = 0;
    uint32_t max_tokens = 0;
    int64_t usage_prompt = -1;
    int64_t usage_completion = -1;
    uint32_t sse_events = 0;
    uint64_t response_bytes = 0;
    std::string backend;   // x-kvsteer-backend
    int body_sha_ok = -1;  // -1: not checked (header absent)
    int response_sha_ok = -1;
    size_t target = 0;
    // Sent again on a new connection: the kept-alive one it went on closed before any response
    // byte (the server's idle timeout crossing the request).
    uint32_t retries = 0;
};

class Replayer {
   public:
    Replayer(ReplayConfig cfg, std::vector<WorkItem> items);
    ~Replayer();
    // Sends everything (or until --duration), waits for the last response; returns wall seconds.
    double run();
    const std::vector<Result> &results() const { return results_; }

   private:
    struct Impl;
    Impl *impl_;
    std::vector<Result> results_;
};

}  // namespace kvsteer::replay
