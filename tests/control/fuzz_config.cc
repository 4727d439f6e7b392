// libFuzzer target: what kvsteerd parses from its operator: the config file (Boost's KEY = VALUE
// syntax, parse_daemon_config with the text in memory), `kvsteerctl tune NAME VALUE`
// (apply_tunable), backend specs and the ADDR:PORT / [ADDR]:PORT, MAC and kv-events forms.
//
// The input is a config file. Every KEY = VALUE line of it is also tried as a `tune` on a running
// configuration, and its VALUE alone as the form KEY takes (backend spec, endpoint, address, MAC,
// 64-bit number, kv-events endpoint).
// Besides memory safety (ASan/UBSan), it checks the promises:
//  - no exception escapes; a parse is Ok with every value inside its documented range (the
//    ranges of the help text and config.h's tunable_limits; at most one SNAT address per family,
//    the IPv4 one first, and one of every VIP's and backend's family), or an Error with a
//    non-empty, one-line message (never Help: that is the command line's);
//  - an Ok configuration's tunables, written back as text, apply to it unchanged, and the command
//    line still wins over the file;
//  - a tune either changes the named tunable alone, to a value within its range (prefix-length
//    never above max-held-bytes), or fails with one line naming it and the configuration
//    unchanged;
//  - what a backend spec, endpoint or MAC parses to reads back the same from its printed form;
//    a failure says why on one line.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kvsteer/control/config.h"

#include "../fuzz_help.h"

