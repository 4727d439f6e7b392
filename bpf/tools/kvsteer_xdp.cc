// kvsteer-xdp: load the kvsteer XDP program with its pinned maps, attach/detach it, show counters.
#include <arpa/inet.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "kvsteer/core/po_error.h"
#include "kvsteer/bpf/loader.h"
#include "kvsteer/bpf/maps.h"
#include "kvsteer/reasons.h"

namespace po = boost::program_options;
using kvsteer::bpf::AttachMode;

namespace {

int usage_error(const std::string &msg) {
    std::fprintf(stderr, "kvsteer-xdp: %s (see --help)\n", msg.c_str());
    return 2;
}

// "10.0.0.1:80" or "[fd00::1]:80" -> a VIP slot.
bool parse_vip(const std::string &s, kvs_vip *v) {
    std::string host, port;
    if (!s.empty() && s[0] == '[') {
        auto close = s.find(']');
        if (close == std::string::npos || close + 2 > s.size() || s[close + 1] != ':') return false;
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos) return false;
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    *v = kvs_vip{};
    char *end = nullptr;
    unsigned long p = std::strtoul(port.c_str(), &end, 10);
    if (port.empty() || *end || p == 0 || p > 65535) return false;
    v->port = htons(static_cast<std::uint16_t>(p));
    if (inet_pton(AF_INET, host.c_str(), &v->addr[0]) == 1) {
        v->family = KVS_AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), v->addr) == 1) {
        v->family = KVS_AF_INET6;
        return true;
    }
    return false;
}

