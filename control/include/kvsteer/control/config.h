// kvsteerd configuration: command line + INI file (Boost.Program_options), validated into one
// struct.
#pragma once

#include <array>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/control/affinity_policy.h"
#include "kvsteer/control/fleet.h"
#include "kvsteer/control/net.h"
#include "kvsteer/core/load_bound.h"

namespace kvsteer::control {

struct BackendSpec {
    Endpoint ep;
    std::uint16_t weight = 1;
    std::string model;
    std::optional<Mac> mac;  // absent: resolved from the neighbour table
    std::uint32_t max_load = 0;
    std::string
        kv_events;  // vLLM KV events publisher to subscribe to (tcp://HOST:PORT); empty: off
    bool operator==(const BackendSpec &) const = default;
};

// How kvsteerd builds the backend lookup table (same format, read the same way by the dataplane).
enum class TableAlgorithm : std::uint8_t {
    Rendezvous,  // build_rendezvous_table: fewer slots move on a backend change; shares within +5%
    Maglev,      // build_maglev: exact shares; more slots move at 50+ backends
};

// Defaults: kvs_config fields take abi.h's KVS_DEFAULT_* (what a reader applies to a zero field),
// the affinity policy's take PolicyParams' (affinity_policy.h); each is defined there only.
struct DaemonConfig {
    std::vector<Endpoint> vips;
    // The appliance's source addresses towards backends, as kvs_config holds them: snat_addr is
    // the IPv4 one when there is one; snat2_addr the other family's on a dual-stack appliance
    // (family KVS_AF_NONE: none). A flow leaves from the one of its own family.
    Endpoint snat_addr, snat2_addr;
    std::uint16_t snat_port_lo = KVS_DEFAULT_SNAT_PORT_LO, snat_port_hi = KVS_DEFAULT_SNAT_PORT_HI;
    std::string interface;
    Mac appliance_mac{};
    std::uint8_t workers = 1;
    std::vector<BackendSpec> backends;

    std::uint32_t prefix_len = KVS_DEFAULT_PREFIX_LEN;
    std::uint32_t block_size = KVS_DEFAULT_BLOCK_SIZE;
    std::uint32_t max_blocks = KVS_MAX_REPORT_BLOCKS;
    double load_factor = kDefaultLoadFactor;
    std::uint32_t load_slack = KVS_DEFAULT_LOAD_SLACK;  // affinity bound >= least load + 1 + this
    std::uint32_t replication = PolicyParams{}.replication;
    double hot_threshold = PolicyParams{}.hot_rps;  // requests/s on one prefix that make it hot
    std::uint32_t steering_mode = KVS_STEER_PREFIX;
    TableAlgorithm table_algorithm = TableAlgorithm::Rendezvous;

    std::array<std::uint64_t, 2> cookie_key{}, cookie_key_prev{};
    bool cookie_key_random = false;
    std::uint32_t cookie_period_s = 64;
    std::uint64_t hash_seed = KVS_DEFAULT_HASH_SEED;
    std::uint32_t max_held_bytes = KVS_DEFAULT_MAX_HELD_BYTES;
    std::uint16_t syn_mss = 1460;
    std::uint8_t syn_wscale = 7;
    std::uint16_t syn_window = 65535;
    // SYN-ACKs a second / burst to one client /24 (IPv4) or /48 (IPv6); 0 = no limit.
    std::uint32_t syn_rate_per_prefix = KVS_DEFAULT_SYN_RATE_PER_PREFIX;
    std::uint32_t syn_burst_per_prefix = KVS_DEFAULT_SYN_BURST_PER_PREFIX;
    bool syn_timestamps = true;
    // Steer every request of a kept-alive connection, not only its first (live: tune).
    bool per_request = true;
    // Session affinity by header (live: tune): lower-case names, comma-separated; empty = off.
    std::string session_headers;
    std::uint32_t session_cap = KVS_DEFAULT_SESSION_CAP;  // requests of one key in flight

    std::uint32_t health_interval_ms = 1000;  // 0 disables active checks
    std::uint32_t health_timeout_ms = 500;
    std::uint32_t health_rise = 2, health_fall = 3;
    std::string health_path = "/health";
    std::uint32_t health_passive_fails = 1;  // bind failures that make an interval failed; 0 = off

