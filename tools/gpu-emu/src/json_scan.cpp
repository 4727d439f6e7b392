#include "json_scan.h"

#include <cstddef>

namespace kvsteer::emu {
namespace {

constexpr size_t npos = std::string_view::npos;

size_t skip_ws(std::string_view s, size_t i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
    return i;
}

// s[i] == '"'; returns the index after the closing quote.
size_t end_of_string(std::string_view s, size_t i) {
    for (++i; i < s.size(); ++i) {
        if (s[i] == '\\')
            ++i;
        else if (s[i] == '"')
            return i + 1;
    }
    return npos;
}

size_t end_of_value(std::string_view s, size_t i) {
    if (i >= s.size()) return npos;
    if (s[i] == '"') return end_of_string(s, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < s.size()) {
            const char c = s[i];
            if (c == '"') {
                i = end_of_string(s, i);
                if (i == npos) return npos;
                continue;
            }
            if (c == '{' || c == '[') ++depth;
            if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            ++i;
        }
        return npos;
    }
    // number, true, false, null
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
        ++i;
    return i;
}

}  // namespace

std::optional<std::string_view> raw_top_level_value(std::string_view body, std::string_view key) {
    size_t i = skip_ws(body, 0);
    if (i >= body.size() || body[i] != '{') return std::nullopt;
    i = skip_ws(body, i + 1);
    std::optional<std::string_view> found;
    while (i < body.size() && body[i] == '"') {
        const size_t kend = end_of_string(body, i);
        if (kend == npos) return std::nullopt;
        const std::string_view k = body.substr(i + 1, kend - i - 2);
        i = skip_ws(body, kend);
        if (i >= body.size() || body[i] != ':') return std::nullopt;
        i = skip_ws(body, i + 1);
        const size_t vend = end_of_value(body, i);
        if (vend == npos) return std::nullopt;
        if (k == key) found = body.substr(i, vend - i);
        i = skip_ws(body, vend);
        if (i < body.size() && body[i] == ',')
            i = skip_ws(body, i + 1);
        else
            break;
    }
    return found;
}

}  // namespace kvsteer::emu