bool parse_mode(const std::string &s, AttachMode *m) {
    if (s == "auto")
        *m = AttachMode::kAuto;
    else if (s == "native")
        *m = AttachMode::kNative;
    else if (s == "generic")
        *m = AttachMode::kGeneric;
    else
        return false;
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    std::string cmd, iface, dir, mode_s, snat_ports, cookie_key;
    std::vector<std::string> vips, snats;
    unsigned syn_mss = 0, syn_wscale = 7, syn_window = 0, cookie_period = 64;
    bool json = false, all = false, syn_ts = false;
    po::options_description desc(
        "kvsteer-xdp COMMAND [options]\n"
        "Commands:\n"
        "  load     create (or reuse) the pinned maps under --bpffs\n"
        "  attach   load the program, reusing the pinned maps, and attach it to --iface\n"
        "  detach   remove the XDP program from --iface\n"
        "  stats    print the XDP counters (kvs_stats) of the maps pinned under --bpffs\n"
        "  config   write VIPs, SNAT range, cookie key and SYN-ACK options into kvs_config\n"
        "           (bring-up and tests; kvsteerd owns the config in production)\n"
        "Options");
    desc.add_options()("help,h", "show this help")("command", po::value(&cmd),
                                                   "load | attach | detach | stats | config")(
        "iface,i", po::value(&iface), "interface name (attach, detach)")(
        "bpffs,b", po::value(&dir)->default_value(KVS_DEFAULT_BPFFS),
        "bpffs directory of the pinned maps")(
        "mode,m", po::value(&mode_s)->default_value("auto"),
        "XDP mode: auto (native, else generic) | native | generic")("json", po::bool_switch(&json),
                                                                    "stats as one JSON object")(
        "all", po::bool_switch(&all), "stats: print zero counters too")(
        "vip", po::value(&vips)->composing(), "config: VIP ADDR:PORT or [ADDR6]:PORT (repeatable)")(
        "snat", po::value(&snats)->composing(),
        "config: appliance-owned backend-side source address; dual stack: give it twice, one "
        "IPv4 and one IPv6 (at most one per family)")("snat-ports", po::value(&snat_ports),
                                                      "config: SNAT port range LO-HI")(
        "cookie-key", po::value(&cookie_key)->default_value("random"),
        "config: 32 hex digits, or 'random'; the old key becomes the previous one")(
        "cookie-period", po::value(&cookie_period)->default_value(64),
        "config: cookie time slot, seconds")("syn-timestamps", po::bool_switch(&syn_ts),
                                             "config: answer SYN timestamps")(
        "syn-mss", po::value(&syn_mss)->default_value(1460), "config: MSS of our SYN-ACK")(
        "syn-wscale", po::value(&syn_wscale)->default_value(7),
        "config: window scale of our SYN-ACK (0..14)")("syn-window",
                                                       po::value(&syn_window)->default_value(64240),
                                                       "config: window field of our SYN-ACK");
    po::positional_options_description pos;
    pos.add("command", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        return usage_error(kvsteer::error_text(e));
    }
    if (vm.count("help") || cmd.empty()) {
        std::cout << desc << "\n";
        return vm.count("help") ? 0 : 2;
    }
    AttachMode mode;
    if (!parse_mode(mode_s, &mode)) return usage_error("bad --mode '" + mode_s + "'");

    std::string err;
    if (cmd == "load") {
        auto maps = kvsteer::bpf::open_pinned_maps(dir, true, &err);
        if (!maps) {
            spdlog::error("{}", err);
            return 1;
        }
        spdlog::info("maps pinned under {}", dir);
        return 0;
    }
    if (cmd == "attach" || cmd == "detach") {
        if (iface.empty()) return usage_error(cmd + " needs --iface");
        int ifindex = static_cast<int>(if_nametoindex(iface.c_str()));
        if (ifindex == 0) return usage_error("no interface named '" + iface + "'");
        if (cmd == "detach") {
            if (!kvsteer::bpf::Loader::detach(ifindex, mode, &err)) {
                spdlog::error("{}", err);
                return 1;
            }
            spdlog::info("XDP detached from {}", iface);
            return 0;
        }
        kvsteer::bpf::LoaderOptions lo;
        lo.pin_dir = dir;
        std::string derr;
        auto check = kvsteer::bpf::open_pinned_maps(dir, true, &derr);  // mkdir + verify layout
        if (!check) {
            spdlog::error("{}", derr);
            return 1;
        }
        auto l = kvsteer::bpf::Loader::load(lo, &err);
        if (!l || !l->attach(ifindex, mode, &err)) {
            spdlog::error("{}", err);
            return 1;
        }
        spdlog::info("kvsteer XDP attached to {} ({} mode), maps under {}", iface,
                     l->attached_mode() == AttachMode::kNative ? "native" : "generic", dir);
        return 0;
    }
    if (cmd == "stats") {
        auto maps = kvsteer::bpf::open_pinned_maps(dir, false, &err);
        if (!maps) {
            spdlog::error("{}", err);
            return 1;
        }
        std::vector<std::uint64_t> v(KVS_R__COUNT);
        if (!kvsteer::bpf::read_xdp_stats(*maps, v.data(), KVS_R__COUNT, &err)) {
            spdlog::error("{}", err);
            return 1;
        }
        if (json) std::cout << "{";
        bool first = true;
        for (unsigned i = 0; i < KVS_R__COUNT; i++) {
            if (!all && v[i] == 0) continue;
            if (json) {
                std::cout << (first ? "" : ",") << "\"" << kvs_reason_name(i) << "\":" << v[i];
            } else {
                std::printf("%-28s %llu\n", kvs_reason_name(i),
                            static_cast<unsigned long long>(v[i]));
            }
            first = false;
        }
        if (json) std::cout << "}\n";
        return 0;
    }
    if (cmd == "config") {
        kvs_config c{};
        if (vips.size() > KVS_MAX_VIPS)
            return usage_error("at most " + std::to_string(KVS_MAX_VIPS) + " --vip");
        for (std::size_t i = 0; i < vips.size(); i++)
            if (!parse_vip(vips[i], &c.vips[i]))
                return usage_error("bad --vip '" + vips[i] + "' (want ADDR:PORT)");
        c.n_vips = static_cast<std::uint32_t>(vips.size());
        if (!snats.empty()) {
            // As kvsteerd writes them: the IPv4 address in snat_addr when there is one, the
            // other family's in snat2_addr.
            std::uint32_t a4[4] = {}, a6[4] = {};
            bool have4 = false, have6 = false;
            for (const auto &snat : snats) {
                std::uint32_t a[4] = {};
                const bool v4 = inet_pton(AF_INET, snat.c_str(), a) == 1;
                if (!v4 && inet_pton(AF_INET6, snat.c_str(), a) != 1)
                    return usage_error("bad --snat '" + snat + "'");
                if (v4 ? have4 : have6)
                    return usage_error(std::string("two ") + (v4 ? "IPv4" : "IPv6") +
                                       " --snat addresses: give at most one per family");
                std::memcpy(v4 ? a4 : a6, a, sizeof a);
                (v4 ? have4 : have6) = true;
            }
            std::memcpy(c.snat_addr, have4 ? a4 : a6, sizeof c.snat_addr);
            c.snat_family = have4 ? KVS_AF_INET : KVS_AF_INET6;
            if (have4 && have6) {
                std::memcpy(c.snat2_addr, a6, sizeof c.snat2_addr);
                c.snat2_family = KVS_AF_INET6;
            }
            unsigned lo = 0, hi = 0;
            if (std::sscanf(snat_ports.c_str(), "%u-%u", &lo, &hi) != 2 || lo == 0 || lo > hi ||
                hi > 65535)
                return usage_error("bad --snat-ports '" + snat_ports + "' (want LO-HI)");
            c.snat_port_lo = static_cast<std::uint16_t>(lo);
            c.snat_port_hi = static_cast<std::uint16_t>(hi);
        }
        if (syn_wscale > 14) return usage_error("--syn-wscale must be 0..14");
        if (syn_mss == 0 || syn_mss > 65535 || syn_window == 0 || syn_window > 65535)
            return usage_error("--syn-mss and --syn-window must be 1..65535");
        c.syn_mss = static_cast<std::uint16_t>(syn_mss);
        c.syn_wscale = static_cast<std::uint8_t>(syn_wscale);
        c.syn_window = static_cast<std::uint16_t>(syn_window);
        c.cookie_period_s = cookie_period;
        c.flags = syn_ts ? KVS_CFG_SYN_TIMESTAMPS : 0;
        if (cookie_key == "random") {
            if (getrandom(c.cookie_key[0], sizeof c.cookie_key[0], 0) != sizeof c.cookie_key[0])
                return usage_error("getrandom failed");
        } else {
            if (cookie_key.size() != 32 ||
                std::sscanf(cookie_key.c_str(), "%16llx%16llx", &c.cookie_key[0][0],
                            &c.cookie_key[0][1]) != 2)
                return usage_error("bad --cookie-key (want 32 hex digits or 'random')");
        }
        auto maps = kvsteer::bpf::open_pinned_maps(dir, true, &err);
        if (!maps) {
            spdlog::error("{}", err);
            return 1;
        }
        kvs_config *live = maps->config;
        // Keep what this command does not set (steering, tables), rotate the cookie key.
        c.cookie_key[1][0] = live->cookie_key[0][0];
        c.cookie_key[1][1] = live->cookie_key[0][1];
        std::memcpy(c.appliance_mac, live->appliance_mac, 6);
        c.n_workers = live->n_workers;
        c.steer_mode = live->steer_mode;
        c.prefix_len = live->prefix_len;
        c.block_size = live->block_size;
        c.max_blocks = live->max_blocks;
        c.load_factor_milli = live->load_factor_milli;
        c.load_slack = live->load_slack;
        c.max_held_bytes = live->max_held_bytes;
        c.hash_seed = live->hash_seed;
        c.maglev_active = live->maglev_active;
        c.affinity_active = live->affinity_active;
        c.n_backends = live->n_backends;
        c.generation = live->generation + 1;
        std::memcpy(static_cast<void *>(live), &c, sizeof c);
        spdlog::info("kvs_config written under {}: {} VIP(s), generation {}", dir, c.n_vips,
                     c.generation);
        return 0;
    }
    return usage_error("unknown command '" + cmd + "'");
}
