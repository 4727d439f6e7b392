// Health: rise/fall state machine, and the HTTP checker against a real server on 127.0.0.1
// that the test makes unhealthy, slow and unreachable.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "kvsteer/control/health.h"
#include "kvsteer/control/http_client.h"
#include "test_http_server.h"

using namespace kvsteer::control;
using namespace std::chrono_literals;

namespace {

Endpoint loopback(std::uint16_t port) {
    std::string err;
    auto ep = parse_endpoint("127.0.0.1:" + std::to_string(port), &err);
    EXPECT_TRUE(ep) << err;
    return *ep;
}

bool check(const Endpoint &ep, std::chrono::milliseconds timeout = 300ms) {
    auto r = http_get_many({{ep, "/health"}}, timeout);
    return r[0].ok && r[0].status >= 200 && r[0].status < 300;
}

// Answers one connection on 127.0.0.1 with fixed bytes, whatever was asked, then closes.
class RawOnce {
   public:
    explicit RawOnce(std::string reply) : reply_(std::move(reply)) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sa;
        EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
        EXPECT_EQ(listen(fd_, 4), 0);
        getsockname(fd_, reinterpret_cast<sockaddr *>(&sa), &len);
        port_ = ntohs(sa.sin_port);
        thr_ = std::thread([this] {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, 2000) <= 0) return;
            int c = accept(fd_, nullptr, nullptr);
            if (c < 0) return;
            char buf[4096];
            std::string req;
            while (req.find("\r\n\r\n") == std::string::npos) {
                pollfd q{c, POLLIN, 0};
                ssize_t n = poll(&q, 1, 1000) > 0 ? recv(c, buf, sizeof buf, 0) : 0;
                if (n <= 0) break;
                req.append(buf, static_cast<std::size_t>(n));
            }
            [[maybe_unused]] auto w = send(c, reply_.data(), reply_.size(), MSG_NOSIGNAL);
            close(c);
        });
    }
    ~RawOnce() {
        thr_.join();
        close(fd_);
    }
    std::uint16_t port() const { return port_; }

   private:
    std::string reply_;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::thread thr_;
};

}  // namespace

TEST(HealthState, FirstSuccessIsImmediateThenRiseAndFall) {
    HealthParams p{2, 3};
    HealthState h;
    EXPECT_FALSE(h.up());
    EXPECT_FALSE(h.observe(false, p));  // never up yet: failures keep it down
    EXPECT_TRUE(h.observe(true, p));    // first success: up at once
    EXPECT_TRUE(h.up());
    EXPECT_FALSE(h.observe(false, p));
    EXPECT_FALSE(h.observe(false, p));
    EXPECT_TRUE(h.up());
    EXPECT_FALSE(h.observe(true, p));  // a success resets the fail streak
    EXPECT_FALSE(h.observe(false, p));
    EXPECT_FALSE(h.observe(false, p));
    EXPECT_TRUE(h.observe(false, p));  // third consecutive failure
    EXPECT_FALSE(h.up());
    EXPECT_FALSE(h.observe(true, p));  // rise = 2 once it has been checked
    EXPECT_FALSE(h.up());
    EXPECT_FALSE(h.observe(false, p));
    EXPECT_FALSE(h.observe(true, p));
    EXPECT_TRUE(h.observe(true, p));
    EXPECT_TRUE(h.up());
    EXPECT_EQ(h.ok_streak(), 2u);
}

TEST(HealthState, AssumedUpWhenChecksAreOff) {
    HealthState h(true);
    EXPECT_TRUE(h.up());
    HealthParams p{1, 1};
    EXPECT_TRUE(h.observe(false, p));  // passive failures still take it down
    EXPECT_FALSE(h.up());
}

