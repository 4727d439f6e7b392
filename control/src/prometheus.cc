#include "kvsteer/control/prometheus.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <strings.h>

namespace kvsteer::control {

const std::string *PromSample::label(std::string_view k) const {
    for (const auto &[n, v] : labels)
        if (n == k) return &v;
    return nullptr;
}

namespace {

// A sample's labels: real pages have a handful. Each kept one costs ~70 bytes whatever its text
// (`a="",` is 5), so a cap per line and one per parse (kMaxLabelsPerSample a sample on average)
// bound what a hostile page makes kvsteerd hold.
constexpr std::size_t kMaxLabelsPerLine = 64, kMaxLabelsPerSample = 4;

bool name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool name_char(char c) {
    return name_start(c) || (c >= '0' && c <= '9');
}
bool label_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool label_char(char c) {
    return label_start(c) || (c >= '0' && c <= '9');
}

void skip_ws(std::string_view s, std::size_t &i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) i++;
}

// Go's strconv.ParseFloat forms that Prometheus emits: decimal, exponent, NaN, +Inf, -Inf.
std::optional<double> parse_value(std::string_view tok) {
    if (tok.empty() || tok.size() > 64) return std::nullopt;
    std::string_view t = tok;
    bool neg = false;
    if (t[0] == '+' || t[0] == '-') {
        neg = t[0] == '-';
        t.remove_prefix(1);
    }
    if (t.size() == 3 && strncasecmp(t.data(), "nan", 3) == 0) return std::nan("");
    if ((t.size() == 3 && strncasecmp(t.data(), "inf", 3) == 0) ||
        (t.size() == 8 && strncasecmp(t.data(), "infinity", 8) == 0))
        return neg ? -HUGE_VAL : HUGE_VAL;
    for (char c : t)
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'))
            return std::nullopt;  // no hex floats, no stray characters
    std::string buf(tok);
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(buf.c_str(), &end);
    if (end != buf.c_str() + buf.size() || end == buf.c_str()) return std::nullopt;
    return v;  // beyond the range: +-inf (refused as a metric's value later); below it: tiny or 0
}

// Parses one sample line; returns an error reason or empty on success.
std::string parse_sample(std::string_view line, PromSample &out) {
    std::size_t i = 0;
    if (i >= line.size() || !name_start(line[i])) return "metric name expected";
    std::size_t start = i;
    while (i < line.size() && name_char(line[i])) i++;
    out.name.assign(line.substr(start, i - start));
    skip_ws(line, i);
    if (i < line.size() && line[i] == '{') {
        i++;
        for (;;) {
            skip_ws(line, i);
            if (i < line.size() && line[i] == '}') {
                i++;
                break;
            }
            if (i >= line.size() || !label_start(line[i])) return "label name expected";
            std::size_t ls = i;
            while (i < line.size() && label_char(line[i])) i++;
            std::string lname(line.substr(ls, i - ls));
            skip_ws(line, i);
            if (i >= line.size() || line[i] != '=') return "'=' expected after label " + lname;
            i++;
            skip_ws(line, i);
            if (i >= line.size() || line[i] != '"') return "'\"' expected for label " + lname;
            i++;
            std::string val;
            bool closed = false;
            while (i < line.size()) {
                char c = line[i++];
                if (c == '"') {
                    closed = true;
                    break;
                }
                if (c == '\\') {
                    if (i >= line.size()) return "dangling escape in label " + lname;
                    char e = line[i++];
                    if (e == 'n')
                        val += '\n';
                    else if (e == '\\' || e == '"')
                        val += e;
                    else
                        return std::string("bad escape \\") + e + " in label " + lname;
                } else {
                    val += c;
                }
            }
            if (!closed) return "unterminated value of label " + lname;
            if (out.labels.size() >= kMaxLabelsPerLine)
                return "more than " + std::to_string(kMaxLabelsPerLine) + " labels";
            out.labels.emplace_back(std::move(lname), std::move(val));
            skip_ws(line, i);
            if (i < line.size() && line[i] == ',') {
                i++;
                continue;
            }
            if (i < line.size() && line[i] == '}') {
                i++;
                break;
            }
            return "',' or '}' expected in labels";
        }
    }
    skip_ws(line, i);
    std::size_t vs = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') i++;
    auto v = parse_value(line.substr(vs, i - vs));
    if (!v) return "bad value '" + std::string(line.substr(vs, i - vs)) + "'";
    out.value = *v;
    skip_ws(line, i);
    if (i < line.size()) {
        std::string_view ts = line.substr(i);
        while (!ts.empty() && (ts.back() == ' ' || ts.back() == '\t')) ts.remove_suffix(1);
        // OpenMetrics exemplars ("# {...} v") follow a space and '#'; ignore them.
        auto hash = ts.find(" #");
        if (ts.starts_with("#")) return {};
        if (hash != std::string_view::npos) ts = ts.substr(0, hash);
        std::int64_t t = 0;
        auto [p, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), t);
        if (ec != std::errc() || p != ts.data() + ts.size()) {
            // OpenMetrics timestamps are float seconds.
            auto f = parse_value(ts);
            // Out of int64 milliseconds (about 292 million years) is no timestamp either: the
            // conversion would be undefined.
            if (!f || !std::isfinite(*f) || std::fabs(*f) >= 9.2e15)
                return "bad timestamp '" + std::string(ts) + "'";
            t = static_cast<std::int64_t>(*f * 1000.0);
        }
        out.timestamp_ms = t;
    }
    return {};
}

}  // namespace

