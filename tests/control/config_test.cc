// kvsteerd configuration: every key parsed, and bad input gives one error naming the key.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "kvsteer/control/config.h"

using namespace kvsteer::control;

namespace {

ParseResult parse(std::vector<std::string> args) {
    std::vector<const char *> argv{"kvsteerd"};
    for (auto &a : args) argv.push_back(a.c_str());
    return parse_daemon_config(static_cast<int>(argv.size()), argv.data());
}

std::vector<std::string> minimal() {
    return {"--vip",    "10.0.0.1:80",     "--snat-addr",
            "10.0.1.1", "--appliance-mac", "02:00:00:00:00:01"};
}

std::vector<std::string> with(std::vector<std::string> extra) {
    auto a = minimal();
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

std::string temp_file(const std::string &content) {
    char path[] = "/tmp/kvsctl-conf-XXXXXX";
    int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
    return path;
}

// The example config, with loopback for the eth0 it names (every namespace has one).
std::string example_text() {
    std::ifstream f(KVS_EXAMPLE_CONF);
    std::string text((std::istreambuf_iterator<char>(f)), {});
    return std::regex_replace(text, std::regex("\ninterface = eth0"), "\ninterface = lo");
}

}  // namespace

TEST(Config, MinimalDefaults) {
    auto r = parse(minimal());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    const auto &c = r.cfg;
    ASSERT_EQ(c.vips.size(), 1u);
    EXPECT_EQ(c.vips[0].str(), "10.0.0.1:80");
    EXPECT_EQ(c.vips[0].port_be, htons(80));
    EXPECT_EQ(c.snat_addr.addr_str(), "10.0.1.1");
    EXPECT_EQ(format_mac(c.appliance_mac), "02:00:00:00:00:01");
    EXPECT_EQ(c.prefix_len, 256u);
    EXPECT_EQ(c.steering_mode, static_cast<std::uint32_t>(KVS_STEER_PREFIX));
    EXPECT_EQ(c.table_algorithm, TableAlgorithm::Rendezvous);
    EXPECT_EQ(c.affinity_min_hot_ms, 0u);
    EXPECT_TRUE(c.cookie_key_random);
    EXPECT_EQ(c.cookie_key, c.cookie_key_prev);
    EXPECT_EQ(c.bpffs, "/sys/fs/bpf/kvsteer");
    EXPECT_EQ(c.api_socket, "/run/kvsteer/kvsteerd.sock");
}

TEST(Config, EveryKeyFromFileAndCommandLineWins) {
    std::string path = temp_file(R"(# comment
vip = 10.0.0.1:80
vip = [2001:db8::1]:443
snat-addr = 10.0.1.1
snat-addr = 2001:db8::2
snat-ports = 40000-40999
workers = 2
appliance-mac = 02:aa:bb:cc:dd:ee
backend = 10.0.2.1:8000,weight=3,model=llama,mac=02:00:00:00:00:10,max_load=64
backend = 10.0.2.2:8000
prefix-length = 512
block-size = 256
max-blocks = 12
load-factor = 1.5
replication = 3
hot-threshold = 7.5
steering-mode = five-tuple
table-algorithm = maglev
cookie-key = 000102030405060708090a0b0c0d0e0f
cookie-key-previous = 0x0f0e0d0c0b0a09080706050403020100
cookie-period = 32
hash-seed = 0x1234
max-held-bytes = 9000
syn-mss = 1400
syn-wscale = 9
syn-window = 29200
syn-timestamps = false
health-interval = 2000
health-timeout = 300
health-rise = 4
health-fall = 5
health-path = /ready
health-passive-fails = 3
telemetry-interval = 500
telemetry-path = /m
report-interval = 100
queue-cap = 4
affinity-ttl = 60000
affinity-min-hot = 2500
affinity-max-entries = 1000
affinity-index-max = 5000
table-grace = 5
bpffs = /tmp/x/kvsteer
api-socket = /tmp/x.sock
metrics-listen = 127.0.0.1:9999
log-level = debug
)");
    auto r = parse({"--config", path, "--replication", "4", "--backend", "10.0.2.3:8000"});
    unlink(path.c_str());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    const auto &c = r.cfg;
    ASSERT_EQ(c.vips.size(), 2u);
    EXPECT_EQ(c.vips[1].str(), "[2001:db8::1]:443");
    EXPECT_EQ(c.vips[1].family, KVS_AF_INET6);
    EXPECT_EQ(c.snat_addr.addr_str(), "10.0.1.1");
    EXPECT_EQ(c.snat2_addr.addr_str(), "2001:db8::2");
    EXPECT_EQ(c.snat_port_lo, 40000);
    EXPECT_EQ(c.snat_port_hi, 40999);
    EXPECT_EQ(c.workers, 2);
    ASSERT_EQ(c.backends.size(), 3u);  // composing: command line + file
    const auto *b0 = &c.backends[0];
    for (const auto &b : c.backends)
        if (b.ep.str() == "10.0.2.1:8000") b0 = &b;
    EXPECT_EQ(b0->weight, 3);
    EXPECT_EQ(b0->model, "llama");
    ASSERT_TRUE(b0->mac);
    EXPECT_EQ(format_mac(*b0->mac), "02:00:00:00:00:10");
    EXPECT_EQ(b0->max_load, 64u);
    EXPECT_EQ(c.prefix_len, 512u);
    EXPECT_EQ(c.block_size, 256u);
    EXPECT_EQ(c.max_blocks, 12u);
    EXPECT_DOUBLE_EQ(c.load_factor, 1.5);
    EXPECT_EQ(c.replication, 4u);  // command line wins
    EXPECT_DOUBLE_EQ(c.hot_threshold, 7.5);
    EXPECT_EQ(c.steering_mode, static_cast<std::uint32_t>(KVS_STEER_FIVE_TUPLE));
    EXPECT_EQ(c.table_algorithm, TableAlgorithm::Maglev);
    EXPECT_FALSE(c.cookie_key_random);
    EXPECT_EQ(c.cookie_key[0],
              0x0706050403020100ull);  // little-endian words, as SipHash reads its key
    EXPECT_EQ(c.cookie_key[1], 0x0f0e0d0c0b0a0908ull);
    EXPECT_EQ(c.cookie_key_prev[0], 0x08090a0b0c0d0e0full);
    EXPECT_EQ(c.cookie_period_s, 32u);
    EXPECT_EQ(c.hash_seed, 0x1234u);
    EXPECT_EQ(c.max_held_bytes, 9000u);
    EXPECT_EQ(c.syn_mss, 1400);
    EXPECT_EQ(c.syn_wscale, 9);
    EXPECT_EQ(c.syn_window, 29200);
    EXPECT_FALSE(c.syn_timestamps);
    EXPECT_EQ(c.health_interval_ms, 2000u);
    EXPECT_EQ(c.health_timeout_ms, 300u);
    EXPECT_EQ(c.health_rise, 4u);
    EXPECT_EQ(c.health_fall, 5u);
    EXPECT_EQ(c.health_path, "/ready");
    EXPECT_EQ(c.health_passive_fails, 3u);
    EXPECT_EQ(c.telemetry_interval_ms, 500u);
    EXPECT_EQ(c.telemetry_path, "/m");
    EXPECT_EQ(c.report_interval_ms, 100u);
    EXPECT_EQ(c.queue_cap, 4u);
    EXPECT_EQ(c.affinity_ttl_ms, 60000u);
    EXPECT_EQ(c.affinity_min_hot_ms, 2500u);
    EXPECT_EQ(c.affinity_max_entries, 1000u);
    EXPECT_EQ(c.affinity_index_max, 5000u);
    EXPECT_EQ(c.table_grace_ms, 5u);
    EXPECT_EQ(c.bpffs, "/tmp/x/kvsteer");
    EXPECT_EQ(c.api_socket, "/tmp/x.sock");
    EXPECT_EQ(c.metrics_listen, "127.0.0.1:9999");
    EXPECT_EQ(c.log_level, "debug");
}

// Dual stack: one SNAT address per family, the IPv4 one in snat_addr whatever the order given,
// as kvs_config holds them; a single IPv6 one in snat_addr.
TEST(Config, DualStackSnatAddresses) {
    const std::vector<std::string> base = {
        "--vip", "10.0.0.1:80", "--vip", "[fd00::1]:8000", "--appliance-mac", "02:00:00:00:00:01"};
    auto args = [&](std::vector<std::string> extra) {
        auto a = base;
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    for (auto order : {std::vector<std::string>{"10.0.1.1", "fd02::1"},
                       std::vector<std::string>{"fd02::1", "10.0.1.1"}}) {
        auto r = parse(args({"--snat-addr", order[0], "--snat-addr", order[1], "--backend",
                             "[fd02::7]:8000", "--backend", "10.0.2.7:8000"}));
        ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
        EXPECT_EQ(r.cfg.snat_addr.family, KVS_AF_INET);
        EXPECT_EQ(r.cfg.snat_addr.addr_str(), "10.0.1.1");
        EXPECT_EQ(r.cfg.snat2_addr.family, KVS_AF_INET6);
        EXPECT_EQ(r.cfg.snat2_addr.addr_str(), "fd02::1");
        EXPECT_EQ(snat_for(r.cfg, KVS_AF_INET6), &r.cfg.snat2_addr);
        EXPECT_EQ(snat_for(r.cfg, KVS_AF_INET), &r.cfg.snat_addr);
        EXPECT_EQ(r.cfg.backends[0].ep.str(), "[fd02::7]:8000");
        EXPECT_TRUE(config_warnings(r.cfg).empty());
    }
    // IPv6 only.
    auto r = parse({"--vip", "[fd00::1]:8000", "--snat-addr", "fd02::1", "--appliance-mac",
                    "02:00:00:00:00:01", "--backend", "[fd02::7]:8000"});
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.snat_addr.addr_str(), "fd02::1");
    EXPECT_EQ(r.cfg.snat2_addr.family, KVS_AF_NONE);
    EXPECT_EQ(snat_for(r.cfg, KVS_AF_INET), nullptr);

    // In the file, one line per family; the command line's addresses replace the file's.
    std::string path = temp_file(
        "vip = 10.0.0.1:80\nsnat-addr = 10.0.1.1\nsnat-addr = fd02::1\n"
        "appliance-mac = 02:00:00:00:00:01\n");
    r = parse({"--config", path});
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.snat2_addr.addr_str(), "fd02::1");
    r = parse({"--config", path, "--snat-addr", "10.0.9.9"});
    unlink(path.c_str());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.snat_addr.addr_str(), "10.0.9.9");
    EXPECT_EQ(r.cfg.snat2_addr.family, KVS_AF_NONE);
}

