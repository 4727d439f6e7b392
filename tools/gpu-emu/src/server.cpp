#include "server.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <array>
#include <charconv>
#include <cmath>
#include <ctime>
#include <deque>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "kvsteer/model/block_hash.h"
#include "kvsteer/model/sha256.h"
#ifdef KVS_EMU_KV_EVENTS
#include "kv_events.h"
#endif

namespace kvsteer::emu {

#ifndef KVS_EMU_KV_EVENTS
// Built without libzmq/msgpack-c: no publisher is ever made, but ~Server destroys the (always
// null) pointer and needs a complete type.
class KvEventPublisher {};
#endif

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// A request head (request line + fields) larger than this gets a 400.
constexpr uint32_t kMaxHead = 64 * 1024;
// Largest x-kvsteer-echo-bytes honoured: a non-streaming response is built in memory whole.
constexpr uint64_t kMaxEchoBytes = 1ull << 30;

double wall_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

using Headers = std::vector<std::pair<std::string, std::string>>;
using Whole = http::response<http::string_body>;

// A streaming response's head; Beast's serializer refers to the message, so the two live
// together at a fixed address.
struct StreamHead {
    http::response<http::empty_body> msg;
    http::response_serializer<http::empty_body> sr{msg};
};
// `unframed`: the response goes to an HTTP/1.0 client (no chunked coding; the close ends it). Kept
// with each queued piece: a request read while an earlier response is still being written (a
// pipelined one) must not change that response's framing.
struct LastChunk {
    bool unframed = false;
};
// A streaming response's body, rendered a piece at a time as the writer reaches it and the
// model has produced the piece's tokens (nothing more of it is in memory: a slow reader of a
// long stream holds one piece, not the whole response).
struct StreamBody {
    StreamBody(StreamRender r, bool u) : render(std::move(r)), unframed(u) {}
    StreamRender render;
    bool unframed;        // as LastChunk's
    uint32_t tokens = 0;  // output tokens produced so far (all, once the request finished)
    std::string piece;    // the chunk being written
};
// What a session writes, in order: whole responses (and 100 Continue), or a streaming
// response's head, its body (chunks) and its last chunk, each framed by Beast.
using Out =
    std::variant<Whole, std::unique_ptr<StreamHead>, std::shared_ptr<StreamBody>, LastChunk>;

template <class... F>
struct Overload : F... {
    using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;

}  // namespace

// One client connection: Beast reads one request at a time (header and body limits enforced
// by its parser); responses are written from a queue (whole, or a chunked SSE stream); then it
// reads the next (keep-alive; pipelined requests wait in the read buffer) or closes.
class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(Server &srv, tcp::socket sock)
        : srv_(srv),
          sock_(std::move(sock)),
          idle_(sock_.get_executor()),
          request_timer_(sock_.get_executor()) {}

    void start() { read_header(); }

    // Called by the server as the model produces tokens for the active request.
    void on_tokens(uint32_t tokens_out) {
        if (!body_) return;
        body_->tokens = tokens_out;
        if (!writing_) write_next();
    }

    void on_finished() {
        active_ = 0;
        if (stream_) {
            const bool unframed = body_ ? body_->unframed : unframed_;  // the stream's own
            if (body_) body_->tokens = UINT32_MAX;
            body_.reset();
            queue(LastChunk{unframed});
        } else if (full_) {
            queue(std::move(*full_));
            full_.reset();
        }
        response_done();
    }

