#include "eal_setup.h"

#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "kvsteer/prog_abi.h"
#include "xdp_replace.h"

namespace kvsteer::dp {

namespace {
constexpr long kBpffsMagic = 0xcafe4a11;
constexpr const char *kDefaultRoot = "/sys/fs/bpf";

std::string canonical(const std::string &p) {
    char buf[PATH_MAX];
    if (!realpath(p.c_str(), buf)) return p;
    return buf;
}
}  // namespace

bool bind_bpffs_as_default_root(const std::string &dir, std::string *err) {
    struct statfs sf {};
    if (statfs(dir.c_str(), &sf) != 0) {
        *err = fmt::format("--bpffs {}: {}", dir, std::strerror(errno));
        return false;
    }
    if (static_cast<long>(sf.f_type) != kBpffsMagic) {
        *err = fmt::format("--bpffs {}: not on a bpffs (mount -t bpf bpf {})", dir, dir);
        return false;
    }
    if (canonical(dir) == kDefaultRoot) return true;
    if (unshare(CLONE_NEWNS) != 0) {
        *err = fmt::format("unshare(CLONE_NEWNS): {}", std::strerror(errno));
        return false;
    }
    // Our mounts must not propagate back to the parent namespace.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
        *err = fmt::format("making / rslave: {}", std::strerror(errno));
        return false;
    }
    struct stat st {};
    if (stat(kDefaultRoot, &st) != 0 && mkdir(kDefaultRoot, 0700) != 0) {
        *err =
            fmt::format("{} missing and cannot be created: {}", kDefaultRoot, std::strerror(errno));
        return false;
    }
    if (mount(dir.c_str(), kDefaultRoot, nullptr, MS_BIND, nullptr) != 0) {
        *err = fmt::format("bind-mounting {} on {}: {}", dir, kDefaultRoot, std::strerror(errno));
        return false;
    }
    return true;
}

namespace {
// The values of every --vdev argument ("--vdev X" and "--vdev=X").
std::vector<std::string> vdev_values(const std::vector<std::string> &eal_args) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < eal_args.size(); ++i) {
        if (eal_args[i] == "--vdev" && i + 1 < eal_args.size())
            out.push_back(eal_args[i + 1]);
        else if (eal_args[i].rfind("--vdev=", 0) == 0)
            out.push_back(eal_args[i].substr(7));
    }
    return out;
}

// Every value of `name=` in one vdev's comma-separated key=value list, in order.
std::vector<std::string> vdev_fields(const std::string &v, const char *name) {
    std::vector<std::string> out;
    const std::string key = std::string(name) + "=";
    for (std::size_t pos = 0; (pos = v.find(key, pos)) != std::string::npos;) {
        if (pos != 0 && v[pos - 1] != ',') {
            pos += key.size();
            continue;
        }
        std::size_t end = v.find(',', pos);
        out.push_back(v.substr(pos + key.size(), end == std::string::npos
                                                     ? std::string::npos
                                                     : end - pos - key.size()));
        pos = end == std::string::npos ? v.size() : end;
    }
    return out;
}
}  // namespace

bool check_vdev_interfaces(const std::vector<std::string> &eal_args, std::string *err) {
    for (const auto &v : vdev_values(eal_args)) {
        for (const auto &name : vdev_fields(v, "iface")) {
            if (if_nametoindex(name.c_str()) == 0) {
                *err = fmt::format("--vdev {}: no such interface '{}' in this network namespace", v,
                                   name);
                return false;
            }
        }
        for (const auto &path : vdev_fields(v, "xdp_prog")) {
            if (access(path.c_str(), R_OK) != 0) {
                *err = fmt::format("--vdev {}: xdp_prog '{}' not readable: {}", v, path,
                                   std::strerror(errno));
                return false;
            }
        }
    }
    return true;
}

