#include "trace.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>

namespace kvsteer::replay {
namespace {

uint64_t splitmix64(uint64_t &x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

constexpr const char *kWords[] = {
    "alpha",  "bravo",   "cache",  "delta",  "engine", "fabric", "gamma",  "harbor",
    "index",  "journal", "kernel", "lambda", "matrix", "neuron", "offset", "packet",
    "quorum", "router",  "socket", "tensor", "update", "vector", "window", "xenon",
    "yield",  "zenith",  "block",  "prefix", "token",  "stream", "batch",  "shard"};

// Separate id spaces so synthetic segments never collide with each other.
constexpr uint64_t kSystemTag = 1ULL << 62;
constexpr uint64_t kQuestionTag = 1ULL << 63;

// The block ids of "hash_ids": integers, or inclusive ranges [first, last] standing for
// first, first+1, ..., last (the compact form of the shipped demo trace). Stops past `max`
// ids so a huge range cannot allocate unbounded memory. Returns "" or what is wrong.
std::string expand_hash_ids(const nlohmann::json &h, uint64_t max, std::vector<uint64_t> &ids) {
    for (size_t i = 0; i < h.size(); ++i) {
        const auto &e = h[i];
        if (e.is_number_integer() && e.get<int64_t>() >= 0) {
            ids.push_back(e.get<uint64_t>());
        } else if (e.is_array() && e.size() == 2 && e[0].is_number_integer() &&
                   e[1].is_number_integer() && e[0].get<int64_t>() >= 0 &&
                   e[1].get<int64_t>() >= e[0].get<int64_t>()) {
            const uint64_t first = e[0].get<uint64_t>(), last = e[1].get<uint64_t>();
            if (last - first >= max) return fmt::format("hash_ids[{}]: range longer than input", i);
            for (uint64_t id = first; id <= last; ++id) ids.push_back(id);
        } else {
            return fmt::format(
                "hash_ids[{}] is neither a non-negative integer nor a range [first, last]", i);
        }
        if (ids.size() > max) break;
    }
    return "";
}

}  // namespace

void append_block_text(std::string &out, uint64_t id, uint64_t n) {
    const size_t start = out.size();
    out.reserve(start + n);
    // The tag is a mix of the id (16 hex digits), so ids differing only in high bits (the
    // synthetic id spaces) still differ within the first 17 bytes.
    uint64_t state = id ^ 0x6b7673746565722aULL;
    uint64_t tag_state = id;
    std::string s = fmt::format("<{:016x}>", splitmix64(tag_state));
    while (out.size() - start < n) {
        if (s.empty()) {
            const uint64_t r = splitmix64(state);
            s = " ";
            s += kWords[r % (sizeof(kWords) / sizeof(kWords[0]))];
        }
        const uint64_t take = std::min<uint64_t>(s.size(), n - (out.size() - start));
        out.append(s, 0, take);
        s.clear();
    }
}

std::string prompt_text(const WorkItem &w) {
    uint64_t total = 0;
    for (const auto &s : w.segments) total += s.bytes;
    std::string out;
    out.reserve(total);
    for (const auto &s : w.segments) append_block_text(out, s.id, s.bytes);
    return out;
}

size_t select_trace(std::vector<WorkItem> &items, uint64_t max_input_tokens, uint64_t limit) {
    const size_t before = items.size();
    if (max_input_tokens)
        std::erase_if(items, [&](const WorkItem &w) { return w.input_tokens > max_input_tokens; });
    const size_t dropped = before - items.size();
    std::stable_sort(items.begin(), items.end(),
                     [](const WorkItem &a, const WorkItem &b) { return a.t_s < b.t_s; });
    if (limit && items.size() > limit) items.resize(limit);
    if (!items.empty()) {
        const double t0 = items.front().t_s;
        for (auto &w : items) w.t_s -= t0;
    }
    return dropped;
}

ParseResult parse_mooncake(std::istream &in, const TextGeometry &g, uint64_t limit,
                           size_t max_errors) {
    ParseResult r;
    std::string line;
    uint64_t lineno = 0;
    const uint64_t block_bytes = uint64_t(g.block_tokens) * g.bytes_per_token;
    auto err = [&](const std::string &what) {
        if (r.errors.size() < max_errors)
            r.errors.push_back(fmt::format("line {}: {}", lineno, what));
    };
    while (std::getline(in, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        if (limit && r.items.size() >= limit) break;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) {
            err("not valid JSON");
            continue;
        }
        if (!j.is_object()) {
            err("not a JSON object");
            continue;
        }
        const char *need[] = {"timestamp", "input_length", "output_length", "hash_ids"};
        bool ok = true;
        for (const char *k : need)
            if (!j.contains(k)) {
                err(fmt::format("missing \"{}\"", k));
                ok = false;
                break;
            }
        if (!ok) continue;
        if (!j["timestamp"].is_number() || j["timestamp"].get<double>() < 0) {
            err("\"timestamp\" must be a number >= 0 (ms)");
            continue;
        }
        if (!j["input_length"].is_number_integer() || j["input_length"].get<int64_t>() <= 0) {
            err("\"input_length\" must be an integer > 0");
            continue;
        }
        if (!j["output_length"].is_number_integer() || j["output_length"].get<int64_t>() < 0) {
            err("\"output_length\" must be an integer >= 0");
            continue;
        }
        const auto &h = j["hash_ids"];
        if (!h.is_array() || h.empty()) {
            err("\"hash_ids\" must be a non-empty array");
            continue;
        }
        WorkItem w;
        w.line = lineno;
        w.t_s = j["timestamp"].get<double>() / 1000.0;
        w.input_tokens = j["input_length"].get<uint64_t>();
        w.output_tokens = uint32_t(std::max<int64_t>(j["output_length"].get<int64_t>(), 1));
        const uint64_t total = w.input_tokens * g.bytes_per_token;
        const uint64_t nblocks = (w.input_tokens + g.block_tokens - 1) / g.block_tokens;
        std::vector<uint64_t> ids;
        const std::string bad = expand_hash_ids(h, nblocks, ids);
        if (!bad.empty()) {
            err(bad);
            continue;
        }
        if (ids.size() != nblocks) {
            err(fmt::format("{} hash_ids for input_length {} (expected ceil({}/{}) = {})",
                            ids.size(), w.input_tokens, w.input_tokens, g.block_tokens, nblocks));
            continue;
        }
        for (size_t i = 0; i < ids.size(); ++i) {
            const uint64_t off = i * block_bytes;
            w.segments.push_back({ids[i], std::min(block_bytes, total - off)});
        }
        r.items.push_back(std::move(w));
    }
    return r;
}

std::vector<WorkItem> shared_prefix_workload(const SharedPrefixSpec &s, const TextGeometry &g) {
    std::vector<WorkItem> v;
    v.reserve(size_t(s.groups) * s.prompts_per_group);
    for (uint32_t grp = 0; grp < s.groups; ++grp) {
        for (uint32_t p = 0; p < s.prompts_per_group; ++p) {
            WorkItem w;
            w.input_tokens = uint64_t(s.system_prompt_len) + s.question_len;
            w.output_tokens = std::max<uint32_t>(s.output_len, 1);
            w.segments.push_back(
                {kSystemTag | grp, uint64_t(s.system_prompt_len) * g.bytes_per_token});
            w.segments.push_back({kQuestionTag | (uint64_t(grp) << 32) | p,
                                  uint64_t(s.question_len) * g.bytes_per_token});
            v.push_back(std::move(w));
        }
    }
    std::mt19937_64 rng(s.seed);
    std::shuffle(v.begin(), v.end(), rng);
    for (size_t i = 0; i < v.size(); ++i) v[i].line = i;
    return v;
}

std::string request_body(const WorkItem &w, const BodyOptions &o) {
    std::string b = "{\"model\":" + nlohmann::json(o.model).dump();
    if (o.api == ApiKind::Chat)
        b += ",\"messages\":[{\"role\":\"user\",\"content\":\"";
    else
        b += ",\"prompt\":\"";
    b += prompt_text(w);  // JSON-safe by construction: no quotes, backslashes or controls
    b += o.api == ApiKind::Chat ? "\"}]" : "\"";
    b += fmt::format(",\"max_tokens\":{},\"ignore_eos\":true", w.output_tokens);
    if (o.stream) b += ",\"stream\":true,\"stream_options\":{\"include_usage\":true}";
    b += "}";
    return b;
}

void poisson_arrivals(std::vector<WorkItem> &items, double qps, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> gap(qps);
    double t = 0;
    for (auto &w : items) {
        w.t_s = t;
        t += gap(rng);
    }
}

}  // namespace kvsteer::replay
