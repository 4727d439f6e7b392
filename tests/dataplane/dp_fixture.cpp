// kvsteer-dp-fixture: fills the pinned maps the way kvsteerd would (config, backends, Maglev)
// and reads them back (flows, counters), so dataplane tests run without the daemon.
#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <boost/program_options.hpp>

#include "kvsteer/core/po_error.h"
#include "kvsteer/bpf/maps.h"
#include "kvsteer/core/maglev.h"
#include "kvsteer/reasons.h"

namespace po = boost::program_options;
using namespace kvsteer;

namespace {

bool parse_mac(const std::string &s, std::uint8_t mac[6]) {
    unsigned v[6];
    if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
        return false;
    for (int i = 0; i < 6; ++i) mac[i] = static_cast<std::uint8_t>(v[i]);
    return true;
}

// An IPv4 or IPv6 address into kvs_flow_key's layout (IPv4 in [0]); its family, or 0.
std::uint8_t parse_ip(const std::string &s, std::uint32_t out[4]) {
    std::memset(out, 0, 16);
    if (inet_pton(AF_INET, s.c_str(), out) == 1) return KVS_AF_INET;
    if (inet_pton(AF_INET6, s.c_str(), out) == 1) return KVS_AF_INET6;
    return 0;
}

// "IPv4:PORT" or "[IPv6]:PORT"; the address's family, or 0.
std::uint8_t parse_ep(const std::string &s, std::uint32_t ip[4], std::uint16_t *port) {
    const auto c = s.rfind(':');
    if (c == std::string::npos || c + 1 == s.size()) return 0;
    std::string host = s.substr(0, c);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    else if (host.find(':') != std::string::npos)
        return 0;  // IPv6 needs brackets
    const std::uint8_t fam = parse_ip(host, ip);
    const unsigned long p = std::strtoul(s.c_str() + c + 1, nullptr, 10);
    if (!fam || p == 0 || p > 65535) return 0;
    *port = htons(static_cast<std::uint16_t>(p));
    return fam;
}

int die(const std::string &m) {
    std::cerr << "kvsteer-dp-fixture: " << m << "\n";
    return 1;
}

}  // namespace

