// etcd's v3 JSON gateway: bodies and answers (etcd.h).
#include "kvsteer/control/etcd.h"

#include "kvsteer/control/json_bounded.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <limits>

namespace kvsteer::control {

using nlohmann::json;

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// grpc-gateway writes int64 as a JSON string; accepts a number too. Absent: 0 (proto3 default).
std::optional<std::int64_t> int64_field(const json &j, const char *name) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) return 0;
    if (it->is_number_unsigned()) {  // above INT64_MAX: out of range (was converted, wrapped)
        const auto u = it->get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            return std::nullopt;
        return static_cast<std::int64_t>(u);
    }
    if (it->is_number_integer()) return it->get<std::int64_t>();
    if (!it->is_string()) return std::nullopt;
    // Digits with an optional '-', in range: "9999999999999999999" overflowed the sum (undefined
    // behaviour; a wrapped revision started watches at "now" and failed every txn compare).
    const std::string &s = it->get_ref<const std::string &>();
    const std::size_t digits = s.size() - (!s.empty() && s[0] == '-' ? 1 : 0);
    if (digits == 0 || digits > 19 ||
        s.find_first_not_of("0123456789", s.size() - digits) != std::string::npos)
        return std::nullopt;
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

// A revision or version: a count, 0 to INT64_MAX - 1 (one past it is computed: a watch starts
// at revision + 1). INT64_MAX itself overflowed that sum, and a negative version became an
// epoch number near 2^64.
std::optional<std::int64_t> count_field(const json &j, const char *name) {
    auto v = int64_field(j, name);
    if (!v || *v < 0 || *v == std::numeric_limits<std::int64_t>::max()) return std::nullopt;
    return v;
}

}  // namespace

std::string base64_encode(std::string_view raw) {
    std::string out;
    out.reserve((raw.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < raw.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, raw.size() - i);
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 3; k++)
            v = (v << 8) | (k < n ? static_cast<std::uint8_t>(raw[i + k]) : 0u);
        for (std::size_t k = 0; k < 4; k++) out += k <= n ? kB64[(v >> (18 - 6 * k)) & 63] : '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view b64) {
    if (b64.size() % 4) return std::nullopt;
    std::array<int, 256> val;
    val.fill(-1);
    for (int i = 0; i < 64; i++) val[static_cast<std::uint8_t>(kB64[i])] = i;
    std::string out;
    out.reserve(b64.size() / 4 * 3);
    for (std::size_t i = 0; i < b64.size(); i += 4) {
        std::uint32_t v = 0;
        int pad = 0;
        for (std::size_t k = 0; k < 4; k++) {
            const char c = b64[i + k];
            if (c == '=') {
                // Padding only at the end of the last group, at most two.
                if (i + 4 != b64.size() || k < 2) return std::nullopt;
                pad++;
                v <<= 6;
                continue;
            }
            const int d = val[static_cast<std::uint8_t>(c)];
            if (d < 0 || pad) return std::nullopt;
            v = (v << 6) | static_cast<std::uint32_t>(d);
        }
        for (int k = 0; k < 3 - pad; k++) out += static_cast<char>((v >> (16 - 8 * k)) & 0xff);
    }
    return out;
}

