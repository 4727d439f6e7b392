// kvsteerd in-process over tables in ordinary memory (same layout as the maps), with real
// backends on 127.0.0.1 and the real API socket: tables follow health, API, telemetry, reports.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <thread>

#include "heap_maps.h"
#include "kv_test_publisher.h"
#include "kvsteer/control/ctl_client.h"
#include "kvsteer/control/daemon.h"
#include "kvsteer/core/maglev.h"
#include "test_http_server.h"

using namespace kvsteer::control;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const char *kVllmPage =
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{model_name=\"m\"} 3\n"
    "vllm:num_requests_waiting{model_name=\"m\"} 7\n"
    "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n"
    "vllm:prefix_cache_queries_total{model_name=\"m\"} 100\n"
    "vllm:prefix_cache_hits_total{model_name=\"m\"} 50\n";

bool wait_for(const std::function<bool()> &f, std::chrono::milliseconds timeout = 5000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        if (f()) return true;
        std::this_thread::sleep_for(10ms);
    }
    return f();
}

// A healthy dataplane for the daemon: worker 0's heartbeat (kvs_ring_ctl.alive_ns) written every
// 20 ms on a thread of its own while this lives.
class Heartbeat {
   public:
    explicit Heartbeat(kvs_ring_ctl &ctl)
        : thr_([this, &ctl] {
              while (on_.load()) {
                  timespec t{};
                  clock_gettime(CLOCK_MONOTONIC, &t);
                  std::atomic_ref<__u64>(ctl.alive_ns)
                      .store(static_cast<__u64>(t.tv_sec) * 1000000000ull +
                             static_cast<__u64>(t.tv_nsec));
                  std::this_thread::sleep_for(20ms);
              }
          }) {}
    ~Heartbeat() {
        on_ = false;
        thr_.join();
    }
    Heartbeat(const Heartbeat &) = delete;
    Heartbeat &operator=(const Heartbeat &) = delete;

   private:
    std::atomic<bool> on_{true};
    std::thread thr_;
};

class DaemonTest : public ::testing::Test {
   protected:
    void SetUp() override {
        for (auto &s : servers_) {
            s.set("/health", 200, "ok");
            s.set("/metrics", 200, kVllmPage);
        }
        sock_ = "/tmp/kvsctl-dtest-" + std::to_string(getpid()) + ".sock";
        unlink((sock_ + ".draining").c_str());  // left by an earlier run killed with this pid
        unlink((sock_ + ".backend-drains").c_str());
    }

    // config(2) with backend 1's vLLM KV events from `endpoint`.
    DaemonConfig kv_config(const std::string &endpoint) {
        DaemonConfig c = config(2);
        c.backends[1].kv_events = endpoint;
        return c;
    }

    DaemonConfig config(unsigned n_backends) {
        DaemonConfig c;
        std::string err;
        c.vips.push_back(*parse_endpoint("10.0.0.1:80", &err));
        c.snat_addr = *parse_address("10.0.1.1", &err);
        c.appliance_mac = *parse_mac("02:00:00:00:00:01", &err);
        for (unsigned i = 0; i < n_backends; i++) {
            BackendSpec b;
            b.ep = *parse_endpoint("127.0.0.1:" + std::to_string(servers_[i].port()), &err);
            b.weight = static_cast<std::uint16_t>(i == 0 ? 2 : 1);
            b.mac = Mac{2, 0, 0, 0, 0, static_cast<std::uint8_t>(0x10 + i)};
            c.backends.push_back(b);
        }
        c.cookie_key = {1, 2};
        c.cookie_key_prev = {1, 2};
        c.health_interval_ms = 60;
        c.health_timeout_ms = 60;  // at most the interval
        c.health_rise = 2;
        // Checks timing out in a row on a busy machine (the test server's thread starved for
        // ~180 ms took a backend down for two checks) are not a fall: 5 x 60 ms.
        c.health_fall = 5;
        c.telemetry_interval_ms = 60;
        c.report_interval_ms = 20;
        c.table_grace_ms = 1;
        c.api_socket = sock_;
        return c;
    }

    void start(const DaemonConfig &c) {
        d_ = std::make_unique<Daemon>(c, m_.view, m_.fleet);
        std::string err;
        ASSERT_TRUE(d_->start(&err)) << err;
        loop_ = std::thread([this] { d_->run(); });
    }
    // Stops the daemon and starts another on the same maps and files (a kvsteerd restart).
    void restart(const DaemonConfig &c) {
        d_->stop();
        loop_.join();
        d_.reset();
        start(c);
    }

    void TearDown() override {
        if (d_) {
            d_->stop();
            loop_.join();
            d_.reset();
        }
        unlink(sock_.c_str());
        unlink((sock_ + ".draining").c_str());  // a drain a test left is not the next one's
        unlink((sock_ + ".backend-drains").c_str());
    }

    // A connection of its own to the API socket (-1 on failure).
    int connect_api() const {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, sock_.c_str(), sizeof sa.sun_path - 1);
        if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0) return fd;
        if (fd >= 0) close(fd);
        return -1;
    }

    json call(const json &req) {
        std::string err;
        auto r = api_call(sock_, req, 3000ms, &err);
        EXPECT_TRUE(r) << err;
        return r ? *r : json{{"ok", false}, {"error", err}};
    }

    // Share of Maglev slots per backend id in the active half.
    std::map<std::uint32_t, std::uint32_t> maglev_counts() {
        std::map<std::uint32_t, std::uint32_t> c;
        auto a = TableWriter::active_maglev(m_.view.config);
        for (std::uint32_t i = 0; i < KVS_MAGLEV_SIZE; i++)
            c[m_.view.maglev[a * KVS_MAGLEV_SIZE + i]]++;
        return c;
    }

    std::vector<std::uint32_t> active_table() {
        auto a = TableWriter::active_maglev(m_.view.config);
        const std::uint32_t *half = m_.view.maglev + static_cast<std::size_t>(a) * KVS_MAGLEV_SIZE;
        return {half, half + KVS_MAGLEV_SIZE};
    }

    // Starts the daemon with `c` and checks its published table is, slot for slot, what
    // `want_alg`'s builder makes of the backends (and not what the other builder makes).
    void expect_table_from(const DaemonConfig &c, TableAlgorithm want_alg) {
        start(c);
        ASSERT_TRUE(wait_for([&] {
            return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP && state(2) == KVS_BE_UP;
        }));
        std::vector<kvsteer::MaglevBackend> mb;
        for (const auto &b : c.backends) {
            std::uint32_t id = KVS_MAX_BACKENDS;
            for (std::uint32_t i = 0; i < 3; i++)
                if (m_.view.backends[i].port == b.ep.port_be) id = i;
            ASSERT_LT(id, KVS_MAX_BACKENDS);
            mb.push_back({id, backend_identity(b.ep), b.weight});
        }
        auto rendezvous = kvsteer::build_rendezvous_table(mb, KVS_MAGLEV_SIZE);
        auto maglev = kvsteer::build_maglev(mb, KVS_MAGLEV_SIZE);
        ASSERT_NE(rendezvous, maglev)
            << "the builders must differ for this check to tell them apart";
        const auto &want = want_alg == TableAlgorithm::Maglev ? maglev : rendezvous;
        EXPECT_TRUE(wait_for([&] { return active_table() == want; }))
            << "published table is not " << table_algorithm_name(want_alg) << "'s"
            << (active_table() == (want_alg == TableAlgorithm::Maglev ? rendezvous : maglev)
                    ? " (it is the other one's)"
                    : "");
    }

    std::uint8_t state(unsigned id) {
        return std::atomic_ref<__u8>(m_.view.backends[id].state).load();
    }
    // Whether backend `id` is up throughout `window` (looked at every 5 ms; a backend taken down
    // wrongly, then up again after `rise` good checks, is seen down).
    bool stays_up(std::uint16_t id, std::chrono::milliseconds window) {
        const auto until = std::chrono::steady_clock::now() + window;
        while (std::chrono::steady_clock::now() < until) {
            if (state(id) != KVS_BE_UP) return false;
            std::this_thread::sleep_for(5ms);
        }
        return state(id) == KVS_BE_UP;
    }

    const kvs_affinity_entry *affinity(std::uint64_t key) {
        auto a = TableWriter::active_affinity(m_.view.config);
        const kvs_affinity_entry *half = m_.view.affinity + a * KVS_AFFINITY_SLOTS;
        for (std::uint32_t i = 0; i < KVS_AFFINITY_SLOTS; i++)
            if (half[i].key == key) return &half[i];
        return nullptr;
    }

    void produce(unsigned worker, const kvs_bind_report &r) {
        auto &ctl = m_.view.ring_ctl[worker];
        std::uint64_t head = std::atomic_ref<__u64>(ctl.head).load();
        m_.view.ring[worker * KVS_BIND_RING_SLOTS + (head & (KVS_BIND_RING_SLOTS - 1))] = r;
        std::atomic_ref<__u64>(ctl.head).store(head + 1, std::memory_order_release);
    }

    TestHttpServer servers_[3];
    HeapMaps m_;
    std::unique_ptr<Daemon> d_;
    std::thread loop_;
    std::string sock_;
};

}  // namespace

TEST_F(DaemonTest, FillsConfigBackendsAndWeightedMaglev) {
    start(config(2));
    const kvs_config *c = m_.view.config;
    EXPECT_EQ(c->n_vips, 1u);
    EXPECT_EQ(c->vips[0].addr[0], inet_addr("10.0.0.1"));
    EXPECT_EQ(c->vips[0].port, htons(80));
    EXPECT_EQ(c->vips[0].family, KVS_AF_INET);
    EXPECT_EQ(c->snat_addr[0], inet_addr("10.0.1.1"));
    EXPECT_EQ(c->snat_port_lo, 10000);
    EXPECT_EQ(c->appliance_mac[5], 1);
    EXPECT_EQ(c->cookie_key[0][1], 2u);
    EXPECT_EQ(c->prefix_len, 256u);
    EXPECT_EQ(c->block_size, 512u);
    EXPECT_EQ(c->load_factor_milli, 1250u);
    EXPECT_EQ(c->load_slack, KVS_DEFAULT_LOAD_SLACK);
    EXPECT_EQ(c->steer_mode, static_cast<__u32>(KVS_STEER_PREFIX));
    EXPECT_EQ(c->flags & KVS_CFG_SYN_TIMESTAMPS, static_cast<__u32>(KVS_CFG_SYN_TIMESTAMPS));
    EXPECT_EQ(c->n_backends, 2u);
    EXPECT_EQ(m_.view.backends[1].port, htons(servers_[1].port()));
    EXPECT_EQ(m_.view.backends[1].mac[5], 0x11);
    EXPECT_EQ(m_.view.backends[0].weight, 2);

    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    ASSERT_TRUE(wait_for([&] { return maglev_counts().size() == 2; }));
    auto counts = maglev_counts();
    EXPECT_NEAR(static_cast<double>(counts[0]) / KVS_MAGLEV_SIZE, 2.0 / 3, 0.02);
    EXPECT_NEAR(static_cast<double>(counts[1]) / KVS_MAGLEV_SIZE, 1.0 / 3, 0.02);

    // (A wait: a health flap on a busy machine republishes between the answer and the read.)
    json st;
    EXPECT_TRUE(wait_for([&] {
        st = call({{"cmd", "status"}});
        return st["ok"].get<bool>() && st["backends"]["up"] == 2 &&
               st["generation"].get<std::uint32_t>() == c->generation;
    })) << st.dump()
        << " generation in the map " << c->generation;
}

