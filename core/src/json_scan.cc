#include "json_scan.h"

#include <array>
#include <cstring>

namespace kvsteer {
namespace {

constexpr std::size_t kEnd = static_cast<std::size_t>(-1);  // truncated or malformed

// Bytes that matter while skipping a nested value: quotes and brackets.
constexpr std::array<bool, 256> kStructural = [] {
    std::array<bool, 256> t{};
    for (const char c : {'"', '{', '}', '[', ']'}) t[static_cast<std::uint8_t>(c)] = true;
    return t;
}();

struct Scanner {
    const std::uint8_t *b;
    std::size_t n;

    std::size_t skip_ws(std::size_t i) const {
        while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) ++i;
        return i;
    }

    // `i` is just after an opening quote; returns the index after the closing quote. A quote
    // preceded by an odd run of backslashes is escaped (the run cannot cross the opening quote).
    std::size_t skip_string(std::size_t i) const {
        const std::size_t start = i;
        while (i < n) {
            const void *q = std::memchr(b + i, '"', n - i);
            if (q == nullptr) return kEnd;
            const std::size_t k =
                static_cast<std::size_t>(static_cast<const std::uint8_t *>(q) - b);
            std::size_t bs = 0;
            while (k - bs > start && b[k - bs - 1] == '\\') ++bs;
            if ((bs & 1u) == 0) return k + 1;
            i = k + 1;
        }
        return kEnd;
    }

    // `i` is at '{' or '['; returns the index after the matching close (brackets are counted,
    // not matched by type: we only need the extent, the server validates the JSON).
    std::size_t skip_nested(std::size_t i) const {
        std::size_t depth = 0;
        while (i < n) {
            if (!kStructural[b[i]]) {
                ++i;
                continue;
            }
            const std::uint8_t c = b[i];
            if (c == '"') {
                i = skip_string(i + 1);
                if (i == kEnd) return kEnd;
                continue;
            }
            if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            ++i;
        }
        return kEnd;
    }

    // Number / true / false / null: up to a delimiter. A scalar running into the end of the
    // buffer may continue in bytes we do not have, so it counts as truncated.
    std::size_t skip_scalar(std::size_t i) const {
        const std::size_t start = i;
        while (i < n) {
            const std::uint8_t c = b[i];
            if (c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r')
                return i == start ? kEnd : i;
            if (c == '"' || c == '{' || c == '[' || c == ':') return kEnd;
            ++i;
        }
        return kEnd;
    }

    std::size_t skip_value(std::size_t i) const {
        if (i >= n) return kEnd;
        switch (b[i]) {
            case '"':
                return skip_string(i + 1);
            case '{':
            case '[':
                return skip_nested(i);
            default:
                return skip_scalar(i);
        }
    }
};

bool bytes_equal(const std::uint8_t *p, std::size_t len, std::string_view s) {
    return len == s.size() && std::memcmp(p, s.data(), len) == 0;
}

}  // namespace

JsonTopScan scan_top_level(std::span<const std::uint8_t> body, std::string_view want,
                           bool allow_string) noexcept {
    JsonTopScan out;
    const Scanner s{body.data(), body.size()};
    std::size_t i = 0;
    if (s.n >= 3 && s.b[0] == 0xef && s.b[1] == 0xbb && s.b[2] == 0xbf) i = 3;  // UTF-8 BOM
    i = s.skip_ws(i);
    if (i >= s.n || s.b[i] != '{') return out;
    i = s.skip_ws(i + 1);
    while (i < s.n && s.b[i] == '"') {
        const std::size_t name = i + 1;
        const std::size_t after_name = s.skip_string(name);
        if (after_name == kEnd) return out;
        const std::size_t name_len = after_name - 1 - name;
        i = s.skip_ws(after_name);
        if (i >= s.n || s.b[i] != ':') return out;
        i = s.skip_ws(i + 1);
        if (i >= s.n) return out;

        const std::size_t value = i;
        const std::size_t after = s.skip_value(value);
        if (bytes_equal(s.b + name, name_len, want)) {
            const std::uint8_t c = s.b[value];
            const bool type_ok = c == '[' || (allow_string && c == '"');
            out.found_key = type_ok;
            if (type_ok) {
                out.key_off = value;
                out.key_end = after == kEnd ? s.n : after;
                out.key_complete = after != kEnd;
                out.key_model_off = out.model_off;
                out.key_model_len = out.model_len;
            }
        } else if (bytes_equal(s.b + name, name_len, "model")) {
            if (s.b[value] == '"' && after != kEnd) {
                out.model_off = value + 1;
                out.model_len = after - 1 - out.model_off;
            } else {
                out.model_len = 0;  // not a (complete) string: no model
            }
        }
        if (after == kEnd) return out;
        i = s.skip_ws(after);
        if (i >= s.n || s.b[i] != ',') return out;  // '}' ends the object; anything else is bad
        i = s.skip_ws(i + 1);
    }
    return out;
}

}  // namespace kvsteer
