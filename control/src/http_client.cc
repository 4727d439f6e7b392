#include "kvsteer/control/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <strings.h>

namespace kvsteer::control {

namespace {

// Returns true when the response is complete; `need_more` when more bytes may complete it.
HttpResult parse(const std::string &raw, bool eof, bool *need_more)
{
    HttpResult r;
    *need_more = false;
    auto head_end = raw.find("\r\n\r\n");
    if (head_end == std::string::npos) {
        if (!eof && raw.size() < 64 * 1024)
            *need_more = true;
        r.error = eof ? "connection closed before the response head" : "response head too long";
        return r;
    }
    std::string_view head(raw.data(), head_end);
    if (!head.starts_with("HTTP/1.")) {
        r.error = "not an HTTP/1.x response";
        return r;
    }
    auto sp = head.find(' ');
    int code = 0;
    if (sp == std::string_view::npos ||
        std::from_chars(head.data() + sp + 1, head.data() + std::min(head.size(), sp + 4), code).ec != std::errc() ||
        code < 100 || code > 599) {
        r.error = "bad status line";
        return r;
    }
    r.status = code;
    long long content_length = -1;
    bool chunked = false;
    std::size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
        std::size_t next = head.find("\r\n", pos + 2);
        std::string_view line = head.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
        pos = next;
        auto colon = line.find(':');
        if (colon == std::string_view::npos)
            continue;
        std::string_view k = line.substr(0, colon), v = line.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
            v.remove_prefix(1);
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
            v.remove_suffix(1);
        if (k.size() == 14 && strncasecmp(k.data(), "content-length", 14) == 0) {
            long long cl = 0;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), cl);
            if (ec != std::errc() || p != v.data() + v.size() || cl < 0) {
                r.error = "bad Content-Length";
                return r;
            }
            content_length = cl;
        } else if (k.size() == 17 && strncasecmp(k.data(), "transfer-encoding", 17) == 0) {
            chunked = v.size() >= 7 && strncasecmp(v.data() + v.size() - 7, "chunked", 7) == 0;
        }
    }
    std::string_view body(raw.data() + head_end + 4, raw.size() - head_end - 4);
    if (chunked) {
        std::string out;
        std::size_t i = 0;
        for (;;) {
            auto eol = body.find("\r\n", i);
            if (eol == std::string_view::npos) {
                *need_more = !eof;
                r.error = "truncated chunked body";
                return r;
            }
            std::string_view sz = body.substr(i, eol - i);
            auto semi = sz.find(';');
            if (semi != std::string_view::npos)
                sz = sz.substr(0, semi);
            unsigned long long n = 0;
            auto [p, ec] = std::from_chars(sz.data(), sz.data() + sz.size(), n, 16);
            if (sz.empty() || ec != std::errc() || p != sz.data() + sz.size() || n > (1ull << 32)) {
                r.error = "bad chunk size";
                return r;
            }
            i = eol + 2;
            if (n == 0)
                break;  // trailers ignored
            if (body.size() < i + n + 2) {
                *need_more = !eof;
                r.error = "truncated chunk";
                return r;
            }
            out.append(body.substr(i, n));
            i += n + 2;
        }
        r.body = std::move(out);
    } else if (content_length >= 0) {
        if (body.size() < static_cast<std::size_t>(content_length)) {
            *need_more = !eof;
            r.error = "body shorter than Content-Length";
            return r;
        }
        r.body.assign(body.substr(0, content_length));
    } else {
        if (!eof) {
            *need_more = true;
            return r;
        }
        r.body.assign(body);
    }
    r.ok = true;
    r.error.clear();
    return r;
}

struct Conn {
    int fd = -1;
    std::string out;
    std::size_t sent = 0;
    std::string in;
    bool connected = false, done = false;
};

}  // namespace

HttpResult parse_http_response(const std::string &raw, bool eof)
{
    bool more = false;
    auto r = parse(raw, eof, &more);
    if (more && r.error.empty())
        r.error = "incomplete response";
    return r;
}