TEST_F(DaemonTest, DefaultTableIsRendezvous) {
    expect_table_from(config(3), TableAlgorithm::Rendezvous);
}

TEST_F(DaemonTest, TableAlgorithmMaglevPublishesMaglev) {
    auto c = config(3);
    c.table_algorithm = TableAlgorithm::Maglev;
    expect_table_from(c, TableAlgorithm::Maglev);
}

TEST_F(DaemonTest, ApiChangesBackendsAndTables) {
    start(config(2));
    ASSERT_TRUE(wait_for([&] { return maglev_counts().size() == 2; }));
    std::string third = "127.0.0.1:" + std::to_string(servers_[2].port());

    auto r = call(
        {{"cmd", "backend.add"}, {"spec", third + ",weight=1,mac=02:00:00:00:00:33,model=m2"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["backend"]["id"], 2);
    ASSERT_TRUE(wait_for([&] { return state(2) == KVS_BE_UP && maglev_counts().size() == 3; }));
    EXPECT_EQ(m_.view.config->n_backends, 3u);
    EXPECT_EQ(m_.view.backends[2].mac[5], 0x33);

    r = call({{"cmd", "backend.add"}, {"spec", third}});
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r["error"].get<std::string>().find("exists"), std::string::npos);

    r = call({{"cmd", "backend.drain"}, {"backend", third}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(state(2), KVS_BE_DRAIN);
    EXPECT_EQ(maglev_counts().count(2), 0u);
    r = call({{"cmd", "backend.drain"}, {"backend", 2}, {"drain", false}});
    ASSERT_TRUE(r["ok"].get<bool>());
    EXPECT_EQ(state(2), KVS_BE_UP);
    EXPECT_EQ(maglev_counts().count(2), 1u);

    r = call({{"cmd", "backend.weight"}, {"backend", "0"}, {"weight", 0}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(m_.view.backends[0].weight, 0);
    EXPECT_EQ(state(0), KVS_BE_UP);
    EXPECT_EQ(maglev_counts().count(0), 0u) << "weight 0 leaves the Maglev table";

    auto gen = m_.view.config->generation;
    r = call({{"cmd", "backend.remove"}, {"backend", third}});
    ASSERT_TRUE(r["ok"].get<bool>());
    EXPECT_EQ(state(2), KVS_BE_EMPTY);
    EXPECT_EQ(m_.view.config->n_backends, 2u);
    EXPECT_EQ(maglev_counts().count(2), 0u);
    EXPECT_GT(m_.view.config->generation, gen);

    EXPECT_FALSE(call({{"cmd", "backend.remove"}, {"backend", "10.9.9.9:1"}})["ok"].get<bool>());
    EXPECT_FALSE(
        call({{"cmd", "backend.weight"}, {"backend", 1}, {"weight", 70000}})["ok"].get<bool>());
    EXPECT_FALSE(call({{"cmd", "no.such"}})["ok"].get<bool>());
    EXPECT_FALSE(call({{"nocmd", 1}})["ok"].get<bool>());
    auto list = call({{"cmd", "backends"}});
    ASSERT_EQ(list["backends"].size(), 2u);
    EXPECT_EQ(list["backends"][0]["state"], "up");
}

// A health check in flight when its backend is removed and added again (same id, same address)
// was made for the earlier backend: its verdict is not the new one's.
TEST_F(DaemonTest, ProbeResultOfARemovedBackendIsNotAppliedToItsSuccessor) {
    auto c = config(2);
    c.health_interval_ms = 1500;
    c.health_timeout_ms = 800;
    start(c);
    const std::string third = "127.0.0.1:" + std::to_string(servers_[2].port());
    const json add = {{"cmd", "backend.add"}, {"spec", third + ",mac=02:00:00:00:00:33"}};
    auto checks = [&](const char *what) {
        return call({{"cmd", "backends"}})["backends"][2]["health"][what].get<int>();
    };
    ASSERT_TRUE(call(add)["ok"].get<bool>());
    ASSERT_TRUE(wait_for([&] { return checks("checks_ok") >= 1; }, 3000ms));
    // The next round's check of it hangs (answered by its timeout, a failure)...
    servers_[2].set_hang(true);
    const int h0 = servers_[2].hung();
    ASSERT_TRUE(wait_for([&] { return servers_[2].hung() > h0; }, 3000ms));
    // (That check stays hung; later ones are answered.)
    servers_[2].set_hang(false);
    // ... while the backend is removed and added again: the same id and address.
    ASSERT_TRUE(call({{"cmd", "backend.remove"}, {"backend", third}})["ok"].get<bool>());
    auto r = call(add);
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    ASSERT_EQ(r["backend"]["id"], 2);
    // The hung check's failure comes back first, then the new backend's own check (the re-add
    // starts a round at once).
    ASSERT_TRUE(wait_for([&] { return checks("checks_ok") >= 1; }, 4000ms));
    auto b = call({{"cmd", "backends"}})["backends"][2];
    EXPECT_EQ(b["health"]["checks_failed"], 0) << b.dump();
    EXPECT_EQ(b["health"]["last_error"], "") << b.dump();
}

// A dual-stack appliance: both SNAT addresses in kvs_config and in the API's status; an IPv6
// backend added through the API (a server on ::1) is health-checked up over IPv6, shown, selected
// and removed as [ADDR]:PORT, and the metrics listener takes an IPv6 address.
TEST_F(DaemonTest, DualStackConfigAndIpv6BackendThroughTheApi) {
    std::unique_ptr<TestHttpServer> v6;
    try {
        v6 = std::make_unique<TestHttpServer>(true);
    } catch (const std::exception &e) {
        // A host with IPv6 off skips; CI (IPv6 on) must run it: there a failure is one.
        if (std::getenv("CI")) FAIL() << "no IPv6 loopback server in CI: " << e.what();
        GTEST_SKIP() << e.what();
    }
    v6->set("/health", 200, "ok");
    v6->set("/metrics", 200, kVllmPage);
    auto c = config(1);
    std::string err;
    c.vips.push_back(*parse_endpoint("[fd00::9]:8000", &err));
    c.snat2_addr = *parse_address("fd02::1", &err);
    c.metrics_listen = "[::1]:" + std::to_string(kvtest::free_tcp_port());
    start(c);
    const kvs_config *k = m_.view.config;
    std::uint32_t fd02_1[4];
    ASSERT_EQ(inet_pton(AF_INET6, "fd02::1", fd02_1), 1);
    EXPECT_EQ(k->snat_family, KVS_AF_INET);
    EXPECT_EQ(k->snat_addr[0], inet_addr("10.0.1.1"));
    EXPECT_EQ(k->snat2_family, KVS_AF_INET6);
    EXPECT_EQ(0, std::memcmp(k->snat2_addr, fd02_1, 16));
    EXPECT_EQ(kvs_snat_addr(k, KVS_AF_INET6), k->snat2_addr);
    EXPECT_EQ(k->n_vips, 2u);
    EXPECT_EQ(k->vips[1].family, KVS_AF_INET6);

    auto st = call({{"cmd", "status"}});
    EXPECT_EQ(st["snat"], "10.0.1.1, fd02::1 ports 10000-32767");
    EXPECT_EQ(st["snat_addrs"], json::array({"10.0.1.1", "fd02::1"}));
    EXPECT_EQ(st["vips"], json::array({"10.0.0.1:80", "[fd00::9]:8000"}));

    const std::string addr = "[::1]:" + std::to_string(v6->port());
    auto r = call({{"cmd", "backend.add"}, {"addr", addr}, {"mac", "02:00:00:00:00:66"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["backend"]["addr"], addr);
    const auto id = r["backend"]["id"].get<unsigned>();
    ASSERT_TRUE(wait_for([&] { return state(id) == KVS_BE_UP; })) << "health check over IPv6";
    const kvs_backend &b = m_.view.backends[id];
    EXPECT_EQ(b.family, KVS_AF_INET6);
    EXPECT_EQ(0, std::memcmp(b.addr, &in6addr_loopback, 16));
    EXPECT_EQ(b.port, htons(v6->port()));
    EXPECT_EQ(call({{"cmd", "backends"}})["backends"][1]["addr"], addr);
    r = call({{"cmd", "backend.weight"}, {"backend", addr}, {"weight", 3}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(m_.view.backends[id].weight, 3);

    auto page = http_get_many({{*parse_endpoint(c.metrics_listen, &err), "/metrics"}}, 5000ms);
    ASSERT_TRUE(page[0].ok) << page[0].error;
    EXPECT_NE(page[0].body.find("kvsteerd_backend_up{backend=\"" + addr + "\","),
              std::string::npos);

    r = call({{"cmd", "backend.remove"}, {"backend", addr}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["removed"]["addr"], addr);
    EXPECT_EQ(state(id), KVS_BE_EMPTY);
}

// No NAT46: a backend of a family the appliance has no SNAT address of is refused, naming it.
TEST_F(DaemonTest, BackendOfAFamilyWithoutSnatAddressIsRefused) {
    start(config(1));  // IPv4 only
    auto r = call({{"cmd", "backend.add"}, {"spec", "[fd00::7]:8000,mac=02:00:00:00:00:77"}});
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_EQ(r["error"], "backend [fd00::7]:8000 is IPv6 but no IPv6 --snat-addr is given");
    EXPECT_EQ(call({{"cmd", "backends"}})["backends"].size(), 1u);
}

// A raw connection to the API socket at `path` (-1 on failure).
static int connect_unix(const std::string &path) {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

TEST_F(DaemonTest, GarbageOnTheSocketGetsAnErrorLine) {
    start(config(1));
    const int fd = connect_unix(sock_);
    ASSERT_GE(fd, 0);
    std::string req = "this is not json\n{\"cmd\":\"tune.get\"}\n";
    ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    std::string in;
    char buf[4096];
    while (std::count(in.begin(), in.end(), '\n') < 2) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        in.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    auto first = json::parse(in.substr(0, in.find('\n')));
    EXPECT_FALSE(first["ok"].get<bool>());
    auto second = json::parse(in.substr(in.find('\n') + 1));
    EXPECT_TRUE(second["ok"].get<bool>());
}

// A request nested 100,000 levels deep (200 KB, under the 1 MiB line limit) is refused with an
// error line, and the daemon answers the next: before, a handler quoting the value back
// (tune.set's error) recursed once per level in dump() and overflowed the stack (a segfault).
TEST_F(DaemonTest, DeeplyNestedRequestGetsAnErrorLine) {
    start(config(1));
    const int fd = connect_unix(sock_);
    ASSERT_GE(fd, 0);
    const std::string req = R"({"cmd":"tune.set","name":"load-factor","value":)" +
                            std::string(100000, '[') + std::string(100000, ']') +
                            "}\n{\"cmd\":\"tune.get\"}\n";
    std::size_t sent = 0;
    while (sent < req.size()) {
        const ssize_t n = send(fd, req.data() + sent, req.size() - sent, 0);
        ASSERT_GT(n, 0);
        sent += static_cast<std::size_t>(n);
    }
    std::string in;
    char buf[4096];
    while (std::count(in.begin(), in.end(), '\n') < 2) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0) << "the daemon went away";
        in.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    auto first = json::parse(in.substr(0, in.find('\n')));
    EXPECT_FALSE(first["ok"].get<bool>());
    EXPECT_NE(first["error"].get<std::string>().find("nested deeper than 64"), std::string::npos)
        << first.dump();
    auto second = json::parse(in.substr(in.find('\n') + 1));
    EXPECT_TRUE(second["ok"].get<bool>());
}

// A client that pipelines requests and does not read its answers: kvsteerd stops reading it
// once about 8 MiB of answers wait (its memory no longer grows with the client's requests), goes
// on serving the others meanwhile, and resumes when the client reads: every answer arrives, in
// order.
TEST_F(DaemonTest, ClientThatDoesNotReadIsThrottledNotBuffered) {
    start(config(1));
    const int fd = connect_api();
    ASSERT_GE(fd, 0);
    // "counters" answers are about 1.5 KB: 20000 of them are some 30 MB.
    constexpr std::size_t kRequests = 20000;
    std::string reqs;
    for (std::size_t i = 0; i < kRequests; i++) reqs += "{\"cmd\":\"counters\"}\n";
    std::thread writer([&] {  // blocks once kvsteerd stops reading
        for (std::size_t off = 0; off < reqs.size();) {
            const ssize_t n = send(fd, reqs.data() + off, reqs.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return;
            off += static_cast<std::size_t>(n);
        }
    });
    // The hog's requests handled so far: the daemon's count less this test's own calls.
    std::size_t own = 0;
    auto hog_handled = [&]() -> std::uint64_t {
        const json r = call({{"cmd", "counters"}});
        own++;
        if (!r.value("ok", false)) return 0;
        return r["daemon"]["api_requests"].get<std::uint64_t>() - own;
    };
    std::uint64_t stalled_at = 0;
    EXPECT_TRUE(wait_for(
        [&] {
            const std::uint64_t a = hog_handled();
            std::this_thread::sleep_for(300ms);
            const std::uint64_t b = hog_handled();
            stalled_at = b;
            // Past 1000 (~1.5 MB): a writer thread descheduled for a moment is no stall.
            return a > 1000 && a == b;
        },
        15000ms))
        << "the hog's requests kept being handled: " << stalled_at;
    EXPECT_LT(stalled_at, kRequests) << "every request was answered into memory";

    // Reading resumes it: all the answers, each a whole JSON line.
    std::string in;
    std::size_t lines = 0, ok = 0;
    char buf[65536];
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (lines < kRequests && std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        std::size_t from = 0, nl;
        while ((nl = in.find('\n', from)) != std::string::npos) {
            const json r = json::parse(in.substr(from, nl - from), nullptr, false);
            ok += r.is_object() && r.value("ok", false);
            lines++;
            from = nl + 1;
        }
        in.erase(0, from);
    }
    shutdown(fd, SHUT_RDWR);  // a writer still blocked (a failure above) returns
    writer.join();
    close(fd);
    EXPECT_EQ(lines, kRequests);
    EXPECT_EQ(ok, kRequests);
}

// Table changes pipelined by one client are published once per turn of the loop, not once each:
// each rebuilt the lookup table and waited out the table grace, and 64 of them a turn stalled
// the loop (reports, ticks, the dataplane's health) for a second or more.
TEST_F(DaemonTest, PipelinedTableChangesArePublishedOncePerTurn) {
    start(config(2));
    ASSERT_TRUE(wait_for([&] { return maglev_counts().size() == 2; }));
    const auto rebuilds = [&] { return call({{"cmd", "status"}})["maglev_rebuilds"].get<int>(); };
    const int before = rebuilds();
    const int fd = connect_api();
    ASSERT_GE(fd, 0);
    constexpr int kRequests = 41;  // backend 1 out of rotation and back, ending out
    std::string reqs;
    for (int i = 0; i < kRequests; i++)
        reqs += R"({"cmd":"backend.weight","backend":1,"weight":)" + std::to_string(i % 2) + "}\n";
    ASSERT_EQ(send(fd, reqs.data(), reqs.size(), MSG_NOSIGNAL), static_cast<ssize_t>(reqs.size()));
    std::string in;
    char buf[65536];
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::count(in.begin(), in.end(), '\n') < kRequests &&
           std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    EXPECT_EQ(std::count(in.begin(), in.end(), '\n'), kRequests);
    EXPECT_EQ(in.find("\"ok\":false"), std::string::npos) << in.substr(0, 300);
    EXPECT_LE(rebuilds() - before, 3) << "one rebuild a change";
    EXPECT_EQ(maglev_counts().count(1), 0u) << "the last change is in the table";
}

TEST_F(DaemonTest, UnhealthyBackendLeavesTablesAndReturns) {
    start(config(2));
    ASSERT_TRUE(wait_for([&] { return maglev_counts().size() == 2; }));
    servers_[1].set("/health", 503, "sick");
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_DOWN; }, 2000ms));
    // The slot's state is written before the new table is built and flipped in: wait for both.
    EXPECT_TRUE(wait_for([&] { return maglev_counts().count(1) == 0; }, 2000ms));
    EXPECT_EQ(maglev_counts()[0], KVS_MAGLEV_SIZE);
    // The last failed check's error (one that timed out on a busy machine says so instead).
    json b;
    EXPECT_TRUE(wait_for(
        [&] {
            b = call({{"cmd", "backends"}})["backends"][1];
            return b["health"]["last_error"].get<std::string>().find("503") != std::string::npos;
        },
        2000ms))
        << b.dump();
    servers_[1].set("/health", 200, "ok");
    ASSERT_TRUE(
        wait_for([&] { return state(1) == KVS_BE_UP && maglev_counts().count(1); }, 2000ms));
}

TEST_F(DaemonTest, PassiveBindFailuresTakeABackendDown) {
    auto c = config(2);
    c.health_fall = 3;
    start(c);
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP; }));
    // The dataplane keeps failing to bind to backend 0 although its /health answers.
    std::atomic<bool> stop{false};
    std::thread fails([&] {
        while (!stop) {
            std::atomic_ref<__u64>(m_.view.load[0].bind_fail_rst).fetch_add(2);
            std::this_thread::sleep_for(20ms);
        }
    });
    // Down and out of the table (the slot's state is written before the new table is flipped
    // in), seen while the failures go on: active checks bring it back after `rise` successes,
    // 60-120 ms after each fall, and the failures take it down again.
    bool down =
        wait_for([&] { return state(0) == KVS_BE_DOWN && maglev_counts().count(0) == 0; }, 3000ms);
    stop = true;
    fails.join();
    ASSERT_TRUE(down);
    // No more failures: active checks bring it back after `rise` successes.
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP; }, 3000ms));
    auto b = call({{"cmd", "backends"}})["backends"][0];
    EXPECT_GE(b["health"]["passive_failures"].get<int>(), 3);
}

TEST_F(DaemonTest, TelemetryFillsLoadAndDegradesToUnknown) {
    start(config(2));
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP; }));
    // Each wait is for what only the page being served gives (a scrape that failed on a busy
    // machine also leaves the loads 0, and its telemetry null).
    ASSERT_TRUE(wait_for(
        [&] { return m_.view.load[0].ext_queue == 7 && m_.view.load[0].ext_running == 3; }));
    json b;
    EXPECT_TRUE(wait_for([&] {
        b = call({{"cmd", "backends"}})["backends"][0]["telemetry"];
        return b["flavor"] == "vllm" && b["kv_usage"].is_number() &&
               b["kv_usage"].get<double>() == 0.5;
    })) << b.dump();
    servers_[0].set("/metrics", 200,
                    "vllm:num_requests_running NaN\nvllm:num_requests_waiting{ 12\n");
    EXPECT_TRUE(wait_for([&] {
        b = call({{"cmd", "backends"}})["backends"][0]["telemetry"];
        return b["flavor"] == "vllm" && b["metrics_unknown"].get<int>() > 0;
    })) << b.dump();
    EXPECT_TRUE(b["running"].is_null()) << b.dump();
    EXPECT_EQ(m_.view.load[0].ext_queue, 0u);
    EXPECT_EQ(m_.view.load[0].ext_running, 0u);
    servers_[0].set("/metrics", 500, "oops");
    ASSERT_TRUE(wait_for([&] {
        return call({{"cmd", "backends"}})["backends"][0]["telemetry"]["scrapes_failed"]
                   .get<int>() > 0;
    }));
    EXPECT_TRUE(stays_up(0, 400ms)) << "a failing scrape is not a failing health check";
}

