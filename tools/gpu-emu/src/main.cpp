// kvsteer-gpu-emu: an emulated GPU server speaking the OpenAI API as vLLM does, with a real
// block-level prefix cache, a calibrated prefill/decode cost model and a bounded batch.
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sys/resource.h>

#include "kvsteer/core/po_error.h"
#include "server.h"

namespace po = boost::program_options;
using kvsteer::emu::EmuConfig;

int main(int argc, char **argv) {
    EmuConfig cfg;
    std::vector<std::string> models;
    std::string port_file, log_level;
    po::options_description desc(
        "kvsteer-gpu-emu: emulated OpenAI-compatible GPU server (vLLM-like) for tests.\n"
        "Endpoints: POST /v1/completions, POST /v1/chat/completions (\"stream\": true -> SSE,\n"
        "chunked), GET /health, GET /v1/models, GET /metrics (vLLM names).\n"
        "Prompt bytes cached: completions: the decoded \"prompt\" string (string arrays\n"
        "concatenated; token-id arrays: each id as --bytes-per-token LE bytes); chat: the raw\n"
        "bytes of the \"messages\" JSON value as sent, from its '['. Tokens = ceil(bytes /\n"
        "bytes-per-token). Output: max_tokens (or max_completion_tokens, default 16) filler "
        "tokens.\n"
        "Response headers: x-kvsteer-backend (--server-id), x-body-sha256 and x-body-bytes\n"
        "(SHA-256 and length of the request body as received), x-response-sha256 (SHA-256 of\n"
        "the response body after de-chunking), x-request-id. Request header\n"
        "x-kvsteer-echo-bytes: N pads that response with N deterministic bytes (SSE comment\n"
        "lines when streaming, a \"kvsteer_padding\" member otherwise).\n"
        "Times in /metrics and the request log are model (GPU) seconds: wall * --time-scale.\n"
        "Options");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help")
        ("host", po::value(&cfg.host)->default_value("127.0.0.1"),
         "listen address (IPv4 or IPv6; \"::\" takes both families)")
        ("port", po::value(&cfg.port)->default_value(8000), "listen port (0: any free port)")
        ("port-file", po::value(&port_file), "write the bound port to this file once listening")
        ("model", po::value(&models)->composing(),
         "served model name (repeatable; the first is the default and the metrics label) "
         "[default: meta-llama/Llama-3.1-8B-Instruct]")
        ("server-id", po::value(&cfg.server_id)->default_value("emu"),
         "name echoed in x-kvsteer-backend, logs and the request log")
        ("block-tokens", po::value(&cfg.cache.block_tokens)->default_value(16), "tokens per KV block")
        ("bytes-per-token", po::value(&cfg.api.bytes_per_token)->default_value(4), "prompt bytes per token")
        ("cache-tokens", po::value(&cfg.cache.capacity_tokens)->default_value(430000),
         "KV cache capacity in tokens (430k: Llama-3.1-8B on an 80 GB GPU)")
        ("max-batch", po::value(&cfg.sched.max_batch)->default_value(256),
         "max concurrently running sequences (vLLM max_num_seqs)")
        ("max-batched-tokens", po::value(&cfg.sched.max_batched_tokens)->default_value(8192),
         "token budget per step (vLLM max_num_batched_tokens; longer prefills are chunked)")
        ("max-model-len", po::value(&cfg.api.max_model_len)->default_value(131072),
         "max prompt + output tokens per request")
        ("time-scale", po::value(&cfg.time_scale)->default_value(1.0),
         "run N times faster than the modelled GPU")
        ("cost-scale", po::value(&cfg.cost.scale)->default_value(1.0),
         "multiply every modelled duration (10: the 70B calibration row is 8 of 80 layers)")
        ("prefill-c0-ms", po::value(&cfg.cost.prefill_c0_s), "fixed cost of a step with prefill, ms "
         "[default 24.1 from the H200 fit; an upper bound for serving engines]")
        ("decode-base-ms", po::value(&cfg.cost.decode_base_s), "fixed cost of a decode-only step, ms [6]")
        ("stream-chunk-tokens", po::value(&cfg.stream_chunk_tokens)->default_value(1),
         "output tokens per SSE event")
        ("echo-bytes", po::value(&cfg.echo_bytes)->default_value(0),
         "pad every response with N deterministic bytes (large-response tests)")
        ("max-body-bytes", po::value(&cfg.max_body_bytes)->default_value(256ull << 20),
         "largest request body accepted (larger: 413)")
        ("keep-alive-timeout-ms", po::value(&cfg.keep_alive_timeout_ms)->default_value(0),
         "close a kept-alive connection after this long without a request, as uvicorn does "
         "(vLLM: 5000); 0 = never")
        ("request-timeout-ms", po::value(&cfg.request_timeout_ms)->default_value(30000),
         "close a connection whose request (head and body) has begun and is still not whole "
         "after this long (at most twice it: a stalled upload); 0 = never")
        ("log-requests", po::value(&cfg.log_requests),
         "append one JSON line per finished request: ts (unix s, arrival), server, id, api, model, "
         "prompt_xxh3, first_block, prompt_bytes, prompt_tokens, cached_tokens, output_tokens, "
         "stream, queue_s, ttft_s, e2e_s, status (ok|aborted)")
        ("kv-events-endpoint", po::value(&cfg.kv_events_endpoint),
         "publish vLLM-format KV cache events (ZMQ PUB, multipart [topic, seq, msgpack batch]) "
         "on this endpoint, e.g. tcp://*:5557 (off by default; token_ids are always empty and "
         "block hashes are the emulator's own 64-bit chained hashes)")
        ("kv-events-topic", po::value(&cfg.kv_events_topic)->default_value(""), "topic frame of KV events")
        ("log-level", po::value(&log_level)->default_value("info"), "trace|debug|info|warn|error");
    // clang-format on
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::cerr << "kvsteer-gpu-emu: " << kvsteer::error_text(e) << "\n(see --help)\n";
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    // Options given in ms are stored in seconds.
    if (vm.count("prefill-c0-ms")) cfg.cost.prefill_c0_s /= 1e3;
    if (vm.count("decode-base-ms")) cfg.cost.decode_base_s /= 1e3;
    cfg.api.models =
        models.empty() ? std::vector<std::string>{"meta-llama/Llama-3.1-8B-Instruct"} : models;
    if (cfg.cache.block_tokens == 0 || cfg.api.bytes_per_token == 0 || cfg.time_scale <= 0 ||
        cfg.sched.max_batch == 0 || cfg.stream_chunk_tokens == 0) {
        std::cerr << "kvsteer-gpu-emu: --block-tokens, --bytes-per-token, --time-scale, "
                     "--max-batch and --stream-chunk-tokens must be > 0\n";
        return 2;
    }
    // Hundreds of concurrent connections need more descriptors than the usual soft limit.
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    spdlog::set_level(spdlog::level::from_str(log_level));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

    try {
        boost::asio::io_context io(1);
        kvsteer::emu::Server server(io, cfg);
        server.start();
        if (!port_file.empty()) {
            const std::string tmp = port_file + ".tmp";
            std::ofstream(tmp) << server.port() << "\n";
            std::rename(tmp.c_str(), port_file.c_str());
        }
        spdlog::info(
            "[{}] listening on {}:{} model={} cache={} tokens ({} blocks of {}) "
            "max_batch={} time_scale={}",
            cfg.server_id, cfg.host, server.port(), cfg.api.models.front(),
            cfg.cache.capacity_tokens, cfg.cache.capacity_tokens / cfg.cache.block_tokens,
            cfg.cache.block_tokens, cfg.sched.max_batch, cfg.time_scale);
        if (!cfg.kv_events_endpoint.empty())
            spdlog::info("[{}] KV events on {}", cfg.server_id, server.kv_events_endpoint());
        boost::asio::signal_set sigs(io, SIGINT, SIGTERM);
        sigs.async_wait([&](const boost::system::error_code &, int sig) {
            spdlog::info("[{}] signal {}, exiting", cfg.server_id, sig);
            io.stop();
        });
        io.run();
    } catch (const std::exception &e) {
        spdlog::error("kvsteer-gpu-emu: {}", e.what());
        return 1;
    }
    return 0;
}
