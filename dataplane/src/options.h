// Command-line options of kvsteer-dataplane (the application part, after EAL's `--`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvsteer::dp {

enum class Mode : std::uint8_t {
    Xdp,   // net_af_xdp with kvsteer.bpf.o: XDP answers SYNs and forwards bound flows
    Dpdk,  // any port: the workers answer SYNs and forward bound flows themselves
};

enum class IdlePolicy : std::uint8_t { Adaptive, Busy };

struct Options {
    std::string bpffs = "/sys/fs/bpf/kvsteer";
    Mode mode = Mode::Xdp;
    IdlePolicy idle = IdlePolicy::Adaptive;
    std::uint16_t port = 0;                   // DPDK port id the workers poll
    std::uint32_t max_held_bytes = 0;         // 0: kvs_config.max_held_bytes
    std::uint32_t max_pending = 4096;         // flows being bound, per worker
    std::uint32_t max_held_per_source = 256;  // of those, per client address (0: no limit)
    // Packets the flights of one client address may hold, of the worker's (0: an eighth of them,
    // at least one full flight); with max_held_per_source 0, no limit.
    std::uint32_t max_held_packets_per_source = 0;
    // dpdk mode, where established flows keep their slots (of max_pending): the flows one client
    // address may have, bound or being bound, per worker (0: no limit). Without it one address
    // could fill the table with idle connections.
    std::uint32_t max_flows_per_source = 1024;
    std::uint32_t bind_gap_us = 1000;     // bind after this long without a new segment
    std::uint32_t slow_bind_gap_ms = 20;  // the same below the client's initial window
    std::uint32_t idle_sleep_us = 200;    // adaptive idle: longest sleep between polls
    std::uint32_t idle_spin_us = 0;       // adaptive idle: keep polling this long after a packet
    bool idle_wake = true;  // adaptive idle, one worker, xdp mode: sleep on the AF_XDP socket
    std::uint32_t backend_syn_timeout_ms = 300;
    std::uint32_t backend_syn_retries = 1;  // SYN retransmissions to one backend
    std::uint32_t max_candidates = 3;       // backends tried per flow
    // The backend connection pool (xdp mode): legs kept open per backend and worker (0: none),
    // and how long an unused one may wait before it is replaced.
    std::uint32_t backend_pool = 0;
    std::uint32_t backend_pool_max_age_ms = 2000;
    std::uint32_t backend_pool_min = 0;  // legs kept per backend nobody drew from lately
    // xdp mode: legs a request moved off kept per backend and worker (places beside the pool's)
    // for a later request to that backend (0: each is reset).
    std::uint32_t backend_reuse = 8;
    std::uint32_t client_idle_timeout_ms = 5000;  // incomplete request head: drop state after
    std::uint32_t flow_idle_timeout_s = 300;      // any established flow idle this long is deleted
    std::uint32_t closed_linger_s = 3;            // closed (FIN both ways/RST) flows kept this long
    std::uint32_t local_linger_ms =
        2000;  // xdp mode: local copy of a bound flow kept for punts in flight
    std::uint32_t sweep_interval_ms = 1000;
    std::uint32_t stats_interval_s = 0;  // 0: no periodic counter log
    std::uint32_t rx_stall_ms =
        2000;  // receive-path watchdog: stalled this long -> re-create the port (0: off)
    std::uint32_t rx_recoveries = 8;  // in-process re-creations before exiting 75 instead
    bool fault_rx_signal = false;     // tests: SIGUSR2 stops receiving until the port is re-created
    std::uint32_t mbufs = 16383;      // per port mempool
    std::uint32_t wait_config_s = 30;  // wait this long for kvsteerd's first kvs_config
    bool create_maps = false;          // create missing pinned maps (tests without kvsteerd)
    std::string guard_prog;            // tc guard object ("": guard.bpf.o beside xdp_prog; "none")
    std::string log_level = "info";
};

// Parses argv (application arguments only). On --help prints usage and returns nullopt with
// *exit_code = 0; on a bad argument prints the error and returns nullopt with *exit_code = 2.
std::optional<Options> parse_options(int argc, char **argv, int *exit_code);

const char *mode_name(Mode m);

}  // namespace kvsteer::dp
