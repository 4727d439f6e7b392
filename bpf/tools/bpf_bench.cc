// kvsteer-bpf-bench: ns/packet of the XDP program (BPF_PROG_TEST_RUN) and of the shared C codecs
// in userspace. KVS_BENCH_SMOKE=1 shortens it; KVS_BENCH_OUT=<file> writes a flat JSON object.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kvsteer/core/po_error.h"
#include "kvsteer/bpf/loader.h"
#include "kvsteer/cookie.h"
#include "kvsteer/fleet.h"
#include "kvsteer/flowpair.h"
#include "kvsteer/rewrite.h"
#include "pktgen.h"

namespace po = boost::program_options;

namespace {

using kvstest::Bytes;

// An IPv4 or IPv6 address, network order (IPv4 in a[0]).
struct Addr {
    bool v6 = false;
    std::uint32_t a[4] = {};
};

Addr addr4(const char *s) {
    Addr a;
    a.a[0] = inet_addr(s);
    return a;
}

Addr addr6(const char *s) {
    Addr a;
    a.v6 = true;
    inet_pton(AF_INET6, s, a.a);
    return a;
}

// A TCP/IPv4 or IPv6 frame with NOP NOP TS options and `payload` bytes, valid checksums.
Bytes frame(const Addr &saddr, const Addr &daddr, std::uint16_t sport, std::uint16_t dport,
            std::uint32_t seq, std::uint32_t ack, std::uint8_t flags, bool ts,
            std::size_t payload) {
    kvstest::TcpSpec s;
    s.v6 = saddr.v6;
    std::memcpy(s.saddr, saddr.a, 16);
    std::memcpy(s.daddr, daddr.a, 16);
    s.sport = sport;
    s.dport = dport;
    s.seq = seq;
    s.ack = ack;
    s.flags = flags;
    s.ip_id = 0;
    if (ts) {
        kvstest::LinuxOpts o;
        o.ts = true;
        o.tsval = 256;
        o.tsecr = 512;
        s.opts = kvstest::opt_linux(o);
    }
    s.payload = Bytes(payload, 'a');
    return kvstest::build_tcp(s);
}

Bytes syn_frame(const Addr &saddr, const Addr &daddr) {
    kvstest::TcpSpec s;
    s.v6 = saddr.v6;
    std::memcpy(s.saddr, saddr.a, 16);
    std::memcpy(s.daddr, daddr.a, 16);
    s.sport = 40000;
    s.dport = 80;
    s.seq = 0x1000;
    s.flags = KVS_TCP_SYN;
    s.ip_id = 0;
    // Linux's SYN options: MSS, SACK-perm, TS, NOP, WS.
    kvstest::LinuxOpts o;
    o.mss = 1460;
    o.sack_perm = true;
    o.ts = true;
    o.tsval = 1;
    o.wscale = 7;
    s.opts = kvstest::opt_linux(o);
    return kvstest::build_tcp(s);
}

struct Runner {
    int prog_fd;
    // ns/packet from BPF_PROG_TEST_RUN with `repeat` (the kernel's own timer).
    double repeat_ns(const Bytes &in, int repeat, std::uint32_t *verdict = nullptr) {
        std::vector<std::uint8_t> out(4096);
        LIBBPF_OPTS(bpf_test_run_opts, o);
        o.data_in = in.data();
        o.data_size_in = static_cast<std::uint32_t>(in.size());
        o.data_out = out.data();
        o.data_size_out = static_cast<std::uint32_t>(out.size());
        o.repeat = repeat;
        if (bpf_prog_test_run_opts(prog_fd, &o) != 0) {
            spdlog::error("bpf_prog_test_run_opts: {}", std::strerror(errno));
            std::exit(1);
        }
        if (verdict) *verdict = o.retval;
        return o.duration;
    }
    // Median of `runs` repeat-mode measurements (the machine may be shared and noisy).
    double repeat_median_ns(const Bytes &in, int repeat, int runs,
                            std::uint32_t *verdict = nullptr) {
        std::vector<double> d;
        for (int i = 0; i < runs; i++) d.push_back(repeat_ns(in, repeat / runs, verdict));
        std::sort(d.begin(), d.end());
        return d[d.size() / 2];
    }
    // Median single-run duration over `n` runs (for programs that change their input).
    double single_median_ns(const Bytes &in, int n, std::uint32_t *verdict = nullptr) {
        std::vector<double> d;
        for (int i = 0; i < n; i++) d.push_back(repeat_ns(in, 1, verdict));
        std::sort(d.begin(), d.end());
        return d[d.size() / 2];
    }
};

template <typename T>
void sink(T const &v) {
    asm volatile("" : : "r,m"(v) : "memory");
}

}  // namespace

