// The VIP's announcement (control/announce.h): the dataplane's health from the workers'
// heartbeats, one command on BIRD's control socket, and the Announcer's thread, against a fake
// BIRD on a Unix socket in a temporary directory (scripted replies, the commands it was sent
// recorded).
#include "kvsteer/control/announce.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace kvsteer::control;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kMs = 1000000;
constexpr std::uint64_t kNow = 10000 * kMs;  // 10 s of CLOCK_MONOTONIC
constexpr std::uint64_t kStale = 1000 * kMs;

// Polls `pred` every 5 ms for up to `limit`.
bool wait_until(const std::function<bool()> &pred, std::chrono::milliseconds limit = 2000ms) {
    const auto end = Clock::now() + limit;
    for (;;) {
        if (pred()) return true;
        if (Clock::now() >= end) return false;
        std::this_thread::sleep_for(5ms);
    }
}

long ms_since(Clock::time_point t0) {
    return static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

// A directory of the test's own under /tmp, removed with what it holds.
class TempDir {
   public:
    TempDir() {
        char tmpl[] = "/tmp/kvs-announce-XXXXXX";
        const char *d = ::mkdtemp(tmpl);
        EXPECT_NE(d, nullptr) << std::strerror(errno);
        path_ = d ? d : "/nonexistent";
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string &name) const { return path_ + "/" + name; }

   private:
    std::string path_;
};

int unix_listener(const std::string &path, int backlog) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0) << std::strerror(errno);
    EXPECT_EQ(::listen(fd, backlog), 0) << std::strerror(errno);
    return fd;
}

// What the fake BIRD does with one command line.
struct Reply {
    std::vector<std::string> parts;  // written in turn, 5 ms apart
    bool silent = false;             // never answers (holds the connection until the client goes)
    bool hang_up = false;            // closes the connection instead of answering
};

Reply text(std::string s) {
    return Reply{{std::move(s)}};
}

// As BIRD 2 answers `enable P` / `disable P`; anything else is a syntax error.
Reply bird_like(const std::string &cmd) {
    if (cmd.rfind("enable ", 0) == 0) return text("0011-" + cmd.substr(7) + ": enabled\n0000 \n");
    if (cmd.rfind("disable ", 0) == 0) return text("0012-" + cmd.substr(8) + ": disabled\n0000 \n");
    return text("9001 syntax error, unexpected CF_SYM_UNDEFINED\n");
}

constexpr const char *kGreeting = "0001 BIRD 2.0.12 ready.\n";

// BIRD's control socket, scripted: a greeting on every connection (none if empty), then each
// command line recorded and answered by `respond`. One connection at a time, as birdc uses it.
class FakeBird {
   public:
    using Respond = std::function<Reply(const std::string &)>;

    explicit FakeBird(std::string path, Respond respond = bird_like,
                      std::string greeting = kGreeting)
        : path_(std::move(path)), respond_(std::move(respond)), greeting_(std::move(greeting)) {
        EXPECT_EQ(::pipe2(stop_, O_CLOEXEC), 0);
        lfd_ = unix_listener(path_, 8);
        thr_ = std::thread([this] { serve(); });
    }
    ~FakeBird() {
        const char b = 'x';
        EXPECT_EQ(::write(stop_[1], &b, 1), 1);
        thr_.join();
        ::close(lfd_);
        ::close(stop_[0]);
        ::close(stop_[1]);
        ::unlink(path_.c_str());
    }
    FakeBird(const FakeBird &) = delete;
    FakeBird &operator=(const FakeBird &) = delete;

    std::vector<std::string> commands() const {
        std::lock_guard lk(mu_);
        return commands_;
    }
    std::size_t count(const std::string &cmd) const {
        std::lock_guard lk(mu_);
        return static_cast<std::size_t>(std::count(commands_.begin(), commands_.end(), cmd));
    }
    unsigned connections() const { return connections_.load(); }

