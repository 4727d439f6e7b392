// kvsteerctl's command-line parsing (negative numbers and [IPv6]:PORT are values, not options) and
// its API client (timeouts, answers read after a refused send).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kvsteer/control/ctl_client.h"
#include "kvsteer/control/ctl_fleet.h"

namespace po = boost::program_options;

namespace {

// As kvsteerctl parses `tune [NAME [VALUE]]` and options taking a value.
po::variables_map parse(std::vector<std::string> args) {
    po::options_description o;
    o.add_options()("help,h", "help")("limit", po::value<std::string>(), "limit")(
        "name", po::value<std::string>())("value", po::value<std::string>());
    po::positional_options_description pos;
    pos.add("name", 1).add("value", 1);
    po::variables_map vm;
    po::store(po::command_line_parser(args)
                  .options(o)
                  .positional(pos)
                  .extra_style_parser(kvsteer::control::negative_number_as_value)
                  .run(),
              vm);
    return vm;
}

TEST(CtlArgs, NegativeNumbersArePositionalValues) {
    for (const char *v : {"-1", "-0", "-0.5", "-.5", "-1e3", "-0x10"}) {
        auto vm = parse({"max-held-bytes", v});
        ASSERT_TRUE(vm.count("value")) << v;
        EXPECT_EQ(vm["value"].as<std::string>(), v);
        EXPECT_EQ(vm["name"].as<std::string>(), "max-held-bytes");
    }
    auto vm = parse({"--limit", "-5"});
    EXPECT_EQ(vm["limit"].as<std::string>(), "-5");
    vm = parse({"--limit=-5", "load-factor", "-2"});
    EXPECT_EQ(vm["limit"].as<std::string>(), "-5");
    EXPECT_EQ(vm["value"].as<std::string>(), "-2");
}

TEST(CtlArgs, Ipv6EndpointsArePositionalValues) {
    // `backends weight [fd00::7]:8000 3`, `backends add [fd00::7]:8000 --weight 2`.
    auto vm = parse({"[fd00::7]:8000", "3"});
    EXPECT_EQ(vm["name"].as<std::string>(), "[fd00::7]:8000");
    EXPECT_EQ(vm["value"].as<std::string>(), "3");
    vm = parse({"[::1]:9000", "--limit", "2"});
    EXPECT_EQ(vm["name"].as<std::string>(), "[::1]:9000");
    EXPECT_EQ(vm["limit"].as<std::string>(), "2");
}

TEST(CtlArgs, OptionsStayOptions) {
    EXPECT_TRUE(parse({"-h"}).count("help"));
    EXPECT_TRUE(parse({"max-held-bytes", "--help"}).count("help"));
    EXPECT_THROW(parse({"tune", "-x"}), po::unknown_option);
    EXPECT_THROW(parse({"a", "b", "-1"}), po::too_many_positional_options_error);
}

}  // namespace

namespace {

using kvsteer::control::FleetCommand;
using kvsteer::control::parse_fleet_command;

FleetCommand fleet(std::vector<std::string> args) {
    return parse_fleet_command(args);
}

}  // namespace

TEST(CtlArgs, FleetCommandsBecomeRequests) {
    auto c = fleet({});
    ASSERT_EQ(c.outcome, FleetCommand::Outcome::Request) << c.text;
    EXPECT_EQ(c.request, nlohmann::json({{"cmd", "fleet.status"}}));
    EXPECT_EQ(fleet({"status"}).request, nlohmann::json({{"cmd", "fleet.status"}}));
    EXPECT_EQ(fleet({"settle"}).request, nlohmann::json({{"cmd", "fleet.settle"}}));
    EXPECT_EQ(fleet({"rotate-cookie"}).request, nlohmann::json({{"cmd", "fleet.rotate_cookie"}}));
    c = fleet({"push", "2,0,1"});
    ASSERT_EQ(c.outcome, FleetCommand::Outcome::Request) << c.text;
    EXPECT_EQ(c.sub, "push");
    EXPECT_EQ(c.request, nlohmann::json({{"cmd", "fleet.push"}, {"members", "2,0,1"}}));
    EXPECT_EQ(fleet({"forget", "15"}).request,
              nlohmann::json({{"cmd", "fleet.forget"}, {"id", 15}}));
    EXPECT_EQ(fleet({"member", "3", "02:AA:bb:cc:dd:ee"}).request,
              nlohmann::json({{"cmd", "fleet.member"}, {"id", 3}, {"mac", "02:aa:bb:cc:dd:ee"}}));
    EXPECT_EQ(fleet({"push", "--help"}).outcome, FleetCommand::Outcome::Help);
    EXPECT_EQ(fleet({"-h"}).outcome, FleetCommand::Outcome::Help);
}

