// Request locator: a bounded, allocation-free scan of an HTTP/1.x request head and of the top
// level of an OpenAI JSON body. It never builds a parse tree: nested values are skipped by
// bracket depth and strings by their closing quote (odd runs of '\' escape it).
#include "kvsteer/core/locator.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "json_scan.h"

namespace kvsteer {
namespace {

using Buf = std::span<const std::uint8_t>;

constexpr std::size_t kMaxMethodLen = 32;
constexpr std::size_t kMaxLeadingEmptyLines = 4;  // RFC 9112 2.2: ignore a few CRLFs first

// RFC 9110 5.6.2 tchar, as a table: header names are scanned byte by byte.
constexpr std::array<bool, 256> kTchar = [] {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
    for (const char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<std::uint8_t>(c)] = true;
    return t;
}();
constexpr bool is_tchar(std::uint8_t c) {
    return kTchar[c];
}

// Bytes that end or invalidate a field value: every CTL but HTAB (so CR, LF, NUL), and DEL.
constexpr std::array<bool, 256> kValueStop = [] {
    std::array<bool, 256> t{};
    for (int c = 0; c < 0x20; ++c) t[c] = c != '\t';
    t[0x7f] = true;
    return t;
}();

constexpr bool is_ows(std::uint8_t c) {
    return c == ' ' || c == '\t';
}

constexpr std::uint8_t lower(std::uint8_t c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<std::uint8_t>(c + ('a' - 'A')) : c;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(static_cast<std::uint8_t>(a[i])) != lower(static_cast<std::uint8_t>(b[i])))
            return false;
    }
    return true;
}

std::string_view view(Buf b, std::size_t off, std::size_t len) {
    return {reinterpret_cast<const char *>(b.data()) + off, len};
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(static_cast<std::uint8_t>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && is_ows(static_cast<std::uint8_t>(s.back()))) s.remove_suffix(1);
    return s;
}

// Splits a comma-separated field value (RFC 9110 5.6.1). Calls f(element) for each trimmed
// element, empty ones included; stops early when f returns false.
template <class F>
bool for_each_element(std::string_view v, F &&f) {
    while (true) {
        const std::size_t comma = v.find(',');
        if (!f(trim_ows(v.substr(0, comma)))) return false;
        if (comma == std::string_view::npos) return true;
        v.remove_prefix(comma + 1);
    }
}

// Content-Length: 1*DIGIT, or a list of identical values ("42, 42" is allowed by RFC 9110 8.6).
// Returns -1 for anything else: empty elements, signs, non-digits, overflow, differing values.
std::int64_t parse_content_length(std::string_view v) {
    std::int64_t result = -1;
    const bool ok = for_each_element(v, [&](std::string_view e) {
        if (e.empty()) return false;
        std::int64_t n = 0;
        for (const char ch : e) {
            if (ch < '0' || ch > '9') return false;
            const int d = ch - '0';
            if (n > (std::numeric_limits<std::int64_t>::max() - d) / 10) return false;
            n = n * 10 + d;
        }
        if (result >= 0 && n != result) return false;
        result = n;
        return true;
    });
    return ok ? result : -1;
}

// Transfer-Encoding: the final coding decides the framing; returns true when it is chunked.
bool final_coding_is_chunked(std::string_view v) {
    std::string_view last;
    for_each_element(v, [&](std::string_view e) {
        if (!e.empty()) last = e;
        return true;
    });
    const std::size_t semi = last.find(';');  // transfer-parameters
    return iequals(trim_ows(last.substr(0, semi)), "chunked");
}

// Path part of a request target: origin-form as is, absolute-form without scheme://authority,
// query and fragment cut off.
std::string_view target_path(std::string_view t) {
    for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
        if (t.size() >= scheme.size() && iequals(t.substr(0, scheme.size()), scheme)) {
            t.remove_prefix(scheme.size());
            const std::size_t slash = t.find('/');
            t = slash == std::string_view::npos ? std::string_view() : t.substr(slash);
            break;
        }
    }
    std::size_t cut = 0;  // a plain loop: find_first_of calls memchr once per byte
    while (cut < t.size() && t[cut] != '?' && t[cut] != '#') ++cut;
    return t.substr(0, cut);
}

