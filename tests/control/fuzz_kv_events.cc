// libFuzzer target: the vLLM KV event decoder (msgpack-c's parser + our visitor) over arbitrary
// payloads. Besides memory safety (ASan/UBSan) and bounded memory (-rss_limit_mb), it checks that
// whatever decodes is plausible and that every failure has a one-line reason.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvsteer/control/kv_events.h"

#include "../fuzz_help.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

KVS_FUZZ_HELP(
    "The vLLM KV event decoder (msgpack) over arbitrary payloads (ASan + UBSan; bounded\nmemory; "
    "every failure has a one-line reason).")

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace kvsteer::control;
    KvBatch b;
    std::string err;
    if (decode_kv_batch({data, size}, &b, &err)) {
        std::uint64_t blocks = 0;
        for (const auto &e : b.events) blocks += e.blocks;
        check(b.events.size() + blocks <= size);  // every event and hash takes at least a byte
    } else {
        check(!err.empty() && err.find('\n') == std::string::npos);
    }
    // The same bytes as the payload of a well-framed message: the result matches.
    const std::vector<std::string> frames = {
        "", std::string(8, '\0'), std::string(reinterpret_cast<const char *>(data), size)};
    const KvReceived r = decode_kv_frames(frames);
    check(r.seq == 0u && r.ok == err.empty());
    return 0;
}
