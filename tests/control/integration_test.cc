// End to end: the kvsteerd and kvsteerctl binaries over real pinned maps in a private bpffs
// (mounted by with_bpffs.sh), backends on 127.0.0.1. kvsteerctl --json output is parsed and
// the mmapped tables are checked after every command.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "kvsteer/bpf/maps.h"
#include "kvsteer/control/ctl_client.h"
#include "kvsteer/control/tables.h"
#include "kvsteer/reasons.h"
#include "test_http_server.h"

using namespace std::chrono_literals;
using kvsteer::control::TableWriter;
using nlohmann::json;

namespace {

struct Run {
    int rc = -1;
    std::string out, err;
};

// fork/exec with stdout and stderr captured; the child dies with us.
Run run(const std::vector<std::string> &argv) {
    int o[2], e[2];
    EXPECT_EQ(pipe(o), 0);
    EXPECT_EQ(pipe(e), 0);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(o[1], 1);
        dup2(e[1], 2);
        close(o[0]);
        close(e[0]);
        std::vector<char *> a;
        for (auto &s : argv) a.push_back(const_cast<char *>(s.c_str()));
        a.push_back(nullptr);
        execv(a[0], a.data());
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    Run r;
    char buf[4096];
    ssize_t n;
    while ((n = read(o[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(n));
    while ((n = read(e[0], buf, sizeof buf)) > 0) r.err.append(buf, static_cast<std::size_t>(n));
    close(o[0]);
    close(e[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

bool wait_for(const std::function<bool()> &f, std::chrono::milliseconds timeout = 8000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        if (f()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

class Integration : public ::testing::Test {
   protected:
    void SetUp() override {
        const char *fs = std::getenv("KVSTEER_TEST_BPFFS");
        const char *d = std::getenv("KVSTEERD");
        const char *c = std::getenv("KVSTEERCTL");
        if (!fs || !d || !c)
            GTEST_SKIP()
                << "run through with_bpffs.sh with KVSTEERD and KVSTEERCTL set (ctest does)";
        bpffs_ = std::string(fs) + "/kvsteer-" + std::to_string(getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name();
        kvsteerd_ = d;
        kvsteerctl_ = c;
        sock_ = "/tmp/kvsctl-int-" + std::to_string(getpid()) + ".sock";
        conf_ = "/tmp/kvsctl-int-" + std::to_string(getpid()) + ".conf";
        unlink((sock_ + ".draining").c_str());  // left by an earlier run killed with this pid
        for (auto &s : srv_) {
            s.set("/health", 200, "ok");
            s.set("/metrics", 200, "vllm:num_requests_running 2\nvllm:num_requests_waiting 4\n");
        }
        std::ofstream f(conf_);
        f << "vip = 10.77.0.1:8000\nsnat-addr = 10.77.1.1\nappliance-mac = 02:77:00:00:00:01\n"
          << "backend = 127.0.0.1:" << srv_[0].port() << ",weight=1,mac=02:77:00:00:00:10\n"
          << "backend = 127.0.0.1:" << srv_[1].port() << ",weight=1,mac=02:77:00:00:00:11\n"
          << "cookie-key = 00112233445566778899aabbccddeeff\n"
          << "health-interval = 100\nhealth-timeout = 80\nhealth-rise = 1\nhealth-fall = 2\n"
          << "telemetry-interval = 100\nreport-interval = 50\ntable-grace = 2\n"
          << "bpffs = " << bpffs_ << "\napi-socket = " << sock_ << "\nlog-level = warn\n";
    }

    void TearDown() override {
        stop_daemon();
        maps_.reset();
        unlink(conf_.c_str());
        unlink(sock_.c_str());
        unlink((sock_ + ".draining").c_str());  // a drain a test left is not the next one's
    }

    void start_daemon() {
        daemon_ = fork();
        if (daemon_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            execl(kvsteerd_.c_str(), kvsteerd_.c_str(), "--config", conf_.c_str(), nullptr);
            _exit(127);
        }
        ASSERT_GT(daemon_, 0);
        ASSERT_TRUE(wait_for([&] {
            std::string err;
            return kvsteer::control::api_call(sock_, {{"cmd", "status"}}, 500ms, &err).has_value();
        })) << "kvsteerd did not come up";
        std::string err;
        maps_ = kvsteer::bpf::open_pinned_maps(bpffs_, false, &err);
        ASSERT_TRUE(maps_) << err;
    }

    int stop_daemon() {
        if (daemon_ <= 0) return -1;
        kill(daemon_, SIGTERM);
        int st = 0;
        waitpid(daemon_, &st, 0);
        daemon_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }

    // kvsteerctl --json ARGS...; expects rc 0 and parses stdout.
    json ctl(std::vector<std::string> args, int want_rc = 0) {
        std::vector<std::string> argv{kvsteerctl_, "--socket", sock_, "--bpffs", bpffs_, "--json"};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run(argv);
        EXPECT_EQ(r.rc, want_rc) << "kvsteerctl " << args[0] << ": " << r.err << r.out;
        if (want_rc != 0) return json{{"stderr", r.err}};
        auto j = json::parse(r.out, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << r.out;
        return j;
    }

    std::map<std::uint32_t, std::uint32_t> maglev_counts() {
        std::map<std::uint32_t, std::uint32_t> c;
        auto a = TableWriter::active_maglev(maps_->config);
        for (std::uint32_t i = 0; i < KVS_MAGLEV_SIZE; i++)
            c[maps_->maglev[a * KVS_MAGLEV_SIZE + i]]++;
        return c;
    }

    std::uint8_t state(unsigned id) {
        return std::atomic_ref<__u8>(maps_->backends[id].state).load();
    }

    std::string addr(int i) { return "127.0.0.1:" + std::to_string(srv_[i].port()); }

    TestHttpServer srv_[3];
    std::string bpffs_, kvsteerd_, kvsteerctl_, sock_, conf_;
    pid_t daemon_ = -1;
    std::unique_ptr<kvsteer::bpf::PinnedMaps> maps_;
};

}  // namespace

TEST_F(Integration, CtlCommandsChangeTheMappedTables) {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    // Tables filled from the config file.
    EXPECT_EQ(maps_->config->n_vips, 1u);
    EXPECT_EQ(maps_->config->vips[0].addr[0], inet_addr("10.77.0.1"));
    EXPECT_EQ(maps_->config->vips[0].port, htons(8000));
    EXPECT_EQ(maps_->config->snat_addr[0], inet_addr("10.77.1.1"));
    EXPECT_EQ(maps_->config->appliance_mac[1], 0x77);
    EXPECT_EQ(maps_->config->cookie_key[0][0], 0x7766554433221100ull);
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP && state(1) == KVS_BE_UP; }));
    ASSERT_TRUE(wait_for([&] { return maglev_counts().size() == 2; }));

    // The dataplane's health in status, summed over its workers' counters.
    ASSERT_NE(maps_->dp_stats, nullptr);
    maps_->dp_stats[KVS_R_DP_RX_STALL] = 2;
    maps_->dp_stats[KVS_STATS_MAX + KVS_R_DP_RX_STALL] = 1;
    maps_->dp_stats[KVS_R_DP_RX_RECOVERED] = 2;
    maps_->dp_stats[KVS_R_DP_RX_MBUFS_RECLAIMED] = 4100;
    maps_->dp_stats[KVS_R_DP_REQ_MOVED] = 7;
    auto st = ctl({"status"});
    EXPECT_EQ(st["dataplane"]["rx_stalls"], 3);
    EXPECT_EQ(st["dataplane"]["rx_recoveries"], 2);
    EXPECT_EQ(st["dataplane"]["rx_mbufs_reclaimed"], 4100);
    EXPECT_EQ(st["dataplane"]["requests_moved"], 7);
    EXPECT_EQ(st["backends"]["total"], 2);
    EXPECT_EQ(st["backends"]["up"], 2);
    EXPECT_EQ(st["vips"][0], "10.77.0.1:8000");

    auto add = ctl({"backends", "add", addr(2), "--weight", "2", "--mac", "02:77:00:00:00:12"});
    EXPECT_EQ(add["backend"]["id"], 2);
    ASSERT_TRUE(wait_for([&] { return state(2) == KVS_BE_UP && maglev_counts().size() == 3; }));
    EXPECT_EQ(maps_->backends[2].weight, 2);
    EXPECT_EQ(maps_->backends[2].port, htons(srv_[2].port()));
    EXPECT_EQ(maps_->config->n_backends, 3u);
    auto counts = maglev_counts();
    EXPECT_NEAR(static_cast<double>(counts[2]) / KVS_MAGLEV_SIZE, 0.5, 0.02);

    auto list = ctl({"backends"});
    ASSERT_EQ(list["backends"].size(), 3u);
    ASSERT_TRUE(
        wait_for([&] { return maps_->load[0].ext_queue == 4; }));  // telemetry -> kvs_be_load

    ctl({"backends", "drain", addr(2)});
    EXPECT_EQ(state(2), KVS_BE_DRAIN);
    EXPECT_EQ(maglev_counts().count(2), 0u);
    ctl({"backends", "drain", addr(2), "--undo"});
    EXPECT_EQ(state(2), KVS_BE_UP);

    ctl({"backends", "weight", "0", "3"});
    EXPECT_EQ(maps_->backends[0].weight, 3);

    auto rm = ctl({"backends", "remove", addr(2)});
    EXPECT_EQ(rm["removed"]["id"], 2);
    EXPECT_EQ(state(2), KVS_BE_EMPTY);
    EXPECT_EQ(maglev_counts().count(2), 0u);

    auto gen = maps_->config->generation;
    auto t = ctl({"tune", "prefix-length", "300"});
    EXPECT_EQ(t["prefix-length"], 300);
    EXPECT_EQ(maps_->config->prefix_len, 300u);
    EXPECT_GT(maps_->config->generation, gen);
    EXPECT_EQ(ctl({"tune", "steering-mode"})["steering-mode"], "prefix");
    ctl({"tune", "steering-mode", "five-tuple"});
    EXPECT_EQ(maps_->config->steer_mode, static_cast<__u32>(KVS_STEER_FIVE_TUPLE));

    ctl({"affinity", "pin", "0xabc", "0", addr(1)});
    auto a = TableWriter::active_affinity(maps_->config);
    const kvs_affinity_entry *half = maps_->affinity + a * KVS_AFFINITY_SLOTS;
    const kvs_affinity_entry *e = &half[0xabc & (KVS_AFFINITY_SLOTS - 1)];
    EXPECT_EQ(e->key, 0xabcu);
    EXPECT_EQ(e->n_backends, 2);
    auto show = ctl({"affinity", "show"});
    ASSERT_GE(show["entries"].size(), 1u);
    EXPECT_EQ(show["entries"][0]["key"], "0x0000000000000abc");
    EXPECT_TRUE(show["entries"][0]["pinned"].get<bool>());
    ctl({"affinity", "unpin", "0xabc"});
    a = TableWriter::active_affinity(maps_->config);
    EXPECT_NE(maps_->affinity[a * KVS_AFFINITY_SLOTS + 0xabc].key, 0xabcu);

    // Errors: named, with the documented exit codes.
    auto bad = ctl({"backends", "remove", "10.1.2.3:4"}, 1);
    EXPECT_NE(bad["stderr"].get<std::string>().find("no backend 10.1.2.3:4"), std::string::npos);
    ctl({"backends", "frobnicate"}, 2);
    ctl({"nonsense"}, 2);
    ctl({"tune", "replication", "99"}, 1);
    auto unreachable = run({kvsteerctl_, "--socket", "/tmp/kvsctl-no-such.sock", "status"});
    EXPECT_EQ(unreachable.rc, 3);
    // --json after the command as before it (it was a usage error there).
    for (const char *sub : {"status", "backends", "tune"}) {
        auto after = run({kvsteerctl_, "--socket", sock_, sub, "--json"});
        EXPECT_EQ(after.rc, 0) << sub << ": " << after.err;
        auto j = json::parse(after.out, nullptr, false);
        EXPECT_TRUE(j.is_object()) << sub << ": " << after.out;
    }
}

// Answers kvsteerctl does not expect (another kvsteerd version, anything else on the socket): a
// missing field is an "unexpected answer", exit 1. Before, a const json read a missing key
// (undefined behaviour: garbage printed) and an answer without its list printed an empty table,
// exit 0.
TEST_F(Integration, AnswersWithoutTheirFieldsAreUnexpected) {
    const std::string fake = "/tmp/kvsctl-fake-" + std::to_string(getpid()) + ".sock";
    unlink(fake.c_str());
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, fake.c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
    ASSERT_EQ(listen(lfd, 8), 0);
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"status"}, R"({"ok":true,"pid":1,"uptime_s":2.0})"},  {{"backends"}, R"({"ok":true})"},
        {{"backends"}, R"({"ok":true,"backends":[{"id":1}]})"}, {{"tune"}, R"({"ok":true})"},
        {{"affinity", "show"}, R"({"ok":true,"total":3})"},
    };
    std::thread daemon([&] {
        for (const auto &c : cases) {
            pollfd p{lfd, POLLIN, 0};  // bounded: a kvsteerctl that never connects fails, not hangs
            if (poll(&p, 1, 5000) <= 0) return;
            int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return;
            char buf[4096];
            [[maybe_unused]] auto n = recv(fd, buf, sizeof buf, 0);
            const std::string answer = c.second + "\n";
            [[maybe_unused]] auto w = send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
            close(fd);
        }
    });
    for (const auto &c : cases) {
        std::vector<std::string> argv{kvsteerctl_, "--socket", fake, "--timeout", "3000"};
        argv.insert(argv.end(), c.first.begin(), c.first.end());
        auto r = run(argv);
        EXPECT_EQ(r.rc, 1) << c.first[0] << " answered " << c.second << ": " << r.out << r.err;
        EXPECT_NE(r.err.find("unexpected answer from kvsteerd"), std::string::npos)
            << c.first[0] << " answered " << c.second << ": " << r.err;
    }
    daemon.join();
    // Connected, no answer: the request may have been applied, so exit 1, said so (it exited 3,
    // "unreachable", and a retried change found itself made); 3 is for a kvsteerd not reached.
    // A read changes nothing: kvsteerd did not answer, exit 3.
    auto mute_run = [&](std::vector<std::string> args) {
        std::thread mute([&] {
            pollfd p{lfd, POLLIN, 0};
            if (poll(&p, 1, 5000) <= 0) return;
            int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return;
            char buf[4096];
            [[maybe_unused]] auto n = recv(fd, buf, sizeof buf, 0);
            close(fd);
        });
        std::vector<std::string> argv{kvsteerctl_, "--socket", fake, "--timeout", "3000"};
        argv.insert(argv.end(), args.begin(), args.end());
        auto out = run(argv);
        mute.join();
        return out;
    };
    auto r = mute_run({"tune", "load-slack", "8"});
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("may have been applied"), std::string::npos) << r.err;
    for (auto args : {std::vector<std::string>{"status"}, std::vector<std::string>{"tune"}}) {
        r = mute_run(args);
        EXPECT_EQ(r.rc, 3) << args[0] << ": " << r.err;
        EXPECT_EQ(r.err.find("may have been applied"), std::string::npos) << r.err;
    }
    close(lfd);
    unlink(fake.c_str());
    r = run({kvsteerctl_, "--socket", fake, "status"});
    EXPECT_EQ(r.rc, 3) << r.err;
}

TEST_F(Integration, NegativeTuneValuesGetTheRangeError) {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    // "-1" is a value, not an unknown option: the daemon's range check answers, naming the knob
    // and what it accepts; nothing changes.
    auto bad = ctl({"tune", "max-held-bytes", "-1"}, 1);
    EXPECT_NE(bad["stderr"].get<std::string>().find(
                  "max-held-bytes: must be an integer in 256..1048576 (got '-1')"),
              std::string::npos)
        << bad["stderr"];
    bad = ctl({"tune", "replication", "-3"}, 1);
    EXPECT_NE(
        bad["stderr"].get<std::string>().find("replication: must be an integer in 1..4 (got '-3')"),
        std::string::npos)
        << bad["stderr"];
    bad = ctl({"tune", "load-factor", "-0.5"}, 1);
    EXPECT_NE(bad["stderr"].get<std::string>().find(
                  "load-factor: must be a number in 1..100 (got '-0.5')"),
              std::string::npos)
        << bad["stderr"];
    bad = ctl({"backends", "weight", "0", "-2"}, 1);
    EXPECT_NE(bad["stderr"].get<std::string>().find("'-2'"), std::string::npos) << bad["stderr"];
    EXPECT_EQ(maps_->config->max_held_bytes, 14600u);
    EXPECT_EQ(ctl({"tune", "max-held-bytes"})["max-held-bytes"], 14600);
    // Counts never wrap a sign into a huge value.
    bad = ctl({"affinity", "show", "--limit", "-1"}, 2);
    EXPECT_NE(bad["stderr"].get<std::string>().find("--limit: must be an integer in 0.."),
              std::string::npos)
        << bad["stderr"];
    bad = ctl({"flows", "list", "--limit=-1"}, 2);
    EXPECT_NE(bad["stderr"].get<std::string>().find("--limit: must be an integer in 0.."),
              std::string::npos)
        << bad["stderr"];
    // An argument JSON cannot carry (not UTF-8) is the user's error, not kvsteerd's answer.
    bad = ctl({"tune", "session-headers", "X-\xff"}, 2);
    EXPECT_NE(bad["stderr"].get<std::string>().find("argument 2 is not valid UTF-8"),
              std::string::npos)
        << bad["stderr"];
    // Short options are still options.
    ctl({"tune", "-x"}, 2);
    auto help = run({kvsteerctl_, "tune", "-h"});
    EXPECT_EQ(help.rc, 0);
    auto neg_timeout = run({kvsteerctl_, "--socket", sock_, "--timeout", "-5", "status"});
    EXPECT_EQ(neg_timeout.rc, 2);
    EXPECT_NE(neg_timeout.err.find("--timeout"), std::string::npos) << neg_timeout.err;
}

// An unknown tunable is a usage error (exit 2) whether read or set (setting one exited 1), and
// the message lists the names.
TEST_F(Integration, UnknownTunableIsAUsageErrorReadOrSet) {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    for (auto args : {std::vector<std::string>{"tune", "nope"},
                      std::vector<std::string>{"tune", "nope", "1"}}) {
        auto bad = ctl(args, 2);
        EXPECT_NE(bad["stderr"].get<std::string>().find("unknown tunable 'nope'"),
                  std::string::npos)
            << bad["stderr"];
        EXPECT_NE(bad["stderr"].get<std::string>().find("prefix-length"), std::string::npos)
            << bad["stderr"];
    }
    EXPECT_TRUE(ctl({"tune", "table-algorithm"}).contains("table-algorithm"));
    // A key: 0x-hex or decimal; bare hex is refused by the CLI, not read as something else.
    ctl({"affinity", "pin", "291", "0"});
    EXPECT_EQ(ctl({"affinity", "unpin", "0x123"})["key"], "0x0000000000000123");
    ctl({"affinity", "pin", "abc", "0"}, 2);
}

// drain --timeout 0 exits 1 when this appliance could not leave the fleet's owners (it exited
// 0: a script went on to stop an owner the others still send new flows to).
TEST_F(Integration, DrainWithoutWaitingStillSaysTheFleetFailed) {
    {
        std::ofstream f(conf_, std::ios::app);
        f << "fleet-self = 0\n";
        // Enough members for 16 distinct epochs (repeats are compacted, never refused).
        // Member 0 is this appliance: its MAC is the config's appliance-mac.
        f << "fleet-member = 0,02:77:00:00:00:01\n";
        for (int i = 1; i < 8; i++) f << "fleet-member = " << i << ",02:00:00:00:f1:0" << i << "\n";
    }
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    bool full = false;
    for (unsigned i = 1; i < 40 && !full; i++) {
        std::string m = "0,1,2", err;
        for (unsigned b = 0; b < 5; b++)
            if (i & (1u << b)) m += "," + std::to_string(3 + b);
        auto r = kvsteer::control::api_call(sock_, {{"cmd", "fleet.push"}, {"members", m}}, 2000ms,
                                            &err);
        ASSERT_TRUE(r) << err;
        full = !(*r)["ok"].get<bool>();
    }
    ASSERT_TRUE(full) << "the epochs never filled up";
    auto bad = ctl({"drain", "--timeout", "0"}, 1);
    EXPECT_NE(bad["stderr"].get<std::string>().find("still one of the fleet's owners"),
              std::string::npos)
        << bad["stderr"];
}

TEST_F(Integration, MapReadersWorkWithoutTheDaemon) {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    ASSERT_TRUE(wait_for([&] { return state(0) == KVS_BE_UP; }));
    // One flow (both directions) written as the dataplane would.
    kvs_flow_key k{};
    k.saddr[0] = inet_addr("10.77.9.9");
    k.daddr[0] = inet_addr("10.77.0.1");
    k.sport = htons(40000);
    k.dport = htons(8000);
    k.family = KVS_AF_INET;
    k.proto = IPPROTO_TCP;
    kvs_flow f{};
    f.new_saddr[0] = inet_addr("10.77.1.1");
    f.new_daddr[0] = inet_addr("127.0.0.1");
    f.new_sport = htons(33000);
    f.new_dport = htons(srv_[0].port());
    f.dir = KVS_DIR_C2S;
    f.backend_id = 0;
    f.packets = 12;
    ASSERT_EQ(bpf_map_update_elem(maps_->flows_fd, &k, &f, BPF_ANY), 0);
    kvs_flow_key k2 = k;
    std::swap(k2.saddr, k2.daddr);
    f.dir = KVS_DIR_S2C;
    ASSERT_EQ(bpf_map_update_elem(maps_->flows_fd, &k2, &f, BPF_ANY), 0);
    maps_->dp_stats[2 * KVS_STATS_MAX + KVS_R_DP_BIND_OK] = 7;
    std::atomic_ref<__u64>(maps_->load[0].binds).store(5);
    std::atomic_ref<__u64>(maps_->load[0].closes).store(2);

    EXPECT_EQ(stop_daemon(), 0) << "SIGTERM is a clean exit";

    auto count = ctl({"flows", "count"});
    EXPECT_EQ(count["flows"], 1);
    EXPECT_EQ(count["entries"], 2);
    auto list = ctl({"flows", "list"});
    ASSERT_EQ(list["list"].size(), 2u);
    bool seen = false;
    for (const auto &x : list["list"])
        if (x["dir"] == "c2s") {
            seen = true;
            EXPECT_EQ(x["src"], "10.77.9.9:40000");
            EXPECT_EQ(x["new_dst"], addr(0));
            EXPECT_EQ(x["packets"], 12);
        }
    EXPECT_TRUE(seen);

    // Many entries: read in batches (more than one), each counted once (a key-by-key walk
    // started over whenever its key went meanwhile).
    for (std::uint32_t i = 1; i <= 5000; i++) {
        kvs_flow_key ki = k;
        ki.sport = htons(static_cast<std::uint16_t>(10000 + i));
        f.dir = KVS_DIR_C2S;
        ASSERT_EQ(bpf_map_update_elem(maps_->flows_fd, &ki, &f, BPF_ANY), 0);
        std::swap(ki.saddr, ki.daddr);
        f.dir = KVS_DIR_S2C;
        ASSERT_EQ(bpf_map_update_elem(maps_->flows_fd, &ki, &f, BPF_ANY), 0);
    }
    count = ctl({"flows", "count"});
    EXPECT_EQ(count["flows"], 5001);
    EXPECT_EQ(count["entries"], 10002);

    auto c = ctl({"counters"});
    EXPECT_EQ(c["dataplane"]["dp_bind_ok"], 7);
    EXPECT_EQ(c["dataplane_workers"][0]["worker"], 2);
    EXPECT_TRUE(c["xdp"].contains("tx_synack"));
    ASSERT_GE(c["backends"].size(), 2u);
    EXPECT_EQ(c["backends"][0]["in_flight"], 3);
    EXPECT_EQ(c["backends"][0]["state"], "up");
    EXPECT_EQ(ctl({"counters", "xdp"}).size(), 1u);

    // The daemon is down: API commands say so (exit 3); the tables stay as they were.
    ctl({"status"}, 3);
    EXPECT_EQ(state(0), KVS_BE_UP);
    auto missing = run({kvsteerctl_, "--bpffs", bpffs_ + "/nope", "counters"});
    EXPECT_EQ(missing.rc, 3);
}

TEST_F(Integration, BadConfigurationAndHelp) {
    auto r = run({kvsteerd_, "--config", conf_, "--replication", "7"});
    EXPECT_EQ(r.rc, 2);
    EXPECT_NE(r.err.find("replication: must be an integer in 1..4"), std::string::npos) << r.err;
    r = run({kvsteerd_, "--help"});
    EXPECT_EQ(r.rc, 0);
    EXPECT_NE(r.out.find("--health-interval"), std::string::npos);
    for (auto sub : {"status", "counters", "tune"}) {
        r = run({kvsteerctl_, sub, "--help"});
        EXPECT_EQ(r.rc, 0) << sub;
        EXPECT_NE(r.out.find("Usage: kvsteerctl"), std::string::npos) << sub;
    }
    // A command with subcommands lists them all (its default subcommand's usage hid the others).
    for (auto [cmd, want] :
         {std::pair{"backends", "backends weight"}, std::pair{"affinity", "affinity unpin"},
          std::pair{"flows", "flows count"}}) {
        r = run({kvsteerctl_, cmd, "--help"});
        EXPECT_EQ(r.rc, 0) << cmd;
        EXPECT_NE(r.out.find(want), std::string::npos) << cmd << ": " << r.out;
    }
    r = run({kvsteerctl_});
    EXPECT_EQ(r.rc, 2);
}