PromParse parse_prometheus(std::string_view text, std::size_t max_samples, const PromKeep &keep) {
    constexpr std::size_t kMaxTypes = 200000;  // TYPE lines kept, whatever the sample cap
    PromParse r;
    std::size_t lineno = 0, pos = 0, labels = 0;
    constexpr std::size_t kMaxLine = 64 * 1024;
    auto bad = [&](const std::string &why) {
        r.bad_lines++;
        if (r.first_error.empty()) r.first_error = "line " + std::to_string(lineno) + ": " + why;
    };
    // A bad sample line's metric name, when it begins with one.
    auto bad_name = [&](std::string_view line) {
        std::size_t i = 0;
        skip_ws(line, i);
        std::size_t e = i;
        while (e < line.size() && e - i < 256 && name_char(line[e])) e++;
        if (e == i || r.bad_names.size() >= 256) return;
        const std::string_view n = line.substr(i, e - i);
        for (const auto &b : r.bad_names)
            if (b == n) return;
        r.bad_names.emplace_back(n);
    };
    while (pos < text.size()) {
        std::size_t nl = text.find('\n', pos);
        std::string_view line =
            text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        lineno++;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (keep) {
            // A sample line of a metric not read is passed over here, whatever follows its name
            // (a comment has none: '#' begins no name).
            std::size_t b = line.find_first_not_of(" \t"), e = b;
            while (e < line.size() && e - b < 256 && name_char(line[e])) e++;
            if (b < line.size() && e > b && !keep(line.substr(b, e - b), true)) continue;
        }
        if (line.size() > kMaxLine) {
            bad("line longer than 64 KiB");
            bad_name(line);  // (none for a comment: '#' begins no name)
            continue;
        }
        std::size_t i = 0;
        skip_ws(line, i);
        line.remove_prefix(i);
        if (line.empty()) continue;
        if (line.find('\0') != std::string_view::npos) {
            bad("NUL byte");
            bad_name(line);
            continue;
        }
        if (line[0] == '#') {
            // "# TYPE name kind" is kept; HELP, EOF, UNIT and free comments are ignored.
            std::string_view rest = line.substr(1);
            std::size_t j = 0;
            skip_ws(rest, j);
            rest.remove_prefix(j);
            if (rest.starts_with("TYPE ") || rest.starts_with("TYPE\t")) {
                rest.remove_prefix(5);
                j = 0;
                skip_ws(rest, j);
                rest.remove_prefix(j);
                std::size_t e = 0;
                while (e < rest.size() && name_char(rest[e])) e++;
                std::string name(rest.substr(0, e));
                rest.remove_prefix(e);
                j = 0;
                skip_ws(rest, j);
                rest.remove_prefix(j);
                while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t'))
                    rest.remove_suffix(1);
                if (name.empty() || rest.empty()) {
                    bad("malformed TYPE line");
                } else if (keep && !keep(name, false)) {
                    continue;
                } else if (r.types.size() >= kMaxTypes) {
                    r.truncated = true;  // each kept one costs ~10x its line
                    break;
                } else {
                    r.types.emplace_back(std::move(name), std::string(rest));
                }
            }
            continue;
        }
        if (r.samples.size() >= max_samples) {
            r.truncated = true;
            break;
        }
        PromSample s;
        std::string err = parse_sample(line, s);
        if (!err.empty()) {
            bad(err);
            bad_name(line);
            continue;
        }
        labels += s.labels.size();
        if (labels > max_samples * kMaxLabelsPerSample) {
            r.truncated = true;
            break;
        }
        r.samples.push_back(std::move(s));
    }
    return r;
}

}  // namespace kvsteer::control