TEST_F(DaemonTest, QueueCapFreezesMaxLoadWhileTheBackendQueues) {
    auto c = config(2);
    c.queue_cap = 5;
    c.backends[1].max_load = 2;  // a static bound stays the tighter one
    start(c);
    // Flows bound after the daemon took the slots (earlier counts belong to earlier occupants).
    std::atomic_ref<__u64>(m_.view.load[0].binds).store(3);
    std::atomic_ref<__u64>(m_.view.load[1].binds).store(9);
    // Backend 0 reports 7 waiting (>= 5): max_load = its 3 in-flight flows.
    ASSERT_TRUE(wait_for([&] { return m_.view.backends[0].max_load == 3u; }));
    EXPECT_EQ(m_.view.backends[0].max_load_cap, 1) << "a queue cap applies with the bound";
    ASSERT_TRUE(wait_for([&] { return m_.view.load[1].ext_queue == 7; }));
    // A round applied before the counts above were stored capped it at 1 (no flows): the next
    // one writes slot 0 before slot 1.
    EXPECT_TRUE(wait_for([&] { return m_.view.backends[1].max_load == 2u; }))
        << m_.view.backends[1].max_load;
    EXPECT_EQ(m_.view.backends[1].max_load_cap, 0) << "a static max_load replaces the bound";
    servers_[0].set("/metrics", 200, "vllm:num_requests_running 3\nvllm:num_requests_waiting 1\n");
    ASSERT_TRUE(wait_for([&] { return m_.view.backends[0].max_load == 0u; }))
        << "queue drained: bound is back";
    EXPECT_TRUE(wait_for([&] { return m_.view.backends[0].max_load_cap == 0; }));
}

TEST_F(DaemonTest, BindingReportsBecomeAffinityEntriesOnlyForUpBackends) {
    start(config(2));
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    kvs_bind_report r{};
    r.prefix_hash = 0x1234567890abcdefull;
    r.n_blocks = 2;
    r.block_hash[0] = 0x1111;
    r.block_hash[1] = 0x2222;
    r.backend_id = 1;
    produce(3, r);
    ASSERT_TRUE(wait_for([&] { return affinity(0x2222) != nullptr; }));
    const kvs_affinity_entry *e = affinity(0x2222);
    EXPECT_EQ(e->n_backends, 1);
    EXPECT_EQ(e->backends[0], 1);
    EXPECT_EQ(e->depth, 1);
    ASSERT_NE(affinity(0x1234567890abcdefull), nullptr);
    auto show = call({{"cmd", "affinity.show"}});
    EXPECT_EQ(show["total"], 3);

    auto p = call({{"cmd", "affinity.pin"},
                   {"key", "0xfeed"},
                   {"backends", {0, "127.0.0.1:" + std::to_string(servers_[1].port())}}});
    ASSERT_TRUE(p["ok"].get<bool>()) << p.dump();
    ASSERT_TRUE(wait_for([&] { return affinity(0xfeed) != nullptr; }));
    EXPECT_EQ(affinity(0xfeed)->n_backends, 2);

    servers_[1].set("/health", 503, "sick");
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_DOWN; }, 2000ms));
    // The slot's state is written before the affinity table is recomputed and flipped: wait for it.
    EXPECT_TRUE(wait_for([&] { return affinity(0x2222) == nullptr; }, 2000ms))
        << "entries whose backends are down leave the table";
    ASSERT_NE(affinity(0xfeed), nullptr);
    EXPECT_EQ(affinity(0xfeed)->n_backends, 1);
    EXPECT_EQ(affinity(0xfeed)->backends[0], 0);
    EXPECT_TRUE(call({{"cmd", "affinity.unpin"}, {"key", "0xfeed"}})["ok"].get<bool>());
    EXPECT_EQ(affinity(0xfeed), nullptr);
    EXPECT_FALSE(call({{"cmd", "affinity.unpin"}, {"key", 0xfeed}})["ok"].get<bool>());
    auto ctr = call({{"cmd", "counters"}});
    EXPECT_EQ(ctr["reports"]["consumed"], 1);
}

