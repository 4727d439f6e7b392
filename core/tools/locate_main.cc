// kvsteer-locate: shows what the steering core makes of a captured first flight (the request
// view and its hashes), so keys can be checked by hand against the dataplane's reports.
#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "kvsteer/core/po_error.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"

namespace po = boost::program_options;

namespace {

// JSON string escaping for arbitrary bytes (model names and paths are attacker-controlled).
std::string json_str(std::string_view s) {
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20 || c >= 0x7f) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            out += b;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

std::string hex(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "\"%016llx\"", static_cast<unsigned long long>(v));
    return b;
}

}  // namespace

int main(int argc, char **argv) {
    kvsteer::HashParams hp;
    std::string seed_str;
    std::vector<std::string> files;
    bool raw_model = false;
    po::options_description opts(
        "Usage: kvsteer-locate [options] FILE...\n"
        "Prints one JSON object per FILE (the bytes of a request's first flight): the located\n"
        "request and its prefix/block hashes, as the steering core computes them.\nOptions");
    opts.add_options()("help,h", "show this help")(
        "seed", po::value(&seed_str), "hash seed (decimal or 0x hex; default the library's)")(
        "prefix-len", po::value(&hp.prefix_len)->default_value(hp.prefix_len),
        "bytes in the fixed-prefix hash")("block-size",
                                          po::value(&hp.block_size)->default_value(hp.block_size),
                                          "bytes per chained block")(
        "max-blocks", po::value(&hp.max_blocks)->default_value(hp.max_blocks),
        "chained blocks hashed (<= 28)")(
        "raw-model", po::bool_switch(&raw_model),
        "mix the model in wherever it appears (RequestView::model) "
        "instead of RequestView::hash_model()");
    po::options_description hidden;
    hidden.add_options()("file", po::value(&files));
    po::options_description all;
    all.add(opts).add(hidden);
    po::positional_options_description pos;
    pos.add("file", -1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        spdlog::error("kvsteer-locate: {} (see --help)", kvsteer::error_text(e));
        return 2;
    }
    if (!seed_str.empty()) {
        char *end = nullptr;
        hp.seed = std::strtoull(seed_str.c_str(), &end, 0);
        if (end == seed_str.c_str() || *end != '\0') {
            spdlog::error("kvsteer-locate: bad --seed '{}': want a decimal or 0x-hex 64-bit number",
                          seed_str);
            return 2;
        }
    }
    if (vm.count("help") || files.empty()) {
        std::printf("%s\n", (std::ostringstream() << opts).str().c_str());
        return vm.count("help") ? 0 : 2;
    }

    int rc = 0;
    for (const std::string &f : files) {
        std::ifstream in(f, std::ios::binary);
        if (!in) {
            spdlog::error("kvsteer-locate: cannot read {}", f);
            rc = 1;
            continue;
        }
        std::vector<std::uint8_t> buf((std::istreambuf_iterator<char>(in)),
                                      std::istreambuf_iterator<char>());
        const std::size_t raw = buf.size();
        kvsteer::RequestView r = kvsteer::locate_request(buf);
        kvsteer::dechunk_request(buf, r);  // a chunked body: keyed without its framing
        const std::string_view model = raw_model ? r.model : r.hash_model();
        const kvsteer::PrefixHashes h =
            kvsteer::hash_prompt(hp, model, std::span(buf).subspan(r.key_offset, r.key_len));
        std::string blocks = "[";
        for (std::uint32_t i = 0; i < h.n_blocks; ++i) blocks += (i ? "," : "") + hex(h.blocks[i]);
        blocks += "]";
        std::printf(
            "{\"file\": %s, \"bytes\": %zu, \"status\": \"%s\", \"kind\": \"%s\", \"method\": %s, "
            "\"path\": %s, "
            "\"host\": %s, \"content_length\": %lld, \"chunked\": %s, \"expect_continue\": %s, "
            "\"body_offset\": %zu, \"body_available\": %zu, \"body_complete\": %s, \"dechunked\": "
            "%s, "
            "\"model\": %s, "
            "\"model_before_key\": %s, \"key_offset\": %zu, \"key_len\": %zu, \"prefix_hash\": %s, "
            "\"block_hashes\": %s}\n",
            json_str(f).c_str(), raw, kvsteer::locate_status_name(r.status),
            kvsteer::key_kind_name(r.kind), json_str(r.method).c_str(), json_str(r.path).c_str(),
            json_str(r.host).c_str(), static_cast<long long>(r.content_length),
            r.chunked ? "true" : "false", r.expect_continue ? "true" : "false", r.body_offset,
            r.body_available, r.body_complete ? "true" : "false", r.dechunked ? "true" : "false",
            json_str(r.model).c_str(), r.key_model.empty() ? "false" : "true", r.key_offset,
            r.key_len, r.key_len ? hex(h.prefix).c_str() : "null", blocks.c_str());
    }
    return rc;
}
