// kvsteer-xdp: load the kvsteer XDP program with its pinned maps, attach/detach it, show counters.
#include <net/if.h>
#include <spdlog/spdlog.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "kvsteer/bpf/loader.h"
#include "kvsteer/bpf/maps.h"
#include "kvsteer/reasons.h"

namespace po = boost::program_options;
using kvsteer::bpf::AttachMode;

namespace {

int usage_error(const std::string &msg)
{
    std::fprintf(stderr, "kvsteer-xdp: %s (see --help)\n", msg.c_str());
    return 2;
}

bool parse_mode(const std::string &s, AttachMode *m)
{
    if (s == "auto") *m = AttachMode::kAuto;
    else if (s == "native") *m = AttachMode::kNative;
    else if (s == "generic") *m = AttachMode::kGeneric;
    else return false;
    return true;
}

}  // namespace

int main(int argc, char **argv)
{
    std::string cmd, iface, dir, mode_s;
    bool json = false, all = false;
    po::options_description desc(
        "kvsteer-xdp COMMAND [options]\n"
        "Commands:\n"
        "  load     create (or reuse) the pinned maps under --bpffs\n"
        "  attach   load the program, reusing the pinned maps, and attach it to --iface\n"
        "  detach   remove the XDP program from --iface\n"
        "  stats    print the XDP counters (kvs_stats) of the maps pinned under --bpffs\n"
        "Options");
    desc.add_options()
        ("help,h", "show this help")
        ("command", po::value(&cmd), "load | attach | detach | stats")
        ("iface,i", po::value(&iface), "interface name (attach, detach)")
        ("bpffs,b", po::value(&dir)->default_value(KVS_DEFAULT_BPFFS), "bpffs directory of the pinned maps")
        ("mode,m", po::value(&mode_s)->default_value("auto"), "XDP mode: auto (native, else generic) | native | generic")
        ("json", po::bool_switch(&json), "stats as one JSON object")
        ("all", po::bool_switch(&all), "stats: print zero counters too");
    po::positional_options_description pos;
    pos.add("command", 1);
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        return usage_error(e.what());
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
                std::printf("%-28s %llu\n", kvs_reason_name(i), static_cast<unsigned long long>(v[i]));
            }
            first = false;
        }
        if (json) std::cout << "}\n";
        return 0;
    }
    return usage_error("unknown command '" + cmd + "'");
}
