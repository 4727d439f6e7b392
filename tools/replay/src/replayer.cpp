#include "replayer.h"

#include <fmt/format.h>

#include <sys/socket.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <array>
#include <cerrno>
#include <chrono>
#include <optional>
#include <functional>
#include <limits>
#include <cstdio>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "kvsteer/model/sha256.h"

namespace kvsteer::replay {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Replayer::Impl {
    struct Op;

    ReplayConfig cfg;
    std::vector<WorkItem> items;
    std::vector<Result> &results;
    asio::io_context io{1};
    asio::steady_timer dispatch_timer{io};
    asio::steady_timer progress_timer{io};
    Clock::time_point t0;
    size_t next_item = 0;        // next item to schedule
    std::deque<size_t> backlog;  // due but over the concurrency cap
    uint32_t inflight = 0;
    size_t done = 0, ok = 0, failed = 0, rr = 0;
    bool stopped_sending = false;
    std::vector<std::vector<std::unique_ptr<tcp::socket>>> idle;  // keep-alive pool per target

    Impl(ReplayConfig c, std::vector<WorkItem> it, std::vector<Result> &r)
        : cfg(std::move(c)), items(std::move(it)), results(r) {
        idle.resize(cfg.targets.size());
    }

    double now_s() const { return std::chrono::duration<double>(Clock::now() - t0).count(); }
    double sched_of(size_t i) const { return items[i].t_s / cfg.speed / cfg.time_scale; }

    void schedule_next();
    void launch(size_t i);
    void finished(Op &op);
    void progress();
    bool all_done() const {
        return inflight == 0 && backlog.empty() && (stopped_sending || next_item >= items.size());
    }
};

// One request: connect (or reuse), write, read the head, stream the body through the SSE
// scanner, record the result.
struct Replayer::Impl::Op : std::enable_shared_from_this<Op> {
    Impl &im;
    size_t idx;
    Result &res;
    size_t target;
    std::unique_ptr<tcp::socket> sock;
    asio::steady_timer timer;
    std::string head, body;
    std::string body_sha;
    beast::flat_buffer buf;
    std::optional<http::response_parser<http::string_body>> parser;
    std::function<size_t(uint64_t, beast::string_view, beast::error_code &)> on_chunk;
    Clock::time_point start;
    std::string line;  // partial SSE line
    model::Sha256 rsha;
    bool timed_out = false, finished = false, reused = false, skipping = false;
    bool retried = false;

    Op(Impl &i, size_t x, size_t tgt)
        : im(i), idx(x), res(i.results[x]), target(tgt), timer(i.io) {}

