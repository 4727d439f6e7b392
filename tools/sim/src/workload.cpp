#include "workload.h"

#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <xxhash.h>

#include "kvsteer/model/block_hash.h"

namespace kvsteer::sim {
namespace {

// The replayer's request head (tools/replay/src/replayer.cpp), so the first flight has the same
// bytes in front of the body as on the wire.
// `session_header`: a header line ("X-Session-ID: conv-7\r\n") or empty.
std::string request_head(replay::ApiKind api, size_t body_bytes,
                         const std::string &session_header) {
    const char *path = api == replay::ApiKind::Chat ? "/v1/chat/completions" : "/v1/completions";
    return fmt::format(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kvsteer-replay\r\n"
        "Content-Type: application/json\r\nAccept: */*\r\n{}"
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        path, "10.90.0.1:8000", session_header, body_bytes, "keep-alive");
}

// What the emulated server hashes: the raw "messages" value (chat) or the prompt string.
std::string_view server_prompt(std::string_view body, replay::ApiKind api) {
    const std::string_view key = api == replay::ApiKind::Chat ? ",\"messages\":" : ",\"prompt\":\"";
    const size_t b = body.find(key);
    const size_t e = body.rfind(",\"max_tokens\":");
    if (b == std::string_view::npos || e == std::string_view::npos || e < b + key.size())
        throw std::logic_error("request_body shape changed: cannot find the prompt");
    size_t start = b + key.size(), end = e;
    if (api == replay::ApiKind::Completions) --end;  // closing quote
    return body.substr(start, end - start);
}

void build_one(const replay::WorkItem &w, const WorkloadOptions &o, SimRequest &r) {
    replay::BodyOptions bo;
    bo.api = o.api;
    bo.model = o.model;
    bo.stream = true;
    const std::string body = replay::request_body(w, bo);
    const std::string_view prompt = server_prompt(body, o.api);
    const uint64_t block_bytes = uint64_t(o.kv_block_tokens) * o.bytes_per_token;
    r.base_t = w.t_s;
    r.output_tokens = std::max<uint32_t>(w.output_tokens, 1);
    r.prompt_bytes = prompt.size();
    r.prompt_tokens = (prompt.size() + o.bytes_per_token - 1) / o.bytes_per_token;
    r.blocks = model::chain_block_hashes(prompt, block_bytes);
    const uint64_t full = r.blocks.size() * block_bytes;
    r.tail = 0;
    if (full < prompt.size()) {
        const uint64_t seed = r.blocks.empty() ? model::kChainSeed : r.blocks.back();
        r.tail = XXH3_64bits_withSeed(prompt.data() + full, prompt.size() - full, seed) | 1;
    }
    std::string session;
    if (!o.session_header.empty() && o.session_per_request)
        session = fmt::format("{}: req-{}\r\n", o.session_header, w.line);
    else if (!o.session_header.empty() && w.session != 0)
        session = fmt::format("{}: conv-{}\r\n", o.session_header, w.session);
    std::string head = request_head(o.api, body.size(), session);
    r.first_flight = std::move(head);
    const size_t room =
        o.first_flight_cap > r.first_flight.size() ? o.first_flight_cap - r.first_flight.size() : 0;
    r.first_flight.append(body, 0, std::min(room, body.size()));
    r.source_line = w.line;
}

}  // namespace

Workload from_items(std::string name, std::vector<replay::WorkItem> items,
                    const WorkloadOptions &o) {
    Workload wl;
    wl.name = std::move(name);
    wl.reqs.resize(items.size());
    // Two builders: prompt text generation and hashing dominate start-up on long traces.
    const unsigned n_threads = items.size() > 256 ? 2 : 1;
    std::vector<std::thread> th;
    for (unsigned k = 0; k < n_threads; ++k)
        th.emplace_back([&, k] {
            for (size_t i = k; i < items.size(); i += n_threads) build_one(items[i], o, wl.reqs[i]);
        });
    for (auto &t : th) t.join();
    for (const auto &r : wl.reqs) wl.span_s = std::max(wl.span_s, r.base_t);
    return wl;
}

Workload load_mooncake(const std::string &path, uint64_t limit, const WorkloadOptions &o) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("cannot read trace file '{}'", path));
    replay::TextGeometry g;
    g.block_tokens = 512;
    g.bytes_per_token = o.bytes_per_token;
    // The whole file is read: the first `limit` are the earliest arrivals (after a token cap's
    // skips), not the first lines.
    replay::ParseResult pr = replay::parse_mooncake(in, g, 0);
    if (!pr.errors.empty()) {
        std::string msg =
            fmt::format("trace file '{}' is not a Mooncake trace: {}", path, pr.errors.front());
        for (size_t i = 1; i < pr.errors.size() && i < 3; ++i) msg += "; " + pr.errors[i];
        if (pr.errors.size() > 3)
            msg += fmt::format("; ... ({} bad lines or more)", pr.errors.size());
        throw std::runtime_error(msg);
    }
    // kvsteer-replay's selection (replay::select_trace): skip, sort by arrival, limit, times from
    // the first arrival. Always: a trace whose times start far from 0 (epoch milliseconds) waited
    // that long in simulated time (kvsteerd's rounds ticking through it: a run that never ended).
    replay::select_trace(pr.items, o.max_input_tokens, limit);
    if (pr.items.empty())
        throw std::runtime_error(fmt::format("trace file '{}' holds no request", path));
    std::string name = path;
    if (auto p = name.find_last_of('/'); p != std::string::npos) name = name.substr(p + 1);
    return from_items(name, std::move(pr.items), o);
}

