#include "kvsteer/core/po_error.h"
#include "kvsteer/control/config.h"

#include <sys/random.h>

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace po = boost::program_options;

namespace kvsteer::control {

namespace {

// Thrown only inside this file, turned into ParseResult::message.
struct ConfigError {
    std::string msg;
    bool retryable = false;  // ParseResult::retryable
};

[[noreturn]] void fail(const std::string &key, const std::string &why) {
    throw ConfigError{key + ": " + why};
}

std::optional<std::string> opt_str(const po::variables_map &vm, const char *key) {
    if (!vm.count(key)) return std::nullopt;
    return vm[key].as<std::string>();
}

std::uint64_t get_uint(const po::variables_map &vm, const char *key, std::uint64_t lo,
                       std::uint64_t hi, std::uint64_t def) {
    auto s = opt_str(vm, key);
    if (!s) return def;
    std::string err;
    auto v = parse_uint_in(key, *s, {lo, hi}, &err);
    if (!v) throw ConfigError{err};
    return *v;
}

bool get_bool(const po::variables_map &vm, const char *key, bool def) {
    auto s = opt_str(vm, key);
    if (!s) return def;
    if (*s == "true" || *s == "yes" || *s == "on" || *s == "1") return true;
    if (*s == "false" || *s == "no" || *s == "off" || *s == "0") return false;
    fail(key, "must be true or false (got '" + *s + "')");
}

std::array<std::uint64_t, 2> parse_cookie_key(const std::string &key, const std::string &s) {
    std::string err;
    auto k = parse_cookie_key_hex(s, &err);
    if (!k) fail(key, "must be 32 hex digits (a 128-bit SipHash key): " + err);
    return *k;
}

po::options_description make_options() {
    po::options_description d(
        "kvsteerd options (also valid as KEY = VALUE lines in the --config file)");
    auto s = [] { return po::value<std::string>(); };
    auto multi = [] { return po::value<std::vector<std::string>>()->composing(); };
    // Help texts name the defaults of DaemonConfig itself (options_description copies them).
    const DaemonConfig def;
    auto dflt = [](std::string_view text, const auto &v) {
        return fmt::format("{} (default {})", text, v);
    };
    // clang-format off
    d.add_options()
        ("help,h", "show this help and exit")
        ("config,c", s(), "INI-style configuration file (KEY = VALUE); the command line wins, but "
                          "--vip and --backend add to the file's")
        ("vip", multi(), "virtual service ADDR:PORT (repeatable, at most 16)")
        ("snat-addr", po::value<std::vector<std::string>>(),
         "appliance-owned source address towards backends; dual stack: give it twice, one IPv4 and "
         "one IPv6 address (at most one per family; a flow leaves from the one of its family)")
        ("snat-ports", s(), dflt("source port range LO-HI towards backends",
                                 fmt::format("{}-{}", def.snat_port_lo, def.snat_port_hi)).c_str())
        ("workers", s(), "dataplane workers sharing the SNAT port range (default 1)")
        ("interface", s(), "interface whose MAC is the appliance's source MAC")
        ("appliance-mac", s(), "appliance source MAC (instead of --interface)")
        ("backend", multi(), "ADDR:PORT[,weight=W][,model=NAME][,mac=MAC][,max_load=N][,kv-events=tcp://HOST:PORT] "
                             "(repeatable; kv-events: the server's vLLM KV events publisher)")
        ("prefix-length", s(), dflt("prompt bytes in the fixed-prefix hash", def.prefix_len).c_str())
        ("block-size", s(), dflt("bytes per chained block hash", def.block_size).c_str())
        ("max-blocks", s(), dflt(fmt::format("chained blocks hashed per request, 1..{}", KVS_MAX_REPORT_BLOCKS),
                                 def.max_blocks).c_str())
        ("load-factor", s(), dflt("bounded-load factor c >= 1.0", def.load_factor).c_str())
        ("load-slack", s(), dflt("an affinity holder keeps new flows while within this many of the least loaded backend (bound: max(c x mean, least + 1 + slack)), 1..1000000", def.load_slack).c_str())
        ("replication", s(), dflt(fmt::format("replicas K of a hot prefix, 1..{}", KVS_MAX_REPLICAS), def.replication).c_str())
        ("hot-threshold", s(), dflt("requests/s on one prefix that make it hot", def.hot_threshold).c_str())
        ("steering-mode", s(), "prefix | round-robin | five-tuple (default prefix)")
        ("per-request", s(), "steer every request of a kept-alive connection: on|off (default on)")
        ("session-headers", s(), "request headers whose value is the affinity key instead of the prompt (session "
                                 "affinity), comma-separated, e.g. X-Session-ID; empty = off (default off)")
        ("session-cap", s(), dflt("requests of one session key in flight that follow the key; more are steered by "
                                  "their prompt, 1..1000000", def.session_cap).c_str())
        ("table-algorithm", s(), "backend lookup table: rendezvous (fewer slots move when a backend changes, shares "
                                 "within +5%) | maglev (exact shares) (default rendezvous)")
        ("cookie-key", s(), "SYN-cookie SipHash key, 32 hex digits; same on every appliance (default: random)")
        ("cookie-key-previous", s(), "previous cookie key still accepted while rotating (default: cookie-key)")
        ("cookie-period", s(), "cookie time slot, seconds (default 64)")
        ("hash-seed", s(), "seed of every prefix/block hash, decimal or 0x-hex; same on every appliance")
        ("max-held-bytes", s(), dflt("first-flight bytes held before binding", def.max_held_bytes).c_str())
        ("syn-mss", s(), "MSS in our SYN-ACK, 536..9000 (default 1460)")
        ("syn-wscale", s(), "window scale in our SYN-ACK, 0..14 (default 7)")
        ("syn-window", s(), "window field of our SYN-ACK, 1..65535 (default 65535)")
        ("syn-rate-per-prefix", s(), dflt("SYN-ACKs a second to one client /24 (IPv4) or /48 (IPv6), "
                                          "0 = no limit", def.syn_rate_per_prefix).c_str())
        ("syn-burst-per-prefix", s(), dflt("SYN-ACKs one client /24 or /48 may get at once",
                                           def.syn_burst_per_prefix).c_str())
        ("syn-timestamps", s(), "answer TCP timestamps in the SYN-ACK: true|false (default true)")
        ("health-interval", s(), "active health check interval, ms; 0 = off (default 1000)")
        ("health-timeout", s(), "health check timeout, ms (default 500)")
        ("health-rise", s(), "consecutive successes to mark a backend up (default 2)")
        ("health-fall", s(), "consecutive failures to mark a backend down (default 3)")
        ("health-path", s(), "HTTP path of the health check (default /health)")
        ("health-passive-fails", s(), "dataplane bind failures (RST/timeout) that make a health interval "
                                      "failed (and at least a tenth of the flows bound in it); health-fall failed intervals in a "
                                      "row take the backend down; 0 = off (default 1)")
        ("telemetry-interval", s(), "backend /metrics scrape interval, ms; 0 = off (default 1000)")
        ("telemetry-path", s(), "HTTP path of backend metrics (default /metrics)")
        ("queue-cap", s(), "a backend whose own waiting queue (telemetry) reaches this gets kvs_backends.max_load = its "
                           "in-flight flows: no new affinity flows until the queue drains; 0 = off (default 0)")
        ("report-interval", s(), "binding report / affinity update interval, ms (default 150)")
        ("affinity-ttl", s(), dflt("ms a prefix stays known to a backend without new requests", def.affinity_ttl_ms).c_str())
        ("affinity-min-hot", s(), "ms a prefix that became hot stays hot (replicated) at least; 0 = off (default 0)")
        ("affinity-max-entries", s(), dflt("entries written to the affinity table", def.affinity_max_entries).c_str())
        ("affinity-index-max", s(), dflt("prefixes remembered by the daemon, LRU", def.affinity_index_max).c_str())
        ("table-grace", s(), "ms a retired table half is left untouched before rewriting (default 20)")
        ("bpffs", s(), "bpffs directory of the pinned maps; created if missing (default /sys/fs/bpf/kvsteer)")
        ("api-socket", s(), "Unix socket of the local API (default /run/kvsteer/kvsteerd.sock)")
        ("metrics-listen", s(), "ADDR:PORT for the daemon's Prometheus /metrics; empty = off (default off)")
        ("log-level", s(), "trace | debug | info | warn | error | off (default info)")
        ("fleet-self", s(), "this appliance's id in its fleet, 0..15 (default: no fleet)")
        ("fleet-member", po::value<std::vector<std::string>>(),
         "ID,MAC: an appliance of the fleet and the MAC packets sent on to it go to (repeatable; "
         "the same list on every appliance)")
        ("fleet-epoch", po::value<std::vector<std::string>>(),
         "ID[,ID...]: a membership epoch, the members owning buckets in it (repeatable, oldest "
         "first; default: one epoch of every fleet-member)")
        ("fleet-ping", s(), "ms between pings to every other appliance's XDP program, sent on "
         "interface; 0 = off (default 50)")
        ("fleet-ping-misses", s(), "pings in a row an appliance that answered before may leave "
         "unanswered; then it is left out of the owner table, so its orphaned clients get RSTs "
         "(default 4)")
        ("fleet-etcd", s(), "http://ADDR:PORT: etcd (v3 JSON gateway) carrying the fleet's members, "
         "epochs and cookie keys (needs fleet-self; default: none, the fleet from this config and "
         "the API)")
        ("fleet-etcd-prefix", s(), "key prefix of the fleet in etcd (default /kvsteer/)")
        ("fleet-share-hot", s(), "share this appliance's busiest prefixes (rate, hot, holders by address) "
         "with the fleet through etcd and use the others': true|false (default true with fleet-etcd)")
        ("announce-bird-socket", s(), "BIRD's control socket: the VIP's routes are announced (the "
         "announce-protocol enabled) while the local dataplane is healthy and not draining, withdrawn "
         "(disabled) otherwise; default: none (nothing announced)")
        ("announce-protocol", po::value<std::vector<std::string>>(),
         "a BIRD protocol carrying the VIP's routes, e.g. a static protocol exported to BGP "
         "(repeatable; default kvs_vip)")
        ("dataplane-stale", s(), dflt("ms without a heartbeat after which a dataplane worker counts "
                                      "as dead, 100..60000", def.dataplane_stale_ms).c_str());
    // clang-format on
    return d;
}

void build_fleet(const po::variables_map &vm, DaemonConfig &c);

void build(const po::variables_map &vm, DaemonConfig &c) {
    std::string missing_interface;  // an interface not there (yet): thrown last, retryable
    std::string err;
    if (vm.count("vip")) {
        for (const auto &v : vm["vip"].as<std::vector<std::string>>()) {
            auto ep = parse_endpoint(v, &err);
            if (!ep) fail("vip", err);
            c.vips.push_back(*ep);
        }
    }
    if (c.vips.empty()) fail("vip", "at least one ADDR:PORT is required");
    if (c.vips.size() > KVS_MAX_VIPS)
        fail("vip", "at most " + std::to_string(KVS_MAX_VIPS) + " are supported");

    // Repeatable but not composing: the command line's addresses replace the file's.
    if (!vm.count("snat-addr"))
        fail("snat-addr", "required (the appliance's source address towards backends)");
    std::optional<Endpoint> snat4, snat6;
    for (const auto &a : vm["snat-addr"].as<std::vector<std::string>>()) {
        auto sa = parse_address(a, &err);
        if (!sa) fail("snat-addr", err);
        auto &slot = sa->family == KVS_AF_INET ? snat4 : snat6;
        if (slot)
            fail("snat-addr",
                 fmt::format("two {} addresses ({} and {}): give at most one per family",
                             family_name(sa->family), slot->addr_str(), sa->addr_str()));
        slot = *sa;
    }
    if (!snat4 && !snat6)
        fail("snat-addr", "required (the appliance's source address towards backends)");
    c.snat_addr = snat4 ? *snat4 : *snat6;
    if (snat4 && snat6) c.snat2_addr = *snat6;
    for (const auto &v : c.vips)
        if (!snat_for(c, v.family))
            fail("vip", fmt::format("{} is {} but no {} --snat-addr is given", v.str(),
                                    family_name(v.family), family_name(v.family)));
    c.workers = static_cast<std::uint8_t>(get_uint(vm, "workers", 1, KVS_MAX_WORKERS, 1));
    if (auto pr = opt_str(vm, "snat-ports")) {
        auto dash = pr->find('-');
        std::string e1, e2;
        auto lo = dash == std::string::npos ? std::nullopt : parse_u64(pr->substr(0, dash), &e1);
        auto hi = dash == std::string::npos ? std::nullopt : parse_u64(pr->substr(dash + 1), &e2);
        if (!lo || !hi || *lo < 1 || *hi > 65535 || *lo > *hi)
            fail("snat-ports", "must be LO-HI with 1 <= LO <= HI <= 65535 (got '" + *pr + "')");
        c.snat_port_lo = static_cast<std::uint16_t>(*lo);
        c.snat_port_hi = static_cast<std::uint16_t>(*hi);
    }
    if (static_cast<unsigned>(c.snat_port_hi - c.snat_port_lo + 1) < c.workers)
        fail("snat-ports", "range has fewer ports than workers");

    auto ifname = opt_str(vm, "interface");
    auto mac = opt_str(vm, "appliance-mac");
    if (ifname && mac) fail("appliance-mac", "give either interface or appliance-mac, not both");
    if (mac) {
        auto m = parse_mac(*mac, &err);
        if (!m) fail("appliance-mac", err);
        c.appliance_mac = *m;
    } else if (ifname) {
        bool missing = false;
        auto m = interface_mac(*ifname, &err, &missing);
        if (!m && !missing) fail("interface", err);
        // A valid name not (yet) there may come (a late driver): retried, not a dead unit; said
        // after every other key was checked (a real error elsewhere is still exit 2).
        if (!m) missing_interface = "interface: " + err;
        c.interface = *ifname;
        if (m) c.appliance_mac = *m;
    } else {
        fail("interface", "set interface (to read the appliance MAC) or appliance-mac");
    }

    if (vm.count("backend")) {
        for (const auto &b : vm["backend"].as<std::vector<std::string>>()) {
            auto spec = parse_backend_spec(b, &err);
            if (!spec) fail("backend", err);
            for (const auto &o : c.backends) {
                if (o.ep == spec->ep) fail("backend", spec->ep.str() + " is listed twice");
                // One publisher is one server's cache: counting it for two backends is a typo.
                if (!spec->kv_events.empty() && o.kv_events == spec->kv_events)
                    fail("backend", "kv-events=" + spec->kv_events + " is given for both " +
                                        o.ep.str() + " and " + spec->ep.str());
            }
            if (auto why = backend_unreachable(c, spec->ep)) fail("backend", *why);
            c.backends.push_back(*spec);
        }
    }
    if (c.backends.size() > KVS_MAX_BACKENDS)
        fail("backend", "at most " + std::to_string(KVS_MAX_BACKENDS) + " are supported");

    // The live tunables: the same checks as `kvsteerctl tune`. max-held-bytes comes first:
    // prefix-length is checked against it.
    for (const char *k :
         {"max-held-bytes", "prefix-length", "block-size", "max-blocks", "load-factor",
          "load-slack", "replication", "hot-threshold", "steering-mode", "affinity-ttl",
          "per-request", "session-headers", "session-cap"}) {
        if (auto v = opt_str(vm, k); v && !apply_tunable(c, k, *v, &err)) throw ConfigError{err};
    }
    if (auto a = opt_str(vm, "table-algorithm")) {
        auto alg = parse_table_algorithm(*a);
        if (!alg) fail("table-algorithm", "must be rendezvous or maglev (got '" + *a + "')");
        c.table_algorithm = *alg;
    }

    if (auto k = opt_str(vm, "cookie-key")) {
        c.cookie_key = parse_cookie_key("cookie-key", *k);
    } else {
        std::uint64_t r[2] = {};
        if (getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
            fail("cookie-key", "not set and no random bytes available");
        c.cookie_key = {r[0], r[1]};
        c.cookie_key_random = true;
    }
    if (auto k = opt_str(vm, "cookie-key-previous"))
        c.cookie_key_prev = parse_cookie_key("cookie-key-previous", *k);
    else
        c.cookie_key_prev = c.cookie_key;
    c.cookie_period_s =
        static_cast<std::uint32_t>(get_uint(vm, "cookie-period", 1, 3600, c.cookie_period_s));
    if (auto s = opt_str(vm, "hash-seed")) {
        auto v = parse_u64(*s, &err);
        if (!v) fail("hash-seed", err);
        c.hash_seed = *v;
    }
    c.syn_mss = static_cast<std::uint16_t>(get_uint(vm, "syn-mss", 536, 9000, c.syn_mss));
    c.syn_wscale = static_cast<std::uint8_t>(get_uint(vm, "syn-wscale", 0, 14, c.syn_wscale));
    c.syn_window = static_cast<std::uint16_t>(get_uint(vm, "syn-window", 1, 65535, c.syn_window));
    c.syn_rate_per_prefix = static_cast<std::uint32_t>(
        get_uint(vm, "syn-rate-per-prefix", 0, 10000000, c.syn_rate_per_prefix));
    c.syn_burst_per_prefix = static_cast<std::uint32_t>(
        get_uint(vm, "syn-burst-per-prefix", 1, 10000000, c.syn_burst_per_prefix));
    c.syn_timestamps = get_bool(vm, "syn-timestamps", c.syn_timestamps);

    c.health_interval_ms = static_cast<std::uint32_t>(
        get_uint(vm, "health-interval", 0, 3600000, c.health_interval_ms));
    c.health_timeout_ms =
        static_cast<std::uint32_t>(get_uint(vm, "health-timeout", 1, 600000, c.health_timeout_ms));
    if (c.health_interval_ms && c.health_timeout_ms > c.health_interval_ms)
        fail("health-timeout",
             "must not exceed health-interval (" + std::to_string(c.health_interval_ms) + " ms)");
    c.health_rise = static_cast<std::uint32_t>(get_uint(vm, "health-rise", 1, 100, c.health_rise));
    c.health_fall = static_cast<std::uint32_t>(get_uint(vm, "health-fall", 1, 100, c.health_fall));
    if (auto p = opt_str(vm, "health-path")) {
        if (p->empty() || (*p)[0] != '/' || p->find_first_of(" \r\n") != std::string::npos)
            fail("health-path",
                 "must be an HTTP path starting with '/' without spaces (got '" + *p + "')");
        c.health_path = *p;
    }
    c.health_passive_fails = static_cast<std::uint32_t>(
        get_uint(vm, "health-passive-fails", 0, 1000000, c.health_passive_fails));
    c.telemetry_interval_ms = static_cast<std::uint32_t>(
        get_uint(vm, "telemetry-interval", 0, 3600000, c.telemetry_interval_ms));
    if (auto p = opt_str(vm, "telemetry-path")) {
        if (p->empty() || (*p)[0] != '/' || p->find_first_of(" \r\n") != std::string::npos)
            fail("telemetry-path",
                 "must be an HTTP path starting with '/' without spaces (got '" + *p + "')");
        c.telemetry_path = *p;
    }
    c.queue_cap = static_cast<std::uint32_t>(get_uint(vm, "queue-cap", 0, 1000000, c.queue_cap));
    c.report_interval_ms = static_cast<std::uint32_t>(
        get_uint(vm, "report-interval", 10, 60000, c.report_interval_ms));
    c.affinity_min_hot_ms = static_cast<std::uint32_t>(
        get_uint(vm, "affinity-min-hot", 0, 3600000, c.affinity_min_hot_ms));
    c.affinity_max_entries = static_cast<std::uint32_t>(get_uint(
        vm, "affinity-max-entries", 0, KVS_AFFINITY_SLOTS * 3 / 4, c.affinity_max_entries));
    c.affinity_index_max = static_cast<std::uint32_t>(
        get_uint(vm, "affinity-index-max", 1, 1u << 24, c.affinity_index_max));
    c.table_grace_ms =
        static_cast<std::uint32_t>(get_uint(vm, "table-grace", 0, 10000, c.table_grace_ms));
    // Each publish waits out the grace on the daemon's loop: at or above the report interval,
    // every tick slept that long (the API, health changes and the dataplane's watchdog waited).
    if (c.table_grace_ms >= c.report_interval_ms)
        fail("table-grace", fmt::format("must be below report-interval ({} ms) (got {})",
                                        c.report_interval_ms, c.table_grace_ms));
    // The queue is read from the backends' metrics: without scrapes no backend is ever capped.
    if (c.queue_cap && !c.telemetry_interval_ms)
        fail("queue-cap",
             "needs telemetry-interval above 0 (the queue is read from the "
             "backends' metrics)");

    if (auto b = opt_str(vm, "bpffs")) {
        if (b->empty() || (*b)[0] != '/')
            fail("bpffs", "must be an absolute path (got '" + *b + "')");
        c.bpffs = *b;
    }
    if (auto a = opt_str(vm, "api-socket")) {
        if (a->empty() || a->size() >= 108)
            fail("api-socket", "must be a path shorter than 108 bytes");
        c.api_socket = *a;
    }
    if (auto m = opt_str(vm, "metrics-listen")) {
        if (!m->empty() && !parse_endpoint(*m, &err)) fail("metrics-listen", err);
        c.metrics_listen = *m;
    }
    if (auto l = opt_str(vm, "log-level")) {
        static const char *levels[] = {"trace", "debug", "info", "warn", "error", "off"};
        bool ok = false;
        for (auto *lv : levels) ok |= *l == lv;
        if (!ok)
            fail("log-level", "must be trace, debug, info, warn, error or off (got '" + *l + "')");
        c.log_level = *l;
    }
    build_fleet(vm, c);
    // Several appliances, no etcd to share a key through: each would draw its own, and the owner
    // of a flow would refuse most handshakes another appliance answered (about (n-1)/n of them).
    if (c.fleet.enabled() && !c.fleet_etcd && c.cookie_key_random &&
        std::count_if(c.fleet.macs.begin(), c.fleet.macs.end(),
                      [](const auto &m) { return m.has_value(); }) > 1)
        fail("cookie-key",
             "a fleet without fleet-etcd needs the same cookie-key on every appliance (not set: "
             "each would draw its own)");
    c.fleet_share_hot = get_bool(vm, "fleet-share-hot", c.fleet_share_hot);
    if (vm.count("fleet-share-hot") && !c.fleet_etcd)
        fail("fleet-share-hot", "given without fleet-etcd");
    c.dataplane_stale_ms = static_cast<std::uint32_t>(
        get_uint(vm, "dataplane-stale", 100, 60000, c.dataplane_stale_ms));
    if (auto b = opt_str(vm, "announce-bird-socket")) c.announce_bird_socket = *b;
    if (vm.count("announce-protocol")) {
        if (c.announce_bird_socket.empty())
            fail("announce-protocol", "given without announce-bird-socket");
        c.announce_protocols.clear();
        for (const auto &p : vm["announce-protocol"].as<std::vector<std::string>>()) {
            const bool ok = !p.empty() && p.size() <= 64 &&
                            p.find_first_not_of(
                                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_") == std::string::npos;
            if (!ok)
                fail("announce-protocol",
                     "'" + p + "' is not a BIRD protocol name (letters, digits, _)");
            c.announce_protocols.push_back(p);
        }
    }
    if (!missing_interface.empty()) throw ConfigError{missing_interface, true};
}

// fleet-self, fleet-member, fleet-epoch. Repeatable but not composing: the command line's lists
// replace the file's (epochs are an ordered list).
void build_fleet(const po::variables_map &vm, DaemonConfig &c) {
    std::string err;
    auto self = opt_str(vm, "fleet-self");
    if (!self) {
        for (const char *k : {"fleet-member", "fleet-epoch", "fleet-etcd", "fleet-etcd-prefix",
                              "fleet-ping", "fleet-ping-misses"})
            if (vm.count(k)) fail(k, "given without fleet-self (this appliance's id)");
        return;
    }
    FleetState &f = c.fleet;
    auto id = parse_appliance_id(*self, &err);
    if (!id) fail("fleet-self", err);
    if (vm.count("fleet-member")) {
        for (const auto &m : vm["fleet-member"].as<std::vector<std::string>>()) {
            const auto comma = m.find(',');
            if (comma == std::string::npos)
                fail("fleet-member", "must be ID,MAC (got '" + m + "')");
            auto mid = parse_appliance_id(std::string_view(m).substr(0, comma), &err);
            if (!mid) fail("fleet-member", err);
            if (f.macs[*mid])
                fail("fleet-member", "appliance " + std::to_string(*mid) + " is listed twice");
            auto mac = parse_mac(m.substr(comma + 1), &err);
            if (!mac) fail("fleet-member", "appliance " + std::to_string(*mid) + ": " + err);
            if (!f.set_mac(*mid, *mac, &err)) fail("fleet-member", err);
        }
    }
    if (!f.macs[*id])
        fail("fleet-self", "appliance " + *self + " is not among the fleet-member ids");
    // The XDP program sends on with the interface's MAC and the others take frames from, and send
    // to, the one listed: a typo here lost every flow the router handed another appliance for
    // this one's buckets (no error, no reset). Unknown while the interface is not there yet: the
    // retry checks it.
    if (c.appliance_mac != Mac{} && *f.macs[*id] != c.appliance_mac)
        fail("fleet-member", "appliance " + *self + " (fleet-self) is listed with " +
                                 format_mac(*f.macs[*id]) + " but this appliance's MAC is " +
                                 format_mac(c.appliance_mac) + " (interface or appliance-mac)");
    f.self = *id;
    MemberSet all = 0;
    for (std::uint8_t i = 0; i < KVS_MAX_APPLIANCES; i++)
        if (f.macs[i]) all |= static_cast<MemberSet>(1u << i);
    std::vector<std::string> epochs = {member_set_str(all)};
    if (vm.count("fleet-epoch")) epochs = vm["fleet-epoch"].as<std::vector<std::string>>();
    if (epochs.size() > kMaxFleetEpochs)
        fail("fleet-epoch", "at most " + std::to_string(kMaxFleetEpochs) + " epochs");
    for (const auto &e : epochs) {
        auto set = parse_member_set(e, &err);
        if (!set) fail("fleet-epoch", "'" + e + "': " + err);
        const MemberSet unknown = static_cast<MemberSet>(*set & ~all);
        if (unknown)
            fail("fleet-epoch", "'" + e + "' names " + member_set_str(unknown) +
                                    ", not among the fleet-member ids");
        f.epochs.push_back(*set);
    }
    f.epoch_no = f.epochs.size();
    c.fleet_ping_ms =
        static_cast<std::uint32_t>(get_uint(vm, "fleet-ping", 0, 10000, c.fleet_ping_ms));
    c.fleet_ping_misses =
        static_cast<std::uint32_t>(get_uint(vm, "fleet-ping-misses", 2, 1000, c.fleet_ping_misses));
    if (auto e = opt_str(vm, "fleet-etcd")) {
        std::string_view u = *e;
        if (!u.starts_with("http://"))
            fail("fleet-etcd", "must be http://ADDR:PORT (got '" + *e + "')");
        u.remove_prefix(7);
        if (u.ends_with("/")) u.remove_suffix(1);
        auto ep = parse_endpoint(u, &err);
        if (!ep) fail("fleet-etcd", "'" + *e + "': " + err);
        c.fleet_etcd = *ep;
    }
    if (auto p = opt_str(vm, "fleet-etcd-prefix")) {
        if (!c.fleet_etcd) fail("fleet-etcd-prefix", "given without fleet-etcd");
        if (p->empty() || p->find_first_of(" \t\n") != std::string::npos)
            fail("fleet-etcd-prefix", "must be a non-empty key prefix without spaces");
        c.fleet_etcd_prefix = *p;
    }
}

}  // namespace

const Endpoint *snat_for(const DaemonConfig &c, std::uint8_t family) {
    if (family == KVS_AF_NONE) return nullptr;
    if (c.snat_addr.family == family) return &c.snat_addr;
    if (c.snat2_addr.family == family) return &c.snat2_addr;
    return nullptr;
}

std::optional<std::string> backend_unreachable(const DaemonConfig &c, const Endpoint &ep) {
    if (snat_for(c, ep.family)) return std::nullopt;
    // No NAT46/64: a flow binds only to backends of its own family, from the SNAT address of it.
    return fmt::format("{} is {} but no {} --snat-addr is given", ep.str(), family_name(ep.family),
                       family_name(ep.family));
}

std::vector<std::string> config_warnings(const DaemonConfig &c) {
    std::vector<std::string> w;
    for (const auto &v : c.vips) {
        bool served = false;
        for (const auto &b : c.backends) served |= b.ep.family == v.family;
        if (!served)
            w.push_back(fmt::format(
                "vip {} is {} but no {} backend is configured: its clients are not served until "
                "one is added (kvsteerctl backends add)",
                v.str(), family_name(v.family), family_name(v.family)));
    }
    return w;
}

std::optional<std::string> snat_port_overlap(const DaemonConfig &c, std::string_view local_range,
                                             std::string_view reserved) {
    auto trim = [](std::string_view s) {
        while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
            s.remove_prefix(1);
        while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
        return s;
    };
    // "LO<ws>HI" or "LO-HI" (or "P"): the inclusive range, or nullopt.
    auto range = [&](std::string_view s) -> std::optional<std::pair<unsigned, unsigned>> {
        s = trim(s);
        std::size_t cut = s.find_first_of(" \t-");
        std::string_view a = s.substr(0, cut), b = a;
        if (cut != std::string_view::npos) b = trim(s.substr(cut + 1));
        auto lo = parse_u64(a, nullptr), hi = parse_u64(b, nullptr);
        if (!lo || !hi || *lo > *hi || *hi > 65535) return std::nullopt;
        return std::pair<unsigned, unsigned>(static_cast<unsigned>(*lo),
                                             static_cast<unsigned>(*hi));
    };
    const auto eph = range(local_range);
    if (!eph)
        return fmt::format(
            "cannot read the kernel's ip_local_port_range ('{}'): make sure it "
            "stays out of snat-ports {}-{}",
            trim(local_range), c.snat_port_lo, c.snat_port_hi);
    std::vector<std::pair<unsigned, unsigned>> res;
    for (std::string_view rest = trim(reserved); !rest.empty();) {
        const std::size_t comma = rest.find(',');
        if (auto r = range(rest.substr(0, comma))) res.push_back(*r);
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    const unsigned lo = std::max<unsigned>(eph->first, c.snat_port_lo);
    const unsigned hi = std::min<unsigned>(eph->second, c.snat_port_hi);
    unsigned n = 0;
    for (unsigned p = lo; p <= hi && lo <= hi; ++p) {
        bool kept = false;
        for (const auto &r : res) kept |= p >= r.first && p <= r.second;
        n += !kept;
    }
    if (n == 0) {
        // Reserved, the SNAT range may leave the kernel too few ephemeral ports of its own: the
        // appliance's connections (health checks, scrapes, etcd) then fail to bind a port.
        constexpr unsigned kFewest = 1024;
        unsigned free = 0;
        for (unsigned p = eph->first; p <= eph->second; ++p) {
            bool kept = false;
            for (const auto &r : res) kept |= p >= r.first && p <= r.second;
            free += !kept;
        }
        if (free >= kFewest) return std::nullopt;
        return fmt::format(
            "only {} of the kernel's ephemeral ports {}-{} are not reserved (snat-ports {}-{}): "
            "the appliance's own connections (health checks, scrapes, etcd) may find no port; "
            "widen net.ipv4.ip_local_port_range beside the SNAT range",
            free, eph->first, eph->second, c.snat_port_lo, c.snat_port_hi);
    }
    return fmt::format(
        "snat-ports {}-{} overlaps the kernel's ephemeral ports {}-{} ({} ports not reserved): a "
        "reply to the appliance's own connections (health checks, scrapes) on one of them is "
        "taken for a SNAT flow's and lost; move one range (sysctl net.ipv4.ip_local_port_range, "
        "or reserve the SNAT range in net.ipv4.ip_local_reserved_ports)",
        c.snat_port_lo, c.snat_port_hi, eph->first, eph->second, n);
}

std::optional<std::uint64_t> parse_uint_in(std::string_view key, std::string_view s, UintRange r,
                                           std::string *err) {
    // parse_u64 (std::from_chars on an unsigned type) takes no sign: "-1" and "+1" fail here.
    auto v = parse_u64(s, nullptr);
    if (!v || *v < r.lo || *v > r.hi) {
        if (err)
            *err = fmt::format("{}: must be an integer in {}..{} (got '{}')", key, r.lo, r.hi, s);
        return std::nullopt;
    }
    return v;
}

std::optional<double> parse_number_in(std::string_view key, std::string_view s, NumberRange r,
                                      std::string *err) {
    const std::string str(s);
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(str.c_str(), &end);
    if (str.empty() || errno != 0 || *end != '\0' || !std::isfinite(v) || v < r.lo || v > r.hi) {
        if (err)
            *err = fmt::format("{}: must be a number in {}..{} (got '{}')", key, r.lo, r.hi, s);
        return std::nullopt;
    }
    return v;
}

std::optional<std::string> parse_session_headers(std::string_view s, std::string *err) {
    std::string ignored;
    if (!err) err = &ignored;  // the caller only wants to know whether it parses
    auto tchar = [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) ||
               std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
    };
    // Refused before any parsing when longer than any valid list with generous blanks could be
    // (a 1 MiB API value took seconds of the event loop to be refused for its count).
    constexpr std::size_t kMaxText = 4 * KVS_SESSION_HEADERS_LEN;
    if (s.size() > kMaxText) {
        *err = fmt::format("session-headers: at most {} characters in all (got {})",
                           KVS_SESSION_HEADERS_LEN - 1, s.size());
        return std::nullopt;
    }
    std::string out;
    std::vector<std::string> names;
    std::size_t start = 0;
    while (start <= s.size()) {
        std::size_t end = std::min(s.find(',', start), s.size());
        std::string_view name = s.substr(start, end - start);
        while (!name.empty() && (name.front() == ' ' || name.front() == '\t'))
            name.remove_prefix(1);
        while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
        start = end + 1;
        if (name.empty()) {
            if (s.find_first_not_of(" \t") == std::string_view::npos) break;  // "": off
            *err = fmt::format("session-headers: an empty name (got '{}')", s);
            return std::nullopt;
        }
        if (!std::all_of(name.begin(), name.end(), tchar)) {
            *err =
                fmt::format("session-headers: '{}' is not an HTTP header name (got '{}')", name, s);
            return std::nullopt;
        }
        std::string lower(name);
        for (auto &ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (std::find(names.begin(), names.end(), lower) != names.end()) {
            *err = fmt::format("session-headers: '{}' is listed twice (got '{}')", name, s);
            return std::nullopt;
        }
        if (names.size() == KVS_SESSION_MAX_HEADERS) {
            *err = fmt::format("session-headers: at most {} names (got '{}')",
                               KVS_SESSION_MAX_HEADERS, s);
            return std::nullopt;
        }
        names.push_back(lower);
        out += (out.empty() ? "" : ",") + lower;
    }
    if (out.size() >= KVS_SESSION_HEADERS_LEN) {
        *err = fmt::format("session-headers: at most {} characters in all (got '{}')",
                           KVS_SESSION_HEADERS_LEN - 1, s);
        return std::nullopt;
    }
    return out;
}

bool apply_tunable(DaemonConfig &c, std::string_view name, std::string_view value,
                   std::string *err) {
    namespace lim = tunable_limits;
    auto set_u32 = [&](UintRange r, std::uint32_t &dst) {
        static_assert(lim::kMaxHeldBytes.hi <= UINT32_MAX && lim::kAffinityTtlMs.hi <= UINT32_MAX);
        auto v = parse_uint_in(name, value, r, err);
        if (v) dst = static_cast<std::uint32_t>(*v);
        return v.has_value();
    };
    auto set_num = [&](NumberRange r, double &dst) {
        auto v = parse_number_in(name, value, r, err);
        if (v) dst = *v;
        return v.has_value();
    };
    if (name == "prefix-length") {
        auto v = parse_uint_in(name, value, lim::kPrefixLength, err);
        if (v && *v > c.max_held_bytes) {
            *err = fmt::format("prefix-length: must not exceed max-held-bytes ({}) (got '{}')",
                               c.max_held_bytes, value);
            return false;
        }
        if (v) c.prefix_len = static_cast<std::uint32_t>(*v);
        return v.has_value();
    }
    if (name == "max-held-bytes") {
        auto v = parse_uint_in(name, value, lim::kMaxHeldBytes, err);
        if (v && *v < c.prefix_len) {
            *err = fmt::format("max-held-bytes: must not be below prefix-length ({}) (got '{}')",
                               c.prefix_len, value);
            return false;
        }
        if (v) c.max_held_bytes = static_cast<std::uint32_t>(*v);
        return v.has_value();
    }
    if (name == "block-size") return set_u32(lim::kBlockSize, c.block_size);
    if (name == "max-blocks") return set_u32(lim::kMaxBlocks, c.max_blocks);
    if (name == "load-factor") return set_num(lim::kLoadFactor, c.load_factor);
    if (name == "load-slack") return set_u32(lim::kLoadSlack, c.load_slack);
    if (name == "replication") return set_u32(lim::kReplication, c.replication);
    if (name == "hot-threshold") return set_num(lim::kHotThreshold, c.hot_threshold);
    if (name == "affinity-ttl") return set_u32(lim::kAffinityTtlMs, c.affinity_ttl_ms);
    if (name == "session-cap") return set_u32(lim::kSessionCap, c.session_cap);
    if (name == "session-headers") {
        auto v = parse_session_headers(value, err);
        if (v) c.session_headers = *v;
        return v.has_value();
    }
    if (name == "per-request") {
        if (value == "on" || value == "true" || value == "1") return c.per_request = true, true;
        if (value == "off" || value == "false" || value == "0") return !(c.per_request = false);
        *err = fmt::format("per-request: must be on or off (got '{}')", value);
        return false;
    }
    if (name == "steering-mode") {
        auto m = parse_steer_mode(value);
        if (!m) {
            *err = fmt::format(
                "steering-mode: must be prefix, round-robin or five-tuple (got '{}')", value);
            return false;
        }
        c.steering_mode = *m;
        return true;
    }
    if (name == "table-algorithm" || name == "affinity-min-hot") {  // shown by tune, not tunable
        *err = fmt::format("{}: set at start only (kvsteerd.conf or --{}), not live", name, name);
        return false;
    }
    *err = fmt::format("unknown tunable '{}' ({})", name, kTunableNames);
    return false;
}

std::optional<Mac> interface_mac(const std::string &ifname, std::string *err, bool *missing) {
    if (missing) *missing = false;
    if (ifname.empty() || ifname.find('/') != std::string::npos || ifname.size() > 15) {
        if (err) *err = "'" + ifname + "' is not an interface name";
        return std::nullopt;
    }
    std::ifstream f("/sys/class/net/" + ifname + "/address");
    std::string line;
    if (!f || !std::getline(f, line)) {
        if (err) *err = "no interface '" + ifname + "' in this network namespace";
        if (missing) *missing = true;
        return std::nullopt;
    }
    return parse_mac(line, err);
}

std::optional<std::uint32_t> parse_steer_mode(std::string_view s) {
    if (s == "prefix") return KVS_STEER_PREFIX;
    if (s == "round-robin") return KVS_STEER_ROUND_ROBIN;
    if (s == "five-tuple") return KVS_STEER_FIVE_TUPLE;
    return std::nullopt;
}

const char *steer_mode_name(std::uint32_t mode) {
    switch (mode) {
        case KVS_STEER_PREFIX:
            return "prefix";
        case KVS_STEER_ROUND_ROBIN:
            return "round-robin";
        case KVS_STEER_FIVE_TUPLE:
            return "five-tuple";
        default:
            return "unknown";
    }
}

std::optional<TableAlgorithm> parse_table_algorithm(std::string_view s) {
    if (s == "rendezvous") return TableAlgorithm::Rendezvous;
    if (s == "maglev") return TableAlgorithm::Maglev;
    return std::nullopt;
}

const char *table_algorithm_name(TableAlgorithm a) {
    switch (a) {
        case TableAlgorithm::Rendezvous:
            return "rendezvous";
        case TableAlgorithm::Maglev:
            return "maglev";
    }
    return "unknown";
}

bool valid_kv_events_endpoint(std::string_view ep, std::string *err) {
    auto bad = [&](const std::string &why) {
        if (err) *err = why + " (got '" + std::string(ep) + "')";
        return false;
    };
    if (ep.starts_with("ipc://")) {
        if (ep.size() == 6) return bad("ipc:// needs a path");
        return true;
    }
    if (!ep.starts_with("tcp://"))
        return bad("must be tcp://HOST:PORT or ipc://PATH, the address the server publishes on");
    std::string_view hp = ep.substr(6);
    auto colon = hp.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return bad("must be tcp://HOST:PORT");
    std::string_view host = hp.substr(0, colon), port = hp.substr(colon + 1);
    std::string e;
    auto p = parse_u64(port, &e);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos || !p ||
        *p < 1 || *p > 65535)
        return bad("port must be in 1..65535");
    if (host == "*") return bad("'*' is for the publisher's bind; give the server's address");
    if (host.front() == '[') {
        auto a = host.size() >= 3 && host.back() == ']'
                     ? parse_address(host.substr(1, host.size() - 2), &e)
                     : std::nullopt;
        if (!a || a->family != KVS_AF_INET6) return bad("bad IPv6 address in brackets");
        return true;
    }
    // An IPv4 literal or a DNS name (libzmq resolves it when connecting).
    for (char ch : host)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-')
            return bad("host must be an IPv4 address, [IPv6] or a DNS name");
    return true;
}

namespace {
// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(const std::string &s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    const auto *end = p + s.size();
    while (p < end) {
        const unsigned char c = *p++;
        if (c < 0x80) continue;
        int more;
        std::uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (end - p < more) return false;
        for (; more > 0; --more, ++p) {
            if ((*p & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    }
    return true;
}

// Every text value must be UTF-8: kvsteerd carries names, paths and specs as JSON strings (API
// answers, etcd), and one that is not made a fleet's first etcd write throw at start (an abort,
// restarted by its supervisor every second).
void check_utf8(const po::variables_map &vm) {
    for (const auto &[name, v] : vm) {
        const auto *one = boost::any_cast<std::string>(&v.value());
        const auto *many = boost::any_cast<std::vector<std::string>>(&v.value());
        std::vector<std::string> all = many ? *many : std::vector<std::string>{};
        if (one) all.push_back(*one);
        for (const auto &value : all)
            if (!valid_utf8(value)) fail(name, "the value is not valid UTF-8");
    }
}

// Why no backend can have this address (nullptr: it can). An IPv6 link-local address names no
// interface here (kvsteerd's checks and scrapes could never connect: the backend stayed down);
// unspecified and multicast addresses are no server's.
const char *unusable_backend_address(const Endpoint &ep) {
    unsigned char a[16];  // network order
    std::memcpy(a, ep.addr.data(), sizeof a);
    if (ep.family == KVS_AF_INET) {
        if (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0)
            return "0.0.0.0 is no backend's address";
        if ((a[0] & 0xf0) == 0xe0 || (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255))
            return "a multicast or broadcast address is no backend's address";
        return nullptr;
    }
    if (ep.family != KVS_AF_INET6) return nullptr;
    bool zero = true;
    for (auto x : a) zero = zero && x == 0;
    if (zero) return ":: is no backend's address";
    if (a[0] == 0xff) return "a multicast address is no backend's address";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return "an IPv6 link-local address (fe80::/10) cannot be a backend: it names no interface, "
               "so kvsteerd's health checks and scrapes could never reach it (use a global or "
               "unique-local address)";
    // ::ffff:a.b.c.d is an IPv4 server: the checks reach it over IPv4 (a dual-stack socket),
    // while the dataplane sent it IPv6 packets no host takes (no NAT46 here): up, and every
    // flow's bind timing out.
    bool mapped = a[10] == 0xff && a[11] == 0xff;
    for (int i = 0; i < 10; ++i) mapped = mapped && a[i] == 0;
    if (mapped)
        return "an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 server's: give its IPv4 "
               "address";
    return nullptr;
}
}  // namespace

std::optional<BackendSpec> parse_backend_spec(std::string_view s, std::string *err) {
    BackendSpec b;
    std::string str(s);
    std::size_t comma = str.find(',');
    std::string e;
    auto ep = parse_endpoint(str.substr(0, comma), &e);
    if (!ep) {
        if (err) *err = "'" + str + "': " + e;
        return std::nullopt;
    }
    b.ep = *ep;
    if (const char *why = unusable_backend_address(b.ep)) {
        if (err) *err = "'" + str + "': " + why;
        return std::nullopt;
    }
    while (comma != std::string::npos) {
        std::size_t next = str.find(',', comma + 1);
        std::string kv =
            str.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        comma = next;
        auto eq = kv.find('=');
        std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
        auto bad = [&](const std::string &why) {
            if (err) *err = "'" + str + "': " + why;
            return std::nullopt;
        };
        if (eq == std::string::npos) return bad("option '" + kv + "' is not KEY=VALUE");
        // Once each (a second one silently won: weight=0 then weight=1 put it in rotation).
        if (str.find("," + k + "=") != str.rfind("," + k + "="))
            return bad("option '" + k + "' given twice");
        if (k == "weight") {
            auto w = parse_u64(v, &e);
            if (!w || *w > 65535) return bad("weight must be in 0..65535 (got '" + v + "')");
            b.weight = static_cast<std::uint16_t>(*w);
        } else if (k == "model") {
            if (v.empty()) return bad("model is empty");
            b.model = v;
        } else if (k == "mac") {
            auto m = parse_mac(v, &e);
            if (!m) return bad(e);
            b.mac = *m;
        } else if (k == "max_load") {
            auto m = parse_u64(v, &e);
            if (!m || *m > 0xffffffffu)
                return bad("max_load must be in 0..4294967295 (got '" + v + "')");
            b.max_load = static_cast<std::uint32_t>(*m);
        } else if (k == "kv-events") {
            if (!valid_kv_events_endpoint(v, &e)) return bad("kv-events: " + e);
            b.kv_events = v;
        } else {
            return bad("unknown option '" + k + "' (weight, model, mac, max_load, kv-events)");
        }
    }
    return b;
}

std::string backend_spec_str(const BackendSpec &b) {
    std::string s = b.ep.str() + ",weight=" + std::to_string(b.weight);
    if (!b.model.empty()) s += ",model=" + b.model;
    if (b.mac) s += ",mac=" + format_mac(*b.mac);
    if (b.max_load) s += ",max_load=" + std::to_string(b.max_load);
    if (!b.kv_events.empty()) s += ",kv-events=" + b.kv_events;
    return s;
}

namespace {

// Both forms of parse_daemon_config: CONFIG_TEXT, when given, stands for the --config file.
ParseResult parse_config(int argc, const char *const argv[], std::istream *config_text) {
    ParseResult r;
    // Built once: it does not depend on the input (and building it is most of a parse's cost).
    static const po::options_description desc = make_options();
    try {
        po::variables_map vm;
        po::store(po::parse_command_line(argc, argv, desc), vm);
        if (vm.count("help")) {
            std::ostringstream os;
            os << "Usage: kvsteerd [--config FILE] [OPTIONS]\n\n" << desc;
            r.outcome = ParseOutcome::Help;
            r.message = os.str();
            return r;
        }
        if (config_text) {
            po::store(po::parse_config_file(*config_text, desc, false), vm);
        } else if (vm.count("config")) {
            auto path = vm["config"].as<std::string>();
            std::ifstream f(path);
            if (!f) {
                r.message = "config: cannot open '" + path + "': " + std::strerror(errno);
                return r;
            }
            po::store(po::parse_config_file(f, desc, false), vm);
        }
        po::notify(vm);
        check_utf8(vm);
        build(vm, r.cfg);
        r.outcome = ParseOutcome::Ok;
    } catch (const ConfigError &e) {
        r.message = e.msg;
        r.retryable = e.retryable;
    } catch (const po::error &e) {
        r.message =
            kvsteer::error_text(e);  // never e.what(): see po_error.h (found by fuzz_config)
    }
    return r;
}

}  // namespace

ParseResult parse_daemon_config(int argc, const char *const argv[]) {
    return parse_config(argc, argv, nullptr);
}

ParseResult parse_daemon_config(int argc, const char *const argv[], std::istream &config_text) {
    return parse_config(argc, argv, &config_text);
}

}  // namespace kvsteer::control
