// kvsteer-lookup-floor: the memory floor under the established-flow lookup, kernel-timed
// (BPF_PROG_TEST_RUN repeat), for comparison with kvsteer-xdp-live --mode testrun at the same
// flow counts. lookup_floor.bpf.c's two programs each read one table entry per packet along a
// random cycle through N entries: a one-cache-line array entry by index (the floor of a flow
// table read by index: one miss) and an LRU hash entry with kvs_flows' key and value sizes
// (--hash: or a plain hash, preallocated or not, for comparison).
// Prints one JSON object.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace po = boost::program_options;

namespace {
struct Line {
    std::uint32_t next, word[15];
};
struct Key {
    std::uint32_t w[10];
};
struct Val {
    std::uint32_t next, word[39];
};
static_assert(sizeof(Line) == 64 && sizeof(Key) == 40 && sizeof(Val) == 160);

// Median of `reps` kernel-timed runs of `repeat` packets; 0 on failure.
std::uint32_t time_prog(int fd, const std::vector<std::uint8_t> &first, unsigned repeat,
                        unsigned reps) {
    std::vector<std::uint32_t> ns;
    for (unsigned r = 0; r < reps; ++r) {
        std::vector<std::uint8_t> pkt = first;
        LIBBPF_OPTS(bpf_test_run_opts, t, .data_in = pkt.data(),
                    .data_size_in = static_cast<__u32>(pkt.size()),
                    .repeat = static_cast<int>(repeat));
        if (bpf_prog_test_run_opts(fd, &t) != 0 || t.retval != XDP_TX) return 0;
        ns.push_back(t.duration);
    }
    std::sort(ns.begin(), ns.end());
    return ns[ns.size() / 2];
}
}  // namespace

int main(int argc, char **argv) {
    unsigned entries = 1, repeat = 1000000, reps = 3, seed = 1;
    std::string obj, hash_kind = "lru";
    po::options_description d(
        "kvsteer-lookup-floor [options]\n"
        "The memory floor under kvsteer's flow lookup (needs root): kernel-timed ns per packet of "
        "a one-cache-line array read by index and of an LRU hash lookup sized like kvs_flows, "
        "each walking a random cycle through --entries entries. Prints one JSON object.\nOptions");
    d.add_options()("help,h", "show this help")(
        "entries", po::value(&entries)->default_value(entries), "table entries (1..4M)")(
        "repeat", po::value(&repeat)->default_value(repeat), "packets per measurement")(
        "reps", po::value(&reps)->default_value(reps), "measurements (median reported)")(
        "seed", po::value(&seed)->default_value(seed), "cycle shuffle seed")(
        "hash", po::value(&hash_kind)->default_value(hash_kind),
        "the hash map's kind: lru (kvs_flows'), hash (preallocated, no eviction), "
        "hash-noprealloc (elements allocated on insert, BPF_F_NO_PREALLOC)")(
        "obj", po::value(&obj)->default_value(KVS_BENCH_OBJ_DIR "/lookup_floor.bpf.o"),
        "the BPF object (lookup_floor.bpf.c)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, d), vm);
        po::notify(vm);
    } catch (const po::error &e) {
        std::cerr << "kvsteer-lookup-floor: " << e.what() << "\n" << d;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << d;
        return 0;
    }
    if (entries < 1 || entries > (4u << 20) || repeat < 1 || repeat > 100000000 || reps < 1) {
        std::cerr << "kvsteer-lookup-floor: --entries 1..4M, --repeat 1..100M, --reps >= 1\n";
        return 2;
    }
    if (hash_kind != "lru" && hash_kind != "hash" && hash_kind != "hash-noprealloc") {
        std::cerr << "kvsteer-lookup-floor: --hash lru|hash|hash-noprealloc\n";
        return 2;
    }
    libbpf_set_print(nullptr);
    bpf_object *o = bpf_object__open_file(obj.c_str(), nullptr);
    if (!o) {
        std::cerr << "kvsteer-lookup-floor: cannot open " << obj << "\n";
        return 1;
    }
    bpf_map *am = bpf_object__find_map_by_name(o, "kvb_floor_array");
    bpf_map *hm = bpf_object__find_map_by_name(o, "kvb_floor_hash");
    if (hm && hash_kind.rfind("hash", 0) == 0) {
        bpf_map__set_type(hm, BPF_MAP_TYPE_HASH);
        if (hash_kind == "hash-noprealloc") bpf_map__set_map_flags(hm, BPF_F_NO_PREALLOC);
    }
    // The LRU hash evicts before it is full (per-CPU free lists): headroom, as xdp-live gives.
    if (!am || !hm || bpf_map__set_max_entries(am, entries) != 0 ||
        bpf_map__set_max_entries(hm, std::max(65536u, entries + entries / 2)) != 0 ||
        bpf_object__load(o) != 0) {
        std::cerr << "kvsteer-lookup-floor: loading " << obj << " failed (root?)\n";
        return 1;
    }
    std::vector<std::uint32_t> cyc(entries);
    std::iota(cyc.begin(), cyc.end(), 0u);
    std::shuffle(cyc.begin(), cyc.end(), std::mt19937(seed));
    const std::size_t bytes = std::size_t(entries) * sizeof(Line);
    void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(am), 0);
    if (m == MAP_FAILED) {
        std::perror("kvsteer-lookup-floor: mmap of the array");
        return 1;
    }
    auto *lines = static_cast<Line *>(m);
    for (unsigned i = 0; i < entries; ++i) lines[cyc[i]].next = cyc[(i + 1) % entries];
    munmap(m, bytes);
    const int hfd = bpf_map__fd(hm);
    for (unsigned i = 0; i < entries; ++i) {
        Key k{};
        Val v{};
        k.w[0] = cyc[i];
        k.w[4] = 0x0100000a;  // an address-like word, as in a flow key
        v.next = cyc[(i + 1) % entries];
        if (bpf_map_update_elem(hfd, &k, &v, BPF_NOEXIST) != 0) {
            std::perror("kvsteer-lookup-floor: filling the hash");
            return 1;
        }
    }
    std::vector<std::uint8_t> pkt(128, 0);
    std::memcpy(&pkt[14], &cyc[0], 4);
    std::uint32_t word4 = 0x0100000a;
    std::memcpy(&pkt[14 + 16], &word4, 4);
    const auto prog_fd = [o](const char *name) {
        bpf_program *p = bpf_object__find_program_by_name(o, name);
        return p ? bpf_program__fd(p) : -1;
    };
    const std::uint32_t arr = time_prog(prog_fd("kvb_floor_array_walk"), pkt, repeat, reps);
    const std::uint32_t hsh = time_prog(prog_fd("kvb_floor_hash_walk"), pkt, repeat, reps);
    bpf_object__close(o);
    if (!arr || !hsh) {
        std::cerr << "kvsteer-lookup-floor: a test run failed (or a walk left the table)\n";
        return 1;
    }
    std::printf(
        "{\"entries\": %u, \"hash\": \"%s\", \"array_ns_per_pkt\": %u, "
        "\"hash_ns_per_pkt\": %u}\n",
        entries, hash_kind.c_str(), arr, hsh);
    return 0;
}