TEST(CtlArgs, FleetUsageErrorsSayWhy) {
    auto why = [](std::vector<std::string> args) {
        auto c = fleet(args);
        EXPECT_EQ(c.outcome, FleetCommand::Outcome::Usage);
        return c.text.substr(0, c.text.find('\n'));
    };
    EXPECT_EQ(why({"push"}), "fleet push: missing ID[,ID...]");
    EXPECT_EQ(why({"push", "0,16"}), "fleet push: appliance id must be in 0..15 (got '16')");
    EXPECT_EQ(why({"push", "1,1"}), "fleet push: appliance 1 is listed twice");
    EXPECT_EQ(why({"push", "0", "1"}), "fleet push: unexpected '1'");
    EXPECT_EQ(why({"forget"}), "fleet forget: missing ID");
    EXPECT_EQ(why({"forget", "-1"}), "unknown option '-1'");
    EXPECT_EQ(why({"forget", "x"}), "fleet forget: appliance id must be in 0..15 (got 'x')");
    EXPECT_EQ(why({"member", "3"}), "fleet member: missing MAC");
    EXPECT_EQ(why({"member", "3", "02:00"}).rfind("fleet member: ", 0), 0u);
    EXPECT_EQ(why({"settle", "now"}), "fleet settle: unexpected 'now'");
    EXPECT_EQ(
        why({"join", "1"}),
        "unknown fleet subcommand 'join' (status, push, settle, forget, member, rotate-cookie)");
    EXPECT_EQ(why({"status", "--all"}), "unknown option '--all'");
}

namespace {
// A Unix listener on a fresh path (removed with it).
struct UnixListener {
    std::string path;
    int fd = -1;
    explicit UnixListener(int backlog) {
        path = "/tmp/kvsctl-args-" + std::to_string(getpid()) + ".sock";
        unlink(path.c_str());
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) < 0 ||
            listen(fd, backlog) < 0)
            throw std::runtime_error("listener");
    }
    ~UnixListener() {
        close(fd);
        unlink(path.c_str());
    }
};
}  // namespace

// A kvsteerd that takes no connection (its loop stuck, its queue full): the call gives up at its
// timeout (connect blocked before, past any --timeout).
TEST(CtlClient, TimeoutCoversAConnectionQueueThatStaysFull) {
    UnixListener l(0);
    std::vector<int> queued;  // fill the queue: connects stop succeeding
    for (int i = 0; i < 8; i++) {
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_GE(c, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, l.path.c_str(), sizeof sa.sun_path - 1);
        const bool ok = connect(c, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0;
        queued.push_back(c);
        if (!ok) break;
    }
    std::string err;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = kvsteer::control::api_call(l.path, {{"cmd", "status"}}, std::chrono::milliseconds(300),
                                        &err);
    const auto took = std::chrono::steady_clock::now() - t0;
    for (int c : queued) close(c);
    EXPECT_FALSE(r);
    EXPECT_NE(err.find("timeout connecting"), std::string::npos) << err;
    EXPECT_LT(took, std::chrono::seconds(5));
}

// A daemon that refuses a request while it is still being sent (by its length) and closes: its
// answer is read and returned (the call failed with "send: Broken pipe").
TEST(CtlClient, AnAnswerSentBeforeTheCloseIsRead) {
    UnixListener l(4);
    std::thread daemon([&] {
        int c = accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        char buf[4096];
        [[maybe_unused]] auto n = recv(c, buf, sizeof buf, 0);
        const std::string answer = "{\"ok\":false,\"error\":\"request line longer than 1 MiB\"}\n";
        [[maybe_unused]] auto w = send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
        close(c);  // unread bytes: the peer's next send gets a reset
    });
    std::string err;
    auto r = kvsteer::control::api_call(l.path,
                                        {{"cmd", "tune.set"}, {"value", std::string(4 << 20, 'x')}},
                                        std::chrono::milliseconds(5000), &err);
    daemon.join();
    ASSERT_TRUE(r) << err;
    EXPECT_EQ((*r)["error"], "request line longer than 1 MiB");
}
