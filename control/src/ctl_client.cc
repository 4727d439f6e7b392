#include "kvsteer/control/ctl_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace kvsteer::control {

namespace {
// The longest answer read (the largest real ones, `affinity show` of every entry or 1024
// backends, are a few MiB).
constexpr std::size_t kMaxAnswerBytes = 256u << 20;
}  // namespace

std::optional<nlohmann::json> api_call(const std::string &socket_path, const nlohmann::json &req,
                                       std::chrono::milliseconds timeout, std::string *err,
                                       bool *connected) {
    if (connected) *connected = false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof sa.sun_path) {
        *err = "socket path too long: " + socket_path;
        return std::nullopt;
    }
    std::strncpy(sa.sun_path, socket_path.c_str(), sizeof sa.sun_path - 1);
    // Non-blocking throughout: the timeout covers the connect (a Unix socket's connect blocks
    // while the listener's queue is full: a stuck kvsteerd hung every call) and every send.
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *err = std::string("socket: ") + std::strerror(errno);
        return std::nullopt;
    }
    struct Closer {
        int fd;
        ~Closer() { close(fd); }
    } closer{fd};
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {  // the queue is full: no wakeup to wait for, so try again
            if (std::chrono::steady_clock::now() >= deadline) {
                *err = "timeout connecting to kvsteerd at " + socket_path +
                       ": its connection queue stays full (is it stuck?)";
                return std::nullopt;
            }
            usleep(5000);
            continue;
        }
        const int e = errno;
        *err = "cannot connect to kvsteerd at " + socket_path + ": " + std::strerror(e) +
               (e == EACCES || e == EPERM ? " (the socket is root's: run as root)"
                                          : " (is it running?)");
        return std::nullopt;
    }
    if (connected) *connected = true;
    std::string out = req.dump() + "\n";
    std::size_t sent = 0;
    std::string in, send_error;
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            *err = send_error.empty() ? "timeout waiting for kvsteerd" : send_error;
            return std::nullopt;
        }
        pollfd p{fd, static_cast<short>(sent < out.size() ? POLLOUT : POLLIN), 0};
        if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) {
            *err = std::string("poll: ") + std::strerror(errno);
            return std::nullopt;
        }
        if (!p.revents) continue;
        if (sent < out.size()) {
            ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                if (errno != EPIPE && errno != ECONNRESET) {
                    *err = std::string("send: ") + std::strerror(errno);
                    return std::nullopt;
                }
                // kvsteerd closed while the request was still going out (a request it refuses
                // by its length): its answer, when it gave one, is waiting to be read.
                send_error = std::string("send: ") + std::strerror(errno);
                sent = out.size();
                continue;
            }
            sent += static_cast<std::size_t>(n);
            continue;
        }
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            *err = send_error.empty() ? std::string("recv: ") + std::strerror(errno) : send_error;
            return std::nullopt;
        }
        if (n == 0) {
            *err = send_error.empty() ? "kvsteerd closed the connection without an answer"
                                      : send_error + " (kvsteerd closed the connection)";
            return std::nullopt;
        }
        const std::size_t seen = in.size();
        in.append(buf, static_cast<std::size_t>(n));
        auto nl = in.find('\n', seen);
        if (nl == std::string::npos && in.size() > kMaxAnswerBytes) {
            *err = "kvsteerd's answer is longer than " + std::to_string(kMaxAnswerBytes >> 20) +
                   " MiB: not read";
            return std::nullopt;
        }
        if (nl != std::string::npos) {
            auto j = nlohmann::json::parse(in.substr(0, nl), nullptr, false);
            if (j.is_discarded() || !j.is_object()) {
                *err = "kvsteerd sent an answer that is not a JSON object";
                return std::nullopt;
            }
            return j;
        }
    }
}

std::vector<boost::program_options::option> negative_number_as_value(
    std::vector<std::string> &args) {
    if (args.empty()) return {};
    const std::string &a = args.front();
    auto digit = [&](std::size_t i) {
        return i < a.size() && std::isdigit(static_cast<unsigned char>(a[i]));
    };
    if (a.size() < 2 || a[0] != '-' || !(digit(1) || (a[1] == '.' && digit(2)))) return {};
    // An option without a key is a positional one: run() gives it the next positional name.
    boost::program_options::option o;
    o.value.push_back(a);
    o.original_tokens.push_back(a);
    args.erase(args.begin());
    return {o};
}

}  // namespace kvsteer::control