// affinity-min-hot: a hot prefix whose rate fell below the cool threshold keeps its replicas, and
// each compute that held it so is counted (held_hot) in the counters and on /metrics.
TEST_F(DaemonTest, AHotPrefixHeldByMinHotIsCounted) {
    auto c = config(2);
    c.hot_threshold = 1;             // requests/s: 10 reports make the prefix hot
    c.affinity_min_hot_ms = 600000;  // held for the whole test
    c.metrics_listen = "127.0.0.1:" + std::to_string(kvtest::free_tcp_port());
    start(c);
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    kvs_bind_report r{};
    r.prefix_hash = 0x77;
    r.backend_id = 1;
    for (int i = 0; i < 10; i++) produce(0, r);
    // Hot: a replica beside its holder.
    ASSERT_TRUE(wait_for([&] { return affinity(0x77) && affinity(0x77)->n_backends == 2; }));
    EXPECT_EQ(call({{"cmd", "counters"}})["affinity"]["held_hot"], 0);
    // Far below the cool threshold now: held hot, not cooled.
    ASSERT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "hot-threshold"}, {"value", 1000}})["ok"].get<bool>());
    json ctr;
    ASSERT_TRUE(wait_for([&] {
        ctr = call({{"cmd", "counters"}});
        return ctr["affinity"]["held_hot"].get<std::uint64_t>() > 0;
    })) << ctr.dump();
    EXPECT_EQ(ctr["affinity"]["cooled"], 0) << ctr.dump();
    ASSERT_NE(affinity(0x77), nullptr);
    EXPECT_EQ(affinity(0x77)->n_backends, 2) << "a held prefix keeps its replica";
    std::string err;
    auto m = http_get_many({{*parse_endpoint(c.metrics_listen, &err), "/metrics"}}, 5000ms);
    ASSERT_TRUE(m[0].ok) << m[0].error;
    auto page = parse_prometheus(m[0].body);
    bool seen = false;
    for (const auto &smp : page.samples)
        if (const std::string *d = smp.label("decision");
            smp.name == "kvsteerd_affinity_decisions_total" && d && *d == "held_hot") {
            seen = true;
            EXPECT_GT(smp.value, 0) << m[0].body;
        }
    EXPECT_TRUE(seen) << m[0].body;
}

// A second kvsteerd on the same maps and socket (started by hand beside the running one) is
// refused before it writes anything: it rewrote the running one's config (its live tuning gone),
// tables and owner table first. An api-socket path that is some other file is refused, not
// removed.
TEST_F(DaemonTest, ASecondDaemonChangesNothing) {
    start(config(1));
    ASSERT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "steering-mode"}, {"value", "round-robin"}})["ok"]
            .get<bool>());
    ASSERT_EQ(m_.view.config->steer_mode, static_cast<__u32>(KVS_STEER_ROUND_ROBIN));
    const kvs_config before = *m_.view.config;
    const std::vector<std::uint32_t> table = active_table();
    Daemon second(config(1), m_.view, m_.fleet);
    std::string err;
    EXPECT_FALSE(second.start(&err));
    EXPECT_NE(err.find("another kvsteerd"), std::string::npos) << err;
    EXPECT_EQ(std::memcmp(&before, m_.view.config, sizeof before), 0) << "its config unchanged";
    EXPECT_EQ(active_table(), table);
    EXPECT_TRUE(call({{"cmd", "status"}})["ok"].get<bool>()) << "the first still answers";

    const std::string file = sock_ + ".notasocket";
    { std::ofstream(file) << "backend = 10.0.0.9:8000\n"; }
    auto c = config(1);
    c.api_socket = file;
    Daemon third(c, m_.view, m_.fleet);
    EXPECT_FALSE(third.start(&err));
    EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
    struct stat st {};
    EXPECT_EQ(stat(file.c_str(), &st), 0) << "the file is still there";
    unlink(file.c_str());
}

TEST_F(DaemonTest, LiveTuningWritesConfig) {
    start(config(1));
    auto gen = m_.view.config->generation;
    auto r = call({{"cmd", "tune.set"}, {"name", "prefix-length"}, {"value", "512"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(m_.view.config->prefix_len, 512u);
    EXPECT_GT(m_.view.config->generation, gen);
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "steering-mode"}, {"value", "round-robin"}})["ok"]
            .get<bool>());
    EXPECT_EQ(m_.view.config->steer_mode, static_cast<__u32>(KVS_STEER_ROUND_ROBIN));
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "load-factor"}, {"value", 1.5}})["ok"].get<bool>());
    EXPECT_EQ(m_.view.config->load_factor_milli, 1500u);
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "load-slack"}, {"value", 8}})["ok"].get<bool>());
    EXPECT_EQ(m_.view.config->load_slack, 8u);
    EXPECT_EQ(std::string(m_.view.config->session_headers), "");  // off by default
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "session-headers"}, {"value", "X-Session-ID"}})["ok"]
            .get<bool>());
    EXPECT_EQ(std::string(m_.view.config->session_headers), "x-session-id");
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "session-cap"}, {"value", 2}})["ok"].get<bool>());
    EXPECT_EQ(m_.view.config->session_cap, 2u);
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "session-headers"}, {"value", ""}})["ok"].get<bool>());
    EXPECT_EQ(std::string(m_.view.config->session_headers), "");
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "block-size"}, {"value", 256}})["ok"].get<bool>());
    EXPECT_EQ(m_.view.config->block_size, 256u);
    EXPECT_TRUE(
        call({{"cmd", "tune.set"}, {"name", "replication"}, {"value", "3"}})["ok"].get<bool>());
    r = call({{"cmd", "tune.set"}, {"name", "replication"}, {"value", "9"}});
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r["error"].get<std::string>().find("replication"), std::string::npos);
    EXPECT_FALSE(call({{"cmd", "tune.set"}, {"name", "colour"}, {"value", "1"}})["ok"].get<bool>());
    auto t = call({{"cmd", "tune.get"}})["tunables"];
    EXPECT_EQ(t["replication"], 3);
    EXPECT_EQ(t["steering-mode"], "round-robin");
}

// Request fields are checked, not coerced: tune.set's value must be a string or a number (null,
// meant as "off", turned session affinity on keyed on a header named "null"); a backend.add
// field cannot carry more options through the spec's ',' (a model "m,weight=0" added weight 0);
// affinity.pin refuses a backend listed twice; affinity.show refuses a limit that is no count.
TEST_F(DaemonTest, RequestFieldsAreCheckedNotCoerced) {
    start(config(1));
    auto refused = [&](const json &req, const std::string &why) {
        const json r = call(req);
        EXPECT_FALSE(r["ok"].get<bool>()) << req.dump();
        EXPECT_NE(r.value("error", "").find(why), std::string::npos) << r.dump();
    };
    for (const json &v : {json(nullptr), json(false), json::array({"x"}), json::object()})
        refused({{"cmd", "tune.set"}, {"name", "session-headers"}, {"value", v}},
                "must be a string or a number");
    EXPECT_EQ(std::string(m_.view.config->session_headers), "");
    refused({{"cmd", "backend.add"}, {"addr", "10.0.2.9:8000"}, {"model", "m,weight=0"}},
            "model must not contain ','");
    refused({{"cmd", "backend.add"}, {"addr", "10.0.2.9:8000,weight=9"}, {"weight", 1}},
            "addr must not contain ','");
    refused({{"cmd", "backend.add"}, {"addr", "10.0.2.9:8000"}, {"weight", json::array({1})}},
            "weight must be a string or a number");
    // A field beside a spec was dropped (added in rotation with weight 1, answered ok).
    refused({{"cmd", "backend.add"}, {"spec", "10.0.2.9:8000"}, {"weight", 0}}, "not both");
    EXPECT_EQ(m_.view.config->n_backends, 1u) << "nothing added";
    refused({{"cmd", "affinity.pin"}, {"key", "0x1234"}, {"backends", json::array({0, "0"})}},
            "listed twice");
    for (const json &l : {json(-1), json("5"), json(5.5)})
        refused({{"cmd", "affinity.show"}, {"limit", l}}, "limit");
    // What is right still goes through.
    EXPECT_TRUE(call({{"cmd", "backend.add"},
                      {"addr", "10.0.2.9:8000"},
                      {"model", "m"},
                      {"weight", "3"}})["ok"]
                    .get<bool>());
    EXPECT_TRUE(call({{"cmd", "affinity.show"}, {"limit", 5}})["ok"].get<bool>());
}