   private:
    // Waits for fd readable or the stop pipe; false when stopping.
    bool wait_readable(int fd) {
        pollfd p[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
        while (::poll(p, 2, -1) < 0)
            if (errno != EINTR) return false;
        return !(p[1].revents & POLLIN);
    }
    void serve() {
        while (wait_readable(lfd_)) {
            const int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) continue;
            connections_++;
            converse(c);
            ::close(c);
        }
    }
    void converse(int c) {
        if (!greeting_.empty()) ::send(c, greeting_.data(), greeting_.size(), MSG_NOSIGNAL);
        std::string buf;
        bool silent = false;
        for (;;) {
            if (!wait_readable(c)) return;
            char chunk[512];
            const ssize_t r = ::read(c, chunk, sizeof chunk);
            if (r <= 0) return;  // the client closed
            buf.append(chunk, static_cast<std::size_t>(r));
            std::size_t nl;
            while ((nl = buf.find('\n')) != std::string::npos) {
                const std::string cmd = buf.substr(0, nl);
                buf.erase(0, nl + 1);
                {
                    std::lock_guard lk(mu_);
                    commands_.push_back(cmd);
                }
                if (silent) continue;
                const Reply rep = respond_(cmd);
                if (rep.hang_up) return;
                silent = rep.silent;
                for (std::size_t i = 0; i < rep.parts.size(); i++) {
                    if (i) std::this_thread::sleep_for(5ms);
                    ::send(c, rep.parts[i].data(), rep.parts[i].size(), MSG_NOSIGNAL);
                }
            }
        }
    }

    const std::string path_;
    const Respond respond_;
    const std::string greeting_;
    int lfd_ = -1;
    int stop_[2] = {-1, -1};
    mutable std::mutex mu_;
    std::vector<std::string> commands_;
    std::atomic<unsigned> connections_{0};
    std::thread thr_;
};

}  // namespace

// ---- dataplane_health ----------------------------------------------------------------------

TEST(DataplaneHealth, NoMapsIsUnhealthy) {
    const auto h = dataplane_health(nullptr, 4, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_alive, 0u);
    EXPECT_EQ(h.workers_stale, 0u);
    EXPECT_EQ(h.newest_ns, 0u);
    EXPECT_EQ(h.reason, "no dataplane maps");
}

