// A tiny HTTP/1.1 server on 127.0.0.1 or ::1 (ephemeral port) for tests: per-path status and body,
// and a "hang" mode that accepts but never answers.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

class TestHttpServer {
   public:
    // On ::1 with IPV6 (throws std::runtime_error where the host has no IPv6 loopback).
    explicit TestHttpServer(bool ipv6 = false);
    ~TestHttpServer();
    std::uint16_t port() const { return port_; }
    void set(const std::string &path, int status, const std::string &body, bool chunked = false);
    void set_hang(bool hang) { hang_ = hang; }
    int hits(const std::string &path);
    // Requests parked unanswered by hang mode so far.
    int hung();

   private:
    struct Route {
        int status;
        std::string body;
        bool chunked;
    };
    void loop();
    void serve(int fd);

    int listen_fd_ = -1, stop_fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> hang_{false};
    std::mutex mu_;
    std::map<std::string, Route> routes_;
    std::map<std::string, int> hits_;
    std::vector<int> hung_;
    std::thread thr_;
};