   private:
    void read_header() {
        arm_idle();
        head_only_ = false;  // an error answer before handle() is no HEAD's (it lost its body)
        // Empty lines before a request line are ignored (RFC 9112 2.2: a stray CRLF after a
        // body got a 400 and a closed connection); those already read, not later ones.
        std::size_t blank = 0;
        const auto *p = static_cast<const char *>(buf_.data().data());
        while (blank < buf_.size() && (p[blank] == '\r' || p[blank] == '\n')) blank++;
        buf_.consume(blank);
        reading_ = true;
        in_body_ = false;
        ++request_gen_;
        arm_request_deadline(false);
        parser_.emplace();
        parser_->body_limit(srv_.config().max_body_bytes);
        parser_->header_limit(kMaxHead);
        http::async_read_header(
            sock_, buf_, *parser_,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
    }

    // uvicorn's timeout_keep_alive: a kept-alive connection with no request for that long is
    // closed (FIN) by the server; a request crossing that FIN is the client's to retry.
    void arm_idle() {
        const uint64_t ms = srv_.config().keep_alive_timeout_ms;
        if (!ms) return;
        idle_.expires_after(std::chrono::milliseconds(ms));
        idle_.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->closed_ || self->active_ || self->buf_.size() > 0) return;
            // Still writing the last response: idle from when it is written (it returned here,
            // and the connection was never closed).
            if (!self->outq_.empty()) return self->arm_idle();
            self->close();
        });
    }

    // A request being received (bytes of it read, or its head) at two ticks of this timer in a
    // row, --request-timeout-ms apart, closes the connection: a request gets at least that long,
    // at most twice it (each stalled upload held its connection and up to --max-body-bytes for
    // good). Between requests the timer ticks on (the keep-alive timeout, when set, closes an
    // idle connection). A tick of an earlier request's timer is ignored (request_gen_).
    void arm_request_deadline(bool seen_partial) {
        const uint64_t ms = srv_.config().request_timeout_ms;
        if (!ms) return;
        request_timer_.expires_after(std::chrono::milliseconds(ms));
        request_timer_.async_wait([self = shared_from_this(), gen = request_gen_,
                                   seen_partial](beast::error_code ec) {
            if (ec || self->closed_ || !self->reading_ || gen != self->request_gen_) return;
            const bool partial = self->in_body_ || self->buf_.size() > 0;
            if (partial && seen_partial) {
                spdlog::warn("[{}] a request not received whole within {} ms: closed",
                             self->srv_.config().server_id, self->srv_.config().request_timeout_ms);
                self->keep_alive_ = false;
                return self->close();
            }
            self->arm_request_deadline(partial);
        });
    }

    void on_header(beast::error_code ec) {
        idle_.cancel();
        if (ec) return on_read_error(ec);
        in_body_ = true;
        if (beast::iequals(parser_->get()[http::field::expect], "100-continue"))
            queue(Whole{http::status::continue_, 11});
        http::async_read(sock_, buf_, *parser_,
                         [self = shared_from_this()](beast::error_code ec2, size_t) {
                             self->reading_ = false;
                             self->request_timer_.cancel();
                             if (ec2) return self->on_read_error(ec2);
                             self->handle_safely(self->parser_->release());
                         });
    }

    // A failure while answering (an allocation) gets uvicorn's 500 and a closed connection;
    // the server keeps serving the others.
    void handle_safely(http::request<http::string_body> req) {
        try {
            handle(std::move(req));
        } catch (const std::exception &e) {
            spdlog::error("[{}] request failed: {}", srv_.config().server_id, e.what());
            if (active_) {
                const uint64_t id = active_;
                active_ = 0;
                srv_.abort(id);
            }
            full_.reset();
            keep_alive_ = false;
            if (body_) {  // a stream's head is queued: no answer can follow it, only a close
                body_.reset();
                return close();
            }
            send_plain(500, "text/plain; charset=utf-8", "Internal Server Error", {});
        }
    }

    void on_read_error(beast::error_code ec) {
        keep_alive_ = false;
        if (ec == http::error::end_of_stream || ec == asio::error::eof) {
            // The client is done sending: finish writing what is queued, then close.
            close_when_drained_ = true;
            if (!writing_) graceful_close();
            return;
        }
        if (ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
            return close();
        if (ec == http::error::body_limit)
            send_plain(413, "application/json", R"({"detail":"Request body too large"})", {});
        else  // what uvicorn answers to anything h11 cannot parse
            send_plain(400, "text/plain; charset=utf-8", "Invalid HTTP request received.", {});
    }

    // A response head as uvicorn writes it: lower-case names in its order, then ours.
    template <class Body>
    void fill_head(http::response<Body> &res, int status, beast::string_view ctype,
                   const Headers &extra, std::optional<size_t> content_length) {
        res.version(11);
        res.result(unsigned(status));
        res.insert("date", srv_.date_header());
        res.insert("server", "uvicorn");
        if (content_length) res.insert("content-length", std::to_string(*content_length));
        if (!ctype.empty()) res.insert("content-type", ctype);
        // A stream to an HTTP/1.0 client is not chunked (1.0 has no chunked coding): its body
        // ends when the connection closes, as h11 (uvicorn's HTTP layer) writes it.
        if (!content_length && !unframed_) res.insert("transfer-encoding", "chunked");
        res.insert("x-kvsteer-backend", srv_.config().server_id);
        for (const auto &[k, v] : extra) res.insert(k, v);
        if (!keep_alive_) res.insert("connection", "close");
    }

    Whole whole(int status, beast::string_view ctype, std::string body, const Headers &extra) {
        Whole res;
        fill_head(res, status, ctype, extra, body.size());
        res.body() = std::move(body);
        return res;
    }

    void send_plain(int status, beast::string_view ctype, std::string body, const Headers &extra) {
        Whole res = whole(status, ctype, std::move(body), extra);
        // HEAD: the head a GET would get, its Content-Length included, and no body (as
        // Starlette answers HEAD on every GET route).
        if (head_only_) res.body().clear();
        queue(std::move(res));
        response_done();
    }

    void send_error(const ApiError &e, const Headers &extra) {
        send_plain(e.status, "application/json", error_body(e), extra);
    }

    void handle(http::request<http::string_body> req) {
        // HTTP/1.0 closes after each response, as the README says (a 1.0 "connection:
        // keep-alive" kept it open without saying so).
        keep_alive_ = req.keep_alive() && req.version() >= 11;
        unframed_ = req.version() < 11;
        std::string_view target(req.target().data(), req.target().size());
        if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
        head_only_ = req.method() == http::verb::head;
        const bool is_get = req.method() == http::verb::get || head_only_;
        const bool is_post = req.method() == http::verb::post;
        const std::string &body = req.body();
        const Headers digest = {{"x-body-sha256", model::sha256_hex(body)},
                                {"x-body-bytes", std::to_string(body.size())}};
        auto not_allowed = [&](const char *allow) {
            send_plain(405, "application/json", R"({"detail":"Method Not Allowed"})",
                       {{"allow", allow}});
        };

        if (target == "/health") {
            if (!is_get) return not_allowed("GET");
            return send_plain(200, "", "", {});
        }
        if (target == "/metrics") {
            if (!is_get) return not_allowed("GET");
            return send_plain(200, "text/plain; version=0.0.4; charset=utf-8", srv_.metrics_text(),
                              {});
        }
        if (target == "/v1/models") {
            if (!is_get) return not_allowed("GET");
            return send_plain(200, "application/json", models_json(), {});
        }
        Api api;
        if (target == "/v1/completions")
            api = Api::Completions;
        else if (target == "/v1/chat/completions")
            api = Api::Chat;
        else
            return send_plain(404, "application/json", R"({"detail":"Not Found"})", {});
        if (!is_post) return not_allowed("POST");

        auto parsed = parse_request(api, body, srv_.config().api);
        if (auto *err = std::get_if<ApiError>(&parsed)) return send_error(*err, digest);
        const ParsedRequest &pr = std::get<ParsedRequest>(parsed);

        uint64_t pad = srv_.config().echo_bytes;
        if (auto h = req.find("x-kvsteer-echo-bytes"); h != req.end()) {
            const auto v = h->value();
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), pad);
            if (ec != std::errc() || end != v.data() + v.size())
                return send_error({400, "BadRequestError", "x-kvsteer-echo-bytes must be a number"},
                                  digest);
            if (pad > kMaxEchoBytes)
                return send_error(
                    {400, "BadRequestError",
                     fmt::format("x-kvsteer-echo-bytes must be at most {}", kMaxEchoBytes)},
                    digest);
        }
        ResponseCtx ctx{api,
                        srv_.next_response_id(api),
                        int64_t(wall_now()),
                        pr.model,
                        pr.prompt_tokens,
                        pr.max_tokens,
                        pr.include_usage};
        stream_ = pr.stream;
        model::Sha256 rsha;
        std::string full;
        if (stream_) {
            // Rendered once here for the digest (a piece at a time), again as it is written.
            StreamRender r(ctx, srv_.config().stream_chunk_tokens, pad);
            while (!r.done()) rsha.update(r.next());
        } else {
            full = full_response(ctx, pad);
            rsha.update(full);
        }
        auto extra = digest;
        extra.emplace_back("x-response-sha256", rsha.hex());
        extra.emplace_back("x-request-id", ctx.id);

        auto sub = srv_.submit(shared_from_this(), pr, stream_);
        if (!sub.ok) return send_error({400, "BadRequestError", sub.error}, digest);
        active_ = sub.id;
        // Streaming: headers go out now (as uvicorn's StreamingResponse does); TTFT is the
        // first data chunk. Non-streaming: everything at completion.
        if (stream_) {
            auto head = std::make_unique<StreamHead>();
            fill_head(head->msg, 200, "text/event-stream; charset=utf-8", extra, std::nullopt);
            queue(std::move(head));
            body_ = std::make_shared<StreamBody>(
                StreamRender(ctx, srv_.config().stream_chunk_tokens, pad), unframed_);
            queue(body_);
        } else {
            full_ = whole(200, "application/json", std::move(full), extra);
        }
    }

    std::string models_json() {
        nlohmann::json data = nlohmann::json::array();
        for (const auto &m : srv_.config().api.models)
            data.push_back({{"id", m},
                            {"object", "model"},
                            {"created", int64_t(wall_now())},
                            {"owned_by", "vllm"},
                            {"root", m},
                            {"parent", nullptr},
                            {"max_model_len", srv_.config().api.max_model_len},
                            {"permission", nlohmann::json::array()}});
        return nlohmann::json{{"object", "list"}, {"data", data}}.dump();
    }

    void queue(Out out) {
        if (closed_) return;
        outq_.push_back(std::move(out));
        if (!writing_) write_next();
    }

    void write_next() {
        // A streaming body stays in front until its last piece is written; with no piece ready
        // (its tokens not produced yet) the writer waits for on_tokens.
        while (!outq_.empty()) {
            auto *sb = std::get_if<std::shared_ptr<StreamBody>>(&outq_.front());
            if (!sb) break;
            StreamBody &b = **sb;
            if (b.render.done()) {
                outq_.pop_front();
                continue;
            }
            if (b.render.next_tokens_out() > b.tokens) {
                writing_ = false;
                return;
            }
            try {
                b.piece = b.render.next();
            } catch (const std::exception &e) {  // (an allocation): this connection only
                spdlog::error("[{}] rendering a stream failed: {}", srv_.config().server_id,
                              e.what());
                return on_write_error();  // nothing is being written: the queue can go
            }
            writing_ = true;
            auto next = [self = shared_from_this()](beast::error_code ec, size_t) {
                if (ec) return self->on_write_error();
                self->write_next();
            };
            if (b.unframed)
                asio::async_write(sock_, asio::buffer(b.piece), std::move(next));
            else
                asio::async_write(sock_, http::make_chunk(asio::buffer(b.piece)), std::move(next));
            return;
        }
        if (outq_.empty()) {
            writing_ = false;
            if (close_when_drained_) graceful_close();
            return;
        }
        writing_ = true;
        auto done = [self = shared_from_this()](beast::error_code ec, size_t) {
            if (ec) return self->on_write_error();
            self->outq_.pop_front();
            self->write_next();
        };
        std::visit(Overload{[&](Whole &m) { http::async_write(sock_, m, std::move(done)); },
                            [&](std::unique_ptr<StreamHead> &h) {
                                http::async_write_header(sock_, h->sr, std::move(done));
                            },
                            [&](std::shared_ptr<StreamBody> &) {},  // handled above
                            [&](LastChunk &l) {
                                if (l.unframed)  // the close ends the body
                                    asio::post(sock_.get_executor(),
                                               [d = std::move(done)]() mutable { d({}, 0); });
                                else
                                    asio::async_write(sock_, http::make_chunk_last(),
                                                      std::move(done));
                            }},
                   outq_.front());
    }

    void on_write_error() {
        writing_ = false;
        outq_.clear();
        body_.reset();
        if (active_) {
            const uint64_t id = active_;
            active_ = 0;
            srv_.abort(id);  // the client went away: free its batch slot and blocks
        }
        close();
    }

    void response_done() {
        if (!keep_alive_) {
            close_when_drained_ = true;
            if (!writing_) graceful_close();
            return;
        }
        read_header();
    }

    // The last response written and nothing more to answer: FIN first, then whatever the client
    // still sends is read and dropped until its FIN (2 s at most), then the close. A close with
    // unread bytes in the socket sends RST, which throws away what of the response the kernel
    // has not sent yet and ends the client's read with a reset (an HTTP/1.0 stream ends only
    // with the close; seen with a client that sent more after its request).
    void graceful_close() {
        if (closed_ || lingering_) return;
        lingering_ = true;
        request_timer_.cancel();
        beast::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_send, ec);
        if (ec) return close();
        idle_.expires_after(std::chrono::seconds(2));
        idle_.async_wait([self = shared_from_this()](beast::error_code e) {
            if (!e) self->close();
        });
        drain_input();
    }

    void drain_input() {
        sock_.async_read_some(asio::buffer(scratch_),
                              [self = shared_from_this()](beast::error_code ec, size_t) {
                                  if (ec || self->closed_) return self->close();
                                  self->drain_input();
                              });
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        idle_.cancel();  // their handlers hold the session
        request_timer_.cancel();
        beast::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_send, ec);
        sock_.close(ec);
    }

    Server &srv_;
    tcp::socket sock_;
    asio::steady_timer idle_;
    asio::steady_timer request_timer_;  // arm_request_deadline
    bool reading_ = false, in_body_ = false;
    uint64_t request_gen_ = 0;  // requests read on this connection (arm_request_deadline)
    // Bounded: Beast 1.74 reads a chunk-size line or the trailers whole before any limit
    // applies, and an endless one grew an unbounded buffer (body bytes move into the body as
    // they are parsed: a head and one read are all it ever needs).
    beast::flat_buffer buf_{kMaxHead + 64 * 1024};
    std::optional<http::request_parser<http::string_body>> parser_;
    std::deque<Out> outq_;
    bool writing_ = false, closed_ = false, close_when_drained_ = false, keep_alive_ = true;
    bool head_only_ = false;  // the request being answered is a HEAD
    bool lingering_ = false;  // graceful_close: the FIN sent, the client's bytes read and dropped
    std::array<char, 4096> scratch_{};
    bool unframed_ = false;  // ... is HTTP/1.0: a stream's body is not chunked, the close ends it
    bool stream_ = false;
    uint64_t active_ = 0;
    std::shared_ptr<StreamBody> body_;  // the active request's streaming body, being written
    std::optional<Whole> full_;         // a non-streaming response, sent when the model finishes
};