std::vector<HttpResult> http_get_many(const std::vector<HttpRequest> &reqs, std::chrono::milliseconds timeout,
                                      std::size_t max_body)
{
    std::vector<HttpResult> res(reqs.size());
    std::vector<Conn> conns(reqs.size());
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (std::size_t i = 0; i < reqs.size(); i++) {
        const auto &ep = reqs[i].ep;
        auto &c = conns[i];
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (ep.family == KVS_AF_INET) {
            auto *sa = reinterpret_cast<sockaddr_in *>(&ss);
            sa->sin_family = AF_INET;
            sa->sin_port = ep.port_be;
            std::memcpy(&sa->sin_addr, ep.addr.data(), 4);
            len = sizeof *sa;
        } else if (ep.family == KVS_AF_INET6) {
            auto *sa = reinterpret_cast<sockaddr_in6 *>(&ss);
            sa->sin6_family = AF_INET6;
            sa->sin6_port = ep.port_be;
            std::memcpy(&sa->sin6_addr, ep.addr.data(), 16);
            len = sizeof *sa;
        } else {
            res[i].error = "no address";
            c.done = true;
            continue;
        }
        c.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            res[i].error = std::string("socket: ") + std::strerror(errno);
            c.done = true;
            continue;
        }
        c.out = "GET " + reqs[i].path + " HTTP/1.1\r\nHost: " + ep.str() +
                "\r\nUser-Agent: kvsteerd\r\nAccept: text/plain\r\nConnection: close\r\n\r\n";
        if (connect(c.fd, reinterpret_cast<sockaddr *>(&ss), len) == 0) {
            c.connected = true;
        } else if (errno != EINPROGRESS) {
            res[i].error = std::string("connect: ") + std::strerror(errno);
            c.done = true;
        }
    }
    std::vector<pollfd> pfds;
    std::vector<std::size_t> idx;
    for (;;) {
        pfds.clear();
        idx.clear();
        for (std::size_t i = 0; i < conns.size(); i++) {
            auto &c = conns[i];
            if (c.done)
                continue;
            short ev = (!c.connected || c.sent < c.out.size()) ? POLLOUT : POLLIN;
            pfds.push_back({c.fd, ev, 0});
            idx.push_back(i);
        }
        if (pfds.empty())
            break;
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) {
            for (auto i : idx) {
                res[i].error = conns[i].connected ? "timeout reading the response" : "connect timeout";
                conns[i].done = true;
            }
            break;
        }
        int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1;
        int n = poll(pfds.data(), pfds.size(), ms);
        if (n < 0 && errno != EINTR)
            break;
        for (std::size_t k = 0; k < pfds.size() && n > 0; k++) {
            if (!pfds[k].revents)
                continue;
            auto i = idx[k];
            auto &c = conns[i];
            if (!c.connected) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (soerr) {
                    res[i].error = std::string("connect: ") + std::strerror(soerr);
                    c.done = true;
                    continue;
                }
                c.connected = true;
            }
            if (c.sent < c.out.size()) {
                ssize_t w = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    res[i].error = std::string("send: ") + std::strerror(errno);
                    c.done = true;
                } else if (w > 0) {
                    c.sent += static_cast<std::size_t>(w);
                }
                continue;
            }
            char buf[16384];
            ssize_t r = recv(c.fd, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                res[i].error = std::string("recv: ") + std::strerror(errno);
                c.done = true;
                continue;
            }
            bool eof = r == 0;
            c.in.append(buf, static_cast<std::size_t>(r));
            if (c.in.size() > max_body + 64 * 1024) {
                res[i].error = "response larger than " + std::to_string(max_body) + " bytes";
                c.done = true;
                continue;
            }
            bool more = false;
            HttpResult hr = parse(c.in, eof, &more);
            if (!more || eof) {
                res[i] = std::move(hr);
                c.done = true;
            }
        }
    }
    for (auto &c : conns)
        if (c.fd >= 0)
            close(c.fd);
    return res;
}

}  // namespace kvsteer::control
