#include "kvsteer/core/po_error.h"
#include "options.h"

#include <boost/program_options.hpp>
#include <cctype>
#include <iostream>
#include <string_view>

namespace po = boost::program_options;

namespace kvsteer::dp {

const char *mode_name(Mode m) {
    return m == Mode::Xdp ? "xdp" : "dpdk";
}

std::optional<Options> parse_options(int argc, char **argv, int *exit_code) {
    Options o;
    std::string mode = "xdp", idle = "adaptive";
    po::options_description d(
        "kvsteer-dataplane [EAL args] -- [options]\n"
        "Binds client TCP flows to backends from their first flight (delayed binding).\n"
        "Example: kvsteer-dataplane --no-pci --no-huge -m 512 --no-shconf \\\n"
        "  --vdev net_af_xdp0,iface=eth0,xdp_prog=kvsteer.bpf.o -- --bpffs /sys/fs/bpf/kvsteer\n"
        "Options");
    d.add_options()("help,h", "show this help")("bpffs",
                                                po::value(&o.bpffs)->default_value(o.bpffs),
                                                "bpffs directory of the pinned kvsteer maps")(
        "create-maps", po::bool_switch(&o.create_maps),
        "create missing pinned maps (for tests without kvsteerd)")(
        "wait-config-s", po::value(&o.wait_config_s)->default_value(o.wait_config_s),
        "wait this long for kvsteerd to write kvs_config (generation 0), then fail")(
        "mode", po::value(&mode)->default_value(mode),
        "xdp: port is net_af_xdp running kvsteer.bpf.o (XDP answers SYNs, forwards bound flows); "
        "dpdk: the workers do SYN cookies and forwarding themselves (any port)")(
        "idle", po::value(&idle)->default_value(idle),
        "adaptive: back off (pause, then sleep) when no packets; busy: always poll")(
        "idle-sleep-us", po::value(&o.idle_sleep_us)->default_value(o.idle_sleep_us),
        "adaptive idle: longest sleep between polls (latency added to a first packet after idle)")(
        "idle-spin-us", po::value(&o.idle_spin_us)->default_value(o.idle_spin_us),
        "adaptive idle: keep polling this long after the last packet before sleeping (lower "
        "latency on a shared CPU for up to this much polling per packet; 0: off)")(
        "idle-wake", po::value(&o.idle_wake)->default_value(o.idle_wake),
        "adaptive idle, xdp mode, one worker: sleep in poll() on the AF_XDP socket, so the next "
        "frame ends the sleep (false: plain sleeps)")(
        "port", po::value(&o.port)->default_value(o.port), "DPDK port id to serve")(
        "max-held-bytes", po::value(&o.max_held_bytes)->default_value(o.max_held_bytes),
        "first-flight bytes held per flow before binding (0: kvs_config.max_held_bytes)")(
        "max-held-per-source",
        po::value(&o.max_held_per_source)->default_value(o.max_held_per_source),
        "flows one client address may have being bound at once, per worker (0 = no limit); more "
        "are "
        "dropped (dp_hold_source_cap) and retransmitted by the client")(
        "max-held-packets-per-source",
        po::value(&o.max_held_packets_per_source)->default_value(o.max_held_packets_per_source),
        "first-flight packets the flows of one client address may hold at once, per worker (0 = "
        "an eighth of the worker's, at least one full flight; no limit with "
        "max-held-per-source 0); more are dropped (dp_hold_source_cap) and retransmitted")(
        "max-flows-per-source",
        po::value(&o.max_flows_per_source)->default_value(o.max_flows_per_source),
        "dpdk mode (established flows keep their slots of --max-pending): connections one client "
        "address may have open, bound or being bound, per worker (0 = no limit); more are reset "
        "(dp_flow_source_cap)")(
        "max-pending", po::value(&o.max_pending)->default_value(o.max_pending),
        "flows being bound at once, per worker (dpdk mode: every open flow)")(
        "bind-gap-us", po::value(&o.bind_gap_us)->default_value(o.bind_gap_us),
        "bind when no client segment arrived for this long (a client that filled its initial "
        "window and waits for our ACK)")(
        "slow-bind-gap-ms", po::value(&o.slow_bind_gap_ms)->default_value(o.slow_bind_gap_ms),
        "the same for a flight below the client's initial window (10 x MSS), which could have "
        "sent more: a slow writer or a lost segment; binding it early would key it on a partial "
        "request")("backend-syn-timeout-ms",
                   po::value(&o.backend_syn_timeout_ms)->default_value(o.backend_syn_timeout_ms),
                   "wait this long for a backend's SYN-ACK before retrying")(
        "backend-syn-retries",
        po::value(&o.backend_syn_retries)->default_value(o.backend_syn_retries),
        "SYN retransmissions to one backend before trying the next candidate")(
        "max-candidates", po::value(&o.max_candidates)->default_value(o.max_candidates),
        "backends tried per flow before the client gets a RST")(
        "backend-pool", po::value(&o.backend_pool)->default_value(o.backend_pool),
        "xdp mode: backend connections each worker keeps open per backend at most, handshake "
        "done, so a new flow skips the backend's round trip; how many follows the flows that "
        "asked the backend for one in the last two max-age periods (0: no pool; clients "
        "without SACK, timestamps or window scaling, or with an MSS below the pool's, are "
        "bound with their own SYN)")(
        "backend-pool-min", po::value(&o.backend_pool_min)->default_value(o.backend_pool_min),
        "pooled connections kept per backend even without demand (up to --backend-pool; equal "
        "to it: a fixed pool)")(
        "backend-reuse", po::value(&o.backend_reuse)->default_value(o.backend_reuse),
        "xdp mode: when a kept-alive connection's request moves to another backend, keep up to "
        "this many of the connections it leaves per backend (beside --backend-pool's), "
        "handshake done, for a later request to that backend, which then skips the backend's "
        "handshake; each is reset after --backend-pool-max-age-ms unused (0: reset each at "
        "once)")("backend-pool-max-age-ms",
                 po::value(&o.backend_pool_max_age_ms)->default_value(o.backend_pool_max_age_ms),
                 "replace a pooled backend connection unused this long (keep it well below the "
                 "backends' idle timeout: uvicorn's is 5 s)")(
        "client-idle-timeout-ms",
        po::value(&o.client_idle_timeout_ms)->default_value(o.client_idle_timeout_ms),
        "drop a held flow whose request head stays incomplete this long")(
        "flow-idle-timeout-s",
        po::value(&o.flow_idle_timeout_s)->default_value(o.flow_idle_timeout_s),
        "delete any established flow idle this long")(
        "closed-linger-s", po::value(&o.closed_linger_s)->default_value(o.closed_linger_s),
        "delete flows closed both ways (a FIN each way, or a RST) idle this long")(
        "local-linger-ms", po::value(&o.local_linger_ms)->default_value(o.local_linger_ms),
        "xdp mode: keep a local copy of a just-bound flow this long (packets punted in flight)")(
        "sweep-interval-ms", po::value(&o.sweep_interval_ms)->default_value(o.sweep_interval_ms),
        "flow table sweep period")(
        "rx-stall-ms", po::value(&o.rx_stall_ms)->default_value(o.rx_stall_ms),
        "receive-path watchdog: when the kernel drops for the port (missed) while it receives "
        "nothing for this long, log it, count dp_rx_stall and re-create the port in process "
        "(net_af_xdp: new socket and rings, stranded mbufs returned to the pool, held first "
        "flights kept); 0 = off")(
        "rx-recoveries", po::value(&o.rx_recoveries)->default_value(o.rx_recoveries),
        "in-process port re-creations allowed; after that (or when one fails, or for a driver "
        "other than net_af_xdp) a stall exits with status 75 for the supervisor to restart the "
        "dataplane (bound flows keep flowing in XDP)")(
        "fault-rx-signal", po::bool_switch(&o.fault_rx_signal),
        "fault injection for tests: SIGUSR2 makes every worker stop receiving (what a stalled "
        "port looks like: the kernel drops for it while nothing is received) until the watchdog "
        "re-creates the port")("stats-interval-s",
                               po::value(&o.stats_interval_s)->default_value(o.stats_interval_s),
                               "log counters this often (0: never)")(
        "mbufs", po::value(&o.mbufs)->default_value(o.mbufs), "mbufs in the port's mempool")(
        "guard-prog", po::value(&o.guard_prog),
        "xdp mode: tc ingress guard object that drops the VIP's and SNAT range's TCP while no XDP "
        "program is attached (a restart), so the appliance kernel cannot reset bound flows "
        "(default: guard.bpf.o beside the vdev's xdp_prog; none: no guard)")(
        "log-level", po::value(&o.log_level)->default_value(o.log_level),
        "trace|debug|info|warn|error");
    // Every numeric option is unsigned, and Boost reads "--port=-1" as a wrapped huge value:
    // refuse a negative value by its spelling first.
    for (int i = 1; i < argc; i++) {
        const std::string_view a = argv[i];
        const auto eq = a.find('=');
        if (!a.starts_with("--") || eq == std::string_view::npos) continue;
        const std::string_view v = a.substr(eq + 1);
        if (v.size() >= 2 && v[0] == '-' && std::isdigit(static_cast<unsigned char>(v[1]))) {
            std::cerr << "kvsteer-dataplane: " << a.substr(0, eq) << ": must not be negative (got "
                      << v << ")\n(see --help)\n";
            *exit_code = 2;
            return std::nullopt;
        }
    }
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
        po::notify(vm);
    } catch (const std::exception &e) {
        std::cerr << "kvsteer-dataplane: " << kvsteer::error_text(e) << "\n(see --help)\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (vm.count("help")) {
        std::cout << d << "\n";
        *exit_code = 0;
        return std::nullopt;
    }
    if (mode == "xdp")
        o.mode = Mode::Xdp;
    else if (mode == "dpdk")
        o.mode = Mode::Dpdk;
    else {
        std::cerr << "kvsteer-dataplane: --mode must be xdp or dpdk, not '" << mode << "'\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (idle == "adaptive")
        o.idle = IdlePolicy::Adaptive;
    else if (idle == "busy")
        o.idle = IdlePolicy::Busy;
    else {
        std::cerr << "kvsteer-dataplane: --idle must be adaptive or busy, not '" << idle << "'\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.backend_pool > 16 || (o.backend_pool && o.backend_pool_max_age_ms == 0)) {
        std::cerr << "kvsteer-dataplane: --backend-pool must be 0..16, with "
                     "--backend-pool-max-age-ms > 0\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.backend_reuse > 64) {
        std::cerr << "kvsteer-dataplane: --backend-reuse must be 0..64\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.backend_syn_retries > 16) {  // the binder counts tries in 8 bits
        std::cerr << "kvsteer-dataplane: --backend-syn-retries must be 0..16\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.idle_spin_us > 1000000) {
        std::cerr << "kvsteer-dataplane: --idle-spin-us must be 0..1000000\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.backend_pool_min > o.backend_pool) {
        std::cerr << "kvsteer-dataplane: --backend-pool-min must not exceed --backend-pool\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.backend_pool && o.mode != Mode::Xdp) {
        std::cerr << "kvsteer-dataplane: --backend-pool needs --mode xdp\n";
        *exit_code = 2;
        return std::nullopt;
    }
    if (o.max_candidates == 0 || o.max_pending == 0 || o.backend_syn_timeout_ms == 0) {
        std::cerr << "kvsteer-dataplane: --max-candidates, --max-pending and "
                     "--backend-syn-timeout-ms must be > 0\n";
        *exit_code = 2;
        return std::nullopt;
    }
    return o;
}

}  // namespace kvsteer::dp