TEST(HttpClient, StatusBodiesChunkedAndErrors) {
    TestHttpServer srv;
    srv.set("/health", 200, "ok\n");
    srv.set("/metrics", 200, std::string(5000, 'x') + "\nvllm:num_requests_running 1\n", true);
    auto ep = loopback(srv.port());
    auto r = http_get_many({{ep, "/health"}, {ep, "/metrics"}, {ep, "/missing"}}, 1000ms);
    ASSERT_EQ(r.size(), 3u);
    EXPECT_TRUE(r[0].ok) << r[0].error;
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[0].body, "ok\n");
    EXPECT_TRUE(r[1].ok) << r[1].error;
    EXPECT_EQ(r[1].body.size(), 5000u + 29u);  // de-chunked
    EXPECT_TRUE(r[2].ok);
    EXPECT_EQ(r[2].status, 404);

    // Nothing listening: refused, quickly.
    auto closed = loopback(1);
    auto t0 = std::chrono::steady_clock::now();
    auto rc = http_get_many({{closed, "/health"}}, 1000ms);
    EXPECT_FALSE(rc[0].ok);
    EXPECT_NE(rc[0].error.find("refused"), std::string::npos) << rc[0].error;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);

    // Accepts but never answers: times out at the deadline, not later.
    srv.set_hang(true);
    t0 = std::chrono::steady_clock::now();
    auto rh = http_get_many({{ep, "/health"}}, 200ms);
    auto dt = std::chrono::steady_clock::now() - t0;
    EXPECT_FALSE(rh[0].ok);
    EXPECT_NE(rh[0].error.find("timeout"), std::string::npos) << rh[0].error;
    EXPECT_GE(dt, 190ms);
    EXPECT_LT(dt, 600ms);
}

TEST(HttpClient, BodyLimitAndNoAddress) {
    TestHttpServer srv;
    srv.set("/metrics", 200, std::string(5000, 'x'));
    srv.set("/chunked", 200, std::string(5000, 'y'), true);
    auto ep = loopback(srv.port());
    auto r =
        http_get_many({{ep, "/metrics"}, {ep, "/chunked"}, {Endpoint{}, "/metrics"}}, 1000ms, 1000);
    ASSERT_EQ(r.size(), 3u);
    for (int i = 0; i < 2; i++) {
        EXPECT_FALSE(r[i].ok) << i;
        EXPECT_NE(r[i].error.find("larger than 1000 bytes"), std::string::npos) << r[i].error;
    }
    EXPECT_FALSE(r[2].ok);
    EXPECT_EQ(r[2].error, "no address");
    // A body that runs to EOF, over the limit; a Content-Length far beyond it (refused before
    // any of the body is read, nothing reserved).
    {
        RawOnce raw("HTTP/1.0 200 OK\r\n\r\n" + std::string(5000, 'z'));
        auto re = http_get_many({{loopback(raw.port()), "/metrics"}}, 1000ms, 1000);
        EXPECT_FALSE(re[0].ok);
        EXPECT_NE(re[0].error.find("larger than 1000 bytes"), std::string::npos) << re[0].error;
    }
    {
        RawOnce raw("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\nabc");
        auto rl = http_get_many({{loopback(raw.port()), "/metrics"}}, 1000ms);
        EXPECT_FALSE(rl[0].ok);
        EXPECT_NE(rl[0].error.find("larger than"), std::string::npos) << rl[0].error;
    }
    {
        RawOnce raw("garbage\r\n\r\n");
        auto rg = http_get_many({{loopback(raw.port()), "/metrics"}}, 1000ms);
        EXPECT_FALSE(rg[0].ok);
        EXPECT_NE(rg[0].error.find("bad response"), std::string::npos) << rg[0].error;
    }
    {
        RawOnce raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        auto rp = http_get_many({{loopback(raw.port()), "/metrics"}}, 1000ms);
        EXPECT_FALSE(rp[0].ok);
        EXPECT_NE(rp[0].error.find("closed before the end"), std::string::npos) << rp[0].error;
    }
    {
        // An endless chunk extension (1 MiB of it here): refused once the read buffer's bound is
        // reached, not buffered (before, kvsteerd kept reading it into memory: ~520 MB within a
        // scrape's deadline on loopback).
        RawOnce raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=" +
                    std::string(1 << 20, 'e'));
        auto rx = http_get_many({{loopback(raw.port()), "/metrics"}}, 2000ms);
        EXPECT_FALSE(rx[0].ok);
        EXPECT_NE(rx[0].error.find("too long"), std::string::npos) << rx[0].error;
    }
    {
        // The bound is on what waits to be parsed, not on the body: a 6 MiB chunked body is whole.
        TestHttpServer big;
        big.set("/chunked", 200, std::string(6 << 20, 'c'), true);
        auto rb = http_get_many({{loopback(big.port()), "/chunked"}}, 5000ms, 8 << 20);
        EXPECT_TRUE(rb[0].ok) << rb[0].error;
        EXPECT_EQ(rb[0].body.size(), std::size_t{6} << 20);
    }
    // Within the limit: whole.
    auto ok = http_get_many({{ep, "/metrics"}}, 1000ms, 5000);
    EXPECT_TRUE(ok[0].ok) << ok[0].error;
    EXPECT_EQ(ok[0].body.size(), 5000u);
}