std::string etcd_prefix_end(std::string_view prefix) {
    std::string end(prefix);
    while (!end.empty()) {
        auto &c = reinterpret_cast<unsigned char &>(end.back());
        if (c < 0xff) {
            c++;
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0');  // every key (etcd's convention for an all-0xff prefix)
}

json etcd_range_request(std::string_view key, bool prefix) {
    json j{{"key", base64_encode(key)}};
    if (prefix) j["range_end"] = base64_encode(etcd_prefix_end(key));
    return j;
}

json etcd_put_request(std::string_view key, std::string_view value, std::int64_t lease) {
    json j{{"key", base64_encode(key)}, {"value", base64_encode(value)}};
    if (lease) j["lease"] = std::to_string(lease);
    return j;
}

json etcd_delete_request(std::string_view key) {
    return {{"key", base64_encode(key)}};
}

namespace {
json mod_equal(std::string_view key, std::int64_t rev) {
    return {{"key", base64_encode(key)},
            {"target", "MOD"},
            {"result", "EQUAL"},
            {"mod_revision", std::to_string(rev)}};
}
}  // namespace

json etcd_txn_request(const std::vector<std::pair<std::string, std::int64_t>> &compares,
                      const std::vector<std::pair<std::string, std::string>> &puts,
                      const std::vector<std::string> &deletes) {
    json cmp = json::array(), ops = json::array();
    for (const auto &[k, rev] : compares) cmp.push_back(mod_equal(k, rev));
    for (const auto &[k, v] : puts) ops.push_back({{"request_put", etcd_put_request(k, v)}});
    for (const auto &k : deletes) ops.push_back({{"request_delete_range", etcd_delete_request(k)}});
    return {{"compare", cmp}, {"success", ops}};
}

json etcd_put_read_moved_request(std::string_view key, std::string_view value, std::int64_t lease,
                                 std::int64_t rev) {
    const json put = {{"request_put", etcd_put_request(key, value, lease)}};
    json read = json::object();
    read["request_range"] = etcd_range_request(key, false);
    json compare = json::array(), success = json::array(), failure = json::array();
    compare.push_back(mod_equal(key, rev));
    success.push_back(put);
    failure.push_back(read);
    failure.push_back(put);
    return {{"compare", compare}, {"success", success}, {"failure", failure}};
}

json etcd_lease_grant_request(std::int64_t ttl_s) {
    return {{"TTL", std::to_string(ttl_s)}};
}

json etcd_lease_keepalive_request(std::int64_t lease) {
    return {{"ID", std::to_string(lease)}};
}

EtcdReply etcd_reply(const HttpResult &r) {
    EtcdReply out;
    if (!r.ok) {
        out.error = r.error;
        return out;
    }
    json j = parse_json_bounded(r.body);  // nesting bounded: the dump() below is safe
    // A stream (lease/keepalive) answers {"result": ...} or {"error": {...}} per message.
    if (j.is_object() && j.contains("result") && j["result"].is_object()) j = j["result"];
    if (j.is_object() && j.contains("error")) {
        const json &e = j["error"];
        std::string msg = e.is_string() ? e.get<std::string>() : "";
        if (e.is_object() && e.contains("message") && e["message"].is_string())
            msg = e["message"].get<std::string>();
        if (j.contains("message") && j["message"].is_string())
            msg = j["message"].get<std::string>();
        out.error = "HTTP " + std::to_string(r.status) + ": " +
                    (msg.empty() ? e.dump().substr(0, 200) : msg);
        return out;
    }
    if (r.status != 200) {
        std::string body = r.body.substr(0, 200);
        for (char &c : body)
            if (c == '\n' || c == '\r') c = ' ';
        out.error = "HTTP " + std::to_string(r.status) + (body.empty() ? "" : ": " + body);
        return out;
    }
    if (!j.is_object()) {
        out.error = "bad answer: not a JSON object";
        return out;
    }
    if (j.contains("header") && j["header"].is_object()) {
        auto rev = count_field(j["header"], "revision");
        if (!rev) {
            out.error = "bad answer: header.revision is not a number";
            return out;
        }
        out.revision = *rev;
    }
    out.json = std::move(j);
    return out;
}

std::optional<std::vector<EtcdKv>> etcd_range_kvs(const json &j, std::string *err) {
    std::vector<EtcdKv> kvs;
    auto it = j.find("kvs");
    if (it == j.end() || it->is_null()) return kvs;
    if (!it->is_array()) {
        *err = "bad range answer: kvs is not a list";
        return std::nullopt;
    }
    for (const auto &e : *it) {
        EtcdKv kv;
        auto key = e.is_object() && e.contains("key") && e["key"].is_string()
                       ? base64_decode(e["key"].get<std::string>())
                       : std::nullopt;
        if (!key || key->empty()) {
            *err = "bad range answer: a key is missing or not base64";
            return std::nullopt;
        }
        kv.key = std::move(*key);
        if (e.contains("value")) {
            auto v = e["value"].is_string() ? base64_decode(e["value"].get<std::string>())
                                            : std::nullopt;
            if (!v) {
                *err = "bad range answer: the value of " + kv.key + " is not base64";
                return std::nullopt;
            }
            kv.value = std::move(*v);
        }
        auto mod = count_field(e, "mod_revision"), ver = count_field(e, "version"),
             lease = int64_field(e, "lease");
        if (!mod || !ver || !lease) {
            *err = "bad range answer: a revision of " + kv.key + " is not a number";
            return std::nullopt;
        }
        kv.mod_revision = *mod;
        kv.version = *ver;
        kv.lease = *lease;
        kvs.push_back(std::move(kv));
    }
    return kvs;
}

std::optional<std::vector<EtcdKv>> etcd_txn_range_kvs(const json &j, std::size_t i,
                                                      std::string *err) {
    auto rs = j.find("responses");
    if (rs == j.end() || !rs->is_array() || rs->size() <= i || !(*rs)[i].is_object() ||
        !(*rs)[i].contains("response_range")) {
        *err = "bad txn answer: no range at responses[" + std::to_string(i) + "]";
        return std::nullopt;
    }
    return etcd_range_kvs((*rs)[i]["response_range"], err);
}

bool etcd_txn_succeeded(const json &j) {
    auto it = j.find("succeeded");
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::optional<std::int64_t> etcd_lease_id(const json &j, std::string *err) {
    auto id = int64_field(j, "ID");
    if (!id || *id == 0) {
        *err = "bad lease answer: no ID";
        return std::nullopt;
    }
    return id;
}

std::int64_t etcd_keepalive_ttl(const json &j) {
    return int64_field(j, "TTL").value_or(0);
}

EtcdReply etcd_call(const Endpoint &ep, const std::string &path, const json &body,
                    std::chrono::milliseconds timeout) {
    HttpRequest req{ep, path, body.dump(), true};
    auto res = http_get_many({req}, timeout, 4u << 20);
    EtcdReply r = etcd_reply(res[0]);
    if (!r.ok()) r.error = "etcd " + ep.str() + " " + path + ": " + r.error;
    return r;
}

json etcd_watch_request(std::string_view prefix, std::int64_t start_revision) {
    json c{{"key", base64_encode(prefix)}, {"range_end", base64_encode(etcd_prefix_end(prefix))}};
    if (start_revision > 0) c["start_revision"] = std::to_string(start_revision);
    return {{"create_request", c}};
}

bool EtcdWatchStream::fail(std::string why) {
    error_ = std::move(why);
    state_ = State::Ended;
    return false;
}

bool EtcdWatchStream::feed(std::string_view bytes, std::vector<std::string> *objects) {
    if (!error_.empty()) return false;
    // A line of the framing (a chunk size, the CRLF after a chunk, a trailer) longer than this is
    // not one.
    constexpr std::size_t kMaxLine = 256;
    std::size_t i = 0;
    while (i < bytes.size()) {
        switch (state_) {
            case State::Size:
            case State::DataEnd:
            case State::Trailer: {
                const std::size_t nl = bytes.find('\n', i);
                const std::size_t end = nl == std::string_view::npos ? bytes.size() : nl;
                line_.append(bytes.substr(i, end - i));
                if (line_.size() > kMaxLine) return fail("a chunk framing line is too long");
                if (nl == std::string_view::npos) return true;  // the rest of the line later
                i = nl + 1;
                std::string line = std::move(line_);
                line_.clear();
                if (!line.empty() && line.back() == '\r') line.pop_back();
                if (state_ == State::DataEnd) {
                    if (!line.empty()) return fail("no CRLF after a chunk's data");
                    state_ = State::Size;
                } else if (state_ == State::Trailer) {
                    if (line.empty()) {
                        state_ = State::Ended;
                        ended_ = true;
                    }
                } else {
                    line = line.substr(0, line.find(';'));  // chunk extensions
                    while (!line.empty() && (line.back() == ' ' || line.back() == '\t'))
                        line.pop_back();
                    if (line.empty() || line.size() > 15)
                        return fail("bad chunk size '" + line.substr(0, 32) + "'");
                    std::size_t size = 0;
                    for (char c : line) {
                        const int d = c >= '0' && c <= '9'   ? c - '0'
                                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                             : -1;
                        if (d < 0) return fail("bad chunk size '" + line + "'");
                        size = size * 16 + static_cast<std::size_t>(d);
                    }
                    if (size > max_)
                        return fail("a chunk of " + std::to_string(size) + " bytes (more than " +
                                    std::to_string(max_) + ")");
                    left_ = size;
                    state_ = size ? State::Data : State::Trailer;
                }
                break;
            }
            case State::Data: {
                const std::size_t n = std::min(left_, bytes.size() - i);
                data_.append(bytes.substr(i, n));
                i += n;
                left_ -= n;
                if (!left_) state_ = State::DataEnd;
                if (!split(objects)) return false;
                break;
            }
            case State::Ended:
                return true;  // nothing is read after the last chunk
        }
    }
    return true;
}

bool EtcdWatchStream::split(std::vector<std::string> *objects) {
    std::size_t start = 0, i = scan_;
    for (; i < data_.size(); i++) {
        const char c = data_[i];
        if (depth_ == 0) {
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                start = i + 1;
                continue;
            }
            if (c != '{') {
                std::string at = data_.substr(i, 32);
                for (char &ch : at)
                    if (static_cast<unsigned char>(ch) < 0x20) ch = ' ';
                return fail("not a JSON object at '" + at + "'");
            }
            depth_ = 1;
            start = i;
            continue;
        }
        if (in_string_) {
            if (escape_)
                escape_ = false;
            else if (c == '\\')
                escape_ = true;
            else if (c == '"')
                in_string_ = false;
            continue;
        }
        if (c == '"') {
            in_string_ = true;
        } else if (c == '{' || c == '[') {
            depth_++;
        } else if (c == '}' || c == ']') {
            if (--depth_ == 0) {
                objects->push_back(data_.substr(start, i + 1 - start));
                start = i + 1;
            }
        }
    }
    data_.erase(0, start);
    scan_ = i - start;
    if (data_.size() > max_)
        return fail("a message of more than " + std::to_string(max_) + " bytes");
    return true;
}

std::optional<HttpHead> parse_http_head(std::string_view head, std::string *err) {
    HttpHead h;
    std::size_t eol = head.find("\r\n");
    const std::string_view status_line = head.substr(0, eol);
    if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ' ||
        !std::all_of(status_line.begin() + 9, status_line.begin() + 12,
                     [](char c) { return c >= '0' && c <= '9'; })) {
        *err = "bad status line '" + std::string(status_line.substr(0, 64)) + "'";
        return std::nullopt;
    }
    h.status =
        (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
    auto lower = [](std::string_view v) {
        std::string s(v);
        for (char &c : s)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        return s;
    };
    while (eol != std::string_view::npos) {
        const std::size_t from = eol + 2;
        eol = head.find("\r\n", from);
        const std::string_view line =
            head.substr(from, eol == std::string_view::npos ? std::string_view::npos : eol - from);
        if (line.empty()) continue;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            *err = "bad header line '" + std::string(line.substr(0, 64)) + "'";
            return std::nullopt;
        }
        if (lower(line.substr(0, colon)) == "transfer-encoding" &&
            lower(line.substr(colon + 1)).find("chunked") != std::string::npos)
            h.chunked = true;
    }
    return h;
}