Server::Server(asio::io_context &io, EmuConfig cfg)
    : io_(io),
      cfg_(std::move(cfg)),
      acceptor_(io),
      timer_(io),
      t0_(std::chrono::steady_clock::now()),
      sched_(cfg_.sched, cfg_.cache, cfg_.cost),
      ttft_(ttft_buckets()),
      e2e_(latency_buckets()),
      queue_(latency_buckets()) {
    if (cfg_.time_scale <= 0) cfg_.time_scale = 1.0;
    if (!cfg_.log_requests.empty()) {
        log_ = std::fopen(cfg_.log_requests.c_str(), "a");
        if (!log_) throw std::runtime_error("cannot open request log " + cfg_.log_requests);
    }
    if (!cfg_.kv_events_endpoint.empty()) {
#ifdef KVS_EMU_KV_EVENTS
        kv_ = std::make_unique<KvEventPublisher>(cfg_.kv_events_endpoint, cfg_.kv_events_topic,
                                                 cfg_.cache.block_tokens);
        sched_.cache().record_events(true);
#else
        throw std::runtime_error("built without libzmq/msgpack: --kv-events-endpoint unavailable");
#endif
    }
}

std::string Server::kv_events_endpoint() const {
#ifdef KVS_EMU_KV_EVENTS
    if (kv_) return kv_->endpoint();
#endif
    return {};
}

