// kvsteer-scale-bench: how the per-backend control and steering work grows with the number of
// backends: Maglev and rendezvous table builds (what kvsteerd pays on every membership or
// weight change) and the bounded-load choice (what the dataplane pays per new flow).
// Prints one JSON object (flat, units in the names); --json FILE also writes it there.
// KVS_BENCH_SMOKE=1: fewer sizes and repetitions.
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kvsteer/core/po_error.h"
#include "kvsteer/core/maglev.h"

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<kvsteer::MaglevBackend> backends(std::uint32_t n) {
    std::vector<kvsteer::MaglevBackend> v;
    for (std::uint32_t i = 0; i < n; ++i)
        v.push_back({i, 0xabcdef + i * 0x9e3779b97f4a7c15ULL, 1 + (i % 3)});
    return v;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

template <typename T>
void sink(const T &v) {
    asm volatile("" : : "r,m"(v) : "memory");
}

}  // namespace

int main(int argc, char **argv) {
    po::options_description desc(
        "kvsteer-scale-bench [options]\nTable build time and bounded-load choice vs number of "
        "backends.\n"
        "Env KVS_BENCH_SMOKE=1 shortens it.\nOptions");
    std::string sizes_s, json_path;
    int reps = 0;
    desc.add_options()("help,h", "show this help")(
        "backends", po::value(&sizes_s)->default_value(""),
        "comma list of backend counts (default 8,32,128,512,1024)")(
        "reps", po::value(&reps)->default_value(0),
        "repetitions per size (median; 0 = 5, smoke 3)")(
        "json", po::value(&json_path),
        "also write the JSON object to this file (default $KVS_BENCH_OUT)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "kvsteer-scale-bench: %s (see --help)\n",
                     kvsteer::error_text(e).c_str());
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (json_path.empty())
        if (const char *o = std::getenv("KVS_BENCH_OUT"); o && *o) json_path = o;
    const char *se = std::getenv("KVS_BENCH_SMOKE");
    const bool smoke = se && std::string(se) == "1";
    if (reps <= 0) reps = smoke ? 3 : 5;
    std::vector<std::uint32_t> sizes;
    if (sizes_s.empty()) {
        sizes = {8, 32, 128, 512, 1024};
    } else {
        std::stringstream ss(sizes_s);
        std::string t;
        try {
            while (std::getline(ss, t, ','))
                sizes.push_back(static_cast<std::uint32_t>(std::stoul(t)));
        } catch (const std::exception &) {
            std::fprintf(stderr, "kvsteer-scale-bench: bad --backends '%s'\n", sizes_s.c_str());
            return 2;
        }
    }
    std::map<std::string, double> res;
    for (std::uint32_t n : sizes) {
        if (n < 1 || n > KVS_MAX_BACKENDS) {
            std::fprintf(stderr, "kvsteer-scale-bench: backend count %u outside 1..%u\n", n,
                         KVS_MAX_BACKENDS);
            return 2;
        }
        const auto be = backends(n);
        std::vector<double> mg, rz;
        std::vector<std::uint32_t> table;
        for (int r = 0; r < reps; r++) {
            auto t0 = Clock::now();
            table = kvsteer::build_maglev(be);
            mg.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            sink(table[0]);
            // Rendezvous is O(size x backends): measured on the full table, fewer reps at 1024.
            if (r < (smoke ? 1 : 3)) {
                t0 = Clock::now();
                auto rt = kvsteer::build_rendezvous_table(be);
                rz.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
                sink(rt[0]);
            }
        }
        std::vector<std::uint32_t> load(n);
        std::vector<std::uint8_t> eligible(n, 1);
        for (std::uint32_t i = 0; i < n; ++i) load[i] = (i * 37) % 11;
        kvsteer::LoadView view{load, eligible};
        view.n_eligible = n;
        for (auto x : load) view.total_in_flight += x;
        const long iters = smoke ? 200000 : 2000000;
        std::vector<double> ch;
        for (int r = 0; r < reps; r++) {
            std::uint64_t h = 0x12345678 + r;
            auto t0 = Clock::now();
            std::uint32_t acc = 0;
            for (long i = 0; i < iters; i++) {
                h = h * 6364136223846793005ULL + 1442695040888963407ULL;
                acc += kvsteer::choose_bounded(table, h, view, 1.25);
            }
            sink(acc);
            ch.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count() /
                         iters);
        }
        const std::string s = std::to_string(n);
        res["scale_maglev_build_ms_" + s + "be"] = median(mg);
        res["scale_rendezvous_build_ms_" + s + "be"] = median(rz);
        res["scale_bounded_choice_ns_" + s + "be"] = median(ch);
        std::fprintf(stderr,
                     "[scale] %4u backends: maglev build %.2f ms, rendezvous build %.1f ms, "
                     "bounded choice %.1f ns\n",
                     n, median(mg), median(rz), median(ch));
    }
    std::ostringstream js;
    js << "{";
    bool first = true;
    for (const auto &[k, v] : res) {
        js << (first ? "" : ", ") << "\"" << k << "\": " << v;
        first = false;
    }
    js << "}";
    std::cout << js.str() << "\n";
    if (!json_path.empty()) {
        std::ofstream f(json_path);
        f << js.str() << "\n";
        if (!f) return 1;
    }
    return 0;
}