TEST(DataplaneHealth, NoWorkerBeatingIsUnhealthy) {
    kvs_ring_ctl ctl[4]{};
    auto h = dataplane_health(ctl, 4, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_alive, 0u);
    EXPECT_EQ(h.workers_stale, 0u);
    EXPECT_EQ(h.newest_ns, 0u);
    EXPECT_FALSE(h.reason.empty());
    EXPECT_NE(h.reason.find("no dataplane worker"), std::string::npos) << h.reason;
    // No worker at all.
    h = dataplane_health(ctl, 0, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_FALSE(h.reason.empty());
}

TEST(DataplaneHealth, OneFreshWorkerIsHealthy) {
    kvs_ring_ctl ctl[4]{};
    ctl[2].alive_ns = kNow - 5 * kMs;
    const auto h = dataplane_health(ctl, 4, kNow, kStale);
    EXPECT_TRUE(h.healthy) << h.reason;
    EXPECT_EQ(h.workers_alive, 1u);
    EXPECT_EQ(h.workers_stale, 0u);
    EXPECT_EQ(h.newest_ns, kNow - 5 * kMs);
    EXPECT_TRUE(h.reason.empty()) << h.reason;
}

TEST(DataplaneHealth, OneStaleAmongFreshIsUnhealthy) {
    kvs_ring_ctl ctl[4]{};
    ctl[0].alive_ns = kNow - 1 * kMs;
    ctl[1].alive_ns = kNow - 2000 * kMs;  // stuck for 2 s
    ctl[2].alive_ns = kNow - 3 * kMs;
    ctl[3].alive_ns = kNow - 10 * kMs;
    auto h = dataplane_health(ctl, 4, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_alive, 3u);
    EXPECT_EQ(h.workers_stale, 1u);
    EXPECT_EQ(h.newest_ns, kNow - 1 * kMs);
    EXPECT_EQ(h.reason, "1 dataplane worker(s) silent for 2000 ms");
    // Two stale: the reason gives the count and the oldest silence.
    ctl[3].alive_ns = kNow - 5000 * kMs;
    h = dataplane_health(ctl, 4, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_alive, 2u);
    EXPECT_EQ(h.workers_stale, 2u);
    EXPECT_EQ(h.reason, "2 dataplane worker(s) silent for 5000 ms");
}

TEST(DataplaneHealth, StaleLimitIsInclusive) {
    kvs_ring_ctl ctl[1]{};
    ctl[0].alive_ns = kNow - kStale;
    EXPECT_TRUE(dataplane_health(ctl, 1, kNow, kStale).healthy);
    ctl[0].alive_ns = kNow - kStale - 1;
    const auto h = dataplane_health(ctl, 1, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_stale, 1u);
}

TEST(DataplaneHealth, WorkerStoppedCleanlyIsIgnored) {
    kvs_ring_ctl ctl[3]{};
    ctl[0].alive_ns = 0;  // stopped cleanly: neither alive nor stale
    ctl[1].alive_ns = kNow - 1 * kMs;
    ctl[2].alive_ns = 0;
    const auto h = dataplane_health(ctl, 3, kNow, kStale);
    EXPECT_TRUE(h.healthy) << h.reason;
    EXPECT_EQ(h.workers_alive, 1u);
    EXPECT_EQ(h.workers_stale, 0u);
}

TEST(DataplaneHealth, HeartbeatFromTheFutureIsFresh) {
    // Written after the caller read its clock: fresh, however far ahead.
    kvs_ring_ctl ctl[2]{};
    ctl[0].alive_ns = kNow + 5 * kMs;
    auto h = dataplane_health(ctl, 2, kNow, kStale);
    EXPECT_TRUE(h.healthy) << h.reason;
    EXPECT_EQ(h.workers_alive, 1u);
    EXPECT_EQ(h.newest_ns, kNow + 5 * kMs);
    ctl[0].alive_ns = kNow + 10 * kStale;
    EXPECT_TRUE(dataplane_health(ctl, 2, kNow, kStale).healthy);
    // ... but does not hide a stale one beside it.
    ctl[1].alive_ns = kNow - 3 * kStale;
    h = dataplane_health(ctl, 2, kNow, kStale);
    EXPECT_FALSE(h.healthy);
    EXPECT_EQ(h.workers_stale, 1u);
    EXPECT_FALSE(h.reason.empty());
}

TEST(DataplaneHealth, OnlyTheFirstNWorkersCount) {
    kvs_ring_ctl ctl[4]{};
    ctl[0].alive_ns = kNow;
    ctl[3].alive_ns = kNow - 10 * kStale;  // beyond n: not a worker of this dataplane
    const auto h = dataplane_health(ctl, 3, kNow, kStale);
    EXPECT_TRUE(h.healthy) << h.reason;
    EXPECT_EQ(h.workers_stale, 0u);
}

// ---- bird_command ----------------------------------------------------------------------------

TEST(BirdCommand, MultiLineReply) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &cmd) {
        if (cmd == "show protocols")
            return text(
                "2002-Name       Proto      Table      State  Since         Info\n"
                "1002-kvs_vip    Static     master4    up     12:00:00.000\n"
                " continued\n"
                "1002-kvs_bgp    BGP        ---        up     12:00:01.000  Established\n"
                "0000 \n");
        return bird_like(cmd);
    });
    std::string reply, err;
    ASSERT_TRUE(bird_command(dir.file("bird.ctl"), "show protocols", &reply, &err, 1000)) << err;
    EXPECT_EQ(reply,
              "Name       Proto      Table      State  Since         Info\n"
              "kvs_vip    Static     master4    up     12:00:00.000\n"
              "continued\n"
              "kvs_bgp    BGP        ---        up     12:00:01.000  Established");
    ASSERT_TRUE(bird_command(dir.file("bird.ctl"), "enable kvs_vip", &reply, &err, 1000)) << err;
    EXPECT_EQ(reply, "kvs_vip: enabled");
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"show protocols", "enable kvs_vip"}));
    EXPECT_EQ(bird.connections(), 2u);
    // No reply wanted.
    EXPECT_TRUE(bird_command(dir.file("bird.ctl"), "disable kvs_vip", nullptr, &err, 1000)) << err;
    EXPECT_EQ(bird.count("disable kvs_vip"), 1u);
}

