// libFuzzer target: the Prometheus text-exposition parser kvsteerd runs on every backend's
// /metrics (a backend is not trusted to send well-formed text). Besides memory safety
// (ASan/UBSan), it checks the parser's promises: every sample named, no more samples and bad lines
// than lines, a bad line counted with a one-line reason, and a cap that cuts the parse keeps
// the first samples of the whole parse, at most the cap (the same ones, the same first error). The
// telemetry kvsteerd reads (read_telemetry: only the metrics read are parsed) keeps a subsequence
// of the whole parse's samples, its values are in range, and where it finds the server of the same
// kind as the whole parse does, the values are the same.
//
// Speed: one whole parse, then one parse whose cap is always below the whole parse's sample count,
// so it stops early (a cap the input never reaches would only repeat the whole parse).
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "kvsteer/control/prometheus.h"
#include "kvsteer/control/telemetry.h"

#include "../fuzz_help.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool same_value(double a, double b) {
    return a == b || (std::isnan(a) && std::isnan(b));
}

bool same_sample(const kvsteer::control::PromSample &a, const kvsteer::control::PromSample &b) {
    return a.name == b.name && a.labels == b.labels && same_value(a.value, b.value) &&
           a.timestamp_ms == b.timestamp_ms;
}

bool valid_error(const kvsteer::control::PromParse &p) {
    if (p.bad_lines == 0) return p.first_error.empty();
    return p.first_error.starts_with("line ") && p.first_error.find('\n') == std::string::npos;
}

bool in(const std::optional<double> &v, double hi) {
    return !v || (std::isfinite(*v) && *v >= 0 && *v <= hi);
}

// Lines in the text, as the parser splits them (memchr: the count itself is not instrumented).
std::size_t count_lines(const char *p, std::size_t n) {
    std::size_t lines = 1;
    for (const char *end = p + n; (p = static_cast<const char *>(std::memchr(p, '\n', end - p)));
         p++)
        lines++;
    return lines;
}

}  // namespace

KVS_FUZZ_HELP(
    "The Prometheus text-exposition parser kvsteerd runs on every backend's /metrics\n(ASan + "
    "UBSan; the parser's promises checked).")

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace kvsteer::control;
    const char *chars = reinterpret_cast<const char *>(data);
    const std::string_view text(chars, size);

    const PromParse all = parse_prometheus(text);
    const std::size_t lines = count_lines(chars, size);
    check(all.samples.size() + all.bad_lines <= lines);
    if (lines < 200000) check(!all.truncated);  // the default cap is 200000 samples
    check(valid_error(all));
    for (const auto &s : all.samples) {
        check(!s.name.empty() && !std::isdigit(static_cast<unsigned char>(s.name[0])));
        for (const auto &[k, v] : s.labels) check(!k.empty());
    }
    for (const auto &[name, kind] : all.types) check(!name.empty() && !kind.empty());

    // A cap below the sample count (0 when there is none) cuts the parse where it is reached.
    const std::size_t n = all.samples.size();
    const std::size_t cap = n == 0 ? 0 : size % n;
    const PromParse p = parse_prometheus(text, cap);
    // (Fewer only where the cap's labels, 4 a sample, ran out at the next one.)
    check(p.samples.size() <= cap && p.bad_lines <= all.bad_lines && valid_error(p));
    if (p.samples.size() < cap) {
        std::size_t labels = 0;
        for (std::size_t i = 0; i <= p.samples.size(); i++) labels += all.samples[i].labels.size();
        check(labels > 4 * cap);
    }
    check(p.types.size() <= all.types.size());
    if (n > 0) check(p.truncated);
    if (n == 0 && p.truncated) check(all.bad_lines > 0);  // only bad lines stood to be cut
    if (!p.truncated) check(p.bad_lines == all.bad_lines && p.types.size() == all.types.size());
    for (std::size_t i = 0; i < p.samples.size(); i++)
        check(same_sample(p.samples[i], all.samples[i]));
    for (std::size_t i = 0; i < p.types.size(); i++) check(p.types[i] == all.types[i]);
    if (p.bad_lines > 0) check(p.first_error == all.first_error);

    PromParse kept;
    const Telemetry r = read_telemetry(text, &kept), e = extract_telemetry(all);
    check(kept.bad_lines <= all.bad_lines && !kept.truncated);
    std::size_t j = 0;  // kept.samples: a subsequence of all.samples
    for (const auto &s : kept.samples) {
        while (j < n && !same_sample(all.samples[j], s)) j++;
        check(j < n);
        j++;
    }
    for (const auto &v : {r.running, r.waiting}) check(in(v, 1e9));
    for (const auto &v : {r.kv_usage, r.hit_rate}) check(in(v, 1.0));
    for (const auto &v : {r.prefix_queries, r.prefix_hits}) check(in(v, 1e18));
    // The whole parse names at most 256 bad metrics: past them it may sum what read_telemetry,
    // which names every bad line of a metric it reads, rightly calls unknown.
    if (r.flavor == e.flavor && all.bad_names.size() < 256) {
        check(r.running == e.running && r.waiting == e.waiting && r.kv_usage == e.kv_usage);
        check(r.prefix_queries == e.prefix_queries && r.prefix_hits == e.prefix_hits);
        check(r.hit_rate == e.hit_rate && r.start_time == e.start_time && r.problems == e.problems);
    }
    return 0;
}