TEST_F(DaemonTest, TuneChecksAsTheConfigDoes) {
    start(config(1));
    // tune.set answers with the config's own check (apply_tunable), word for word.
    for (const auto &[name, value] :
         std::vector<std::pair<std::string, json>>{{"max-held-bytes", "255"},
                                                   {"max-held-bytes", "-1"},
                                                   {"max-held-bytes", -1},
                                                   {"replication", "-1"},
                                                   {"replication", -1},
                                                   {"load-factor", -0.5},
                                                   {"affinity-ttl", "-100"},
                                                   {"block-size", "15"},
                                                   {"prefix-length", "20000"}}) {
        DaemonConfig c = config(1);
        std::string err;
        const std::string v = value.is_string() ? value.get<std::string>() : value.dump();
        ASSERT_FALSE(apply_tunable(c, name, v, &err)) << name << " = " << v;
        auto r = call({{"cmd", "tune.set"}, {"name", name}, {"value", value}});
        EXPECT_FALSE(r["ok"].get<bool>()) << name << " = " << v;
        EXPECT_EQ(r["error"], err);
    }
    EXPECT_EQ(m_.view.config->max_held_bytes, 14600u) << "refused values change nothing";
    auto r = call({{"cmd", "tune.set"}, {"name", "max-held-bytes"}, {"value", "256"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(m_.view.config->max_held_bytes, 256u);
    r = call({{"cmd", "tune.set"}, {"name", "prefix-length"}, {"value", "257"}});
    EXPECT_EQ(r["error"], "prefix-length: must not exceed max-held-bytes (256) (got '257')");
}

// Members 0, 1, 2 (MACs 02:00:00:00:f1:0N), one epoch of all three, this appliance `self`.
void with_fleet(DaemonConfig &c, std::uint8_t self) {
    std::string err;
    for (std::uint8_t i = 0; i < 3; i++)
        ASSERT_TRUE(c.fleet.set_mac(i, Mac{2, 0, 0, 0, 0xf1, i}, &err)) << err;
    c.fleet.self = self;
    ASSERT_TRUE(c.fleet.push(0b111, &err)) << err;
}

// The active kvs_owner half.
const kvs_owner_entry *active_owner(const FleetMaps &m) {
    return m.owner + static_cast<std::size_t>(m.fleet->owner_active & 1u) * KVS_OWNER_BUCKETS;
}

TEST_F(DaemonTest, WithoutFleetXdpSeesNone) {
    start(config(1));
    EXPECT_EQ(m_.fleet.fleet->self, KVS_APPLIANCE_NONE);
    EXPECT_EQ(m_.fleet.fleet->generation, 1u);
    EXPECT_EQ(active_owner(m_.fleet)[123].owner, KVS_APPLIANCE_NONE);
    auto r = call({{"cmd", "fleet.status"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_FALSE(r["fleet"]["enabled"].get<bool>());
    EXPECT_TRUE(r["fleet"]["self"].is_null());
    r = call({{"cmd", "fleet.push"}, {"members", "0"}});
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r["error"].get<std::string>().find("fleet-self"), std::string::npos) << r.dump();
}

// In a fleet through etcd, an appliance is not announced before it read the fleet from etcd
// (here etcd never answers): its table until then is the configuration's, which no other member
// agreed to. Before, it was announced 3 s after its dataplane was healthy whatever etcd said.
TEST_F(DaemonTest, AFleetThroughEtcdIsNotAnnouncedBeforeEtcdWasRead) {
    auto c = config(1);
    with_fleet(c, 0);
    std::string err;
    c.fleet_etcd = parse_endpoint("127.0.0.1:1", &err);  // nothing listens there
    ASSERT_TRUE(c.fleet_etcd) << err;
    c.announce_bird_socket = sock_ + ".no-bird";  // the wish is recorded whether BIRD answers
    Heartbeat beat(m_.view.ring_ctl[0]);
    start(c);
    bool healthy = false;
    for (int i = 0; i < 100 && !healthy; i++) {
        healthy = call({{"cmd", "drain.status"}})["dataplane"]["healthy"].get<bool>();
        if (!healthy) std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(healthy);
    std::this_thread::sleep_for(4s);  // past the 3 s the others get to agree
    const json a = call({{"cmd", "drain.status"}})["announce"];
    ASSERT_TRUE(a.is_object()) << a.dump();
    EXPECT_FALSE(a["want"].get<bool>()) << a.dump();
}

// A drain that cannot leave the fleet's owners (here: every epoch slot taken, the push refused)
// says so in its status (kvsteerctl drain exits 1 on it); it was only a note, and the drain went
// on to "drained, stop it now" while the appliance was still an owner.
TEST_F(DaemonTest, ADrainThatCannotLeaveTheOwnersSaysSo) {
    auto c = config(1);
    with_fleet(c, 0);
    std::string err;
    for (std::uint8_t i = 3; i < 8; i++)  // enough members for 16 distinct epochs
        ASSERT_TRUE(c.fleet.set_mac(i, Mac{2, 0, 0, 0, 0xf1, i}, &err)) << err;
    start(c);
    bool full = false;
    for (unsigned i = 1; i < 40 && !full; i++) {  // distinct sets with 0, 1 and 2 (repeats compact)
        std::string m = "0,1,2";
        for (unsigned b = 0; b < 5; b++)
            if (i & (1u << b)) m += "," + std::to_string(3 + b);
        full = !call({{"cmd", "fleet.push"}, {"members", m}})["ok"].get<bool>();
    }
    ASSERT_TRUE(full) << "the epochs never filled up";
    auto r = call({{"cmd", "drain.start"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    auto d = call({{"cmd", "drain.status"}})["drain"];
    EXPECT_EQ(d["fleet_failed"], true) << d.dump();
    EXPECT_EQ(d["fleet"].get<std::string>().rfind("leaving the owners failed: ", 0), 0u)
        << d.dump();
    // Done what the warning asks (the fleet pushed without it): no longer failed.
    ASSERT_TRUE(call({{"cmd", "fleet.settle"}})["ok"].get<bool>());
    ASSERT_TRUE(call({{"cmd", "fleet.push"}, {"members", "1,2"}})["ok"].get<bool>());
    d = call({{"cmd", "drain.status"}})["drain"];
    EXPECT_EQ(d["fleet_failed"], false) << d.dump();
    ASSERT_TRUE(call({{"cmd", "drain.cancel"}})["ok"].get<bool>());
    ASSERT_TRUE(call({{"cmd", "fleet.settle"}})["ok"].get<bool>());
    ASSERT_TRUE(call({{"cmd", "fleet.push"}, {"members", "0,1,2"}})["ok"].get<bool>());
    r = call({{"cmd", "drain.start"}});
    d = call({{"cmd", "drain.status"}})["drain"];
    EXPECT_EQ(d["fleet_failed"], false) << d.dump();
    // Without etcd only this appliance's epochs change: the note says to push the same elsewhere.
    EXPECT_EQ(d["fleet"].get<std::string>().rfind("left the owners here: 1,2 (push the same", 0),
              0u)
        << d.dump();
}

TEST_F(DaemonTest, FleetApiRewritesTheOwnerTable) {
    auto c = config(1);
    with_fleet(c, 0);
    start(c);
    kvs_fleet &f = *m_.fleet.fleet;
    EXPECT_EQ(f.self, 0u);
    EXPECT_EQ(f.generation, 1u);
    EXPECT_EQ(f.epoch, 1u);
    EXPECT_EQ(f.members[2].state, KVS_APP_UP);
    const FleetTable want = compute_fleet_table(c.fleet);
    EXPECT_EQ(f.digest, want.digest);
    EXPECT_EQ(0, std::memcmp(active_owner(m_.fleet), want.owner.data(),
                             KVS_OWNER_BUCKETS * sizeof(kvs_owner_entry)));

    auto r = call({{"cmd", "fleet.status"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    const json &st = r["fleet"];
    EXPECT_EQ(st["self"], 0);
    EXPECT_EQ(st["epochs"], json::parse("[[0,1,2]]"));
    ASSERT_EQ(st["members"].size(), 3u);
    std::uint64_t total = 0;
    for (const auto &m : st["members"]) {
        EXPECT_EQ(m["state"], "up");
        total += m["buckets"].get<std::uint64_t>();
    }
    EXPECT_EQ(total, KVS_OWNER_BUCKETS);
    EXPECT_EQ(st["members"][2]["mac"], "02:00:00:00:f1:02");
    EXPECT_EQ(st["generation"], 1);

    // A second appliance (self 1) given the same operations: the same table and digest.
    auto c2 = c;
    c2.fleet.self = 1;
    c2.api_socket = sock_ + ".2";
    HeapMaps m2;
    Daemon d2(c2, m2.view, m2.fleet);
    std::string err;
    ASSERT_TRUE(d2.start(&err)) << err;
    EXPECT_EQ(m2.fleet.fleet->self, 1u);
    auto both = [&](const json &req) {
        auto a = call(req), b = d2.handle(req);
        EXPECT_EQ(a["ok"], b["ok"]) << req.dump() << a.dump() << b.dump();
        if (a["ok"].get<bool>()) {
            EXPECT_EQ(a["fleet"]["digest"], b["fleet"]["digest"]) << req.dump();
        }
        return a;
    };

    // Drain 2: it owns nothing, and is asked second for exactly the buckets it owned.
    r = both({{"cmd", "fleet.push"}, {"members", "0,1"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_TRUE(r["changed"].get<bool>());
    EXPECT_EQ(f.generation, 2u);
    EXPECT_EQ(f.epoch, 2u);
    EXPECT_EQ(f.members[2].state, KVS_APP_DRAINING);
    EXPECT_EQ(r["fleet"]["members"][2]["state"], "draining");
    EXPECT_EQ(r["fleet"]["members"][2]["buckets"], 0);
    const kvs_owner_entry *now = active_owner(m_.fleet);
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        ASSERT_NE(now[b].owner, 2u);
        ASSERT_EQ(now[b].prev[0] == 2, want.owner[b].owner == 2) << b;
    }
    EXPECT_EQ(f.digest, std::stoull(r["fleet"]["digest"].get<std::string>(), nullptr, 16));
    EXPECT_EQ(m2.fleet.fleet->digest, f.digest);

    // Join 3, settle, forget 1: the two stay equal.
    ASSERT_TRUE(
        both({{"cmd", "fleet.member"}, {"id", 3}, {"mac", "02:00:00:00:f1:03"}})["ok"].get<bool>());
    ASSERT_TRUE(
        both({{"cmd", "fleet.push"}, {"members", json::array({0, 1, 3})}})["ok"].get<bool>());
    EXPECT_EQ(f.members[3].state, KVS_APP_UP);
    r = both({{"cmd", "fleet.settle"}});
    EXPECT_EQ(r["fleet"]["epochs"], json::parse("[[0,1,3]]"));
    EXPECT_EQ(f.members[2].state, KVS_APP_EMPTY);
    r = both({{"cmd", "fleet.forget"}, {"id", "1"}});
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["fleet"]["members"][1]["state"], "empty");
    now = active_owner(m_.fleet);
    for (std::uint32_t b = 0; b < KVS_OWNER_BUCKETS; b++) {
        ASSERT_TRUE(now[b].owner == 0 || now[b].owner == 3) << b;
        ASSERT_EQ(now[b].prev[0], KVS_APPLIANCE_NONE) << b;
    }
    EXPECT_EQ(m2.fleet.fleet->digest, f.digest);
    EXPECT_EQ(0, std::memcmp(active_owner(m_.fleet), active_owner(m2.fleet),
                             KVS_OWNER_BUCKETS * sizeof(kvs_owner_entry)));
    // Settling again changes nothing: nothing is rewritten.
    const auto gen = f.generation;
    r = both({{"cmd", "fleet.settle"}});
    EXPECT_FALSE(r["changed"].get<bool>());
    EXPECT_EQ(f.generation, gen);

    // Refusals leave everything as it was.
    const std::string digest = r["fleet"]["digest"];
    for (const auto &[req, msg] : std::vector<std::pair<json, std::string>>{
             {{{"cmd", "fleet.push"}, {"members", "0,9"}},
              "fleet.push: appliance 9 is not a member (give its MAC first: fleet member ID MAC)"},
             {{{"cmd", "fleet.push"}, {"members", "0,0"}},
              "fleet.push: appliance 0 is listed twice"},
             {{{"cmd", "fleet.push"}}, "fleet.push needs \"members\" (ID[,ID...])"},
             {{{"cmd", "fleet.forget"}, {"id", 16}},
              "fleet.forget: appliance id must be in 0..15 (got '16')"},
             {{{"cmd", "fleet.forget"}, {"id", 7}}, "fleet.forget: appliance 7 is not a member"},
             {{{"cmd", "fleet.member"}, {"id", 4}, {"mac", "ff:ff:ff:ff:ff:ff"}},
              "fleet.member: appliance 4: MAC ff:ff:ff:ff:ff:ff is not a unicast address"},
             // This appliance's own entry: its interface's MAC only (the config's rule).
             {{{"cmd", "fleet.member"}, {"id", 0}, {"mac", "02:00:00:00:00:99"}},
              "fleet.member: appliance 0 is this one: its MAC is 02:00:00:00:00:01, not "
              "02:00:00:00:00:99"}}) {
        r = call(req);
        EXPECT_FALSE(r["ok"].get<bool>()) << req.dump();
        EXPECT_EQ(r["error"], msg) << req.dump();
    }
    EXPECT_EQ(call({{"cmd", "fleet.status"}})["fleet"]["digest"], digest);
    EXPECT_EQ(f.generation, gen);
}

TEST_F(DaemonTest, ExportsPrometheusMetrics) {
    auto c = config(2);
    auto port = kvtest::free_tcp_port();
    c.metrics_listen = "127.0.0.1:" + std::to_string(port);
    start(c);
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP; }));
    m_.view.dp_stats[1 * KVS_STATS_MAX + 0] = 5;  // worker 1, reason 0
    std::string err;
    auto r = http_get_many({{*parse_endpoint(c.metrics_listen, &err), "/metrics"}}, 5000ms);
    ASSERT_TRUE(r[0].ok) << r[0].error;
    EXPECT_EQ(r[0].status, 200);
    auto page = parse_prometheus(r[0].body);
    EXPECT_EQ(page.bad_lines, 0u) << page.first_error;  // our own parser accepts our own page
    EXPECT_NE(r[0].body.find("kvsteerd_backend_up{backend=\"127.0.0.1:"), std::string::npos);
    EXPECT_NE(r[0].body.find("kvsteerd_affinity_decisions_total{decision=\"report\"}"),
              std::string::npos);
    EXPECT_NE(r[0].body.find("kvsteer_dataplane_reason_total{reason=\"pass_not_ip\"} 5"),
              std::string::npos);
    auto nf = http_get_many({{*parse_endpoint(c.metrics_listen, &err), "/nope"}}, 5000ms);
    EXPECT_EQ(nf[0].status, 404);
}

// 32 idle connections hold every metrics slot: a scrape still gets its page, the oldest idle
// connection closed to make room (counted). Before, the new connection was closed silently and
// every scrape failed while they stayed.
TEST_F(DaemonTest, IdleMetricsConnectionsDoNotStopScrapes) {
    auto c = config(1);
    auto port = kvtest::free_tcp_port();
    c.metrics_listen = "127.0.0.1:" + std::to_string(port);
    start(c);
    std::vector<int> idle;
    for (int i = 0; i < 32; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
        idle.push_back(fd);
    }
    std::string err;
    const Endpoint ep = *parse_endpoint(c.metrics_listen, &err);
    // The daemon accepts them on its loop; a connection is evictable once silent for 1 s.
    ASSERT_TRUE(wait_for([&] { return call({{"cmd", "counters"}})["ok"].get<bool>(); }));
    std::this_thread::sleep_for(1200ms);
    auto r = http_get_many({{ep, "/metrics"}}, 2000ms);
    EXPECT_TRUE(r[0].ok) << r[0].error;
    EXPECT_EQ(r[0].status, 200);
    auto counters = call({{"cmd", "counters"}});
    EXPECT_GE(counters["daemon"]["clients_evicted"].get<std::uint64_t>(), 1u) << counters.dump();
    EXPECT_EQ(counters["daemon"]["clients_refused"].get<std::uint64_t>(), 0u);
    for (int fd : idle) close(fd);
}

namespace {
// One line read from fd (up to its newline), or "" after `timeout`.
std::string read_line(int fd, std::chrono::milliseconds timeout) {
    std::string in;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (in.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
    }
    return in.substr(0, in.find('\n'));
}
}  // namespace

// The last request of a client that shuts its sending side after it, without a newline, is
// answered (it was dropped unanswered).
TEST_F(DaemonTest, ALastRequestWithoutItsNewlineIsAnswered) {
    start(config(1));
    int fd = connect_unix(sock_);
    ASSERT_GE(fd, 0);
    const std::string req = R"({"cmd":"status"})";
    ASSERT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    shutdown(fd, SHUT_WR);
    auto j = json::parse(read_line(fd, 3000ms), nullptr, false);
    close(fd);
    ASSERT_TRUE(j.is_object()) << "no answer";
    EXPECT_EQ(j["ok"], true) << j.dump();
    EXPECT_TRUE(j.contains("pid")) << j.dump();
}

// 64 clients each stopped in the middle of a request line took every API slot for good (none is
// evictable: each holds request bytes): after 10 s without a byte they are closed and the API
// answers again.
TEST_F(DaemonTest, ClientsStuckInTheMiddleOfARequestLoseTheirSlots) {
    start(config(1));
    std::vector<int> stuck;
    for (int i = 0; i < 64; i++) {
        int fd = connect_unix(sock_);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(send(fd, "{", 1, MSG_NOSIGNAL), 1);
        stuck.push_back(fd);
    }
    // Every slot taken by a half-sent request: a new client is refused.
    ASSERT_TRUE(wait_for(
        [&] {
            int fd = connect_unix(sock_);
            const std::string req = "{\"cmd\":\"status\"}\n";
            bool answered = fd >= 0 && send(fd, req.data(), req.size(), MSG_NOSIGNAL) > 0 &&
                            !read_line(fd, 500ms).empty();
            if (fd >= 0) close(fd);
            return !answered;
        },
        3000ms));
    std::string err;
    auto r = wait_for(
        [&] {
            return api_call(sock_, {{"cmd", "counters"}}, 500ms, &err).has_value();
        },
        14000ms);
    EXPECT_TRUE(r) << err;
    // Each stuck client is closed 10 s after its own byte: the first freed slot answers the call
    // above while the last ones (connected up to a few hundred ms later on a slow machine) wait.
    json counters;
    EXPECT_TRUE(wait_for(
        [&] {
            counters = call({{"cmd", "counters"}});
            return counters.contains("daemon") &&
                   counters["daemon"]["clients_evicted"].get<std::uint64_t>() >= 64u;
        },
        3000ms))
        << counters.dump();
    ASSERT_TRUE(counters.contains("daemon")) << counters.dump();
    EXPECT_GE(counters["daemon"]["clients_refused"].get<std::uint64_t>(), 1u) << counters.dump();
    for (int fd : stuck) close(fd);
}

// A client sending its request line a byte every second is closed 10 s after the line's first
// byte: the limit counted from the last byte, so such a client held its slot for good (64 of
// them locked kvsteerctl out).
TEST_F(DaemonTest, AClientTricklingARequestLineIsClosed) {
    start(config(1));
    int fd = connect_unix(sock_);
    ASSERT_GE(fd, 0);
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(send(fd, "{", 1, MSG_NOSIGNAL), 1);
    bool closed = false;
    for (int i = 0; i < 16 && !closed; i++) {  // 16 s at most
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 1000) > 0) {
            char b;
            closed = recv(fd, &b, 1, 0) <= 0;
        }
        if (!closed) closed = send(fd, " ", 1, MSG_NOSIGNAL) != 1;
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    close(fd);
    EXPECT_TRUE(closed) << "still open after 16 s of a byte a second";
    EXPECT_GE(took, 10s);
    const json counters = call({{"cmd", "counters"}});
    ASSERT_TRUE(counters.contains("daemon")) << counters.dump();
    EXPECT_GE(counters["daemon"]["clients_evicted"].get<std::uint64_t>(), 1u);
}

// Every slot held by an answered client (not idle a second yet: none can be evicted): one closes
// and a new one connects at once. The finished client's slot is the new one's: it was refused
// when its connection was accepted in the turn that read the other's close (the finished client
// was erased after the accepts), so a CLI call right after another's failed now and then.
TEST_F(DaemonTest, ASlotFreedThisTurnTakesTheNextClient) {
    start(config(1));
    const std::string req = "{\"cmd\":\"status\"}\n";
    auto open_answered = [&] {
        int fd = connect_unix(sock_);
        if (fd < 0) return -1;
        if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) <= 0 || read_line(fd, 10000ms).empty()) {
            close(fd);
            return -1;
        }
        return fd;
    };
    std::vector<int> held;
    for (int i = 0; i < 64; i++) {
        const int fd = open_answered();
        ASSERT_GE(fd, 0) << "client " << i;
        held.push_back(fd);
    }
    int refused = 0;
    for (int round = 0; round < 40; round++) {
        close(held.back());
        held.pop_back();
        const int fd = open_answered();
        if (fd < 0) {
            refused++;
            // the slot is free once the daemon has read the close: take it back for the next round
            ASSERT_TRUE(wait_for([&] {
                const int again = open_answered();
                if (again >= 0) held.push_back(again);
                return again >= 0;
            }));
        } else {
            held.push_back(fd);
        }
    }
    EXPECT_EQ(refused, 0);
    for (int fd : held) close(fd);
}

TEST_F(DaemonTest, RestartKeepsBackendIds) {
    // A daemon restarted over the same maps keeps each backend's slot (flows and load stay
    // attributed), whatever the order in the new configuration.
    auto c = config(2);
    start(c);
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_UP; }));
    auto gen = m_.view.config->generation;
    d_->stop();
    loop_.join();
    d_.reset();
    std::swap(c.backends[0], c.backends[1]);
    start(c);
    EXPECT_EQ(m_.view.backends[1].port, htons(servers_[1].port()));
    EXPECT_EQ(m_.view.backends[0].port, htons(servers_[0].port()));
    EXPECT_GT(m_.view.config->generation, gen);
}

// A publisher that says its cache was cleared in every message: each reset is counted and acted
// on, but the affinity table is recomputed at most every 100 ms (each wake-up with a reset was a
// full policy compute on the event loop).
TEST_F(DaemonTest, KvEventsResetFloodIsThrottled) {
#ifndef KVS_TEST_ZMQ
    GTEST_SKIP() << "built without libzmq";
#else
    kvtest::XPub pub;
    ASSERT_TRUE(pub.ok());
    start(kv_config(pub.endpoint()));
    ASSERT_TRUE(pub.wait_subscriber());
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    auto computes = [&] {
        return call({{"cmd", "counters"}})["daemon"]["affinity_computes"].get<std::uint64_t>();
    };
    auto clears = [&] {
        const json k = call({{"cmd", "backends"}})["backends"][1]["kv_events"];
        return k.is_object() ? k["clears"].get<int>() : -1;
    };
    const std::uint64_t before = computes();
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int kN = 150;
    for (int i = 0; i < kN; i++) {
        ASSERT_TRUE(pub.send(
            kvtest::frames(static_cast<std::uint64_t>(i), kvtest::batch({kvtest::cleared()}))));
        std::this_thread::sleep_for(2ms);
    }
    ASSERT_TRUE(wait_for([&] { return clears() == kN; }, 5000ms)) << clears();
    std::this_thread::sleep_for(150ms);  // a publish held back goes out
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    const std::uint64_t n = computes() - before;
    EXPECT_GE(n, 1u) << "a reset is acted on";
    EXPECT_LE(n, static_cast<std::uint64_t>(ms / 100 + ms / 1000 + 4))
        << n << " policy computes in " << ms << " ms for " << kN << " resets";
#endif
}

TEST_F(DaemonTest, KvEventsClearForgetsTheBackendsPrefixes) {
#ifndef KVS_TEST_ZMQ
    GTEST_SKIP() << "built without libzmq";
#else
    using namespace kvtest;
    XPub pub;
    ASSERT_TRUE(pub.ok());
    auto c = kv_config(pub.endpoint());
    c.metrics_listen = "127.0.0.1:" + std::to_string(kvtest::free_tcp_port());
    start(c);
    ASSERT_TRUE(pub.wait_subscriber()) << "kvsteerd subscribes at start";
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    // Backend 1 holds a prefix and a block (a binding report).
    kvs_bind_report r{};
    r.prefix_hash = 0xabcdef0123456789ull;
    r.n_blocks = 1;
    r.block_hash[0] = 0x3333;
    r.backend_id = 1;
    produce(0, r);
    ASSERT_TRUE(wait_for(
        [&] { return affinity(0x3333) != nullptr && affinity(0xabcdef0123456789ull) != nullptr; }));

    auto kv = [&](unsigned i) { return call({{"cmd", "backends"}})["backends"][i]["kv_events"]; };
    ASSERT_TRUE(pub.send(frames(0, batch({stored(5), removed(2)}))));
    ASSERT_TRUE(wait_for([&] { return kv(1)["messages"] == 1; }));
    auto k = kv(1);
    EXPECT_EQ(k["endpoint"], pub.endpoint());
    EXPECT_EQ(k["resident_blocks"], 3);
    EXPECT_EQ(k["blocks_stored"], 5);
    EXPECT_EQ(k["blocks_removed"], 2);
    EXPECT_EQ(k["clears"], 0);
    EXPECT_EQ(k["last_seq"], 0);
    EXPECT_DOUBLE_EQ(k["last_batch_ts"].get<double>(), 1.5);
    EXPECT_GE(k["last_event_age_s"].get<double>(), 0.0);
    EXPECT_TRUE(kv(0).is_null()) << "no kv-events= on backend 0";
    EXPECT_NE(affinity(0x3333), nullptr) << "stores and removals say nothing about our prefixes";

    // Garbage is counted and skipped; then the server empties its cache.
    ASSERT_TRUE(pub.send({"", "not", "msgpack", "at all"}));
    ASSERT_TRUE(pub.send(frames(1, batch({cleared()}))));
    // The clear first (a backend down also takes its entries out of the table).
    ASSERT_TRUE(wait_for([&] { return kv(1)["clears"] == 1; }));
    ASSERT_TRUE(wait_for([&] {
        return affinity(0x3333) == nullptr && affinity(0xabcdef0123456789ull) == nullptr;
    })) << "a cleared cache holds none of our prefixes";
    k = kv(1);
    EXPECT_EQ(k["messages"], 3);
    EXPECT_EQ(k["decode_errors"], 1);
    EXPECT_EQ(k["clears"], 1);
    EXPECT_EQ(k["resident_blocks"], 0);
    EXPECT_EQ(k["seq_gaps"], 0);
    EXPECT_TRUE(stays_up(1, 400ms)) << "a reset cache is not a sick backend";
    auto ctr = call({{"cmd", "counters"}});
    EXPECT_EQ(ctr["daemon"]["kv_cache_resets"], 1);
    EXPECT_GE(ctr["affinity"]["holders_flushed"].get<int>(), 1);
    auto st = call({{"cmd", "status"}});
    EXPECT_EQ(st["kv_events"]["supported"], true);
    EXPECT_EQ(st["kv_events"]["backends"], 1);
    EXPECT_EQ(st["kv_events"]["clears"], 1);
    EXPECT_EQ(st["kv_events"]["decode_errors"], 1);
    EXPECT_EQ(st["kv_events"]["cache_resets"], 1);

    std::string err;
    auto m = http_get_many({{*parse_endpoint(c.metrics_listen, &err), "/metrics"}}, 5000ms);
    ASSERT_TRUE(m[0].ok) << m[0].error;
    auto page = parse_prometheus(m[0].body);
    EXPECT_EQ(page.bad_lines, 0u) << page.first_error;
    const std::string be = "{backend=\"127.0.0.1:" + std::to_string(servers_[1].port()) + "\"}";
    EXPECT_NE(m[0].body.find("kvsteerd_backend_kv_clears_total" + be + " 1\n"), std::string::npos)
        << m[0].body;
    EXPECT_NE(m[0].body.find("kvsteerd_backend_kv_resident_blocks" + be + " 0\n"),
              std::string::npos);
    EXPECT_NE(m[0].body.find("kvsteerd_backend_kv_decode_errors_total" + be + " 1\n"),
              std::string::npos);
    EXPECT_NE(m[0].body.find("kvsteerd_kv_cache_resets_total 1\n"), std::string::npos);

    // The API takes kv-events= too, and refuses a publisher another backend already has.
    XPub pub2;
    ASSERT_TRUE(pub2.ok());
    auto add = call({{"cmd", "backend.add"},
                     {"addr", "127.0.0.1:" + std::to_string(servers_[2].port())},
                     {"kv_events", pub.endpoint()}});
    EXPECT_FALSE(add["ok"].get<bool>());
    add = call({{"cmd", "backend.add"},
                {"addr", "127.0.0.1:" + std::to_string(servers_[2].port())},
                {"kv_events", "udp://x"}});
    EXPECT_FALSE(add["ok"].get<bool>());
    EXPECT_NE(add["error"].get<std::string>().find("kv-events"), std::string::npos) << add.dump();
    add = call({{"cmd", "backend.add"},
                {"addr", "127.0.0.1:" + std::to_string(servers_[2].port())},
                {"kv_events", pub2.endpoint()}});
    ASSERT_TRUE(add["ok"].get<bool>()) << add.dump();
    EXPECT_EQ(add["backend"]["kv_events"]["endpoint"], pub2.endpoint());
    ASSERT_TRUE(pub2.wait_subscriber());
#endif
}

TEST_F(DaemonTest, KvEventsWithoutSupportIsAStartupError) {
    if (kv_events_supported())
        GTEST_SKIP()
            << "built with libzmq: kv-events= is supported (the no-libzmq build runs this)";
    auto c = config(1);
    c.backends[0].kv_events = "tcp://127.0.0.1:5557";
    Daemon d(c, m_.view);
    std::string err;
    EXPECT_FALSE(d.start(&err));
    EXPECT_NE(err.find("built without KV events support"), std::string::npos) << err;
    EXPECT_NE(err.find("kv-events=tcp://127.0.0.1:5557"), std::string::npos) << err;
    EXPECT_TRUE(d.start_failed_on_config()) << "exit 2: not restarted every second forever";
}

// Whatever a control client sends (wrong types, out-of-range numbers, huge or deeply nested
// values, in any field of any command), the answer is an object with a boolean "ok" and, when
// false, a non-empty error; the daemon keeps answering, and the errors are counted.
// A backend named by its id as a string: every digit counts (no cut after six), anything else in
// it is an error naming the problem.
TEST_F(DaemonTest, BackendIdStringsAreParsedWhole) {
    Daemon d(config(2), m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    auto drain = [&](const json &sel) {
        return d.handle({{"cmd", "backend.drain"}, {"backend", sel}, {"drain", false}});
    };
    json r = drain("1");
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["backend"]["id"], 1);
    r = drain("0000001");
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["backend"]["id"], 1) << "leading zeros: still id 1";
    r = drain("0000012");  // cut to six digits it was "000001": backend 1
    EXPECT_FALSE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["error"], "no backend with id 12");
    r = drain("1234567");
    EXPECT_FALSE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["error"], "backend id 1234567 is out of range 0..1023");
    r = drain(std::string(100000, '0') + "1");  // every digit read, however many
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump().substr(0, 200);
    EXPECT_EQ(r["backend"]["id"], 1);
    r = drain(std::string(100000, '9'));
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r["error"].get<std::string>().find("out of range"), std::string::npos);
    EXPECT_LT(r["error"].get<std::string>().size(), 100u) << "the id is not echoed whole";
    r = drain("12abc");
    EXPECT_FALSE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(
        r["error"].get<std::string>().rfind("backend must be ADDR:PORT or an id 0..1023: ", 0), 0u)
        << r.dump();
    r = drain(json(5000));
    EXPECT_EQ(r["error"], "backend id 5000 is out of range 0..1023");
    EXPECT_EQ(parse_backend_id("0000012", &err), std::optional<std::uint16_t>(12));
    EXPECT_EQ(parse_backend_id("1023", &err), std::optional<std::uint16_t>(1023));
    EXPECT_FALSE(parse_backend_id("1024", &err));
    EXPECT_FALSE(parse_backend_id("", &err));
    EXPECT_FALSE(parse_backend_id("-1", &err));
    EXPECT_FALSE(parse_backend_id("1 ", &err));
}

