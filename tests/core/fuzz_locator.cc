// libFuzzer target: locate_request over arbitrary first flights, then hash what it located.
// Besides memory safety (ASan/UBSan), it checks that every returned view lies in the input.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"

#include "../fuzz_help.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool inside(std::string_view v, const std::uint8_t *data, std::size_t size) {
    const auto *p = reinterpret_cast<const std::uint8_t *>(v.data());
    return v.empty() || (p >= data && p + v.size() <= data + size);
}

}  // namespace

KVS_FUZZ_HELP(
    "locate_request over arbitrary first flights, then the prefix hash of what it located\n(ASan + "
    "UBSan; every returned view lies in the input).")

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    using namespace kvsteer;
    const RequestView r = locate_request({data, size});
    check(inside(r.method, data, size) && inside(r.path, data, size) &&
          inside(r.host, data, size) && inside(r.model, data, size));
    check(r.key_offset <= size && r.key_len <= size - r.key_offset);
    if (r.status == LocateStatus::Ok) {
        check(r.body_offset <= size && r.body_available <= size - r.body_offset);
        check((r.kind == KeyKind::FiveTuple) == (r.key_len == 0));
        if (r.kind != KeyKind::FiveTuple) check(r.key_offset >= r.body_offset);
    } else {
        check(r.kind == KeyKind::FiveTuple && r.key_len == 0);
    }
    // Small blocks so the chain is exercised on short inputs too.
    HashParams p;
    p.prefix_len = 64;
    p.block_size = 16;
    const PrefixHashes h = hash_prompt(p, r.hash_model(), {data + r.key_offset, r.key_len});
    // The chunk framing taken out of a copy: the key and model stay inside it.
    std::vector<std::uint8_t> copy(data, data + size);
    RequestView d = r;
    const std::size_t body = dechunk_request(copy, d);
    check(body <= size && d.key_offset <= size && d.key_len <= size - d.key_offset);
    check(inside(d.model, body ? copy.data() : data, size) && d.dechunked == (body > 0));
    if (body)
        check(d.key_offset >= d.body_offset && d.key_offset + d.key_len <= d.body_offset + body);
    hash_prompt(p, d.hash_model(), {copy.data() + d.key_offset, d.key_len});
    check(r.hash_model().empty() || r.hash_model() == r.model);
    check(h.prefix != 0 && h.n_blocks <= KVS_MAX_REPORT_BLOCKS);
    for (std::uint32_t i = 0; i < h.n_blocks; ++i) check(h.blocks[i] != 0);
    return 0;
}
