// The emulated GPU server: an HTTP/1.1 server (Boost.Beast) on one single-threaded Asio event
// loop that sleeps on one timer for the model's next step (no spinning), feeding requests to
// the kvsteer_model scheduler and streaming tokens at the times it says.
#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>

#include "kvsteer/model/scheduler.h"
#include "metrics.h"
#include "openai.h"

namespace kvsteer::emu {

struct EmuConfig {
    std::string host = "127.0.0.1";
    uint16_t port = 8000;
    ApiLimits api;
    model::SchedulerConfig sched;
    model::CacheConfig cache;
    model::CostConfig cost;
    double time_scale = 1.0;  // model seconds per wall second
    std::string server_id = "emu";
    std::string log_requests;  // JSONL file, empty: none
    uint32_t stream_chunk_tokens = 1;
    uint64_t echo_bytes = 0;  // response padding bytes for every request
    uint64_t max_body_bytes = 256ull << 20;
    uint64_t keep_alive_timeout_ms = 0;  // close a kept-alive connection idle this long; 0: never
    uint64_t request_timeout_ms =
        30000;                       // a request begun and not whole this long: closed; 0: never
    std::string kv_events_endpoint;  // ZMQ PUB endpoint for vLLM-format KV events; empty: off
    std::string kv_events_topic;
};

class Session;
class KvEventPublisher;

class Server {
   public:
    Server(boost::asio::io_context &io, EmuConfig cfg);
    ~Server();
    // Binds and listens; throws std::runtime_error naming the address on failure.
    void start();
    uint16_t port() const;
    std::string kv_events_endpoint() const;  // bound endpoint, empty when off
    const EmuConfig &config() const { return cfg_; }

    // --- used by sessions ---
    struct Submitted {
        uint64_t id;
        bool ok;
        std::string error;  // when !ok
    };
    Submitted submit(std::shared_ptr<Session> s, const ParsedRequest &req, bool stream);
    void abort(uint64_t id);
    std::string metrics_text();
    std::string next_response_id(Api api);
    std::string date_header();

   private:
    struct Pending {
        std::shared_ptr<Session> session;
        Api api;
        std::string model;
        double arrival = 0, admitted = -1, first_token = -1;
        uint64_t prompt_bytes = 0, prompt_tokens = 0, cached = 0;
        uint64_t prompt_digest = 0, first_block = 0;
        uint32_t max_tokens = 0;
        bool stream = false;
        double wall_arrival = 0;
    };
    void do_accept();
    double model_now() const;
    void run_model();
    void dispatch(std::vector<model::Event> &evs);
    void rearm();
    void flush_kv_events();
    void log_request(const Pending &p, uint64_t id, double end, const char *status);

    boost::asio::io_context &io_;
    EmuConfig cfg_;
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer timer_;
    std::chrono::steady_clock::time_point t0_;
    double armed_at_ = -1;  // model time the timer waits for; < 0: not armed
    model::Scheduler sched_;
    std::unordered_map<uint64_t, Pending> pending_;
    uint64_t next_id_ = 1;
    uint64_t resp_counter_ = 0;
    std::vector<model::Event> events_;
    Histogram ttft_, e2e_, queue_;
    uint64_t prompt_tokens_ = 0, gen_tokens_ = 0, success_ = 0, aborted_ = 0;
    std::FILE *log_ = nullptr;
    std::unique_ptr<KvEventPublisher> kv_;
    int64_t date_sec_ = -1;
    std::string date_str_;
};

}  // namespace kvsteer::emu
