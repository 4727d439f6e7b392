// kvsteer-replay: replays Mooncake-format traces (or SGLang-style shared-prefix workloads) as
// real OpenAI API requests and reports client-side latency plus the backends' own prefix-cache
// hit rate.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/program_options.hpp>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <sys/resource.h>

#include "kvsteer/core/po_error.h"
#include "prom.h"
#include "replayer.h"
#include "summary.h"
#include "trace.h"

namespace po = boost::program_options;
using namespace kvsteer::replay;

namespace {

// One scrape of every URL: the counters, or nullopt with the reason in `errs`.
std::vector<std::optional<CacheCounters>> scrape(const std::vector<std::string> &urls,
                                                 std::vector<std::string> &errs) {
    std::vector<std::optional<CacheCounters>> out;
    errs.assign(urls.size(), std::string());
    for (size_t i = 0; i < urls.size(); ++i) {
        auto url = parse_url(urls[i], errs[i]);
        std::optional<std::string> body;
        if (url) body = http_get(*url, 5.0, errs[i]);
        std::optional<CacheCounters> c;
        if (body) {
            c = cache_counters(parse_prometheus(*body));
            if (!c) errs[i] = "no vllm:prefix_cache_queries_total / _hits_total in the response";
        }
        out.push_back(c);
    }
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    std::string trace, api = "chat", out_path, summary_path;
    std::vector<std::string> targets_s, metrics_urls, headers_s;
    bool synthetic = false, no_stream = false, quiet = false, no_verify = false;
    SharedPrefixSpec sp;
    TextGeometry geo;
    ReplayConfig cfg;
    double qps = 0;
    uint64_t limit = 0, seed = 1, max_input = 0;
    uint32_t max_output = 0, print_bodies = 0;
    po::options_description desc(
        "kvsteer-replay: send a Mooncake-format trace (one JSON object per line:\n"
        "{\"timestamp\": ms, \"input_length\": tokens, \"output_length\": tokens, \"hash_ids\": "
        "[...]})\n"
        "or a generated shared-prefix workload as real OpenAI API requests.\n"
        "Each hash id becomes a deterministic text block of --block-tokens x --bytes-per-token\n"
        "bytes (the last block cut to input_length), so prompt bytes are equal exactly as far\n"
        "as hash ids are equal. TTFT is measured at the first SSE data event. The prefix cache\n"
        "hit rate is only the backends' own counters (--metrics): delta hits / delta queries.\n"
        "Exit status: 0 all sent requests ok, 1 some failed, 2 bad usage or input.\n"
        "Options");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help")
        ("trace", po::value(&trace), "Mooncake-format JSONL trace "
         "[default tools/demo/traces/mooncake-demo.jsonl, the trace the repository ships, from "
         "its root, unless --synthetic]")
        ("synthetic", po::bool_switch(&synthetic), "generated shared-prefix workload (SGLang's shape) instead of a trace")
        ("groups", po::value(&sp.groups)->default_value(64), "synthetic: prefix groups")
        ("prompts-per-group", po::value(&sp.prompts_per_group)->default_value(16), "synthetic: prompts per group")
        ("system-prompt-len", po::value(&sp.system_prompt_len)->default_value(2048), "synthetic: shared system prompt tokens")
        ("question-len", po::value(&sp.question_len)->default_value(128), "synthetic: per-prompt question tokens")
        ("output-len", po::value(&sp.output_len)->default_value(256), "synthetic: output tokens")
        ("seed", po::value(&seed)->default_value(1), "seed of the synthetic shuffle and of --qps arrivals")
        ("target", po::value(&targets_s)->composing(),
         "host:port to send to (repeatable: round-robin over them) [default 127.0.0.1:8000]")
        ("api", po::value(&api)->default_value("chat"), "chat (/v1/chat/completions) or completions (/v1/completions)")
        ("model", po::value(&cfg.body.model)->default_value("meta-llama/Llama-3.1-8B-Instruct"), "model name in every request")
        ("no-stream", po::bool_switch(&no_stream), "non-streaming requests (no TTFT measured)")
        ("keep-alive", po::bool_switch(&cfg.keep_alive), "reuse connections (default: one TCP connection per request)")
        ("speed", po::value(&cfg.speed)->default_value(1.0), "replay the trace's timestamps this much faster")
        ("qps", po::value(&qps)->default_value(0), "ignore timestamps: Poisson arrivals at this rate (model time; --speed multiplies it as it does a trace's pace)")
        ("time-scale", po::value(&cfg.time_scale)->default_value(1.0),
         "the backends run N times faster (kvsteer-gpu-emu --time-scale): send times / N, "
         "reported latencies * N and rates / N, so figures read in model time")
        ("max-concurrency", po::value(&cfg.max_concurrency)->default_value(256), "cap on requests in flight")
        ("limit", po::value(&limit)->default_value(0), "send at most N requests (0: all)")
        ("duration", po::value(&cfg.duration_s)->default_value(0), "stop sending after S wall seconds (0: no cap)")
        ("timeout", po::value(&cfg.timeout_s)->default_value(600), "per-request timeout, wall seconds")
        ("block-tokens", po::value(&geo.block_tokens)->default_value(512), "tokens per trace hash id (Mooncake: 512)")
        ("bytes-per-token", po::value(&geo.bytes_per_token)->default_value(4), "prompt bytes per token")
        ("max-input-tokens", po::value(&max_input)->default_value(0), "--trace: skip requests with more input tokens (0: keep all; not used with --synthetic)")
        ("max-output", po::value(&max_output)->default_value(0), "cap every request's output tokens (0: as given)")
        ("header", po::value(&headers_s)->composing(), "extra request header 'Name: value' (repeatable)")
        ("metrics", po::value(&metrics_urls)->composing(),
         "http://host:port/metrics of a backend, scraped before and after (repeatable)")
        ("out", po::value(&out_path), "per-request results, one JSON object per line")
        ("summary-json", po::value(&summary_path), "write the summary as JSON here")
        ("no-verify", po::bool_switch(&no_verify), "do not check x-body-sha256 / x-response-sha256")
        ("print-bodies", po::value(&print_bodies)->default_value(0), "print the first N request bodies (one a line) and exit; sends nothing")
        ("quiet,q", po::bool_switch(&quiet), "no progress lines");
    // clang-format on
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::cerr << "kvsteer-replay: " << kvsteer::error_text(e) << " (see --help)\n";
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (api == "chat")
        cfg.body.api = ApiKind::Chat;
    else if (api == "completions")
        cfg.body.api = ApiKind::Completions;
    else {
        std::cerr << "kvsteer-replay: --api must be chat or completions, not '" << api << "'\n";
        return 2;
    }
    if (geo.block_tokens == 0 || geo.bytes_per_token == 0) {
        std::cerr << "kvsteer-replay: --block-tokens and --bytes-per-token must be > 0\n";
        return 2;
    }
    cfg.body.stream = !no_stream;
    cfg.verify = !no_verify;
    cfg.progress = !quiet;
    for (const auto &h : headers_s) {
        const size_t c = h.find(':');
        if (c == std::string::npos || c == 0) {
            std::cerr << "kvsteer-replay: --header must be 'Name: value', got '" << h << "'\n";
            return 2;
        }
        std::string v = h.substr(c + 1);
        v.erase(0, v.find_first_not_of(' '));
        cfg.headers.emplace_back(h.substr(0, c), v);
    }

    // Hundreds of concurrent connections need more descriptors than the usual soft limit.
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    std::vector<WorkItem> items;
    if (synthetic) {
        if (vm.count("trace")) {
            std::cerr << "kvsteer-replay: give --trace or --synthetic, not both\n";
            return 2;
        }
        sp.seed = seed;
        items = shared_prefix_workload(sp, geo);
        if (limit && items.size() > limit) items.resize(limit);
    } else {
        if (trace.empty()) trace = "tools/demo/traces/mooncake-demo.jsonl";
        std::ifstream in(trace);
        if (!in) {
            std::cerr << "kvsteer-replay: cannot open trace '" << trace << "'\n";
            return 2;
        }
        auto pr = parse_mooncake(in, geo, 0);
        for (const auto &e : pr.errors)
            std::cerr << "kvsteer-replay: " << trace << ": " << e << "\n";
        if (!pr.errors.empty()) {
            std::cerr << "kvsteer-replay: " << trace
                      << ": malformed lines, refusing to replay a "
                         "partial trace\n";
            return 2;
        }
        items = std::move(pr.items);
        // Skip, sort by arrival, limit, times from the first arrival (the simulator's order).
        const size_t skipped = select_trace(items, max_input, limit);
        if (!quiet && skipped)
            std::cerr << "kvsteer-replay: skipped " << skipped
                      << " requests over --max-input-tokens " << max_input << "\n";
    }
    if (max_output)
        for (auto &w : items) w.output_tokens = std::min(w.output_tokens, max_output);
    if (qps > 0) poisson_arrivals(items, qps, seed);
    if (items.empty()) {
        std::cerr << "kvsteer-replay: no requests to send\n";
        return 2;
    }
    if (print_bodies) {
        for (size_t i = 0; i < items.size() && i < print_bodies; ++i)
            std::cout << request_body(items[i], cfg.body) << "\n";
        return 0;
    }

    if (targets_s.empty()) targets_s.push_back("127.0.0.1:8000");
    {
        boost::asio::io_context io;
        boost::asio::ip::tcp::resolver res(io);
        for (const auto &t : targets_s) {
            const size_t c = t.rfind(':');
            if (c == std::string::npos) {
                std::cerr << "kvsteer-replay: --target must be host:port, got '" << t << "'\n";
                return 2;
            }
            std::string host = t.substr(0, c);  // [IPv6]:PORT: the address inside the brackets
            if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
                host = host.substr(1, host.size() - 2);
            boost::system::error_code ec;
            auto r = res.resolve(host, t.substr(c + 1), ec);
            if (ec || r.empty()) {
                std::cerr << "kvsteer-replay: cannot resolve target '" << t << "': " << ec.message()
                          << "\n";
                return 2;
            }
            cfg.targets.push_back(Target{t, r.begin()->endpoint()});
        }
    }

    std::vector<std::string> errs_before, errs_after;
    const auto before = scrape(metrics_urls, errs_before);
    if (!quiet)
        std::cerr << "kvsteer-replay: " << items.size() << " requests -> " << targets_s.size()
                  << " target(s), api " << api << (cfg.body.stream ? ", streaming" : "") << "\n";

    Replayer rp(cfg, std::move(items));
    const double wall = rp.run();
    const auto after = scrape(metrics_urls, errs_after);
    std::vector<BackendCounters> counters(metrics_urls.size());
    for (size_t i = 0; i < metrics_urls.size(); ++i) {
        BackendCounters &b = counters[i];
        b.url = metrics_urls[i];
        b.ok = before[i] && after[i];
        b.error = !before[i]  ? "before: " + errs_before[i]
                  : !after[i] ? "after: " + errs_after[i]
                              : "";
        if (b.ok) {
            b.queries_before = before[i]->queries;
            b.hits_before = before[i]->hits;
            b.queries_after = after[i]->queries;
            b.hits_after = after[i]->hits;
        }
    }

    if (!out_path.empty()) {
        std::ofstream o(out_path);
        if (!o) {
            std::cerr << "kvsteer-replay: cannot write '" << out_path << "'\n";
            return 2;
        }
        for (const auto &r : rp.results()) o << result_json(r, cfg).dump() << "\n";
    }
    const auto s = summarize(rp.results(), wall, cfg, counters);
    std::cout << human_summary(s);
    if (!summary_path.empty()) {
        std::ofstream o(summary_path);
        if (!o) {
            std::cerr << "kvsteer-replay: cannot write '" << summary_path << "'\n";
            return 2;
        }
        o << s.dump(1) << "\n";
    }
    if (!s["backend_metrics_complete"].get<bool>()) {
        std::cerr << "kvsteer-replay: a backend's /metrics could not be read (see "
                     "backend_metrics): no hit rate\n";
        return 1;
    }
    return s["failed"].get<uint64_t>() == 0 ? 0 : 1;
}
