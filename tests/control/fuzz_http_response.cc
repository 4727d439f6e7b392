// libFuzzer target: what kvsteerd parses of a backend's HTTP responses (health checks and
// metric scrapes): parse_http_response, the same Beast parser, limits and error wording as
// http_get_many (a backend is not trusted to answer well-formed HTTP). Besides memory safety
// (ASan/UBSan), it checks the promises HttpResult makes: a complete response has a status of
// three digits (any: "002" is 2, which no health check takes for a success) and a body no
// longer than the bytes given, and no error; anything else is an error of one non-empty line;
// and the same bytes always give the same answer.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvsteer/control/http_client.h"

#include "../fuzz_help.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

KVS_FUZZ_HELP(
    "kvsteerd's parse of a backend's HTTP responses (health checks, metric scrapes;\nASan + UBSan; "
    "limits and error wording checked).")

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace kvsteer::control;
    if (size == 0) return 0;
    const bool eof = data[0] & 1;  // the first byte: whether the connection closed after the rest
    const std::string raw(reinterpret_cast<const char *>(data) + 1, size - 1);
    const HttpResult r = parse_http_response(raw, eof);
    if (r.ok) {
        check(r.error.empty());
        check(r.status >= 0 && r.status <= 999);
        check(r.body.size() <= raw.size());
    } else {
        check(!r.error.empty());
        check(r.error.find('\n') == std::string::npos);
    }
    const HttpResult again = parse_http_response(raw, eof);
    check(again.ok == r.ok && again.status == r.status && again.body == r.body &&
          again.error == r.error);
    return 0;
}