Workload make_shared_prefix(const replay::SharedPrefixSpec &s, const WorkloadOptions &o) {
    replay::TextGeometry g;
    g.bytes_per_token = o.bytes_per_token;
    auto items = replay::shared_prefix_workload(s, g);
    if (items.empty())
        throw std::runtime_error(
            "shared-prefix workload is empty (groups or prompts per group is 0)");
    return from_items(
        fmt::format("shared-prefix {}x{} sys{} q{} out{}", s.groups, s.prompts_per_group,
                    s.system_prompt_len, s.question_len, s.output_len),
        std::move(items), o);
}

std::vector<replay::WorkItem> conversation_items(const ConversationSpec &s,
                                                 const replay::TextGeometry &g) {
    // Segment ids: both top bits set (apart from the trace's ids and the shared-prefix tags),
    // then the session + 1, the turn and user (0) or reply (1); kTag alone is the system prompt
    // (session 0's first user turn had its id, and so its text).
    constexpr uint64_t kTag = 3ULL << 62;
    auto seg_id = [&](uint64_t session, uint64_t turn, uint64_t reply) {
        return kTag | ((session + 1) << 24) | (turn << 1) | reply;
    };
    std::vector<replay::WorkItem> v;
    if (s.sessions == 0 || s.turns == 0) return v;
    std::mt19937_64 rng(s.seed);
    std::exponential_distribution<double> session_gap(s.session_rate > 0 ? s.session_rate : 1.0);
    std::exponential_distribution<double> think(s.think_s > 0 ? 1.0 / s.think_s : 1.0);
    std::uniform_int_distribution<uint32_t> n_turns(1, 2 * s.turns - 1);
    const uint32_t ulo = std::max<uint32_t>(1, s.user_len / 2);
    std::uniform_int_distribution<uint32_t> user_tokens(ulo,
                                                        std::max(ulo, s.user_len + s.user_len / 2));
    const uint64_t bpt = g.bytes_per_token;
    double start = 0;
    for (uint32_t sess = 0; sess < s.sessions; ++sess) {
        if (sess > 0) start += session_gap(rng);
        const uint32_t turns = std::min<uint32_t>(n_turns(rng), 1u << 22);
        std::vector<replay::Segment> history{{kTag, uint64_t(s.system_prompt_len) * bpt}};
        uint64_t tokens = s.system_prompt_len;
        double t = start;
        for (uint32_t turn = 0; turn < turns; ++turn) {
            if (turn > 0) t += s.think_s > 0 ? think(rng) : 0.0;
            const uint32_t u = user_tokens(rng);
            history.push_back({seg_id(sess, turn, 0), u * bpt});
            tokens += u;
            replay::WorkItem w;
            w.t_s = t;
            w.input_tokens = tokens;
            w.output_tokens = std::max<uint32_t>(s.output_len, 1);
            w.segments = history;
            w.session = uint64_t(sess) + 1;
            v.push_back(std::move(w));
            // The reply becomes part of the next turn's prompt.
            history.push_back({seg_id(sess, turn, 1), uint64_t(s.output_len) * bpt});
            tokens += s.output_len;
        }
    }
    std::stable_sort(v.begin(), v.end(), [](const replay::WorkItem &a, const replay::WorkItem &b) {
        return a.t_s < b.t_s;
    });
    for (size_t i = 0; i < v.size(); ++i) v[i].line = i;
    return v;
}

Workload make_conversation(const ConversationSpec &s, const WorkloadOptions &o) {
    replay::TextGeometry g;
    g.bytes_per_token = o.bytes_per_token;
    auto items = conversation_items(s, g);
    if (items.empty())
        throw std::runtime_error("conversation workload is empty (sessions or turns is 0)");
    // Each turn after a session's first waits for the one before it (its prompt holds that
    // turn's reply): closed loop, the think time after that reply.
    std::vector<int64_t> after(items.size(), -1);
    std::unordered_map<uint64_t, int64_t> last;
    for (size_t i = 0; i < items.size(); ++i) {
        auto [it, fresh] = last.try_emplace(items[i].session, int64_t(i));
        if (!fresh) {
            after[i] = it->second;
            it->second = int64_t(i);
        }
    }
    Workload w =
        from_items(fmt::format("conversation {} sessions x{} turns sys{} user{} out{}", s.sessions,
                               s.turns, s.system_prompt_len, s.user_len, s.output_len),
                   std::move(items), o);
    for (size_t i = 0; i < w.reqs.size(); ++i) w.reqs[i].after = after[i];
    return w;
}

std::vector<double> arrivals(const Workload &w, double speed, double qps, uint64_t seed) {
    std::vector<double> t(w.reqs.size());
    if (qps > 0) {
        std::vector<replay::WorkItem> tmp(w.reqs.size());
        replay::poisson_arrivals(tmp, qps, seed);
        for (size_t i = 0; i < tmp.size(); ++i) t[i] = tmp[i].t_s;
    } else {
        const double s = speed > 0 ? speed : 1.0;
        for (size_t i = 0; i < t.size(); ++i) t[i] = w.reqs[i].base_t / s;
    }
    return t;
}

}  // namespace kvsteer::sim
