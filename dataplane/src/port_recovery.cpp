#include "port_recovery.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>
#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "eal_setup.h"

namespace kvsteer::dp {

namespace {
struct IterCtx {
    const std::unordered_set<const void *> *known;
    std::vector<void *> *stranded;
};

void visit(rte_mempool *, void *opaque, void *obj, unsigned) {
    auto *c = static_cast<IterCtx *>(opaque);
    if (c->known->count(obj)) return;
    // An mbuf nobody owns: back to the state a free mbuf has in the pool.
    auto *m = static_cast<rte_mbuf *>(obj);
    rte_pktmbuf_reset(m);
    rte_mbuf_refcnt_set(m, 1);
    c->stranded->push_back(obj);
}
// The AF_XDP sockets this process has open: fd and inode.
std::vector<std::pair<int, ino_t>> xdp_sockets() {
    std::vector<std::pair<int, ino_t>> out;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return out;
    while (dirent *e = readdir(d)) {
        char *end = nullptr;
        const long fd = std::strtol(e->d_name, &end, 10);
        if (!end || *end || fd == dirfd(d)) continue;
        struct stat st {};
        int domain = 0;
        socklen_t len = sizeof domain;
        if (fstat(static_cast<int>(fd), &st) == 0 && S_ISSOCK(st.st_mode) &&
            getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
            domain == AF_XDP)
            out.emplace_back(static_cast<int>(fd), st.st_ino);
    }
    closedir(d);
    return out;
}

}  // namespace

int sole_xdp_socket() {
    const auto s = xdp_sockets();
    return s.size() == 1 ? s.front().first : -1;
}

namespace {

// DPDK 22.11's net_af_xdp does not delete the umem of a closed port's first socket (the two
// share one fd), so that socket stays open, its fill and completion rings stay mapped and the
// queue stays bound: a new socket on it is refused (EBUSY). Unmaps those rings and closes the
// fd of every socket that was open before the close and still is. Returns how many.
unsigned close_left_sockets(const std::vector<std::pair<int, ino_t>> &before) {
    unsigned closed = 0;
    for (const auto &[fd, ino] : before) {
        struct stat st {};
        if (fstat(fd, &st) != 0 || st.st_ino != ino) continue;  // closed (or reused) already
        const std::string tag = fmt::format("socket:[{}]", ino);
        std::ifstream maps("/proc/self/maps");
        std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;
        for (std::string line; std::getline(maps, line);) {
            if (line.size() < tag.size() || line.compare(line.size() - tag.size(), tag.size(), tag))
                continue;
            std::uintptr_t lo = 0, hi = 0;
            if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) ranges.emplace_back(lo, hi);
        }
        for (auto [lo, hi] : ranges) munmap(reinterpret_cast<void *>(lo), hi - lo);
        close(fd);
        ++closed;
    }
    return closed;
}
}  // namespace

unsigned reclaim_stranded_mbufs(rte_mempool *pool, const std::vector<rte_mbuf *> &held) {
    // What the lcore caches keep is free: move it to the common pool first.
    for (unsigned l = 0; l < RTE_MAX_LCORE; ++l)
        if (rte_mempool_cache *c = rte_mempool_default_cache(pool, l); c && c->len)
            rte_mempool_cache_flush(c, pool);
    // Take every free object out, so that what is neither taken nor held is stranded.
    std::vector<void *> objs;
    objs.reserve(pool->size);
    void *obj;
    while (rte_mempool_generic_get(pool, &obj, 1, nullptr) == 0) objs.push_back(obj);
    std::unordered_set<const void *> known(objs.begin(), objs.end());
    for (rte_mbuf *m : held) known.insert(m);
    std::vector<void *> stranded;
    IterCtx ctx{&known, &stranded};
    rte_mempool_obj_iter(pool, visit, &ctx);
    objs.insert(objs.end(), stranded.begin(), stranded.end());
    if (!objs.empty())
        rte_mempool_generic_put(pool, objs.data(), static_cast<unsigned>(objs.size()), nullptr);
    return static_cast<unsigned>(stranded.size());
}

bool recreate_af_xdp_port(std::uint16_t port, const std::vector<std::string> &eal_args,
                          std::uint16_t queues, rte_mempool *pool,
                          const std::vector<rte_mbuf *> &held,
                          const std::function<void()> &before_probe, PortRecovery *out,
                          std::string *err) {
    *out = PortRecovery{};
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    if (rte_eth_dev_get_name_by_port(port, name) != 0) {
        *err = fmt::format("port {}: no name", port);
        return false;
    }
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0 || !info.driver_name ||
        std::strcmp(info.driver_name, "net_af_xdp") != 0) {
        *err = fmt::format("port {} ({}): in-process re-creation is for net_af_xdp ports only",
                           port, info.driver_name ? info.driver_name : "?");
        return false;
    }
    auto args = vdev_args(eal_args, name);
    if (!args) {
        *err = fmt::format("port {}: no --vdev named {} to probe again", port, name);
        return false;
    }
    const auto sockets = xdp_sockets();
    rte_eth_dev_stop(port);
    if (int rc = rte_eal_hotplug_remove("vdev", name); rc != 0) {
        out->port_gone = true;
        *err = fmt::format("removing {}: {}", name, rte_strerror(-rc));
        return false;
    }
    out->port_gone = true;
    out->sockets_closed = close_left_sockets(sockets);
    out->reclaimed = reclaim_stranded_mbufs(pool, held);
    // The kernel releases a closed socket's hold on the queue in deferred work: a bind right
    // after the close can be refused. Probe again with a growing wait (about 3 s in all).
    std::uint16_t np = 0;
    std::string why;
    unsigned attempt = 0;
    for (;; ++attempt) {
        // Right after the port went (its close detached the XDP program), before the wait.
        if (before_probe) before_probe();
        std::this_thread::sleep_for(std::chrono::milliseconds(50 << std::min(attempt, 4u)));
        if (int rc = rte_eal_hotplug_add("vdev", name, args->c_str()); rc != 0) {
            why = fmt::format("probing {} again: {}", name, rte_strerror(-rc));
        } else if (rte_eth_dev_get_port_by_name(name, &np) != 0) {
            why = fmt::format("{} probed again but has no port", name);
        } else if (setup_port(np, queues, pool, &why)) {
            break;
        } else {
            const auto left = xdp_sockets();
            rte_eth_dev_stop(np);
            rte_eal_hotplug_remove("vdev", name);
            out->sockets_closed += close_left_sockets(left);
        }
        if (attempt + 1 == 6) {
            *err = fmt::format("{} ({} attempts)", why, attempt + 1);
            return false;
        }
    }
    out->probes = attempt + 1;
    out->port = np;
    out->port_gone = false;
    return true;
}

}  // namespace kvsteer::dp