TEST(BirdCommand, ReplyInPieces) {
    // The greeting and the reply cut mid-line, across several reads.
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &) {
        return Reply{{"0011-kvs_v", "ip: ena", "bled\n00", "00", " \n"}};
    });
    std::string reply, err;
    ASSERT_TRUE(bird_command(dir.file("bird.ctl"), "enable kvs_vip", &reply, &err, 1000)) << err;
    EXPECT_EQ(reply, "kvs_vip: enabled");
}

TEST(BirdCommand, ErrorCodeIsRefused) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    std::string reply, err;
    EXPECT_FALSE(bird_command(dir.file("bird.ctl"), "enable", &reply, &err, 1000));
    EXPECT_NE(err.find("syntax error, unexpected CF_SYM_UNDEFINED"), std::string::npos) << err;
    EXPECT_NE(err.find("'enable'"), std::string::npos) << "names the command: " << err;
    EXPECT_EQ(reply, "syntax error, unexpected CF_SYM_UNDEFINED");
    EXPECT_EQ(bird.commands(), std::vector<std::string>{"enable"});
}

TEST(BirdCommand, CodesFrom8000AreErrors) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &cmd) {
        if (cmd == "a") return text("7999 fine\n");
        if (cmd == "b") return text("8000 runtime error\n");
        return text("8003 kvs_vip: no such protocol\n");
    });
    const std::string sock = dir.file("bird.ctl");
    std::string reply, err;
    EXPECT_TRUE(bird_command(sock, "a", &reply, &err, 1000)) << err;
    EXPECT_EQ(reply, "fine");
    err.clear();
    EXPECT_FALSE(bird_command(sock, "b", &reply, &err, 1000));
    EXPECT_NE(err.find("runtime error"), std::string::npos) << err;
    err.clear();
    EXPECT_FALSE(bird_command(sock, "enable kvs_vip", &reply, &err, 1000));
    EXPECT_NE(err.find("no such protocol"), std::string::npos) << err;
}

TEST(BirdCommand, ServerThatNeverAnswersTimesOut) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &) { return Reply{{}, true}; });
    std::string reply, err;
    const auto t0 = Clock::now();
    EXPECT_FALSE(bird_command(dir.file("bird.ctl"), "enable kvs_vip", &reply, &err, 200));
    const long took = ms_since(t0);
    EXPECT_GE(took, 150);
    EXPECT_LT(took, 1000);
    EXPECT_NE(err.find("did not answer"), std::string::npos) << err;
    EXPECT_EQ(bird.commands(), std::vector<std::string>{"enable kvs_vip"});
}

TEST(BirdCommand, ServerThatNeverGreetsTimesOut) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), bird_like, "");
    std::string err;
    const auto t0 = Clock::now();
    EXPECT_FALSE(bird_command(dir.file("bird.ctl"), "enable kvs_vip", nullptr, &err, 200));
    EXPECT_LT(ms_since(t0), 1000);
    EXPECT_NE(err.find("did not answer"), std::string::npos) << err;
    // The command waits for the greeting: never sent.
    EXPECT_TRUE(bird.commands().empty());
}

TEST(BirdCommand, ServerThatHangsUp) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &) { return Reply{{}, false, true}; });
    std::string err;
    EXPECT_FALSE(bird_command(dir.file("bird.ctl"), "enable kvs_vip", nullptr, &err, 1000));
    EXPECT_NE(err.find("closed"), std::string::npos) << err;
}

