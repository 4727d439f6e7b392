#include "first_flight.h"

#include <algorithm>
#include <span>

namespace kvsteer::sim {

FirstFlightKey first_flight_key(std::string_view bytes, uint32_t max_held, const HashParams &hp,
                                uint64_t five_tuple_hash) {
    const auto *p = reinterpret_cast<const std::uint8_t *>(bytes.data());
    const size_t n = std::min<size_t>(bytes.size(), max_held);
    const std::span<const std::uint8_t> buf(p, n);
    const RequestView v = locate_request(buf);
    FirstFlightKey k;
    if (v.status == LocateStatus::Ok && v.key_len > 0) {
        k.kind = v.kind;
        k.hashes = hash_prompt(hp, v.hash_model(), buf.subspan(v.key_offset, v.key_len));
        k.prompt_bytes = uint32_t(v.key_len);
    } else if (v.status != LocateStatus::Ok && v.status != LocateStatus::NeedMoreHead && n > 0) {
        k.kind = KeyKind::BodyPrefix;
        k.hashes = hash_prompt(hp, {}, buf);
        k.prompt_bytes = uint32_t(n);
    } else {
        k.kind = KeyKind::FiveTuple;
        k.hashes = PrefixHashes{};
        k.hashes.prefix = five_tuple_hash | 1;
    }
    return k;
}

}  // namespace kvsteer::sim