void Server::flush_kv_events() {
#ifdef KVS_EMU_KV_EVENTS
    if (kv_) kv_->publish(sched_.cache().take_events(), wall_now());
#endif
}

Server::~Server() {  // out of line: KvEventPublisher is incomplete in the header
    if (log_) std::fclose(log_);
}

void Server::start() {
    beast::error_code ec;
    const auto addr = asio::ip::make_address(cfg_.host, ec);
    if (ec) throw std::runtime_error("bad --host '" + cfg_.host + "': " + ec.message());
    tcp::endpoint ep(addr, cfg_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    // "::" takes both families (IPv4 clients as mapped addresses), whatever the host's default.
    if (!ec && addr.is_v6()) acceptor_.set_option(asio::ip::v6_only(false), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        throw std::runtime_error(
            fmt::format("cannot listen on {}:{}: {}", cfg_.host, cfg_.port, ec.message()));
    do_accept();
}

uint16_t Server::port() const {
    return acceptor_.local_endpoint().port();
}

void Server::do_accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket sock) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
            beast::error_code ig;
            sock.set_option(tcp::no_delay(true), ig);
            std::make_shared<Session>(*this, std::move(sock))->start();
        } else {
            // Out of descriptors (or similar): retrying at once would spin; back off a little.
            spdlog::warn("[{}] accept: {}", cfg_.server_id, ec.message());
            auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
            t->async_wait([this, t](beast::error_code) { do_accept(); });
            return;
        }
        do_accept();
    });
}

