// kvsteerd event loop and sockets: the local API (Unix stream, newline-delimited JSON) and the
// Prometheus endpoint (HTTP/1.x, one request per connection).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvsteer/control/daemon.h"
#include "kvsteer/control/json_bounded.h"
#include "publish_batch.h"

namespace kvsteer::control {

namespace {

constexpr std::size_t kMaxRequest = 1u << 20;
// A client's answers not yet sent: above this, nothing more is read or handled from it until it
// reads them (a client that pipelines requests and never reads made kvsteerd's memory grow
// without bound). One answer may still take it past.
constexpr std::size_t kMaxPendingOut = 8u << 20;
// Requests handled from one client per turn of the loop: the others, the probes' results and the
// tick are not starved by one client's pipeline (the rest waits for the next turn, at once).
constexpr std::size_t kMaxRequestsPerTurn = 64;

// Reads more of the client's requests: it reads its answers, and no overlong line is building.
bool wants_input(const std::string &in, const std::string &out, bool closing) {
    return !closing && out.size() < kMaxPendingOut && in.size() <= kMaxRequest;
}

bool mkdir_p(const std::string &dir) {
    if (dir.empty()) return true;
    std::string cur;
    for (std::size_t i = 0; i <= dir.size(); i++) {
        if (i == dir.size() || (dir[i] == '/' && i > 0)) {
            cur = dir.substr(0, i);
            if (mkdir(cur.c_str(), 0755) < 0 && errno != EEXIST) return false;
        }
    }
    return true;
}

// Writes what it can without blocking; false when the peer is gone.
bool flush_out(int fd, std::string &out) {
    while (!out.empty()) {
        ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) return errno == EAGAIN || errno == EINTR;
        out.erase(0, static_cast<std::size_t>(n));
    }
    return true;
}

}  // namespace

bool Daemon::open_api(std::string *err) {
    const std::string &path = cfg().api_socket;
    auto slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0 && !mkdir_p(path.substr(0, slash))) {
        *err = "api-socket: cannot create directory " + path.substr(0, slash) + ": " +
               std::strerror(errno);
        return false;
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    // Refuse to steal the socket of a running daemon; remove a stale one. Non-blocking: a
    // listener whose queue is full (a stuck daemon) answers EAGAIN, and is one too.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe >= 0 &&
        (connect(probe, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0 || errno == EAGAIN)) {
        close(probe);
        *err = "api-socket: another kvsteerd is listening on " + path;
        return false;
    }
    if (probe >= 0) close(probe);
    // A stale socket is removed; anything else at the path (a mistyped api-socket naming the
    // configuration file) is not: it was unlinked.
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
        *err = "api-socket: " + path + " exists and is not a socket (not removed)";
        return false;
    }
    unlink(path.c_str());
    api_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (api_fd_ < 0 || bind(api_fd_, reinterpret_cast<sockaddr *>(&sa), sizeof sa) < 0 ||
        listen(api_fd_, 64) < 0) {
        *err = "api-socket: cannot listen on " + path + ": " + std::strerror(errno);
        return false;
    }
    chmod(path.c_str(), 0660);
    spdlog::info("API on unix:{}", path);
    return true;
}

