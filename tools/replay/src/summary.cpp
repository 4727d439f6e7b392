#include "summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace kvsteer::replay {

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    const double rank = std::ceil(p / 100.0 * double(v.size()));
    const size_t i = size_t(std::clamp(rank, 1.0, double(v.size()))) - 1;
    return v[i];
}

nlohmann::json result_json(const Result &r, const ReplayConfig &cfg) {
    auto opt = [](double v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
    auto tri = [](int v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v == 1); };
    nlohmann::json j{
        {"i", r.index},
        {"line", r.line},
        {"sent", r.sent},
        {"ok", r.ok},
        {"status", r.status},
        {"sched_s", r.sched_s},
        {"start_s", opt(r.start_s)},
        {"ttft_s", opt(r.ttft_s)},
        {"e2e_s", opt(r.e2e_s)},
        {"prompt_bytes", r.prompt_bytes},
        {"body_bytes", r.body_bytes},
        {"input_tokens", r.input_tokens},
        {"max_tokens", r.max_tokens},
        {"usage_prompt_tokens",
         r.usage_prompt < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.usage_prompt)},
        {"usage_completion_tokens",
         r.usage_completion < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.usage_completion)},
        {"sse_events", r.sse_events},
        {"response_bytes", r.response_bytes},
        {"backend", r.backend},
        {"target", cfg.targets.empty() ? std::string() : cfg.targets[r.target].host},
        {"body_sha_ok", tri(r.body_sha_ok)},
        {"response_sha_ok", tri(r.response_sha_ok)}};
    if (!r.error.empty()) j["error"] = r.error;
    if (r.retries) j["retries"] = r.retries;
    return j;
}

nlohmann::json summarize(const std::vector<Result> &results, double wall_s, const ReplayConfig &cfg,
                         const std::vector<BackendCounters> &counters) {
    const double model_s = wall_s * cfg.time_scale;
    uint64_t sent = 0, ok = 0, failed = 0, in_tok = 0, out_tok = 0, body_bad = 0, resp_bad = 0,
             retried = 0;
    std::vector<double> ttft, e2e, tpot;
    std::map<std::string, uint64_t> per_backend, errors;
    for (const auto &r : results) {
        if (!r.sent) continue;
        ++sent;
        if (r.retries) ++retried;
        if (r.body_sha_ok == 0) ++body_bad;
        if (r.response_sha_ok == 0) ++resp_bad;
        if (!r.ok) {
            ++failed;
            std::string kind = r.error.substr(0, r.error.find(':'));
            ++errors[kind.empty() ? "unknown" : kind];
            continue;
        }
        ++ok;
        ++per_backend[r.backend.empty() ? "(none)" : r.backend];
        in_tok += r.usage_prompt > 0 ? uint64_t(r.usage_prompt) : r.input_tokens;
        out_tok += r.usage_completion > 0 ? uint64_t(r.usage_completion) : r.max_tokens;
        if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
        if (r.e2e_s >= 0) e2e.push_back(r.e2e_s);
        if (r.ttft_s >= 0 && r.e2e_s >= 0 && r.usage_completion > 1)
            tpot.push_back((r.e2e_s - r.ttft_s) / double(r.usage_completion - 1));
    }
    nlohmann::json s;
    s["requests"] = results.size();
    s["sent"] = sent;
    s["not_sent"] = results.size() - sent;
    s["ok"] = ok;
    s["failed"] = failed;
    s["retried"] = retried;
    s["errors"] = errors;
    s["body_digest_mismatch"] = body_bad;
    s["response_digest_mismatch"] = resp_bad;
    s["duration_s"] = model_s;
    s["wall_s"] = wall_s;
    s["time_scale"] = cfg.time_scale;
    s["req_per_s"] = model_s > 0 ? double(ok) / model_s : 0.0;
    s["input_tokens"] = in_tok;
    s["output_tokens"] = out_tok;
    s["input_tokens_per_s"] = model_s > 0 ? double(in_tok) / model_s : 0.0;
    s["output_tokens_per_s"] = model_s > 0 ? double(out_tok) / model_s : 0.0;
    for (auto [name, v] : {std::pair<const char *, std::vector<double> *>{"ttft", &ttft},
                           {"e2e", &e2e},
                           {"tpot", &tpot}}) {
        double mean = 0;
        for (double x : *v) mean += x;
        s[fmt::format("{}_samples", name)] = v->size();
        s[fmt::format("{}_mean_s", name)] = v->empty() ? -1.0 : mean / double(v->size());
        for (double p : {50.0, 90.0, 99.0})
            s[fmt::format("{}_p{}_s", name, int(p))] = percentile(*v, p);
    }
    s["per_backend"] = per_backend;

    nlohmann::json pc = nlohmann::json::array();
    double dq = 0, dh = 0;
    bool any = false, all = true;
    for (const auto &c : counters) {
        nlohmann::json b{{"url", c.url}, {"ok", c.ok}};
        if (c.ok) {
            const double q = c.queries_after - c.queries_before, h = c.hits_after - c.hits_before;
            b["queries"] = q;
            b["hits"] = h;
            b["hit_rate"] = q > 0 ? nlohmann::json(h / q) : nlohmann::json(nullptr);
            dq += q;
            dh += h;
            any = true;
        } else {
            b["error"] = c.error;
            all = false;
        }
        pc.push_back(b);
    }
    s["backend_metrics"] = pc;
    s["prefix_cache_queries"] = dq;
    s["prefix_cache_hits"] = dh;
    // Over every server or none: a rate over the servers whose scrapes worked would compare arms
    // over different sets of servers.
    s["backend_metrics_complete"] = all;
    s["prefix_cache_hit_rate"] =
        any && all && dq > 0 ? nlohmann::json(dh / dq) : nlohmann::json(nullptr);
    return s;
}

