// kvsteer-sim: cluster simulator comparing routing policies on Mooncake traces and SGLang-shaped
// shared-prefix workloads, with the servers modelled by kvsteer_model.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "kvsteer/core/po_error.h"
#include "kvsteer/abi.h"
#include "kvsteer/control/config.h"
#include "report.h"
#include "simulator.h"
#include "workload.h"

namespace po = boost::program_options;
using namespace kvsteer;
using namespace kvsteer::sim;

namespace {

const char *kSweepParams =
    "servers, speed, qps, load (speed, or qps when --qps is set), prefix-len, block-size, "
    "load-factor, load-slack, replication, first-flight, cache-tokens";

struct Sweep {
    std::string param;  // canonical name; empty: no sweep
    std::vector<double> values;
};

Sweep parse_sweep(const std::string &s, bool qps_mode) {
    Sweep sw;
    if (s.empty()) return sw;
    const auto eq = s.find('=');
    if (eq == std::string::npos)
        throw std::runtime_error(fmt::format("--sweep '{}': expected PARAM=v1,v2,...", s));
    sw.param = s.substr(0, eq);
    if (sw.param == "load") sw.param = qps_mode ? "qps" : "speed";
    static const std::vector<std::string> ok = {
        "servers",     "speed",      "qps",         "prefix-len",   "block-size",
        "load-factor", "load-slack", "replication", "first-flight", "cache-tokens"};
    if (std::find(ok.begin(), ok.end(), sw.param) == ok.end())
        throw std::runtime_error(
            fmt::format("--sweep: unknown parameter '{}' (one of: {})", sw.param, kSweepParams));
    std::stringstream ss(s.substr(eq + 1));
    std::string v;
    while (std::getline(ss, v, ',')) {
        try {
            size_t used = 0;
            const double x = std::stod(v, &used);
            if (used != v.size() || !(x > 0)) throw std::invalid_argument(v);
            sw.values.push_back(x);
        } catch (const std::exception &) {
            throw std::runtime_error(
                fmt::format("--sweep {}: '{}' is not a positive number", sw.param, v));
        }
    }
    if (sw.values.empty()) throw std::runtime_error(fmt::format("--sweep {}: no values", sw.param));
    // The single-run options' limits (a sweep point was cast to an integer unchecked: 0.5 gave
    // a load slack of 0, which the dataplane reads as its default and kvsteerd as none).
    const bool whole = sw.param != "speed" && sw.param != "qps" && sw.param != "load-factor";
    for (const double x : sw.values) {
        if (whole && (x != std::floor(x) || (sw.param != "cache-tokens" && x > 4294967295.0)))
            throw std::runtime_error(
                fmt::format("--sweep {}: {} is not a whole number", sw.param, x));
        if (sw.param == "load-factor" && x < 1)
            throw std::runtime_error(fmt::format("--sweep load-factor: {} is below 1", x));
        if (sw.param == "replication" && x > KVS_MAX_REPLICAS)
            throw std::runtime_error(
                fmt::format("--sweep replication: {} is not 1..{}", x, KVS_MAX_REPLICAS));
        if (sw.param == "servers" && x > KVS_MAX_BACKENDS)
            throw std::runtime_error(
                fmt::format("--sweep servers: {} is not 1..{}", x, KVS_MAX_BACKENDS));
    }
    return sw;
}

std::vector<std::string> split_list(const std::string &s) {
    std::vector<std::string> v;
    std::stringstream ss(s);
    std::string x;
    while (std::getline(ss, x, ','))
        if (!x.empty()) v.push_back(x);
    return v;
}

struct Job {
    size_t point;  // index into the sweep values (0 without a sweep)
    RunConfig cfg;
    double speed, qps;
};

}  // namespace