    void begin() {
        res.target = target;
        const WorkItem &w = im.items[idx];
        body = request_body(w, im.cfg.body);
        res.body_bytes = body.size();
        res.prompt_bytes = 0;
        for (const auto &s : w.segments) res.prompt_bytes += s.bytes;
        if (im.cfg.verify) body_sha = model::sha256_hex(body);
        // The clock starts at the connect, after the body is built and hashed (1-2.5 ms for a
        // large prompt were counted in TTFT and E2E, then multiplied by --time-scale).
        start = Clock::now();
        res.start_s = im.now_s();
        const char *path =
            im.cfg.body.api == ApiKind::Chat ? "/v1/chat/completions" : "/v1/completions";
        head = fmt::format(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kvsteer-replay\r\n"
            "Content-Type: application/json\r\nAccept: */*\r\n"
            "Content-Length: {}\r\nConnection: {}\r\n",
            path, im.cfg.targets[target].host, body.size(),
            im.cfg.keep_alive ? "keep-alive" : "close");
        for (const auto &[k, v] : im.cfg.headers) head += k + ": " + v + "\r\n";
        head += "\r\n";
        on_chunk = [this](uint64_t, beast::string_view data, beast::error_code &) {
            consume(std::string_view(data.data(), data.size()));
            return data.size();
        };
        fresh_parser();

        timer.expires_after(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(im.cfg.timeout_s)));
        timer.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->finished) return;
            self->timed_out = true;
            beast::error_code ig;
            if (self->sock) self->sock->close(ig);
        });

        auto &pool = im.idle[target];
        while (im.cfg.keep_alive && !pool.empty()) {
            sock = std::move(pool.back());
            pool.pop_back();
            // A pooled connection the server closed meanwhile (its idle timeout: uvicorn's 5 s)
            // has its FIN, or stray bytes, waiting: not reused (the request written into it
            // failed, counted as the server's). A FIN crossing the request stays possible.
            char probe;
            const ssize_t n = ::recv(sock->native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                reused = true;
                return write();
            }
            beast::error_code ig;
            sock->close(ig);
        }
        connect();
    }

    void fresh_parser() {
        parser.emplace();
        parser->body_limit(std::numeric_limits<uint64_t>::max());
        parser->on_chunk_body(on_chunk);
    }

    void connect() {
        sock = std::make_unique<tcp::socket>(im.io);
        sock->async_connect(im.cfg.targets[target].ep,
                            [self = shared_from_this()](beast::error_code ec) {
                                if (ec) return self->fail("connect: " + ec.message());
                                beast::error_code ig;
                                self->sock->set_option(tcp::no_delay(true), ig);
                                self->write();
                            });
    }

    void write() {
        std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
        asio::async_write(*sock, bufs, [self = shared_from_this()](beast::error_code ec, size_t) {
            if (ec) return self->fail("write: " + ec.message());
            http::async_read_header(*self->sock, self->buf, *self->parser,
                                    [self](beast::error_code ec2, size_t) { self->on_head(ec2); });
        });
    }

    void on_head(beast::error_code ec) {
        if (ec) return fail("read header: " + ec.message());
        const auto &m = parser->get();
        res.status = m.result_int();
        if (auto it = m.find("x-kvsteer-backend"); it != m.end())
            res.backend = std::string(it->value());
        if (im.cfg.verify)
            if (auto it = m.find("x-body-sha256"); it != m.end())
                res.body_sha_ok = it->value() == body_sha ? 1 : 0;
        http::async_read(
            *sock, buf, *parser,
            [self = shared_from_this()](beast::error_code ec2, size_t) { self->on_body(ec2); });
    }

    // Chunked body bytes: SSE events; the first data event is the first token.
    void consume(std::string_view data) {
        res.response_bytes += data.size();
        if (im.cfg.verify) rsha.update(data);
        size_t pos = 0;
        while (pos < data.size()) {
            const size_t nl = data.find('\n', pos);
            const std::string_view seg =
                data.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
            // SSE comment lines (": ...", the padding of large responses) are never buffered.
            if (line.empty() && !skipping && !seg.empty() && seg.front() == ':') skipping = true;
            if (!skipping) line.append(seg);
            if (nl == std::string_view::npos) break;
            pos = nl + 1;
            if (!skipping) on_line();
            line.clear();
            skipping = false;
        }
    }

    void on_line() {
        if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF-ended SSE lines
        if (line.compare(0, 5, "data:") != 0) return;
        std::string_view payload(line);
        payload.remove_prefix(5);
        while (!payload.empty() && payload.front() == ' ') payload.remove_prefix(1);
        if (payload == "[DONE]") return;
        if (res.sse_events++ == 0)
            res.ttft_s =
                std::chrono::duration<double>(Clock::now() - start).count() * im.cfg.time_scale;
        if (payload.find("\"usage\":{") != std::string_view::npos) read_usage(payload);
    }

    void read_usage(std::string_view js) {
        auto j = nlohmann::json::parse(js, nullptr, false);
        if (j.is_discarded() || !j.contains("usage") || !j["usage"].is_object()) return;
        const auto &u = j["usage"];
        if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
            res.usage_prompt = u["prompt_tokens"].get<int64_t>();
        if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
            res.usage_completion = u["completion_tokens"].get<int64_t>();
    }

    void on_body(beast::error_code ec) {
        if (ec) return fail("read body: " + ec.message());
        const auto &m = parser->get();
        if (!m.chunked()) {
            const std::string &b = m.body();
            res.response_bytes += b.size();
            if (im.cfg.verify) rsha.update(b);
            if (res.status == 200) read_usage(b);
        }
        if (im.cfg.verify)
            if (auto it = m.find("x-response-sha256"); it != m.end())
                res.response_sha_ok = it->value() == rsha.hex() ? 1 : 0;
        res.e2e_s = std::chrono::duration<double>(Clock::now() - start).count() * im.cfg.time_scale;
        res.ok = res.status == 200 && res.body_sha_ok != 0 && res.response_sha_ok != 0;
        if (res.status != 200) {
            res.error = fmt::format("HTTP {}", res.status);
            if (!m.chunked()) res.error += ": " + m.body().substr(0, 200);
        } else if (!res.ok) {
            res.error = res.body_sha_ok == 0 ? "request body digest mismatch"
                                             : "response body digest mismatch";
        }
        if (im.cfg.keep_alive && m.keep_alive()) {
            im.idle[target].push_back(std::move(sock));
        } else {
            beast::error_code ig;
            sock->shutdown(tcp::socket::shutdown_both, ig);
            sock->close(ig);
        }
        done_();
    }

    void fail(const std::string &what) {
        if (finished) return;
        // A kept-alive connection the server closed as the request crossed its FIN (its idle
        // timeout): nothing of a response came back, so the request goes again, once, on a new
        // connection, as HTTP clients and the SDKs do. The clock keeps running from the first try.
        if (reused && !retried && !timed_out && res.status == 0 && buf.size() == 0) {
            retried = true;
            reused = false;
            ++res.retries;
            beast::error_code ig;
            sock->close(ig);
            fresh_parser();
            return connect();
        }
        res.ok = false;
        res.error = timed_out ? "timeout" : what;
        if (reused && !timed_out && res.status == 0) res.error += " (reused keep-alive connection)";
        beast::error_code ig;
        if (sock) sock->close(ig);
        done_();
    }

    void done_() {
        if (finished) return;
        finished = true;
        timer.cancel();
        im.finished(*this);
    }
};