EtcdWatchMessage etcd_watch_message(std::string_view object) {
    EtcdWatchMessage m;
    auto bad = [&](std::string why) {
        m.kind = EtcdWatchMessage::Kind::Bad;
        m.error = std::move(why);
        return m;
    };
    const json j = parse_json_bounded(object);
    if (!j.is_object()) return bad("a message is not a JSON object");
    if (auto e = j.find("error"); e != j.end()) {
        m.kind = EtcdWatchMessage::Kind::Error;
        m.error = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                      ? (*e)["message"].get<std::string>()
                      : e->dump().substr(0, 200);  // bounded parse: dump() is safe
        return m;
    }
    auto r = j.find("result");
    if (r == j.end() || !r->is_object()) return bad("a message without a result");
    if (auto h = r->find("header"); h != r->end() && h->is_object()) {
        auto rev = count_field(*h, "revision");
        if (!rev) return bad("header.revision is not a number");
        m.revision = *rev;
    }
    auto flag = [&](const char *name) {
        auto it = r->find(name);
        return it != r->end() && it->is_boolean() && it->get<bool>();
    };
    const auto compacted = count_field(*r, "compact_revision");
    if (!compacted) return bad("compact_revision is not a number");
    if (*compacted > 0) {
        m.kind = EtcdWatchMessage::Kind::Canceled;
        m.error = "compacted at revision " + std::to_string(*compacted);
        return m;
    }
    if (flag("canceled")) {
        m.kind = EtcdWatchMessage::Kind::Canceled;
        auto why = r->find("cancel_reason");
        m.error = "canceled" + (why != r->end() && why->is_string() && !why->empty()
                                    ? ": " + why->get<std::string>()
                                    : std::string());
        return m;
    }
    if (flag("created")) {
        m.kind = EtcdWatchMessage::Kind::Created;
        return m;
    }
    m.kind = EtcdWatchMessage::Kind::Events;
    if (auto ev = r->find("events"); ev != r->end() && !ev->is_null()) {
        if (!ev->is_array()) return bad("events is not a list");
        m.events = ev->size();
    }
    return m;
}