namespace {

using namespace kvsteer::control;

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool one_line(const std::string &s) {
    return !s.empty() && s.find('\n') == std::string::npos;
}

template <typename T, typename R>
bool in(T v, R r) {
    return v >= r.lo && v <= r.hi;
}

bool valid_endpoint(const Endpoint &ep) {
    return (ep.family == KVS_AF_INET || ep.family == KVS_AF_INET6) && ep.port() >= 1;
}

// Every tunable within its limits, and prefix-length within max-held-bytes.
void check_tunables(const DaemonConfig &c) {
    namespace lim = tunable_limits;
    check(in(c.prefix_len, lim::kPrefixLength) && in(c.max_held_bytes, lim::kMaxHeldBytes));
    check(c.prefix_len <= c.max_held_bytes);
    check(in(c.block_size, lim::kBlockSize) && in(c.max_blocks, lim::kMaxBlocks));
    check(in(c.load_factor, lim::kLoadFactor) && in(c.load_slack, lim::kLoadSlack));
    check(in(c.replication, lim::kReplication) && in(c.hot_threshold, lim::kHotThreshold));
    check(in(c.affinity_ttl_ms, lim::kAffinityTtlMs));
    check(parse_steer_mode(steer_mode_name(c.steering_mode)) == c.steering_mode);
    check(in(c.session_cap, lim::kSessionCap));
    std::string err;  // the canonical list reads back as itself
    check(parse_session_headers(c.session_headers, &err) == c.session_headers);
}

bool http_path(const std::string &p) {
    return !p.empty() && p[0] == '/' && p.find_first_of(" \r\n") == std::string::npos;
}

// An Ok configuration: every value as documented (kvsteerd --help, the example config).
void check_config(const DaemonConfig &c) {
    check(!c.vips.empty() && c.vips.size() <= KVS_MAX_VIPS);
    for (const auto &v : c.vips) check(valid_endpoint(v));
    // One SNAT address per family: snat_addr the IPv4 one when there are two, snat2_addr the
    // other family's or none; every VIP and backend has one of its own family (no NAT46).
    check(c.snat_addr.family == KVS_AF_INET || c.snat_addr.family == KVS_AF_INET6);
    check(c.snat2_addr.family == KVS_AF_NONE ||
          (c.snat_addr.family == KVS_AF_INET && c.snat2_addr.family == KVS_AF_INET6));
    check(c.snat2_addr.family != KVS_AF_NONE || c.snat2_addr == Endpoint{});
    check(c.snat_addr.port_be == 0 && c.snat2_addr.port_be == 0);
    for (const auto &v : c.vips) check(snat_for(c, v.family) != nullptr);
    for (const auto &b : c.backends) check(!backend_unreachable(c, b.ep));
    for (const auto &w : config_warnings(c)) check(one_line(w));
    check(c.workers >= 1 && c.workers <= KVS_MAX_WORKERS);
    check(c.snat_port_lo >= 1 && c.snat_port_lo <= c.snat_port_hi);
    check(static_cast<unsigned>(c.snat_port_hi - c.snat_port_lo + 1) >= c.workers);
    check(c.backends.size() <= KVS_MAX_BACKENDS);
    for (std::size_t i = 0; i < c.backends.size(); i++) {
        const auto &b = c.backends[i];
        check(valid_endpoint(b.ep));
        check(b.kv_events.empty() || valid_kv_events_endpoint(b.kv_events, nullptr));
        for (std::size_t j = 0; j < i; j++) {
            check(!(c.backends[j].ep == b.ep));
            check(b.kv_events.empty() || c.backends[j].kv_events != b.kv_events);
        }
    }
    check_tunables(c);
    check(parse_table_algorithm(table_algorithm_name(c.table_algorithm)) == c.table_algorithm);
    check(c.cookie_period_s >= 1 && c.cookie_period_s <= 3600);
    check(c.syn_mss >= 536 && c.syn_mss <= 9000 && c.syn_wscale <= 14 && c.syn_window >= 1);
    check(c.syn_rate_per_prefix <= 10000000);
    check(c.syn_burst_per_prefix >= 1 && c.syn_burst_per_prefix <= 10000000);
    check(c.health_interval_ms <= 3600000);
    check(c.health_timeout_ms >= 1 && c.health_timeout_ms <= 600000);
    check(c.health_interval_ms == 0 || c.health_timeout_ms <= c.health_interval_ms);
    check(c.health_rise >= 1 && c.health_rise <= 100 && c.health_fall >= 1 && c.health_fall <= 100);
    check(http_path(c.health_path) && http_path(c.telemetry_path));
    check(c.health_passive_fails <= 1000000 && c.telemetry_interval_ms <= 3600000);
    check(c.queue_cap <= 1000000);
    check(c.report_interval_ms >= 10 && c.report_interval_ms <= 60000);
    check(c.affinity_min_hot_ms <= 3600000);
    check(c.affinity_max_entries <= KVS_AFFINITY_SLOTS * 3 / 4);
    check(c.affinity_index_max >= 1 && c.affinity_index_max <= (1u << 24));
    check(c.table_grace_ms <= 10000);
    check(!c.bpffs.empty() && c.bpffs[0] == '/');
    check(!c.api_socket.empty() && c.api_socket.size() < 108);
    check(c.metrics_listen.empty() || parse_endpoint(c.metrics_listen, nullptr));
    check(c.log_level == "trace" || c.log_level == "debug" || c.log_level == "info" ||
          c.log_level == "warn" || c.log_level == "error" || c.log_level == "off");
}

// The tunables of c as `tune` values (what `kvsteerctl get` would show).
std::vector<std::pair<const char *, std::string>> tunables_text(const DaemonConfig &c) {
    return {{"max-held-bytes", std::to_string(c.max_held_bytes)},
            {"prefix-length", std::to_string(c.prefix_len)},
            {"block-size", std::to_string(c.block_size)},
            {"max-blocks", std::to_string(c.max_blocks)},
            {"load-factor", fmt::format("{}", c.load_factor)},
            {"load-slack", std::to_string(c.load_slack)},
            {"replication", std::to_string(c.replication)},
            {"hot-threshold", fmt::format("{}", c.hot_threshold)},
            {"steering-mode", steer_mode_name(c.steering_mode)},
            {"affinity-ttl", std::to_string(c.affinity_ttl_ms)},
            {"per-request", c.per_request ? "on" : "off"},
            {"session-headers", c.session_headers},
            {"session-cap", std::to_string(c.session_cap)}};
}

constexpr std::string_view kTunables[] = {
    "max-held-bytes", "prefix-length",   "block-size",    "max-blocks",    "load-factor",
    "load-slack",     "replication",     "hot-threshold", "steering-mode", "affinity-ttl",
    "per-request",    "session-headers", "session-cap"};

bool is_tunable(std::string_view name) {
    for (auto n : kTunables)
        if (n == name) return true;
    return false;
}

// The tunables alone (the members named as DaemonConfig's), cheaper to copy and compare.
struct Tunables {
    std::uint32_t max_held_bytes, prefix_len, block_size, max_blocks, load_slack, replication,
        steering_mode, affinity_ttl_ms, session_cap;
    double load_factor, hot_threshold;
    bool per_request;
    std::string session_headers;
    bool operator==(const Tunables &) const = default;
};

// Copies tunable NAME from src to dst (DaemonConfig or Tunables); false if NAME is no tunable.
template <typename From, typename To>
bool copy_tunable(std::string_view name, const From &src, To &dst) {
    if (name == "max-held-bytes") return dst.max_held_bytes = src.max_held_bytes, true;
    if (name == "prefix-length") return dst.prefix_len = src.prefix_len, true;
    if (name == "block-size") return dst.block_size = src.block_size, true;
    if (name == "max-blocks") return dst.max_blocks = src.max_blocks, true;
    if (name == "load-factor") return dst.load_factor = src.load_factor, true;
    if (name == "load-slack") return dst.load_slack = src.load_slack, true;
    if (name == "replication") return dst.replication = src.replication, true;
    if (name == "hot-threshold") return dst.hot_threshold = src.hot_threshold, true;
    if (name == "steering-mode") return dst.steering_mode = src.steering_mode, true;
    if (name == "affinity-ttl") return dst.affinity_ttl_ms = src.affinity_ttl_ms, true;
    if (name == "per-request") return dst.per_request = src.per_request, true;
    if (name == "session-headers") return dst.session_headers = src.session_headers, true;
    if (name == "session-cap") return dst.session_cap = src.session_cap, true;
    return false;
}

Tunables tunables(const DaemonConfig &c) {
    Tunables t{};
    for (auto name : kTunables) copy_tunable(name, c, t);
    return t;
}

// `kvsteerctl tune NAME VALUE` on the running configuration t. That no other member changes is
// checked once, after the last tune (run()).
void check_tune(DaemonConfig &t, std::string_view name, std::string_view value) {
    const Tunables before = tunables(t);
    std::string err;
    if (apply_tunable(t, name, value, &err)) {
        Tunables expect = before;
        check(copy_tunable(name, t, expect));  // only a tunable applies ...
        check(expect == tunables(t));          // ... and only the one named changes
        check_tunables(t);
    } else {
        check(tunables(t) == before && one_line(err));
        check(err.starts_with(std::string(name) + ": ") ||
              (!is_tunable(name) && err.starts_with("unknown tunable")));
    }
}

// VALUE of KEY as the smaller form that KEY takes (each parser's own promises: what parses reads
// back the same from its printed form; a failure says why on one line).
void check_value(std::string_view key, std::string_view v) {
    std::string err;
    if (key == "backend") {
        if (auto b = parse_backend_spec(v, &err)) {
            check(valid_endpoint(b->ep) && parse_endpoint(b->ep.str(), nullptr) == b->ep);
            check(b->kv_events.empty() || valid_kv_events_endpoint(b->kv_events, nullptr));
            check(b->mac.has_value() == (v.find(",mac=") != std::string_view::npos));
        } else {
            check(one_line(err) && err[0] == '\'');
        }
    } else if (key == "vip" || key == "metrics-listen" || key == "snat-addr") {
        auto ep = key == "snat-addr" ? parse_address(v, &err) : parse_endpoint(v, &err);
        if (ep) {
            check(ep->family == KVS_AF_INET || ep->family == KVS_AF_INET6);
            auto a = parse_address(ep->addr_str(), nullptr);
            check(a && a->addr == ep->addr && a->family == ep->family);
            if (key != "snat-addr") check(parse_endpoint(ep->str(), nullptr) == *ep);
        } else {
            check(one_line(err));
        }
    } else if (key == "appliance-mac") {
        if (auto m = parse_mac(v, &err))
            check(parse_mac(format_mac(*m), nullptr) == *m);
        else
            check(one_line(err));
    } else if (key == "hash-seed") {
        if (auto n = parse_u64(v, &err))
            check(parse_u64(std::to_string(*n), nullptr) == *n);
        else
            check(one_line(err));
    } else if (key == "kv-events") {  // the backend option on its own
        if (!valid_kv_events_endpoint(v, &err)) check(one_line(err));
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

void run(std::string_view text) {
    const char *argv0[] = {"kvsteerd"};
    std::istringstream in(std::string{text});
    const ParseResult r = parse_daemon_config(1, argv0, in);
    check(r.outcome != ParseOutcome::Help);
    if (r.outcome == ParseOutcome::Ok) {
        check_config(r.cfg);
        // Its tunables, written back as text, apply to it unchanged.
        DaemonConfig again = r.cfg;
        std::string err;
        for (const auto &[name, value] : tunables_text(r.cfg))
            check(apply_tunable(again, name, value, &err));
        check(again == r.cfg);
        // The command line wins over the file.
        const char *level = r.cfg.log_level == "debug" ? "error" : "debug";
        const char *argv[] = {"kvsteerd", "--log-level", level};
        std::istringstream in2(std::string{text});
        ParseResult o = parse_daemon_config(3, argv, in2);
        check(o.outcome == ParseOutcome::Ok && o.cfg.log_level == level);
        o.cfg.log_level = r.cfg.log_level;
        if (r.cfg.cookie_key_random) {  // each parse draws its own key
            check(o.cfg.cookie_key_random);
            o.cfg.cookie_key = r.cfg.cookie_key;
            o.cfg.cookie_key_prev = r.cfg.cookie_key_prev;
        }
        check(o.cfg == r.cfg);
    } else {
        check(one_line(r.message));
    }

    // Each KEY = VALUE line as a tune on a running configuration (with the parsed tunables when the
    // text parsed), and its VALUE as the form KEY takes.
    DaemonConfig t;
    if (r.outcome == ParseOutcome::Ok)
        for (auto name : kTunables) copy_tunable(name, r.cfg, t);
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
        check_tune(t, key, value);
        check_value(key, value);
    }
    // No tune changed anything but tunables.
    DaemonConfig rest;
    for (auto name : kTunables) copy_tunable(name, t, rest);
    check(rest == t);
}

}  // namespace

KVS_FUZZ_HELP(
    "kvsteerd's operator input: the config file, `kvsteerctl tune NAME VALUE`, backend "
    "specs,\naddresses, MACs and kv-events forms (ASan + UBSan; the parser's promises checked).")

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    try {
        run({reinterpret_cast<const char *>(data), size});
    } catch (...) {
        __builtin_trap();  // every entry point promises not to throw
    }
    return 0;
}
