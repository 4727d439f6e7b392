// kvsteerctl's command-line parsing: negative numbers and [IPv6]:PORT are values, not options.
#include <gtest/gtest.h>

#include <boost/program_options.hpp>
#include <string>
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