// Key 0 marks an empty affinity slot: refused as a number as it is as a string.
TEST_F(DaemonTest, AffinityKeyZeroIsRefusedAsNumberAndString) {
    Daemon d(config(2), m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    for (const json &k : {json(0), json("0x0"), json("0X0000")}) {
        for (const char *cmd : {"affinity.pin", "affinity.unpin"}) {
            const json r = d.handle({{"cmd", cmd}, {"key", k}, {"backends", {0}}});
            EXPECT_FALSE(r["ok"].get<bool>()) << cmd << " " << k.dump();
            EXPECT_EQ(r["error"], "key: key 0 marks an empty slot") << cmd << " " << k.dump();
        }
    }
    const json ok = d.handle({{"cmd", "affinity.pin"}, {"key", 1}, {"backends", {0}}});
    EXPECT_TRUE(ok["ok"].get<bool>()) << ok.dump();
}

// A drain outlives a kvsteerd restart (a crash after "drained: stop it now" announced the VIP
// again); a cancelled one does not.
TEST_F(DaemonTest, ADrainOutlivesARestart) {
    auto c = config(1);
    start(c);
    // Nothing withdraws this appliance (no BIRD, no fleet): refused unless forced.
    const json no = call({{"cmd", "drain.start"}});
    EXPECT_FALSE(no["ok"].get<bool>());
    EXPECT_NE(no["error"].get<std::string>().find("nothing withdraws this appliance"),
              std::string::npos)
        << no.dump();
    // A force that is no boolean is named (it was the JSON library's type error).
    const json bad = call({{"cmd", "drain.start"}, {"force", "yes"}});
    EXPECT_FALSE(bad["ok"].get<bool>());
    EXPECT_EQ(bad["error"], "drain: force must be true or false") << bad.dump();
    ASSERT_TRUE(call({{"cmd", "drain.start"}, {"force", true}})["ok"].get<bool>());
    restart(c);
    EXPECT_EQ(call({{"cmd", "drain.status"}})["drain"]["active"], true);
    ASSERT_TRUE(call({{"cmd", "drain.cancel"}})["ok"].get<bool>());
    restart(c);
    EXPECT_EQ(call({{"cmd", "drain.status"}})["drain"]["active"], false);
    // A marker from another boot (an api-socket outside /run) is removed, not obeyed.
    {
        std::ofstream f(sock_ + ".draining");
        f << "00000000-0000-0000-0000-000000000000\n";
    }
    restart(c);
    EXPECT_EQ(call({{"cmd", "drain.status"}})["drain"]["active"], false);
    EXPECT_NE(access((sock_ + ".draining").c_str(), F_OK), 0);
}

// A drain is done only once it settled (3 s at least: the router and the other appliances take
// the withdrawal and the leave) and no flow, bound or being bound, was left for a second. Before,
// done came in the call that started it when no flow was bound at that moment, and the flights
// the dataplane was binding (not yet in its backends' binds - closes) were not counted.
TEST_F(DaemonTest, ADrainIsDoneOnlyOnceSettledAndQuietForASecond) {
    auto c = config(1);
    Heartbeat beat(m_.view.ring_ctl[0]);
    start(c);
    ASSERT_TRUE(wait_for([&] {
        return call({{"cmd", "drain.status"}})["dataplane"]["healthy"] == true;
    }));
    auto drain = [&] { return call({{"cmd", "drain.status"}})["drain"]; };
    using clock = std::chrono::steady_clock;

    // No flow at all: not done at once, done after the settle time.
    auto t0 = clock::now();
    ASSERT_TRUE(call({{"cmd", "drain.start"}, {"force", true}})["ok"].get<bool>());
    json d = drain();
    EXPECT_EQ(d["done"], false) << d.dump();
    EXPECT_EQ(d["flows_left"], 0) << d.dump();
    EXPECT_EQ(d["waiting_for"], "the withdrawal and the leave to settle") << d.dump();
    ASSERT_TRUE(wait_for([&] { return drain()["done"] == true; }, 8000ms));
    EXPECT_GE(clock::now() - t0, 3s);
    EXPECT_TRUE(drain()["waiting_for"].is_null());
    ASSERT_TRUE(call({{"cmd", "drain.cancel"}})["ok"].get<bool>());

    // A flow being bound (kvs_ring_ctl.binding): counted, waited for; then a quiet second.
    std::atomic_ref<__u64>(m_.view.ring_ctl[0].binding).store(1);
    ASSERT_TRUE(call({{"cmd", "drain.start"}, {"force", true}})["ok"].get<bool>());
    std::this_thread::sleep_for(4s);  // past the settle time
    d = drain();
    EXPECT_EQ(d["done"], false) << d.dump();
    EXPECT_EQ(d["flows_left"], 1) << d.dump();
    EXPECT_EQ(d["waiting_for"], "the flows here to end") << d.dump();
    const auto cleared = clock::now();
    std::atomic_ref<__u64>(m_.view.ring_ctl[0].binding).store(0);
    ASSERT_TRUE(wait_for([&] { return drain()["done"] == true; }, 5000ms));
    EXPECT_GE(clock::now() - cleared, 1s) << "done before a quiet second";
}

// A backend drained by the operator stays drained across a kvsteerd restart even when it was
// down at the time (the map said only DOWN: it took new flows again once up); a cancelled drain
// or a removed backend is not brought back.
TEST_F(DaemonTest, ABackendDrainOutlivesARestartWhileItIsDown) {
    auto c = config(2);
    start(c);
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_UP; }));
    const std::string one = "127.0.0.1:" + std::to_string(servers_[1].port());
    ASSERT_TRUE(call({{"cmd", "backend.drain"}, {"backend", one}})["ok"].get<bool>());
    servers_[1].set("/health", 503, "maintenance");
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_DOWN; }, 3000ms));
    restart(c);
    servers_[1].set("/health", 200, "ok");
    ASSERT_TRUE(wait_for([&] { return state(1) != KVS_BE_DOWN; }, 3000ms));
    EXPECT_EQ(state(1), KVS_BE_DRAIN) << "back up, still drained";
    EXPECT_EQ(call({{"cmd", "backends"}})["backends"][1]["state"], "drain");
    // Cancelled: a restart leaves it up.
    ASSERT_TRUE(
        call({{"cmd", "backend.drain"}, {"backend", one}, {"drain", false}})["ok"].get<bool>());
    EXPECT_NE(access((sock_ + ".backend-drains").c_str(), F_OK), 0) << "no drains, no file";
    restart(c);
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_UP; }, 3000ms));
    // A file from another boot is removed, not obeyed.
    {
        std::ofstream f(sock_ + ".backend-drains");
        f << "00000000-0000-0000-0000-000000000000\n" << one << "\n";
    }
    restart(c);
    ASSERT_TRUE(wait_for([&] { return state(1) == KVS_BE_UP; }, 3000ms));
    EXPECT_NE(access((sock_ + ".backend-drains").c_str(), F_OK), 0);
}

