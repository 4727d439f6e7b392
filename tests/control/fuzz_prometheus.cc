// libFuzzer target: the Prometheus text-exposition parser kvsteerd runs on every backend's
// /metrics (a backend is not trusted to send well-formed text). Besides memory safety
// (ASan/UBSan), it checks the parser's promises: never more samples than asked for, every
// sample named, a bad line counted with a one-line reason.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvsteer/control/prometheus.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace kvsteer::control;
    const std::string_view text(reinterpret_cast<const char *>(data), size);
    const std::size_t cap = size % 7 + 1;  // small caps too
    const PromParse p = parse_prometheus(text, cap);
    check(p.samples.size() <= cap);
    for (const auto &s : p.samples) check(!s.name.empty());
    check(p.bad_lines == 0 || !p.first_error.empty());
    check(p.first_error.find('\n') == std::string::npos);
    const PromParse all = parse_prometheus(text);
    check(all.bad_lines == p.bad_lines || p.truncated || all.truncated ||
          all.samples.size() > cap);  // the cap may stop a parse early
    return 0;
}
