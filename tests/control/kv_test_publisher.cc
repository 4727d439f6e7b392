#include "kv_test_publisher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>

#ifdef KVS_TEST_ZMQ
#include <zmq.h>
#endif

namespace kvtest {

std::string arr(std::size_t n) {
    return std::string(1, static_cast<char>(0x90 | n));
}
std::string map(std::size_t n) {
    return std::string(1, static_cast<char>(0x80 | n));
}
std::string str(std::string_view s) {
    return static_cast<char>(0xa0 | s.size()) + std::string(s);
}

std::string u64(std::uint64_t v) {
    if (v < 128) return std::string(1, static_cast<char>(v));
    std::string o(1, '\xcf');
    for (int i = 7; i >= 0; i--) o += static_cast<char>(v >> (8 * i));
    return o;
}

std::string f64(double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, 8);
    std::string o(1, '\xcb');
    for (int i = 7; i >= 0; i--) o += static_cast<char>(bits >> (8 * i));
    return o;
}

namespace {
std::string hashes(unsigned n, std::uint64_t first) {
    std::string o =
        n < 16 ? arr(n)
               : std::string("\xdc") + static_cast<char>(n >> 8) + static_cast<char>(n & 0xff);
    for (unsigned i = 0; i < n; i++) o += u64(first + i);
    return o;
}
}  // namespace

std::string stored(unsigned n, std::uint64_t first, std::string_view medium) {
    // ["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium]
    return arr(7) + str("BlockStored") + hashes(n, first) + nil() + arr(0) + u64(16) + nil() +
           str(medium);
}

std::string removed(unsigned n, std::uint64_t first, std::string_view medium) {
    return arr(3) + str("BlockRemoved") + hashes(n, first) + str(medium);
}

std::string cleared() {
    return arr(1) + str("AllBlocksCleared");
}

std::string batch(const std::vector<std::string> &events, double ts) {
    std::string o = arr(2) + f64(ts) + arr(events.size());
    for (const auto &e : events) o += e;
    return o;
}

std::vector<std::string> frames(std::uint64_t seq, const std::string &payload,
                                const std::string &topic) {
    std::string s;
    for (int i = 7; i >= 0; i--) s += static_cast<char>(seq >> (8 * i));
    return {topic, s, payload};
}

namespace {
// Whether a listening socket could bind `port` on the loopback address of `family` now.
bool bindable(int family, std::uint16_t port) {
    const int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return false;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET) {
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(port);
        rc = bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa);
    } else {
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_addr = in6addr_loopback;
        sa.sin6_port = htons(port);
        rc = bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa);
    }
    close(fd);
    return rc == 0;
}
}  // namespace

// Not from the ephemeral range: a port the kernel hands out there may be taken by an outgoing
// connection (the daemon's own health checks) between this call and the server's bind, which
// made tests fail now and then on a busy machine. Ports below the range are only ever bound on
// purpose; the one returned is free on both 127.0.0.1 and ::1.
std::uint16_t free_tcp_port() {
    unsigned lo = 32768, hi = 60999;
    if (std::FILE *f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
        if (std::fscanf(f, "%u %u", &lo, &hi) != 2) lo = 32768;
        std::fclose(f);
    }
    static std::mt19937 rng(static_cast<unsigned>(getpid()) * 2654435761u ^
                            static_cast<unsigned>(time(nullptr)));
    if (lo > 12000) {
        std::uniform_int_distribution<unsigned> pick(10000, lo - 1);
        for (int i = 0; i < 200; i++) {
            const auto port = static_cast<std::uint16_t>(pick(rng));
            if (bindable(AF_INET, port) && bindable(AF_INET6, port)) return port;
        }
    }
    // No room below the range: one the kernel picks (the old way; racy, as said above).
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa);
    getsockname(fd, reinterpret_cast<sockaddr *>(&sa), &len);
    close(fd);
    return ntohs(sa.sin_port);
}

#ifdef KVS_TEST_ZMQ
XPub::XPub() {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_XPUB);
    const int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock_, "tcp://127.0.0.1:*") != 0) return;
    char buf[256];
    std::size_t n = sizeof buf;
    if (zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, buf, &n) == 0) endpoint_ = buf;
}

XPub::~XPub() {
    if (sock_) zmq_close(sock_);
    zmq_ctx_term(ctx_);
}

bool XPub::wait_subscriber(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        zmq_pollitem_t it{sock_, -1, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) > 0) {
            char b[256];
            int n = zmq_recv(sock_, b, sizeof b, 0);
            if (n >= 1 && b[0] == 1)  // 1 = subscribe, 0 = unsubscribe
                return true;
        }
    }
    return false;
}

bool XPub::send(const std::vector<std::string> &fr) {
    for (std::size_t i = 0; i < fr.size(); i++)
        if (zmq_send(sock_, fr[i].data(), fr[i].size(), i + 1 < fr.size() ? ZMQ_SNDMORE : 0) < 0)
            return false;
    return true;
}
#endif

}  // namespace kvtest