// kvsteerd tells systemd it is ready (Type=notify) with one datagram to $NOTIFY_SOCKET, a path or
// an abstract name; without NOTIFY_SOCKET nothing is sent and nothing fails.
TEST(Notify, ReadyReachesNotifySocket) {
    for (const bool abstract : {false, true}) {
        const std::string name = std::string(abstract ? "@" : "/tmp/") + "kvs-notify-" +
                                 std::to_string(getpid()) + (abstract ? "a" : "p");
        const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, name.data(), name.size());
        if (abstract) a.sun_path[0] = '\0';
        const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
        if (!abstract) unlink(name.c_str());
        ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&a), len), 0) << std::strerror(errno);
        setenv("NOTIFY_SOCKET", name.c_str(), 1);
        std::string err;
        EXPECT_TRUE(notify_systemd("READY=1", &err)) << err;
        char buf[64] = {};
        const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "READY=1");
        close(fd);
        if (!abstract) unlink(name.c_str());
    }
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    std::string err;
    EXPECT_FALSE(notify_systemd("READY=1", &err));
    EXPECT_NE(err.find("not a socket path"), std::string::npos) << err;
    unsetenv("NOTIFY_SOCKET");
    EXPECT_TRUE(notify_systemd("READY=1", &err));
}

// Pins are kept to a quarter of the table (unbounded, they pushed every learned prefix out).
TEST_F(DaemonTest, PinsAreBounded) {
    auto c = config(2);
    c.affinity_max_entries = 8;  // 2 pins
    Daemon d(c, m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    auto pin = [&](std::uint64_t k) {
        return d.handle({{"cmd", "affinity.pin"}, {"key", k}, {"backends", {0}}});
    };
    EXPECT_TRUE(pin(1)["ok"].get<bool>());
    EXPECT_TRUE(pin(2)["ok"].get<bool>());
    const json r = pin(3);
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r["error"].get<std::string>().find("2 pins already, at most 2"), std::string::npos)
        << r.dump();
    EXPECT_TRUE(pin(2)["ok"].get<bool>()) << "a pinned key may be pinned again";
    EXPECT_TRUE(d.handle({{"cmd", "affinity.unpin"}, {"key", 1}})["ok"].get<bool>());
    EXPECT_TRUE(pin(3)["ok"].get<bool>());
}