// A value that is not UTF-8 (a Latin-1 model name from an editor, a byte in a socket path) is the
// configuration's error, named: with fleet-etcd it made kvsteerd's first etcd write throw at start
// (an abort, restarted every second). In the file and on the command line alike.
TEST(Config, ValuesMustBeUtf8) {
    auto r = parse(with({"--backend", "10.0.0.5:8000,model=mod\xe8le"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "backend: the value is not valid UTF-8");
    std::istringstream text("backend = 10.0.0.5:8000,kv-events=ipc:///run/vllm\xff\n");
    const std::vector<std::string> args = minimal();
    std::vector<const char *> argv{"kvsteerd"};
    for (auto &a : args) argv.push_back(a.c_str());
    r = parse_daemon_config(static_cast<int>(argv.size()), argv.data(), text);
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "backend: the value is not valid UTF-8");
    // Overlong forms and surrogates are not UTF-8 either; real UTF-8 is taken.
    for (const char *bad : {"model=\xc0\xaf", "model=\xed\xa0\x80", "model=\xf4\x90\x80\x80"}) {
        r = parse(with({"--backend", std::string("10.0.0.5:8000,") + bad}));
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << bad;
    }
    r = parse(
        with({"--backend", "10.0.0.5:8000,model=mod\xc3\xa8le-\xe6\xa8\xa1\xf0\x9f\x98\x80"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
}

TEST(Config, SnatAddressPerFamilyErrors) {
    auto r = parse(with({"--snat-addr", "10.0.1.2"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message,
              "snat-addr: two IPv4 addresses (10.0.1.1 and 10.0.1.2): give at most one per family");
    r = parse(with({"--snat-addr", "fd02::1", "--snat-addr", "fd02::2"}));
    EXPECT_EQ(r.message,
              "snat-addr: two IPv6 addresses (fd02::1 and fd02::2): give at most one per family");
    r = parse(with({"--vip", "[fd00::1]:8000"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "vip: [fd00::1]:8000 is IPv6 but no IPv6 --snat-addr is given");
    r = parse(
        {"--vip", "10.0.0.1:80", "--snat-addr", "fd02::1", "--appliance-mac", "02:00:00:00:00:01"});
    EXPECT_EQ(r.message, "vip: 10.0.0.1:80 is IPv4 but no IPv4 --snat-addr is given");
    r = parse(with({"--backend", "[fd02::7]:8000,weight=2"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "backend: [fd02::7]:8000 is IPv6 but no IPv6 --snat-addr is given");
    r = parse(with({"--snat-addr", "fd02::1", "--snat-addr", "nope"}));
    EXPECT_EQ(r.message, "snat-addr: 'nope' is not an IPv4 or IPv6 address");
}

// A VIP family without a backend of it is a warning only: backends come through the API.
TEST(Config, VipFamilyWithoutBackendsIsAWarning) {
    auto r = parse(
        with({"--vip", "[fd00::1]:8000", "--snat-addr", "fd02::1", "--backend", "10.0.2.7:8000"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    auto w = config_warnings(r.cfg);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0],
              "vip [fd00::1]:8000 is IPv6 but no IPv6 backend is configured: its clients are not "
              "served until one is added (kvsteerctl backends add)");
    EXPECT_EQ(config_warnings(parse(minimal()).cfg).size(), 1u) << "no backend at all";
    r = parse(with({"--backend", "10.0.2.7:8000"}));
    EXPECT_TRUE(config_warnings(r.cfg).empty());
    EXPECT_EQ(backend_unreachable(r.cfg, *parse_endpoint("[fd02::9]:80", nullptr)),
              "[fd02::9]:80 is IPv6 but no IPv6 --snat-addr is given");
    EXPECT_EQ(backend_unreachable(r.cfg, *parse_endpoint("10.0.2.9:80", nullptr)), std::nullopt);
}

// Every address the operator gives takes IPv6 as [ADDR]:PORT and reads back in that form.
TEST(Config, Ipv6EverywhereAnAddressIsGiven) {
    auto r = parse({"--vip", "[fd00::1]:8000", "--snat-addr", "fd02::1", "--appliance-mac",
                    "02:00:00:00:00:01", "--backend",
                    "[fd02::7]:8000,kv-events=tcp://[fd02::7]:5557,mac=02:00:00:00:00:07",
                    "--metrics-listen", "[::1]:9108"});
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.vips[0].str(), "[fd00::1]:8000");
    EXPECT_EQ(r.cfg.backends[0].ep.str(), "[fd02::7]:8000");
    EXPECT_EQ(r.cfg.backends[0].kv_events, "tcp://[fd02::7]:5557");
    EXPECT_EQ(r.cfg.metrics_listen, "[::1]:9108");
    EXPECT_EQ(parse_endpoint(r.cfg.metrics_listen, nullptr)->family, KVS_AF_INET6);
    // Without brackets an IPv6 endpoint is refused, saying how to write it.
    r = parse(with({"--snat-addr", "fd02::1", "--vip", "fd00::1:8000"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_NE(r.message.find("IPv6 needs [ADDR]:PORT"), std::string::npos) << r.message;
}

TEST(Config, InterfaceMacFromSysfs) {
    auto r = parse({"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--interface", "lo"});
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.interface, "lo");
    EXPECT_EQ(format_mac(r.cfg.appliance_mac), "00:00:00:00:00:00");
}

TEST(Config, ExampleFileParses) {
    const std::string text = example_text();
    ASSERT_FALSE(text.empty()) << KVS_EXAMPLE_CONF;
    std::string path = temp_file(text);
    auto r = parse({"--config", path});
    unlink(path.c_str());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.backends.size(), 2u);
    EXPECT_EQ(r.cfg.metrics_listen, "127.0.0.1:9108");
    EXPECT_EQ(r.cfg.table_algorithm, TableAlgorithm::Rendezvous);
    EXPECT_EQ(r.cfg.affinity_min_hot_ms, 0u);

    // The text given in memory reads as the same file named by --config does.
    const char *argv[] = {"kvsteerd"};
    std::istringstream in(text);
    auto from_text = parse_daemon_config(1, argv, in);
    ASSERT_EQ(from_text.outcome, ParseOutcome::Ok) << from_text.message;
    // No cookie-key in the example: each parse draws its own random key.
    from_text.cfg.cookie_key = r.cfg.cookie_key;
    from_text.cfg.cookie_key_prev = r.cfg.cookie_key_prev;
    EXPECT_TRUE(from_text.cfg == r.cfg);
}

TEST(Config, FileTextFromStream) {
    const std::string text = example_text();
    ASSERT_FALSE(text.empty()) << KVS_EXAMPLE_CONF;
    // The command line still wins, and a --config in argv is not opened.
    const char *over[] = {"kvsteerd", "--log-level", "debug", "--config", "/nonexistent/x.conf"};
    std::istringstream in(text);
    auto r = parse_daemon_config(5, over, in);
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.log_level, "debug");
    EXPECT_EQ(r.cfg.backends.size(), 2u);

    // Errors are the file's: one line naming the key.
    const char *argv[] = {"kvsteerd"};
    std::istringstream bad(text + "\ncookie-key = 12\n");
    r = parse_daemon_config(1, argv, bad);
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message,
              "cookie-key: must be 32 hex digits (a 128-bit SipHash key): expected 32 hex digits, "
              "got 2");
}

TEST(Config, TokenWithPlaceholderDoesNotHang) {
    // Boost substitutes the offending token into its message until no placeholder is left; one
    // that holds a placeholder itself looped for ever (found by the config fuzzer).
    const char *argv[] = {"kvsteerd"};
    std::istringstream unknown("x%canonical_option% = 1\n");
    auto r = parse_daemon_config(1, argv, unknown);
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "unrecognised option 'x?canonical_option?'");
    std::istringstream line("%invalid_line%\n");
    r = parse_daemon_config(1, argv, line);
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message,
              "the options configuration file contains an invalid line '?invalid_line?'");
    r = parse({"--x%canonical_option%", "1"});
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "unrecognised option '--x?canonical_option?'");
}

TEST(Config, TableAlgorithmAndMinHot) {
    auto r = parse(with({"--table-algorithm", "maglev", "--affinity-min-hot", "0"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.table_algorithm, TableAlgorithm::Maglev);
    EXPECT_EQ(r.cfg.affinity_min_hot_ms, 0u);
    r = parse(with({"--table-algorithm", "rendezvous"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.table_algorithm, TableAlgorithm::Rendezvous);
    for (auto a : {TableAlgorithm::Rendezvous, TableAlgorithm::Maglev})
        EXPECT_EQ(parse_table_algorithm(table_algorithm_name(a)), a);
}

TEST(Config, Help) {
    auto r = parse({"--help"});
    EXPECT_EQ(r.outcome, ParseOutcome::Help);
    for (const char *key :
         {"--vip", "--backend", "--cookie-key", "--health-rise", "--steering-mode", "--bpffs",
          "--api-socket", "--metrics-listen", "--log-level", "--table-grace", "--table-algorithm",
          "--affinity-min-hot"})
        EXPECT_NE(r.message.find(key), std::string::npos) << key;
}

struct BadCase {
    std::vector<std::string> args;
    std::string key;       // the error must start with this key
    std::string fragment;  // and contain this
};

// An interface not there (yet) is an error that may clear: kvsteerd exits 1 for it and systemd
// retries (exit 2, a configuration error, left the unit stopped for good after a late driver).
// A name that cannot be an interface is still a configuration error.
TEST(Config, AMissingInterfaceIsRetryable) {
    auto r = parse({"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--interface", "kvsnope0"});
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_TRUE(r.retryable) << r.message;
    r = parse({"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--interface", "a/b"});
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_FALSE(r.retryable) << r.message;
    r = parse({"--vip", "10.0.0.2", "--snat-addr", "10.0.1.1", "--interface", "kvsnope0"});
    EXPECT_FALSE(r.retryable) << "the vip is wrong whatever comes: " << r.message;
    r = parse({"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--interface", "kvsnope0",
               "--log-level", "loud"});
    EXPECT_FALSE(r.retryable) << "a key checked after the interface is wrong: " << r.message;
    EXPECT_NE(r.message.find("log-level"), std::string::npos) << r.message;
}

TEST(Config, ErrorsNameTheKeyAndTheReason) {
    const std::vector<BadCase> cases = {
        {{"--snat-addr", "10.0.1.1", "--appliance-mac", "02:00:00:00:00:01"}, "vip", "required"},
        {with({"--vip", "10.0.0.2"}), "vip", "ADDR:PORT"},
        {with({"--vip", "10.0.0.2:0"}), "vip", "port"},
        {with({"--vip", "300.0.0.2:80"}), "vip", "not an IPv4"},
        {{"--vip", "10.0.0.1:80", "--appliance-mac", "02:00:00:00:00:01"}, "snat-addr", "required"},
        {with({"--snat-ports", "500-100"}), "snat-ports", "LO-HI"},
        {{"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1"}, "interface", "appliance-mac"},
        {{"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--interface", "kvsnope0"},
         "interface",
         "no interface"},
        {with({"--interface", "lo"}), "appliance-mac", "either"},
        {{"--vip", "10.0.0.1:80", "--snat-addr", "10.0.1.1", "--appliance-mac", "02:00:00:00:01"},
         "appliance-mac",
         "MAC"},
        {with({"--backend", "10.0.2.1:8000,weight=x"}), "backend", "weight"},
        {with({"--backend", "10.0.2.1:8000,color=red"}), "backend", "unknown option 'color'"},
        {with({"--backend", "10.0.2.1:8000,mac=zz"}), "backend", "MAC"},
        {with({"--backend", "10.0.2.1:8000", "--backend", "10.0.2.1:8000"}), "backend", "twice"},
        {with({"--backend", "10.0.2.1:8000,kv-events=10.0.2.1:5557"}), "backend",
         "tcp://HOST:PORT"},
        {with({"--backend", "10.0.2.1:8000,kv-events=tcp://*:5557"}), "backend", "'*'"},
        {with({"--backend", "10.0.2.1:8000,kv-events=tcp://10.0.2.1:0"}), "backend", "1..65535"},
        {with({"--backend", "10.0.2.1:8000,kv-events=tcp://10.0.2.1"}), "backend",
         "tcp://HOST:PORT"},
        {with({"--backend", "10.0.2.1:8000,kv-events=tcp://[fd00::zz]:5557"}), "backend", "IPv6"},
        {with({"--backend", "10.0.2.1:8000,kv-events=tcp://10.0.2.1:5557", "--backend",
               "10.0.2.2:8000,kv-events=tcp://10.0.2.1:5557"}),
         "backend", "both"},
        {with({"--prefix-length", "0"}), "prefix-length", "1.."},
        {with({"--prefix-length", "-5"}), "prefix-length", "'-5'"},
        {with({"--prefix-length", "20000"}), "prefix-length", "max-held-bytes"},
        {with({"--max-blocks", "29"}), "max-blocks", "1..28"},
        {with({"--max-blocks", "0"}), "max-blocks", "1..28"},
        {with({"--load-factor", "0.5"}), "load-factor", "number"},
        {with({"--load-factor", "nan"}), "load-factor", "number"},
        {with({"--replication", "5"}), "replication", "1..4"},
        {with({"--steering-mode", "random"}), "steering-mode", "round-robin"},
        {with({"--table-algorithm", "ring"}), "table-algorithm", "rendezvous or maglev"},
        {with({"--table-algorithm", "Maglev"}), "table-algorithm", "'Maglev'"},
        {with({"--affinity-min-hot", "-1"}), "affinity-min-hot", "0..3600000"},
        {with({"--affinity-min-hot", "5s"}), "affinity-min-hot", "'5s'"},
        {with({"--cookie-key", "abcd"}), "cookie-key", "32 hex"},
        {with({"--cookie-key", "zz0102030405060708090a0b0c0d0e0f"}), "cookie-key", "non-hex"},
        {with({"--hash-seed", "0xg"}), "hash-seed", "64-bit"},
        {with({"--syn-mss", "100"}), "syn-mss", "536..9000"},
        {with({"--syn-wscale", "15"}), "syn-wscale", "0..14"},
        {with({"--syn-timestamps", "maybe"}), "syn-timestamps", "true or false"},
        {with({"--health-timeout", "2000"}), "health-timeout", "health-interval"},
        {with({"--health-rise", "0"}), "health-rise", "1..100"},
        {with({"--health-path", "health"}), "health-path", "'/'"},
        {with({"--bpffs", "relative/dir"}), "bpffs", "absolute"},
        {with({"--metrics-listen", "localhost:99"}), "metrics-listen", "not an IPv4"},
        {with({"--log-level", "chatty"}), "log-level", "trace"},
        {with({"--config", "/nonexistent/kvsteerd.conf"}), "config", "cannot open"},
    };
    for (const auto &c : cases) {
        auto r = parse(c.args);
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << c.key;
        EXPECT_EQ(r.message.rfind(c.key + ":", 0), 0u)
            << "error should start with '" << c.key << ":': " << r.message;
        EXPECT_NE(r.message.find(c.fragment), std::string::npos) << r.message;
        EXPECT_EQ(r.message.find('\n'), std::string::npos) << "one line: " << r.message;
    }
}

TEST(Config, MaxHeldBytesHasTheSameLowerBoundAsTune) {
    // The config once accepted 64..255, which `kvsteerctl tune` refused.
    for (const char *v : {"64", "128", "255"}) {
        auto r = parse(with({"--max-held-bytes", v}));
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << v;
        EXPECT_EQ(
            r.message,
            std::string("max-held-bytes: must be an integer in 256..1048576 (got '") + v + "')");
    }
    std::string path = temp_file(
        "vip = 10.0.0.1:80\nsnat-addr = 10.0.1.1\nappliance-mac = 02:00:00:00:00:01\n"
        "max-held-bytes = 128\nprefix-length = 100\n");
    auto r = parse({"--config", path});
    unlink(path.c_str());
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_NE(r.message.find("max-held-bytes: must be an integer in 256.."), std::string::npos)
        << r.message;
    r = parse(with({"--max-held-bytes", "256"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.max_held_bytes, 256u);
    // prefix-length is checked against the max-held-bytes given with it, whatever the order.
    r = parse(with({"--prefix-length", "20000", "--max-held-bytes", "30000"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.prefix_len, 20000u);
}

TEST(Config, TunablesAreCheckedByTheTuneFunction) {
    // Every live tunable: the config's error is apply_tunable's (what tune.set answers) on the
    // same configuration, word for word.
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"prefix-length", "0"},
        {"prefix-length", "-1"},
        {"prefix-length", "20000"},
        {"block-size", "15"},
        {"block-size", "-16"},
        {"block-size", "1048577"},
        {"max-blocks", "29"},
        {"max-blocks", "-1"},
        {"load-factor", "0.99"},
        {"load-factor", "-1"},
        {"load-factor", "inf"},
        {"load-slack", "0"},
        {"load-slack", "-1"},
        {"load-slack", "1000001"},
        {"replication", "0"},
        {"replication", "-1"},
        {"replication", "5"},
        {"hot-threshold", "0"},
        {"hot-threshold", "-5"},
        {"steering-mode", "random"},
        {"affinity-ttl", "99"},
        {"affinity-ttl", "-100"},
        {"max-held-bytes", "255"},
        {"max-held-bytes", "-1"},
        {"max-held-bytes", "1048577"},
        {"max-held-bytes", "18446744073709551615"},
        {"session-cap", "0"},
        {"session-cap", "-1"},
        {"session-cap", "1000001"},
        {"session-headers", "x-session-id,"},
        {"session-headers", "a,,b"},
        {"session-headers", "x session"},
        {"session-headers", "x:y"},
        {"session-headers", "X-Session-ID,x-session-id"},
        {"session-headers", "a,b,c,d,e,f,g,h,i"},
        {"session-headers", std::string(128, 'x')},
    };
    for (const auto &[k, v] : bad) {
        DaemonConfig c;
        std::string err;
        EXPECT_FALSE(apply_tunable(c, k, v, &err)) << k << " = " << v;
        EXPECT_EQ(err.rfind(k + ": ", 0), 0u) << err;
        EXPECT_NE(err.find("(got '" + v + "')"), std::string::npos) << err;
        auto r = parse(with({"--" + k, v}));
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << k << " = " << v;
        EXPECT_EQ(r.message, err);
    }
    // The bounds themselves are accepted by both.
    const std::vector<std::pair<std::string, std::string>> ok = {
        {"max-held-bytes", "256"},
        {"max-held-bytes", "1048576"},
        {"prefix-length", "1"},
        {"block-size", "16"},
        {"block-size", "1048576"},
        {"max-blocks", "1"},
        {"max-blocks", "28"},
        {"load-factor", "1"},
        {"load-factor", "100"},
        {"replication", "1"},
        {"replication", "4"},
        {"hot-threshold", "0.001"},
        {"affinity-ttl", "100"},
        {"affinity-ttl", "86400000"},
        {"steering-mode", "five-tuple"},
        {"load-slack", "1"},
        {"load-slack", "1000000"},
        {"session-cap", "1"},
        {"session-cap", "1000000"},
        {"session-headers", "a,b,c,d,e,f,g,h"},
        {"session-headers", std::string(127, 'x')},
    };
    for (const auto &[k, v] : ok) {
        DaemonConfig c;
        std::string err;
        EXPECT_TRUE(apply_tunable(c, k, v, &err)) << k << " = " << v << ": " << err;
        auto r = parse(with({"--" + k, v}));
        EXPECT_EQ(r.outcome, ParseOutcome::Ok) << k << " = " << v << ": " << r.message;
    }
    DaemonConfig c;
    std::string err;
    EXPECT_FALSE(apply_tunable(c, "colour", "1", &err));
    EXPECT_NE(err.find("unknown tunable 'colour'"), std::string::npos) << err;
    // Cross-check both ways, and a refused value leaves the configuration as it was.
    ASSERT_TRUE(apply_tunable(c, "prefix-length", "300", &err)) << err;
    EXPECT_FALSE(apply_tunable(c, "max-held-bytes", "280", &err));
    EXPECT_EQ(err, "max-held-bytes: must not be below prefix-length (300) (got '280')");
    EXPECT_EQ(c.max_held_bytes, 14600u);
    EXPECT_EQ(c.prefix_len, 300u);
}

TEST(Config, SessionHeaders) {
    // Off by default; names kept lower-case without blanks (what the dataplane compares with).
    DaemonConfig d;
    EXPECT_EQ(d.session_headers, "");
    EXPECT_EQ(d.session_cap, KVS_DEFAULT_SESSION_CAP);
    auto r = parse(with({"--session-headers", " X-Session-ID , x-user ", "--session-cap", "2"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.session_headers, "x-session-id,x-user");
    EXPECT_EQ(r.cfg.session_cap, 2u);
    std::string err;
    ASSERT_TRUE(apply_tunable(r.cfg, "session-headers", "", &err)) << err;  // "" turns it off
    EXPECT_EQ(r.cfg.session_headers, "");
    EXPECT_FALSE(apply_tunable(r.cfg, "session-headers", "x-a,x a", &err));
    EXPECT_EQ(err, "session-headers: 'x a' is not an HTTP header name (got 'x-a,x a')");
    EXPECT_EQ(r.cfg.session_headers, "");  // refused: unchanged
    EXPECT_FALSE(apply_tunable(r.cfg, "session-headers", "a,A", &err));
    EXPECT_EQ(err, "session-headers: 'A' is listed twice (got 'a,A')");
}

TEST(Config, NoNegativeNumberBecomesAHugeUnsignedOne) {
    // Every unsigned key, on the command line and in the file: a sign is refused, naming the key.
    for (const char *k : {"workers",
                          "prefix-length",
                          "block-size",
                          "max-blocks",
                          "replication",
                          "cookie-period",
                          "max-held-bytes",
                          "syn-mss",
                          "syn-wscale",
                          "syn-window",
                          "health-interval",
                          "health-timeout",
                          "health-rise",
                          "health-fall",
                          "health-passive-fails",
                          "telemetry-interval",
                          "queue-cap",
                          "report-interval",
                          "affinity-ttl",
                          "affinity-min-hot",
                          "affinity-max-entries",
                          "affinity-index-max",
                          "table-grace",
                          "dataplane-stale",
                          "hash-seed"}) {
        for (const char *v : {"-1", "-0", "-0x10", "0x-10", "+1"}) {
            auto r = parse(with({std::string("--") + k, v}));
            EXPECT_EQ(r.outcome, ParseOutcome::Error) << k << " = " << v;
            EXPECT_EQ(r.message.rfind(std::string(k) + ":", 0), 0u) << r.message;
        }
        std::string path = temp_file(
            "vip = 10.0.0.1:80\nsnat-addr = 10.0.1.1\nappliance-mac = 02:00:00:00:00:01\n" +
            std::string(k) + " = -1\n");
        auto r = parse({"--config", path});
        unlink(path.c_str());
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << k;
        EXPECT_EQ(r.message.rfind(std::string(k) + ":", 0), 0u) << r.message;
    }
    std::string err;
    for (const char *spec : {"10.0.0.1:80,weight=-1", "10.0.0.1:80,max_load=-1"})
        EXPECT_FALSE(parse_backend_spec(spec, &err)) << spec;
    EXPECT_EQ(parse(with({"--snat-ports", "-1-100"})).outcome, ParseOutcome::Error);
    EXPECT_FALSE(parse_uint_in("k", "-1", {0, UINT64_MAX}, &err));
    EXPECT_EQ(err, "k: must be an integer in 0..18446744073709551615 (got '-1')");
    EXPECT_FALSE(parse_number_in("k", "-1", {0.0, 1.0}, &err));
    EXPECT_EQ(err, "k: must be a number in 0..1 (got '-1')");
}

TEST(Config, UnknownKeysAreRejected) {
    auto r = parse(with({"--no-such-option", "1"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_NE(r.message.find("no-such-option"), std::string::npos) << r.message;
    std::string path = temp_file("vip = 10.0.0.1:80\nfrobnicate = yes\n");
    r = parse({"--config", path});
    unlink(path.c_str());
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_NE(r.message.find("frobnicate"), std::string::npos) << r.message;
}

TEST(Config, BackendSpec) {
    std::string err;
    auto b = parse_backend_spec("[fd00::5]:9000,weight=0,model=m", &err);
    ASSERT_TRUE(b) << err;
    EXPECT_EQ(b->ep.family, KVS_AF_INET6);
    EXPECT_EQ(b->ep.port(), 9000);
    EXPECT_EQ(b->weight, 0);
    EXPECT_FALSE(b->mac);
    EXPECT_FALSE(parse_backend_spec("10.0.0.1:80,weight", &err));
    EXPECT_NE(err.find("KEY=VALUE"), std::string::npos);
    EXPECT_FALSE(parse_backend_spec("10.0.0.1:80,weight=70000", &err));
}

// Addresses no backend can have are refused with the reason (a link-local one was accepted and
// stayed down: kvsteerd's checks could not connect without an interface).
TEST(Config, BackendAddressesNoServerCanHaveAreRefused) {
    for (const char *s : {"[fe80::1]:8000", "[febf:ffff::1]:8000", "[::]:8000", "[ff02::1]:8000",
                          "0.0.0.0:8000", "224.0.0.1:8000", "239.1.2.3:80", "255.255.255.255:80",
                          "[::ffff:10.0.0.1]:8000", "[::ffff:a00:1]:80"}) {
        std::string err;
        EXPECT_FALSE(parse_backend_spec(s, &err)) << s;
        EXPECT_NE(err.find("address"), std::string::npos) << s << ": " << err;
    }
    std::string err;
    EXPECT_FALSE(parse_backend_spec("[fe80::1]:8000,weight=1", &err));
    EXPECT_NE(err.find("link-local"), std::string::npos) << err;
    EXPECT_FALSE(parse_backend_spec("10.0.0.1:8000,weight=0,model=m,weight=1", &err));
    EXPECT_NE(err.find("'weight' given twice"), std::string::npos) << err;
    EXPECT_FALSE(parse_backend_spec("[::ffff:10.0.0.1]:8000", &err));
    EXPECT_NE(err.find("IPv4-mapped"), std::string::npos) << err;
    for (const char *s : {"[fec0::1]:8000", "[fd00::1]:8000", "[2001:db8::1]:80", "[::1]:80",
                          "[::fffe:10.0.0.1]:80", "[64:ff9b::10.0.0.1]:80", "127.0.0.1:80",
                          "223.255.255.255:80", "240.0.0.1:80", "10.0.0.1:80"})
        EXPECT_TRUE(parse_backend_spec(s, &err)) << s << ": " << err;
}

TEST(Config, BackendKvEvents) {
    std::string err;
    auto b = parse_backend_spec("10.0.0.1:8000,kv-events=tcp://10.0.0.1:5557,weight=2", &err);
    ASSERT_TRUE(b) << err;
    EXPECT_EQ(b->kv_events, "tcp://10.0.0.1:5557");
    EXPECT_EQ(b->weight, 2);
    EXPECT_TRUE(parse_backend_spec("10.0.0.1:8000", &err)->kv_events.empty()) << "off by default";
    for (const char *ok :
         {"tcp://[fd00::5]:5557", "tcp://gpu-7.example:5557", "ipc:///run/vllm/kv.sock"})
        EXPECT_TRUE(valid_kv_events_endpoint(ok, &err)) << ok << ": " << err;
    for (const char *bad :
         {"", "tcp://", "tcp://:5557", "tcp://h:", "tcp://h:0x10", "tcp://h:70000", "tcp://a b:1",
          "udp://10.0.0.1:5557", "ipc://", "tcp://[10.0.0.1]:5557"})
        EXPECT_FALSE(valid_kv_events_endpoint(bad, &err)) << bad;
    // The two-backend file form of the example config parses with one kv-events line.
    auto r = parse(with({"--backend", "10.0.2.1:8000,kv-events=tcp://10.0.2.1:5557", "--backend",
                         "10.0.2.2:8000,kv-events=tcp://10.0.2.2:5557"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.backends[1].kv_events, "tcp://10.0.2.2:5557");
}

TEST(Config, FleetOptions) {
    auto r = parse(minimal());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_FALSE(r.cfg.fleet.enabled());
    EXPECT_TRUE(r.cfg.fleet.epochs.empty());

    const auto cat = [](std::vector<std::string> a, const std::vector<std::string> &b) {
        a.insert(a.end(), b.begin(), b.end());
        return a;
    };
    const std::vector<std::string> fleet3 = {"--fleet-self",   "1",
                                             "--fleet-member", "0,02:00:00:00:f1:00",
                                             "--fleet-member", "1,02:00:00:00:00:01",
                                             "--fleet-member", "3,02:00:00:00:f1:03"};
    // Several appliances without etcd: each would draw its own cookie key.
    r = parse(with(fleet3));
    ASSERT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(
        r.message.rfind("cookie-key: a fleet without fleet-etcd needs the same cookie-key", 0), 0u)
        << r.message;
    r = parse(with(cat(fleet3, {"--fleet-etcd", "http://127.0.0.1:2379"})));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << "etcd shares one: " << r.message;
    r = parse(with(cat(fleet3, {"--cookie-key", "00112233445566778899aabbccddeeff"})));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.fleet.self, 1u);
    ASSERT_TRUE(r.cfg.fleet.macs[3]);
    EXPECT_EQ(format_mac(*r.cfg.fleet.macs[3]), "02:00:00:00:f1:03");
    EXPECT_FALSE(r.cfg.fleet.macs[2]);
    // Default: one epoch of every member.
    EXPECT_EQ(r.cfg.fleet.epochs, std::vector<MemberSet>{0b1011});
    EXPECT_EQ(r.cfg.fleet.epoch_no, 1u);

    r = parse(with({"--fleet-self", "0", "--fleet-member", "0,02:00:00:00:00:01", "--fleet-member",
                    "1,02:00:00:00:f1:01", "--fleet-epoch", "0", "--fleet-epoch", "1,0",
                    "--cookie-key", "00112233445566778899aabbccddeeff"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.fleet.epochs, (std::vector<MemberSet>{0b01, 0b11}));
    EXPECT_EQ(r.cfg.fleet.epoch_no, 2u);
    EXPECT_EQ(r.cfg.fleet.state(1), KVS_APP_UP);
}

TEST(Config, FleetErrorsNameTheKey) {
    // Member 0 with this appliance's MAC (the base arguments' appliance-mac).
    const std::vector<std::string> m0 = {"--fleet-member", "0,02:00:00:00:00:01"};
    auto err = [&](std::vector<std::string> extra) {
        auto r = parse(with(extra));
        EXPECT_EQ(r.outcome, ParseOutcome::Error);
        return r.message;
    };
    auto cat = [](std::vector<std::string> a, const std::vector<std::string> &b) {
        a.insert(a.end(), b.begin(), b.end());
        return a;
    };
    EXPECT_EQ(err(cat({"--fleet-self", "1"}, m0)),
              "fleet-self: appliance 1 is not among the fleet-member ids");
    EXPECT_EQ(err({"--fleet-self", "16"}).rfind("fleet-self: appliance id must be in 0..15", 0),
              0u);
    EXPECT_EQ(err(m0), "fleet-member: given without fleet-self (this appliance's id)");
    EXPECT_EQ(err({"--fleet-epoch", "0"}),
              "fleet-epoch: given without fleet-self (this appliance's id)");
    EXPECT_EQ(err({"--fleet-self", "0", "--fleet-member", "0,zz:00:00:00:f1:00"})
                  .rfind("fleet-member: appliance 0: ", 0),
              0u);
    EXPECT_EQ(err({"--fleet-self", "0", "--fleet-member", "0,01:00:00:00:f1:00"}),
              "fleet-member: appliance 0: MAC 01:00:00:00:f1:00 is not a unicast address");
    EXPECT_EQ(err({"--fleet-self", "0", "--fleet-member", "0"}),
              "fleet-member: must be ID,MAC (got '0')");
    EXPECT_EQ(err({"--fleet-self", "0", "--fleet-member", "17,02:00:00:00:f1:00"})
                  .rfind("fleet-member: appliance id must be in 0..15", 0),
              0u);
    EXPECT_EQ(err(cat(cat({"--fleet-self", "0"}, m0), m0)),
              "fleet-member: appliance 0 is listed twice");
    EXPECT_EQ(err(cat({"--fleet-self", "0", "--fleet-epoch", "0,2"}, m0)),
              "fleet-epoch: '0,2' names 2, not among the fleet-member ids");
    EXPECT_EQ(err(cat({"--fleet-self", "0", "--fleet-epoch", "0,0"}, m0)),
              "fleet-epoch: '0,0': appliance 0 is listed twice");
    // Its own entry with another MAC than its interface's (or appliance-mac): the others would
    // send this appliance's frames to a MAC nobody has.
    EXPECT_EQ(err({"--fleet-self", "0", "--fleet-member", "0,02:00:00:00:00:02"}),
              "fleet-member: appliance 0 (fleet-self) is listed with 02:00:00:00:00:02 but this "
              "appliance's MAC is 02:00:00:00:00:01 (interface or appliance-mac)");
}

TEST(Config, AnnounceOptions) {
    // Defaults: nothing announced, kvs_vip when a socket is given, 1 s without a heartbeat.
    auto r = parse(minimal());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_TRUE(r.cfg.announce_bird_socket.empty());
    EXPECT_EQ(r.cfg.announce_protocols, std::vector<std::string>{"kvs_vip"});
    EXPECT_EQ(r.cfg.dataplane_stale_ms, 1000u);

    r = parse(with({"--announce-bird-socket", "/run/bird/bird.ctl"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.announce_bird_socket, "/run/bird/bird.ctl");
    EXPECT_EQ(r.cfg.announce_protocols, std::vector<std::string>{"kvs_vip"});

    // Repeatable: the list replaces the default, in order.
    r = parse(with({"--announce-bird-socket", "/run/bird/bird.ctl", "--announce-protocol",
                    "vip4_static", "--announce-protocol", "VIP6_2", "--dataplane-stale", "250"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.announce_protocols, (std::vector<std::string>{"vip4_static", "VIP6_2"}));
    EXPECT_EQ(r.cfg.dataplane_stale_ms, 250u);

    // The bounds of dataplane-stale, and a name of 64 characters.
    for (const char *v : {"100", "60000"}) {
        r = parse(with({"--dataplane-stale", v}));
        ASSERT_EQ(r.outcome, ParseOutcome::Ok) << v << ": " << r.message;
        EXPECT_EQ(r.cfg.dataplane_stale_ms, std::stoul(v));
    }
    r = parse(
        with({"--announce-bird-socket", "/b.ctl", "--announce-protocol", std::string(64, 'p')}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.announce_protocols, std::vector<std::string>{std::string(64, 'p')});

    // From a file, the protocol repeated; the socket may come from the command line.
    std::string path = temp_file(
        "vip = 10.0.0.1:80\nsnat-addr = 10.0.1.1\nappliance-mac = 02:00:00:00:00:01\n"
        "announce-protocol = kvs_vip\nannounce-protocol = kvs_vip6\ndataplane-stale = 3000\n");
    r = parse({"--config", path, "--announce-bird-socket", "/run/bird/bird.ctl"});
    unlink(path.c_str());
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(r.cfg.announce_bird_socket, "/run/bird/bird.ctl");
    EXPECT_EQ(r.cfg.announce_protocols, (std::vector<std::string>{"kvs_vip", "kvs_vip6"}));
    EXPECT_EQ(r.cfg.dataplane_stale_ms, 3000u);
}

TEST(Config, AnnounceErrorsNameTheKey) {
    const std::vector<std::string> sock = {"--announce-bird-socket", "/run/bird/bird.ctl"};
    auto with_sock = [&](std::vector<std::string> extra) {
        auto a = sock;
        a.insert(a.end(), extra.begin(), extra.end());
        return with(a);
    };
    const std::vector<BadCase> cases = {
        {with({"--announce-protocol", "kvs_vip"}), "announce-protocol",
         "given without announce-bird-socket"},
        {with_sock({"--announce-protocol", "kvs-vip"}), "announce-protocol",
         "'kvs-vip' is not a BIRD protocol name (letters, digits, _)"},
        {with_sock({"--announce-protocol", "kvs vip"}), "announce-protocol", "'kvs vip'"},
        {with_sock({"--announce-protocol", "kvs_vip\ndisable x"}), "announce-protocol",
         "not a BIRD protocol name"},
        {with_sock({"--announce-protocol", ""}), "announce-protocol", "not a BIRD protocol name"},
        {with_sock({"--announce-protocol", std::string(65, 'p')}), "announce-protocol",
         "not a BIRD protocol name"},
        {with_sock({"--announce-protocol", "kvs_vip", "--announce-protocol", "x;y"}),
         "announce-protocol", "'x;y'"},
        {with({"--dataplane-stale", "99"}), "dataplane-stale", "100..60000"},
        {with({"--dataplane-stale", "60001"}), "dataplane-stale", "100..60000"},
        {with({"--dataplane-stale", "0"}), "dataplane-stale", "100..60000"},
        {with({"--dataplane-stale", "1s"}), "dataplane-stale", "'1s'"},
        {with({"--dataplane-stale", "-1"}), "dataplane-stale", "'-1'"},
    };
    for (const auto &c : cases) {
        auto r = parse(c.args);
        EXPECT_EQ(r.outcome, ParseOutcome::Error) << c.fragment;
        EXPECT_EQ(r.message.rfind(c.key + ":", 0), 0u)
            << "error should start with '" << c.key << ":': " << r.message;
        EXPECT_NE(r.message.find(c.fragment), std::string::npos) << r.message;
    }
    // In a file: the same.
    std::string path = temp_file(
        "vip = 10.0.0.1:80\nsnat-addr = 10.0.1.1\nappliance-mac = 02:00:00:00:00:01\n"
        "announce-protocol = kvs_vip\n");
    auto r = parse({"--config", path});
    unlink(path.c_str());
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "announce-protocol: given without announce-bird-socket");
}

TEST(Config, FleetShareHot) {
    const std::vector<std::string> etcd = {"--fleet-self",   "0",
                                           "--fleet-member", "0,02:00:00:00:00:01",
                                           "--fleet-etcd",   "http://127.0.0.1:2379"};
    auto r = parse(with(etcd));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_TRUE(r.cfg.fleet_share_hot);  // on by default with fleet-etcd
    auto off = etcd;
    off.insert(off.end(), {"--fleet-share-hot", "false"});
    r = parse(with(off));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_FALSE(r.cfg.fleet_share_hot);
    r = parse(with({"--fleet-share-hot", "true"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "fleet-share-hot: given without fleet-etcd");
    auto bad = etcd;
    bad.insert(bad.end(), {"--fleet-share-hot", "maybe"});
    r = parse(with(bad));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "fleet-share-hot: must be true or false (got 'maybe')");
}

// Settings that only work together: a table grace each publish waits out on the daemon's loop
// must stay below the report interval (at 10 s it stalled every tick), and a queue cap needs the
// scrapes that read the queue (without them it never applied, silently).
TEST(Config, GraceBelowTheReportIntervalAndQueueCapWithTelemetry) {
    auto r = parse(with({"--report-interval", "100", "--table-grace", "99"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    r = parse(with({"--report-interval", "100", "--table-grace", "100"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message, "table-grace: must be below report-interval (100 ms) (got 100)");
    r = parse(with({"--queue-cap", "8", "--telemetry-interval", "0"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Error);
    EXPECT_EQ(r.message,
              "queue-cap: needs telemetry-interval above 0 (the queue is read from the backends' "
              "metrics)");
    r = parse(with({"--queue-cap", "8", "--telemetry-interval", "500"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    r = parse(with({"--queue-cap", "0", "--telemetry-interval", "0"}));
    EXPECT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
}

// parse_session_headers without an error string: the answer alone, no crash.
TEST(ConfigSessionHeaders, ParsesWithoutAnErrorString) {
    EXPECT_EQ(parse_session_headers("X-Session-ID, x-user", nullptr), "x-session-id,x-user");
    EXPECT_FALSE(parse_session_headers("a,,b", nullptr));
    EXPECT_FALSE(parse_session_headers("x session", nullptr));
}

// A huge list is refused by its size before it is parsed, and the error does not echo it (a
// 1 MiB tune.set value of distinct names took the event loop seconds to be refused, its error
// line as long as it); the name count is checked name by name.
TEST(ConfigSessionHeaders, HugeListsAreRefusedByTheirSize) {
    std::string many;
    for (int i = 0; i < 150000; i++) many += (i ? ",h" : "h") + std::to_string(i);
    std::string err;
    EXPECT_FALSE(parse_session_headers(many, &err));
    EXPECT_EQ(err.rfind("session-headers: at most 127 characters in all (got ", 0), 0u) << err;
    EXPECT_LT(err.size(), 100u);
    EXPECT_FALSE(parse_session_headers(std::string(513, ' ') + "a", &err));
    EXPECT_TRUE(parse_session_headers(std::string(500, ' ') + "a", &err)) << err;
    EXPECT_FALSE(parse_session_headers("a,b,c,d,e,f,g,h,i,j,k,l", &err));
    EXPECT_NE(err.find("at most 8 names"), std::string::npos) << err;
}

// The default SNAT range stays out of the kernel's default ephemeral ports; an overlap is named
// with its size, reserved ports aside (deploy/setup-host.sh reserves the SNAT range).
TEST(Config, SnatPortsOverlappingTheKernelsEphemeralPortsAreNamed) {
    auto r = parse(with({"--backend", "10.0.2.7:8000"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    EXPECT_EQ(snat_port_overlap(r.cfg, "32768\t60999\n", "\n"), std::nullopt) << "kernel default";
    EXPECT_EQ(snat_port_overlap(r.cfg, "40000\t60999\n", ""), std::nullopt);
    EXPECT_EQ(snat_port_overlap(r.cfg, "1024 60999", "10000-32767"), std::nullopt)
        << "setup-host.sh: the SNAT range reserved";
    EXPECT_EQ(snat_port_overlap(r.cfg, "32767 60999", ""),
              "snat-ports 10000-32767 overlaps the kernel's ephemeral ports 32767-60999 (1 ports "
              "not reserved): a reply to the appliance's own connections (health checks, scrapes) "
              "on one of them is taken for a SNAT flow's and lost; move one range (sysctl "
              "net.ipv4.ip_local_port_range, or reserve the SNAT range in "
              "net.ipv4.ip_local_reserved_ports)");
    r = parse(with({"--backend", "10.0.2.7:8000", "--snat-ports", "32768-60999"}));
    ASSERT_EQ(r.outcome, ParseOutcome::Ok) << r.message;
    auto w = snat_port_overlap(r.cfg, "40000\t60999\n", "");
    ASSERT_TRUE(w);
    EXPECT_NE(w->find("overlaps the kernel's ephemeral ports 40000-60999 (21000 ports"),
              std::string::npos)
        << *w;
    // Reserved ports are never picked by the kernel: all of them reserved is no overlap, but
    // leaves the kernel no ephemeral port (fewer than 1024 is said).
    EXPECT_EQ(snat_port_overlap(r.cfg, "30000 60999", "32768-60999"), std::nullopt);
    w = snat_port_overlap(r.cfg, "40000 60999", "40000-50000,50001-60999\n");
    ASSERT_TRUE(w);
    EXPECT_NE(w->find("only 0 of the kernel's ephemeral ports 40000-60999 are not reserved"),
              std::string::npos)
        << *w;
    w = snat_port_overlap(r.cfg, "32000 60999", "32768-60999");
    ASSERT_TRUE(w);
    EXPECT_NE(w->find("only 768 of"), std::string::npos) << *w;
    w = snat_port_overlap(r.cfg, "40000 60999", "8080,40000-59999");
    ASSERT_TRUE(w);
    EXPECT_NE(w->find("(1000 ports not reserved)"), std::string::npos) << *w;
    // Unreadable: said, not guessed.
    w = snat_port_overlap(r.cfg, "", "");
    ASSERT_TRUE(w);
    EXPECT_NE(w->find("cannot read the kernel's ip_local_port_range"), std::string::npos) << *w;
    EXPECT_TRUE(snat_port_overlap(r.cfg, "60999 40000", ""));
}