// Whether the path `raw` is `want` once percent-decoded (every %XX, as the OpenAI servers'
// ASGI stack decodes a path before routing it: /v1/chat/%63ompletions is served as chat).
bool path_is(std::string_view raw, std::string_view want) {
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::size_t i = 0, j = 0;
    for (; i < raw.size() && j < want.size(); ++j) {
        char c = raw[i++];
        if (c == '%' && i + 1 < raw.size()) {  // a '%' without two hex digits is itself
            const int hi = hex(raw[i]), lo = hex(raw[i + 1]);
            if (hi >= 0 && lo >= 0) {
                c = static_cast<char>(hi * 16 + lo);
                i += 2;
            }
        }
        if (c != want[j]) return false;
    }
    return i == raw.size() && j == want.size();
}

enum class Step { Ok, More, Bad };

// Reads one line ending at LF starting at `pos`; `content_end` excludes CRLF/LF.
// A CR anywhere but right before the LF is an error (bare CR, RFC 9112 2.2).
Step read_line(Buf b, std::size_t pos, std::size_t &content_end, std::size_t &next) {
    const void *lf = std::memchr(b.data() + pos, '\n', b.size() - pos);
    if (lf == nullptr) return Step::More;
    const std::size_t le =
        static_cast<std::size_t>(static_cast<const std::uint8_t *>(lf) - b.data());
    content_end = le;
    if (content_end > pos && b[content_end - 1] == '\r') --content_end;
    next = le + 1;
    return Step::Ok;
}

// A line of chunked framing (a chunk-size line, its extensions, a trailer line): it ends in CRLF
// exactly, with no other CR in it (RFC 9112 7.1). Bad on a bare LF or CR: parsers disagree on
// such framing (h11 before 0.16 skipped the two bytes after chunk data unread), so a body framed
// so has no end anyone can vouch for (the request is never re-bound at one).
Step read_crlf(Buf b, std::size_t pos, std::size_t &content_end, std::size_t &next) {
    const void *lf = std::memchr(b.data() + pos, '\n', b.size() - pos);
    if (lf == nullptr)
        return std::memchr(b.data() + pos, '\r', b.size() - pos) && b[b.size() - 1] != '\r'
                   ? Step::Bad
                   : Step::More;
    const std::size_t le =
        static_cast<std::size_t>(static_cast<const std::uint8_t *>(lf) - b.data());
    if (le == pos || b[le - 1] != '\r') return Step::Bad;
    if (std::memchr(b.data() + pos, '\r', le - 1 - pos)) return Step::Bad;
    content_end = le - 1;
    next = le + 1;
    return Step::Ok;
}

// After chunk data: CRLF exactly.
Step chunk_data_end(Buf b, std::size_t pos, std::size_t &next) {
    if (pos >= b.size()) return Step::More;
    if (b[pos] != '\r') return Step::Bad;
    if (pos + 1 >= b.size()) return Step::More;
    if (b[pos + 1] != '\n') return Step::Bad;
    next = pos + 2;
    return Step::Ok;
}