void EtcdWatchConn::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

int EtcdWatchConn::wait_fd(short events, std::chrono::steady_clock::time_point deadline,
                           std::string *err) {
    for (;;) {
        if (stop_ && stop_->load()) return 0;
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return 0;
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
        pollfd p{fd_, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 100)));
        if (r > 0) return 1;  // readable, writable, or an error that recv / SO_ERROR reports
        if (r < 0 && errno != EINTR) {
            *err = std::string("poll: ") + std::strerror(errno);
            return -1;
        }
    }
}

bool EtcdWatchConn::open(const Endpoint &ep, const std::string &body,
                         std::chrono::milliseconds timeout, std::vector<EtcdWatchMessage> *out,
                         std::string *err) {
    close();
    head_done_ = refused_ = false;
    head_.clear();
    stream_ = EtcdWatchStream();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    where_ = "etcd " + ep.str() + " /v3/watch: ";
    auto fail = [&](std::string why) {
        *err = where_ + why;
        close();
        return false;
    };
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (ep.family == KVS_AF_INET) {
        auto *sin = reinterpret_cast<sockaddr_in *>(&ss);
        sin->sin_family = AF_INET;
        sin->sin_port = ep.port_be;
        std::memcpy(&sin->sin_addr, ep.addr.data(), 4);
        len = sizeof *sin;
    } else if (ep.family == KVS_AF_INET6) {
        auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&ss);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = ep.port_be;
        std::memcpy(&sin6->sin6_addr, ep.addr.data(), 16);
        len = sizeof *sin6;
    } else {
        return fail("no address");
    }
    fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail(std::string("socket: ") + std::strerror(errno));
    // A watch is silent while nothing changes: a peer gone without a word (its host down, the
    // path cut) is noticed by TCP keepalives within ~11 s, unacknowledged data within 10 s.
    const int one = 1, idle = 5, intvl = 2, cnt = 3;
    const unsigned user_timeout_ms = 10000;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd_, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    if (::connect(fd_, reinterpret_cast<sockaddr *>(&ss), len) < 0) {
        if (errno != EINPROGRESS) return fail(std::string("connect: ") + std::strerror(errno));
        const int w = wait_fd(POLLOUT, deadline, err);
        if (w < 0) return fail(*err);
        if (w == 0) return fail("connect timeout");
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
        if (soerr) return fail(std::string("connect: ") + std::strerror(soerr));
    }
    const std::string req = "POST /v3/watch HTTP/1.1\r\nHost: " + ep.str() +
                            "\r\nUser-Agent: kvsteerd\r\nAccept: application/json\r\n"
                            "Content-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    for (std::size_t sent = 0; sent < req.size();) {
        const ssize_t n = ::send(fd_, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return fail(std::string("send: ") + std::strerror(errno));
        const int w = wait_fd(POLLOUT, deadline, err);
        if (w < 0) return fail(*err);
        if (w == 0) return fail("timeout sending the request");
    }
    std::vector<EtcdWatchMessage> msgs;
    while (msgs.empty()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline || (stop_ && stop_->load()))
            return fail(head_done_ ? "timeout waiting for the watch to be created"
                                   : "timeout reading the response");
        std::string e;
        if (!fill(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now), &msgs, &e))
            return fail(e);
    }
    if (msgs[0].kind != EtcdWatchMessage::Kind::Created) {
        // etcd's error or cancel is an answer; anything else before the creation is not one.
        if (msgs[0].kind == EtcdWatchMessage::Kind::Events) refused_ = true;
        return fail("the first message is not the watch's creation" +
                    (msgs[0].error.empty() ? std::string() : ": " + msgs[0].error));
    }
    out->insert(out->end(), msgs.begin(), msgs.end());
    return true;
}