    std::uint32_t telemetry_interval_ms = 1000;  // 0 disables scraping
    std::string telemetry_path = "/metrics";

    std::uint32_t queue_cap =
        0;  // waiting requests that freeze a backend's max_load at its in-flight; 0 = off

    std::uint32_t report_interval_ms = 150;
    std::uint32_t affinity_ttl_ms = static_cast<std::uint32_t>(PolicyParams{}.ttl_ns / 1000000);
    // a prefix that became hot stays hot this long (0: off)
    std::uint32_t affinity_min_hot_ms =
        static_cast<std::uint32_t>(PolicyParams{}.min_hot_ns / 1000000);
    std::uint32_t affinity_max_entries = PolicyParams{}.max_entries;
    std::uint32_t affinity_index_max = PolicyParams{}.index_max;
    std::uint32_t table_grace_ms = 20;

    std::string bpffs = KVS_DEFAULT_BPFFS;
    std::string api_socket = "/run/kvsteer/kvsteerd.sock";
    std::string metrics_listen;  // ADDR:PORT; empty = off
    std::string log_level = "info";
    // A fleet of appliances (fleet-self, fleet-member, fleet-epoch): the state the daemon starts
    // from; fleet.self KVS_APPLIANCE_NONE: no fleet.
    FleetState fleet;
    // fleet-etcd http://ADDR:PORT (etcd's v3 JSON gateway; unset: no etcd) and fleet-etcd-prefix.
    std::optional<Endpoint> fleet_etcd;
    std::string fleet_etcd_prefix = "/kvsteer/";
    // fleet-ping (ms between pings, 0: off) and fleet-ping-misses (fleet_ping.h).
    std::uint32_t fleet_ping_ms = 50;
    std::uint32_t fleet_ping_misses = 4;
    // fleet-share-hot: busiest prefixes shared through etcd (only with fleet-etcd).
    bool fleet_share_hot = true;
    // announce-bird-socket (empty: nothing announced), announce-protocol, dataplane-stale.
    std::string announce_bird_socket;
    std::vector<std::string> announce_protocols = {"kvs_vip"};
    std::uint32_t dataplane_stale_ms = 1000;
    bool operator==(const DaemonConfig &) const = default;
};

enum class ParseOutcome { Ok, Help, Error };

struct ParseResult {
    ParseOutcome outcome = ParseOutcome::Error;
    std::string message;  // help text, or the one error line
    // An error that may clear by itself: the `interface` named is not there (yet: a slow driver,
    // a VF another unit makes). kvsteerd exits 1 for it (systemd retries), 2 for the others.
    bool retryable = false;
    DaemonConfig cfg;
};

// Parses argv (and the file named by --config; the command line wins). Never throws.
ParseResult parse_daemon_config(int argc, const char *const argv[]);
// The same with the config file's text in memory: CONFIG_TEXT is read as the --config file would be
// (the command line still wins; a --config in argv is not opened). Never throws.
ParseResult parse_daemon_config(int argc, const char *const argv[], std::istream &config_text);

// The SNAT address of FAMILY (snat_addr or snat2_addr), or nullptr when c has none.
const Endpoint *snat_for(const DaemonConfig &c, std::uint8_t family);

// Why an appliance configured as c cannot serve a backend at EP (one line, as the API and the
// config file report it): no SNAT address of EP's family. nullopt when it can.
std::optional<std::string> backend_unreachable(const DaemonConfig &c, const Endpoint &ep);

// What a valid configuration may still get wrong, one line each, for the log at startup: a VIP
// family without a backend of that family (backends come and go through the API, so no error).
std::vector<std::string> config_warnings(const DaemonConfig &c);

// The kernel's ephemeral ports overlapping the SNAT range, one line for the log, or nullopt when
// none do. `local_range` is /proc/sys/net/ipv4/ip_local_port_range ("LO HI"), `reserved`
// ip_local_reserved_ports ("" or "P,LO-HI,..."; reserved ports are never picked, so they do not
// count). A reply to one of the appliance kernel's own connections (health checks, scrapes:
// they leave from the same address) to a port in the SNAT range is taken for a SNAT flow's and
// never reaches the socket. Also said: fewer than 1024 ephemeral ports left unreserved (the
// appliance's own connections may find none). Unreadable text: a line saying so.
std::optional<std::string> snat_port_overlap(const DaemonConfig &c, std::string_view local_range,
                                             std::string_view reserved);

// "ADDR:PORT[,weight=W][,model=NAME][,mac=MAC][,max_load=N][,kv-events=tcp://HOST:PORT]"
std::optional<BackendSpec> parse_backend_spec(std::string_view s, std::string *err);
// The spec as parse_backend_spec reads it back (weight always written).
std::string backend_spec_str(const BackendSpec &b);

// A ZMQ endpoint kvsteerd can connect a SUB socket to: tcp://HOST:PORT (HOST an IPv4 address,
// [IPv6] or a DNS name) or ipc://PATH. false + err (one line) otherwise.
bool valid_kv_events_endpoint(std::string_view ep, std::string *err);

// Bounds of a numeric key, inclusive.
struct UintRange {
    std::uint64_t lo, hi;
};
struct NumberRange {
    double lo, hi;
};

// The live tunables (`kvsteerctl tune`, API tune.set) are config keys too. Their bounds are
// defined once, here, and checked by apply_tunable, which both parse_daemon_config and the tune
// API call.
namespace tunable_limits {
inline constexpr UintRange kPrefixLength{1, 1u << 20};
inline constexpr UintRange kBlockSize{16, 1u << 20};
// 0 is kvs_config's "default" marker (28 blocks): accepted, "0" ran as 28 while the API said 0.
inline constexpr UintRange kMaxBlocks{1, KVS_MAX_REPORT_BLOCKS};
inline constexpr NumberRange kLoadFactor{1.0, 100.0};
// 0 is kvs_config's "default" marker, so the least slack is 1.
inline constexpr UintRange kLoadSlack{1, 1000000};
inline constexpr UintRange kReplication{1, KVS_MAX_REPLICAS};
inline constexpr NumberRange kHotThreshold{0.001, 1e9};
inline constexpr UintRange kAffinityTtlMs{100, 86400000};
// Never below the default prefix-length: a held first flight must be able to hold the prefix.
inline constexpr UintRange kMaxHeldBytes{KVS_DEFAULT_PREFIX_LEN, 1u << 20};
// 0 is kvs_config's "default" marker, so the least cap is 1.
inline constexpr UintRange kSessionCap{1, 1000000};
}  // namespace tunable_limits

// The names apply_tunable accepts, for error and help texts.
inline constexpr const char *kTunableNames =
    "prefix-length, block-size, max-blocks, load-factor, load-slack, replication, hot-threshold, "
    "steering-mode, affinity-ttl, max-held-bytes, per-request, session-headers, session-cap";

// S as a decimal or 0x-hex integer in R. A sign is never accepted (no "-1" wrapping to a huge
// value). nullopt + err "KEY: must be an integer in LO..HI (got 'S')" otherwise.
std::optional<std::uint64_t> parse_uint_in(std::string_view key, std::string_view s, UintRange r,
                                           std::string *err);
// S as a finite number in R. nullopt + err "KEY: must be a number in LO..HI (got 'S')" otherwise.
std::optional<double> parse_number_in(std::string_view key, std::string_view s, NumberRange r,
                                      std::string *err);

// A session-headers value: HTTP field names (RFC 9110 tokens) separated by ',', at most
// KVS_SESSION_MAX_HEADERS, no repeats, fitting kvs_config.session_headers; "" turns the feature
// off. The list lower-cased and without blanks, or nullopt + err (one line).
std::optional<std::string> parse_session_headers(std::string_view s, std::string *err);

// Sets the live tunable NAME (one of kTunableNames) in c from its text VALUE: parsed,
// range-checked and checked against the rest of c (prefix-length <= max-held-bytes). false + err
// (one line naming the key and what it accepts) and c unchanged otherwise.
bool apply_tunable(DaemonConfig &c, std::string_view name, std::string_view value,
                   std::string *err);

std::optional<std::uint32_t> parse_steer_mode(std::string_view s);
const char *steer_mode_name(std::uint32_t mode);

std::optional<TableAlgorithm> parse_table_algorithm(std::string_view s);
const char *table_algorithm_name(TableAlgorithm a);

// Reads /sys/class/net/IF/address (of the current network namespace).
// `missing` (if given) is set when the name is valid but no such interface is here (yet).
std::optional<Mac> interface_mac(const std::string &ifname, std::string *err,
                                 bool *missing = nullptr);

}  // namespace kvsteer::control
