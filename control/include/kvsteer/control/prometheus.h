// Prometheus text exposition format (0.0.4, and the OpenMetrics subset servers emit) parser.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvsteer::control {

struct PromSample {
    std::string name;
    std::vector<std::pair<std::string, std::string>> labels;  // unescaped values
    double value = 0;                                         // may be NaN or +-Inf
    std::optional<std::int64_t> timestamp_ms;
    const std::string *label(std::string_view k) const;
};

struct PromParse {
    std::vector<PromSample> samples;
    std::vector<std::pair<std::string, std::string>> types;  // metric family -> counter/gauge/...
    std::size_t bad_lines = 0;
    std::string first_error;  // "line N: why"
    // Metric names of bad sample lines, where the line began with one (at most 256 distinct): a
    // sum over the rest of such a metric's lines would be a wrong value, not an unknown one.
    std::vector<std::string> bad_names;
    bool truncated = false;  // input exceeded the line or size limit; the rest was skipped
};

// Which metrics to read: given a metric name, whether to parse and keep its sample line
// (`sample`) or its TYPE line.
using PromKeep = std::function<bool(std::string_view name, bool sample)>;

// Never throws; bad lines are skipped and counted (a sample with more than 64 labels is one). At
// most `max_samples` samples with 4 x `max_samples` labels in all (and 200,000 TYPE lines) are
// kept: past them the rest is skipped and `truncated` set. With `keep`, a sample
// line of a metric it refuses is passed over once its name is read (its labels and value are
// not parsed, nor counted bad, however long or with NULs; a /metrics page is mostly histogram
// buckets no one reads), and only the TYPE lines of kept names are kept.
PromParse parse_prometheus(std::string_view text, std::size_t max_samples = 200000,
                           const PromKeep &keep = {});

}  // namespace kvsteer::control