// Request line: method SP request-target SP HTTP/1.x CRLF. Sets `pos` past the line.
LocateStatus parse_request_line(Buf b, std::size_t &pos, RequestView &r, int &minor) {
    const std::size_t n = b.size();
    for (std::size_t i = 0; i < kMaxLeadingEmptyLines && pos < n; ++i) {
        if (b[pos] == '\n') {
            pos += 1;
        } else if (b[pos] == '\r') {
            if (pos + 1 >= n) return LocateStatus::NeedMoreHead;
            if (b[pos + 1] != '\n') return LocateStatus::NotHttp;
            pos += 2;
        } else {
            break;
        }
    }
    const std::size_t m0 = pos;
    while (pos < n && pos - m0 <= kMaxMethodLen && is_tchar(b[pos])) ++pos;
    if (pos - m0 > kMaxMethodLen) return LocateStatus::NotHttp;
    if (pos >= n) return LocateStatus::NeedMoreHead;
    if (pos == m0 || b[pos] != ' ') return LocateStatus::NotHttp;
    r.method = view(b, m0, pos - m0);
    ++pos;

    // Request target: visible ASCII or obs-text; anything else (CTL, SP twice) is not HTTP/1.x.
    const std::size_t t0 = pos;
    while (pos < n && b[pos] != ' ') {
        if (b[pos] <= 0x20 || b[pos] == 0x7f) return LocateStatus::NotHttp;
        ++pos;
    }
    if (pos >= n) return LocateStatus::NeedMoreHead;
    if (pos == t0) return LocateStatus::NotHttp;
    r.path = view(b, t0, pos - t0);
    ++pos;

    static constexpr char kVersion[] = "HTTP/1.";
    for (std::size_t i = 0; i < sizeof(kVersion) - 1; ++i, ++pos) {
        if (pos >= n) return LocateStatus::NeedMoreHead;
        if (b[pos] != static_cast<std::uint8_t>(kVersion[i])) return LocateStatus::NotHttp;
    }
    if (pos >= n) return LocateStatus::NeedMoreHead;
    if (b[pos] != '0' && b[pos] != '1') return LocateStatus::NotHttp;
    minor = b[pos] - '0';
    ++pos;
    if (pos >= n) return LocateStatus::NeedMoreHead;
    if (b[pos] == '\r') {
        if (++pos >= n) return LocateStatus::NeedMoreHead;
    }
    if (b[pos] != '\n') return LocateStatus::NotHttp;
    ++pos;
    return LocateStatus::Ok;
}

struct HeadFacts {
    bool saw_te = false;
    bool saw_host = false;
};

// One header field line. Field names are case-insensitive; no whitespace before ':' and no
// obs-fold (both rejected, RFC 9112 5.1/5.2); OWS around the value is dropped.
LocateStatus parse_field(Buf b, std::size_t &pos, RequestView &r, HeadFacts &f) {
    const std::size_t n = b.size();
    if (is_ows(b[pos])) return LocateStatus::BadHeaders;  // obs-fold or leading whitespace
    const std::size_t n0 = pos;
    while (pos < n && is_tchar(b[pos])) ++pos;
    if (pos >= n) return LocateStatus::NeedMoreHead;
    if (pos == n0 || b[pos] != ':') return LocateStatus::BadHeaders;
    const std::string_view name = view(b, n0, pos - n0);
    ++pos;
    // One pass finds the line end and rejects CTLs in the value (NUL, bare CR, ...).
    std::size_t vend = pos;
    while (vend < n && !kValueStop[b[vend]]) ++vend;
    if (vend >= n) return LocateStatus::NeedMoreHead;
    std::size_t next = vend + 1;
    if (b[vend] == '\r') {
        if (vend + 1 >= n) return LocateStatus::NeedMoreHead;
        if (b[vend + 1] != '\n') return LocateStatus::BadHeaders;
        next = vend + 2;
    } else if (b[vend] != '\n') {
        return LocateStatus::BadHeaders;
    }
    const std::string_view value = trim_ows(view(b, pos, vend - pos));
    pos = next;

    if (iequals(name, "content-length")) {
        const std::int64_t len = parse_content_length(value);
        if (len < 0) return LocateStatus::BadHeaders;
        if (r.content_length >= 0 && r.content_length != len) return LocateStatus::BadHeaders;
        r.content_length = len;
    } else if (iequals(name, "transfer-encoding")) {
        // Several TE fields form one list; the last one carries the final coding.
        f.saw_te = true;
        r.chunked = final_coding_is_chunked(value);
    } else if (iequals(name, "expect")) {
        r.expect_continue = iequals(value, "100-continue");
    } else if (iequals(name, "host")) {
        if (f.saw_host) return LocateStatus::BadHeaders;  // RFC 9112 3.2: exactly one Host
        f.saw_host = true;
        r.host = value;
    }
    return LocateStatus::Ok;
}

