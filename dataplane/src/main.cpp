// kvsteer-dataplane: EAL arguments, then `--`, then the application options (see --help).
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <spdlog/spdlog.h>

#include "eal_setup.h"
#include "port_recovery.h"
#include "guard.h"
#include "kvsteer/bpf/maps.h"
#include "options.h"
#include "sweeper.h"
#include "tables.h"
#include "worker.h"
#include "xdp_replace.h"

using namespace kvsteer;
using namespace kvsteer::dp;

namespace {

std::atomic<bool> g_term{false};
std::atomic<bool> g_stop{false};
std::atomic<bool> g_fault_rx_off{false};  // --fault-rx-signal: set by SIGUSR2
int g_exit_status = 0;

// Receive-path watchdog. net_af_xdp refills its fill ring only with what it receives; once the
// ring has run empty (seen after a slowloris burst: the kernel kept buffers the PMD never got
// back), the port receives nothing ever again while the kernel drops every frame for it. The
// signature: imissed rising while ipackets stands still. The control thread then re-creates the
// port in process (port_recovery.h).
class RxWatchdog {
   public:
    // Returns true when the port has been stalled for `stall_ms` (called every `period_ms`).
    // A stall starts at a drop seen while nothing is received and lasts until something is;
    // it counts once the kernel has dropped at least kMinDrops frames in it for `stall_ms`
    // (frames come in bursts, e.g. retransmissions; an isolated drop before a quiet spell is
    // not a stall).
    bool check(std::uint16_t port, std::uint32_t period_ms, std::uint32_t stall_ms) {
        rte_eth_stats st{};
        if (stall_ms == 0 || rte_eth_stats_get(port, &st) != 0) return false;
        if (st.ipackets != rx_) {
            stalled_ms_ = 0;
        } else if (stalled_ms_ > 0 || st.imissed > missed_) {
            if (stalled_ms_ == 0) {
                start_missed_ = missed_;
                spdlog::warn(
                    "port {}: receiving nothing while the kernel drops for it (rx {}, missed {} "
                    "-> {})",
                    port, st.ipackets, missed_, st.imissed);
            }
            stalled_ms_ += period_ms;
        }
        rx_ = st.ipackets;
        missed_ = st.imissed;
        return stalled_ms_ >= stall_ms && missed_ - start_missed_ >= kMinDrops;
    }
    // A re-created port counts from zero.
    void reset() { *this = RxWatchdog{}; }

