#include "kvsteer/control/net.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace kvsteer::control {

std::uint16_t Endpoint::port() const {
    return ntohs(port_be);
}

std::string Endpoint::addr_str() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family == KVS_AF_INET)
        inet_ntop(AF_INET, addr.data(), buf, sizeof buf);
    else if (family == KVS_AF_INET6)
        inet_ntop(AF_INET6, addr.data(), buf, sizeof buf);
    else
        return "none";
    return buf;
}

const char *family_name(std::uint8_t family) {
    return family == KVS_AF_INET ? "IPv4" : family == KVS_AF_INET6 ? "IPv6" : "no";
}

std::string Endpoint::str() const {
    if (family == KVS_AF_INET6) return "[" + addr_str() + "]:" + std::to_string(port());
    return addr_str() + ":" + std::to_string(port());
}

std::optional<Endpoint> parse_address(std::string_view s, std::string *err) {
    Endpoint ep;
    std::string str(s);
    if (inet_pton(AF_INET, str.c_str(), ep.addr.data()) == 1) {
        ep.family = KVS_AF_INET;
        return ep;
    }
    if (inet_pton(AF_INET6, str.c_str(), ep.addr.data()) == 1) {
        ep.family = KVS_AF_INET6;
        return ep;
    }
    if (err) *err = "'" + str + "' is not an IPv4 or IPv6 address";
    return std::nullopt;
}

std::optional<Endpoint> parse_endpoint(std::string_view s, std::string *err) {
    std::string_view host, port;
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
            if (err) *err = "'" + std::string(s) + "' is not [IPv6]:PORT";
            return std::nullopt;
        }
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string_view::npos || s.find(':') != colon) {
            if (err) *err = "'" + std::string(s) + "' is not ADDR:PORT (IPv6 needs [ADDR]:PORT)";
            return std::nullopt;
        }
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    auto ep = parse_address(host, err);
    if (!ep) return std::nullopt;
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 ||
        p > 65535) {
        if (err) *err = "port '" + std::string(port) + "' is not in 1..65535";
        return std::nullopt;
    }
    ep->port_be = htons(static_cast<std::uint16_t>(p));
    return ep;
}

namespace {
int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
}  // namespace

std::optional<Mac> parse_mac(std::string_view s, std::string *err) {
    Mac m{};
    // Six groups of two hex digits separated by ':' or '-'.
    if (s.size() != 17) {
        if (err) *err = "'" + std::string(s) + "' is not a MAC address (aa:bb:cc:dd:ee:ff)";
        return std::nullopt;
    }
    for (int i = 0; i < 6; i++) {
        int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':' && s[i * 3 + 2] != '-')) {
            if (err) *err = "'" + std::string(s) + "' is not a MAC address (aa:bb:cc:dd:ee:ff)";
            return std::nullopt;
        }
        m[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    }
    return m;
}

std::string format_mac(const Mac &m) {
    char buf[18];
    snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return buf;
}

std::optional<std::uint64_t> parse_u64(std::string_view s, std::string *err) {
    int base = 10;
    std::string_view d = s;
    if (d.size() > 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) {
        base = 16;
        d.remove_prefix(2);
    }
    std::uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(d.data(), d.data() + d.size(), v, base);
    if (d.empty() || ec != std::errc() || ptr != d.data() + d.size()) {
        if (err)
            *err = "'" + std::string(s) + "' is not an unsigned 64-bit number (decimal or 0x-hex)";
        return std::nullopt;
    }
    return v;
}

std::optional<std::array<std::uint64_t, 2>> parse_cookie_key_hex(const std::string &s,
                                                                 std::string *err) {
    auto bytes = parse_hex_bytes(s, 16, err);
    if (!bytes) return std::nullopt;
    // SipHash reads its key as two little-endian 64-bit words.
    std::array<std::uint64_t, 2> k{};
    for (int w = 0; w < 2; w++)
        for (int i = 7; i >= 0; i--)
            k[w] = (k[w] << 8) | static_cast<std::uint8_t>((*bytes)[w * 8 + i]);
    return k;
}

std::optional<std::string> parse_hex_bytes(std::string_view s, std::size_t n, std::string *err) {
    std::string_view d = s;
    if (d.size() > 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) d.remove_prefix(2);
    if (d.size() != 2 * n) {
        if (err)
            *err = "expected " + std::to_string(2 * n) + " hex digits, got " +
                   std::to_string(d.size());
        return std::nullopt;
    }
    std::string out(n, '\0');
    for (std::size_t i = 0; i < n; i++) {
        int hi = hexval(d[2 * i]), lo = hexval(d[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            if (err) *err = "'" + std::string(s) + "' contains a non-hex character";
            return std::nullopt;
        }
        out[i] = static_cast<char>(hi * 16 + lo);
    }
    return out;
}

std::uint64_t backend_identity(const Endpoint &ep) {
    std::string s = ep.str();
    return XXH3_64bits(s.data(), s.size());
}

bool notify_systemd(std::string_view state, std::string *err) {
    const char *env = std::getenv("NOTIFY_SOCKET");
    if (!env || !*env) return true;
    const std::string path = env;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || path.size() >= sizeof a.sun_path) {
        *err = "NOTIFY_SOCKET '" + path + "' is not a socket path";
        return false;
    }
    std::memcpy(a.sun_path, path.data(), path.size());
    if (path[0] == '@') a.sun_path[0] = '\0';  // the abstract namespace
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = std::string("socket: ") + std::strerror(errno);
        return false;
    }
    const ssize_t n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr *>(&a), len);
    const int e = errno;
    close(fd);
    if (n != static_cast<ssize_t>(state.size())) {
        *err = "send to NOTIFY_SOCKET " + path + ": " + std::strerror(e);
        return false;
    }
    return true;
}

}  // namespace kvsteer::control