bool EtcdWatchConn::read(std::chrono::milliseconds wait, std::vector<EtcdWatchMessage> *out,
                         std::string *err) {
    if (fd_ < 0) {
        *err = where_ + "the watch is not open";
        return false;
    }
    if (!fill(wait, out, err)) {
        *err = where_ + *err;
        close();
        return false;
    }
    return true;
}

bool EtcdWatchConn::fill(std::chrono::milliseconds wait, std::vector<EtcdWatchMessage> *out,
                         std::string *err) {
    // A response head (status line + headers) larger than this is refused.
    constexpr std::size_t kMaxHead = 16 * 1024;
    auto refuse = [&](const std::string &why) {
        refused_ = true;
        *err = "bad watch answer: " + why;
        return false;
    };
    const int w = wait_fd(POLLIN, std::chrono::steady_clock::now() + wait, err);
    if (w < 0) return false;
    if (w == 0) return true;
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n == 0) {
        *err = "etcd closed the watch";
        return false;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
        *err = std::string("recv: ") + std::strerror(errno);
        return false;
    }
    std::string rest;
    std::string_view data(buf, static_cast<std::size_t>(n));
    if (!head_done_) {
        head_.append(data);
        const std::size_t end = head_.find("\r\n\r\n");
        if (end == std::string::npos) {
            if (head_.size() > kMaxHead) return refuse("response head too long");
            return true;
        }
        std::string why;
        auto h = parse_http_head(std::string_view(head_).substr(0, end + 2), &why);
        if (!h) return refuse(why);
        rest = head_.substr(end + 4);
        if (h->status != 200) {
            std::string b = rest.substr(0, 200);
            for (char &c : b)
                if (static_cast<unsigned char>(c) < 0x20) c = ' ';
            return refuse("HTTP " + std::to_string(h->status) + (b.empty() ? "" : ": " + b));
        }
        if (!h->chunked) return refuse("not a chunked (streaming) answer");
        head_done_ = true;
        head_.clear();
        data = rest;
    }
    std::vector<std::string> objects;
    const bool framed = stream_.feed(data, &objects);
    for (const auto &o : objects) {
        EtcdWatchMessage m = etcd_watch_message(o);
        if (m.kind == EtcdWatchMessage::Kind::Bad) return refuse(m.error);
        out->push_back(std::move(m));
    }
    if (!framed) return refuse(stream_.error());
    if (stream_.ended()) {
        *err = "etcd ended the watch";
        return false;
    }
    return true;
}

}  // namespace kvsteer::control