int main(int argc, char **argv) {
    std::string trace, workload_kind, policies_s, sweep_s, json_path, api_s, model;
    uint64_t limit = 0, seed = 1, max_input = 0;
    double speed = 1, qps = 0;
    uint32_t servers = 8, threads = 2;
    replay::SharedPrefixSpec sp;
    ConversationSpec cv;
    PolicyParams pp;
    ServerConfig sc;
    uint32_t bytes_per_token = 4, report_ms = 150, telemetry_ms = 1000;
    double eviction_s = 60;
    bool quiet = false, verbose = false, session_per_request = false;

    po::options_description o(
        "kvsteer-sim: simulate routing policies over N emulated GPU servers\n\nOptions");
    // clang-format off
    o.add_options()
        ("help,h", "show this help")
        ("workload", po::value(&workload_kind)->default_value("mooncake"), "mooncake (a trace file), shared-prefix (SGLang generated-shared-prefix) or conversation (multi-turn sessions sharing one system prompt)")
        ("trace", po::value(&trace)->default_value("tools/demo/traces/mooncake-demo.jsonl"), "Mooncake-format trace (JSON lines); the default is the trace the repository ships, from its root")
        ("limit", po::value(&limit)->default_value(0), "use only the first N requests (0: all)")
        ("max-input-tokens", po::value(&max_input)->default_value(0), "mooncake: skip requests with more input tokens, then take --limit (kvsteer-replay's option; 0: keep all)")
        ("groups", po::value(&sp.groups)->default_value(64), "shared-prefix: groups (system prompts)")
        ("prompts-per-group", po::value(&sp.prompts_per_group)->default_value(16), "shared-prefix: questions per group")
        ("system-prompt-len", po::value(&sp.system_prompt_len)->default_value(2048), "shared-prefix, conversation: system prompt tokens")
        ("question-len", po::value(&sp.question_len)->default_value(128), "shared-prefix: question tokens; conversation: mean tokens of a user turn")
        ("output-len", po::value(&sp.output_len)->default_value(256), "shared-prefix, conversation: output tokens (conversation: each reply, kept in the history)")
        ("sessions", po::value(&cv.sessions)->default_value(cv.sessions), "conversation: sessions")
        ("turns", po::value(&cv.turns)->default_value(cv.turns), "conversation: mean turns per session (uniform 1 .. 2x-1)")
        ("session-rate", po::value(&cv.session_rate)->default_value(cv.session_rate), "conversation: sessions started per second (Poisson; --speed scales it)")
        ("think-s", po::value(&cv.think_s)->default_value(cv.think_s), "conversation: mean seconds from a reply to the session's next turn (exponential; --speed scales it; closed loop: a turn is sent only after the reply before it)")
        ("speed", po::value(&speed)->default_value(1.0), "divide trace timestamps by this (load factor on the trace)")
        ("qps", po::value(&qps)->default_value(0), "Poisson arrivals at this rate instead of the trace times (0: trace times; shared-prefix without it: all at t=0)")
        ("seed", po::value(&seed)->default_value(1), "seed of Poisson arrivals and the shared-prefix shuffle")
        ("servers", po::value(&servers)->default_value(8), "GPU servers")
        ("policies", po::value(&policies_s)->default_value("rr,least-loaded,ch,ch-bl,kvsteer,radix,oracle"),
            "comma list of: rr, least-loaded, ch, ch-bl, kvsteer, kvsteer-maglev (no daemon), kvsteer-slack (proposal), kvsteer-session (session-headers = --session-header), radix, oracle")
        ("session-header", po::value(&pp.session_header_sent), "conversation: send each request's session id in this header (e.g. X-Session-ID); kvsteer-session steers by it, kvsteer ignores it")
        ("session-per-request", po::bool_switch(&session_per_request), "with --session-header: every request sends its own value (a request id), on any workload: what session affinity costs when the header does not name a conversation")
        ("session-cap", po::value(&pp.session_cap)->default_value(pp.session_cap), "kvsteer-session: requests of one session in flight that follow the session (kvsteerd's session-cap)")
        ("prefix-len", po::value(&pp.prefix_len)->default_value(pp.prefix_len), "kvsteer/ch/ch-bl: prompt bytes in the fixed-prefix hash")
        ("block-size", po::value(&pp.block_size)->default_value(pp.block_size), "kvsteer: bytes per chained block hash")
        ("max-blocks", po::value(&pp.max_blocks)->default_value(pp.max_blocks), fmt::format("kvsteer: chained blocks hashed (<= {})", KVS_MAX_REPORT_BLOCKS).c_str())
        ("first-flight", po::value(&pp.first_flight)->default_value(pp.first_flight), "kvsteer: request bytes held before binding")
        ("load-factor", po::value(&pp.load_factor)->default_value(pp.load_factor), "kvsteer/ch-bl: bounded load c")
        ("load-slack", po::value(&pp.load_slack)->default_value(pp.load_slack), "kvsteer: an affinity holder keeps new requests while within this many of the least loaded server (bound max(c x mean, least + 1 + slack))")
        ("replication", po::value(&pp.replication)->default_value(pp.replication), "kvsteer daemon: replicas of a hot prefix (1..4)")
        ("hot-rps", po::value(&pp.hot_rps)->default_value(pp.hot_rps), "kvsteer daemon: request rate that makes a prefix hot")
        ("min-hot-s", po::value(&pp.min_hot_s)->default_value(pp.min_hot_s),
         "kvsteer daemon: a prefix that became hot stays hot at least this long (kvsteerd's affinity-min-hot)")
        ("report-interval-ms", po::value(&report_ms)->default_value(150), "kvsteer daemon: binding reports drained, table published")
        ("telemetry-interval-ms", po::value(&telemetry_ms)->default_value(1000), "kvsteer daemon: backend metrics scraped")
        ("daemon-time-scale", po::value(&pp.daemon_time_scale)->default_value(1.0), "kvsteer daemon: its clock runs N times slower than the servers' (kvsteerd in front of kvsteer-gpu-emu --time-scale N): its intervals, TTLs and rates (in its own time) last N times longer")
        ("bound-slack", po::value(&pp.bound_slack)->default_value(4), "kvsteer-slack (a proposal, not shipped): the daemon keeps the live load factor high enough that the bound is >= mean + this many requests")
        ("cache-threshold", po::value(&pp.cache_threshold)->default_value(pp.cache_threshold), "radix: match fraction that routes to the matched worker")
        ("balance-abs-threshold", po::value(&pp.balance_abs_threshold)->default_value(pp.balance_abs_threshold), "radix: imbalance when max - min load exceeds this ...")
        ("balance-rel-threshold", po::value(&pp.balance_rel_threshold)->default_value(pp.balance_rel_threshold), "radix: ... and max > this x min")
        ("radix-weak-to-smallest-tree", po::bool_switch(&pp.radix_weak_to_smallest_tree), "radix: send a weak match to the worker with the smallest tree (the older sgl-router) instead of the least loaded (the gateway)")
        ("eviction-interval", po::value(&eviction_s)->default_value(60), "radix: seconds between tree evictions")
        ("max-tree-size", po::value(&pp.max_tree_size)->default_value(uint64_t(1) << 24), "radix: characters kept per worker tree")
        ("cache-tokens", po::value(&sc.cache.capacity_tokens)->default_value(430000), "server: KV cache capacity in tokens")
        ("kv-block-tokens", po::value(&sc.cache.block_tokens)->default_value(16), "server: tokens per KV block")
        ("max-batch", po::value(&sc.sched.max_batch)->default_value(256), "server: max running requests")
        ("max-batched-tokens", po::value(&sc.sched.max_batched_tokens)->default_value(8192), "server: token budget per step")
        ("cost-scale", po::value(&sc.cost.scale)->default_value(1.0), "server: multiply every step time (e.g. a bigger model)")
        ("bytes-per-token", po::value(&bytes_per_token)->default_value(4), "bytes of prompt per token (the emulator's tokenizer)")
        ("api", po::value(&api_s)->default_value("chat"), "chat or completions: the request body shape")
        ("model", po::value(&model)->default_value("meta-llama/Llama-3.1-8B-Instruct"), "model name in the request body")
        ("sweep", po::value(&sweep_s), (std::string("PARAM=v1,v2,...: run every policy at each value; PARAM one of: ") + kSweepParams).c_str())
        ("json", po::value(&json_path), "write every run's results as JSON to FILE")
        ("threads", po::value(&threads)->default_value(2), "runs simulated in parallel")
        ("quiet,q", po::bool_switch(&quiet), "no progress on stderr")
        ("verbose,v", po::bool_switch(&verbose), "progress within each run");
    // clang-format on
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, o), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::cerr << "kvsteer-sim: " << kvsteer::error_text(e) << "\n(try --help)\n";
        return 2;
    }
    if (vm.count("help")) {
        std::cout << o
                  << "\nOutput: a table per sweep point (hit% is counted by the servers' caches), "
                     "and --json.\n";
        return 0;
    }

    try {
        if (servers == 0 || servers > KVS_MAX_BACKENDS)
            throw std::runtime_error(fmt::format("--servers must be 1..{}", KVS_MAX_BACKENDS));
        if (speed <= 0) throw std::runtime_error("--speed must be > 0");
        if (qps < 0) throw std::runtime_error("--qps must be >= 0");
        if (pp.replication < 1 || pp.replication > KVS_MAX_REPLICAS)
            throw std::runtime_error("--replication must be 1..4");
        if (pp.load_factor < 1) throw std::runtime_error("--load-factor must be >= 1");
        if (pp.load_slack < 1) throw std::runtime_error("--load-slack must be >= 1");
        if (pp.session_cap < 1) throw std::runtime_error("--session-cap must be >= 1");
        {
            std::string err;
            if (!control::parse_session_headers(pp.session_header_sent, &err))
                throw std::runtime_error("--session-header: " + err);
            if (pp.session_header_sent.find(',') != std::string::npos)
                throw std::runtime_error("--session-header: one header name");
        }
        if (bytes_per_token == 0 || sc.cache.block_tokens == 0)
            throw std::runtime_error("--bytes-per-token and --kv-block-tokens must be > 0");
        if (pp.block_size == 0 || pp.prefix_len == 0 || pp.first_flight == 0)
            throw std::runtime_error("--prefix-len, --block-size and --first-flight must be > 0");
        if (api_s != "chat" && api_s != "completions")
            throw std::runtime_error(fmt::format("--api '{}': chat or completions", api_s));
        if (threads == 0) threads = 1;
        pp.report_interval_s = report_ms / 1000.0;
        pp.telemetry_interval_s = telemetry_ms / 1000.0;
        pp.eviction_interval_s = eviction_s;
        pp.kv_block_bytes = sc.cache.block_tokens * bytes_per_token;
        pp.seed = seed;
        if (pp.report_interval_s <= 0 || pp.telemetry_interval_s <= 0)
            throw std::runtime_error("daemon intervals must be > 0 ms");
        if (!(pp.daemon_time_scale > 0))
            throw std::runtime_error("--daemon-time-scale must be > 0");

        const auto policies = split_list(policies_s);
        if (policies.empty()) throw std::runtime_error("--policies is empty");
        for (const auto &p : policies)
            if (std::find(policy_names().begin(), policy_names().end(), p) == policy_names().end())
                throw std::runtime_error(fmt::format("--policies: unknown policy '{}'", p));
        const Sweep sw = parse_sweep(sweep_s, qps > 0);
        // --speed scales trace times; Poisson arrivals (--qps) and shared-prefix's all-at-once
        // have none to scale, and a speed there was silently ignored.
        const bool speed_given = !vm["speed"].defaulted() || sw.param == "speed";
        if (speed_given && qps > 0)
            throw std::runtime_error(
                "--speed has no effect with --qps (Poisson arrivals at that rate): vary the load "
                "with --qps or --sweep qps=...");
        if (speed_given && workload_kind == "shared-prefix")
            throw std::runtime_error(
                "--speed has no effect on shared-prefix without --qps (every request at t=0): "
                "give --qps, or --sweep qps=...");
        if (pp.session_header_sent.empty() &&
            std::find(policies.begin(), policies.end(), "kvsteer-session") != policies.end())
            throw std::runtime_error("kvsteer-session needs --session-header");

        WorkloadOptions wo;
        wo.api = api_s == "chat" ? replay::ApiKind::Chat : replay::ApiKind::Completions;
        wo.model = model;
        wo.bytes_per_token = bytes_per_token;
        wo.kv_block_tokens = sc.cache.block_tokens;
        // Keep as many request bytes as the largest first flight (or prefix) any run reads.
        double cap = std::max<double>(pp.first_flight, pp.prefix_len + 2048.0);
        for (double v : sw.values) {
            if (sw.param == "first-flight") cap = std::max(cap, v);
            if (sw.param == "prefix-len") cap = std::max(cap, v + 2048);
        }
        wo.first_flight_cap = uint32_t(cap);
        wo.session_header = pp.session_header_sent;
        wo.session_per_request = session_per_request;
        wo.max_input_tokens = max_input;

        const auto t0 = std::chrono::steady_clock::now();
        Workload wl;
        if (workload_kind == "mooncake") {
            wl = load_mooncake(trace, limit, wo);
        } else if (workload_kind == "shared-prefix") {
            sp.seed = seed;
            wl = make_shared_prefix(sp, wo);
            if (limit && wl.reqs.size() > limit) wl.reqs.resize(limit);
        } else if (workload_kind == "conversation") {
            cv.system_prompt_len = sp.system_prompt_len;
            cv.user_len = sp.question_len;
            cv.output_len = sp.output_len;
            cv.seed = seed;
            if (!(cv.session_rate > 0) || !(cv.think_s >= 0))
                throw std::runtime_error("--session-rate must be > 0 and --think-s >= 0");
            if (qps > 0 || sw.param == "qps")
                throw std::runtime_error(
                    "--qps: the conversation workload paces itself (--session-rate, --think-s; "
                    "--speed scales both), each turn sent after the reply before it");
            wl = make_conversation(cv, wo);
            if (limit && wl.reqs.size() > limit) wl.reqs.resize(limit);
        } else {
            throw std::runtime_error(fmt::format(
                "--workload '{}': mooncake, shared-prefix or conversation", workload_kind));
        }
        uint64_t tokens = 0;
        for (const auto &r : wl.reqs) tokens += r.prompt_tokens;
        if (!quiet)
            fmt::print(
                stderr, "workload {}: {} requests, {:.1f}M prompt tokens, built in {:.1f} s\n",
                wl.name, wl.reqs.size(), tokens / 1e6,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

        // One job per (sweep point, policy).
        std::vector<Job> jobs;
        const size_t points = sw.param.empty() ? 1 : sw.values.size();
        for (size_t k = 0; k < points; ++k) {
            for (const auto &p : policies) {
                Job j{k, {}, speed, qps};
                j.cfg.policy = p;
                j.cfg.servers = servers;
                j.cfg.server = sc;
                j.cfg.params = pp;
                if (!sw.param.empty()) {
                    const double v = sw.values[k];
                    if (sw.param == "servers")
                        j.cfg.servers = uint32_t(v);
                    else if (sw.param == "speed")
                        j.speed = v;
                    else if (sw.param == "qps")
                        j.qps = v;
                    else if (sw.param == "prefix-len")
                        j.cfg.params.prefix_len = uint32_t(v);
                    else if (sw.param == "block-size")
                        j.cfg.params.block_size = uint32_t(v);
                    else if (sw.param == "load-factor")
                        j.cfg.params.load_factor = v;
                    else if (sw.param == "load-slack")
                        j.cfg.params.load_slack = uint32_t(v);
                    else if (sw.param == "replication")
                        j.cfg.params.replication =
                            std::min<uint32_t>(uint32_t(v), KVS_MAX_REPLICAS);
                    else if (sw.param == "first-flight")
                        j.cfg.params.first_flight = uint32_t(v);
                    else if (sw.param == "cache-tokens")
                        j.cfg.server.cache.capacity_tokens = uint64_t(v);
                    if (j.cfg.servers == 0 || j.cfg.servers > KVS_MAX_BACKENDS)
                        throw std::runtime_error("--sweep servers: 1..1024");
                }
                jobs.push_back(std::move(j));
            }
        }

        std::vector<RunResult> results(jobs.size());
        std::vector<std::string> errors(jobs.size());
        std::atomic<size_t> next{0}, done{0};
        std::mutex io;
        auto worker = [&] {
            for (size_t i; (i = next.fetch_add(1)) < jobs.size();) {
                const Job &j = jobs[i];
                const std::string tag =
                    sw.param.empty()
                        ? j.cfg.policy
                        : fmt::format("{} {}={}", j.cfg.policy, sw.param, sw.values[j.point]);
                try {
                    const auto arr = arrivals(wl, j.speed, j.qps, seed);
                    std::function<void(double)> prog;
                    if (verbose && !quiet)
                        prog = [&](double f) {
                            std::lock_guard lk(io);
                            fmt::print(stderr, "  {}: {:.0f}% of arrivals\n", tag, 100 * f);
                        };
                    results[i] = simulate(wl, arr, j.cfg, prog);
                } catch (const std::exception &e) {
                    errors[i] = e.what();
                }
                const size_t d = ++done;
                if (!quiet) {
                    std::lock_guard lk(io);
                    fmt::print(stderr, "[{}/{}] {} done in {:.1f} s\n", d, jobs.size(), tag,
                               results[i].wall_s);
                }
            }
        };
        std::vector<std::thread> pool;
        for (uint32_t t = 0; t < std::min<size_t>(threads, jobs.size()); ++t)
            pool.emplace_back(worker);
        for (auto &t : pool) t.join();
        for (size_t i = 0; i < jobs.size(); ++i)
            if (!errors[i].empty())
                throw std::runtime_error(fmt::format("{}: {}", jobs[i].cfg.policy, errors[i]));

        nlohmann::json out;
        out["tool"] = "kvsteer-sim";
        out["workload"] = {{"name", wl.name},
                           {"kind", workload_kind},
                           {"requests", wl.reqs.size()},
                           {"limit", limit},
                           {"max_input_tokens", max_input},
                           {"prompt_tokens", tokens},
                           {"speed", speed},
                           {"qps", qps},
                           {"seed", seed}};
        out["config"] = {{"servers", servers},
                         {"prefix_len", pp.prefix_len},
                         {"block_size", pp.block_size},
                         {"max_blocks", pp.max_blocks},
                         {"first_flight", pp.first_flight},
                         {"load_factor", pp.load_factor},
                         {"load_slack", pp.load_slack},
                         {"session_header", pp.session_header_sent},
                         {"session_cap", pp.session_cap},
                         {"session_per_request", session_per_request},
                         {"replication", pp.replication},
                         {"min_hot_s", pp.min_hot_s},
                         {"report_interval_ms", report_ms},
                         {"telemetry_interval_ms", telemetry_ms},
                         {"daemon_time_scale", pp.daemon_time_scale},
                         {"cache_tokens", sc.cache.capacity_tokens},
                         {"kv_block_tokens", sc.cache.block_tokens},
                         {"max_batch", sc.sched.max_batch},
                         {"max_batched_tokens", sc.sched.max_batched_tokens},
                         {"cost_scale", sc.cost.scale},
                         {"api", api_s},
                         {"radix_cache_threshold", pp.cache_threshold},
                         {"radix_balance_abs_threshold", pp.balance_abs_threshold},
                         {"radix_balance_rel_threshold", pp.balance_rel_threshold},
                         {"radix_weak_to_smallest_tree", pp.radix_weak_to_smallest_tree}};
        if (workload_kind == "conversation")
            out["workload"]["conversation"] = {{"sessions", cv.sessions},
                                               {"turns", cv.turns},
                                               {"session_rate", cv.session_rate},
                                               {"think_s", cv.think_s}};
        if (!sw.param.empty()) out["sweep"] = {{"param", sw.param}, {"values", sw.values}};
        out["runs"] = nlohmann::json::array();
        for (size_t k = 0; k < points; ++k) {
            std::vector<RunResult> row;
            for (size_t i = 0; i < jobs.size(); ++i) {
                if (jobs[i].point != k) continue;
                row.push_back(results[i]);
                auto j = to_json(results[i]);
                if (!sw.param.empty()) j["sweep_value"] = sw.values[k];
                out["runs"].push_back(std::move(j));
            }
            if (!sw.param.empty()) fmt::print("{} = {}\n", sw.param, sw.values[k]);
            fmt::print("{}\n", format_table(row));
        }
        if (!json_path.empty()) {
            std::ofstream f(json_path);
            if (!f)
                throw std::runtime_error(fmt::format("cannot write --json file '{}'", json_path));
            f << out.dump(2) << "\n";
        }
    } catch (const std::exception &e) {
        std::cerr << "kvsteer-sim: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
