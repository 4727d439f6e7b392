// kvsteer-xdp-live: drives the appliance's XDP program with established-flow traffic.
//   --mode live:    real frames injected with BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES as if
//                   received on --iface; the program's XDP_TX sends them out of --iface to its veth
//                   peer (--peer), where a counting XDP program drops them. One injector thread per
//                   CPU in --cpus. Reports frames/s injected, forwarded (the program's counters)
//                   and received at the peer.
//   --mode testrun: BPF_PROG_TEST_RUN with repeat (no transmit): kernel-timed ns/packet; IPv4 or
//                   (--family 6) IPv6 flows through a dual-stack configuration.
// Both modes install --flows established flows and chain them: flow i rewrites the packet onto
// the key of flow i+1 (a random cycle), so consecutive packets walk the whole table the way
// traffic of many flows would, instead of hitting one hot entry.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/core/po_error.h"
#include "kvsteer/abi.h"
#include "kvsteer/bpf/loader.h"
#include "kvsteer/csum.h"
#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

namespace po = boost::program_options;

namespace {

using Bytes = std::vector<std::uint8_t>;
using Clock = std::chrono::steady_clock;

const std::uint8_t kMacA[6] = {0x02, 0x6b, 0x76, 0, 0, 1};
const std::uint8_t kMacB[6] = {0x02, 0x6b, 0x76, 0, 0, 2};

// TCP/IPv4 or IPv6 (k.family) frame of exactly `size` bytes (no FCS) with NOP NOP TS options,
// ACK|PSH, valid sums.
Bytes tcp_frame(const kvs_flow_key &k, std::uint32_t seq, std::uint32_t ack, std::size_t size) {
    const bool v6 = k.family == KVS_AF_INET6;
    const std::size_t l3 = v6 ? 40 : 20, hdr = 14 + l3 + 32;
    Bytes b(std::max(size, hdr), 0x61);
    std::memcpy(&b[0], kMacB, 6);
    std::memcpy(&b[6], kMacA, 6);
    b[12] = v6 ? 0x86 : 0x08;
    b[13] = v6 ? 0xdd : 0x00;
    std::uint8_t *ip = &b[14];
    std::memset(ip, 0, l3 + 32);  // headers start zeroed (id, fragment offset, urgent pointer)
    const auto l4 = static_cast<std::uint32_t>(b.size() - 14 - l3);
    std::uint16_t c = 0;
    if (v6) {
        ip[0] = 0x60;
        const std::uint16_t plen = htons(static_cast<std::uint16_t>(l4));
        std::memcpy(ip + 4, &plen, 2);
        ip[6] = 6;
        ip[7] = 64;
        std::memcpy(ip + 8, k.saddr, 16);
        std::memcpy(ip + 24, k.daddr, 16);
    } else {
        ip[0] = 0x45;
        const std::uint16_t tot = htons(static_cast<std::uint16_t>(20 + l4));
        std::memcpy(ip + 2, &tot, 2);
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        std::memcpy(ip + 12, &k.saddr[0], 4);
        std::memcpy(ip + 16, &k.daddr[0], 4);
        c = kvs_csum_finish(kvs_csum_partial(ip, 20, 0));
        std::memcpy(ip + 10, &c, 2);
    }
    std::uint8_t *th = ip + l3;
    const std::uint32_t s = htonl(seq), a = htonl(ack);
    std::memcpy(th, &k.sport, 2);
    std::memcpy(th + 2, &k.dport, 2);
    std::memcpy(th + 4, &s, 4);
    std::memcpy(th + 8, &a, 4);
    th[12] = 8 << 4;  // 32-byte header
    th[13] = 0x18;    // ACK|PSH
    th[14] = 0x01;
    th[15] = 0xf5;
    std::memset(th + 16, 0, 4);
    const std::uint8_t o[12] = {1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0};
    std::memcpy(th + 20, o, 12);
    const std::uint64_t sum = v6 ? kvs_csum_pseudo6(k.saddr, k.daddr, 6, l4)
                                 : kvs_csum_pseudo4(k.saddr[0], k.daddr[0], 6, l4);
    c = kvs_csum_finish(kvs_csum_partial(th, l4, sum));
    std::memcpy(th + 16, &c, 2);
    return b;
}

// Flow i's key: client 10.1/16 + i (IPv6 fd01::i) -> VIP 10.9.0.1 (fd00::9), or backend
// 10.128/16 + i (fd80::i) -> SNAT 10.2.0.1 (fd02::1, snat2_addr).
kvs_flow_key key_of(bool v6, bool s2c, std::uint32_t i) {
    kvs_flow_key k{};
    k.family = v6 ? KVS_AF_INET6 : KVS_AF_INET;
    k.proto = 6;
    auto addr = [&](std::uint32_t *a, std::uint32_t v4_base, std::uint32_t v6_top,
                    std::uint32_t n) {
        if (!v6) {
            a[0] = htonl(v4_base + n);
            return;
        }
        a[0] = htonl(v6_top);
        a[3] = htonl(n);
    };
    if (!s2c) {  // client -> VIP
        addr(k.saddr, 0x0a010000u, 0xfd010000u, i);
        addr(k.daddr, 0x0a090000u, 0xfd000000u, v6 ? 9 : 1);
        k.sport = htons(static_cast<std::uint16_t>(40000 + (i & 0x3fff)));
        k.dport = htons(80);
    } else {  // backend -> SNAT address
        addr(k.saddr, 0x0a800000u, 0xfd800000u, i);
        addr(k.daddr, 0x0a020000u, 0xfd020000u, 1);
        k.sport = htons(8000);
        k.dport = htons(static_cast<std::uint16_t>(20000 + (i % 10000)));
    }
    return k;
}

// Entry for flow `i` that rewrites the packet onto key `next`, with the same per-packet work as a
// real entry (sequence/ack/timestamp deltas, window rescale on the server side, MACs).
kvs_flow flow_to(bool s2c, const kvs_flow_key &next) {
    kvs_flow f{};
    std::memcpy(f.new_saddr, next.saddr, 16);
    std::memcpy(f.new_daddr, next.daddr, 16);
    f.new_sport = next.sport;
    f.new_dport = next.dport;
    std::memcpy(f.new_smac, kMacA, 6);
    std::memcpy(f.new_dmac, kMacB, 6);
    f.dir = s2c ? KVS_DIR_S2C : KVS_DIR_C2S;
    if (s2c) {
        f.seq_delta = 0x10002345u;
        f.tsval_delta = 777;
        f.win_shl = 2;
    } else {
        f.ack_delta = 0x9abcdef0u;
        f.tsecr_delta = 12345;
    }
    f.backend_id = 1;
    return f;
}

bool fill_flows(int fd, bool v6, bool s2c, std::uint32_t n, std::uint32_t seed, std::string *err) {
    std::vector<std::uint32_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0u);
    std::mt19937 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
    // perm[0] must be flow 0: the injected frame carries key 0.
    std::swap(*std::find(perm.begin(), perm.end(), 0u), perm[0]);
    const std::uint32_t chunk = 8192;
    std::vector<kvs_flow_key> keys;
    std::vector<kvs_flow> vals;
    for (std::uint32_t base = 0; base < n; base += chunk) {
        keys.clear();
        vals.clear();
        for (std::uint32_t j = base; j < std::min(n, base + chunk); j++) {
            keys.push_back(key_of(v6, s2c, perm[j]));
            vals.push_back(flow_to(s2c, key_of(v6, s2c, perm[(j + 1) % n])));
        }
        auto cnt = static_cast<std::uint32_t>(keys.size());
        LIBBPF_OPTS(bpf_map_batch_opts, bo);
        if (bpf_map_update_batch(fd, keys.data(), vals.data(), &cnt, &bo) != 0) {
            *err = std::string("bpf_map_update_batch(kvs_flows): ") + std::strerror(errno);
            return false;
        }
    }
    return true;
}