double Server::model_now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count() *
           cfg_.time_scale;
}

std::string Server::next_response_id(Api api) {
    const uint64_t n = ++resp_counter_;
    const uint64_t h = XXH3_64bits_withSeed(cfg_.server_id.data(), cfg_.server_id.size(), n);
    return fmt::format("{}-{:016x}{:016x}", api == Api::Chat ? "chatcmpl" : "cmpl", h, n);
}

std::string Server::date_header() {
    const std::time_t now = std::time(nullptr);
    if (now != date_sec_) {
        char buf[64];
        std::tm tm{};
        gmtime_r(&now, &tm);
        std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        date_str_ = buf;
        date_sec_ = now;
    }
    return date_str_;
}

Server::Submitted Server::submit(std::shared_ptr<Session> s, const ParsedRequest &req,
                                 bool stream) {
    const double now = model_now();
    const auto &geo = cfg_.cache;
    model::RequestSpec spec;
    spec.id = next_id_++;
    spec.prompt_tokens = req.prompt_tokens;
    spec.block_hashes = model::chain_block_hashes(
        req.prompt_bytes, uint64_t(geo.block_tokens) * cfg_.api.bytes_per_token);
    spec.max_tokens = req.max_tokens;

    Pending p;
    p.session = std::move(s);
    p.api = req.api;
    p.model = req.model;
    p.arrival = now;
    p.wall_arrival = wall_now();
    p.prompt_bytes = req.prompt_bytes.size();
    p.prompt_tokens = req.prompt_tokens;
    p.prompt_digest = XXH3_64bits(req.prompt_bytes.data(), req.prompt_bytes.size());
    p.first_block = spec.block_hashes.empty() ? 0 : spec.block_hashes.front();
    p.max_tokens = req.max_tokens;
    p.stream = stream;
    const uint64_t id = spec.id;

    events_.clear();
    const auto r = sched_.submit(std::move(spec), now, events_);
    if (r != model::SubmitResult::Accepted) {
        dispatch(events_);
        rearm();
        return {0, false,
                fmt::format("The request needs {} tokens of KV cache; this server holds {}.",
                            req.prompt_tokens + req.max_tokens, cfg_.cache.capacity_tokens)};
    }
    pending_.emplace(id, std::move(p));
    dispatch(events_);
    flush_kv_events();
    rearm();
    return {id, true, {}};
}