int main(int argc, char **argv) {
    po::options_description desc(
        "kvsteer-bpf-bench [options]\n"
        "Measures the XDP program through BPF_PROG_TEST_RUN (needs root) and the shared C codecs\n"
        "in userspace. Env: KVS_BENCH_SMOKE=1 (short run), KVS_BENCH_OUT=<file> (flat JSON).\n"
        "Options");
    int repeat = 0;
    std::string obj_dir;
    desc.add_options()("help,h", "show this help")(
        "repeat", po::value(&repeat)->default_value(0),
        "BPF_PROG_TEST_RUN repeat (0 = 2,000,000, smoke 100,000)")(
        "bpf-obj-dir", po::value(&obj_dir)->default_value(KVS_BPF_OBJ_DIR),
        "directory holding xdp_pass.bpf.o");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "kvsteer-bpf-bench: %s (see --help)\n",
                     kvsteer::error_text(e).c_str());
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    const char *smoke_env = std::getenv("KVS_BENCH_SMOKE");
    bool smoke = smoke_env && std::string(smoke_env) == "1";
    if (repeat <= 0)
        repeat = smoke ? 100000 : 5000000;  // >= 1,000,000 per median sample in full mode
    int singles = smoke ? 2000 : 50000;
    long cxx_iters = smoke ? 200000 : 5000000;

    std::string err;
    kvsteer::bpf::LoaderOptions lo;
    lo.flow_max = 65536;
    auto l = kvsteer::bpf::Loader::load(lo, &err);
    if (!l) {
        spdlog::error("{}", err);
        return 1;
    }
    Runner r{l->prog_fd()};

    const Addr client = addr4("10.1.0.2"), vip = addr4("10.9.0.1");
    const Addr snat = addr4("10.2.0.1"), backend = addr4("10.2.0.7");
    // The IPv6 twins: a dual-stack appliance, the IPv6 backend leg from snat2_addr.
    const Addr client6 = addr6("fd00::2"), vip6 = addr6("fd00::9");
    const Addr snat6 = addr6("fd02::1"), backend6 = addr6("fd02::7");
    kvs_config cfg{};
    cfg.n_vips = 2;
    std::memcpy(cfg.vips[0].addr, vip.a, 16);
    cfg.vips[0].port = htons(80);
    cfg.vips[0].family = KVS_AF_INET;
    std::memcpy(cfg.vips[1].addr, vip6.a, 16);
    cfg.vips[1].port = htons(80);
    cfg.vips[1].family = KVS_AF_INET6;
    std::memcpy(cfg.snat_addr, snat.a, 16);
    cfg.snat_family = KVS_AF_INET;
    std::memcpy(cfg.snat2_addr, snat6.a, 16);
    cfg.snat2_family = KVS_AF_INET6;
    cfg.snat_port_lo = 20000;
    cfg.snat_port_hi = 29999;
    cfg.cookie_key[0][0] = 0x0123456789abcdefull;
    cfg.cookie_key[0][1] = 0xfedcba9876543210ull;
    cfg.cookie_period_s = 64;
    cfg.flags = KVS_CFG_SYN_TIMESTAMPS;
    std::uint32_t zero = 0;
    bpf_map_update_elem(l->map_fd(KVS_MAP_CONFIG), &zero, &cfg, BPF_ANY);

    // Flow entries shaped like a real pair (deltas, window scaling, MACs) but rewriting each
    // packet onto its own key, so repeated runs keep hitting the flow (test-run does not reset
    // the frame between repetitions). The rewrite does the same work either way.
    int flows = l->map_fd(KVS_MAP_FLOWS);
    // Installs the pair client -> vip, snat -> backend (one family) and returns its entries.
    struct Pair {
        kvs_flow_key kc, ks;
        kvs_flow fc, fs;
    };
    auto install_pair = [&](const Addr &cl, const Addr &vi, const Addr &sn, const Addr &be) {
        kvs_flowpair_params p{};
        std::memcpy(p.client_addr, cl.a, 16);
        std::memcpy(p.vip_addr, vi.a, 16);
        std::memcpy(p.snat_addr, sn.a, 16);
        std::memcpy(p.backend_addr, be.a, 16);
        p.client_port = htons(40001);
        p.vip_port = htons(80);
        p.snat_port = htons(20001);
        p.backend_port = htons(8000);
        p.family = cl.v6 ? KVS_AF_INET6 : KVS_AF_INET;
        p.client_wscale = 7;
        p.synack_wscale = 7;
        p.backend_wscale = 9;
        p.ts = 1;
        p.cookie = 0x80001234;
        p.backend_isn = 0x7000aaaa;
        p.synack_tsval = 100000;
        p.backend_tsval = 5;
        p.backend_id = 1;
        kvs_flow_key kc, ks;
        kvs_flow fc, fs;
        kvs_flowpair_build(&p, &kc, &fc, &ks, &fs);
        std::memcpy(fc.new_saddr, kc.saddr, 16);
        std::memcpy(fc.new_daddr, kc.daddr, 16);
        fc.new_sport = kc.sport;
        fc.new_dport = kc.dport;
        std::memcpy(fs.new_saddr, ks.saddr, 16);
        std::memcpy(fs.new_daddr, ks.daddr, 16);
        fs.new_sport = ks.sport;
        fs.new_dport = ks.dport;
        bpf_map_update_elem(flows, &kc, &fc, BPF_ANY);
        bpf_map_update_elem(flows, &ks, &fs, BPF_ANY);
        return Pair{kc, ks, fc, fs};
    };
    const Pair pair4 = install_pair(client, vip, snat, backend);
    const kvs_flow &fc = pair4.fc;
    install_pair(client6, vip6, snat6, backend6);

    std::map<std::string, double> res;
    std::uint32_t v = 0;
    // The fast path both ways, IPv4 and (same segments, "_v6") IPv6.
    Bytes c2s;
    for (bool v6 : {false, true}) {
        const std::string sfx = v6 ? "_v6" : "";
        Bytes c = frame(v6 ? client6 : client, v6 ? vip6 : vip, 40001, 80, 5000, 0x80001300,
                        KVS_TCP_ACK | KVS_TCP_PSH, true, 512);
        res["xdp_fastpath_c2s" + sfx + "_ns"] = r.repeat_median_ns(c, repeat, 5, &v);
        if (v != 3) spdlog::warn("c2s{} verdict {} (want XDP_TX)", sfx, v);
        Bytes s = frame(v6 ? backend6 : backend, v6 ? snat6 : snat, 8000, 20001, 0x7000ab00, 5500,
                        KVS_TCP_ACK | KVS_TCP_PSH, true, 1400);
        res["xdp_fastpath_s2c" + sfx + "_ns"] = r.repeat_median_ns(s, repeat, 5, &v);
        if (v != 3) spdlog::warn("s2c{} verdict {} (want XDP_TX)", sfx, v);
        if (!v6) c2s = c;
    }

    // An ICMP frag-needed about a segment sent SNAT -> backend, forwarded. Sent by the backend
    // itself, so the S2C entry (rewriting onto its own key) maps the frame onto itself; the
    // entry that sent the quoted segment (its reverse) is added at SNAT -> backend.
    {
        kvs_flow_key kq = pair4.ks;
        kvs_flow fq = fc;
        std::swap(kq.saddr, kq.daddr);
        std::swap(kq.sport, kq.dport);
        bpf_map_update_elem(flows, &kq, &fq, BPF_ANY);
        kvstest::IcmpSpec e;
        e.saddr[0] = backend.a[0];
        e.daddr[0] = snat.a[0];
        e.rest = 1400;
        e.quote = kvstest::ip_packet(
            frame(snat, backend, 20001, 8000, 5000, 0x7000ab00, KVS_TCP_ACK, true, 1400), 548);
        res["xdp_icmp_error_fwd_ns"] = r.repeat_median_ns(kvstest::build_icmp(e), repeat, 5, &v);
        if (v != 3) spdlog::warn("ICMP error verdict {} (want XDP_TX)", v);
    }

    // First-flight data with a valid cookie: SipHash check + punt (no socket here: dropped).
    kvs_cookie_tuple t{};
    std::memcpy(t.saddr, client.a, 16);
    std::memcpy(t.daddr, vip.a, 16);
    t.sport = htons(40002);
    t.dport = htons(80);
    std::uint32_t cookie =
        kvs_cookie_make(cfg.cookie_key[0], &t, kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64),
                        kvs_cookie_pack_opts(1460, 7, 1));
    Bytes punt =
        frame(client, vip, 40002, 80, 1001, cookie + 1, KVS_TCP_ACK | KVS_TCP_PSH, true, 700);
    res["xdp_punt_ns"] = r.repeat_median_ns(punt, repeat, 5, &v);
    std::vector<std::uint64_t> st(KVS_R__COUNT);
    l->read_stats(st.data(), KVS_R__COUNT, &err);
    if (st[KVS_R_PUNT_NO_XSK] + st[KVS_R_PUNT_FIRST_FLIGHT] < static_cast<std::uint64_t>(repeat))
        spdlog::warn("punt path not taken every time (cookie slot changed mid-run?)");

    // The SYN answer rewrites its own input, so it is timed one run at a time; the kernel's
    // per-call timer overhead is removed with the same measurement of an XDP_PASS-only
    // program and the repeat-mode floor added back, so the figure is comparable to the others.
    Bytes syn = syn_frame(client, vip);
    double syn_single = r.single_median_ns(syn, singles, &v);
    if (v != 3) spdlog::warn("SYN verdict {} (want XDP_TX)", v);
    std::string pass_path = obj_dir + "/xdp_pass.bpf.o";
    bpf_object *pass_obj = bpf_object__open_file(pass_path.c_str(), nullptr);
    if (!pass_obj || bpf_object__load(pass_obj) != 0) {
        spdlog::error("loading {} failed (see --bpf-obj-dir)", pass_path);
        return 1;
    }
    Runner rp{bpf_program__fd(bpf_object__next_program(pass_obj, nullptr))};
    double pass_single = rp.single_median_ns(syn, singles);
    double pass_floor = rp.repeat_median_ns(syn, repeat, 5);
    res["xdp_syncookie_ns"] = std::max(0.0, syn_single - pass_single) + pass_floor;
    res["xdp_pass_floor_ns"] = pass_floor;

    // A fleet's second chance: a client segment this appliance has no flow for, sent on
    // (encapsulated, XDP_TX) to its bucket's owner. The frame grows in place, so it is timed one
    // run at a time like the SYN. Last: the fleet map stays set.
    {
        kvs_fleet fl{};
        fl.generation = 1;
        fl.self = 0;
        for (std::uint8_t i = 0; i < 2; i++) {
            fl.members[i].state = KVS_APP_UP;
            fl.members[i].mac[0] = 0x02;
            fl.members[i].mac[5] = i;
        }
        bpf_map_update_elem(l->map_fd(KVS_MAP_FLEET), &zero, &fl, BPF_ANY);
        kvs_flow_key k{};
        std::memcpy(k.saddr, client.a, 16);
        std::memcpy(k.daddr, vip.a, 16);
        k.sport = htons(40003);
        k.dport = htons(80);
        std::uint32_t b = kvs_fleet_bucket(&k);
        kvs_owner_entry e{1, {KVS_APPLIANCE_NONE, KVS_APPLIANCE_NONE, KVS_APPLIANCE_NONE}, 0};
        bpf_map_update_elem(l->map_fd(KVS_MAP_OWNER), &b, &e, BPF_ANY);
        Bytes miss =
            frame(client, vip, 40003, 80, 5000, 0x31337, KVS_TCP_ACK | KVS_TCP_PSH, true, 512);
        double fleet_single = r.single_median_ns(miss, singles, &v);
        if (v != 3) spdlog::warn("fleet redirect verdict {} (want XDP_TX)", v);
        res["xdp_fleet_redirect_ns"] = std::max(0.0, fleet_single - pass_single) + pass_floor;
    }
    bpf_object__close(pass_obj);

    // Userspace: the same cookie codec and rewrite the dataplane links.
    {
        auto t0 = std::chrono::steady_clock::now();
        std::uint32_t acc = 0;
        kvs_cookie_tuple tt = t;
        for (long i = 0; i < cxx_iters; i++) {
            tt.sport = static_cast<std::uint16_t>(i);
            acc += kvs_cookie_make(cfg.cookie_key[0], &tt, 27000000, 0x5a);
        }
        sink(acc);
        auto t1 = std::chrono::steady_clock::now();
        res["core_cookie_make_ns"] =
            std::chrono::duration<double, std::nano>(t1 - t0).count() / cxx_iters;

        std::vector<std::uint32_t> cookies(1024);
        for (std::size_t i = 0; i < cookies.size(); i++) {
            tt.sport = static_cast<std::uint16_t>(i);
            cookies[i] = kvs_cookie_make(cfg.cookie_key[0], &tt, 27000000, 0x5a);
        }
        int ok = 0;
        t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < cxx_iters; i++) {
            tt.sport = static_cast<std::uint16_t>(i & 1023);
            kvs_cookie_opts o;
            ok += kvs_cookie_check(&cfg.cookie_key[0][0], &tt, cookies[i & 1023], 27000001, &o);
        }
        sink(ok);
        t1 = std::chrono::steady_clock::now();
        if (ok != cxx_iters) spdlog::warn("cookie check failed {} times", cxx_iters - ok);
        res["core_cookie_check_ns"] =
            std::chrono::duration<double, std::nano>(t1 - t0).count() / cxx_iters;

        Bytes buf = c2s;
        t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < cxx_iters; i++) {
            kvs_pkt pk;
            if (kvs_parse(buf.data(), buf.data() + buf.size(), &pk) == KVS_PARSE_OK)
                kvs_flow_rewrite(buf.data() + buf.size(), &pk, &fc);
            sink(buf[38]);
        }
        t1 = std::chrono::steady_clock::now();
        res["core_rewrite_ns"] =
            std::chrono::duration<double, std::nano>(t1 - t0).count() / cxx_iters;
    }

    std::string json = "{";
    bool first = true;
    for (const auto &[k, val] : res) {
        char b[128];
        std::snprintf(b, sizeof b, "%s\"%s\": %.2f", first ? "" : ", ", k.c_str(), val);
        json += b;
        first = false;
        std::printf("%-26s %8.2f ns\n", k.c_str(), val);
    }
    json += "}\n";
    if (const char *out = std::getenv("KVS_BENCH_OUT"); out && *out) {
        std::ofstream f(out);
        f << json;
        if (!f) {
            spdlog::error("writing {} failed", out);
            return 1;
        }
    }
    return 0;
}
