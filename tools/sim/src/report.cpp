#include "report.h"

#include <fmt/format.h>

namespace kvsteer::sim {

std::string format_table(const std::vector<RunResult> &runs) {
    std::string s =
        fmt::format("{:<15} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>5}\n", "policy", "hit%",
                    "req/s", "tok/s", "ttft50ms", "ttft90ms", "ttft99ms", "imbal", "rej");
    for (const auto &r : runs)
        s += fmt::format(
            "{:<15} {:>7.2f} {:>8.3f} {:>9.0f} {:>9.1f} {:>9.1f} {:>9.1f} {:>6.3f} {:>5}\n",
            r.policy, 100 * r.hit_rate, r.req_per_s, r.tok_per_s, 1e3 * r.ttft_p50_s,
            1e3 * r.ttft_p90_s, 1e3 * r.ttft_p99_s, r.imbalance, r.rejected);
    return s;
}

nlohmann::json to_json(const RunResult &r) {
    return nlohmann::json{{"policy", r.policy},
                          {"servers", r.servers},
                          {"requests", r.requests},
                          {"completed", r.completed},
                          {"rejected", r.rejected},
                          {"hit_tokens", r.hit_tokens},
                          {"query_tokens", r.query_tokens},
                          {"hit_rate", r.hit_rate},
                          {"makespan_s", r.makespan_s},
                          {"req_per_s", r.req_per_s},
                          {"tok_per_s", r.tok_per_s},
                          {"out_tok_per_s", r.out_tok_per_s},
                          {"ttft_mean_s", r.ttft_mean_s},
                          {"ttft_p50_s", r.ttft_p50_s},
                          {"ttft_p90_s", r.ttft_p90_s},
                          {"ttft_p99_s", r.ttft_p99_s},
                          {"e2e_mean_s", r.e2e_mean_s},
                          {"imbalance", r.imbalance},
                          {"busy_s", r.busy_s},
                          {"routed", r.routed},
                          {"counters", r.counters},
                          {"wall_s", r.wall_s}};
}

}  // namespace kvsteer::sim