// Parses a chunk-size line at `pos`: 1*HEXDIG [BWS ; chunk-ext] CRLF. Sets `size` and `next`.
Step parse_chunk_header(Buf b, std::size_t pos, std::uint64_t &size, std::size_t &next) {
    const std::size_t n = b.size();
    std::uint64_t v = 0;
    std::size_t digits = 0, significant = 0;
    while (pos < n) {
        const std::uint8_t c = b[pos];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            break;
        ++digits;
        // > 2^60: not a size anyone sends. Leading zeros do not count (16 digits of a valid size
        // were refused: h11 and llhttp take them).
        if ((v != 0 || d != 0) && ++significant > 15) return Step::Bad;
        v = v * 16 + static_cast<std::uint64_t>(d);
        ++pos;
    }
    if (pos >= n) return Step::More;
    if (digits == 0) return Step::Bad;
    while (pos < n && is_ows(b[pos])) ++pos;
    if (pos >= n) return Step::More;
    if (b[pos] != ';' && b[pos] != '\r') return Step::Bad;
    std::size_t end = 0;
    const Step st = read_crlf(b, pos, end, next);
    if (st != Step::Ok) return st;
    size = v;
    return Step::Ok;
}

// Chunked body: the key region is the first chunk's data (as much as is present); a malformed
// first chunk header makes it the raw body bytes. Walks the remaining chunk headers only to learn
// whether the whole body (last-chunk + trailers) is here.
void locate_chunked(Buf b, RequestView &r, std::size_t &key_begin, std::size_t &key_end) {
    const std::size_t n = b.size();
    key_begin = key_end = r.body_offset;
    r.body_available = n - r.body_offset;
    std::size_t pos = r.body_offset;
    bool first = true;
    while (true) {
        std::uint64_t size = 0;
        std::size_t data = 0;
        const Step st = parse_chunk_header(b, pos, size, data);
        if (st == Step::Bad && first) key_end = n;  // not chunked as declared: raw body bytes
        if (st != Step::Ok) return;
        if (size == 0) {
            pos = data;  // first trailer line (or the final empty line)
            break;
        }
        if (first) {
            key_begin = data;
            key_end = data + static_cast<std::size_t>(std::min<std::uint64_t>(size, n - data));
            first = false;
        }
        if (size > n - data) return;  // chunk data runs past the buffer
        pos = data + static_cast<std::size_t>(size);
        // chunk data is followed by CRLF
        std::size_t next = 0;
        if (chunk_data_end(b, pos, next) != Step::Ok) return;
        pos = next;
    }
    // last-chunk seen: skip trailer fields up to the empty line.
    while (true) {
        std::size_t end = 0, next = 0;
        if (read_crlf(b, pos, end, next) != Step::Ok) return;
        if (end == pos) {
            r.body_complete = true;
            r.body_available = next - r.body_offset;
            return;
        }
        pos = next;
    }
}

// The key in the body bytes [key_begin, key_end) of `buf`: the prompt's value or the messages
// array of an OpenAI request (and "model"), else the bytes themselves; none: the 5-tuple.
void locate_key(Buf buf, std::size_t key_begin, std::size_t key_end, RequestView &r) {
    if (key_end == key_begin) {
        r.kind = KeyKind::FiveTuple;  // no body bytes to hash
        return;
    }
    const std::string_view path = target_path(r.path);
    const bool completions = path_is(path, "/v1/completions");
    const bool chat = path_is(path, "/v1/chat/completions");
    if (completions || chat) {
        const JsonTopScan s = scan_top_level(buf.subspan(key_begin, key_end - key_begin),
                                             completions ? "prompt" : "messages", completions);
        if (s.model_len > 0) r.model = view(buf, key_begin + s.model_off, s.model_len);
        if (s.found_key) {
            r.kind = completions ? KeyKind::OpenAIPrompt : KeyKind::OpenAIChat;
            r.key_offset = key_begin + s.key_off;
            r.key_len = s.key_end - s.key_off;
            r.key_complete = s.key_complete;
            if (s.key_model_len > 0)
                r.key_model = view(buf, key_begin + s.key_model_off, s.key_model_len);
            return;
        }
    }
    r.kind = KeyKind::BodyPrefix;
    r.key_offset = key_begin;
    r.key_len = key_end - key_begin;
}

}  // namespace

