// Health checks and metric scrapes on Boost.Beast: one io_context per call, every request in
// flight at once on it, one steady_timer for the shared deadline.
#include "kvsteer/control/http_client.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>

namespace kvsteer::control {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A response head (status line + headers) larger than this is refused.
constexpr std::uint32_t kMaxHead = 64 * 1024;

using Parser = http::response_parser<http::string_body>;

void limit(Parser &p, std::optional<std::size_t> max_body) {
    p.header_limit(kMaxHead);
    p.body_limit(max_body ? *max_body : std::numeric_limits<std::uint64_t>::max());
}

std::string too_large(std::size_t max_body) {
    return "response larger than " + std::to_string(max_body) + " bytes";
}

// The parser's error as one line for HttpResult::error.
std::string read_error(const beast::error_code &ec, std::size_t max_body) {
    if (ec == http::error::body_limit) return too_large(max_body);
    if (ec == http::error::header_limit) return "response head too long";
    if (ec == http::error::buffer_overflow)
        return "bad response: a chunk's size line, extension or trailer too long";
    if (ec == http::error::end_of_stream) return "connection closed before the response head";
    if (ec == http::error::partial_message)
        return "connection closed before the end of the response";
    if (ec.category() == http::make_error_code(http::error::bad_version).category() ||
        ec == http::error::bad_alloc)
        return "bad response: " + ec.message();
    return "recv: " + ec.message();
}

// An interim response (100 Continue, 102, 103 Early Hints): its head only, the final one
// follows on the connection. 101 Switching Protocols ends HTTP: taken as final.
bool interim(const Parser &p) {
    const unsigned st = p.get().result_int();
    return st >= 100 && st < 200 && st != 101;
}
// Interim responses before the final one beyond which the response is refused.
constexpr unsigned kMaxInterim = 8;
std::string too_many_interim() {
    return "bad response: more than " + std::to_string(kMaxInterim) + " interim (1xx) responses";
}

void take(Parser &p, HttpResult *r) {
    auto &msg = p.get();
    r->ok = true;
    r->status = static_cast<int>(msg.result_int());
    r->body = std::move(msg.body());
    r->error.clear();
}

tcp::endpoint to_asio(const Endpoint &ep, std::string *err) {
    const std::uint16_t port = ep.port();
    if (ep.family == KVS_AF_INET) {
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), ep.addr.data(), 4);
        return {asio::ip::address_v4(b), port};
    }
    if (ep.family == KVS_AF_INET6) {
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), ep.addr.data(), 16);
        return {asio::ip::address_v6(b), port};
    }
    *err = "no address";
    return {};
}

// One GET: connect, write, read the head, then the body; each step's failure ends it with a
// reason. The body limit is checked here against Content-Length before any of the body is read
// (Boost 1.74's parser does not enforce it for a Content-Length response, and its string body
// reserves the declared length up front), and against the bytes read for a body that runs to EOF;
// Beast enforces it for chunked bodies.
struct Fetch {
    Fetch(asio::io_context &io, HttpResult *r, std::size_t max_body, std::size_t *pending,
          asio::steady_timer *timer)
        : sock(io), res(r), max_body(max_body), pending(pending), timer(timer) {
        fresh_parser();
    }

    tcp::socket sock;
    http::request<http::string_body> req;
    // Bounded: what the parser has not consumed yet (the head, within kMaxHead; a chunk's size
    // line, extension or trailer) never exceeds it. Unbounded, a backend that sent an endless
    // chunk extension grew it by hundreds of MB within one scrape's deadline.
    beast::flat_buffer buf{2 * kMaxHead};
    std::optional<Parser> parser;  // one per response: an interim one's is replaced
    unsigned interims = 0;
    HttpResult *res;
    std::size_t max_body;
    std::size_t *pending;
    asio::steady_timer *timer;
    bool connected = false, done = false;

    void finish(std::string error = {}) {
        if (done) return;
        done = true;
        if (!error.empty()) res->error = std::move(error);
        beast::error_code ignored;
        sock.close(ignored);
        if (--*pending == 0) timer->cancel();
    }

    // Runs a completion handler's work unless the request already ended (deadline); an exception
    // (allocation) ends this request only.
    template <typename F>
    void step(F &&f) {
        if (done) return;
        try {
            f();
        } catch (const std::exception &e) {
            finish(std::string("internal error: ") + e.what());
        }
    }

    void start(const tcp::endpoint &ep) {
        sock.async_connect(ep,
                           [this](const beast::error_code &ec) { step([&] { on_connect(ec); }); });
    }

    void on_connect(const beast::error_code &ec) {
        // asio opens the socket in async_connect: its errno arrives here too.
        if (ec && ec.category() == boost::system::system_category() &&
            local_resource_error(ec.value()))
            res->local = true;
        if (ec) return finish("connect: " + ec.message());
        connected = true;
        http::async_write(sock, req, [this](const beast::error_code &ec, std::size_t) {
            step([&] { on_write(ec); });
        });
    }

    void fresh_parser() {
        parser.emplace();
        limit(*parser, max_body);
    }

    void on_write(const beast::error_code &ec) {
        if (ec) return finish("send: " + ec.message());
        read_header();
    }

    void read_header() {
        http::async_read_header(
            sock, buf, *parser,
            [this](const beast::error_code &ec, std::size_t) { step([&] { on_header(ec); }); });
    }