bool check_xdp_prog_abi(const std::vector<std::string> &eal_args, std::string *err) {
    for (const auto &v : vdev_values(eal_args)) {
        for (const auto &path : vdev_fields(v, "xdp_prog")) {
            std::ifstream in(path, std::ios::binary);
            const std::string bytes((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
            if (!in.good() && !in.eof()) {
                *err = fmt::format("--vdev {}: xdp_prog '{}' cannot be read", v, path);
                return false;
            }
            const std::size_t at = bytes.find(KVS_XDP_ABI_MARKER);
            if (at == std::string::npos) {
                *err = fmt::format(
                    "--vdev {}: xdp_prog '{}' is not a kvsteer XDP object of this build (no "
                    "'{}' marker; this dataplane needs XDP ABI {}): install the kvsteer.bpf.o "
                    "built with it",
                    v, path, KVS_XDP_ABI_MARKER, KVS_XDP_ABI);
                return false;
            }
            const std::size_t from = at + std::strlen(KVS_XDP_ABI_MARKER);
            const std::size_t end = bytes.find('\0', from);
            const std::string num = bytes.substr(from, end == std::string::npos ? 8 : end - from);
            if (num != KVS_XDP_ABI_STR(KVS_XDP_ABI)) {
                *err = fmt::format(
                    "--vdev {}: xdp_prog '{}' is of kvsteer XDP ABI {}, this dataplane needs {}: "
                    "install the kvsteer.bpf.o built with it",
                    v, path, num, KVS_XDP_ABI);
                return false;
            }
        }
    }
    return true;
}

std::vector<XdpVdev> xdp_prog_vdevs(const std::vector<std::string> &eal_args) {
    std::vector<XdpVdev> out;
    for (const auto &v : vdev_values(eal_args)) {
        auto ifaces = vdev_fields(v, "iface");
        auto progs = vdev_fields(v, "xdp_prog");
        if (!ifaces.empty() && !progs.empty() && !ifaces[0].empty() && !progs[0].empty())
            out.push_back(XdpVdev{ifaces[0], progs[0]});
    }
    return out;
}

std::vector<std::string> xdp_prog_interfaces(const std::vector<std::string> &eal_args) {
    std::vector<std::string> out;
    for (auto &x : xdp_prog_vdevs(eal_args)) out.push_back(x.iface);
    return out;
}

unsigned hold_previous_xdp(const std::vector<std::string> &ifaces, PreviousXdps *held) {
    unsigned n = 0;
    for (const auto &name : ifaces) {
        int ifindex = static_cast<int>(if_nametoindex(name.c_str()));
        if (ifindex <= 0) continue;
        LIBBPF_OPTS(bpf_xdp_query_opts, q);
        if (bpf_xdp_query(ifindex, 0, &q) != 0 || q.attach_mode == XDP_ATTACHED_NONE) continue;
        const XdpAttached a = attached_mode(q);
        held->list.push_back(
            {name, ifindex, a.prog_id ? bpf_prog_get_fd_by_id(a.prog_id) : -1, a.mode_flags});
        ++n;
    }
    return n;
}

unsigned PreviousXdps::put_back() {
    unsigned n = 0;
    for (auto &d : list) {
        __u32 id = 0;
        if (d.prog_fd < 0) {
            spdlog::error("the previous run's XDP program on {} could not be kept: not put back",
                          d.iface);
        } else if (bpf_xdp_query_id(d.ifindex, 0, &id) == 0 && id != 0) {
            // A program is attached (the old one still, or this run's): it forwards the same maps.
        } else if (int rc = bpf_xdp_attach(d.ifindex, d.prog_fd,
                                           d.mode_flags | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
                   rc != 0) {
            spdlog::error("putting the previous run's XDP program back on {}: {}", d.iface,
                          std::strerror(-rc));
        } else {
            ++n;
        }
    }
    return n;
}

unsigned PreviousXdps::detach() {
    unsigned n = 0;
    for (auto &d : list) n += bpf_xdp_detach(d.ifindex, d.mode_flags, nullptr) == 0;
    return n;
}

void PreviousXdps::release() {
    for (auto &d : list)
        if (d.prog_fd >= 0) close(d.prog_fd);
    list.clear();
}

bool hugepages_usable(const std::vector<std::string> &eal_args, std::string *err) {
    for (const auto &a : eal_args)
        if (a == "--no-huge") return true;
    std::ifstream f("/proc/meminfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("HugePages_Total:", 0) == 0) {
            if (std::stol(line.substr(16)) > 0) return true;
            break;
        }
    }
    *err =
        "no hugepages configured: pass --no-huge -m 512 (and --no-shconf) to the EAL, "
        "or reserve hugepages (echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)";
    return false;
}

bool start_port(std::uint16_t port, std::uint16_t queues, std::uint32_t mbufs,
                rte_mempool **pool_out, std::string *err) {
    rte_mempool *pool = nullptr;
    if (!port_pool(port, mbufs, &pool, err) || !setup_port(port, queues, pool, err)) return false;
    *pool_out = pool;
    return true;
}

bool port_pool(std::uint16_t port, std::uint32_t mbufs, rte_mempool **pool_out, std::string *err) {
    if (!rte_eth_dev_is_valid_port(port)) {
        *err = fmt::format("port {} does not exist ({} ports probed; give one with --vdev)", port,
                           rte_eth_dev_count_avail());
        return false;
    }
    auto name = fmt::format("kvs_pool_p{}", port);
    rte_mempool *pool = rte_pktmbuf_pool_create(
        name.c_str(), mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
        rte_eth_dev_socket_id(port) < 0 ? SOCKET_ID_ANY : rte_eth_dev_socket_id(port));
    if (!pool) {
        *err = fmt::format("mempool for port {} ({} mbufs): {} (more -m memory?)", port, mbufs,
                           rte_strerror(rte_errno));
        return false;
    }
    *pool_out = pool;
    return true;
}

std::uint64_t rss_fields(std::uint16_t queues, std::uint64_t offered_rss_hf) {
    if (queues < 2) return 0;
    // Addresses and TCP ports, both families: a connection's packets stay on one queue.
    return (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP) & offered_rss_hf;
}

bool setup_port(std::uint16_t port, std::uint16_t queues, rte_mempool *pool, std::string *err) {
    rte_eth_dev_info info{};
    if (int rc = rte_eth_dev_info_get(port, &info); rc != 0) {
        *err = fmt::format("port {}: dev_info: {}", port, rte_strerror(-rc));
        return false;
    }
    if (queues > info.max_rx_queues || queues > info.max_tx_queues) {
        *err = fmt::format("port {} ({}) has {} rx / {} tx queues, {} workers need one each", port,
                           info.driver_name, info.max_rx_queues, info.max_tx_queues, queues);
        return false;
    }
    rte_eth_conf conf{};
    if (const std::uint64_t hf = rss_fields(queues, info.flow_type_rss_offloads); hf) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = nullptr;  // the driver's default key
        conf.rx_adv_conf.rss_conf.rss_hf = hf;
        spdlog::info("port {} ({}): RSS over {} queues (hash fields {:#x})", port, info.driver_name,
                     queues, hf);
    } else if (queues > 1) {
        spdlog::info(
            "port {} ({}): no RSS offered by the driver: its {} queues are filled as it "
            "does (af_xdp: the kernel's RSS, ethtool -X)",
            port, info.driver_name, queues);
    }
    if (int rc = rte_eth_dev_configure(port, queues, queues, &conf); rc != 0) {
        *err = fmt::format("port {}: configure: {}", port, rte_strerror(-rc));
        return false;
    }
    // The RX ring as large as net_af_xdp's fill ring (2 x 2048 buffers): the kernel then always
    // has room to post a buffer it took (measured: 6,072 RX-ring-full drops in a slowloris burst
    // with 1,024 descriptors, none with 4,096).
    std::uint16_t nrx = 4096, ntx = 1024;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
    for (std::uint16_t q = 0; q < queues; ++q) {
        if (int rc =
                rte_eth_rx_queue_setup(port, q, nrx, rte_eth_dev_socket_id(port), nullptr, pool);
            rc != 0) {
            *err = fmt::format("port {}: rx queue {}: {}", port, q, rte_strerror(-rc));
            return false;
        }
        if (int rc = rte_eth_tx_queue_setup(port, q, ntx, rte_eth_dev_socket_id(port), nullptr);
            rc != 0) {
            *err = fmt::format("port {}: tx queue {}: {}", port, q, rte_strerror(-rc));
            return false;
        }
    }
    if (int rc = rte_eth_dev_start(port); rc != 0) {
        *err = fmt::format("port {}: start: {}", port, rte_strerror(-rc));
        return false;
    }
    rte_eth_promiscuous_enable(port);
    return true;
}

std::optional<std::string> vdev_args(const std::vector<std::string> &eal_args,
                                     const std::string &name) {
    for (const auto &v : vdev_values(eal_args)) {
        if (v == name) return std::string();
        if (v.size() > name.size() && v.compare(0, name.size(), name) == 0 && v[name.size()] == ',')
            return v.substr(name.size() + 1);
    }
    return std::nullopt;
}

}  // namespace kvsteer::dp
