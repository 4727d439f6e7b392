// kvsteerctl's command-line parsing: negative numbers and [IPv6]:PORT are values, not options.
#include <gtest/gtest.h>

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "kvsteer/control/ctl_client.h"

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
