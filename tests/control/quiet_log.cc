// Linked into every control test binary: kvsteerd's info lines (hundreds a binary) go only where
// asked for, so that a failing test's assertion is not lost among them in a CI log.
// KVS_TEST_LOG=info (or debug, trace...) brings them back.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

const bool kLevelSet = [] {
    const char *want = std::getenv("KVS_TEST_LOG");
    auto level = want && *want ? spdlog::level::from_str(want) : spdlog::level::warn;
    if (level == spdlog::level::off && std::string_view(want ? want : "") != "off") {
        std::fprintf(stderr, "KVS_TEST_LOG=%s: not a level (trace, debug, info, warn, ...)\n",
                     want);
        level = spdlog::level::warn;  // a typo does not silence the warnings too
    }
    spdlog::set_level(level);
    return true;
}();

}  // namespace