void Server::abort(uint64_t id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    events_.clear();
    const double now = model_now();
    sched_.abort(id, now, events_);
    ++aborted_;
    log_request(it->second, id, now, "aborted");
    pending_.erase(it);
    dispatch(events_);
    flush_kv_events();
    rearm();
}

void Server::run_model() {
    events_.clear();
    sched_.advance(model_now(), events_);
    dispatch(events_);
    flush_kv_events();
    rearm();
}

void Server::dispatch(std::vector<model::Event> &evs) {
    // Sessions may re-enter submit() only from their own read handlers, never from here, so
    // iterating a local copy is enough.
    std::vector<model::Event> local;
    local.swap(evs);
    for (const auto &ev : local) {
        auto it = pending_.find(ev.id);
        if (it == pending_.end()) continue;
        Pending &p = it->second;
        switch (ev.type) {
            case model::EventType::Admitted:
                p.admitted = ev.time;
                p.cached = ev.cached_tokens;
                queue_.observe(ev.time - p.arrival);
                break;
            case model::EventType::FirstToken:
                p.first_token = ev.time;
                ttft_.observe(ev.time - p.arrival);
                prompt_tokens_ += p.prompt_tokens;
                ++gen_tokens_;
                p.session->on_tokens(ev.tokens_out);
                break;
            case model::EventType::Token:
                ++gen_tokens_;
                p.session->on_tokens(ev.tokens_out);
                break;
            case model::EventType::Finished: {
                e2e_.observe(ev.time - p.arrival);
                ++success_;
                log_request(p, ev.id, ev.time, "ok");
                auto session = std::move(p.session);
                pending_.erase(it);
                session->on_finished();
                break;
            }
        }
    }
}

