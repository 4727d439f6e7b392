#include "test_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

TestHttpServer::TestHttpServer(bool ipv6) {
    listen_fd_ = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage ss{};
    socklen_t len = ipv6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (ipv6) {
        auto *sa = reinterpret_cast<sockaddr_in6 *>(&ss);
        sa->sin6_family = AF_INET6;
        sa->sin6_addr = in6addr_loopback;
    } else {
        auto *sa = reinterpret_cast<sockaddr_in *>(&ss);
        sa->sin_family = AF_INET;
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    const socklen_t bind_len = len;
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr *>(&ss), bind_len) < 0 ||
        listen(listen_fd_, 64) < 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&ss), &len) < 0) {
        if (listen_fd_ >= 0) close(listen_fd_);
        throw std::runtime_error(std::string("test http server: cannot listen on ") +
                                 (ipv6 ? "::1" : "127.0.0.1"));
    }
    // sin_port and sin6_port sit at the same offset.
    port_ = ntohs(reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    thr_ = std::thread([this] { loop(); });
}

TestHttpServer::~TestHttpServer() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = write(stop_fd_, &one, sizeof one);
    thr_.join();
    for (int fd : hung_) close(fd);
    close(listen_fd_);
    close(stop_fd_);
}

void TestHttpServer::set(const std::string &path, int status, const std::string &body,
                         bool chunked) {
    std::lock_guard lk(mu_);
    routes_[path] = {status, body, chunked};
}

int TestHttpServer::hits(const std::string &path) {
    std::lock_guard lk(mu_);
    return hits_[path];
}

int TestHttpServer::hung() {
    std::lock_guard lk(mu_);
    return static_cast<int>(hung_.size());
}

void TestHttpServer::loop() {
    for (;;) {
        pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents) return;
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) serve(fd);
    }
}

void TestHttpServer::serve(int fd) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) break;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
    }
    std::string path = "/";
    auto sp1 = req.find(' ');
    auto sp2 = sp1 == std::string::npos ? std::string::npos : req.find(' ', sp1 + 1);
    if (sp2 != std::string::npos) path = req.substr(sp1 + 1, sp2 - sp1 - 1);
    Route r{404, "not found\n", false};
    {
        // Hang mode read with the hit counted: a test that saw the hit knows whether it hung.
        std::lock_guard lk(mu_);
        hits_[path]++;
        if (routes_.count(path)) r = routes_[path];
        if (hang_) {
            hung_.push_back(fd);
            return;
        }
    }
    std::string out = "HTTP/1.1 " + std::to_string(r.status) +
                      " X\r\nContent-Type: text/plain\r\nConnection: close\r\n";
    if (r.chunked) {
        out += "Transfer-Encoding: chunked\r\n\r\n";
        // Odd chunk sizes so chunk edges fall inside lines.
        for (std::size_t i = 0; i < r.body.size(); i += 37) {
            std::string part = r.body.substr(i, 37);
            char sz[16];
            snprintf(sz, sizeof sz, "%zx", part.size());
            out += std::string(sz) + "\r\n" + part + "\r\n";
        }
        out += "0\r\n\r\n";
    } else {
        out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n" + r.body;
    }
    std::size_t sent = 0;
    while (sent < out.size()) {
        ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
    }
    close(fd);
}
