#include "kvsteer/core/flight_key.h"

#include <algorithm>

namespace kvsteer {

HashParams hash_params(const kvs_config &c) noexcept {
    HashParams hp;
    if (c.hash_seed) hp.seed = c.hash_seed;
    if (c.prefix_len) hp.prefix_len = c.prefix_len;
    if (c.block_size) hp.block_size = c.block_size;
    if (c.max_blocks) hp.max_blocks = c.max_blocks;
    hp.max_blocks = std::min<std::uint32_t>(hp.max_blocks, KVS_MAX_REPORT_BLOCKS);
    return hp;
}

std::uint32_t bind_depth(const HashParams &hp) noexcept {
    return std::max(hp.prefix_len, hp.block_size * hp.max_blocks);
}

FlightKey key_flight(const HashParams &hp, const RequestView &v,
                     std::span<const std::uint8_t> bytes, std::uint64_t five_tuple_hash) noexcept {
    FlightKey k;
    if (v.status == LocateStatus::Ok && v.key_len > 0) {
        k.kind = v.kind;
        k.hashes = hash_prompt(hp, v.hash_model(), bytes.subspan(v.key_offset, v.key_len));
        k.prompt_bytes = static_cast<std::uint32_t>(v.key_len);
        // The prompt's extent: its value's length when it ends within the flight (the
        // declared Content-Length counted members after it, and a client could declare 8 MiB
        // for a short prompt and hold the connection: its backend weighed 16,383 blocks more in
        // the work estimate, steering others' cached prefixes away); else the body from the
        // key's first byte to Content-Length, as declared.
        if (v.key_complete && hp.block_size > 0) {
            k.hashes.prompt_blocks = static_cast<std::uint32_t>(
                std::min<std::uint64_t>(v.key_len / hp.block_size, kMaxPromptBlocks));
        } else if (v.content_length > 0 && hp.block_size > 0 && v.key_offset >= v.body_offset) {
            const std::uint64_t start = v.key_offset - v.body_offset;
            const std::uint64_t len = static_cast<std::uint64_t>(v.content_length);
            const std::uint64_t blocks = len > start ? (len - start) / hp.block_size : 0;
            // At most kMaxPromptBlocks: the length is the client's word (999999999999999 made
            // one request weigh 4e9 blocks in the chosen backend's work estimate, steering its
            // cached prefixes away).
            k.hashes.prompt_blocks =
                static_cast<std::uint32_t>(std::min<std::uint64_t>(blocks, kMaxPromptBlocks));
        }
    } else if (v.status != LocateStatus::Ok && v.status != LocateStatus::NeedMoreHead &&
               !bytes.empty()) {
        k.kind = KeyKind::BodyPrefix;  // not HTTP we understand: the leading bytes
        k.hashes = hash_prompt(hp, {}, bytes);
        k.prompt_bytes = static_cast<std::uint32_t>(bytes.size());
    } else {
        // No body bytes (also Expect: 100-continue, where none comes before the server answers:
        // its request target keyed every such request of a host and path alike, whatever its
        // prompt, and learned as a prefix they all went to one backend): the 5-tuple.
        k.hashes.prefix = five_tuple_hash;
    }
    return k;
}

FlightKey key_flight(const HashParams &hp, const SessionHeaders &hs, const RequestView &v,
                     std::span<const std::uint8_t> bytes, std::uint64_t five_tuple_hash) noexcept {
    FlightKey k = key_flight(hp, v, bytes, five_tuple_hash);
    k.session = find_session_key(hp, hs, v, bytes);
    return k;
}

PrefixHashes steering_hashes(const FlightKey &k, SessionLimiter &limiter, std::uint32_t cap,
                             std::uint32_t &slot) noexcept {
    slot = k.session.status == SessionStatus::Key ? limiter.acquire(k.session.hash, cap)
                                                  : SessionLimiter::kNone;
    return slot != SessionLimiter::kNone ? session_hashes(k.session.hash) : k.hashes;
}

FlightKey key_flight(const HashParams &hp, std::span<const std::uint8_t> bytes,
                     std::uint64_t five_tuple_hash) noexcept {
    return key_flight(hp, locate_request(bytes), bytes, five_tuple_hash);
}

}  // namespace kvsteer