void Server::rearm() {
    const auto next = sched_.next_event_time();
    if (!next) return;
    if (armed_at_ >= 0 && armed_at_ <= *next) return;  // already waking up early enough
    armed_at_ = *next;
    // Round up by a microsecond so the step is due when we wake (no early wake-up loop).
    const auto wake = t0_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(*next / cfg_.time_scale + 1e-6));
    timer_.expires_at(wake);
    timer_.async_wait([this](beast::error_code ec) {
        if (ec == asio::error::operation_aborted) return;
        armed_at_ = -1;
        run_model();
    });
}

void Server::log_request(const Pending &p, uint64_t id, double end, const char *status) {
    spdlog::debug("[{}] req {} {} prompt_tokens={} cached={} ttft={:.4f}s status={}",
                  cfg_.server_id, id, p.api == Api::Chat ? "chat" : "completions", p.prompt_tokens,
                  p.cached, p.first_token >= 0 ? p.first_token - p.arrival : -1.0, status);
    if (!log_) return;
    nlohmann::json j{{"ts", p.wall_arrival},
                     {"server", cfg_.server_id},
                     {"id", id},
                     {"api", p.api == Api::Chat ? "chat" : "completions"},
                     {"model", p.model},
                     {"prompt_xxh3", fmt::format("{:016x}", p.prompt_digest)},
                     {"first_block", fmt::format("{:016x}", p.first_block)},
                     {"prompt_bytes", p.prompt_bytes},
                     {"prompt_tokens", p.prompt_tokens},
                     {"cached_tokens", p.cached},
                     {"output_tokens", p.max_tokens},
                     {"stream", p.stream},
                     {"queue_s", p.admitted >= 0 ? p.admitted - p.arrival : -1.0},
                     {"ttft_s", p.first_token >= 0 ? p.first_token - p.arrival : -1.0},
                     {"e2e_s", end - p.arrival},
                     {"status", status}};
    const std::string line = j.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), log_);
    std::fflush(log_);
}

std::string Server::metrics_text() {
    // Bring the model up to now so gauges are current.
    run_model();
    const auto &c = sched_.cache();
    MetricsSnapshot s;
    s.model_name = cfg_.api.models.empty() ? "" : cfg_.api.models.front();
    s.server_id = cfg_.server_id;
    s.running = sched_.num_running();
    s.waiting = sched_.num_waiting();
    s.kv_usage = c.usage();
    s.prefix_queries = c.stats().queries_tokens;
    s.prefix_hits = c.stats().hits_tokens;
    s.prompt_tokens = prompt_tokens_;
    s.generation_tokens = gen_tokens_;
    s.success_length = success_;
    s.aborted = aborted_;
    s.evicted_blocks = c.stats().evicted_blocks;
    s.cache_blocks = c.total_blocks();
    s.block_tokens = c.config().block_tokens;
    s.ttft = &ttft_;
    s.e2e = &e2e_;
    s.queue = &queue_;
    return render_metrics(s);
}

}  // namespace kvsteer::emu