// This host out of file descriptors is not the backend's failure: such results are marked
// local (the probers give no verdict for them), a refused connection is not.
TEST(HttpClient, OutOfDescriptorsIsALocalErrorNotTheBackends) {
    for (int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) EXPECT_TRUE(local_resource_error(e)) << e;
    for (int e : {0, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET, EACCES})
        EXPECT_FALSE(local_resource_error(e)) << e;

    // A port nothing listens on: every connection that gets a socket is refused.
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(probe, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    ASSERT_EQ(bind(probe, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
    ASSERT_EQ(getsockname(probe, reinterpret_cast<sockaddr *>(&sa), &len), 0);
    close(probe);
    const Endpoint closed = loopback(ntohs(sa.sin_port));

    std::size_t open_fds = 0;
    if (DIR *d = opendir("/proc/self/fd")) {
        while (readdir(d)) open_fds++;  // ".", ".." and the DIR's own: a little room to spare
        closedir(d);
    }
    ASSERT_GT(open_fds, 0u);
    rlimit was{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &was), 0);
    rlimit low = was;
    low.rlim_cur = static_cast<rlim_t>(open_fds + 8);  // asio's own descriptors and a few sockets
    if (was.rlim_cur != RLIM_INFINITY && low.rlim_cur > was.rlim_cur) {
        GTEST_SKIP() << "the soft limit is already this low";
    }
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    const std::vector<HttpRequest> reqs(32, HttpRequest{closed, "/health"});
    const auto r = http_get_many(reqs, 1000ms);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &was), 0);
    std::size_t local = 0, refused = 0;
    for (const auto &x : r) {
        EXPECT_FALSE(x.ok);
        EXPECT_FALSE(x.error.empty());
        if (x.local) {
            local++;
        } else {
            EXPECT_EQ(x.error, "connect: Connection refused");
            refused++;
        }
    }
    EXPECT_GT(local, 0u) << "32 sockets do not fit in " << low.rlim_cur << " descriptors";
    EXPECT_EQ(local + refused, reqs.size());
    // With descriptors again: every one is the backend's answer.
    for (const auto &x : http_get_many(reqs, 1000ms)) {
        EXPECT_FALSE(x.local) << x.error;
        EXPECT_EQ(x.error, "connect: Connection refused");
    }

    // kvsteerd raises its soft limit to the hard one at start.
    std::string err;
    const std::uint64_t now = raise_nofile_limit(&err);
    rlimit after{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
    if (err.empty()) {
        EXPECT_EQ(static_cast<std::uint64_t>(after.rlim_cur), now);
        EXPECT_GE(after.rlim_cur, was.rlim_cur);
        if (after.rlim_max != RLIM_INFINITY) {
            EXPECT_EQ(after.rlim_cur, after.rlim_max);
        }
    }
    setrlimit(RLIMIT_NOFILE, &was);
}

// Interim responses (100 Continue, 103 Early Hints) come before the final one on the
// connection: the final one is the answer (taken as the answer, a 100 made a health check pass
// with an empty body, and a scrape read nothing); 101 ends HTTP and is final; an endless run of
// them is refused.
TEST(HttpClient, InterimResponsesAreNotTheAnswer) {
    const std::string two_interims =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
    {
        RawOnce raw(two_interims + "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy");
        auto r = http_get_many({{loopback(raw.port()), "/health"}}, 1000ms);
        EXPECT_TRUE(r[0].ok) << r[0].error;
        EXPECT_EQ(r[0].status, 503);
        EXPECT_EQ(r[0].body, "busy");
    }
    std::string endless;
    for (int i = 0; i < 9; ++i) endless += "HTTP/1.1 100 Continue\r\n\r\n";
    {
        RawOnce raw(endless + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        auto r = http_get_many({{loopback(raw.port()), "/health"}}, 1000ms);
        EXPECT_FALSE(r[0].ok);
        EXPECT_NE(r[0].error.find("interim"), std::string::npos) << r[0].error;
    }
    auto p =
        parse_http_response(two_interims + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    EXPECT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.status, 200);
    EXPECT_EQ(p.body, "ok");
    p = parse_http_response(two_interims, false);
    EXPECT_FALSE(p.ok);
    EXPECT_EQ(p.error, "incomplete response");
    p = parse_http_response(endless + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true);
    EXPECT_FALSE(p.ok);
    p = parse_http_response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", true);
    EXPECT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.status, 101);
}

TEST(HttpClient, ParsesRawResponses) {
    auto r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", false);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.body, "abc");
    r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true);
    EXPECT_FALSE(r.ok);
    r = parse_http_response("HTTP/1.0 503 Busy\r\n\r\nbody until eof", true);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.body, "body until eof");
    r = parse_http_response("SSH-2.0-OpenSSH\r\n\r\n", true);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("bad response"), std::string::npos) << r.error;
    r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Le", false);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, "incomplete response");
    r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Le", true);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("closed before the response head"), std::string::npos) << r.error;
    r = parse_http_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false);
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.body, "abc");
    r = parse_http_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true);
    EXPECT_FALSE(r.ok);
    r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true);
    EXPECT_FALSE(r.ok);
    r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\nabc", true);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("closed before the end"), std::string::npos) << r.error;
}

TEST(Health, RiseFallAgainstARealServer) {
    TestHttpServer srv;
    srv.set("/health", 200, "ok");
    auto ep = loopback(srv.port());
    HealthParams p{2, 3};
    HealthState h;
    EXPECT_TRUE(h.observe(check(ep), p));
    EXPECT_TRUE(h.up());

    srv.set("/health", 503, "overloaded");  // unhealthy
    EXPECT_FALSE(h.observe(check(ep), p));
    EXPECT_FALSE(h.observe(check(ep), p));
    EXPECT_TRUE(h.up());
    EXPECT_TRUE(h.observe(check(ep), p));
    EXPECT_FALSE(h.up());

    srv.set("/health", 200, "ok");  // recovers: needs `rise` successes
    EXPECT_FALSE(h.observe(check(ep), p));
    EXPECT_TRUE(h.observe(check(ep), p));
    EXPECT_TRUE(h.up());

    srv.set_hang(true);  // hangs: timeouts count as failures
    for (int i = 0; i < 3; i++) h.observe(check(ep, 100ms), p);
    EXPECT_FALSE(h.up());
    EXPECT_EQ(srv.hits("/health"), 9);  // every check reached the server
}
