// Process setup before and around rte_eal_init: bpffs pin root, interface checks, port bring-up.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct rte_mempool;

namespace kvsteer::dp {

// DPDK's net_af_xdp loads xdp_prog with libbpf, which pins LIBBPF_PIN_BY_NAME maps under
// /sys/fs/bpf and cannot be told otherwise. When our maps live elsewhere, give this process
// its own mount namespace with `dir` bind-mounted on /sys/fs/bpf so the PMD reuses them.
// No-op when dir is /sys/fs/bpf. false + err on failure.
bool bind_bpffs_as_default_root(const std::string &dir, std::string *err);

// Checks every `iface=` of the --vdev arguments names an existing interface, so a typo is
// reported as such instead of as a PMD probe failure. false + err naming the interface.
bool check_vdev_interfaces(const std::vector<std::string> &eal_args, std::string *err);

// xdp mode: every `xdp_prog=` of the --vdev arguments is a kvsteer XDP object of this
// dataplane's KVS_XDP_ABI (prog_abi.h: the marker in its file). false + err naming the file and
// both numbers (or the missing marker): an object of another build hands segments over in a way
// this dataplane does not read.
bool check_xdp_prog_abi(const std::vector<std::string> &eal_args, std::string *err);

// The --vdev arguments that carry both `iface=` and `xdp_prog=`.
struct XdpVdev {
    std::string iface, prog;
};
std::vector<XdpVdev> xdp_prog_vdevs(const std::vector<std::string> &eal_args);
// Their interfaces.
std::vector<std::string> xdp_prog_interfaces(const std::vector<std::string> &eal_args);

// DPDK 22.11's af_xdp PMD attaches its xdp_prog only where no program is
// (XDP_FLAGS_UPDATE_IF_NOEXIST). A start keeps the previous run's program attached, so that its
// flows go on flowing while the PMD loads the new one (the kernel verifying it takes seconds),
// and lets that attach replace it in one step (xdp_replace.h). Each program held is kept open,
// with the mode it is attached in, so that a start failing after the PMD attached its own and
// detached it again (its error path) can put the old one back: established flows then keep
// flowing in the kernel instead of being dropped by the tc guard until a start succeeds.
struct PreviousXdp {
    std::string iface;
    int ifindex = 0;
    int prog_fd = -1;  // -1: could not be opened (not restorable)
    std::uint32_t mode_flags = 0;
};
class PreviousXdps {
   public:
    PreviousXdps() = default;
    PreviousXdps(const PreviousXdps &) = delete;
    PreviousXdps &operator=(const PreviousXdps &) = delete;
    ~PreviousXdps() { release(); }
    std::vector<PreviousXdp> list;
    // Attaches each program back where no program is now (never over one), keeping them open.
    // Returns how many were put back; each that could not be is logged.
    unsigned put_back();
    // Detaches each (kept open): the way to attach over them where the PMD's attach cannot be
    // made a replacement (xdp_replace_reachable() false). Returns how many were detached.
    unsigned detach();
    void release();  // the new program runs: the old ones are closed (freed by the kernel)
};
// Opens the programs attached on `ifaces` (none detached). Returns how many.
unsigned hold_previous_xdp(const std::vector<std::string> &ifaces, PreviousXdps *held);

// True when the EAL arguments allow running without hugepages or hugepages are configured.
bool hugepages_usable(const std::vector<std::string> &eal_args, std::string *err);

// Configures and starts `port` with `queues` RX/TX queue pairs, one mempool for the port
// (af_xdp loses TX with a pool shared between ports). false + err.
// The port's mempool alone (the port must exist): what can fail for want of memory, done before
// anything is swapped (main.cpp makes it before replacing a previous run's XDP program).
bool port_pool(std::uint16_t port, std::uint32_t mbufs, rte_mempool **pool_out, std::string *err);
bool start_port(std::uint16_t port, std::uint16_t queues, std::uint32_t mbufs,
                rte_mempool **pool_out, std::string *err);
// How a port's RX queues are filled: with several queues and a driver that hashes flows (a native
// NIC's PMD: RTE_ETH_MQ_RX_RSS on the addresses and TCP ports it offers, its default key), by RSS;
// else as the driver does (af_xdp: the kernel's RSS, set with ethtool; with a zeroed
// configuration a NIC's PMD put every packet on queue 0, and the other workers got none).
// Returns the RTE_ETH_RSS_* hash fields to ask for; 0: no RSS (the driver's way).
std::uint64_t rss_fields(std::uint16_t queues, std::uint64_t offered_rss_hf);
// The configure / queues / start half of start_port, on a pool that exists (also used to
// bring a re-created port up on the pool it had).
bool setup_port(std::uint16_t port, std::uint16_t queues, rte_mempool *pool, std::string *err);

// The driver arguments of the --vdev named `name` ("iface=...,xdp_prog=..."), "" when it has
// none; nullopt when no --vdev has that name.
std::optional<std::string> vdev_args(const std::vector<std::string> &eal_args,
                                     const std::string &name);

}  // namespace kvsteer::dp
