// Prometheus text exposition format (0.0.4, and the OpenMetrics subset servers emit) parser.
#pragma once

#include <cstdint>
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
    bool truncated = false;   // input exceeded the line or size limit; the rest was skipped
};

// Never throws; bad lines are skipped and counted. At most `max_samples` samples (and 200,000
// TYPE lines) are kept: past them the rest is skipped and `truncated` set.
PromParse parse_prometheus(std::string_view text, std::size_t max_samples = 200000);

}  // namespace kvsteer::control