void Replayer::Impl::schedule_next() {
    const double now = now_s();
    // Checked before any item is due: with the next one after the end the timer (woken at the
    // end) fired again at once until that item's time, spinning a core past --duration.
    if (cfg.duration_s > 0 && now >= cfg.duration_s) {
        stopped_sending = true;
        backlog.clear();  // due but never sent: reported as not sent
    }
    while (!stopped_sending && next_item < items.size() && sched_of(next_item) <= now) {
        const size_t i = next_item++;
        results[i].sched_s = sched_of(i);
        if (inflight < cfg.max_concurrency)
            launch(i);
        else
            backlog.push_back(i);
    }
    if (stopped_sending || next_item >= items.size()) {
        if (all_done()) {
            progress_timer.cancel();
        }
        return;
    }
    double wake = sched_of(next_item);
    if (cfg.duration_s > 0) wake = std::min(wake, cfg.duration_s);
    dispatch_timer.expires_at(
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wake)));
    dispatch_timer.async_wait([this](beast::error_code ec) {
        if (!ec) schedule_next();
    });
}

void Replayer::Impl::launch(size_t i) {
    results[i].sent = true;
    ++inflight;
    const size_t tgt = rr++ % cfg.targets.size();
    std::make_shared<Op>(*this, i, tgt)->begin();
}

void Replayer::Impl::finished(Op &op) {
    --inflight;
    ++done;
    if (op.res.ok)
        ++ok;
    else
        ++failed;
    if (cfg.duration_s > 0 && now_s() >= cfg.duration_s) {
        stopped_sending = true;
        backlog.clear();  // due but never sent: reported as not sent
        dispatch_timer.cancel();
    }
    while (!backlog.empty() && inflight < cfg.max_concurrency) {
        const size_t i = backlog.front();
        backlog.pop_front();
        launch(i);
    }
    if (all_done()) {
        dispatch_timer.cancel();
        progress_timer.cancel();
    }
}

void Replayer::Impl::progress() {
    progress_timer.expires_after(std::chrono::seconds(2));
    progress_timer.async_wait([this](beast::error_code ec) {
        if (ec) return;
        if (cfg.progress)
            std::fprintf(
                stderr,
                "[replay] %.1fs sent %zu/%zu done %zu ok %zu failed %zu inflight %u backlog %zu\n",
                now_s(), next_item - backlog.size(), items.size(), done, ok, failed, inflight,
                backlog.size());
        if (!all_done()) progress();
    });
}

Replayer::Replayer(ReplayConfig cfg, std::vector<WorkItem> items) {
    results_.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
        results_[i].index = i;
        results_[i].line = items[i].line;
        results_[i].input_tokens = items[i].input_tokens;
        results_[i].max_tokens = items[i].output_tokens;
    }
    impl_ = new Impl(std::move(cfg), std::move(items), results_);
}

Replayer::~Replayer() {
    delete impl_;
}

double Replayer::run() {
    Impl &im = *impl_;
    if (im.cfg.speed <= 0) im.cfg.speed = 1;
    if (im.cfg.time_scale <= 0) im.cfg.time_scale = 1;
    if (im.cfg.max_concurrency == 0) im.cfg.max_concurrency = 1;
    im.t0 = Clock::now();
    asio::post(im.io, [&im] { im.schedule_next(); });
    im.progress();
    im.io.run();
    return im.now_s();
}

}  // namespace kvsteer::replay