std::string human_summary(const nlohmann::json &s) {
    auto ms = [&](const char *k) {
        const double v = s[k].get<double>();
        return v < 0 ? std::string("-") : fmt::format("{:.1f}", v * 1e3);
    };
    std::string o = fmt::format(
        "requests {} sent {} ok {} failed {} not_sent {} | {:.2f} req/s, {:.0f} in tok/s, "
        "{:.0f} out tok/s over {:.2f} s (time scale {})\n",
        s["requests"].get<uint64_t>(), s["sent"].get<uint64_t>(), s["ok"].get<uint64_t>(),
        s["failed"].get<uint64_t>(), s["not_sent"].get<uint64_t>(), s["req_per_s"].get<double>(),
        s["input_tokens_per_s"].get<double>(), s["output_tokens_per_s"].get<double>(),
        s["duration_s"].get<double>(), s["time_scale"].get<double>());
    o +=
        fmt::format("TTFT ms p50 {} p90 {} p99 {} | E2E ms p50 {} p90 {} p99 {} | TPOT ms p50 {}\n",
                    ms("ttft_p50_s"), ms("ttft_p90_s"), ms("ttft_p99_s"), ms("e2e_p50_s"),
                    ms("e2e_p90_s"), ms("e2e_p99_s"), ms("tpot_p50_s"));
    o += "per backend:";
    for (const auto &[k, v] : s["per_backend"].items())
        o += fmt::format(" {}={}", k, v.get<uint64_t>());
    o += "\n";
    if (s["retried"].get<uint64_t>())
        o += fmt::format(
            "retried {}: sent again on a new connection (the kept-alive one closed first)\n",
            s["retried"].get<uint64_t>());
    if (!s["errors"].empty()) {
        o += "errors:";
        for (const auto &[k, v] : s["errors"].items())
            o += fmt::format(" {}={}", k, v.get<uint64_t>());
        o += "\n";
    }
    if (s["body_digest_mismatch"].get<uint64_t>() || s["response_digest_mismatch"].get<uint64_t>())
        o += fmt::format("DIGEST MISMATCH: request bodies {} response bodies {}\n",
                         s["body_digest_mismatch"].get<uint64_t>(),
                         s["response_digest_mismatch"].get<uint64_t>());
    if (!s["backend_metrics"].empty()) {
        const auto &hr = s["prefix_cache_hit_rate"];
        o += fmt::format(
            "prefix cache (backend counters): hits {:.0f} / queries {:.0f} = {}\n",
            s["prefix_cache_hits"].get<double>(), s["prefix_cache_queries"].get<double>(),
            hr.is_null() ? std::string("n/a") : fmt::format("{:.1f}%", hr.get<double>() * 100));
        for (const auto &b : s["backend_metrics"]) {
            if (!b["ok"].get<bool>()) {
                o += fmt::format("  {}: scrape failed: {}\n", b["url"].get<std::string>(),
                                 b["error"].get<std::string>());
                continue;
            }
            o += fmt::format("  {}: hits {:.0f} / queries {:.0f}{}\n", b["url"].get<std::string>(),
                             b["hits"].get<double>(), b["queries"].get<double>(),
                             b["hit_rate"].is_null()
                                 ? std::string()
                                 : fmt::format(" = {:.1f}%", b["hit_rate"].get<double>() * 100));
        }
    }
    return o;
}

}  // namespace kvsteer::replay