RequestView locate_request(std::span<const std::uint8_t> buf) noexcept {
    RequestView r;
    std::size_t pos = 0;
    int minor = 1;
    r.status = parse_request_line(buf, pos, r, minor);
    if (r.status != LocateStatus::Ok) return r;

    HeadFacts facts;
    while (true) {
        if (pos >= buf.size()) {
            r.status = LocateStatus::NeedMoreHead;
            return r;
        }
        if (buf[pos] == '\n' || buf[pos] == '\r') {
            // A CR followed by anything but LF can never end the head (it was held as
            // NeedMoreHead until a LF came, or the flight's cap).
            if (buf[pos] == '\r' && pos + 1 < buf.size() && buf[pos + 1] != '\n') {
                r.status = LocateStatus::BadHeaders;
                return r;
            }
            std::size_t end = 0, next = 0;
            if (read_line(buf, pos, end, next) != Step::Ok) {
                r.status = LocateStatus::NeedMoreHead;
                return r;
            }
            if (end != pos) {  // a CR that is not part of CRLF
                r.status = LocateStatus::BadHeaders;
                return r;
            }
            pos = next;
            break;
        }
        r.status = parse_field(buf, pos, r, facts);
        if (r.status != LocateStatus::Ok) return r;
    }

    // Framing (RFC 9112 6.1-6.3). TE with CL, TE in HTTP/1.0, or a final coding other than
    // chunked are smuggling vectors or unframeable: refuse them rather than guess.
    if (facts.saw_te && (r.content_length >= 0 || minor == 0 || !r.chunked)) {
        r.status = LocateStatus::BadHeaders;
        r.chunked = false;
        return r;
    }
    r.body_offset = pos;

    std::size_t key_begin = pos, key_end = pos;
    if (r.chunked) {
        locate_chunked(buf, r, key_begin, key_end);
    } else if (r.content_length > 0) {
        const std::size_t rest = buf.size() - pos;
        r.body_available = static_cast<std::uint64_t>(r.content_length) < rest
                               ? static_cast<std::size_t>(r.content_length)
                               : rest;
        r.body_complete = static_cast<std::uint64_t>(r.content_length) == r.body_available;
        key_end = pos + r.body_available;
    } else {
        r.body_complete = true;  // no Content-Length and no chunked: the body is empty
    }

    locate_key(buf, key_begin, key_end, r);
    return r;
}

std::size_t dechunk_request(std::span<std::uint8_t> buf, RequestView &r) noexcept {
    if (r.status != LocateStatus::Ok || !r.chunked || r.body_offset >= buf.size()) return 0;
    const Buf b(buf.data(), buf.size());
    const std::size_t n = buf.size();
    std::size_t pos = r.body_offset, out = r.body_offset;
    while (true) {
        std::uint64_t size = 0;
        std::size_t data = 0;
        if (parse_chunk_header(b, pos, size, data) != Step::Ok || size == 0) break;
        // Each chunk's data moves left over the framing before it (a chunk-size line is at
        // least 3 bytes, so `out` never passes `data`).
        const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(size, n - data));
        std::memmove(buf.data() + out, buf.data() + data, take);
        out += take;
        if (size > n - data) break;  // cut off by the buffer's end
        pos = data + static_cast<std::size_t>(size);
        std::size_t next = 0;
        if (chunk_data_end(b, pos, next) != Step::Ok) break;
        pos = next;
    }
    if (out == r.body_offset) return 0;  // no chunk data (or a malformed first chunk): as located
    r.model = r.key_model = {};
    r.key_complete = false;
    r.key_offset = r.key_len = 0;
    r.dechunked = true;
    locate_key(b.first(out), r.body_offset, out, r);
    return out - r.body_offset;
}

const char *key_kind_name(KeyKind k) noexcept {
    switch (k) {
        case KeyKind::OpenAIPrompt:
            return "openai_prompt";
        case KeyKind::OpenAIChat:
            return "openai_chat";
        case KeyKind::BodyPrefix:
            return "body_prefix";
        case KeyKind::FiveTuple:
            return "five_tuple";
    }
    return "unknown";
}

const char *locate_status_name(LocateStatus s) noexcept {
    switch (s) {
        case LocateStatus::Ok:
            return "ok";
        case LocateStatus::NeedMoreHead:
            return "need_more_head";
        case LocateStatus::NotHttp:
            return "not_http";
        case LocateStatus::BadHeaders:
            return "bad_headers";
    }
    return "unknown";
}

}  // namespace kvsteer
