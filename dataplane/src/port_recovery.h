// In-process recovery of a stalled net_af_xdp receive path (the receive-path watchdog).
//
// What is seen (DPDK 22.11 net_af_xdp on veth, kernel 6.x): after a slowloris burst followed by
// a churn of connections the fill ring runs empty and stays empty. The PMD refills it only with
// as many buffers as it receives, so once it is empty the port receives nothing ever again
// while the kernel drops every frame for it (`missed` climbing); the buffers the kernel took
// are never handed back. The PMD offers no call that refills or re-creates a socket's rings,
// so recovery re-creates the port: the vdev is removed (socket, rings and umem go) and probed
// again with the same arguments on the same mempool. The mbufs the old rings had are then
// owned by nobody; they are returned to the pool, found as those neither free nor held by a
// worker. Held first flights stay in their workers and are bound as usual afterwards.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct rte_mbuf;
struct rte_mempool;

namespace kvsteer::dp {

// Returns to `pool` every mbuf that is neither free (in the pool's ring or any lcore cache) nor
// listed in `held` (segments of chains included), and how many. Nothing else may use the pool
// while it runs: every worker parked, the port closed.
unsigned reclaim_stranded_mbufs(rte_mempool *pool, const std::vector<rte_mbuf *> &held);

struct PortRecovery {
    std::uint16_t port = 0;       // the re-created port (the id may differ from the old one)
    unsigned reclaimed = 0;       // mbufs the old socket's rings had, returned to the pool
    unsigned sockets_closed = 0;  // old sockets the PMD's close left open (closed here)
    unsigned probes = 0;          // probes it took (the kernel frees the old socket's queue late)
    bool port_gone = false;       // failed after the old port was removed: nothing may touch it
};

// Re-creates the net_af_xdp vdev behind `port` as described above, with `queues` queue pairs
// on `pool`. `before_probe` runs after the old port is gone and before the new one is probed
// (e.g. to let the XDP program load again). Every user of the port and pool must be parked.
// false + err; out->port_gone says whether the old port still exists.
bool recreate_af_xdp_port(std::uint16_t port, const std::vector<std::string> &eal_args,
                          std::uint16_t queues, rte_mempool *pool,
                          const std::vector<rte_mbuf *> &held,
                          const std::function<void()> &before_probe, PortRecovery *out,
                          std::string *err);

// The one AF_XDP socket this process has open (its fd), or -1 when it has none or several. A
// single-worker dataplane sleeps on it when idle: poll() wakes as soon as a frame lands in its
// receive ring.
int sole_xdp_socket();

}  // namespace kvsteer::dp