   private:
    static constexpr std::uint64_t kMinDrops = 32;
    std::uint64_t rx_ = 0, missed_ = 0, start_missed_ = 0;
    std::uint32_t stalled_ms_ = 0;
};
std::vector<std::unique_ptr<Worker>> g_workers;

void on_signal(int) {
    g_term.store(true);
}

void on_fault_signal(int) {
    g_fault_rx_off.store(true);
}

int lcore_main(void *arg) {
    auto *w = static_cast<Worker *>(arg);
    w->run(g_stop);
    return 0;
}

std::uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

void log_counters(const Tables &t, unsigned n_workers, std::uint16_t port,
                  const rte_mempool *pool) {
    std::string line;
    for (unsigned r = KVS_R_DP_BIND_OK; r < KVS_R__COUNT; ++r) {
        std::uint64_t v = 0;
        for (unsigned w = 0; w < n_workers; ++w) v += t.dp_stats[w * KVS_STATS_MAX + r];
        if (v) line += fmt::format(" {}={}", kvs_reason_name(r), v);
    }
    spdlog::info("counters:{}", line.empty() ? " (none)" : line);
    // The port's own view: for net_af_xdp, imissed is what the kernel dropped before the
    // socket (RX ring full, fill ring empty), which no counter of ours can see.
    rte_eth_stats st{};
    if (rte_eth_stats_get(port, &st) == 0)
        spdlog::info(
            "port {}: rx {} missed {} errors {} nombuf {}, tx {} errors {}; mbufs free {} of {}",
            port, st.ipackets, st.imissed, st.ierrors, st.rx_nombuf, st.opackets, st.oerrors,
            pool ? rte_mempool_avail_count(pool) : 0, pool ? pool->size : 0);
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> eal_args{argv[0]};
    int app_start = argc;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--") == 0) {
            app_start = i + 1;
            break;
        }
        eal_args.emplace_back(argv[i]);
    }
    // `kvsteer-dataplane --help` (no EAL part) shows our help, not the EAL's.
    if (app_start == argc && argc == 2 &&
        (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        app_start = 1;
        eal_args.resize(1);
    }
    std::vector<char *> app_argv{argv[0]};
    for (int i = app_start; i < argc; ++i) app_argv.push_back(argv[i]);
    int rc = 0;
    auto opts = parse_options(static_cast<int>(app_argv.size()), app_argv.data(), &rc);
    if (!opts) return rc;
    spdlog::set_level(spdlog::level::from_str(opts->log_level));

    std::string err;
    if (!hugepages_usable(eal_args, &err) || !check_vdev_interfaces(eal_args, &err) ||
        (opts->mode == Mode::Xdp && !check_xdp_prog_abi(eal_args, &err))) {
        spdlog::error("{}", err);
        return 1;
    }
    // kvsteerd may not have made the maps yet (systemd starts both at once): wait for them up to
    // --wait-config-s, then as long again for kvs_config below. A pin of another layout fails at
    // once.
    bool missing = false;
    auto maps = bpf::open_pinned_maps(opts->bpffs, opts->create_maps, &err, &missing);
    for (unsigned waited = 0; !maps && missing && waited < opts->wait_config_s * 1000;
         waited += 100) {
        if (waited == 0)
            spdlog::info("waiting up to {} s for kvsteerd to create the pinned maps under {} ({})",
                         opts->wait_config_s, opts->bpffs, err);
        usleep(100000);
        maps = bpf::open_pinned_maps(opts->bpffs, opts->create_maps, &err, &missing);
    }
    if (!maps) {
        spdlog::error("pinned maps under {}: {}{}", opts->bpffs, err,
                      opts->create_maps ? "" : " (start kvsteerd first, or pass --create-maps)");
        return 1;
    }
    Tables tables = tables_from(*maps);
    if (opts->mode == Mode::Dpdk) tables.flows_fd = -1;  // flows stay in the workers
    const kvs_config &cfg = *tables.config;
    // kvsteerd may start after us: wait (bounded) for its first configuration.
    for (unsigned waited = 0; __atomic_load_n(&cfg.generation, __ATOMIC_ACQUIRE) == 0;
         waited += 100) {
        if (waited >= opts->wait_config_s * 1000) {
            spdlog::error(
                "kvs_config under {} was never written (generation 0 after {} s): start kvsteerd",
                opts->bpffs, opts->wait_config_s);
            return 1;
        }
        if (waited == 0)
            spdlog::info("waiting up to {} s for kvsteerd to write kvs_config",
                         opts->wait_config_s);
        usleep(100000);
    }
    if ((cfg.snat_family != KVS_AF_INET && cfg.snat_family != KVS_AF_INET6) ||
        (cfg.snat2_family != KVS_AF_NONE && cfg.snat2_family == cfg.snat_family)) {
        spdlog::error("bad kvs_config: SNAT address families {} and {} (one of each at most)",
                      cfg.snat_family, cfg.snat2_family);
        return 1;
    }
    for (std::uint32_t i = 0; i < cfg.n_vips && i < KVS_MAX_VIPS; ++i)
        if (!kvs_snat_addr(&cfg, cfg.vips[i].family)) {
            spdlog::error("bad kvs_config: VIP {} is IPv{} but no SNAT address is of that family",
                          i, cfg.vips[i].family);
            return 1;
        }
    if (cfg.snat_port_lo == 0 || cfg.snat_port_hi < cfg.snat_port_lo ||
        cfg.snat_port_hi - cfg.snat_port_lo + 1u < KVS_MAX_WORKERS) {
        spdlog::error("bad kvs_config: SNAT port range {}-{}", cfg.snat_port_lo, cfg.snat_port_hi);
        return 1;
    }
    if (cfg.n_vips == 0 || cfg.n_backends == 0)
        spdlog::warn(
            "kvs_config has {} VIPs and {} backends: nothing will bind until kvsteerd adds them",
            cfg.n_vips, cfg.n_backends);
    if (opts->mode == Mode::Xdp) {
        // libbpf 1.1 cannot reuse a pinned DEVMAP(_HASH): the kernel reports it with
        // BPF_F_RDONLY_PROG set, which libbpf's compatibility check rejects, so the PMD's load
        // of the XDP object fails. Let the load pin a fresh one (it only serves two-armed setups).
        std::string pin = opts->bpffs + "/" KVS_MAP_TX_PORTS;
        if (unlink(pin.c_str()) == 0)
            spdlog::info("unpinned {} (re-created by the XDP object load)", pin);
    }
    if (opts->mode == Mode::Xdp && !bind_bpffs_as_default_root(opts->bpffs, &err)) {
        spdlog::error("{}", err);
        return 1;
    }

    std::vector<char *> eal_argv;
    for (auto &a : eal_args) eal_argv.push_back(a.data());
    if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
        spdlog::error("EAL init failed: {} (EAL arguments come before `--`)",
                      rte_strerror(rte_errno));
        return 1;
    }
    // With several lcores the main lcore runs the control loop and every worker lcore one
    // worker; with one lcore (tests, small boxes) the main lcore is the only worker.
    const unsigned n_workers = rte_lcore_count() > 1 ? rte_lcore_count() - 1 : 1;
    if (n_workers > KVS_MAX_WORKERS) {
        spdlog::error("{} lcores but at most {} workers", n_workers, KVS_MAX_WORKERS);
        return 1;
    }
    if (cfg.n_workers != n_workers)
        spdlog::warn(
            "kvsteerd's workers = {}, this dataplane runs {} (one per lcore beyond the "
            "main one; the SNAT range is split between these): set workers = {}",
            cfg.n_workers, n_workers, n_workers);
    rte_mempool *pool = nullptr;
    // The mempool before the previous run's XDP program is replaced: a start failing for want of
    // memory (hugepages short after a reboot) leaves that program forwarding the established
    // flows (it failed after the swap: no program, the guard dropping their packets until a start
    // succeeded).
    if (!port_pool(opts->port, opts->mbufs, &pool, &err)) {
        spdlog::error("{}", err);
        return 1;
    }
    if (opts->mode == Mode::Xdp && opts->guard_prog != "none") {
        // Before the XDP program is swapped: from now on the appliance kernel drops, instead of
        // resetting, what reaches it of our flows while no program is attached.
        for (const auto &x : xdp_prog_vdevs(eal_args)) {
            const bool given = !opts->guard_prog.empty();
            const std::string path = given ? opts->guard_prog : default_guard_path(x.prog);
            if (!given && access(path.c_str(), R_OK) != 0) {
                spdlog::warn("no tc guard ({} missing): a restart may reset flows on {}", path,
                             x.iface);
                continue;
            }
            if (!attach_guard(path, opts->bpffs, x.iface, &err)) {
                spdlog::error("{} (--guard-prog none runs without it)", err);
                return 1;
            }
            spdlog::info("tc ingress guard {} on {}", path, x.iface);
        }
    }
    // SIGTERM and SIGINT end the run gracefully from here on (the control loop drains, at once
    // if they came during the setup).
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    // The previous run's program forwards its flows until the PMD's attach replaces it
    // (xdp_replace.h); held open to be put back if the PMD attaches ours and then detaches it.
    PreviousXdps previous;
    if (opts->mode == Mode::Xdp) {
        const unsigned n = hold_previous_xdp(xdp_prog_interfaces(eal_args), &previous);
        if (!xdp_replace_reachable()) {
            // The PMD would be refused over it: detached first, as DPDK 22.11 wants, the guard
            // dropping its flows' segments until the new program is attached.
            if (const unsigned d = n ? previous.detach() : 0)
                spdlog::warn(
                    "bpf_xdp_attach is not this executable's (not exported): the previous run's "
                    "XDP program detached from {} interface(s) before the new one is loaded",
                    d);
        } else {
            if (n)
                spdlog::info(
                    "the XDP program of a previous run forwards on {} interface(s) until this "
                    "run's replaces it",
                    n);
            arm_xdp_replace(xdp_prog_interfaces(eal_args));
        }
    }
    const bool port_ok = setup_port(opts->port, static_cast<std::uint16_t>(n_workers), pool, &err);
    const unsigned replaced = disarm_xdp_replace();
    if (!port_ok) {
        spdlog::error("{}", err);
        // Its flows keep flowing in the kernel (new ones wait for a start that succeeds).
        if (unsigned n = previous.put_back())
            spdlog::warn("the previous run's XDP program put back on {} interface(s)", n);
        else if (!previous.list.empty() && replaced == 0)
            spdlog::warn("the previous run's XDP program was left in place: it goes on forwarding");
        return 1;
    }
    if (replaced) spdlog::info("XDP program replaced in one step on {} interface(s)", replaced);
    previous.release();
    if (opts->mode == Mode::Xdp) {
        // One RX queue per worker: the XDP program hands a new flow's segments to the socket of
        // the queue they arrived on, and a queue no worker serves has none (punt_no_xsk). The
        // queue count is the NIC's setting (ethtool -L), which a reboot resets.
        for (const std::string &iface : xdp_prog_interfaces(eal_args)) {
            unsigned rx = 0;
            std::error_code ec;
            for (const auto &e :
                 std::filesystem::directory_iterator("/sys/class/net/" + iface + "/queues", ec))
                if (e.path().filename().string().rfind("rx-", 0) == 0) ++rx;
            if (rx > n_workers)
                spdlog::warn(
                    "{} has {} RX queues and this dataplane serves {}: new connections whose "
                    "segments land on the others are dropped (punt_no_xsk); `ethtool -L {} "
                    "combined {}` (again after every reboot)",
                    iface, rx, n_workers, iface, n_workers);
        }
    }
    auto ports = std::make_unique<PortBusy>();
    if (tables.flows_fd >= 0) {
        // A restart keeps the flows XDP still forwards: their SNAT ports stay taken.
        auto r = sweep_flows(tables.flows_fd, mono_ns(), ~0ull, ~0ull, ports.get(), true);
        if (r.seen) spdlog::info("{} flow entries already installed (kept)", r.seen);
    }

    rte_eth_dev_info info{};
    rte_eth_dev_info_get(opts->port, &info);
    std::vector<rte_ring *> inboxes;
    for (unsigned w = 0; n_workers > 1 && w < n_workers; ++w) {
        auto name = fmt::format("kvs_inbox{}", w);
        rte_ring *r = rte_ring_create(name.c_str(), 4096, rte_socket_id(), RING_F_SC_DEQ);
        if (!r) {
            spdlog::error("ring {}: {}", name, rte_strerror(rte_errno));
            return 1;
        }
        inboxes.push_back(r);
    }
    // One table of recent choices for every worker: a burst of one new prefix that RSS spreads
    // over the workers follows its first request on any of them (tools/sim/README.md).
    static auto recent = std::make_unique<RecentChoices>();
    // And one table of SYN-ACK buckets: the per-prefix limit is the appliance's (dpdk mode).
    static auto syn_buckets = std::make_unique<SynBuckets>();
    try {
        for (unsigned idx = 0; idx < n_workers; ++idx) {
            WorkerParams wp;
            wp.recent = recent.get();
            wp.syn_buckets = syn_buckets.get();
            wp.opts = *opts;
            wp.port = opts->port;
            wp.queue = static_cast<std::uint16_t>(idx);
            wp.index = static_cast<std::uint16_t>(idx);
            wp.n_workers = static_cast<std::uint16_t>(n_workers);
            wp.pool = pool;
            wp.ports = ports.get();
            wp.inboxes = inboxes.empty() ? nullptr : inboxes.data();
            wp.rx_off = opts->fault_rx_signal ? &g_fault_rx_off : nullptr;
            g_workers.push_back(std::make_unique<Worker>(tables, wp));
        }
    } catch (const std::exception &e) {
        spdlog::error("worker setup: {}", e.what());
        return 1;
    }
    // Heartbeats of workers this run does not have (an earlier run's, killed): not ours to leave
    // stale, or kvsteerd would take this dataplane for a dead one forever.
    for (unsigned w = n_workers; tables.ring_ctl && w < KVS_MAX_WORKERS; ++w)
        __atomic_store_n(&tables.ring_ctl[w].alive_ns, 0, __ATOMIC_RELAXED);
    spdlog::info("kvsteer-dataplane: mode {}, port {} ({}), {} worker(s), maps {}, idle {}",
                 mode_name(opts->mode), opts->port, info.driver_name ? info.driver_name : "?",
                 n_workers, opts->bpffs, opts->idle == IdlePolicy::Busy ? "busy" : "adaptive");
    for (unsigned w = 0; w < n_workers; ++w)
        spdlog::info("worker {}: queue {}, SNAT ports {}-{}", w, w, g_workers[w]->snat_lo(),
                     g_workers[w]->snat_hi());
    // One worker on one AF_XDP socket: its idle sleeps end when a frame arrives. (Several: which
    // socket is whose queue is not known here; they sleep as before.)
    auto set_wake = [&] {
        const int fd = opts->mode == Mode::Xdp && n_workers == 1 &&
                               opts->idle == IdlePolicy::Adaptive && opts->idle_wake
                           ? sole_xdp_socket()
                           : -1;
        g_workers[0]->set_wake_fd(fd);
        return fd;
    };
    if (const int fd = set_wake(); fd >= 0)
        spdlog::info("worker 0: idle sleeps wake on the AF_XDP socket's next frame (fd {})", fd);

    if (opts->fault_rx_signal) {
        struct sigaction fa {};
        fa.sa_handler = on_fault_signal;
        sigaction(SIGUSR2, &fa, nullptr);
        spdlog::warn("fault injection on: SIGUSR2 stops receiving until the port is re-created");
    }

    // Control thread: flow expiry, counter logs, graceful shutdown. Never on the packet path.
    auto control_loop = [&] {
        auto next_sweep = std::chrono::steady_clock::now();
        auto next_stats = next_sweep + std::chrono::seconds(opts->stats_interval_s);
        auto next_watch = next_sweep;
        RxWatchdog watchdog;
        constexpr std::uint32_t kWatchMs = 250;
        std::uint32_t recoveries = 0;
        auto count = [&](unsigned reason, std::uint64_t n) {
            if (tables.dp_stats) __atomic_fetch_add(&tables.dp_stats[reason], n, __ATOMIC_RELAXED);
        };
        // Re-creates the port with every worker parked; true when the workers run again on a
        // fresh port. A failure after the old port was removed leaves nothing to run on: exit.
        auto recover_port = [&]() -> bool {
            const auto t0 = std::chrono::steady_clock::now();
            for (auto &w : g_workers) w->request_park();
            auto unpark_all = [&](std::uint16_t port) {
                set_wake();  // the socket of the port the workers go on with
                for (auto &w : g_workers) w->unpark(port);
            };
            for (auto &w : g_workers)
                while (!w->parked()) {
                    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(2)) {
                        spdlog::error("port recovery: a worker did not park within 2 s");
                        unpark_all(opts->port);
                        return false;
                    }
                    std::this_thread::sleep_for(std::chrono::microseconds(200));
                }
            g_workers[0]->set_wake_fd(-1);  // its socket goes with the old port
            std::vector<rte_mbuf *> held;
            for (auto &w : g_workers) w->held_mbufs(held);
            const unsigned free_before = rte_mempool_avail_count(pool);
            // Closing the port detaches this run's program: held, it is put back right after
            // the close (and after each failed probe's) and replaced by the probe's attach, as at
            // start (the flows it forwards see no program only for that moment, not the load).
            PreviousXdps running;
            if (opts->mode == Mode::Xdp) hold_previous_xdp(xdp_prog_interfaces(eal_args), &running);
            auto before_probe = [&] {
                if (opts->mode != Mode::Xdp) return;
                // As at start: the PMD's program load pins a fresh tx-ports map.
                std::string pin = opts->bpffs + "/" KVS_MAP_TX_PORTS;
                unlink(pin.c_str());
                if (xdp_replace_reachable()) {
                    running.put_back();
                    arm_xdp_replace(xdp_prog_interfaces(eal_args));
                } else {  // the PMD attaches only where no program is (start: the same)
                    PreviousXdps now;
                    hold_previous_xdp(xdp_prog_interfaces(eal_args), &now);
                    now.detach();
                }
            };
            PortRecovery r;
            std::string rerr;
            const bool recreated =
                recreate_af_xdp_port(opts->port, eal_args, static_cast<std::uint16_t>(n_workers),
                                     pool, held, before_probe, &r, &rerr);
            if (const unsigned n = disarm_xdp_replace())
                spdlog::info("port recovery: XDP program replaced in one step on {} interface(s)",
                             n);
            if (!recreated) {
                spdlog::error("port recovery: {}", rerr);
                running.put_back();  // a last probe's program went with its port
                if (r.port_gone) {
                    spdlog::error("the port is gone: exiting with status 75");
                    _exit(75);
                }
                unpark_all(opts->port);
                return false;
            }
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - t0)
                                .count();
            spdlog::warn(
                "port {}: receive path re-created in process as port {} in {} ms ({} probe(s), "
                "{} old socket(s) closed): {} mbufs the old socket's rings kept returned to the "
                "pool (free {} -> {} of {}), {} held by first flights kept",
                opts->port, r.port, ms, r.probes, r.sockets_closed, r.reclaimed, free_before,
                rte_mempool_avail_count(pool), pool->size, held.size());
            opts->port = r.port;
            g_fault_rx_off.store(false);  // an injected stall ends with the port it was on
            count(KVS_R_DP_RX_RECOVERED, 1);
            count(KVS_R_DP_RX_MBUFS_RECLAIMED, r.reclaimed);
            unpark_all(r.port);
            return true;
        };
        while (!g_term.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            auto now = std::chrono::steady_clock::now();
            if (now >= next_watch) {
                next_watch = now + std::chrono::milliseconds(kWatchMs);
                if (watchdog.check(opts->port, kWatchMs, opts->rx_stall_ms)) {
                    // The worker never writes these reasons: the control thread is their writer.
                    count(KVS_R_DP_RX_STALL, 1);
                    spdlog::error(
                        "port {}: receive path stalled for {} ms (the AF_XDP fill ring ran empty "
                        "and is never refilled)",
                        opts->port, opts->rx_stall_ms);
                    if (recoveries < opts->rx_recoveries && recover_port()) {
                        ++recoveries;
                        watchdog.reset();
                        continue;
                    }
                    spdlog::error(
                        "port {}: exiting with status 75 for the supervisor to restart the "
                        "dataplane (bound flows keep flowing in XDP; {} of {} in-process "
                        "recoveries used)",
                        opts->port, recoveries, opts->rx_recoveries);
                    g_exit_status = 75;
                    break;
                }
            }
            if (tables.flows_fd >= 0 && now >= next_sweep) {
                next_sweep = now + std::chrono::milliseconds(opts->sweep_interval_ms);
                auto r = sweep_flows(
                    tables.flows_fd, mono_ns(), opts->closed_linger_s * 1000000000ull,
                    opts->flow_idle_timeout_s * 1000000000ull, ports.get(), false, tables.load);
                if (r.deleted || r.reclaimed || r.restored)
                    spdlog::debug(
                        "sweep: {} entries, {} deleted ({} closes counted), {} put back (used "
                        "as they were deleted), {} SNAT ports reclaimed",
                        r.seen, r.deleted, r.closes, r.restored, r.reclaimed);
            }
            if (opts->stats_interval_s && now >= next_stats) {
                next_stats = now + std::chrono::seconds(opts->stats_interval_s);
                log_counters(tables, n_workers, opts->port, pool);
            }
        }
        // Graceful: take no new flows, let the ones being bound finish (bounded wait).
        spdlog::info("shutting down: finishing flows being bound");
        for (auto &w : g_workers) w->drain();
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        while (std::chrono::steady_clock::now() < until) {
            unsigned busy = 0;
            for (auto &w : g_workers) busy += w->binding_count();
            if (busy == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        g_stop.store(true);
    };

    if (rte_lcore_count() > 1) {
        unsigned idx = 0, lcore;
        RTE_LCORE_FOREACH_WORKER(lcore)
        rte_eal_remote_launch(lcore_main, g_workers[idx++].get(), lcore);
        control_loop();
        rte_eal_mp_wait_lcore();
    } else {
        std::thread control(control_loop);
        g_workers[0]->run(g_stop);
        control.join();
    }
    log_counters(tables, n_workers, opts->port, pool);
    // The port is deliberately left open: closing net_af_xdp detaches the XDP program, and
    // bound flows must keep flowing through XDP while the dataplane restarts.
    if (opts->mode == Mode::Dpdk) {
        g_workers.clear();
        rte_eth_dev_stop(opts->port);
        rte_eth_dev_close(opts->port);
    }
    spdlog::info("kvsteer-dataplane stopped");
    _exit(g_exit_status);
}