std::uint64_t fwd_count(const kvsteer::bpf::Loader &l) {
    std::vector<std::uint64_t> st(KVS_R__COUNT);
    std::string err;
    if (!l.read_stats(st.data(), KVS_R__COUNT, &err)) {
        spdlog::error("reading kvs_stats: {}", err);
        std::exit(1);
    }
    return st[KVS_R_TX_FWD_C2S] + st[KVS_R_TX_FWD_S2C];
}

// Logs the program's nonzero reason counters (why packets were not forwarded).
void log_reasons(const kvsteer::bpf::Loader &l) {
    std::vector<std::uint64_t> st(KVS_R__COUNT);
    std::string err;
    if (!l.read_stats(st.data(), KVS_R__COUNT, &err)) return;
    for (unsigned r = 0; r < KVS_R__COUNT; r++)
        if (st[r]) spdlog::warn("  {}: {}", kvs_reason_name(r), st[r]);
}

std::uint64_t peer_count(int map_fd) {
    std::uint64_t out = 0;
    if (!kvsteer::bpf::read_percpu_counters(map_fd, &out, 1, nullptr)) return 0;
    return out;
}

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        spdlog::warn("cannot pin to CPU {}", cpu);
}

std::vector<int> parse_cpus(const std::string &s) {
    std::vector<int> v;
    std::stringstream ss(s);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
        if (tok.empty()) continue;
        v.push_back(std::stoi(tok));
    }
    return v;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty()
               ? 0
               : (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
}

}  // namespace

