#include "prom.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace kvsteer::replay {

std::map<std::string, double> parse_prometheus(std::string_view text) {
    std::map<std::string, double> m;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.empty() || line[0] == '#') continue;
        size_t name_end = line.find_first_of("{ ");
        if (name_end == std::string_view::npos || name_end == 0) continue;
        const std::string name(line.substr(0, name_end));
        size_t vstart;
        if (line[name_end] == '{') {
            // Label values may hold '}' inside quotes: skip quoted strings.
            size_t i = name_end + 1;
            bool q = false;
            for (; i < line.size(); ++i) {
                if (q && line[i] == '\\') {
                    ++i;
                    continue;
                }
                if (line[i] == '"')
                    q = !q;
                else if (!q && line[i] == '}')
                    break;
            }
            if (i >= line.size()) continue;
            vstart = i + 1;
        } else {
            vstart = name_end;
        }
        while (vstart < line.size() && line[vstart] == ' ') ++vstart;
        size_t vend = line.find(' ', vstart);  // an optional timestamp follows
        const std::string v(line.substr(
            vstart, vend == std::string_view::npos ? std::string_view::npos : vend - vstart));
        if (v.empty()) continue;
        char *endp = nullptr;
        const double d = std::strtod(v.c_str(), &endp);
        if (endp == v.c_str()) continue;
        m[name] += d;
    }
    return m;
}

std::optional<CacheCounters> cache_counters(const std::map<std::string, double> &m) {
    for (const char *prefix : {"vllm:prefix_cache_", "vllm:gpu_prefix_cache_"}) {
        auto q = m.find(std::string(prefix) + "queries_total");
        auto h = m.find(std::string(prefix) + "hits_total");
        if (q != m.end() && h != m.end()) return CacheCounters{q->second, h->second};
    }
    return std::nullopt;
}

std::optional<Url> parse_url(const std::string &s, std::string &err) {
    const std::string scheme = "http://";
    if (s.rfind(scheme, 0) != 0) {
        err = "only http:// URLs are supported: " + s;
        return std::nullopt;
    }
    std::string rest = s.substr(scheme.size());
    Url u;
    const size_t slash = rest.find('/');
    std::string hostport = rest.substr(0, slash);
    u.target = slash == std::string::npos ? "/metrics" : rest.substr(slash);
    if (!hostport.empty() && hostport.front() == '[') {  // [IPv6]:PORT, [IPv6]
        const size_t close = hostport.find(']');
        if (close == std::string::npos ||
            (close + 1 < hostport.size() && hostport[close + 1] != ':')) {
            err = "bad URL: " + s;
            return std::nullopt;
        }
        u.host = hostport.substr(1, close - 1);
        u.port = close + 1 < hostport.size() ? hostport.substr(close + 2) : "80";
    } else if (const size_t colon = hostport.rfind(':'); colon == std::string::npos) {
        u.host = hostport;
        u.port = "80";
    } else {
        u.host = hostport.substr(0, colon);
        u.port = hostport.substr(colon + 1);
    }
    if (u.host.empty() || u.port.empty()) {
        err = "bad URL: " + s;
        return std::nullopt;
    }
    return u;
}

std::optional<std::string> http_get(const Url &u, double timeout_s, std::string &err) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    using tcp = boost::asio::ip::tcp;
    try {
        // Asynchronous operations: tcp_stream's expiry bounds only those (the synchronous ones
        // had no timeout, and a backend that accepted and never answered hung the replayer).
        boost::asio::io_context io;
        tcp::resolver res(io);
        beast::tcp_stream stream(io);
        const auto results = res.resolve(u.host, u.port);
        http::request<http::empty_body> req{http::verb::get, u.target, 11};
        req.set(http::field::host,
                u.host.find(':') == std::string::npos ? u.host : "[" + u.host + "]");
        req.set(http::field::user_agent, "kvsteer-replay");
        req.set(http::field::connection, "close");
        beast::flat_buffer buf;
        http::response_parser<http::string_body> p;
        p.body_limit(64 << 20);
        beast::error_code failed;
        const char *stage = "connect";
        stream.expires_after(std::chrono::milliseconds(int64_t(timeout_s * 1000)));
        stream.async_connect(results, [&](beast::error_code ec, const tcp::endpoint &) {
            if (ec) return void(failed = ec);
            stage = "write";
            http::async_write(stream, req, [&](beast::error_code ec2, std::size_t) {
                if (ec2) return void(failed = ec2);
                stage = "read";
                http::async_read(stream, buf, p, [&](beast::error_code ec3, std::size_t) {
                    if (ec3) failed = ec3;
                });
            });
        });
        io.run();
        if (failed) {
            char limit[32];
            std::snprintf(limit, sizeof limit, "%.1f", timeout_s);
            err = std::string(stage) + ": " +
                  (failed == beast::error::timeout ? "no answer within " + std::string(limit) + " s"
                                                   : failed.message());
            return std::nullopt;
        }
        beast::error_code ec;
        stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        if (p.get().result_int() != 200) {
            err = "HTTP " + std::to_string(p.get().result_int());
            return std::nullopt;
        }
        return p.release().body();
    } catch (const std::exception &e) {
        err = e.what();
        return std::nullopt;
    }
}

}  // namespace kvsteer::replay