// affinity-max-entries 0 writes no affinity entry: a pin is refused (it was answered ok, with
// one pin allowed, and never written).
TEST_F(DaemonTest, NoPinWithoutAffinityEntries) {
    auto c = config(2);
    c.affinity_max_entries = 0;
    Daemon d(c, m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    const json r = d.handle({{"cmd", "affinity.pin"}, {"key", 1}, {"backends", {0}}});
    EXPECT_FALSE(r["ok"].get<bool>());
    EXPECT_NE(r.value("error", "").find("affinity-max-entries is 0"), std::string::npos)
        << r.dump();
}

// A key in text must say it is hex: bare digits were read as hex ("291", a decimal hash copied
// from a log, pinned 0x291). 291 as a number and "0x123" name the same pin.
TEST_F(DaemonTest, AffinityKeyTextMustBeHex) {
    Daemon d(config(2), m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    for (const json &k : {json("291"), json("0000"), json("abc")}) {
        const json r = d.handle({{"cmd", "affinity.pin"}, {"key", k}, {"backends", {0}}});
        EXPECT_FALSE(r["ok"].get<bool>()) << k.dump();
        EXPECT_NE(r["error"].get<std::string>().find("write the key as 0x<hex>"), std::string::npos)
            << r.dump();
    }
    ASSERT_TRUE(
        d.handle({{"cmd", "affinity.pin"}, {"key", 291}, {"backends", {0}}})["ok"].get<bool>());
    const json un = d.handle({{"cmd", "affinity.unpin"}, {"key", "0x123"}});
    EXPECT_TRUE(un["ok"].get<bool>()) << un.dump();
    EXPECT_FALSE(d.handle({{"cmd", "affinity.unpin"}, {"key", 291}})["ok"].get<bool>())
        << "unpinned already";
}

TEST_F(DaemonTest, HostileApiRequestsGetErrorsAndTheDaemonGoesOn) {
    auto c = config(2);
    Daemon d(c, m_.view, m_.fleet);
    std::string err;
    ASSERT_TRUE(d.start(&err)) << err;
    const char *cmds[] = {
        "status",        "backends",       "backend.list",  "backend.add",         "backend.remove",
        "backend.drain", "backend.weight", "affinity.show", "affinity.pin",        "affinity.unpin",
        "tune.get",      "tune.set",       "counters",      "fleet.status",        "fleet.push",
        "fleet.settle",  "fleet.forget",   "fleet.member",  "fleet.rotate_cookie", "drain.start",
        "drain.status",  "drain.cancel",   "no.such"};
    const char *fields[] = {"backend", "backends", "drain",    "weight",   "limit", "key",
                            "name",    "value",    "members",  "id",       "mac",   "addr",
                            "spec",    "model",    "max_load", "kv_events"};
    json deep = json::array();
    for (int i = 0; i < 200; ++i) deep = json::array({deep});
    const std::vector<json> values = {nullptr,
                                      true,
                                      -1,
                                      0,
                                      65536,
                                      std::numeric_limits<std::uint64_t>::max(),
                                      std::numeric_limits<std::int64_t>::min(),
                                      1e308,
                                      -0.5,
                                      "",
                                      "-5",
                                      "99999999999999999999",
                                      "0x",
                                      "10.0.9.9:0",
                                      "[::1]:99999",
                                      "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
                                      std::string("a\x01\xff", 3),
                                      std::string(100000, '7'),
                                      json::array(),
                                      json::array({1, 2, 3, 4, 5, 6, 7, 8, 9}),
                                      json::array({"x", nullptr, -1}),
                                      json::object({{"a", 1}}),
                                      deep};
    std::size_t asked = 0, refused = 0;
    auto check = [&](const json &req) {
        const json r = d.handle(req);
        ++asked;
        ASSERT_TRUE(r.is_object()) << req.dump().substr(0, 200);
        ASSERT_TRUE(r.contains("ok") && r["ok"].is_boolean()) << r.dump().substr(0, 200);
        if (!r["ok"].get<bool>()) {
            ++refused;
            ASSERT_TRUE(r.contains("error") && r["error"].is_string() &&
                        !r["error"].get<std::string>().empty())
                << req.dump().substr(0, 200) << " -> " << r.dump().substr(0, 200);
        }
    };
    for (const json &v : values) check(v);  // not even an object
    for (const json &v : values) check(json{{"cmd", v}});
    for (const char *cmd : cmds) {
        check(json{{"cmd", cmd}});
        for (const json &v : values) {
            json all{{"cmd", cmd}};
            for (const char *f : fields) {
                check(json{{"cmd", cmd}, {f, v}});
                all[f] = v;
            }
            check(all);
        }
    }
    EXPECT_GT(refused, asked / 2) << "most of these must be refused";
    const json st = d.handle(json{{"cmd", "status"}});
    ASSERT_TRUE(st["ok"].get<bool>()) << st.dump();
    const json ctr = d.handle(json{{"cmd", "counters"}});
    ASSERT_TRUE(ctr["ok"].get<bool>()) << ctr.dump().substr(0, 300);
    EXPECT_GE(ctr.dump().size(), 2u);
}