int main(int argc, char **argv) {
    po::options_description desc(
        "kvsteer-xdp-live [options]\n"
        "Established-flow forwarding through the kvsteer XDP program (needs root).\n"
        "live mode: run inside a namespace holding a veth pair --iface/--peer; frames are "
        "injected\n"
        "as if received on --iface, forwarded by XDP_TX and counted (then dropped) on --peer.\n"
        "Prints one JSON object (also to --json FILE).\nOptions");
    std::string mode, iface, peer, cpus_s, dir, json_path, count_obj;
    double seconds = 2;
    std::uint32_t flows = 1, size = 66, batch = 64, repeat = 1000000, reps = 3, seed = 1,
                  family = 4;
    desc.add_options()("help,h", "show this help")("mode", po::value(&mode)->default_value("live"),
                                                   "live | testrun")(
        "iface", po::value(&iface), "live: interface the frames arrive on and leave by (XDP_TX)")(
        "peer", po::value(&peer), "live: its veth peer; gets the counting XDP program")(
        "cpus", po::value(&cpus_s)->default_value("0"),
        "CPUs to run on, one injector thread each (e.g. 0,1)")(
        "seconds", po::value(&seconds)->default_value(2), "live: how long to inject")(
        "family", po::value(&family)->default_value(4),
        "testrun: 4 | 6 (IPv6 flows through the dual-stack configuration)")(
        "flows", po::value(&flows)->default_value(1),
        "established flows in the flow table (chained)")(
        "dir", po::value(&dir)->default_value("c2s"),
        "c2s (client->backend) | s2c (backend->client)")(
        "size", po::value(&size)->default_value(66),
        "frame bytes without FCS (>= 66: headers + TS option)")(
        "batch", po::value(&batch)->default_value(64), "live: frames per batch (1..256)")(
        "repeat", po::value(&repeat)->default_value(1000000),
        "testrun: repetitions per measurement")("reps", po::value(&reps)->default_value(3),
                                                "testrun: measurements (median reported)")(
        "seed", po::value(&seed)->default_value(1), "flow-chain shuffle seed")(
        "count-obj", po::value(&count_obj)->default_value(KVS_BENCH_OBJ_DIR "/xdp_count.bpf.o"),
        "counting XDP object attached to --peer")("json", po::value(&json_path),
                                                  "also write the result object to this file")(
        "floor", po::bool_switch(),
        "live: inject through a do-nothing XDP_TX program instead (the rig's floor)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "kvsteer-xdp-live: %s (see --help)\n", kvsteer::error_text(e).c_str());
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    const bool live = mode == "live";
    const bool floor = vm["floor"].as<bool>();
    if (!live && mode != "testrun") {
        std::fprintf(stderr, "kvsteer-xdp-live: --mode must be live or testrun, got '%s'\n",
                     mode.c_str());
        return 2;
    }
    if (dir != "c2s" && dir != "s2c") {
        std::fprintf(stderr, "kvsteer-xdp-live: --dir must be c2s or s2c, got '%s'\n", dir.c_str());
        return 2;
    }
    if (size < 66 || size > 3000 || flows < 1 || flows > 4000000 || batch < 1 || batch > 256) {
        std::fprintf(stderr, "kvsteer-xdp-live: --size 66..3000, --flows 1..4M, --batch 1..256\n");
        return 2;
    }
    // The peer's counting program counts IPv4 frames only: IPv6 is measured in test-run.
    if ((family != 4 && family != 6) || (live && family != 4)) {
        std::fprintf(stderr, "kvsteer-xdp-live: --family 4 | 6 (6: --mode testrun only)\n");
        return 2;
    }
    const bool s2c = dir == "s2c", v6 = family == 6;
    std::vector<int> cpus;
    try {
        cpus = parse_cpus(cpus_s);
    } catch (const std::exception &) {
        std::fprintf(stderr, "kvsteer-xdp-live: bad --cpus '%s'\n", cpus_s.c_str());
        return 2;
    }
    if (cpus.empty()) cpus.push_back(0);

    int ifindex = 0, peer_ifindex = 0;
    if (live) {
        ifindex = static_cast<int>(if_nametoindex(iface.c_str()));
        peer_ifindex = static_cast<int>(if_nametoindex(peer.c_str()));
        if (!ifindex || !peer_ifindex) {
            std::fprintf(
                stderr,
                "kvsteer-xdp-live: live mode needs --iface and --peer (got '%s', '%s'): %s\n",
                iface.c_str(), peer.c_str(), std::strerror(errno));
            return 2;
        }
    }

    std::string err;
    kvsteer::bpf::LoaderOptions lo;
    // LRU maps evict before they are full (per-CPU free lists): leave headroom.
    lo.flow_max = std::max<std::uint32_t>(65536, flows + flows / 2);
    auto l = kvsteer::bpf::Loader::load(lo, &err);
    if (!l) {
        spdlog::error("{}", err);
        return 1;
    }
    kvs_config cfg{};
    // Dual stack, as key_of's addresses: VIPs 10.9.0.1 and fd00::9, SNAT 10.2.0.1 and fd02::1.
    const kvs_flow_key c4 = key_of(false, false, 0), c6 = key_of(true, false, 0);
    const kvs_flow_key s4 = key_of(false, true, 0), s6 = key_of(true, true, 0);
    cfg.n_vips = 2;
    std::memcpy(cfg.vips[0].addr, c4.daddr, 16);
    cfg.vips[0].port = htons(80);
    cfg.vips[0].family = KVS_AF_INET;
    std::memcpy(cfg.vips[1].addr, c6.daddr, 16);
    cfg.vips[1].port = htons(80);
    cfg.vips[1].family = KVS_AF_INET6;
    std::memcpy(cfg.snat_addr, s4.daddr, 16);
    cfg.snat_family = KVS_AF_INET;
    std::memcpy(cfg.snat2_addr, s6.daddr, 16);
    cfg.snat2_family = KVS_AF_INET6;
    cfg.snat_port_lo = 20000;
    cfg.snat_port_hi = 29999;
    std::uint32_t zero = 0;
    bpf_map_update_elem(l->map_fd(KVS_MAP_CONFIG), &zero, &cfg, BPF_ANY);
    auto t_fill = Clock::now();
    if (!fill_flows(l->map_fd(KVS_MAP_FLOWS), v6, s2c, flows, seed, &err)) {
        spdlog::error("{}", err);
        return 1;
    }
    const double fill_s = std::chrono::duration<double>(Clock::now() - t_fill).count();
    const Bytes pkt = tcp_frame(key_of(v6, s2c, 0), 5000, 0x80001300, size);

    std::ostringstream js;
    js << "{\"mode\": \"" << (floor ? "live-floor" : mode) << "\", \"dir\": \"" << dir
       << "\", \"family\": " << family << ", \"size\": " << size << ", \"flows\": " << flows
       << ", \"cpus\": " << cpus.size() << ", \"fill_s\": " << fill_s;

    if (!live) {
        pin_to(cpus[0]);
        std::vector<double> ns;
        bool all_fwd = true;
        for (std::uint32_t r = 0; r < reps; r++) {
            const std::uint64_t f0 = fwd_count(*l);
            LIBBPF_OPTS(bpf_test_run_opts, o);
            o.data_in = pkt.data();
            o.data_size_in = static_cast<std::uint32_t>(pkt.size());
            o.repeat = repeat;
            if (bpf_prog_test_run_opts(l->prog_fd(), &o) != 0) {
                spdlog::error("bpf_prog_test_run_opts: {}", std::strerror(errno));
                return 1;
            }
            const std::uint64_t fwd = fwd_count(*l) - f0;
            if (o.retval != XDP_TX || fwd != repeat) {
                if (all_fwd)
                    spdlog::warn("verdict {} (want XDP_TX {}), {} of {} forwarded", o.retval,
                                 int(XDP_TX), fwd, repeat);
                all_fwd = false;
            }
            ns.push_back(o.duration);
        }
        if (!all_fwd) {
            spdlog::warn(
                "not every packet was forwarded on an established flow; the program counted:");
            log_reasons(*l);
        }
        js << ", \"ns_per_pkt\": " << median(ns)
           << ", \"ns_min\": " << *std::min_element(ns.begin(), ns.end())
           << ", \"ns_max\": " << *std::max_element(ns.begin(), ns.end())
           << ", \"all_forwarded\": " << (all_fwd ? 1 : 0) << "}";
    } else {
        bpf_object *cobj = bpf_object__open_file(count_obj.c_str(), nullptr);
        if (!cobj || bpf_object__load(cobj) != 0) {
            spdlog::error("loading {} failed", count_obj);
            return 1;
        }
        bpf_program *cp = bpf_object__find_program_by_name(cobj, "kvb_count_drop");
        bpf_program *bp = bpf_object__find_program_by_name(cobj, "kvb_bounce");
        if (!cp || !bp) {
            spdlog::error("{} lacks kvb_count_drop / kvb_bounce", count_obj);
            return 1;
        }
        const int cprog = bpf_program__fd(cp);
        const int cmap = bpf_object__find_map_fd_by_name(cobj, "kvb_count");
        if (bpf_xdp_attach(peer_ifindex, cprog, XDP_FLAGS_DRV_MODE, nullptr) != 0) {
            spdlog::error("attaching the counter to {}: {}", peer, std::strerror(errno));
            return 1;
        }
        const std::uint64_t f0 = fwd_count(*l), p0 = peer_count(cmap);
        std::atomic<int> ready{0};
        std::atomic<bool> go{false}, failed{false};
        std::vector<std::uint64_t> sent(cpus.size(), 0);
        std::vector<double> secs(cpus.size(), 0);
        std::vector<std::thread> th;
        const int prog = floor ? bpf_program__fd(bp) : l->prog_fd();
        for (std::size_t t = 0; t < cpus.size(); t++) {
            th.emplace_back([&, t] {
                pin_to(cpus[t]);
                xdp_md ctx{};
                ctx.ingress_ifindex = static_cast<std::uint32_t>(ifindex);
                ctx.data_end = static_cast<std::uint32_t>(
                    pkt.size());  // the kernel wants data_end == frame size
                ready++;
                while (!go) std::this_thread::yield();
                const auto t0 = Clock::now();
                const auto end = t0 + std::chrono::duration<double>(seconds);
                const std::uint32_t per_call = 100000;
                while (Clock::now() < end) {
                    LIBBPF_OPTS(bpf_test_run_opts, o);
                    o.data_in = pkt.data();
                    o.data_size_in = static_cast<std::uint32_t>(pkt.size());
                    o.ctx_in = &ctx;
                    o.ctx_size_in = sizeof ctx;
                    o.repeat = per_call;
                    o.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
                    o.batch_size = batch;
                    if (bpf_prog_test_run_opts(prog, &o) != 0) {
                        spdlog::error("live BPF_PROG_TEST_RUN on CPU {}: {}", cpus[t],
                                      std::strerror(errno));
                        failed = true;
                        break;
                    }
                    sent[t] += per_call;
                }
                secs[t] = std::chrono::duration<double>(Clock::now() - t0).count();
            });
        }
        while (ready < static_cast<int>(cpus.size())) std::this_thread::yield();
        const auto w0 = Clock::now();
        go = true;
        for (auto &t : th) t.join();
        const double wall = std::chrono::duration<double>(Clock::now() - w0).count();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // peer NAPI drains
        const std::uint64_t rcv = peer_count(cmap) - p0;
        // The floor program counts nothing itself: what the peer received is what it sent.
        const std::uint64_t fwd = floor ? rcv : fwd_count(*l) - f0;
        bpf_xdp_detach(peer_ifindex, XDP_FLAGS_DRV_MODE, nullptr);
        bpf_object__close(cobj);
        if (failed) return 1;
        const std::uint64_t inj = std::accumulate(sent.begin(), sent.end(), std::uint64_t{0});
        js << ", \"seconds\": " << wall << ", \"injected\": " << inj
           << ", \"forwarded_xdp\": " << fwd << ", \"received_peer\": " << rcv
           << ", \"mpps_injected\": " << inj / wall / 1e6
           << ", \"mpps_forwarded\": " << fwd / wall / 1e6
           << ", \"mpps_received\": " << rcv / wall / 1e6 << ", \"per_cpu_mpps\": [";
        for (std::size_t t = 0; t < cpus.size(); t++)
            js << (t ? ", " : "") << (secs[t] > 0 ? sent[t] / secs[t] / 1e6 : 0);
        js << "]}";
        if (rcv < fwd * 0.99) spdlog::warn("peer received {} of {} forwarded frames", rcv, fwd);
        if (!floor && fwd < inj) {
            spdlog::warn("{} of {} injected frames were not forwarded; the program counted:",
                         inj - fwd, inj);
            log_reasons(*l);
        }
    }
    std::cout << js.str() << "\n";
    if (!json_path.empty()) {
        std::ofstream f(json_path);
        f << js.str() << "\n";
        if (!f) {
            spdlog::error("writing {} failed", json_path);
            return 1;
        }
    }
    return 0;
}