// A BIRD that accepts no connection (stopped, or stuck) with its listen queue full: connect()
// on a Unix socket then blocks until the queue has room, and bird_command's timeout should
// still bound the call.
// (connect() is bounded by SO_SNDTIMEO.)
TEST(BirdCommand, TimeoutAlsoBoundsConnectToAStuckBird) {
    TempDir dir;
    const std::string path = dir.file("bird.ctl");
    const int lfd = unix_listener(path, 0);
    // Fill the queue (backlog 0: one connection waiting for accept).
    const int first = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(first, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    std::atomic<bool> done{false};
    std::string err;
    std::thread t([&] {
        bird_command(path, "enable kvs_vip", nullptr, &err, 200);
        done = true;
    });
    const bool in_time = wait_until([&] { return done.load(); }, 1200ms);
    ::close(lfd);  // unblocks a connect() still waiting (ECONNREFUSED)
    t.join();
    ::close(first);
    EXPECT_TRUE(in_time) << "bird_command with a 200 ms timeout still blocked after 1.2 s";
}

TEST(BirdCommand, NoSocketIsAClearError) {
    TempDir dir;
    const std::string path = dir.file("no-bird.ctl");
    std::string err;
    const auto t0 = Clock::now();
    EXPECT_FALSE(bird_command(path, "enable kvs_vip", nullptr, &err, 200));
    EXPECT_LT(ms_since(t0), 200);  // at once, no waiting
    EXPECT_NE(err.find(path), std::string::npos) << "names the socket: " << err;
    EXPECT_NE(err.find(std::strerror(ENOENT)), std::string::npos) << err;
    // A path that is no socket.
    err.clear();
    EXPECT_FALSE(bird_command("/", "enable kvs_vip", nullptr, &err, 200));
    EXPECT_FALSE(err.empty());
    // Longer than sun_path.
    err.clear();
    EXPECT_FALSE(bird_command("/tmp/" + std::string(200, 'x'), "enable kvs_vip", nullptr, &err));
    EXPECT_NE(err.find("too long"), std::string::npos) << err;
}

TEST(BirdCommand, CommandWithANewlineIsRefused) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    for (const char *cmd : {"enable kvs_vip\ndisable kvs_other", "enable kvs_vip\n", "\n"}) {
        std::string err;
        EXPECT_FALSE(bird_command(dir.file("bird.ctl"), cmd, nullptr, &err, 200)) << cmd;
        EXPECT_NE(err.find("one line"), std::string::npos) << err;
    }
    // Refused before connecting: BIRD saw nothing.
    EXPECT_EQ(bird.connections(), 0u);
    EXPECT_TRUE(bird.commands().empty());
}

// ---- Announcer -------------------------------------------------------------------------------

TEST(Announcer, AnnouncesAndWithdraws) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    Announcer an(dir.file("bird.ctl"), {"kvs_vip"}, 60000);  // no re-assertion during the test
    EXPECT_EQ(an.socket(), dir.file("bird.ctl"));
    EXPECT_FALSE(an.status().announced);

    an.set(true);
    EXPECT_TRUE(an.status().want);
    ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    EXPECT_EQ(bird.commands(), std::vector<std::string>{"enable kvs_vip"});
    auto st = an.status();
    EXPECT_TRUE(st.confirmed);
    EXPECT_EQ(st.changes, 1u);
    EXPECT_EQ(st.errors, 0u);
    EXPECT_TRUE(st.last_error.empty());

    // The same wish again, once confirmed: nothing sent.
    an.set(true);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(bird.commands().size(), 1u);
    EXPECT_EQ(an.status().changes, 1u);

    an.set(false);
    EXPECT_FALSE(an.status().want);
    ASSERT_TRUE(wait_until([&] { return bird.count("disable kvs_vip") == 1; }));
    ASSERT_TRUE(wait_until([&] { return !an.status().announced; }));
    st = an.status();
    EXPECT_TRUE(st.confirmed);
    EXPECT_EQ(st.changes, 2u);
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip", "disable kvs_vip"}));
}

TEST(Announcer, EveryProtocolInOrder) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    Announcer an(dir.file("bird.ctl"), {"kvs_vip4", "kvs_vip6"}, 60000);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip4", "enable kvs_vip6"}));
    an.stop();
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip4", "enable kvs_vip6",
                                                         "disable kvs_vip4", "disable kvs_vip6"}));
}