    void on_header(const beast::error_code &ec) {
        if (ec) return finish(read_error(ec, max_body));
        if (interim(*parser)) {
            if (++interims > kMaxInterim) return finish(too_many_interim());
            fresh_parser();
            return read_header();
        }
        if (auto cl = parser->content_length(); cl && *cl > max_body)
            return finish(too_large(max_body));
        read_body();
    }

    void read_body() {
        if (parser->is_done()) {
            take(*parser, res);
            return finish();
        }
        http::async_read_some(sock, buf, *parser, [this](const beast::error_code &ec, std::size_t) {
            step([&] { on_body(ec); });
        });
    }

    void on_body(const beast::error_code &ec) {
        if (ec) return finish(read_error(ec, max_body));
        if (parser->get().body().size() > max_body) return finish(too_large(max_body));
        read_body();
    }
};

}  // namespace

HttpResult parse_http_response(const std::string &raw, bool eof) {
    HttpResult r;
    std::optional<Parser> p;
    beast::error_code ec;
    std::size_t used = 0;
    // Feeds what is left of `raw`; false (with r.error) on a parse error.
    auto feed = [&](bool until_done) {
        while ((until_done ? !p->is_done() : !p->is_header_done()) && used < raw.size()) {
            const std::size_t n = p->put(asio::buffer(raw.data() + used, raw.size() - used), ec);
            if (ec == http::error::need_more) return true;
            if (ec) {
                r.error = read_error(ec, 0);
                return false;
            }
            used += n;
            if (n == 0) break;
        }
        return true;
    };
    for (unsigned interims = 0;; ++interims) {
        if (interims > kMaxInterim) {
            r.error = too_many_interim();
            return r;
        }
        p.emplace();
        limit(*p, std::nullopt);
        if (!feed(false)) return r;
        if (!p->is_header_done()) {
            r.error = eof ? "connection closed before the response head" : "incomplete response";
            return r;
        }
        if (!interim(*p)) break;
    }
    // A declared length beyond what is here is not reserved: the body cannot be complete.
    if (auto cl = p->content_length(); cl && *cl > raw.size() - used) {
        r.error = eof ? "connection closed before the end of the response" : "incomplete response";
        return r;
    }
    p->eager(true);
    if (!feed(true)) return r;
    if (!p->is_done()) {
        if (!eof) {
            r.error = "incomplete response";
            return r;
        }
        p->put_eof(ec);
        if (ec) {
            r.error = read_error(ec, 0);
            return r;
        }
    }
    take(*p, &r);
    return r;
}

bool local_resource_error(int e) {
    return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

std::uint64_t raise_nofile_limit(std::string *err) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        *err = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
        return 0;
    }
    rlim_t want = rl.rlim_max;
    if (want == RLIM_INFINITY) {
        // The kernel refuses an unlimited soft limit for files: its own ceiling (fs.nr_open).
        std::ifstream f("/proc/sys/fs/nr_open");
        unsigned long long nr_open = 0;
        want = f >> nr_open && nr_open ? static_cast<rlim_t>(nr_open) : rlim_t{1u << 20};
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want) return rl.rlim_cur;
    const rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        *err = "setrlimit(RLIMIT_NOFILE, " + std::to_string(want) + "): " + std::strerror(errno);
        return was;
    }
    return want;
}

std::vector<HttpResult> http_get_many(const std::vector<HttpRequest> &reqs,
                                      std::chrono::milliseconds timeout, std::size_t max_body) {
    std::vector<HttpResult> res(reqs.size());
    // The io_context and its timer take descriptors of their own (epoll, eventfd, timerfd): out of
    // them asio throws, and the prober thread must not die of it. Every request then failed here,
    // not at the backend.
    std::optional<asio::io_context> io_ctx;
    std::optional<asio::steady_timer> deadline;
    try {
        io_ctx.emplace(1);
        deadline.emplace(*io_ctx, std::chrono::steady_clock::now() + timeout);
    } catch (const std::exception &e) {
        for (auto &r : res) {
            r.error = std::string("no I/O context: ") + e.what();
            r.local = true;
        }
        return res;
    }
    asio::io_context &io = *io_ctx;
    asio::steady_timer &timer = *deadline;
    std::size_t pending = 0;
    std::vector<std::unique_ptr<Fetch>> fetches;
    fetches.reserve(reqs.size());
    for (std::size_t i = 0; i < reqs.size(); i++) {
        std::string err;
        const auto ep = to_asio(reqs[i].ep, &err);
        if (!err.empty()) {
            res[i].error = err;
            continue;
        }
        pending++;
        auto &f =
            *fetches.emplace_back(std::make_unique<Fetch>(io, &res[i], max_body, &pending, &timer));
        f.req.method(reqs[i].post ? http::verb::post : http::verb::get);
        f.req.target(reqs[i].path);
        f.req.version(11);
        f.req.set(http::field::host, reqs[i].ep.str());
        f.req.set(http::field::user_agent, "kvsteerd");
        f.req.set(http::field::accept, reqs[i].post ? "application/json" : "text/plain");
        f.req.set(http::field::connection, "close");
        if (reqs[i].post) {
            f.req.set(http::field::content_type, "application/json");
            f.req.body() = reqs[i].body;
            f.req.prepare_payload();
        }
        f.start(ep);
    }
    if (!pending) return res;
    timer.async_wait([&](const beast::error_code &ec) {
        if (ec) return;  // cancelled: every request finished first
        for (auto &f : fetches)
            if (!f->done)
                f->finish(f->connected ? "timeout reading the response" : "connect timeout");
    });
    io.run();
    return res;
}

}  // namespace kvsteer::control