int main(int argc, char **argv) {
    std::string cmd, bpffs, ports = "10000-39999", app_mac, steer = "prefix", set_state;
    std::vector<std::string> backends, vips, snats;
    std::uint32_t prefix_len = 256, block_size = 512, max_blocks = 4, max_held = 14600, be_id = 0;
    bool timestamps = true;
    bool per_request = true, all = false;
    std::uint32_t syn_rate = KVS_DEFAULT_SYN_RATE_PER_PREFIX,
                  syn_burst = KVS_DEFAULT_SYN_BURST_PER_PREFIX;
    po::options_description d(
        "kvsteer-dp-fixture COMMAND --bpffs DIR [options]\n"
        "Commands: fill (create/overwrite config, backends, Maglev), flows (count kvs_flows\n"
        "entries), counters (dataplane counters and per-backend load), set-state (one backend)");
    d.add_options()("help,h", "show this help")("command", po::value(&cmd),
                                                "fill|flows|counters|set-state")(
        "bpffs", po::value(&bpffs), "bpffs directory of the pinned maps")(
        "vip", po::value(&vips), "VIP IP:PORT or [IPv6]:PORT (repeatable)")(
        "snat", po::value(&snats), "SNAT address (repeatable: one per family)")(
        "snat-ports", po::value(&ports)->default_value(ports), "SNAT port range LO-HI")(
        "app-mac", po::value(&app_mac), "appliance MAC")(
        "backend", po::value(&backends),
        "IP:PORT,MAC or [IPv6]:PORT,MAC (repeatable; ids in order from 0)")(
        "steer", po::value(&steer)->default_value(steer), "prefix|rr|5tuple")(
        "prefix-len", po::value(&prefix_len)->default_value(prefix_len),
        "bytes in the prefix hash")("block-size", po::value(&block_size)->default_value(block_size),
                                    "bytes per chained block")(
        "max-blocks", po::value(&max_blocks)->default_value(max_blocks), "chained blocks hashed")(
        "max-held", po::value(&max_held)->default_value(max_held), "max_held_bytes")(
        "timestamps", po::value(&timestamps)->default_value(timestamps), "answer SYN timestamps")(
        "per-request", po::value(&per_request)->default_value(per_request),
        "steer every request of a kept-alive connection")(
        "syn-rate-per-prefix", po::value(&syn_rate)->default_value(syn_rate),
        "SYN-ACKs a second to one client /24 (0 = no limit)")(
        "syn-burst-per-prefix", po::value(&syn_burst)->default_value(syn_burst),
        "SYN-ACK burst to one client /24")("id", po::value(&be_id), "backend id (set-state)")(
        "state", po::value(&set_state), "up|down|drain (set-state)")(
        "all", po::bool_switch(&all),
        "counters: every reason, zeros too (a name a test reads "
        "that is not printed does not exist)");
    po::positional_options_description pos;
    pos.add("command", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(d).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        return die(kvsteer::error_text(e));
    }
    if (vm.count("help") || cmd.empty()) {
        std::cout << d << "\n";
        return cmd.empty() && !vm.count("help") ? 2 : 0;
    }
    if (bpffs.empty()) return die("--bpffs is required");
    std::string err;
    auto m = bpf::open_pinned_maps(bpffs, cmd == "fill", &err);
    if (!m) return die(err);

    if (cmd == "fill") {
        kvs_config &c = *m->config;
        if (vips.empty() || vips.size() > KVS_MAX_VIPS) return die("--vip: 1 to 16 are needed");
        std::memset(c.vips, 0, sizeof(c.vips));
        for (std::size_t i = 0; i < vips.size(); ++i) {
            c.vips[i].family = parse_ep(vips[i], c.vips[i].addr, &c.vips[i].port);
            if (!c.vips[i].family) return die("bad --vip " + vips[i]);
        }
        c.n_vips = static_cast<std::uint32_t>(vips.size());
        if (snats.empty() || snats.size() > 2) return die("--snat: one or two (one per family)");
        c.snat_family = parse_ip(snats[0], c.snat_addr);
        if (!c.snat_family) return die("bad --snat " + snats[0]);
        c.snat2_family = KVS_AF_NONE;
        std::memset(c.snat2_addr, 0, sizeof(c.snat2_addr));
        if (snats.size() == 2) {
            c.snat2_family = parse_ip(snats[1], c.snat2_addr);
            if (!c.snat2_family || c.snat2_family == c.snat_family)
                return die("bad --snat " + snats[1] + " (the other family than the first)");
        }
        unsigned lo = 0, hi = 0;
        if (std::sscanf(ports.c_str(), "%u-%u", &lo, &hi) != 2 || lo == 0 || hi < lo || hi > 65535)
            return die("bad --snat-ports " + ports);
        c.snat_port_lo = static_cast<std::uint16_t>(lo);
        c.snat_port_hi = static_cast<std::uint16_t>(hi);
        if (!parse_mac(app_mac, c.appliance_mac)) return die("bad --app-mac " + app_mac);
        c.n_workers = 1;
        c.cookie_key[0][0] = 0x0123456789abcdefULL;
        c.cookie_key[0][1] = 0xfedcba9876543210ULL;
        c.cookie_period_s = 64;
        c.flags =
            (timestamps ? KVS_CFG_SYN_TIMESTAMPS : 0) | (per_request ? KVS_CFG_PER_REQUEST : 0);
        c.syn_mss = 1460;
        c.syn_wscale = 7;
        c.syn_window = 64240;
        c.syn_rate_per_prefix = syn_rate;
        c.syn_burst_per_prefix = syn_burst;
        c.steer_mode = steer == "rr"       ? KVS_STEER_ROUND_ROBIN
                       : steer == "5tuple" ? KVS_STEER_FIVE_TUPLE
                                           : KVS_STEER_PREFIX;
        c.prefix_len = prefix_len;
        c.block_size = block_size;
        c.max_blocks = max_blocks;
        c.load_factor_milli = 1250;
        c.max_held_bytes = max_held;
        c.hash_seed = 0x6b7673746565720aULL;
        std::vector<MaglevBackend> mb;
        for (std::size_t i = 0; i < backends.size(); ++i) {
            auto comma = backends[i].find(',');
            if (comma == std::string::npos) return die("bad --backend " + backends[i]);
            kvs_backend &b = m->backends[i];
            std::memset(&b, 0, sizeof(b));
            b.family = parse_ep(backends[i].substr(0, comma), b.addr, &b.port);
            if (!b.family || !parse_mac(backends[i].substr(comma + 1), b.mac))
                return die("bad --backend " + backends[i]);
            b.state = KVS_BE_UP;
            b.weight = 1;
            const std::uint64_t ip = b.addr[0] ^ b.addr[1] ^ b.addr[2] ^ b.addr[3];
            mb.push_back({static_cast<std::uint32_t>(i),
                          0x9e3779b97f4a7c15ULL * (ip ^ (std::uint64_t(b.port) << 32)) + i, 1});
        }
        auto table = build_maglev(mb);
        std::uint32_t half = c.maglev_active ^ 1;
        std::memcpy(m->maglev + half * KVS_MAGLEV_SIZE, table.data(),
                    KVS_MAGLEV_SIZE * sizeof(std::uint32_t));
        c.n_backends = static_cast<std::uint32_t>(backends.size());
        __atomic_store_n(&c.maglev_active, half, __ATOMIC_RELEASE);
        __atomic_fetch_add(&c.generation, 1, __ATOMIC_RELEASE);
        std::cout << "filled: " << vips.size() << " VIPs, " << backends.size() << " backends\n";
        return 0;
    }
    if (cmd == "set-state") {
        if (be_id >= KVS_MAX_BACKENDS) return die("bad --id");
        std::uint8_t st = set_state == "up"      ? KVS_BE_UP
                          : set_state == "down"  ? KVS_BE_DOWN
                          : set_state == "drain" ? KVS_BE_DRAIN
                                                 : 0;
        if (!st) return die("bad --state " + set_state);
        m->backends[be_id].state = st;
        __atomic_fetch_add(&m->config->generation, 1, __ATOMIC_RELEASE);
        return 0;
    }
    if (cmd == "flows") {
        kvs_flow_key k{}, next{};
        const kvs_flow_key *prev = nullptr;
        unsigned n = 0;
        while (bpf_map_get_next_key(m->flows_fd, prev, &next) == 0) {
            k = next;
            prev = &k;
            ++n;
        }
        std::cout << n << "\n";
        return 0;
    }
    if (cmd == "counters") {
        for (unsigned r = 0; r < KVS_R__COUNT; ++r) {
            std::uint64_t v = 0;
            for (unsigned w = 0; w < KVS_MAX_WORKERS; ++w) v += m->dp_stats[w * KVS_STATS_MAX + r];
            if (v || all) std::cout << kvs_reason_name(r) << " " << v << "\n";
        }
        std::uint64_t xs[KVS_STATS_MAX] = {};
        if (bpf::read_xdp_stats(*m, xs, KVS_R__COUNT, &err))
            for (unsigned r = 0; r < KVS_R__COUNT; ++r)
                if (xs[r] || all) std::cout << "xdp_" << kvs_reason_name(r) << " " << xs[r] << "\n";
        for (unsigned w = 0; w < KVS_MAX_WORKERS; ++w)
            if (m->ring_ctl[w].head)
                std::cout << "ring" << w << " head=" << m->ring_ctl[w].head
                          << " tail=" << m->ring_ctl[w].tail
                          << " dropped=" << m->ring_ctl[w].dropped << "\n";
        for (unsigned i = 0; i < m->config->n_backends; ++i) {
            const kvs_backend_load &l = m->load[i];
            std::cout << "backend" << i << " binds=" << l.binds << " closes=" << l.closes
                      << " fail_rst=" << l.bind_fail_rst << " fail_timeout=" << l.bind_fail_timeout
                      << " idle=" << static_cast<std::int64_t>(l.idle_starts - l.idle_ends) << "\n";
        }
        return 0;
    }
    return die("unknown command " + cmd);
}