bool Daemon::open_metrics(std::string *err) {
    if (cfg().metrics_listen.empty()) return true;
    std::string e;
    auto ep = parse_endpoint(cfg().metrics_listen, &e);
    if (!ep) {
        *err = "metrics-listen: " + e;
        return false;
    }
    sockaddr_storage ss{};
    socklen_t len;
    if (ep->family == KVS_AF_INET) {
        auto *s = reinterpret_cast<sockaddr_in *>(&ss);
        s->sin_family = AF_INET;
        s->sin_port = ep->port_be;
        std::memcpy(&s->sin_addr, ep->addr.data(), 4);
        len = sizeof *s;
    } else {
        auto *s = reinterpret_cast<sockaddr_in6 *>(&ss);
        s->sin6_family = AF_INET6;
        s->sin6_port = ep->port_be;
        std::memcpy(&s->sin6_addr, ep->addr.data(), 16);
        len = sizeof *s;
    }
    metrics_fd_ = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (metrics_fd_ >= 0) setsockopt(metrics_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (metrics_fd_ < 0 || bind(metrics_fd_, reinterpret_cast<sockaddr *>(&ss), len) < 0 ||
        listen(metrics_fd_, 16) < 0) {
        *err = "metrics-listen: cannot listen on " + cfg().metrics_listen + ": " +
               std::strerror(errno);
        return false;
    }
    spdlog::info("metrics on http://{}/metrics", cfg().metrics_listen);
    return true;
}

void Daemon::admit(std::vector<Client> &list, std::size_t slots, int fd, const char *what) {
    const auto now = std::chrono::steady_clock::now();
    bool evicted = false;
    if (list.size() >= slots) {
        auto oldest = list.end();
        for (auto it = list.begin(); it != list.end(); ++it)
            if (it->in.empty() && it->out.empty() && !it->backlog && !it->closing &&
                now - it->active >= std::chrono::seconds(1) &&
                (oldest == list.end() || it->active < oldest->active))
                oldest = it;
        if (oldest == list.end()) {
            ctr_.clients_refused++;
            close(fd);
        } else {
            ctr_.clients_evicted++;
            close(oldest->fd);
            list.erase(oldest);
            evicted = true;
        }
        if (now - admit_logged_ >= std::chrono::seconds(10)) {
            admit_logged_ = now;
            spdlog::warn("{}: all {} connection slots taken: {} ({} evicted, {} refused so far)",
                         what, slots,
                         evicted ? "the oldest idle one closed" : "the new one refused",
                         ctr_.clients_evicted, ctr_.clients_refused);
        }
        if (!evicted) return;
    }
    Client c;
    c.fd = fd;
    c.opened = c.active = c.drained = now;
    list.push_back(std::move(c));
}

void Daemon::accept_api() {
    for (;;) {
        int fd = accept4(api_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        admit(api_clients_, 64, fd, "API socket");
    }
}

void Daemon::accept_metrics() {
    for (;;) {
        int fd = accept4(metrics_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        admit(metrics_clients_, 32, fd, "metrics listener");
    }
}

void Daemon::serve_api_client(std::size_t idx) {
    Client &c = api_clients_[idx];
    char buf[8192];
    while (wants_input(c.in, c.out, c.closing)) {
        ssize_t n = recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) {
            c.closing = true;  // after the requests already read are answered
            // A last request without its newline is one too (it was dropped unanswered).
            if (!c.in.empty() && c.in.back() != '\n') c.in += '\n';
            break;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) c.closing = true;
            break;
        }
        c.active = std::chrono::steady_clock::now();
        if (c.in.empty()) c.line_started = c.active;
        c.in.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t from = 0, nl, handled = 0;
    // The turn's table changes (weights, drains, backends added or removed) are published once
    // after it: each one rebuilt the lookup table and waited out the table grace, so a client
    // pipelining 64 of them stalled the loop (reports, ticks, the dataplane's health) for
    // seconds a turn. The answers go out after it, with the tables published.
    const PublishBatch batch(core_, "API requests");
    while (handled < kMaxRequestsPerTurn && c.out.size() < kMaxPendingOut &&
           (nl = c.in.find('\n', from)) != std::string::npos) {
        const std::string line = c.in.substr(from, nl - from);
        from = nl + 1;
        handled++;  // blank lines too: a turn's work stays bounded
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json resp;
        bool too_deep = false;
        auto req = parse_json_bounded(line, &too_deep);
        if (req.is_discarded()) {
            ctr_.api_requests++;
            ctr_.api_errors++;
            resp = {{"ok", false},
                    {"error",
                     too_deep ? fmt::format("request nested deeper than {} levels", kMaxJsonDepth)
                              : std::string("request is not valid JSON")}};
        } else {
            resp = handle(req);
        }
        c.out += resp.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    c.in.erase(0, from);
    if (from && !c.in.empty()) c.line_started = c.active;  // what is left came with the last read
    c.backlog = c.in.find('\n') != std::string::npos;
    if (!c.backlog && c.in.size() > kMaxRequest) {
        c.out += R"({"ok":false,"error":"request line longer than 1 MiB"})"
                 "\n";
        c.in.clear();
        c.closing = true;
    }
}

void Daemon::serve_metrics_client(std::size_t idx) {
    Client &c = metrics_clients_[idx];
    char buf[4096];
    ssize_t n = recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) c.closing = true;
        return;
    }
    if (c.closing) return;  // answered: what comes after is ignored (it overwrote the reply)
    c.in.append(buf, static_cast<std::size_t>(n));
    c.active = std::chrono::steady_clock::now();
    if (c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) {
        if (c.in.size() > 16384) c.closing = true;
        return;
    }
    std::string body, status = "200 OK";
    if (c.in.starts_with("GET /metrics ") || c.in.starts_with("GET / ")) {
        body = metrics_text();
    } else {
        status = "404 Not Found";
        body = "only GET /metrics here\n";
    }
    c.out = "HTTP/1.1 " + status +
            "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    c.in.clear();
    c.closing = true;  // after the response is flushed
}

void Daemon::loop_step(const char *what, const std::function<void()> &step) {
    try {
        step();
    } catch (const std::exception &e) {
        const std::string msg = std::string(what) + ": " + e.what();
        const auto now = std::chrono::steady_clock::now();
        if (msg != loop_error_ || now - loop_error_at_ >= std::chrono::seconds(10)) {
            spdlog::error("{} (skipped; kvsteerd goes on)", msg);
            loop_error_ = msg;
            loop_error_at_ = now;
        }
    }
}

void Daemon::run() {
    auto next_tick = std::chrono::steady_clock::now();
    const auto tick_every = std::chrono::milliseconds(cfg().report_interval_ms);
    std::vector<pollfd> pfds;
    while (!stop_.load()) {
        pfds.clear();
        pfds.push_back({wake_fd_, POLLIN, 0});
        pfds.push_back({api_fd_, POLLIN, 0});
        pfds.push_back({metrics_fd_, static_cast<short>(metrics_fd_ >= 0 ? POLLIN : 0), 0});
        // A client is read only while its answers are taken (wants_input); one with requests
        // left from the last turn is served again at once.
        bool backlog = false;
        for (auto &c : api_clients_) {
            pfds.push_back({c.fd,
                            static_cast<short>((wants_input(c.in, c.out, c.closing) ? POLLIN : 0) |
                                               (c.out.empty() ? 0 : POLLOUT)),
                            0});
            backlog = backlog || (c.backlog && c.out.size() < kMaxPendingOut);
        }
        // Read until answered (closing): a client that half-closed its side and does not read
        // the page stays readable at its end of stream, and polled for input the loop spun.
        for (auto &c : metrics_clients_)
            pfds.push_back(
                {c.fd, static_cast<short>((c.closing ? 0 : POLLIN) | (c.out.empty() ? 0 : POLLOUT)),
                 0});
        const std::size_t api_polled = api_clients_.size(),
                          metrics_polled = metrics_clients_.size();
        auto now = std::chrono::steady_clock::now();
        int timeout = backlog ? 0
                      : next_tick > now
                          ? static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 next_tick - now)
                                                 .count()) +
                                1
                          : 0;
        int n = poll(pfds.data(), pfds.size(), timeout);
        if (n < 0 && errno != EINTR) {
            spdlog::error("poll: {}", std::strerror(errno));
            break;
        }
        if (stop_.load()) break;
        if (pfds[0].revents) {
            std::uint64_t v;
            [[maybe_unused]] auto r = read(wake_fd_, &v, sizeof v);
            loop_step("probe results", [this] { apply_results(); });
            loop_step("KV events", [this] { apply_kv_resets(); });
            loop_step("fleet from etcd", [this] { apply_fleet_etcd(); });
            loop_step("fleet pings", [this] { apply_fleet_silence(); });
        }
        const std::size_t base = 3;
        for (std::size_t i = 0; i < api_polled; i++) {
            const Client &c = api_clients_[i];
            if ((pfds[base + i].revents & (POLLIN | POLLHUP | POLLERR)) ||
                (c.backlog && c.out.size() < kMaxPendingOut))
                serve_api_client(i);
        }
        for (std::size_t i = 0; i < metrics_polled; i++) {
            if (pfds[base + api_polled + i].revents & (POLLIN | POLLHUP | POLLERR))
                serve_metrics_client(i);
        }
        const auto flushed_at = std::chrono::steady_clock::now();
        for (auto *list : {&api_clients_, &metrics_clients_}) {
            for (std::size_t i = 0; i < list->size();) {
                Client &c = (*list)[i];
                const std::size_t queued = c.out.size();
                bool alive = flush_out(c.fd, c.out);
                if (c.out.empty() || c.out.size() != queued) c.drained = flushed_at;
                // Not read while its answers wait (wants_input): its silence is ours, not its.
                if (list == &api_clients_ && !wants_input(c.in, c.out, c.closing))
                    c.active = c.line_started = flushed_at;
                // A metrics exchange is one request and its reply: a connection without a
                // request after 10 s, or still replying after 60 s, is a stuck or idle one holding
                // a slot (closed, counted with the evicted). An API client holds one while it
                // sends a request line (10 s from its first byte) or takes its answers (60 s
                // without one taken): 64 half-sent requests took every slot for good, and so did
                // 64 sending a byte every few seconds while the limit counted from the last byte.
                const auto age = flushed_at - c.opened;
                const bool stale =
                    list == &metrics_clients_
                        ? (c.out.empty() && !c.closing && age > std::chrono::seconds(10)) ||
                              age > std::chrono::seconds(60)
                        : (!c.in.empty() && !c.backlog &&
                           flushed_at - c.line_started > std::chrono::seconds(10)) ||
                              (!c.out.empty() && flushed_at - c.drained > std::chrono::seconds(60));
                if (stale) ctr_.clients_evicted++;
                if (!alive || stale || (c.closing && c.out.empty() && !c.backlog)) {
                    close(c.fd);
                    list->erase(list->begin() + static_cast<long>(i));
                } else {
                    i++;
                }
            }
        }
        // Accepted after the clients are served (an eviction reorders the lists: the poll results
        // went to the wrong clients; a request read this turn keeps its client) and after the
        // finished ones are gone: a client that closed this turn still held its slot, and a
        // connection made right after it was refused.
        if (pfds[1].revents) accept_api();
        if (pfds[2].revents) accept_metrics();
        now = std::chrono::steady_clock::now();
        if (now >= next_tick) {
            loop_step("tick", [this] { tick(); });
            next_tick = now + tick_every;
        }
    }
    stop_announcer();  // nobody watches the dataplane any more: withdraw
    spdlog::info("kvsteerd: stopping (tables stay pinned; the dataplane keeps the last ones)");
}

}  // namespace kvsteer::control
