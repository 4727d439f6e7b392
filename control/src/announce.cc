#include "kvsteer/control/announce.h"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace kvsteer::control {

DataplaneHealth dataplane_health(const kvs_ring_ctl *ctl, unsigned n, std::uint64_t now_ns,
                                 std::uint64_t stale_ns) {
    DataplaneHealth h;
    if (!ctl) {
        h.reason = "no dataplane maps";
        return h;
    }
    std::uint64_t oldest_stale = 0;
    for (unsigned w = 0; w < n; w++) {
        const std::uint64_t t = __atomic_load_n(&ctl[w].alive_ns, __ATOMIC_RELAXED);
        if (!t) continue;
        if (t > h.newest_ns) h.newest_ns = t;
        // Later than `now`: written since the caller read its clock.
        if (t > now_ns || now_ns - t <= stale_ns) {
            h.workers_alive++;
            h.binding += __atomic_load_n(&ctl[w].binding, __ATOMIC_RELAXED);
        } else {
            h.workers_stale++;
            if (!oldest_stale || t < oldest_stale) oldest_stale = t;
        }
    }
    if (h.workers_stale)
        h.reason = fmt::format("{} dataplane worker(s) silent for {} ms", h.workers_stale,
                               oldest_stale <= now_ns ? (now_ns - oldest_stale) / 1000000 : 0);
    else if (!h.workers_alive)
        h.reason = "no dataplane worker running";
    h.healthy = h.reason.empty();
    return h;
}

namespace {

// Reads reply lines until the last one ("NNNN text"); false on error, timeout or EOF.
bool read_reply(int fd, std::string *text, int *code, std::string *err,
                std::chrono::steady_clock::time_point deadline) {
    std::string buf;
    text->clear();
    for (;;) {
        std::size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            if (line.size() >= 5 && std::isdigit(static_cast<unsigned char>(line[0]))) {
                *code = std::stoi(line.substr(0, 4));
                if (!text->empty() && line.size() > 5) *text += '\n';
                *text += line.substr(5);
                if (line[4] == ' ') return true;
            } else if (!line.empty() && line[0] == ' ') {  // continuation of the last code
                *text += '\n' + line.substr(1);
            }
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now())
                              .count();
        pollfd p{fd, POLLIN, 0};
        if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
            *err = "BIRD did not answer in time";
            return false;
        }
        char chunk[1024];
        const ssize_t r = ::read(fd, chunk, sizeof chunk);
        if (r <= 0) {
            *err = r == 0 ? "BIRD closed the control socket" : std::strerror(errno);
            return false;
        }
        buf.append(chunk, static_cast<std::size_t>(r));
    }
}

}  // namespace

bool bird_command(const std::string &socket, const std::string &cmd, std::string *reply,
                  std::string *err, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (socket.size() >= sizeof a.sun_path) {
        *err = "control socket path too long: " + socket;
        return false;
    }
    if (cmd.find('\n') != std::string::npos) {
        *err = "a BIRD command is one line";
        return false;
    }
    std::memcpy(a.sun_path, socket.c_str(), socket.size());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = std::strerror(errno);
        return false;
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    // connect() on a Unix socket blocks while the listener's queue is full (a stuck BIRD): bound
    // it by the same deadline (SO_SNDTIMEO; it then fails with EAGAIN).
    timeval tv{timeout_ms / 1000, static_cast<suseconds_t>((timeout_ms % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        *err = fmt::format("BIRD control socket {}: {}", socket,
                           errno == EAGAIN ? "BIRD did not accept in time" : std::strerror(errno));
        return false;
    }
    int code = 0;
    std::string text;
    if (!read_reply(fd, &text, &code, err, deadline)) return false;  // the greeting
    const std::string line = cmd + "\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
        *err = std::strerror(errno);
        return false;
    }
    if (!read_reply(fd, &text, &code, err, deadline)) return false;
    if (reply) *reply = text;
    if (code >= 8000) {
        *err = fmt::format("BIRD refused '{}': {}", cmd, text);
        return false;
    }
    return true;
}

Announcer::Announcer(std::string socket, std::vector<std::string> protocols, int reassert_ms)
    : socket_(std::move(socket)), protocols_(std::move(protocols)), reassert_ms_(reassert_ms) {
    thr_ = std::thread([this] { loop(); });
}

Announcer::~Announcer() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thr_.joinable()) thr_.join();
}

void Announcer::set(bool announce) {
    {
        std::lock_guard lk(mu_);
        if (st_.want == announce && !dirty_ && st_.confirmed) return;
        if (st_.want != announce) st_.changes++;
        st_.want = announce;
        dirty_ = true;
    }
    cv_.notify_all();
}

void Announcer::stop() {
    {
        std::lock_guard lk(mu_);
        if (stop_) return;
        stop_ = true;
    }
    cv_.notify_all();
    if (thr_.joinable()) thr_.join();
    std::string err;
    const bool ok = apply(false, &err);
    if (!ok) spdlog::warn("announce: withdrawing on shutdown: {}", err);
    std::lock_guard lk(mu_);
    st_.want = false;
    if (ok) {
        st_.announced = false;
        st_.confirmed = true;
        st_.last_error.clear();
    } else {
        st_.errors++;
        st_.confirmed = false;
        st_.last_error = err;
    }
}

AnnounceStatus Announcer::status() const {
    std::lock_guard lk(mu_);
    return st_;
}

bool Announcer::apply(bool announce, std::string *err) {
    for (const auto &p : protocols_)
        if (!bird_command(socket_, (announce ? "enable " : "disable ") + p, nullptr, err))
            return false;
    return true;
}

void Announcer::loop() {
    std::unique_lock lk(mu_);
    while (!stop_) {
        cv_.wait_for(lk, std::chrono::milliseconds(reassert_ms_),
                     [this] { return stop_ || dirty_; });
        if (stop_) break;
        const bool want = st_.want;
        dirty_ = false;
        lk.unlock();
        std::string err;
        const bool ok = apply(want, &err);
        lk.lock();
        if (ok) {
            if (!st_.confirmed || st_.announced != want || !st_.last_error.empty())
                spdlog::info("announce: VIP routes {} (BIRD {}: {})",
                             want ? "announced" : "withdrawn", socket_,
                             fmt::join(protocols_, ", "));
            st_.announced = want;
            st_.confirmed = true;
            st_.last_error.clear();
        } else {
            if (err != st_.last_error) spdlog::warn("announce: {}", err);
            st_.errors++;
            st_.confirmed = false;
            st_.last_error = err;
        }
    }
}

}  // namespace kvsteer::control