TEST(Announcer, StopWithdrawsSynchronously) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    Announcer an(dir.file("bird.ctl"), {"kvs_vip"}, 60000);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    an.stop();
    // Already sent when stop() returns: no waiting here.
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip", "disable kvs_vip"}));
    EXPECT_FALSE(an.status().announced);
    EXPECT_FALSE(an.status().want);
    // A second stop() does nothing; neither does a set() once stopped.
    an.stop();
    an.set(true);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(bird.commands().size(), 2u);
}

TEST(Announcer, DestructorLeavesBirdAsItIs) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    {
        Announcer an(dir.file("bird.ctl"), {"kvs_vip"}, 60000);
        an.set(true);
        ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    }
    EXPECT_EQ(bird.commands(), std::vector<std::string>{"enable kvs_vip"});
}

TEST(Announcer, ReassertsPeriodically) {
    // A restarted BIRD starts with the protocols disabled: the wanted state is sent again.
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"));
    Announcer an(dir.file("bird.ctl"), {"kvs_vip"}, 50);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return bird.count("enable kvs_vip") >= 3; }))
        << bird.commands().size();
    EXPECT_EQ(bird.count("disable kvs_vip"), 0u);
    EXPECT_EQ(an.status().changes, 1u);
}

TEST(Announcer, NoBirdIsAnErrorCountedAndRetried) {
    TempDir dir;
    const std::string path = dir.file("bird.ctl");  // nothing listens
    Announcer an(path, {"kvs_vip"}, 50);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return an.status().errors >= 2; })) << "retried every 50 ms";
    const auto st = an.status();
    EXPECT_TRUE(st.want);
    EXPECT_FALSE(st.announced);
    EXPECT_FALSE(st.confirmed);
    EXPECT_NE(st.last_error.find(path), std::string::npos) << st.last_error;

    // BIRD comes up: announced at the next attempt, the error cleared.
    FakeBird bird(path);
    ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    EXPECT_GE(bird.count("enable kvs_vip"), 1u);
    EXPECT_TRUE(an.status().last_error.empty());
    EXPECT_TRUE(an.status().confirmed);
}

TEST(Announcer, BirdRefusingIsAnError) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &cmd) {
        if (cmd == "enable kvs_nope") return text("8003 kvs_nope: no such protocol\n");
        return bird_like(cmd);
    });
    Announcer an(dir.file("bird.ctl"), {"kvs_vip", "kvs_nope"}, 60000);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return an.status().errors >= 1; }));
    const auto st = an.status();
    EXPECT_FALSE(st.announced);
    EXPECT_FALSE(st.confirmed);
    EXPECT_NE(st.last_error.find("no such protocol"), std::string::npos) << st.last_error;
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip", "enable kvs_nope"}));
}

TEST(Announcer, StopReturnsWhenBirdRefusesTheWithdrawal) {
    TempDir dir;
    FakeBird bird(dir.file("bird.ctl"), [](const std::string &cmd) {
        if (cmd.rfind("disable ", 0) == 0) return text("8001 busy\n");
        return bird_like(cmd);
    });
    Announcer an(dir.file("bird.ctl"), {"kvs_vip"}, 60000);
    an.set(true);
    ASSERT_TRUE(wait_until([&] { return an.status().announced; })) << an.status().last_error;
    const auto t0 = Clock::now();
    an.stop();
    EXPECT_LT(ms_since(t0), 1500);
    EXPECT_EQ(bird.commands(), (std::vector<std::string>{"enable kvs_vip", "disable kvs_vip"}));
    EXPECT_FALSE(an.status().want);
    // BIRD refused the withdrawal: still announced as far as anyone knows, an error counted.
    EXPECT_TRUE(an.status().announced);
    EXPECT_FALSE(an.status().confirmed);
    EXPECT_GE(an.status().errors, 1u);
    EXPECT_FALSE(an.status().last_error.empty());
}
